#pragma once
/// \file
/// Scoring of the distance form, \f$\log\kappa(q,k) = h(\lVert q-k\rVert^2)\f$: the GEMM of
/// \f$-2q\f$ with the keys, completed to squared distances with the squared norms
/// (`complete_squared_distances`) and mapped by \f$h\f$; single pairs directly, \f$\sum_l (q_l -
/// k_l)^2\f$.

#include "kernattn/engine/block_kernels.hpp"
#include "kernattn/engine/forms/common.hpp"
#include "kernattn/engine/forms/scoring.hpp"
#include "kernattn/engine/forms/single_factor.hpp"
#include "kernattn/engine/squared_distances.hpp"

namespace kernattn::detail {

template <kernels::DistanceKernel Kernel>
struct Scoring<Kernel> : SingleFactorScoring<Kernel, Scoring<Kernel>>, WithoutKeyTerm {
  using T = typename Kernel::Scalar;
  static constexpr bool has_key_term = false;
  static constexpr bool plain_gemm = false;

  template <class Keys>
  static void key_terms(const Kernel&, const Keys& keys, KeyTerms<T>& terms, Eigen::VectorXd&) {
    factor_norms(keys, terms.squared_norms);
  }
  /// \f$\lVert k_j\rVert^2\f$ of the factor's columns.
  template <class Keys>
  static void factor_norms(const Keys& keys, Vector<T>& squared_norms) {
    squared_norms = keys.rowwise().squaredNorm();
  }

  template <class Add>
  static void log_factor(const Kernel&, Index first, Index columns, Add&& add) {
    add(first, columns, true, 0.0);
  }

  /// \f$-2q\f$ of the factor's columns, with \f$\lVert q\rVert^2\f$ in `squared_norms` (and
  /// `distance` reset for the tile).
  template <class Queries, class Prepared>
  static void prepare_factor(const Kernel&, const Queries& queries, Prepared&& prepared,
                             Vector<T>& squared_norms, DistanceScratch<T>& distance) {
    distance.queries_ready = false;
    prepared = T(-2) * queries;
    squared_norms = queries.rowwise().squaredNorm();
  }

  /// \f$h(r^2)\f$ for a tile: the GEMM of the prepared queries with the keys, completed to
  /// squared distances with the keys' squared norms `key_squared_norms` from `first_key` on.
  /// `queries` are the factor's own columns of the query tile.
  template <class Queries, class Prepared, class KeyRows, class Tile>
  static void factor_tile(const Kernel& kernel, const Queries& queries, const Prepared& prepared,
                          const Vector<T>& query_squared_norms, const KeyRows& keys,
                          const Vector<T>& key_squared_norms, Index first_key,
                          DistanceScratch<T>& distance, Tile&& tile) {
    tile.noalias() = prepared * keys.transpose();
    complete_squared_distances(queries, query_squared_norms, keys,
                               key_squared_norms.segment(first_key, keys.rows()), distance, tile);
    kernel.log_from_squared_distance(tile.array(), queries.cols());
  }

  /// The block path: the dot products of \f$-2q\f$ with the keys, completed to squared
  /// distances (`complete_block_squared_distances`) and mapped by \f$h\f$; for a
  /// `PrefactoredDistanceKernel`, split into the exponents \f$e\f$ instead, with the prefactors
  /// \f$P\f$ written at the same places of `scratch.block_prefactors` and each row's largest in
  /// `scratch.largest_prefactors` (`BlockPrefactors`).
  static constexpr bool block_scoring = true;
  static constexpr bool block_prefactors = kernels::PrefactoredDistanceKernel<Kernel>;
  template <class Queries, class Keys, class Scores>
  static void finish_block(const Kernel& kernel, const Queries& queries, Index first_row,
                           TileScratch<T>& scratch, const Keys& keys, const KeyTerms<T>& terms,
                           Index first_key, Scores&& scores) {
    complete_block_squared_distances(
        queries.middleRows(first_row, scores.rows()),
        scratch.query_squared_norms[0].segment(first_row, scores.rows()), keys,
        terms.squared_norms.segment(first_key, keys.rows()), scores);
    if constexpr (block_prefactors) {
      const auto split = kernel.exponent_and_prefactor(queries.cols());
      for (Index r = 0; r < scores.rows(); ++r)
        scratch.largest_prefactors(r) = split_exponents_and_prefactors(
            split, scores.row(r).data(), scratch.block_prefactors.data() + r * scores.outerStride(),
            scores.cols());
    } else {
      kernel.log_from_squared_distance(scores.array(), queries.cols());
    }
  }

  template <class QueryRows>
  static RowMajorMatrix<T> prepare_rows(const Kernel&, const QueryRows& queries) {
    return queries;
  }
  template <class Keys>
  static RowMajorMatrix<T> pair_keys(const KeyTerms<T>&, const Keys& keys) {
    return keys;
  }
  template <class Prepared, class KeyRow>
  static T score_pair(const Prepared& prepared, Index i, const KeyRow& key) {
    return (prepared.row(i) - key).squaredNorm();
  }
  template <class Scores>
  static void map_scores(const Kernel& kernel, Scores&& squared_distances, Index d) {
    kernel.log_from_squared_distance(squared_distances, d);
  }
};

}  // namespace kernattn::detail
