#pragma once
/// \file
/// The rational quadratic kernel: a scale mixture of RBF kernels.

#include <cmath>

#include "kernattn/core/parameter.hpp"
#include "kernattn/core/parameters.hpp"
#include "kernattn/kernels/kernel.hpp"

namespace kernattn::kernels {

/// \f$\kappa(q,k) = \big(1 + \lVert q-k\rVert^2/(2\alpha\ell^2)\big)^{-\alpha}\f$,
/// shape \f$\alpha > 0\f$ (default 1), lengthscale \f$\ell\f$ (default \f$d^{1/4}\f$).
/// Tends to the RBF kernel of lengthscale \f$\ell\f$ as \f$\alpha\to\infty\f$.
template <Real T>
class RationalQuadratic {
 public:
  using Scalar = T;
  using Form = DistanceForm;

  RationalQuadratic() = default;
  /// Shape \f$\alpha > 0\f$ with the default lengthscale.
  explicit RationalQuadratic(T alpha) : alpha_(checked_alpha(alpha)) {}
  /// Shape \f$\alpha > 0\f$ and lengthscale \f$\ell > 0\f$.
  RationalQuadratic(T alpha, T lengthscale)
      : alpha_(checked_alpha(alpha)),
        lengthscale_(lengthscale, "RationalQuadratic", "lengthscale") {}

  [[nodiscard]] T alpha() const { return alpha_; }
  [[nodiscard]] T lengthscale(Index d) const { return lengthscale_.resolve(d); }

  /// The trainable parameters (include/kernattn/core/parameters.hpp): \f$\alpha\f$ and the
  /// lengthscale \f$\ell\f$.
  [[nodiscard]] static std::vector<std::string> parameter_names() {
    return {"alpha", "lengthscale"};
  }
  [[nodiscard]] Eigen::VectorXd parameters(Index d) const {
    return Eigen::Vector2d(double(alpha_), double(lengthscale(d)));
  }
  [[nodiscard]] RationalQuadratic with_parameters(const Eigen::VectorXd& values) const {
    require_parameter_count(values, parameter_names(), "RationalQuadratic");
    return RationalQuadratic(T(values(0)), T(values(1)));
  }
  /// Adds \f$\sum G\,\partial\log\kappa/\partial\theta\f$ over a block of squared distances
  /// \f$r^2\f$ and their weights G to `sums`: with \f$u = r^2/(2\alpha\ell^2)\f$,
  /// \f$\partial\log\kappa/\partial\alpha = u/(1+u) - \mathrm{log1p}(u)\f$ and
  /// \f$\partial\log\kappa/\partial\ell = 2\alpha u / (\ell (1+u))\f$.
  template <class Distances, class Weights>
  void add_log_parameter_gradients(const Distances& squared_distances, const Weights& weights,
                                   Index d, Eigen::VectorXd& sums) const {
    const T l = lengthscale(d);
    const auto u = (squared_distances.max(T(0)) / (T(2) * alpha_ * l * l)).eval();
    const auto ratio = (u / (T(1) + u)).eval();
    sums(0) += double((weights * (ratio - u.log1p())).sum());
    sums(1) += 2.0 * double(alpha_) / double(l) * double((weights * ratio).sum());
  }

  /// Replaces each \f$r^2\f$ by \f$-\alpha\,\mathrm{log1p}\big(r^2/(2\alpha\ell^2)\big)\f$.
  template <class Block>
  void log_from_squared_distance(Block&& block, Index d) const {
    const T l = lengthscale(d);
    block = -alpha_ * (block.max(T(0)) / (T(2) * alpha_ * l * l)).log1p();
  }

  /// Replaces each \f$r^2\f$ by \f$d\log\kappa/d(r^2) = -1 / (2\ell^2 +
  /// r^2/\alpha)\f$.
  template <class Block>
  void log_derivative_from_squared_distance(Block&& block, Index d) const {
    const T l = lengthscale(d);
    block = T(-1) / (T(2) * l * l + block.max(T(0)) / alpha_);
  }

  template <class Q, class K>
  [[nodiscard]] T operator()(const Eigen::MatrixBase<Q>& q, const Eigen::MatrixBase<K>& k) const {
    const T l = lengthscale(q.size());
    return std::pow(T(1) + (q - k).squaredNorm() / (T(2) * alpha_ * l * l), -alpha_);
  }

 private:
  static T checked_alpha(T alpha) {
    require_positive_finite(alpha, "RationalQuadratic", "alpha");
    return alpha;
  }

  T alpha_ = T(1);
  DimensionDefault<T, SoftmaxLengthscale> lengthscale_;
};

}  // namespace kernattn::kernels
