#pragma once
/// \file
/// Scoring of the feature form, \f$\kappa(q,k) = h(\varphi(q)\cdot\psi(k))\f$: the GEMM of the
/// query features with the key features (computed once per key), mapped by \f$h\f$. A key's
/// log-scale \f$s_k\f$ joins its log-weight; the queries' cancel and are dropped.

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/forms/common.hpp"
#include "kernattn/engine/forms/scoring.hpp"
#include "kernattn/engine/key_terms.hpp"
#include "kernattn/engine/tile_scratch.hpp"

namespace kernattn::detail {

template <kernels::FeatureMapKernel Kernel>
struct Scoring<Kernel> : WithoutKeyTerm, WithoutLogFactors {
  using T = typename Kernel::Scalar;
  static constexpr bool exponential = Kernel::log_domain;
  static constexpr bool has_key_term = Kernel::has_log_scale;

  /// The scaled key features \f$\tilde\varphi(k_j)\f$, their log-scales added to `log_terms`.
  template <class Keys>
  static void key_terms(const Kernel& kernel, const Keys& keys, KeyTerms<T>& terms,
                        Eigen::VectorXd& log_terms) {
    kernel.features(keys, terms.features, log_terms);
  }

  /// The query features (their log-scales are dropped from the scores).
  template <class QueryTile>
  static void prepare_tile(const Kernel& kernel, const QueryTile& queries,
                           TileScratch<T>& scratch) {
    scratch.query_log_scales.setZero(queries.rows());
    kernel.features(queries, scratch.query_features, scratch.query_log_scales);
  }

  /// The row statistics: the query log-scales \f$s_i\f$, which the scores drop.
  template <class Queries>
  static void add_query_log_terms(const Kernel&, const Queries&, const TileScratch<T>& scratch,
                                  Eigen::ArrayXd& log_terms) {
    if constexpr (has_key_term) log_terms += scratch.query_log_scales.array();
  }

  /// \f$h(\tilde\varphi(q)\cdot\tilde\varphi(k))\f$ for a tile.
  template <class QueryTile, class KeyRows, class Tile>
  static void score_tile(const Kernel& kernel, const QueryTile&, TileScratch<T>& scratch,
                         const KeyRows& keys, const KeyTerms<T>& terms, Index first_key,
                         Tile&& tile) {
    tile.noalias() =
        scratch.query_features * terms.features.middleRows(first_key, keys.rows()).transpose();
    kernel.from_feature_dot(tile.array());
  }

  template <class QueryRows>
  static Matrix<T> prepare_rows(const Kernel& kernel, const QueryRows& queries) {
    Matrix<T> query_features;
    Eigen::VectorXd query_log_scales = Eigen::VectorXd::Zero(queries.rows());
    kernel.features(queries, query_features, query_log_scales);
    return query_features;
  }
  /// The key features: a pair reads the features, not the key.
  template <class Keys>
  static RowMajorMatrix<T> pair_keys(const KeyTerms<T>& terms, const Keys&) {
    return terms.features;
  }
  template <class Prepared, class KeyRow>
  static T score_pair(const Prepared& prepared, Index i, const KeyRow& key_features) {
    return prepared.row(i).dot(key_features);
  }
  template <class Scores>
  static void map_scores(const Kernel& kernel, Scores&& feature_dots, Index) {
    kernel.from_feature_dot(feature_dots);
  }
};

}  // namespace kernattn::detail
