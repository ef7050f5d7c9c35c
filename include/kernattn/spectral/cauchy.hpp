#pragma once
/// \file
/// The product-Cauchy spectral sampler: the spectral density of the product Laplacian kernel.

#include <cmath>
#include <numbers>

#include "kernattn/core/parameter.hpp"
#include "kernattn/random/distributions.hpp"
#include "kernattn/spectral/sampler.hpp"

namespace kernattn::spectral {

/// Independent Cauchy\f$(0, 1/\ell)\f$ coordinates, density
/// \f$\prod_i \ell/(\pi(1 + \ell^2\omega_i^2))\f$: the spectral density of the product Laplacian
/// kernel \f$\kappa(r) = \exp(-\lVert r\rVert_1/\ell)\f$ (the characteristic function of
/// Cauchy\f$(0,\gamma)\f$ is \f$e^{-\gamma|t|}\f$); lengthscale \f$\ell\f$, default \f$d^{1/4}\f$.
///
/// Uniforms: \f$d\f$ per frequency, \f$\omega_i = \tan(\pi(u_i - 1/2))/\ell\f$. Not isotropic
/// (a product of one-dimensional densities).
template <Real T>
class Cauchy {
 public:
  using Scalar = T;

  Cauchy() = default;
  /// A fixed lengthscale \f$\ell \ge \tan(\pi(1/2 - 2^{-53}))/\max_T\f$ (\f$2.87\cdot10^{15}\f$
  /// over the largest T), so that every frequency is finite in T.
  explicit Cauchy(T lengthscale) : lengthscale_(lengthscale, "Cauchy", "lengthscale") {
    require_lengthscale_range(lengthscale, random::cauchy_quantile(1.0 - smallest_uniform),
                              "Cauchy", "Cauchy quantile");
  }

  [[nodiscard]] T lengthscale(Index d) const { return lengthscale_.resolve(d); }

  /// The trainable parameter (`DifferentiableSampler`): the lengthscale; the frequencies
  /// scale as \f$1/\ell\f$.
  [[nodiscard]] static std::vector<std::string> parameter_names() { return {"lengthscale"}; }
  [[nodiscard]] Eigen::VectorXd parameters(Index d) const {
    return Eigen::VectorXd::Constant(1, double(lengthscale(d)));
  }
  [[nodiscard]] Cauchy with_parameters(const Eigen::VectorXd& values) const {
    require_parameter_count(values, parameter_names(), "Cauchy");
    return Cauchy(T(values(0)));
  }
  [[nodiscard]] Eigen::VectorXd parameter_gradient(const Matrix<double>& uniforms, Index d,
                                                   const Matrix<T>& d_frequencies) const {
    return lengthscale_gradient(frequencies_from_uniforms(uniforms, d), d_frequencies,
                                lengthscale_.template resolve<double>(d));
  }

  [[nodiscard]] Index uniforms_per_frequency(Index d) const { return d; }

  /// \f$\partial\omega/\partial u = \pi(1 + x^2)/\ell\f$ at \f$x\f$ the standard Cauchy quantile of
  /// u, entry by entry (`CoordinateSampler`).
  [[nodiscard]] Matrix<double> uniform_derivative(const Matrix<double>& uniforms, Index d) const {
    const double inverse_lengthscale = 1.0 / lengthscale_.template resolve<double>(d);
    return uniforms.unaryExpr([&](double u) {
      const double x = random::cauchy_quantile(u);
      return std::numbers::pi * std::fma(x, x, 1.0) * inverse_lengthscale;
    });
  }

  [[nodiscard]] Matrix<T> frequencies_from_uniforms(const Matrix<double>& uniforms, Index d) const {
    require_frequency_shape(uniforms.rows(), d, "Cauchy");
    require_uniforms(uniforms, d, "Cauchy");
    const double inverse_lengthscale = 1.0 / lengthscale_.template resolve<double>(d);
    Matrix<T> frequencies = uniforms
                                .unaryExpr([&](double u) {
                                  return T(random::cauchy_quantile(u) * inverse_lengthscale);
                                })
                                .eval();
    require_finite_frequencies(frequencies, "Cauchy");
    return frequencies;
  }

  /// \f$\exp(-\lVert r\rVert_1/\ell)\f$.
  [[nodiscard]] double kernel_at(const Vector<double>& r) const {
    return std::exp(-r.lpNorm<1>() / lengthscale_.template resolve<double>(r.size()));
  }

 private:
  kernels::DimensionDefault<T, kernels::SoftmaxLengthscale> lengthscale_;
};

}  // namespace kernattn::spectral
