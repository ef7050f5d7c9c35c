#pragma once
/// \file
/// The multivariate Student-t spectral sampler: the spectral density of the Matérn kernels.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "kernattn/core/parameter.hpp"
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

  /// \f$\nu'\f$ degrees of freedom, lengthscale \f$d^{1/4}\f$. \f$\nu'\f$ must be finite and large
  /// enough for every frequency to be finite in T (see `largest_frequency`): \f$\nu' \ge
  /// 0.104\f$ in double, \f$0.422\f$ in float.
  explicit StudentT(T degrees_of_freedom)
      : degrees_of_freedom_(checked_degrees_of_freedom(degrees_of_freedom)) {
    require_range();
  }
  /// \f$\nu'\f$ degrees of freedom and a fixed lengthscale \f$\ell > 0\f$, together such that
  /// every frequency is finite in T.
  StudentT(T degrees_of_freedom, T lengthscale)
      : degrees_of_freedom_(checked_degrees_of_freedom(degrees_of_freedom)),
        lengthscale_(lengthscale, "StudentT", "lengthscale") {
    require_range();
  }

  /// The largest \f$|\omega_i|\f$ made from uniforms in \f$[2^{-53}, 1 - 2^{-53}]\f$ (in double,
  /// possibly infinite): \f$\Phi^{-1}(1 - 2^{-53})/(\ell\sqrt{w_{\min}/\nu'})\f$ with the
  /// smallest chi-square \f$w_{\min} = \chi^{2\,-1}_{\nu'}(2^{-53})\f$, which a small
  /// \f$\nu'\f$ makes vanishingly small (\f$\log w_{\min} \approx -73.5/\nu'\f$). A
  /// \f$w_{\min}/\nu'\f$ below the normal doubles (\f$\nu' < 0.1033\f$) has lost its digits
  /// and counts as infinite.
  [[nodiscard]] static double largest_frequency(double degrees_of_freedom, double lengthscale) {
    const double shape = 0.5 * degrees_of_freedom;
    const double mean_one = shape > 0.0  // w / nu'
                                ? random::gamma_quantile(shape, smallest_uniform) / shape
                                : 0.0;
    if (!(mean_one >= std::numeric_limits<double>::min()))
      return std::numeric_limits<double>::infinity();
    return largest_normal() / (lengthscale * std::sqrt(mean_one));
  }

  [[nodiscard]] T degrees_of_freedom() const { return degrees_of_freedom_; }
  [[nodiscard]] T lengthscale(Index d) const { return lengthscale_.resolve(d); }

  /// The trainable parameter (`DifferentiableSampler`): the lengthscale (the degrees of freedom
  /// stay fixed); the frequencies scale as \f$1/\ell\f$.
  [[nodiscard]] static std::vector<std::string> parameter_names() { return {"lengthscale"}; }
  [[nodiscard]] Eigen::VectorXd parameters(Index d) const {
    return Eigen::VectorXd::Constant(1, double(lengthscale(d)));
  }
  [[nodiscard]] StudentT with_parameters(const Eigen::VectorXd& values) const {
    require_parameter_count(values, parameter_names(), "StudentT");
    return StudentT(degrees_of_freedom_, T(values(0)));
  }
  [[nodiscard]] Eigen::VectorXd parameter_gradient(const Matrix<double>& uniforms, Index d,
                                                   const Matrix<T>& d_frequencies) const {
    return lengthscale_gradient(frequencies_from_uniforms(uniforms, d), d_frequencies,
                                lengthscale_.template resolve<double>(d));
  }

  [[nodiscard]] Index uniforms_per_frequency(Index d) const { return d + 1; }

  [[nodiscard]] Matrix<T> frequencies_from_uniforms(const Matrix<double>& uniforms, Index d) const {
    require_frequency_shape(uniforms.rows(), d, "StudentT");
    require_uniforms(uniforms, d + 1, "StudentT");
    const double nu = double(degrees_of_freedom_);
    const double l = lengthscale_.template resolve<double>(d);
    Matrix<T> frequencies(uniforms.rows(), d);
    for (Index m = 0; m < uniforms.rows(); ++m) {
      const double scale = 1.0 / (l * std::sqrt(chi_square_over_nu(nu, uniforms(m, d))));
      for (Index i = 0; i < d; ++i)
        frequencies(m, i) = T(random::normal_quantile(uniforms(m, i)) * scale);
    }
    require_finite_frequencies(frequencies, "StudentT");
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
    return random::chi_quantile(double(d), uniforms[0]) /
           (lengthscale_.template resolve<double>(d) *
            std::sqrt(chi_square_over_nu(double(degrees_of_freedom_), uniforms[1])));
  }

 private:
  static T checked_degrees_of_freedom(T degrees_of_freedom) {
    require_positive_finite(degrees_of_freedom, "StudentT", "degrees_of_freedom");
    return degrees_of_freedom;
  }

  /// \f$w/\nu'\f$ for \f$w = \chi^{2\,-1}_{\nu'}(u)\f$, as \f$\Gamma^{-1}_{\nu'/2}(u)/(\nu'/2)\f$:
  /// the same value, without the overflow of \f$w\f$ near the largest double.
  [[nodiscard]] static double chi_square_over_nu(double nu, double u) {
    return random::gamma_quantile(0.5 * nu, u) / (0.5 * nu);
  }

  /// Requires `largest_frequency` to be finite in T, with the lengthscale (the default
  /// \f$d^{1/4}\f$ at d = 1, its smallest); the message gives the smallest accepted
  /// \f$\nu'\f$ for that lengthscale, found by bisection on \f$\log\nu'\f$.
  void require_range() const {
    const bool fixed = lengthscale_.is_fixed();
    const double l = lengthscale_.template resolve<double>(1);
    const double nu = double(degrees_of_freedom_);
    const auto accepted = [&](double candidate) {
      return representable<T>(largest_frequency(candidate, l));
    };
    if (accepted(nu)) return;
    const auto head = [&] {
      return detail::concat("StudentT: degrees_of_freedom = ", nu, " with lengthscale ", l,
                            fixed ? "" : " (the default d^(1/4) at d = 1, its smallest)",
                            " makes frequencies up to ", largest_frequency(nu, l),
                            " for the extreme uniforms 2^-53, beyond the largest ",
                            ScalarTraits<T>::name, " ", std::numeric_limits<T>::max());
    };
    double high = std::max(2.0 * nu, 1.0);
    while (!accepted(high)) {
      if (high > 1e280)
        throw InvalidArgument(detail::concat(
            head(), "; no degrees_of_freedom works with it: the lengthscale must be >= ",
            round_up_for_message(largest_normal() / double(std::numeric_limits<T>::max())),
            " (more for small degrees_of_freedom)"));
      high *= 1e10;
    }
    double low = nu;
    for (int step = 0; step < 64; ++step) {
      const double middle = std::sqrt(low) * std::sqrt(high);
      (accepted(middle) ? high : low) = middle;
    }
    const double bound = round_up_for_message(high);
    throw InvalidArgument(detail::concat(
        head(),
        "; with this lengthscale degrees_of_freedom must be >= ", accepted(bound) ? bound : high));
  }

  T degrees_of_freedom_;
  kernels::DimensionDefault<T, kernels::SoftmaxLengthscale> lengthscale_;
};

}  // namespace kernattn::spectral
