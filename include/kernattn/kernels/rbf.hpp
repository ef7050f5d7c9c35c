#pragma once
/// \file
/// The RBF (Gaussian) kernel, evaluated at the cost of softmax attention.

#include <cmath>

#include "kernattn/core/parameter.hpp"
#include "kernattn/kernels/kernel.hpp"

namespace kernattn::kernels {

/// \f$\kappa(q,k) = \exp\!\big(-\lVert q-k\rVert^2 / (2\sigma^2)\big)\f$, default
/// \f$\sigma^2 = \sqrt{d}\f$.
///
/// Expanding the square, \f$\log\kappa = q\cdot k/\sigma^2 - \lVert q\rVert^2/(2\sigma^2)
/// - \lVert k\rVert^2/(2\sigma^2)\f$: a dot-product kernel with scale \f$1/\sigma^2\f$ and key term
/// \f$g(k) = -\lVert k\rVert^2/(2\sigma^2)\f$; the query term cancels. With the magnitude
/// \f$\mu(k) = \exp(\lVert k\rVert^2/(2\sqrt{d}))\f$ (`magnitude::Lp` at p = 2) and the default
/// variance this is exactly softmax attention (docs/math.md, section 1).
template <Real T>
class Rbf {
 public:
  using Scalar = T;
  using Form = DotProductForm;
  static constexpr bool has_key_term = true;

  /// \f$\sigma^2 = \sqrt{d}\f$.
  Rbf() = default;
  /// A fixed variance \f$\sigma^2 > 0\f$.
  explicit Rbf(T variance) : variance_(variance, "Rbf", "variance") {}

  [[nodiscard]] T variance(Index d) const { return variance_.resolve(d); }
  [[nodiscard]] T dot_scale(Index d) const { return T(1) / variance(d); }

  /// \f$g(k) = -\lVert k\rVert^2 / (2\sigma^2)\f$, in double.
  template <class Row>
  [[nodiscard]] double log_key_term(const Row& k) const {
    return -k.template cast<double>().squaredNorm() *
           (0.5 / variance_.template resolve<double>(k.size()));
  }

  /// \f$\nabla g(k) = -k / \sigma^2\f$, in double.
  template <class Row>
  [[nodiscard]] Eigen::RowVectorXd log_key_term_gradient(const Row& k) const {
    return -k.template cast<double>() / variance_.template resolve<double>(k.size());
  }

  template <class Q, class K>
  [[nodiscard]] T operator()(const Eigen::MatrixBase<Q>& q, const Eigen::MatrixBase<K>& k) const {
    return std::exp(-(q - k).squaredNorm() / (T(2) * variance(q.size())));
  }

 private:
  DimensionDefault<T, SoftmaxVariance> variance_;
};

}  // namespace kernattn::kernels
