#pragma once
/// \file
/// Scoring of the direct form, \f$\kappa(q,k) = h(a\,(q\cdot k))\f$: one GEMM of the scaled
/// queries \f$a\,q\f$ with the keys, mapped by \f$h\f$ to the weights themselves (normalised
/// directly, not by a softmax).

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/forms/common.hpp"
#include "kernattn/engine/forms/scoring.hpp"
#include "kernattn/engine/key_terms.hpp"
#include "kernattn/engine/tile_scratch.hpp"

namespace kernattn::detail {

template <kernels::DirectKernel Kernel>
struct Scoring<Kernel> : WithoutKeyTerm, WithoutLogFactors, ScaledDotPairs<Kernel> {
  using T = typename Kernel::Scalar;
  static constexpr bool exponential = false;
  static constexpr bool has_key_term = false;

  template <class Keys>
  static void key_terms(const Kernel&, const Keys&, KeyTerms<T>&, Eigen::VectorXd&) {}

  /// \f$a\,q\f$.
  template <class QueryTile>
  static void prepare_tile(const Kernel& kernel, const QueryTile& queries,
                           TileScratch<T>& scratch) {
    scratch.prepared_queries(queries.rows(), queries.cols()) =
        kernel.dot_scale(queries.cols()) * queries;
  }

  /// \f$h(a\,(q\cdot k))\f$ for a tile.
  template <class QueryTile, class KeyRows, class Tile>
  static void score_tile(const Kernel& kernel, const QueryTile& queries, TileScratch<T>& scratch,
                         const KeyRows& keys, const KeyTerms<T>&, Index, Tile&& tile) {
    tile.noalias() = scratch.prepared_queries(queries.rows(), queries.cols()) * keys.transpose();
    kernel.from_scaled_dot(tile.array());
  }

  template <class Scores>
  static void map_scores(const Kernel& kernel, Scores&& scaled_dots, Index) {
    kernel.from_scaled_dot(scaled_dots);
  }
};

}  // namespace kernattn::detail
