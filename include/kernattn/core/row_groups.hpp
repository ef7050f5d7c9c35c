#pragma once
/// \file
/// Reductions of the rows of a matrix in double, `row_group` rows at a time: one lane per row and
/// the columns in order, so a row's result is the same bit for bit in every group, call and
/// storage order, and the lanes are vectorised across rows whatever the storage (docs/numerics.md,
/// section 2, on L^p and the key terms).

#include <algorithm>

#include "kernattn/core/scalar_traits.hpp"

namespace kernattn::detail {

/// Rows per group: one lane of doubles each.
inline constexpr Index row_group = 8;
using GroupLanes = Eigen::Array<double, row_group, 1>;

/// Calls `body(first, count)` for the groups of `rows` rows in order.
template <class Body>
void for_each_row_group(Index rows, Body&& body) {
  for (Index first = 0; first < rows; first += row_group)
    body(first, std::min(row_group, rows - first));
}

/// Rows [first, first + count) of `rows` in double, one lane per row, `rows.cols()` columns; the
/// other lanes 0.
using GroupRows = Eigen::Array<double, row_group, Eigen::Dynamic>;
template <class Rows>
[[nodiscard]] GroupRows group_rows(const Rows& rows, Index first, Index count) {
  GroupRows block = GroupRows::Zero(row_group, rows.cols());
  block.topRows(count) = rows.middleRows(first, count).template cast<double>().array();
  return block;
}

/// \f$\sum_c x_{rc}^2\f$ of rows [first, first + count) of `rows`, the columns summed in order.
template <class Rows>
[[nodiscard]] GroupLanes group_squared_norms(const Rows& rows, Index first, Index count) {
  const GroupRows block = group_rows(rows, first, count);
  GroupLanes sums = GroupLanes::Zero();
  for (Index c = 0; c < rows.cols(); ++c) sums += block.col(c) * block.col(c);
  return sums;
}

/// Whether each row of a group (`group_rows`) is finite.
[[nodiscard]] inline Eigen::Array<bool, row_group, 1> finite_lanes(const GroupRows& block) {
  GroupLanes marks = GroupLanes::Zero();  // NaN where a row has an infinite or NaN entry
  for (Index c = 0; c < block.cols(); ++c) marks += block.col(c) - block.col(c);
  return marks == 0.0;
}

/// Whether each of rows [first, first + count) of `rows` is finite (the other lanes true).
template <class Rows>
[[nodiscard]] Eigen::Array<bool, row_group, 1> group_finite(const Rows& rows, Index first,
                                                            Index count) {
  return finite_lanes(group_rows(rows, first, count));
}

/// \f$\lVert x\rVert^2\f$ of one row in double, as `group_squared_norms` gives it.
template <class Row>
[[nodiscard]] double row_squared_norm(const Row& row) {
  return group_squared_norms(row, 0, 1)(0);
}

}  // namespace kernattn::detail
