#pragma once
/// \file
/// The multivariate Student-t spectral sampler: the spectral density of the Matérn kernels.

#include <cmath>
#include <cstdint>
#include <string>

#include "kernattn/kernels/parameter.hpp"
#include "kernattn/random/distributions.hpp"
#include "kernattn/spectral/sampler.hpp"

namespace kernattn::spectral {

/// The multivariate Student-t with \f$\nu'\f$ degrees of freedom and scale \f$1/\ell\f$,
/// \f[ \omega = \frac{z}{\ell\sqrt{w/\nu'}}, \qquad z \sim N(0, I_d),\ w \sim \chi^2_{\nu'}, \f]
/// with density \f$\propto (1 + \ell^2\lVert\omega\rVert^2/\nu')^{-(\nu'+d)/2}\f$: the spectral
/// density of the Matérn kernel of smoothness \f$\nu = \nu'/2\f$ and lengthscale \f$\ell\f$
/// (default \f$d^{1/4}\f$, as `kernels::Matern`). \f$\nu' = 1\f$ is the multivariate Cauchy
/// density of the Laplacian kernel \f$e^{-\lVert r\rVert/\ell}\f$.
///
/// Uniforms: \f$d + 1\f$ per frequency, \f$z_i = \Phi^{-1}(u_i)\f$ for the first \f$d\f$ and
/// \f$w = \chi^{2\,-1}_{\nu'}(u_d)\f$ from the last. Isotropic, with radius
/// \f$\lVert\omega\rVert = \chi_d^{-1}(u_0)/(\ell\sqrt{\chi^{2\,-1}_{\nu'}(u_1)/\nu'})\f$.
template <Real T>
class StudentT {
 public:
  using Scalar = T;

  /// The largest \f$\nu'\f$ whose closed form `kernel_at` sums (\f$(\nu'+1)/2\f$ terms).
  static constexpr std::int64_t max_closed_form_degrees_of_freedom = 1000001;

  /// \f$\nu' > 0\f$ degrees of freedom, lengthscale \f$d^{1/4}\f$.
  explicit StudentT(T degrees_of_freedom)
      : degrees_of_freedom_(checked_degrees_of_freedom(degrees_of_freedom)) {}
  /// \f$\nu' > 0\f$ degrees of freedom and a fixed lengthscale \f$\ell > 0\f$.
  StudentT(T degrees_of_freedom, T lengthscale)
      : degrees_of_freedom_(checked_degrees_of_freedom(degrees_of_freedom)),
        lengthscale_(lengthscale, "StudentT", "lengthscale") {}

  [[nodiscard]] T degrees_of_freedom() const { return degrees_of_freedom_; }
  [[nodiscard]] T lengthscale(Index d) const { return lengthscale_.resolve(d); }

  [[nodiscard]] Index uniforms_per_frequency(Index d) const { return d + 1; }

  [[nodiscard]] Matrix<T> frequencies_from_uniforms(const Matrix<double>& uniforms, Index d) const {
    require_frequency_shape(uniforms.rows(), d, "StudentT");
    require_uniforms(uniforms, d + 1, "StudentT");
    const double nu = double(degrees_of_freedom_);
    const double l = lengthscale_.template resolve<double>(d);
    Matrix<T> frequencies(uniforms.rows(), d);
    for (Index m = 0; m < uniforms.rows(); ++m) {
      const double w = random::chi_square_quantile(nu, uniforms(m, d));
      const double scale = 1.0 / (l * std::sqrt(w / nu));
      for (Index i = 0; i < d; ++i)
        frequencies(m, i) = T(random::normal_quantile(uniforms(m, i)) * scale);
    }
    return frequencies;
  }

  /// The Matérn kernel of smoothness \f$\nu = \nu'/2\f$, in closed form for half-integer
  /// \f$\nu = p + 1/2\f$ (odd integer \f$\nu'\f$):
  /// \f[ \kappa(r) = e^{-x}\,\frac{p!}{(2p)!}\sum_{i=0}^{p}\frac{(p+i)!}{i!\,(p-i)!}\,(2x)^{p-i},
  ///     \qquad x = \sqrt{\nu'}\,\lVert r\rVert/\ell, \f]
  /// i.e. \f$e^{-x}\f$ (\f$\nu'=1\f$), \f$(1+x)e^{-x}\f$ (3), \f$(1+x+x^2/3)e^{-x}\f$ (5). Each
  /// term is evaluated as one exponential of its logarithm, so any odd \f$\nu'\f$ up to
  /// `max_closed_form_degrees_of_freedom` works (cost \f$O(\nu')\f$). Throws InvalidArgument for
  /// any other \f$\nu'\f$, which has no such closed form.
  [[nodiscard]] double kernel_at(const Vector<double>& r) const {
    const double nu = double(degrees_of_freedom_);
    require(std::floor(nu) == nu && std::fmod(nu, 2.0) == 1.0,
            "StudentT: kernel_at has no closed form for degrees_of_freedom ", nu,
            " (only for odd integers 1, 3, 5, ...: Matern nu = 1/2, 3/2, 5/2, ...)");
    if (nu > double(max_closed_form_degrees_of_freedom)) {
      // Integers below 2^53 print in full, not as 3e+06.
      const std::string got = nu < 0x1p53 ? detail::concat(std::int64_t(nu)) : detail::concat(nu);
      throw InvalidArgument(detail::concat(
          "StudentT: kernel_at evaluates the closed form for degrees_of_freedom up to ",
          max_closed_form_degrees_of_freedom, ", got ", got));
    }
    const double l = lengthscale_.template resolve<double>(r.size());
    const double x = std::sqrt(nu) * r.norm() / l;
    if (x == 0.0) return 1.0;
    if (std::isinf(x)) return 0.0;
    const auto p = std::int64_t((nu - 1.0) / 2.0);
    const double log_two_x = std::log(2.0 * x);
    const double log_prefactor = std::lgamma(double(p) + 1.0) - std::lgamma(2.0 * double(p) + 1.0);
    double sum = 0.0;
    for (std::int64_t i = 0; i <= p; ++i) {
      const double log_coefficient = std::lgamma(double(p + i) + 1.0) -
                                     std::lgamma(double(i) + 1.0) -
                                     std::lgamma(double(p - i) + 1.0);
      sum += std::exp(log_prefactor + log_coefficient + double(p - i) * log_two_x - x);
    }
    return sum;
  }

  [[nodiscard]] Index radial_uniforms(Index) const { return 2; }
  /// \f$\chi_d^{-1}(u_0) / (\ell\sqrt{\chi^{2\,-1}_{\nu'}(u_1)/\nu'})\f$.
  [[nodiscard]] double radius_from_uniforms(const double* uniforms, Index d) const {
    const double nu = double(degrees_of_freedom_);
    return random::chi_quantile(double(d), uniforms[0]) /
           (lengthscale_.template resolve<double>(d) *
            std::sqrt(random::chi_square_quantile(nu, uniforms[1]) / nu));
  }

 private:
  static T checked_degrees_of_freedom(T degrees_of_freedom) {
    require_positive_finite(degrees_of_freedom, "StudentT", "degrees_of_freedom");
    return degrees_of_freedom;
  }

  T degrees_of_freedom_;
  kernels::DimensionDefault<T, kernels::SoftmaxLengthscale> lengthscale_;
};

}  // namespace kernattn::spectral
