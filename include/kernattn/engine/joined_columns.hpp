#pragma once
/// \file
/// Inputs \f$[f \mid t]\f$ read in place from two matrices: the exact engine attends positional
/// inputs (features and positions, `kernels::Product`) without building their concatenation.

#include <utility>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"

namespace kernattn::detail {

/// The columns of `Left` followed by those of `Right`, row for row, as views of both: \f$[L \mid
/// R]\f$ without a copy. It offers what the exact engine asks of the inputs of a product kernel:
/// sizes, entries, rows and runs of rows (themselves joined), each side whole (`leftCols`,
/// `rightCols`, and `head` / `tail` of one row, which must split exactly between the sides), and
/// `visit_columns` for the columns of one factor. It is column-major for the engine's loops over
/// columns.
template <class Left, class Right>
class JoinedColumns {
 public:
  using Scalar = typename Left::Scalar;
  static constexpr bool IsRowMajor = false;

  JoinedColumns(Left left, Right right) : left_(std::move(left)), right_(std::move(right)) {}

  [[nodiscard]] Index rows() const { return left_.rows(); }
  [[nodiscard]] Index cols() const { return left_.cols() + right_.cols(); }
  [[nodiscard]] Index size() const { return rows() * cols(); }
  [[nodiscard]] const Left& left() const { return left_; }
  [[nodiscard]] const Right& right() const { return right_; }

  [[nodiscard]] Scalar operator()(Index row, Index column) const {
    return column < left_.cols() ? left_(row, column) : right_(row, column - left_.cols());
  }

  [[nodiscard]] auto middleRows(Index first, Index count) const {
    return JoinedColumns<decltype(left_.middleRows(first, count)),
                         decltype(right_.middleRows(first, count))>(
        left_.middleRows(first, count), right_.middleRows(first, count));
  }
  [[nodiscard]] auto row(Index row) const { return middleRows(row, 1); }

  /// The left side, which must be all of the first `count` columns.
  [[nodiscard]] const Left& leftCols(Index count) const {
    require_split(count == left_.cols(), "leftCols", count);
    return left_;
  }
  /// The right side, which must be all of the last `count` columns.
  [[nodiscard]] const Right& rightCols(Index count) const {
    require_split(count == right_.cols(), "rightCols", count);
    return right_;
  }
  /// `leftCols` and `rightCols` of a single row.
  [[nodiscard]] const Left& head(Index count) const { return leftCols(count); }
  [[nodiscard]] const Right& tail(Index count) const { return rightCols(count); }

  /// Calls `body` with columns [first, first + count), which must be one side whole.
  template <class Body>
  void visit_columns(Index first, Index count, Body&& body) const {
    if (first == 0 && count == left_.cols()) {
      body(left_);
    } else {
      require_split(first == left_.cols() && count == right_.cols(), "visit_columns", count);
      body(right_);
    }
  }

  [[nodiscard]] bool allFinite() const { return left_.allFinite() && right_.allFinite(); }

 private:
  void require_split(bool exact, const char* operation, Index count) const {
    require(exact, "JoinedColumns::", operation, "(", count, "): inputs of ", left_.cols(), " + ",
            right_.cols(), " columns are read one side at a time");
  }

  Left left_;
  Right right_;
};

/// Whether `Rows` is a `JoinedColumns`.
template <class Rows>
inline constexpr bool is_joined_columns = false;
template <class Left, class Right>
inline constexpr bool is_joined_columns<JoinedColumns<Left, Right>> = true;

/// Calls `body` with columns [first, first + count) of `rows`: a block of a matrix, one side of a
/// `JoinedColumns`.
template <class Rows, class Body>
void with_columns(const Rows& rows, Index first, Index count, Body&& body) {
  if constexpr (is_joined_columns<Rows>)
    rows.visit_columns(first, count, body);
  else
    body(rows.middleCols(first, count));
}

/// The inputs \f$[f \mid t]\f$ of every head of a call, read in place: features F (H d columns,
/// head h in columns \f$[h d, (h+1) d)\f$) and positions T (\f$d_t\f$ columns, shared by every
/// head). As `CallBlocks` sees it, the call has \f$H (d + d_t)\f$ columns; a block of one head's
/// columns is a `JoinedColumns` of that head's features and the positions.
template <class Features, class Positions>
class HeadsWithPositions {
 public:
  using Scalar = typename Features::Scalar;

  HeadsWithPositions(const Features& features, const Positions& positions, Index heads)
      : features_(features),
        positions_(positions),
        heads_(heads),
        feature_columns_(features.cols() / heads) {}

  [[nodiscard]] Index rows() const { return features_.rows(); }
  [[nodiscard]] Index cols() const { return heads_ * (feature_columns_ + positions_.cols()); }

  /// Rows [first_row, first_row + rows) of the head whose columns start at `first_column`
  /// (`columns` = \f$d + d_t\f$).
  [[nodiscard]] auto block(Index first_row, Index first_column, Index rows, Index columns) const {
    const Index joined = feature_columns_ + positions_.cols();
    require(first_column % joined == 0 && columns == joined, "HeadsWithPositions: columns [",
            first_column, ", ", first_column + columns, ") are not one head of ", joined,
            " columns");
    const Index head = first_column / joined;
    return JoinedColumns(
        features_.block(first_row, head * feature_columns_, rows, feature_columns_),
        positions_.middleRows(first_row, rows));
  }

 private:
  const Features& features_;
  const Positions& positions_;
  Index heads_;
  Index feature_columns_;
};

}  // namespace kernattn::detail
