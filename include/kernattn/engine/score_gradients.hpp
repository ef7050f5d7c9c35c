#pragma once
/// \file
/// The backward pass's side of the score seam: `ScoreGradients<Kernel>` recomputes a tile of a
/// kernel's scores and turns the gradient of a loss with respect to them into gradients with
/// respect to the queries and the keys (docs/gradients.md). The scores are those of `Scoring`
/// (\f$\log\kappa\f$ up to the query's own term for the exponential forms, \f$\kappa\f$ for the
/// direct form); the per-key bias \f$g(k) + \log\mu(k)\f$ is the engine's.
///
/// Every specialisation provides, for a query tile Q (rows x d) and a key tile K (keys x d):
///  - `scores(kernel, Q, K, terms, first_key, scratch, tile)`: the rows x keys scores, keeping
///    in `scratch` what the gradients need;
///  - `add_gradients(kernel, Q, K, scratch, G, dq, dk)`: given
///    \f$G_{ij} = \partial\ell/\partial s_{ij}\f$ (consumed), adds
///    \f$\sum_j G_{ij}\,\partial s_{ij}/\partial q_i\f$ to row i of dq and
///    \f$\sum_i G_{ij}\,\partial s_{ij}/\partial k_j\f$ to row j of dk.

#include <array>

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/key_terms.hpp"
#include "kernattn/engine/squared_distances.hpp"
#include "kernattn/engine/tile_scratch.hpp"
#include "kernattn/kernels/kernel.hpp"

namespace kernattn::detail {

/// What one log-domain factor keeps between `scores` and `add_gradients`.
template <Real T>
struct FactorScratch {
  /// Dot-product and direct factors: \f$a\,Q\f$; distance factors: \f$-2Q\f$.
  Matrix<T> prepared;
  Vector<T> query_squared_norms;
  DistanceScratch<T> distance;
  /// Distance factors: the squared distances; direct kernels: \f$a\,(q\cdot k)\f$; the feature
  /// form: \f$\tilde\varphi(q)\cdot\tilde\varphi(k)\f$.
  Matrix<T> raw;
  /// The feature form: the tile's key features, and the features' and the inputs' gradients.
  Matrix<T> key_features;
  Matrix<T> feature_gradient;
  Matrix<T> input_gradient;
};

/// The scratch of one thread's backward tiles.
template <Real T>
struct GradientScratch {
  std::array<FactorScratch<T>, 2> factors;
  Matrix<T> position_scores;
};

template <class Kernel>
struct ScoreGradients;

/// The squared norms of keys [first, first + count) when a factor keeps them (a distance
/// factor), else an empty vector.
template <Real T>
[[nodiscard]] Vector<T> key_norms_of(const Vector<T>& norms, Index first, Index count) {
  return norms.size() == 0 ? Vector<T>() : Vector<T>(norms.segment(first, count));
}

/// The forms that are one log-domain factor on all columns (dot-product and distance kernels):
/// `Factor` is the form's `ScoreGradients`, with its `factor_scores` and `add_factor_gradients`.
template <class Kernel, class Factor>
struct SingleFactorGradients {
  using T = typename Kernel::Scalar;

  template <class Queries, class Keys, class Tile>
  static void scores(const Kernel& kernel, const Queries& queries, const Keys& keys,
                     const KeyTerms<T>& terms, Index first_key, GradientScratch<T>& scratch,
                     Tile&& tile) {
    Factor::factor_scores(kernel, queries, keys,
                          key_norms_of(terms.squared_norms, first_key, keys.rows()),
                          scratch.factors[0], tile);
  }
  template <class Queries, class Keys, class G, class DQ, class DK>
  static void add_gradients(const Kernel& kernel, const Queries& queries, const Keys& keys,
                            GradientScratch<T>& scratch, G&& gradient, DQ&& dq, DK&& dk) {
    Factor::add_factor_gradients(kernel, queries, keys, scratch.factors[0], gradient, dq, dk);
  }
};

/// One factor \f$a\,(q\cdot k)\f$: \f$\partial_q = a\,G K\f$, \f$\partial_k = a\,G^\top Q\f$.
template <kernels::DotProductKernel Kernel>
struct ScoreGradients<Kernel> : SingleFactorGradients<Kernel, ScoreGradients<Kernel>> {
  using T = typename Kernel::Scalar;

  template <class Queries, class Keys, class Tile>
  static void factor_scores(const Kernel& kernel, const Queries& queries, const Keys& keys,
                            const Vector<T>&, FactorScratch<T>& scratch, Tile&& tile) {
    scratch.prepared = kernel.dot_scale(queries.cols()) * queries;
    tile.noalias() = scratch.prepared * keys.transpose();
  }

  template <class Queries, class Keys, class G, class DQ, class DK>
  static void add_factor_gradients(const Kernel& kernel, const Queries& queries, const Keys& keys,
                                   FactorScratch<T>&, G&& gradient, DQ&& dq, DK&& dk) {
    gradient *= kernel.dot_scale(queries.cols());
    dq.noalias() += gradient * keys;
    dk.noalias() += gradient.transpose() * queries;
  }
};

/// One factor \f$h(r^2)\f$, \f$r^2 = \lVert q - k\rVert^2\f$: with \f$G'_{ij} =
/// G_{ij}\,h'(r^2_{ij})\f$, \f$\partial_{q_i} = 2\big(\sum_j G'_{ij}\,q_i - (G' K)_i\big)\f$ and
/// \f$\partial_{k_j} = 2\big(\sum_i G'_{ij}\,k_j - (G'^\top Q)_j\big)\f$.
template <kernels::DistanceKernel Kernel>
struct ScoreGradients<Kernel> : SingleFactorGradients<Kernel, ScoreGradients<Kernel>> {
  using T = typename Kernel::Scalar;

  /// `key_squared_norms`: \f$\lVert k_j\rVert^2\f$ of the tile's keys.
  template <class Queries, class Keys, class Tile>
  static void factor_scores(const Kernel& kernel, const Queries& queries, const Keys& keys,
                            const Vector<T>& key_squared_norms, FactorScratch<T>& scratch,
                            Tile&& tile) {
    scratch.prepared = T(-2) * queries;
    scratch.query_squared_norms = queries.rowwise().squaredNorm();
    scratch.distance.queries_ready = false;
    scratch.distance.keys_ready = false;
    tile.noalias() = scratch.prepared * keys.transpose();
    complete_squared_distances(queries, scratch.query_squared_norms, keys, key_squared_norms,
                               scratch.distance, tile);
    scratch.raw = tile;
    kernel.log_from_squared_distance(tile.array(), queries.cols());
  }

  /// Adds \f$\sum_{ij} G_{ij}\,\partial h(r^2_{ij})/\partial\theta\f$ to `sums` (a
  /// `kernels::ParametricKernel`), from the squared distances `scores` kept: call it between
  /// `scores` and `add_gradients`.
  template <class G>
  static void add_parameter_sums(const Kernel& kernel, Index d, const GradientScratch<T>& scratch,
                                 const G& gradient, Eigen::VectorXd& sums) {
    kernel.add_log_parameter_gradients(scratch.factors[0].raw.array(), gradient.array(), d, sums);
  }

  template <class Queries, class Keys, class G, class DQ, class DK>
  static void add_factor_gradients(const Kernel& kernel, const Queries& queries, const Keys& keys,
                                   FactorScratch<T>& scratch, G&& gradient, DQ&& dq, DK&& dk) {
    auto weighted = scratch.raw.array();
    kernel.log_derivative_from_squared_distance(weighted, queries.cols());
    weighted *= gradient.array() * T(2);
    const Vector<T> row_sums = scratch.raw.rowwise().sum();
    const Vector<T> column_sums = scratch.raw.colwise().sum().transpose();
    dq.noalias() -= scratch.raw * keys;
    dq += row_sums.asDiagonal() * queries;
    dk.noalias() -= scratch.raw.transpose() * queries;
    dk += column_sums.asDiagonal() * keys;
  }
};

/// \f$\kappa = h(x)\f$, \f$x = a\,(q\cdot k)\f$: with \f$G'_{ij} = a\,G_{ij}\,h'(x_{ij})\f$,
/// \f$\partial_q = G' K\f$, \f$\partial_k = G'^\top Q\f$.
template <kernels::DirectKernel Kernel>
struct ScoreGradients<Kernel> {
  using T = typename Kernel::Scalar;

  template <class Queries, class Keys, class Tile>
  static void scores(const Kernel& kernel, const Queries& queries, const Keys& keys,
                     const KeyTerms<T>&, Index, GradientScratch<T>& scratch, Tile&& tile) {
    FactorScratch<T>& factor = scratch.factors[0];
    factor.prepared = kernel.dot_scale(queries.cols()) * queries;
    factor.raw.noalias() = factor.prepared * keys.transpose();
    tile = factor.raw;
    kernel.from_scaled_dot(tile.array());
  }

  template <class Queries, class Keys, class G, class DQ, class DK>
  static void add_gradients(const Kernel& kernel, const Queries& queries, const Keys& keys,
                            GradientScratch<T>& scratch, G&& gradient, DQ&& dq, DK&& dk) {
    auto weighted = scratch.factors[0].raw.array();
    kernel.derivative_from_scaled_dot(weighted);
    weighted *= gradient.array() * kernel.dot_scale(queries.cols());
    dq.noalias() += scratch.factors[0].raw * keys;
    dk.noalias() += scratch.factors[0].raw.transpose() * queries;
  }
};

/// \f$h(x)\f$, \f$x = \tilde\varphi(q)\cdot\tilde\varphi(k)\f$: with \f$G'_{ij} =
/// G_{ij}\,h'(x_{ij})\f$, the features' gradients are \f$G'\tilde\varphi(K)\f$ and
/// \f$G'^\top\tilde\varphi(Q)\f$, and the map's vector-Jacobian product carries them to the inputs
/// (the queries' log-scales are dropped from the scores; the keys' join the key bias, whose
/// gradient the engine adds).
template <kernels::FeatureMapKernel Kernel>
struct ScoreGradients<Kernel> {
  using T = typename Kernel::Scalar;

  template <class Queries, class Keys, class Tile>
  static void scores(const Kernel& kernel, const Queries& queries, const Keys& keys,
                     const KeyTerms<T>& terms, Index first_key, GradientScratch<T>& scratch,
                     Tile&& tile) {
    FactorScratch<T>& factor = scratch.factors[0];
    Eigen::VectorXd dropped_log_scales = Eigen::VectorXd::Zero(queries.rows());
    kernel.features(queries, factor.prepared, dropped_log_scales);
    factor.key_features = terms.features.middleRows(first_key, keys.rows());
    factor.raw.noalias() = factor.prepared * factor.key_features.transpose();
    tile = factor.raw;
    kernel.from_feature_dot(tile.array());
  }

  /// With `d_frequencies`, also adds the map's frequencies' share of both sides to it.
  template <class Queries, class Keys, class G, class DQ, class DK>
  static void add_gradients(const Kernel& kernel, const Queries& queries, const Keys& keys,
                            GradientScratch<T>& scratch, G&& gradient, DQ&& dq, DK&& dk,
                            Matrix<T>* d_frequencies = nullptr) {
    FactorScratch<T>& factor = scratch.factors[0];
    auto weighted = factor.raw.array();
    kernel.derivative_from_feature_dot(weighted);
    weighted *= gradient.array();
    factor.feature_gradient.noalias() = factor.raw * factor.key_features;
    kernel.feature_gradient(queries, factor.prepared, factor.feature_gradient,
                            Eigen::VectorXd::Zero(queries.rows()), factor.input_gradient,
                            d_frequencies);
    dq += factor.input_gradient;
    factor.feature_gradient.noalias() = factor.raw.transpose() * factor.prepared;
    kernel.feature_gradient(keys, factor.key_features, factor.feature_gradient,
                            Eigen::VectorXd::Zero(keys.rows()), factor.input_gradient,
                            d_frequencies);
    dk += factor.input_gradient;
  }
};

/// \f$\log\kappa_F(f_q, f_k) + \log\kappa_T(t_q, t_k)\f$: each factor on its own columns, both
/// with the same \f$G\f$.
template <kernels::ProductKernel Kernel>
struct ScoreGradients<Kernel> {
  using T = typename Kernel::Scalar;
  using FeatureGradients = ScoreGradients<typename Kernel::FeatureKernel>;
  using PositionGradients = ScoreGradients<typename Kernel::PositionKernel>;

  template <class Queries, class Keys, class Tile>
  static void scores(const Kernel& kernel, const Queries& queries, const Keys& keys,
                     const KeyTerms<T>& terms, Index first_key, GradientScratch<T>& scratch,
                     Tile&& tile) {
    const Index dt = kernel.position_dimension();
    const Index d = kernel.feature_columns(queries.cols());
    const Index count = keys.rows();
    FeatureGradients::factor_scores(kernel.feature_kernel(), queries.leftCols(d), keys.leftCols(d),
                                    key_norms_of(terms.squared_norms, first_key, count),
                                    scratch.factors[0], tile);
    scratch.position_scores.resize(tile.rows(), tile.cols());
    PositionGradients::factor_scores(kernel.position_kernel(), queries.rightCols(dt),
                                     keys.rightCols(dt),
                                     key_norms_of(terms.position_squared_norms, first_key, count),
                                     scratch.factors[1], scratch.position_scores);
    tile += scratch.position_scores;
  }

  template <class Queries, class Keys, class G, class DQ, class DK>
  static void add_gradients(const Kernel& kernel, const Queries& queries, const Keys& keys,
                            GradientScratch<T>& scratch, G&& gradient, DQ&& dq, DK&& dk) {
    const Index dt = kernel.position_dimension();
    const Index d = kernel.feature_columns(queries.cols());
    Matrix<T> position_gradient = gradient;
    FeatureGradients::add_factor_gradients(kernel.feature_kernel(), queries.leftCols(d),
                                           keys.leftCols(d), scratch.factors[0], gradient,
                                           dq.leftCols(d), dk.leftCols(d));
    PositionGradients::add_factor_gradients(kernel.position_kernel(), queries.rightCols(dt),
                                            keys.rightCols(dt), scratch.factors[1],
                                            position_gradient, dq.rightCols(dt), dk.rightCols(dt));
  }
};

}  // namespace kernattn::detail
