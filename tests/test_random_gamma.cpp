// Random numbers: the regularised incomplete gamma functions gamma_p and gamma_q of
// distributions.hpp against closed forms, identities, the Poisson sum and reference values for
// large shapes; gamma_quantile and the chi-square and chi quantiles as their inverses; Gamma
// samples' moments.
//
// Statistical tests use fixed seeds, so they are deterministic; their bounds are chosen so that a
// correct generator fails them with negligible probability over the choice of seed:
//   - Kolmogorov-Smirnov: the Dvoretzky-Kiefer-Wolfowitz inequality with Massart's constant,
//     P(sup|F_n - F| > t) <= 2 exp(-2 n t^2), holds for every n, so D_crit = sqrt(ln(2/alpha)/(2n))
//     at alpha = 1e-4;
//   - moments and correlations: k = 5 standard errors (a two-sided normal tail of 5.7e-7), the
//     standard error stated next to each check.
//
// Accuracy tolerances are derived next to each check from eps = 2^-52 and the conditioning of
// the function at the point tested.
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <string>
#include <vector>

#include "catch.hpp"
#include "kernattn/random/distributions.hpp"
#include "random_checks.hpp"

namespace test_random_gamma {

namespace {

namespace rnd = kernattn::random;
using namespace random_checks;

// --- Error model of gamma_p and gamma_q ---------------------------------------------------------

/// Relative error bound of the factor exp(a log x - x - lgamma(a)) that gamma_p and gamma_q
/// share, times the series or continued fraction. The exponent's terms are each rounded (log
/// and lgamma faithfully: one ulp; the fma and the subtraction half an ulp), so its absolute
/// error is at most eps times the sum of their magnitudes, and exp turns that absolute error
/// into a relative one. 64 eps more cover exp itself and the series or continued fraction
/// (sums of positive terms, one or two roundings a term, a few hundred terms at most here).
double prefactor_error(double a, double x) {
  return eps * (std::abs(a * std::log(x)) + x + std::abs(std::lgamma(a)) + 64.0);
}

struct GammaTolerance {
  double p = 0.0, q = 0.0;
};

/// Absolute error bounds on P(a, x) = p and Q(a, x) = q: below x = a + 1 the library sums P and
/// takes Q = 1 - P, above it evaluates Q and takes P = 1 - Q; the one computed directly errs by
/// prefactor_error times itself, its complement by that plus the rounding of 1 - (it).
/// Results in the subnormal range are rounded to multiples of 2^-1074, a few of those roundings
/// add 4 * 2^-1074 in absolute terms.
GammaTolerance gamma_tolerance(double a, double x, double p, double q) {
  const double kappa = prefactor_error(a, x);
  const double subnormal = 4.0 * std::numeric_limits<double>::denorm_min();
  if (x < a + 1.0) return {kappa * p + subnormal, kappa * p + eps};
  return {kappa * q + eps, kappa * q + subnormal};
}

/// The relative error bound of gamma_quantile(a, u) = x. Halley stops where the computed P (Q
/// above the median) equals u (1 - u) to within its own noise, and the computed P is within
/// prefactor_error of the true one: 2 prefactor_error in probability. The quantile's relative
/// condition number tail / (x density) turns that into a relative error in x.
double gamma_quantile_tolerance(double a, double x, double u) {
  const double density = std::exp((a - 1.0) * std::log(x) - x - std::lgamma(a));
  const double tail = u <= 0.5 ? u : 1.0 - u;
  return 2.0 * tail / (x * density) * prefactor_error(a, x) + 2.0 * eps;
}

const std::vector<double> shapes{0.05, 0.5, 1.0, 1.5, 2.5, 32.0, 500.0};

/// x on a log grid over [1e-6, 2000], plus both sides of the branch point a + 1.
std::vector<double> gamma_arguments(double a) {
  std::vector<double> xs = log_grid(-6.0, std::log10(2000.0), 0.02);
  xs.push_back(a + 1.0);
  xs.push_back(std::nextafter(a + 1.0, 0.0));
  xs.push_back(a);
  return xs;
}

}  // namespace

// === gamma_p, gamma_q, gamma_quantile ===========================================================

TEST_CASE("gamma_p + gamma_q == 1", "[random][gamma]") {
  // One of them is 1 minus the other, so the identity holds to a rounding or two (~2 eps);
  // 1e-14 leaves room for evaluating the two independently to the accuracy the other tests ask.
  Worst worst;
  for (const double a : shapes) {
    for (const double x : gamma_arguments(a)) {
      const double p = rnd::gamma_p(a, x), q = rnd::gamma_q(a, x);
      worst.update(std::abs(p + q - 1.0), 1e-14, "P + Q - 1 at a = " + std::to_string(a), x, p + q,
                   1.0);
      CHECK(p >= 0.0);
      CHECK(p <= 1.0);
      CHECK(q >= 0.0);
      CHECK(q <= 1.0);
    }
    CHECK(rnd::gamma_p(a, 0.0) == 0.0);
    CHECK(rnd::gamma_q(a, 0.0) == 1.0);
  }
  CHECK_WORST(worst);
}

TEST_CASE("gamma_p and gamma_q match their closed forms for a = 1 and a = 1/2", "[random][gamma]") {
  Worst p1, q1, p_half, q_half;
  for (const double x : log_grid(-10.0, std::log10(700.0), 0.01)) {
    // a = 1: P = 1 - e^-x, Q = e^-x; the references err by one ulp (x is exact).
    const double e1 = -std::expm1(-x), f1 = std::exp(-x);
    const GammaTolerance t1 = gamma_tolerance(1.0, x, e1, f1);
    p1.update(std::abs(rnd::gamma_p(1.0, x) - e1), t1.p + eps * e1, "P(1, x)", x,
              rnd::gamma_p(1.0, x), e1);
    q1.update(std::abs(rnd::gamma_q(1.0, x) - f1), t1.q + eps * f1, "Q(1, x)", x,
              rnd::gamma_q(1.0, x), f1);

    // a = 1/2: P = erf(sqrt(x)), Q = erfc(sqrt(x)). Rounding sqrt(x) (eps/2 relative) moves erf
    // by at most eps/2 relative (d log erf / d log s <= 1) and erfc by about 2x eps/2 relative
    // (d log erfc / d log s ~ 2 s^2); plus 2 eps for erf and erfc themselves.
    const double s = std::sqrt(x);
    const double e_half = std::erf(s), f_half = std::erfc(s);
    const GammaTolerance t_half = gamma_tolerance(0.5, x, e_half, f_half);
    p_half.update(std::abs(rnd::gamma_p(0.5, x) - e_half), t_half.p + 3.0 * eps * e_half,
                  "P(1/2, x)", x, rnd::gamma_p(0.5, x), e_half);
    q_half.update(std::abs(rnd::gamma_q(0.5, x) - f_half), t_half.q + (x + 3.0) * eps * f_half,
                  "Q(1/2, x)", x, rnd::gamma_q(0.5, x), f_half);
  }
  CHECK_WORST(p1);
  CHECK_WORST(q1);
  CHECK_WORST(p_half);
  CHECK_WORST(q_half);
}

TEST_CASE("gamma_p and gamma_q satisfy the recurrence in a", "[random][gamma]") {
  // P(a+1, x) = P(a, x) - x^a e^-x / Gamma(a+1) and Q(a+1, x) = Q(a, x) + x^a e^-x / Gamma(a+1).
  // The term is evaluated like the prefactor (error prefactor_error(a+1, x)); the two sides
  // differ by at most both functions' bounds, the term's error and one rounding.
  Worst p, q;
  for (const double a : shapes) {
    for (const double x : gamma_arguments(a)) {
      const double term = std::exp(a * std::log(x) - x - std::lgamma(a + 1.0));
      const double pa = rnd::gamma_p(a, x), qa = rnd::gamma_q(a, x);
      const double pb = rnd::gamma_p(a + 1.0, x), qb = rnd::gamma_q(a + 1.0, x);
      const GammaTolerance ta = gamma_tolerance(a, x, pa, qa);
      const GammaTolerance tb = gamma_tolerance(a + 1.0, x, pb, qb);
      const double term_error = prefactor_error(a + 1.0, x) * term;
      const std::string where = "a = " + std::to_string(a) + ", x";
      p.update(std::abs(pb - (pa - term)), ta.p + tb.p + term_error + eps * pa,
               "P(a+1, x) vs P(a, x) - term at " + where, x, pb, pa - term);
      q.update(std::abs(qb - (qa + term)), ta.q + tb.q + term_error + eps * (qa + term),
               "Q(a+1, x) vs Q(a, x) + term at " + where, x, qb, qa + term);
    }
  }
  CHECK_WORST(p);
  CHECK_WORST(q);
}

TEST_CASE("gamma_q for integer shapes matches the Poisson sum", "[random][gamma]") {
  // Q(n, x) = sum_{k<n} x^k e^-x / k!, positive terms each computed like the prefactor: the sum
  // errs by at most the largest term's prefactor_error plus n eps, relative.
  Worst worst;
  for (const int n : {1, 2, 5, 32, 500}) {
    for (const double x : log_grid(-3.0, std::log10(3.0 * n + 50.0), 0.01)) {
      double sum = 0.0, reference_error = 0.0;
      for (int k = 0; k < n; ++k) {
        sum += std::exp(k * std::log(x) - x - std::lgamma(k + 1.0));
        reference_error = std::max(reference_error, prefactor_error(k + 1.0, x));
      }
      reference_error = (reference_error + n * eps) * sum;
      const double got = rnd::gamma_q(n, x);
      const GammaTolerance t = gamma_tolerance(n, x, 1.0 - sum, sum);
      worst.update(std::abs(got - sum), t.q + reference_error,
                   "Q(n, x) vs Poisson sum, n = " + std::to_string(n), x, got, sum);
    }
  }
  CHECK_WORST(worst);
}

TEST_CASE("gamma_quantile inverts gamma_p and gamma_q", "[random][gamma]") {
  // Relative 1e-12 on P (u <= 1/2) or on Q (u > 1/2), from u = 1e-12 to 1 - 1e-12. The round
  // trip's error is the noise of the computed P at the quantile, prefactor_error: a few eps for
  // small shapes, ~1000 eps for a = 500 (a log x and lgamma(a) ~ 2600 cancel in the exponent).
  for (const double a : shapes) {
    Worst lower, upper;
    for (const double t : log_grid(-12.0, std::log10(0.5), 0.05)) {
      const double x = rnd::gamma_quantile(a, t);
      const double p = rnd::gamma_p(a, x);
      lower.update(std::abs(p / t - 1.0), 1e-12, "P(a, Q^-1(u))/u - 1", t, p, t);
      CHECK(x > 0.0);
      const double u = 1.0 - t;
      const double tail = 1.0 - u;  // exact
      const double y = rnd::gamma_quantile(a, u);
      const double q = rnd::gamma_q(a, y);
      upper.update(std::abs(q / tail - 1.0), 1e-12, "Q(a, P^-1(u))/(1-u) - 1", u, q, tail);
      CHECK(std::isfinite(y));
    }
    CAPTURE(a);
    CHECK_WORST(lower);
    CHECK_WORST(upper);
  }
}

TEST_CASE("chi_square_quantile matches its closed forms for 1 and 2 degrees of freedom",
          "[random][gamma]") {
  SECTION("k = 2: -2 log(1 - u)") {
    // The reference -2 log1p(-u) errs by one ulp; the quantile by gamma_quantile_tolerance.
    Worst worst;
    std::vector<double> us = log_grid(-12.0, std::log10(0.5), 0.01);
    for (const double t : log_grid(-12.0, std::log10(0.5), 0.01)) us.push_back(1.0 - t);
    for (const double u : us) {
      const double expected = -2.0 * std::log1p(-u);
      const double got = rnd::chi_square_quantile(2.0, u);
      const double tolerance = gamma_quantile_tolerance(1.0, expected / 2.0, u) + eps;
      worst.update(std::abs(got / expected - 1.0), tolerance, "chi2_2^-1(u)", u, got, expected);
    }
    CHECK_WORST(worst);
  }
  SECTION("k = 1: normal_quantile((1 + u)/2)^2") {
    // u = k/4096, so (1 + u)/2 and its complement (1 - u)/2 are exact. The normal quantile z
    // stops where normal_cdf(z) equals the tail t = (1 - u)/2 to within normal_cdf's error,
    // (z^2 + 4) eps t (its argument's rounding, amplified by ~z^2, and erfc's own), on both
    // Halley's last residual and the truth: |dz| <= 2 (z^2 + 4) eps t / phi(z) + ulp(z)/2, and
    // z^2 errs by 2|z| dz plus its rounding.
    Worst worst;
    for (int k = 1; k < 4096; ++k) {
      const double u = k / 4096.0;
      const double z = rnd::normal_quantile((1.0 + u) / 2.0);
      const double tail = (1.0 - u) / 2.0;
      const double phi = std::exp(-0.5 * z * z) / std::sqrt(2.0 * pi);
      const double dz = 2.0 * (z * z + 4.0) * eps * tail / phi + ulp(z) / 2.0;
      const double expected = z * z;
      const double got = rnd::chi_square_quantile(1.0, u);
      const double tolerance = 2.0 * std::abs(z) * dz + eps * expected +
                               gamma_quantile_tolerance(0.5, expected / 2.0, u) * expected;
      worst.update(std::abs(got - expected), tolerance, "chi2_1^-1(u)", u, got, expected);
    }
    CHECK_WORST(worst);
  }
  SECTION("chi_quantile is the square root") {
    for (const double u : {1e-9, 0.01, 0.3, 0.5, 0.77, 0.999}) {
      for (const double k : {1.0, 3.0, 64.0}) {
        CAPTURE(u, k);
        CHECK(rnd::chi_quantile(k, u) == std::sqrt(rnd::chi_square_quantile(k, u)));
      }
    }
  }
}

TEST_CASE("Gamma samples have mean a and variance a", "[random][gamma]") {
  // Gamma(a, 1): mean a, variance a, central fourth moment 3a^2 + 6a. Standard errors:
  // sqrt(a/n) for the mean, sqrt((3a^2 + 6a - a^2)/n) = sqrt((2a^2 + 6a)/n) for the variance.
  constexpr std::size_t n = 20000;
  std::uint64_t stream = 100;
  for (const double a : {0.5, 2.5, 32.0}) {
    std::vector<double> x = uniforms({31337, stream++}, n);
    for (double& v : x) v = rnd::gamma_quantile(a, v);
    const Moments m = moments(x);
    CAPTURE(a, m.mean, m.variance);
    CHECK(std::abs(m.mean - a) <= k_sigma * std::sqrt(a / double(n)));
    CHECK(std::abs(m.variance - a) <= k_sigma * std::sqrt((2.0 * a * a + 6.0 * a) / double(n)));
  }
}

// === Extreme inputs ==============================================================================

TEST_CASE("gamma_p is accurate for large shapes", "[random]") {
  // References P(a, a) computed with mpmath 1.3 at 40 digits (gammainc(a, 0, a, regularized)),
  // consistent with the asymptotic 1/2 + 1/(3 sqrt(2 pi a)). Tolerance: 2 prefactor_error.
  const std::array<std::array<double, 2>, 2> cases{
      {{32000.0, 0.5007433851774478896513007}, {100000.0, 0.5004205221103651766933126}}};
  for (const auto& [a, expected] : cases) {
    const double got = rnd::gamma_p(a, a);
    INFO(std::setprecision(17) << "P(" << a << ", " << a << ") = " << got << ", expected "
                               << expected);
    CHECK(std::abs(got / expected - 1.0) <= 2.0 * prefactor_error(a, a));
  }
}

}  // namespace test_random_gamma
