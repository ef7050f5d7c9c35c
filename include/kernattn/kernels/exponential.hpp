#pragma once
/// \file
/// The exponential kernel of softmax (scaled dot-product) attention.

#include <cmath>

#include "kernattn/core/parameter.hpp"
#include "kernattn/core/parameters.hpp"
#include "kernattn/kernels/kernel.hpp"

namespace kernattn::kernels {

/// \f$\kappa(q,k) = \exp(s\, q\cdot k)\f$, default \f$s = 1/\sqrt{d}\f$.
/// With no magnitude this is softmax attention: \f$\mathrm{softmax}(s\,QK^\top)V\f$.
template <Real T>
class Exponential {
 public:
  using Scalar = T;
  using Form = DotProductForm;
  static constexpr bool has_key_term = false;

  /// \f$s = 1/\sqrt{d}\f$.
  Exponential() = default;
  /// A fixed scale \f$s > 0\f$.
  explicit Exponential(T scale) : scale_(scale, "Exponential", "scale") {}

  [[nodiscard]] T dot_scale(Index d) const { return scale_.resolve(d); }

  /// The trainable parameter (include/kernattn/core/parameters.hpp): the scale s.
  [[nodiscard]] static std::vector<std::string> parameter_names() { return {"scale"}; }
  [[nodiscard]] Eigen::VectorXd parameters(Index d) const {
    return Eigen::VectorXd::Constant(1, double(dot_scale(d)));
  }
  [[nodiscard]] Exponential with_parameters(const Eigen::VectorXd& values) const {
    require_parameter_count(values, parameter_names(), "Exponential");
    return Exponential(T(values(0)));
  }
  /// \f$\partial a/\partial s = 1\f$.
  [[nodiscard]] Eigen::VectorXd dot_scale_parameter_gradient(Index) const {
    return Eigen::VectorXd::Ones(1);
  }

  template <class Row>
  [[nodiscard]] double log_key_term(const Row& /*k*/) const {
    return 0.0;
  }

  template <class Q, class K>
  [[nodiscard]] T operator()(const Eigen::MatrixBase<Q>& q, const Eigen::MatrixBase<K>& k) const {
    return std::exp(dot_scale(q.size()) * q.dot(k));
  }

 private:
  DimensionDefault<T, SoftmaxScale> scale_;
};

}  // namespace kernattn::kernels
