#pragma once
/// \file
/// The product-Laplace spectral sampler: the spectral density of the product Cauchy kernel.

#include <cmath>
#include <numbers>

#include "kernattn/core/parameter.hpp"
#include "kernattn/random/distributions.hpp"
#include "kernattn/spectral/sampler.hpp"

namespace kernattn::spectral {

/// Independent Laplace\f$(0, 1/\ell)\f$ coordinates, density
/// \f$\prod_i (\ell/2)\,e^{-\ell|\omega_i|}\f$: the spectral density of the product Cauchy kernel
/// \f$\kappa(r) = \prod_i 1/(1 + r_i^2/\ell^2)\f$ (the characteristic function of
/// Laplace\f$(0,b)\f$ is \f$1/(1 + b^2t^2)\f$); lengthscale \f$\ell\f$, default \f$d^{1/4}\f$.
///
/// Uniforms: \f$d\f$ per frequency, \f$\omega_i = F^{-1}(u_i)/\ell\f$ with the standard Laplace
/// quantile \f$F^{-1}(u) = \log(2u)\f$ for \f$u < 1/2\f$, \f$-\log(2(1-u))\f$ above. Not
/// isotropic.
template <Real T>
class Laplace {
 public:
  using Scalar = T;

  Laplace() = default;
  /// A fixed lengthscale \f$\ell \ge 52\log 2/\max_T\f$ (36.04 over the largest T), so that
  /// every frequency is finite in T.
  explicit Laplace(T lengthscale) : lengthscale_(lengthscale, "Laplace", "lengthscale") {
    require_lengthscale_range(lengthscale, random::laplace_quantile(1.0 - smallest_uniform),
                              "Laplace", "Laplace quantile");
  }

  [[nodiscard]] T lengthscale(Index d) const { return lengthscale_.resolve(d); }

  /// The trainable parameter (`DifferentiableSampler`): the lengthscale; the frequencies
  /// scale as \f$1/\ell\f$.
  [[nodiscard]] static std::vector<std::string> parameter_names() { return {"lengthscale"}; }
  [[nodiscard]] Eigen::VectorXd parameters(Index d) const {
    return Eigen::VectorXd::Constant(1, double(lengthscale(d)));
  }
  [[nodiscard]] Laplace with_parameters(const Eigen::VectorXd& values) const {
    require_parameter_count(values, parameter_names(), "Laplace");
    return Laplace(T(values(0)));
  }
  [[nodiscard]] Eigen::VectorXd parameter_gradient(const Matrix<double>& uniforms, Index d,
                                                   const Matrix<T>& d_frequencies) const {
    return lengthscale_gradient(frequencies_from_uniforms(uniforms, d), d_frequencies,
                                lengthscale_.template resolve<double>(d));
  }

  [[nodiscard]] Index uniforms_per_frequency(Index d) const { return d; }

  /// \f$\partial\omega/\partial u = 2e^{|x|}/\ell\f$ at \f$x\f$ the standard Laplace quantile of u,
  /// entry by entry (`CoordinateSampler`).
  [[nodiscard]] Matrix<double> uniform_derivative(const Matrix<double>& uniforms, Index d) const {
    const double inverse_lengthscale = 1.0 / lengthscale_.template resolve<double>(d);
    return uniforms.unaryExpr([&](double u) {
      return 2.0 * std::exp(std::abs(random::laplace_quantile(u))) * inverse_lengthscale;
    });
  }

  [[nodiscard]] Matrix<T> frequencies_from_uniforms(const Matrix<double>& uniforms, Index d) const {
    require_frequency_shape(uniforms.rows(), d, "Laplace");
    require_uniforms(uniforms, d, "Laplace");
    const double inverse_lengthscale = 1.0 / lengthscale_.template resolve<double>(d);
    Matrix<T> frequencies = uniforms
                                .unaryExpr([&](double u) {
                                  return T(random::laplace_quantile(u) * inverse_lengthscale);
                                })
                                .eval();
    require_finite_frequencies(frequencies, "Laplace");
    return frequencies;
  }

  /// \f$\prod_i 1/(1 + r_i^2/\ell^2)\f$.
  [[nodiscard]] double kernel_at(const Vector<double>& r) const {
    const double l = lengthscale_.template resolve<double>(r.size());
    double kernel = 1.0;
    for (Index i = 0; i < r.size(); ++i) {
      const double x = r(i) / l;
      kernel /= std::fma(x, x, 1.0);
    }
    return kernel;
  }

 private:
  kernels::DimensionDefault<T, kernels::SoftmaxLengthscale> lengthscale_;
};

}  // namespace kernattn::spectral
