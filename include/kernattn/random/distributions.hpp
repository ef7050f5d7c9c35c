#pragma once
/// \file
/// Uniforms in (0, 1) turned into the noise the spectral samplers need: normal, gamma,
/// chi-square, chi, Student-t, Laplace and Cauchy variates, each by its inverse CDF (or a
/// stated transform of several uniforms), computed in double.
///
/// These transforms, not `std::*_distribution`, are what makes one seed give the same samples
/// everywhere: they use only IEEE arithmetic, `std::sqrt` (correctly rounded) and the C math
/// library's `log`, `exp`, `erfc`, `lgamma` and `tan`; every multiply-add is an explicit
/// `std::fma`, so a compiler's floating-point contraction cannot change a bit. Samples are
/// therefore identical across compilers and standard libraries that share a math library
/// (glibc, musl and Apple's libm each round a few transcendental results differently).

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include "kernattn/core/errors.hpp"

namespace kernattn::random {

namespace detail {

inline void require_open_unit(double u, const char* transform) {
  require(u > 0.0 && u < 1.0, transform, ": the uniform must lie strictly inside (0, 1), got ", u);
}

/// \f$\log\Gamma(a) - [(a - 1/2)\log a - a + \log\sqrt{2\pi}]\f$ for \f$a \ge 10\f$: the Stirling
/// series \f$1/(12a) - 1/(360a^3) + 1/(1260a^5) - 1/(1680a^7)\f$ (truncation error below
/// \f$10^{-16}\f$ there).
inline double stirling_remainder(double a) {
  const double inverse = 1.0 / a;
  const double square = inverse * inverse;
  const double series =
      std::fma(std::fma(std::fma(-1.0 / 1680.0, square, 1.0 / 1260.0), square, -1.0 / 360.0),
               square, 1.0 / 12.0);
  return series * inverse;
}

/// \f$x^a e^{-x}/\Gamma(a)\f$, the common factor of \f$P(a,x)\f$ and \f$Q(a,x)\f$. For
/// \f$a \ge 10\f$ it is evaluated as \f$\sqrt{a/(2\pi)}\,\exp\big(a(\log(1+\eta) - \eta) -
/// r(a)\big)\f$ with \f$\eta = (x-a)/a\f$ and the Stirling remainder \f$r\f$, which avoids the
/// cancellation between \f$a\log x\f$, \f$x\f$ and \f$\log\Gamma(a)\f$ (each about
/// \f$a\log a\f$).
inline double gamma_prefactor(double a, double x) {
  if (a < 10.0) return std::exp(std::fma(a, std::log(x), -x) - std::lgamma(a));
  const double eta = (x - a) / a;
  // log(1 + eta) from log1p near x = a, where it is accurate; from x / a (one rounding) far
  // from it, where eta itself has lost the digits of a small x.
  const double log_ratio = std::abs(eta) < 0.5 ? std::log1p(eta) : std::log(x / a);
  constexpr double two_pi = 2.0 * std::numbers::pi;
  return std::sqrt(a / two_pi) * std::exp(a * (log_ratio - eta) - stirling_remainder(a));
}

/// Iterations of the series and the continued fraction: both need about
/// \f$\sqrt a\f$ near \f$x = a\f$.
inline int gamma_iteration_limit(double a) { return 100 + int(20.0 * std::sqrt(a)); }

/// \f$P(a,x)/\text{prefactor} = \sum_{n\ge0} x^n / (a(a+1)\cdots(a+n))\f$, for \f$x < a+1\f$.
inline double lower_gamma_series(double a, double x) {
  double term = 1.0 / a;
  double sum = term;
  for (int n = 1, limit = gamma_iteration_limit(a); n < limit; ++n) {
    term *= x / (a + n);
    sum += term;
    if (std::abs(term) < std::abs(sum) * 1e-17) break;
  }
  return sum;
}

/// \f$Q(a,x)/\text{prefactor}\f$ by the continued fraction
/// \f$1/(x+1-a-\,1(1-a)/(x+3-a-\,2(2-a)/(x+5-a-\cdots)))\f$ (modified Lentz), for
/// \f$x \ge a+1\f$.
inline double upper_gamma_fraction(double a, double x) {
  constexpr double tiny = 1e-300;
  double b = x + 1.0 - a;
  double c = 1.0 / tiny;
  double d = 1.0 / b;
  double h = d;
  for (int i = 1, limit = gamma_iteration_limit(a); i < limit; ++i) {
    const double an = -i * (i - a);
    b += 2.0;
    d = std::fma(an, d, b);
    if (std::abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (std::abs(c) < tiny) c = tiny;
    d = 1.0 / d;
    const double step = d * c;
    h *= step;
    if (std::abs(step - 1.0) < 1e-16) break;
  }
  return h;
}

/// \f$I_x(a,b)\,/\,\text{prefactor}\f$ with prefactor \f$x^a(1-x)^b/(a\,B(a,b))\f$, by the
/// continued fraction \f$1/(1+d_1/(1+d_2/(1+\cdots)))\f$ with
/// \f$d_{2m+1} = -(a+m)(a+b+m)x/((a+2m)(a+2m+1))\f$ and \f$d_{2m} = m(b-m)x/((a+2m-1)(a+2m))\f$
/// (modified Lentz), which converges fast for \f$x < (a+1)/(a+b+2)\f$.
inline double incomplete_beta_fraction(double a, double b, double x) {
  constexpr double tiny = 1e-300;
  const auto clamp_away_from_zero = [](double v) { return std::abs(v) < tiny ? tiny : v; };
  double c = 1.0;
  double d = 1.0 / clamp_away_from_zero(1.0 - (a + b) * x / (a + 1.0));
  double h = d;
  const int limit = 200 + int(20.0 * std::sqrt(std::max(a, b)));
  for (int m = 1; m < limit; ++m) {
    const double even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
    d = 1.0 / clamp_away_from_zero(std::fma(even, d, 1.0));
    c = clamp_away_from_zero(1.0 + even / c);
    h *= d * c;
    const double odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
    d = 1.0 / clamp_away_from_zero(std::fma(odd, d, 1.0));
    c = clamp_away_from_zero(1.0 + odd / c);
    const double step = d * c;
    h *= step;
    if (std::abs(step - 1.0) < 1e-16) break;
  }
  return h;
}

/// The regularised incomplete beta function \f$I_x(a,b)\f$ given both \f$x\f$ and
/// \f$1 - x\f$ (so that neither loses precision to a subtraction), through the continued
/// fraction on whichever side converges: \f$I_x(a,b) = 1 - I_{1-x}(b,a)\f$.
inline double regularised_incomplete_beta(double a, double b, double x, double one_minus_x) {
  if (x <= 0.0) return 0.0;
  if (one_minus_x <= 0.0) return 1.0;
  const double log_beta = std::lgamma(a) + std::lgamma(b) - std::lgamma(a + b);
  const double log_prefactor = a * std::log(x) + b * std::log(one_minus_x) - log_beta;
  if (x < (a + 1.0) / (a + b + 2.0))
    return std::exp(log_prefactor) * incomplete_beta_fraction(a, b, x) / a;
  return 1.0 - std::exp(log_prefactor) * incomplete_beta_fraction(b, a, one_minus_x) / b;
}

}  // namespace detail

/// The standard normal CDF \f$\Phi(x) = \tfrac12\operatorname{erfc}(-x/\sqrt2)\f$.
[[nodiscard]] inline double normal_cdf(double x) {
  return 0.5 * std::erfc(-x * std::numbers::sqrt2 * 0.5);
}

/// The standard normal quantile \f$\Phi^{-1}(u)\f$, to full double precision.
///
/// With \f$t = \min(u, 1-u)\f$ (exact for \f$u \ge 1/2\f$) the lower-tail root \f$x \le 0\f$ of
/// \f$\Phi(x) = t\f$ starts from Abramowitz and Stegun 26.2.23 (\f$|error| < 4.5\cdot10^{-4}\f$)
/// and takes three Halley steps \f$x \leftarrow x - r/(1 + x r/2)\f$,
/// \f$r = (\Phi(x) - t)/\varphi(x)\f$; each step triples the number of correct digits.
/// \f$1/\varphi(x)\f$ is applied as two factors \f$e^{x^2/4}\f$, which stay finite down to the
/// smallest subnormal \f$u\f$ (\f$|x| \le 38.5\f$). Exactly 0 at \f$u = 1/2\f$.
[[nodiscard]] inline double normal_quantile(double u) {
  detail::require_open_unit(u, "normal_quantile");
  if (u == 0.5) return 0.0;
  const double tail = u < 0.5 ? u : 1.0 - u;
  const double t = std::sqrt(-2.0 * std::log(tail));
  const double numerator = std::fma(std::fma(0.010328, t, 0.802853), t, 2.515517);
  const double denominator =
      std::fma(std::fma(std::fma(0.001308, t, 0.189269), t, 1.432788), t, 1.0);
  double x = numerator / denominator - t;
  constexpr double root_two_pi = 2.506628274631000502415765284811045253;
  for (int step = 0; step < 3; ++step) {
    const double half_inverse_density = std::exp(0.25 * x * x);
    const double ratio =
        (normal_cdf(x) - tail) * half_inverse_density * half_inverse_density * root_two_pi;
    x -= ratio / std::fma(0.5 * x, ratio, 1.0);
  }
  return u < 0.5 ? x : -x;
}

/// The regularised lower incomplete gamma function
/// \f$P(a,x) = \gamma(a,x)/\Gamma(a)\f$, \f$a > 0\f$, \f$x \ge 0\f$.
[[nodiscard]] inline double gamma_p(double a, double x) {
  if (x <= 0.0) return 0.0;
  if (x < a + 1.0) return detail::gamma_prefactor(a, x) * detail::lower_gamma_series(a, x);
  return 1.0 - detail::gamma_prefactor(a, x) * detail::upper_gamma_fraction(a, x);
}

/// The regularised upper incomplete gamma function \f$Q(a,x) = 1 - P(a,x)\f$, accurate in the
/// upper tail.
[[nodiscard]] inline double gamma_q(double a, double x) {
  if (x <= 0.0) return 1.0;
  if (x < a + 1.0) return 1.0 - detail::gamma_prefactor(a, x) * detail::lower_gamma_series(a, x);
  return detail::gamma_prefactor(a, x) * detail::upper_gamma_fraction(a, x);
}

/// The quantile of Gamma(shape \f$a\f$, rate 1): the \f$x\f$ with \f$P(a,x) = u\f$.
///
/// Starts from the Wilson-Hilferty cube (\f$a > 1\f$) or the small-\f$x\f$ power law
/// \f$x \approx (u/t)^{1/a}\f$ (\f$a \le 1\f$), then Halley steps on \f$P(a,x) - u\f$ (on
/// \f$(1-u) - Q(a,x)\f$ for \f$u > 1/2\f$, so the upper tail keeps its precision), with the
/// density \f$x^{a-1}e^{-x}/\Gamma(a)\f$ and \f$f''/f' = (a-1)/x - 1\f$.
[[nodiscard]] inline double gamma_quantile(double a, double u) {
  require(std::isfinite(a) && a > 0.0,
          "gamma_quantile: the shape must be a finite number > 0, got ", a);
  detail::require_open_unit(u, "gamma_quantile");
  const bool upper = u > 0.5;
  const double upper_tail = 1.0 - u;

  double x;
  if (a > 1.0) {
    const double z = normal_quantile(u);
    const double cube = std::fma(z, 1.0 / (3.0 * std::sqrt(a)), 1.0 - 1.0 / (9.0 * a));
    x = cube > 0.0 ? a * cube * cube * cube : std::exp((std::log(u) + std::lgamma(a + 1.0)) / a);
  } else {
    const double t = 1.0 - a * std::fma(0.12, a, 0.253);
    x = u < t ? std::pow(u / t, 1.0 / a) : 1.0 - std::log1p(-(u - t) / (1.0 - t));
  }

  for (int step = 0; step < 100 && x > 0.0; ++step) {
    const double error = upper ? upper_tail - gamma_q(a, x) : gamma_p(a, x) - u;
    const double density = detail::gamma_prefactor(a, x) / x;
    if (!(density > 0.0)) break;
    const double newton = error / density;
    const double curvature = (a - 1.0) / x - 1.0;
    double change = newton / std::fma(-0.5 * newton, curvature, 1.0);
    if (!std::isfinite(change)) change = newton;
    double next = x - change;
    if (next <= 0.0) next = 0.5 * x;
    const bool converged = std::abs(next - x) <= 1e-15 * next;
    x = next;
    if (converged) break;
  }
  return x;
}

/// The quantile of the chi-square distribution with \f$k\f$ degrees of freedom:
/// \f$2\,\Gamma^{-1}(k/2, u)\f$.
[[nodiscard]] inline double chi_square_quantile(double degrees_of_freedom, double u) {
  return 2.0 * gamma_quantile(0.5 * degrees_of_freedom, u);
}

/// The quantile of the chi distribution (the norm of a \f$k\f$-dimensional standard normal).
[[nodiscard]] inline double chi_quantile(double degrees_of_freedom, double u) {
  return std::sqrt(chi_square_quantile(degrees_of_freedom, u));
}

/// A Student-t variate with \f$\nu\f$ degrees of freedom from two uniforms:
/// \f$z/\sqrt{w/\nu}\f$ with \f$z = \Phi^{-1}(u_z)\f$ and \f$w = \chi^{2\,-1}_\nu(u_w)\f$.
[[nodiscard]] inline double student_t_from_uniforms(double degrees_of_freedom, double u_normal,
                                                    double u_chi_square) {
  return normal_quantile(u_normal) /
         std::sqrt(chi_square_quantile(degrees_of_freedom, u_chi_square) / degrees_of_freedom);
}

/// The CDF of the Student-t distribution with \f$\nu > 0\f$ degrees of freedom,
/// \f$T_\nu(t) = \tfrac12 I_{\nu/(\nu+t^2)}(\nu/2, 1/2)\f$ for \f$t \le 0\f$ and
/// \f$1 - T_\nu(-t)\f$ above, so the lower tail keeps its relative precision (about
/// \f$10^{-14}\f$ for moderate \f$\nu\f$; \f$\log B(\nu/2, 1/2)\f$ from `lgamma` costs some
/// digits beyond \f$\nu \approx 10^5\f$).
[[nodiscard]] inline double student_t_cdf(double degrees_of_freedom, double t) {
  require(std::isfinite(degrees_of_freedom) && degrees_of_freedom > 0.0,
          "student_t_cdf: the degrees of freedom must be positive and finite, got ",
          degrees_of_freedom);
  require(!std::isnan(t), "student_t_cdf: t is NaN");
  const double square = t * t;
  const double denominator = degrees_of_freedom + square;
  const double lower_tail = std::isinf(square)
                                ? 0.0
                                : 0.5 * detail::regularised_incomplete_beta(
                                            0.5 * degrees_of_freedom, 0.5,
                                            degrees_of_freedom / denominator, square / denominator);
  return t <= 0.0 ? lower_tail : 1.0 - lower_tail;
}

/// The quantile of the standard Laplace distribution (density \f$e^{-|x|}/2\f$):
/// \f$\log(2u)\f$ below the median, \f$-\log(2(1-u))\f$ above.
[[nodiscard]] inline double laplace_quantile(double u) {
  detail::require_open_unit(u, "laplace_quantile");
  return u < 0.5 ? std::log(2.0 * u) : -std::log(2.0 * (1.0 - u));
}

/// The quantile of the standard Cauchy distribution, \f$\tan(\pi(u - 1/2))\f$, evaluated as
/// \f$-1/\tan(\pi u)\f$ or \f$1/\tan(\pi(1-u))\f$ so that both tails keep their precision.
[[nodiscard]] inline double cauchy_quantile(double u) {
  detail::require_open_unit(u, "cauchy_quantile");
  if (u == 0.5) return 0.0;
  return u < 0.5 ? -1.0 / std::tan(std::numbers::pi * u)
                 : 1.0 / std::tan(std::numbers::pi * (1.0 - u));
}

}  // namespace kernattn::random
