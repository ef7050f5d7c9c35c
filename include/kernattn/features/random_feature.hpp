#pragma once
/// \file
/// Kernels given by a feature map, for the exact (quadratic) engine: random-feature estimates of
/// stationary kernels, implicit kernels, and the reference-compatible energy of the official
/// implicit kernel attention code.

#include <cmath>
#include <utility>

#include "kernattn/features/feature_map.hpp"
#include "kernattn/kernels/kernel.hpp"

namespace kernattn::kernels {

namespace detail {

/// What every feature kernel shares: the map, and its features for the engine.
template <features::FeatureMap Map>
class FeatureHolder {
 public:
  using FeatureMap = Map;

  explicit FeatureHolder(Map map) : map_(std::move(map)) {}

  [[nodiscard]] const Map& feature_map() const { return map_; }

  template <class X>
  void features(const Eigen::MatrixBase<X>& x, Matrix<typename Map::Scalar>& out,
                Eigen::VectorXd& log_scales) const {
    map_.features(x, out, log_scales);
  }

  /// The map's vector-Jacobian product (`features::DifferentiableFeatureMap`), adding the
  /// frequencies' gradient to `*d_frequencies` when it is not null (`FrequencyFeatureMap`).
  template <class X>
  void feature_gradient(const Eigen::MatrixBase<X>& x, const Matrix<typename Map::Scalar>& features,
                        const Matrix<typename Map::Scalar>& d_features,
                        const Eigen::VectorXd& d_log_scales, Matrix<typename Map::Scalar>& dx,
                        Matrix<typename Map::Scalar>* d_frequencies =
                            nullptr) const requires features::DifferentiableFeatureMap<Map> {
    features::feature_gradient_of(map_, x, features, d_features, d_log_scales, dx, d_frequencies);
  }

  /// \f$\nabla s(k)\f$ of the key's log-scale, the key term the engine adds to its log-weight.
  template <class Row>
  [[nodiscard]] Eigen::RowVectorXd log_key_term_gradient(
      const Row& k) const requires features::DifferentiableFeatureMap<Map> {
    using T = typename Map::Scalar;
    const Matrix<T> key = k.template cast<T>();
    Matrix<T> features;
    Eigen::VectorXd log_scales = Eigen::VectorXd::Zero(1);
    map_.features(key, features, log_scales);
    Matrix<T> gradient;
    map_.feature_gradient(key, features, Matrix<T>::Zero(1, features.cols()),
                          Eigen::VectorXd::Ones(1), gradient);
    return gradient.template cast<double>();
  }

 private:
  Map map_;
};

}  // namespace detail

/// \f$\varphi(q)\cdot\varphi(k)\f$ in double, from the scaled features and their log-scales.
template <features::FeatureMap Map, class Q, class K>
[[nodiscard]] double feature_dot(const Map& map, const Eigen::MatrixBase<Q>& q,
                                 const Eigen::MatrixBase<K>& k) {
  using T = typename Map::Scalar;
  Matrix<T> rows(2, q.size());
  rows.row(0) = q.template cast<T>();
  rows.row(1) = k.template cast<T>();
  Matrix<T> features;
  Eigen::VectorXd log_scales = Eigen::VectorXd::Zero(2);
  map.features(rows, features, log_scales);
  return features.row(0).template cast<double>().dot(features.row(1).template cast<double>()) *
         std::exp(log_scales.sum());
}

/// \f$\kappa(q,k) = \varphi(q)\cdot\varphi(k)\f$ for a feature map \f$\varphi\f$ (Fourier features
/// of any spectral sampler, implicit samplers included, Yaglom or positive features).
/// Normalised directly, like the polynomial kernel: trigonometric features can give zero or
/// negative weights, and a row whose weights sum to exactly zero outputs zeros.
template <features::FeatureMap Map>
class RandomFeature : public detail::FeatureHolder<Map> {
 public:
  using Scalar = typename Map::Scalar;
  using Form = FeatureForm;
  static constexpr bool log_domain = false;
  static constexpr bool has_log_scale = Map::has_log_scale;

  using detail::FeatureHolder<Map>::FeatureHolder;

  template <class Block>
  void from_feature_dot(Block&&) const {}
  /// \f$h(x) = x\f$: \f$h' = 1\f$.
  template <class Block>
  void derivative_from_feature_dot(Block&& block) const {
    block.setConstant(Scalar(1));
  }

  /// \f$\varphi(q)\cdot\varphi(k)\f$.
  template <class Q, class K>
  [[nodiscard]] Scalar operator()(const Eigen::MatrixBase<Q>& q,
                                  const Eigen::MatrixBase<K>& k) const {
    return Scalar(feature_dot(this->feature_map(), q, k));
  }
};

/// The energy of the official implicit kernel attention code (docs/math.md, section 2), for a model
/// trained with it: \f$\log\kappa(q,k) = \log\big((\varphi(q)\cdot\varphi(k))^2 +
/// \varepsilon\big)\f$, \f$\varepsilon = 10^{-5}\f$, with \f$\varphi\f$ = `features::Yaglom` (whose
/// normalisation \f$1/(2\sqrt M)\f$ is the official division by \f$4M\f$). Combined with the
/// official magnitude
/// (`ika_reference_magnitude`) and softmax over keys this reproduces the official attention
/// weights; see `make_ika_reference`.
template <features::FeatureMap Map>
class IkaEnergy : public detail::FeatureHolder<Map> {
  static_assert(!Map::has_log_scale,
                "IkaEnergy: log((phi(q).phi(k))^2 + eps) does not factor per key, so the feature "
                "map must not use log-scales (use Yaglom or Fourier features)");

 public:
  using Scalar = typename Map::Scalar;
  using Form = FeatureForm;
  static constexpr bool log_domain = true;
  static constexpr bool has_log_scale = false;
  static constexpr double epsilon = 1e-5;

  using detail::FeatureHolder<Map>::FeatureHolder;

  /// \f$x \mapsto \log(x^2 + \varepsilon)\f$.
  template <class Block>
  void from_feature_dot(Block&& block) const {
    block = (block.square() + Scalar(epsilon)).log();
  }
  /// \f$h'(x) = 2x / (x^2 + \varepsilon)\f$.
  template <class Block>
  void derivative_from_feature_dot(Block&& block) const {
    block = Scalar(2) * block / (block.square() + Scalar(epsilon));
  }

  /// \f$(\varphi(q)\cdot\varphi(k))^2 + \varepsilon\f$.
  template <class Q, class K>
  [[nodiscard]] Scalar operator()(const Eigen::MatrixBase<Q>& q,
                                  const Eigen::MatrixBase<K>& k) const {
    const double dot = feature_dot(this->feature_map(), q, k);
    return Scalar(dot * dot + epsilon);
  }
};

}  // namespace kernattn::kernels
