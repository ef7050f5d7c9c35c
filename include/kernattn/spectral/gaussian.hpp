#pragma once
/// \file
/// The Gaussian spectral sampler: the spectral density of the RBF kernel.

#include <cmath>
#include <numbers>

#include "kernattn/core/parameter.hpp"
#include "kernattn/random/distributions.hpp"
#include "kernattn/spectral/sampler.hpp"

namespace kernattn::spectral {

/// \f$\omega \sim N(0, \ell^{-2} I_d)\f$, the spectral density of the RBF kernel
/// \f$\kappa(r) = \exp(-\lVert r\rVert^2/(2\ell^2))\f$; lengthscale \f$\ell\f$, default
/// \f$d^{1/4}\f$ (the RBF kernel inside softmax attention, docs/conventions.md).
///
/// Uniforms: \f$d\f$ per frequency, \f$\omega_i = \Phi^{-1}(u_i)/\ell\f$. Isotropic, with radius
/// \f$\lVert\omega\rVert = \chi_d^{-1}(u)/\ell\f$.
template <Real T>
class Gaussian {
 public:
  using Scalar = T;

  Gaussian() = default;
  /// A fixed lengthscale \f$\ell \ge \Phi^{-1}(1 - 2^{-53})/\max_T\f$ (8.21 over the largest T),
  /// so that every frequency is finite in T.
  explicit Gaussian(T lengthscale) : lengthscale_(lengthscale, "Gaussian", "lengthscale") {
    require_lengthscale_range(lengthscale, largest_normal(), "Gaussian", "normal quantile");
  }

  [[nodiscard]] T lengthscale(Index d) const { return lengthscale_.resolve(d); }

  /// The trainable parameter (`DifferentiableSampler`): the lengthscale; the frequencies
  /// scale as \f$1/\ell\f$.
  [[nodiscard]] static std::vector<std::string> parameter_names() { return {"lengthscale"}; }
  [[nodiscard]] Eigen::VectorXd parameters(Index d) const {
    return Eigen::VectorXd::Constant(1, double(lengthscale(d)));
  }
  [[nodiscard]] Gaussian with_parameters(const Eigen::VectorXd& values) const {
    require_parameter_count(values, parameter_names(), "Gaussian");
    return Gaussian(T(values(0)));
  }
  [[nodiscard]] Eigen::VectorXd parameter_gradient(const Matrix<double>& uniforms, Index d,
                                                   const Matrix<T>& d_frequencies) const {
    return lengthscale_gradient(frequencies_from_uniforms(uniforms, d), d_frequencies,
                                lengthscale_.template resolve<double>(d));
  }

  [[nodiscard]] Index uniforms_per_frequency(Index d) const { return d; }

  /// \f$\partial\omega/\partial u = \sqrt{2\pi}\,e^{x^2/2}/\ell\f$ at \f$x = \Phi^{-1}(u)\f$, entry
  /// by entry (`CoordinateSampler`: frequency coordinate c comes from uniform c alone).
  [[nodiscard]] Matrix<double> uniform_derivative(const Matrix<double>& uniforms, Index d) const {
    const double inverse_lengthscale = 1.0 / lengthscale_.template resolve<double>(d);
    return uniforms.unaryExpr([&](double u) {
      const double x = random::normal_quantile(u);
      return std::sqrt(2.0 * std::numbers::pi) * std::exp(0.5 * x * x) * inverse_lengthscale;
    });
  }

  [[nodiscard]] Matrix<T> frequencies_from_uniforms(const Matrix<double>& uniforms, Index d) const {
    require_frequency_shape(uniforms.rows(), d, "Gaussian");
    require_uniforms(uniforms, d, "Gaussian");
    const double inverse_lengthscale = 1.0 / lengthscale_.template resolve<double>(d);
    Matrix<T> frequencies = uniforms
                                .unaryExpr([&](double u) {
                                  return T(random::normal_quantile(u) * inverse_lengthscale);
                                })
                                .eval();
    require_finite_frequencies(frequencies, "Gaussian");
    return frequencies;
  }

  /// \f$\exp(-\lVert r\rVert^2/(2\ell^2))\f$.
  [[nodiscard]] double kernel_at(const Vector<double>& r) const {
    const double l = lengthscale_.template resolve<double>(r.size());
    return std::exp(-r.squaredNorm() / (2.0 * l * l));
  }

  [[nodiscard]] Index radial_uniforms(Index) const { return 1; }
  /// \f$\chi_d^{-1}(u)/\ell\f$.
  [[nodiscard]] double radius_from_uniforms(const double* uniforms, Index d) const {
    return random::chi_quantile(double(d), uniforms[0]) / lengthscale_.template resolve<double>(d);
  }

 private:
  kernels::DimensionDefault<T, kernels::SoftmaxLengthscale> lengthscale_;
};

}  // namespace kernattn::spectral
