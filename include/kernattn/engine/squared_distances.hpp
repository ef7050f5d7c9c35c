#pragma once
/// \file
/// Squared distances of a tile of queries and keys from one GEMM, accurate however close a query
/// and a key are (docs/numerics.md).

#include <algorithm>

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/tile_scratch.hpp"

namespace kernattn::detail {

/// Recomputes the squared distances of column `column` (key `key` of the tile's `keys`, squared
/// norm `key_squared_norm`) whose value from the expansion is below \f$(\lVert q\rVert^2 +
/// \lVert k\rVert^2)/4\f$ (see `complete_squared_distances`) directly, as \f$\sum_l (k_l -
/// q_l)^2\f$, one by one from contiguous rows. Each pair is decided and computed alone, so a
/// score never depends on any other query or key (a hidden one, say).
template <class Queries, class KeyRows, class Column>
void recompute_close_distances(const Queries& queries,
                               const Vector<typename Queries::Scalar>& query_squared_norms,
                               const KeyRows& keys, Index key,
                               typename Queries::Scalar key_squared_norm,
                               DistanceScratch<typename Queries::Scalar>& distance,
                               Column&& column) {
  using T = typename Queries::Scalar;
  const Index rows = column.size();
  // Copied column by column: reading a column-major block row by row strides through as many
  // pages as it has columns.
  const auto copy_rows = [](const auto& from, RowMajorMatrix<T>& to) {
    to.resize(from.rows(), from.cols());
    for (Index l = 0; l < from.cols(); ++l) to.col(l) = from.col(l);
  };
  if (!distance.keys_ready) {
    copy_rows(keys, distance.key_rows);
    distance.keys_ready = true;
  }
  const auto key_row = distance.key_rows.row(key);
  // The column is searched in chunks, each tested as a whole first (see
  // `complete_squared_distances`), so that a column with one close pair costs little more.
  constexpr Index chunk = 32;
  const auto excess = [&](const auto& squared_distances, const auto& query_norms) {
    return (key_squared_norm - (T(4) * squared_distances - query_norms)).max(T(0)).sum();
  };
  for (Index begin = 0; begin < rows; begin += chunk) {
    const Index size = std::min(chunk, rows - begin);
    const T chunk_excess =
        size == chunk
            ? excess(column.template segment<chunk>(begin),
                     query_squared_norms.array().template segment<chunk>(begin))
            : excess(column.segment(begin, size), query_squared_norms.array().segment(begin, size));
    if (chunk_excess == T(0)) continue;
    for (Index i = begin; i < begin + size; ++i) {
      if (!(T(4) * column(i) - query_squared_norms(i) < key_squared_norm)) continue;
      if (!distance.queries_ready) {
        copy_rows(queries, distance.query_rows);
        distance.queries_ready = true;
      }
      column(i) = (key_row - distance.query_rows.row(i)).squaredNorm();
    }
  }
}

/// Completes a tile holding \f$-2\,q_i\cdot k_j\f$ to the squared distances \f$r_{ij}^2 =
/// \lVert q_i\rVert^2 + \lVert k_j\rVert^2 - 2\,q_i\cdot k_j\f$, with the squared norms
/// `query_squared_norms` and `key_squared_norms(j)`.
///
/// The expansion errs by up to about \f$d\,u\,(\lVert q\rVert + \lVert k\rVert)^2 +
/// u\,(\lVert q\rVert^2 + \lVert k\rVert^2) \le (2d + 1)\,u\,(\lVert q\rVert^2 + \lVert
/// k\rVert^2)\f$, which is large next to a small \f$r^2\f$ (a query close to a key, data far from
/// the origin): its square root would be only \f$\sqrt u\f$-accurate. So a value is kept where
/// \f$r^2 \ge (\lVert q\rVert^2 + \lVert k\rVert^2)/4\f$, where its relative error is at most
/// about \f$(8d + 5)\,u\f$, and recomputed directly below that (relative error \f$(d + 2)\,u\f$):
/// every squared distance is within \f$8(d + 2)\,u\,r^2\f$ of the exact one, and within the
/// expansion's own bound (docs/numerics.md). The test costs one pass over the tile, and random
/// data almost never fall below the threshold.
template <class Queries, class KeyRows, class KeyNorms, class Tile>
void complete_squared_distances(const Queries& queries,
                                const Vector<typename Queries::Scalar>& query_squared_norms,
                                const KeyRows& keys, const KeyNorms& key_squared_norms,
                                DistanceScratch<typename Queries::Scalar>& distance, Tile&& tile) {
  using T = typename Queries::Scalar;
  distance.keys_ready = false;
  // Column by column: Eigen does not vectorise a broadcast across a column-major block, and each
  // column here is a contiguous vector of query rows.
  for (Index j = 0; j < keys.rows(); ++j) {
    const T key_norm = key_squared_norms(j);
    auto column = tile.col(j).array();
    column += query_squared_norms.array() + key_norm;
    // r^2 < (|q|^2 + |k|^2) / 4 as 4 r^2 - |q|^2 < |k|^2 (powers of 2: no rounding), for any
    // query of the column: the sum of the positive parts of |k|^2 - (4 r^2 - |q|^2) is > 0 then,
    // and NaN if the column holds a NaN (a sum, unlike a minimum, never drops a term); either
    // way the column is searched, where a NaN is never below the threshold.
    const T excess = (key_norm - (T(4) * column - query_squared_norms.array())).max(T(0)).sum();
    if (!(excess == T(0)))
      recompute_close_distances(queries, query_squared_norms, keys, j, key_norm, distance, column);
  }
}

}  // namespace kernattn::detail

namespace kernattn::detail {

/// `complete_squared_distances` for a row-major block of scores whose row i is query i of
/// `queries` and column j key j of `keys` (the exact engine's block path): \f$r_{ij}^2 =
/// \lVert q_i\rVert^2 + \lVert k_j\rVert^2 - 2\,q_i\cdot k_j\f$, kept where \f$r^2 \ge
/// (\lVert q\rVert^2 + \lVert k\rVert^2)/4\f$ and recomputed directly below that, with the same
/// bounds. The block path takes only finite inputs, so no score is NaN.
template <class Queries, class QueryNorms, class KeyRows, class KeyNorms, class Scores>
void complete_block_squared_distances(const Queries& queries, const QueryNorms& query_squared_norms,
                                      const KeyRows& keys, const KeyNorms& key_squared_norms,
                                      Scores&& scores) {
  using T = typename Queries::Scalar;
  const auto key_norms = key_squared_norms.transpose().array();
  for (Index i = 0; i < scores.rows(); ++i) {
    auto row = scores.row(i).array();
    const T query_norm = query_squared_norms(i);
    row += query_norm + key_norms;
    // 4 r^2 - |q|^2 < |k|^2 for some key of the row (see complete_squared_distances).
    const T excess = (key_norms - (T(4) * row - query_norm)).max(T(0)).sum();
    if (excess == T(0)) continue;
    for (Index j = 0; j < row.size(); ++j)
      if (T(4) * row(j) - query_norm < key_norms(j))
        row(j) = (keys.row(j) - queries.row(i)).squaredNorm();
  }
}

}  // namespace kernattn::detail
