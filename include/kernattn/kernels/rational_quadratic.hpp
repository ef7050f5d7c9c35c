#pragma once
/// \file
/// The rational quadratic kernel: a scale mixture of RBF kernels.

#include <cmath>

#include "kernattn/core/parameter.hpp"
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
