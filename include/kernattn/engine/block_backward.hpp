#pragma once
/// \file
/// The exact backward's block path (docs/gradients.md, "How the backward pass runs"): one query
/// tile against one key tile of a dot-product kernel, with the forward's register-blocked
/// kernels (`block_kernels.hpp`) on packed operands instead of five general matrix products.

#include <algorithm>
#include <cmath>

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/block_kernels.hpp"
#include "kernattn/engine/score_bias.hpp"

namespace kernattn::detail {

/// A key tile of a backward task, packed once for all its query tiles: the keys and the values
/// in panels (`pack_panels`, the operands of \f$S = aQK^\top\f$ and \f$dP = dO\,V^\top\f$) and
/// the keys' rows padded to whole vector chunks (the operand of \f$dQ \mathrel{+}= dS\,K\f$).
template <Real T>
struct PackedKeyTile {
  Vector<T> key_panels;
  Vector<T> value_panels;
  Vector<T> key_rows;
  Index count = 0;

  template <class Keys, class Values>
  void pack(const Keys& keys, const Values& values) {
    using Shape = BlockShape<T>;
    count = keys.rows();
    const Index keys_padded = Shape::padded_keys(count);
    key_panels.resize(keys_padded * keys.cols());
    value_panels.resize(keys_padded * values.cols());
    key_rows.resize(count * Shape::padded_columns(keys.cols()));
    pack_panels(keys, key_panels.data());
    pack_panels(values, value_panels.data());
    pack_padded_rows(keys, Shape::padded_columns(keys.cols()), key_rows.data());
  }
};

/// A key tile's dK and dV summed row-major over its query tiles, then added to the task's once:
/// strided rows of a column-major matrix would miss the cache at every entry.
template <Real T>
struct KeyTileSums {
  Vector<T> key_gradients;
  Vector<T> value_gradients;

  /// Zero sums for `count` keys of d and d_v columns, and R rows more: the products of the last
  /// R keys write all R rows.
  void reset(Index count, Index d, Index dv) {
    using Shape = BlockShape<T>;
    key_gradients.setZero((count + Shape::rows) * Shape::padded_columns(d));
    value_gradients.setZero((count + Shape::rows) * Shape::padded_columns(dv));
  }

  /// Adds the sums to dK and dV (count x d and count x d_v).
  template <class DK, class DV>
  void add_to(DK&& dk, DV&& dv) const {
    using RowMajor = Eigen::Map<const RowMajorMatrix<T>>;
    using Shape = BlockShape<T>;
    dk += RowMajor(key_gradients.data(), dk.rows(), Shape::padded_columns(dk.cols()))
              .leftCols(dk.cols());
    dv += RowMajor(value_gradients.data(), dv.rows(), Shape::padded_columns(dv.cols()))
              .leftCols(dv.cols());
  }
};

/// The key tiles, the query side and the tiles of a thread's block backward (kept with its other
/// backward tiles, `BackwardTiles`).
template <Real T>
struct BlockBackwardScratch {
  PackedKeyTile<T> keys;
  PackedKeyTile<T> finite_keys;
  KeyTileSums<T> sums;
  Vector<T> query_rows;
  Vector<T> gradient_rows;
  Vector<T> scores;
  Vector<T> products;
  Vector<T> weights;
  Vector<T> score_gradients;
  Vector<T> query_gradients;
};

/// One query tile (rows \f$[q_0, q_0 + n)\f$ of the call, `queries` and `out_gradients`) against
/// a packed key tile (keys \f$[k_0, k_0 + m)\f$, `keys`) of a dot-product kernel
/// \f$x_{ij} = a\,q_i\cdot k_j\f$, in blocks of R queries:
///  - \f$S = (aQ)K^\top\f$ and \f$dP = dO\,V^\top\f$ by `score_block`, from the rows of
///    \f$aQ\f$ and dO padded once per tile (`pack_padded_rows`), which the key side reads too;
///  - per row, the log-weights: \f$x_{ij}\f$ plus the mask's score bias, plus \f$b_j\f$
///    (`key_bias`, when not null) in the exponential's pass; \f$P_{ij} = e^{x_{ij} + b_j - L_i}\f$
///    (`references`: the rows' \f$L_i\f$ less their query terms; a row whose reference is
///    \f$-\infty\f$ weighs nothing), \f$G_{ij} = P_{ij}(dP_{ij} - D_i)\f$ (`products`: \f$D_i\f$),
///    both 0 where `visible(i, j)` is false when `partial`; \f$\sum_i G_{ij}\f$ is added to
///    `bias_sums(j)`;
///  - \f$dq_i \mathrel{+}= a\sum_j G_{ij}\,k_j\f$ by `accumulate_block`, the keys in order;
/// then, R keys at a time, \f$dv_j \mathrel{+}= \sum_i P_{ij}\,dO_i\f$ and \f$dk_j \mathrel{+}=
/// \sum_i G_{ij}\,(aq_i)\f$ into `scratch.sums` (`accumulate_block` over the
/// transposed tiles, the queries in order). The same sums as the general path's products, in
/// another order; every gradient is summed row-major and added to dQ, dK and dV once, as strided
/// rows of a column-major matrix would miss the cache at every entry.
template <class Kernel, mask::BoundMask BoundMask, class Queries, class OutGradients,
          class References, class Products, class Visible, class DQ, class BiasSums>
void backward_tile_in_blocks(const Kernel& kernel, const Queries& queries,
                             const OutGradients& out_gradients,
                             const PackedKeyTile<typename Kernel::Scalar>& keys,
                             BlockBackwardScratch<typename Kernel::Scalar>& scratch,
                             const typename Kernel::Scalar* key_bias, const References& references,
                             const Products& products, const BoundMask& visibility,
                             Index first_query, Index first_key, bool partial,
                             const Visible& visible, DQ&& dq, BiasSums&& bias_sums) {
  using T = typename Kernel::Scalar;
  using Shape = BlockShape<T>;
  using RowArray = Eigen::Array<T, 1, Eigen::Dynamic>;
  constexpr Index R = Shape::rows;
  const Index rows = queries.rows();
  const Index d = queries.cols();
  const Index dv_columns = out_gradients.cols();
  const Index key_count = keys.count;
  const Index stride = Shape::padded_keys(key_count);
  const Index panels = stride / Shape::key_panel;
  const Index query_width = Shape::padded_columns(d);
  const Index value_width = Shape::padded_columns(dv_columns);
  const Index blocks = (rows + R - 1) / R;
  const T scale = kernel.dot_scale(d);

  // Whole blocks of rows (`score_block` reads R), the rows past the tile 0.
  scratch.query_rows.resize(blocks * R * query_width);
  scratch.gradient_rows.resize(blocks * R * value_width);
  pack_padded_rows(scale * queries, query_width, scratch.query_rows.data());
  pack_padded_rows(out_gradients, value_width, scratch.gradient_rows.data());
  scratch.query_rows.tail((blocks * R - rows) * query_width).setZero();
  scratch.gradient_rows.tail((blocks * R - rows) * value_width).setZero();
  scratch.scores.resize(R * stride);
  scratch.products.resize(R * stride);
  // Whole blocks of rows, and R more entries that the transposed products of the last keys read
  // past the last row. Only the entries of the rows' first m columns are written: the others
  // (zero when the storage grows, else earlier tiles' values) reach only accumulators that are
  // never added to a gradient.
  const Index tile_size = blocks * R * stride + R;
  for (Vector<T>* tile : {&scratch.weights, &scratch.score_gradients})
    if (tile->size() < tile_size) tile->setZero(tile_size);
  scratch.query_gradients.setZero(blocks * R * query_width);
  T* const weights = scratch.weights.data();
  T* const score_gradients = scratch.score_gradients.data();

  for (Index block = 0; block < blocks; ++block) {
    const Index first_row = block * R;
    const Index block_rows = std::min(R, rows - first_row);
    score_block(scratch.query_rows.data() + first_row * query_width, query_width, 1, d,
                keys.key_panels.data(), panels, scratch.scores.data(), stride);
    score_block(scratch.gradient_rows.data() + first_row * value_width, value_width, 1, dv_columns,
                keys.value_panels.data(), panels, scratch.products.data(), stride);
    for (Index r = 0; r < block_rows; ++r) {
      const Index i = first_row + r;
      Eigen::Map<RowArray> log_weights(scratch.scores.data() + r * stride, key_count);
      Eigen::Map<RowArray> weight(weights + i * stride, key_count);
      Eigen::Map<RowArray> gradient(score_gradients + i * stride, key_count);
      add_score_bias(visibility, first_query + i, first_key, log_weights);
      if (references(i) == ScalarTraits<T>::negative_infinity)
        weight.setZero();
      else if (key_bias != nullptr)
        weight =
            (log_weights + Eigen::Map<const RowArray>(key_bias, key_count) - references(i)).exp();
      else
        weight = (log_weights - references(i)).exp();
      gradient =
          weight * (Eigen::Map<const RowArray>(scratch.products.data() + r * stride, key_count) -
                    products(i));
      if (partial)
        for (Index j = 0; j < key_count; ++j)
          if (!visible(i, j)) {
            weight(j) = T(0);
            gradient(j) = T(0);
          }
      bias_sums += gradient.transpose();
    }
    accumulate_block(score_gradients + first_row * stride, stride, key_count, keys.key_rows.data(),
                     query_width, scratch.query_gradients.data() + first_row * query_width);
  }
  dq +=
      scale * Eigen::Map<const RowMajorMatrix<T>>(scratch.query_gradients.data(), rows, query_width)
                  .leftCols(d);

  for (Index first = 0; first < key_count; first += R) {
    accumulate_block<T, true>(weights + first, stride, rows, scratch.gradient_rows.data(),
                              value_width,
                              scratch.sums.value_gradients.data() + first * value_width);
    accumulate_block<T, true>(score_gradients + first, stride, rows, scratch.query_rows.data(),
                              query_width, scratch.sums.key_gradients.data() + first * query_width);
  }
}

}  // namespace kernattn::detail
