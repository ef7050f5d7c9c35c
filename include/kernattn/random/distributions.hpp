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

/// Iterations of the series and the continued fraction: both need about \f$\sqrt a\f$ near
/// \f$x = a\f$, so \f$100 + 20\sqrt a\f$, at most \f$100 + 20 \cdot 2^{18.5}\f$ (about
/// \f$7.4\cdot10^6\f$, at the largest summed shape \f$2^{37}\f$).
inline int gamma_iteration_limit(double a) {
  return 100 + int(20.0 * std::sqrt(std::min(a, 0x1p37)));
}

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
/// (modified Lentz), which converges fast for \f$x < (a+1)/(a+b+2)\f$, in about
/// \f$\sqrt{\max(a, b)}\f$ steps.
inline double incomplete_beta_fraction(double a, double b, double x) {
  constexpr double tiny = 1e-300;
  const auto clamp_away_from_zero = [](double v) { return std::abs(v) < tiny ? tiny : v; };
  double c = 1.0;
  double d = 1.0 / clamp_away_from_zero(1.0 - (a + b) * x / (a + 1.0));
  double h = d;
  const int limit = 200 + int(20.0 * std::sqrt(std::min(std::max(a, b), 0x1p37)));
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

/// \f$\log B(a,b) = \log\Gamma(a) + \log\Gamma(b) - \log\Gamma(a+b)\f$. When the larger
/// argument, say a, is at least 10, \f$\log\Gamma(a) - \log\Gamma(a+b)\f$ comes from the
/// Stirling series as \f$-(a+b-\tfrac12)\log(1 + b/a) - b\log a + b + r(a) - r(a+b)\f$, which
/// avoids the cancellation between two values of about \f$a\log a\f$.
inline double log_beta(double a, double b) {
  const double large = std::max(a, b);
  const double small = std::min(a, b);
  if (large < 10.0) return std::lgamma(a) + std::lgamma(b) - std::lgamma(a + b);
  const double difference = -(large + small - 0.5) * std::log1p(small / large) -
                            small * std::log(large) + small + stirling_remainder(large) -
                            stirling_remainder(large + small);
  return std::lgamma(small) + difference;
}

/// The regularised incomplete beta function \f$I_x(a,b)\f$ given \f$x\f$, \f$1 - x\f$ and
/// their logarithms (so that none loses precision to a subtraction or an underflow), through the
/// continued fraction on whichever side converges: \f$I_x(a,b) = 1 - I_{1-x}(b,a)\f$.
inline double regularised_incomplete_beta(double a, double b, double x, double one_minus_x,
                                          double log_x, double log_one_minus_x) {
  if (log_x == -std::numeric_limits<double>::infinity()) return 0.0;
  if (log_one_minus_x == -std::numeric_limits<double>::infinity()) return 1.0;
  const double log_prefactor = a * log_x + b * log_one_minus_x - log_beta(a, b);
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

/// The largest shape \f$a\f$ for which `gamma_p` and `gamma_q` sum their series and continued
/// fraction (up to \f$100 + 20\sqrt a\f$ terms): \f$2^{37} \approx 1.4\cdot10^{11}\f$. Above
/// it `gamma_quantile` needs neither.
inline constexpr double max_summed_gamma_shape = 0x1p37;

namespace detail {
inline void require_summed_shape(double a, const char* function) {
  require(a > 0.0 && a <= max_summed_gamma_shape, function,
          ": the shape must lie in (0, 2^37 = 1.37e11], got ", a);
}
}  // namespace detail

/// The regularised lower incomplete gamma function
/// \f$P(a,x) = \gamma(a,x)/\Gamma(a)\f$, \f$0 < a \le 2^{37}\f$ (`max_summed_gamma_shape`),
/// \f$x \ge 0\f$.
[[nodiscard]] inline double gamma_p(double a, double x) {
  detail::require_summed_shape(a, "gamma_p");
  if (x <= 0.0) return 0.0;
  if (x < a + 1.0) return detail::gamma_prefactor(a, x) * detail::lower_gamma_series(a, x);
  return 1.0 - detail::gamma_prefactor(a, x) * detail::upper_gamma_fraction(a, x);
}

/// The regularised upper incomplete gamma function \f$Q(a,x) = 1 - P(a,x)\f$, accurate in the
/// upper tail; \f$0 < a \le 2^{37}\f$.
[[nodiscard]] inline double gamma_q(double a, double x) {
  detail::require_summed_shape(a, "gamma_q");
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
///
/// Above \f$a = 2^{37}\f$ (`max_summed_gamma_shape`) the Wilson-Hilferty cube
/// \f$a\,(1 - 1/(9a) + \Phi^{-1}(u)/(3\sqrt a))^3\f$ is the answer: its relative error,
/// measured as \f$4.9\,a^{-3/2}\f$ at the most extreme uniforms \f$2^{-53}\f$ and
/// \f$1 - 2^{-53}\f$, is then below one rounding, and P and Q would need millions of terms.
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
    if (a > max_summed_gamma_shape) return x;
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

/// The degrees of freedom above which `student_t_cdf` uses its large-\f$\nu\f$ form.
inline constexpr double student_t_large_degrees_of_freedom = 1e7;

/// The CDF of the Student-t distribution with \f$\nu > 0\f$ degrees of freedom,
/// \f$T_\nu(t) = \tfrac12 I_{\nu/(\nu+t^2)}(\nu/2, 1/2)\f$ for \f$t \le 0\f$ and
/// \f$1 - T_\nu(-t)\f$ above, so the lower tail keeps its relative precision. The arguments
/// \f$x = 1/(1+r)\f$ and \f$1 - x = r/(1+r)\f$, \f$r = t^2/\nu\f$, and their logarithms
/// are formed from \f$r\f$ or \f$1/r\f$, whichever is at most 1 (in the log domain where it
/// underflows), so neither a huge \f$|t|\f$ nor a tiny \f$\nu\f$ loses the tail.
///
/// Relative error about \f$10^{-13}\f$ up to \f$\nu = 10^3\f$, then growing like
/// \f$\nu\,2^{-53}/t^2\f$ (the continued fraction sees \f$x\f$, and its rounding is that
/// relative error in \f$1 - x\f$): a few \f$10^{-12}\f$ at \f$10^5\f$. Above \f$\nu = 10^7\f$
/// (`student_t_large_degrees_of_freedom`) it is
/// \f$T_\nu(t) \approx \Phi\big(\mathrm{sign}(t)\sqrt{(\nu - 1/2)\log(1 + t^2/\nu)}\big)\f$,
/// whose error falls as \f$\nu^{-2}\f$ (below \f$5\cdot10^{-10}\f$ there for
/// \f$|t| \le 38\f$) and whose cost does not grow with \f$\nu\f$ (the continued fraction
/// needs about \f$\sqrt\nu\f$ steps).
[[nodiscard]] inline double student_t_cdf(double degrees_of_freedom, double t) {
  require(std::isfinite(degrees_of_freedom) && degrees_of_freedom > 0.0,
          "student_t_cdf: the degrees of freedom must be positive and finite, got ",
          degrees_of_freedom);
  require(!std::isnan(t), "student_t_cdf: t is NaN");
  const double nu = degrees_of_freedom;
  const double lower_tail = [&] {
    if (t == 0.0) return 0.5;
    if (std::isinf(t)) return 0.0;
    constexpr double smallest_normal = std::numeric_limits<double>::min();
    const double root_nu = std::sqrt(nu);
    const double magnitude = std::abs(t);
    // log r = 2 (log|t| - log sqrt(nu)): the fallback where r or 1/r leaves the normal range.
    const double log_r_from_logs = 2.0 * (std::log(magnitude) - std::log(root_nu));
    const auto log_of = [](double value, double fallback) {
      return std::isfinite(value) && value >= smallest_normal ? std::log(value) : fallback;
    };
    double x, one_minus_x, log_x, log_one_minus_x, log_one_plus_r;
    if (magnitude <= root_nu) {
      const double ratio = magnitude / root_nu;
      const double r = ratio * ratio;
      log_one_plus_r = std::log1p(r);
      x = 1.0 / (1.0 + r);
      one_minus_x = r / (1.0 + r);
      log_x = -log_one_plus_r;
      log_one_minus_x = log_of(r, log_r_from_logs) - log_one_plus_r;
    } else {
      const double ratio = root_nu / magnitude;
      const double inverse_r = ratio * ratio;
      const double log_one_plus_inverse = std::log1p(inverse_r);
      const double log_inverse_r = log_of(inverse_r, -log_r_from_logs);
      log_one_plus_r = log_one_plus_inverse - log_inverse_r;
      x = inverse_r / (1.0 + inverse_r);
      one_minus_x = 1.0 / (1.0 + inverse_r);
      log_x = log_inverse_r - log_one_plus_inverse;
      log_one_minus_x = -log_one_plus_inverse;
    }
    if (nu > student_t_large_degrees_of_freedom)
      return normal_cdf(-std::sqrt((nu - 0.5) * log_one_plus_r));
    return 0.5 * detail::regularised_incomplete_beta(0.5 * nu, 0.5, x, one_minus_x, log_x,
                                                     log_one_minus_x);
  }();
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
