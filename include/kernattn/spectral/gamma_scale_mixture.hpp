#pragma once
/// \file
/// The Gaussian scale mixture with Gamma precision: the spectral density of the rational
/// quadratic kernel.

#include <cmath>

#include "kernattn/core/parameter.hpp"
#include "kernattn/random/distributions.hpp"
#include "kernattn/spectral/sampler.hpp"

namespace kernattn::spectral {

/// \f$\omega = z\sqrt{\tau}/\ell\f$ with \f$z \sim N(0, I_d)\f$ and a precision
/// \f$\tau \sim \mathrm{Gamma}(\text{shape }\alpha, \text{rate }\alpha)\f$ (mean 1): given
/// \f$\tau\f$, \f$\omega\f$ is the spectral density of an RBF kernel of lengthscale
/// \f$\ell/\sqrt\tau\f$, and averaging over \f$\tau\f$ (the Gamma moment generating function)
/// gives the rational quadratic kernel
/// \f[ \kappa(r) = E_\tau\!\left[e^{-\tau\lVert r\rVert^2/(2\ell^2)}\right]
///     = \left(1 + \frac{\lVert r\rVert^2}{2\alpha\ell^2}\right)^{-\alpha} \f]
/// of `kernels::RationalQuadratic`; shape \f$\alpha > 0\f$ (default 1), lengthscale \f$\ell\f$
/// (default \f$d^{1/4}\f$).
///
/// Uniforms: \f$d + 1\f$ per frequency, \f$z_i = \Phi^{-1}(u_i)\f$ for the first \f$d\f$ and
/// \f$\tau = \Gamma_\alpha^{-1}(u_d)/\alpha\f$ from the last. Isotropic, with radius
/// \f$\lVert\omega\rVert = \chi_d^{-1}(u_0)\sqrt{\Gamma_\alpha^{-1}(u_1)/\alpha}/\ell\f$.
template <Real T>
class GammaScaleMixture {
 public:
  using Scalar = T;

  /// \f$\alpha = 1\f$, \f$\ell = d^{1/4}\f$.
  GammaScaleMixture() = default;
  /// Shape \f$\alpha > 0\f$ with the default lengthscale.
  explicit GammaScaleMixture(T alpha) : alpha_(checked_alpha(alpha)) {}
  /// Shape \f$\alpha > 0\f$ and lengthscale \f$\ell > 0\f$ such that every frequency is finite
  /// in T: \f$\ell \ge \Phi^{-1}(1 - 2^{-53})\sqrt{\tau_{\max}}/\max_T\f$ with the largest
  /// precision \f$\tau_{\max} = \Gamma_\alpha^{-1}(1 - 2^{-53})/\alpha\f$ (at most
  /// \f$1.5\cdot10^{15}\f$, near \f$\alpha = 10^{-15}\f$; so the default \f$\ell = d^{1/4}\f$
  /// always is).
  GammaScaleMixture(T alpha, T lengthscale)
      : alpha_(checked_alpha(alpha)),
        lengthscale_(lengthscale, "GammaScaleMixture", "lengthscale") {
    require_lengthscale_range(lengthscale,
                              largest_normal() * std::sqrt(precision(1.0 - smallest_uniform)),
                              "GammaScaleMixture", "normal quantile times the root precision");
  }

  [[nodiscard]] T alpha() const { return alpha_; }
  [[nodiscard]] T lengthscale(Index d) const { return lengthscale_.resolve(d); }

  [[nodiscard]] Index uniforms_per_frequency(Index d) const { return d + 1; }

  [[nodiscard]] Matrix<T> frequencies_from_uniforms(const Matrix<double>& uniforms, Index d) const {
    require_frequency_shape(uniforms.rows(), d, "GammaScaleMixture");
    require_uniforms(uniforms, d + 1, "GammaScaleMixture");
    const double inverse_lengthscale = 1.0 / lengthscale_.template resolve<double>(d);
    Matrix<T> frequencies(uniforms.rows(), d);
    for (Index m = 0; m < uniforms.rows(); ++m) {
      const double scale = std::sqrt(precision(uniforms(m, d))) * inverse_lengthscale;
      for (Index i = 0; i < d; ++i)
        frequencies(m, i) = T(random::normal_quantile(uniforms(m, i)) * scale);
    }
    require_finite_frequencies(frequencies, "GammaScaleMixture");
    return frequencies;
  }

  /// \f$(1 + \lVert r\rVert^2/(2\alpha\ell^2))^{-\alpha}\f$.
  [[nodiscard]] double kernel_at(const Vector<double>& r) const {
    const double l = lengthscale_.template resolve<double>(r.size());
    const double a = double(alpha_);
    return std::exp(-a * std::log1p(r.squaredNorm() / (2.0 * a * l * l)));
  }

  [[nodiscard]] Index radial_uniforms(Index) const { return 2; }
  /// \f$\chi_d^{-1}(u_0)\sqrt{\tau(u_1)}/\ell\f$.
  [[nodiscard]] double radius_from_uniforms(const double* uniforms, Index d) const {
    return random::chi_quantile(double(d), uniforms[0]) * std::sqrt(precision(uniforms[1])) /
           lengthscale_.template resolve<double>(d);
  }

 private:
  static T checked_alpha(T alpha) {
    require_positive_finite(alpha, "GammaScaleMixture", "alpha");
    return alpha;
  }

  /// \f$\tau = \Gamma_\alpha^{-1}(u)/\alpha\f$, Gamma(shape \f$\alpha\f$, rate \f$\alpha\f$).
  [[nodiscard]] double precision(double u) const {
    const double a = double(alpha_);
    return random::gamma_quantile(a, u) / a;
  }

  T alpha_ = T(1);
  kernels::DimensionDefault<T, kernels::SoftmaxLengthscale> lengthscale_;
};

}  // namespace kernattn::spectral
