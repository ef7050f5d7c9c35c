#pragma once
/// \file
/// Scoring of the product form, \f$\log\kappa = \log\kappa_F(f_q,f_k) + \log\kappa_T(t_q,t_k)\f$
/// on inputs \f$[f \mid t]\f$ whose last \f$d_t\f$ columns are positions: each factor is scored
/// on its own columns by its own form's `Scoring` (dot-product or distance), and the key terms
/// of its dot-product factors add up to one per key.

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/forms/common.hpp"
#include "kernattn/engine/forms/distance.hpp"
#include "kernattn/engine/forms/dot_product.hpp"
#include "kernattn/engine/forms/scoring.hpp"
#include "kernattn/engine/key_terms.hpp"
#include "kernattn/engine/tile_scratch.hpp"

namespace kernattn::detail {

template <kernels::ProductKernel Kernel>
struct Scoring<Kernel> : WithKernelKeyTerm {
  using T = typename Kernel::Scalar;
  using FeatureScoring = Scoring<typename Kernel::FeatureKernel>;
  using PositionScoring = Scoring<typename Kernel::PositionKernel>;
  static constexpr bool exponential = true;
  static constexpr bool has_key_term = Kernel::has_key_term;

  /// Each factor's key norms on its columns; throws `InvalidArgument` unless the features have
  /// at least one column.
  template <class Keys>
  static void key_terms(const Kernel& kernel, const Keys& keys, KeyTerms<T>& terms,
                        Eigen::VectorXd&) {
    const Index d = kernel.feature_columns(keys.cols());
    FeatureScoring::factor_norms(keys.leftCols(d), terms.squared_norms);
    PositionScoring::factor_norms(keys.rightCols(keys.cols() - d), terms.position_squared_norms);
  }
  template <class Add>
  static void log_factors(const Kernel& kernel, Index columns, Add&& add) {
    const Index dt = kernel.position_dimension();
    FeatureScoring::log_factor(kernel.feature_kernel(), 0, columns - dt, add);
    PositionScoring::log_factor(kernel.position_kernel(), columns - dt, dt, add);
  }

  /// The block path when both factors are a GEMM alone: one dot product over all columns of the
  /// prepared queries, which are then the scores.
  static constexpr bool block_scoring = FeatureScoring::plain_gemm && PositionScoring::plain_gemm;
  template <class Queries, class Keys, class Scores>
  static void finish_block(const Kernel&, const Queries&, Index, TileScratch<T>&, const Keys&,
                           const KeyTerms<T>&, Index, Scores&&) {}

  /// Each factor prepares its own columns of the queries.
  template <class QueryTile>
  static void prepare_tile(const Kernel& kernel, const QueryTile& queries,
                           TileScratch<T>& scratch) {
    const Index dt = kernel.position_dimension();
    const Index d = queries.cols() - dt;
    auto prepared = scratch.prepared_queries(queries.rows(), queries.cols());
    FeatureScoring::prepare_factor(kernel.feature_kernel(), queries.leftCols(d),
                                   prepared.leftCols(d), scratch.query_squared_norms[0],
                                   scratch.distance[0]);
    PositionScoring::prepare_factor(kernel.position_kernel(), queries.rightCols(dt),
                                    prepared.rightCols(dt), scratch.query_squared_norms[1],
                                    scratch.distance[1]);
  }

  /// The feature factor's tile plus the position factor's. Two factors that are a GEMM alone
  /// make a dot-product kernel whose scale differs between the column blocks, already applied to
  /// the prepared queries: one GEMM over all columns. Otherwise the position factor's GEMM is
  /// accumulated into the tile when that is all it is, else its tile is evaluated in
  /// `position_scores` (scratch) and added.
  template <class QueryTile, class KeyRows, class Tile>
  static void score_tile(const Kernel& kernel, const QueryTile& queries, TileScratch<T>& scratch,
                         const KeyRows& keys, const KeyTerms<T>& terms, Index first_key,
                         Tile&& tile) {
    const auto prepared = scratch.prepared_queries(queries.rows(), queries.cols());
    if constexpr (FeatureScoring::plain_gemm && PositionScoring::plain_gemm) {
      tile.noalias() = prepared * keys.transpose();
    } else {
      const Index dt = kernel.position_dimension();
      const Index d = keys.cols() - dt;
      FeatureScoring::factor_tile(kernel.feature_kernel(), queries.leftCols(d),
                                  prepared.leftCols(d), scratch.query_squared_norms[0],
                                  keys.leftCols(d), terms.squared_norms, first_key,
                                  scratch.distance[0], tile);
      if constexpr (PositionScoring::plain_gemm) {
        tile.noalias() += prepared.rightCols(dt) * keys.rightCols(dt).transpose();
      } else {
        auto position_tile =
            TileScratch<T>::matrix_over(scratch.position_scores, tile.rows(), tile.cols());
        PositionScoring::factor_tile(kernel.position_kernel(), queries.rightCols(dt),
                                     prepared.rightCols(dt), scratch.query_squared_norms[1],
                                     keys.rightCols(dt), terms.position_squared_norms, first_key,
                                     scratch.distance[1], position_tile);
        tile += position_tile;
      }
    }
  }
};

}  // namespace kernattn::detail
