// Random numbers: the inverse-CDF transforms of distributions.hpp for the normal, Student-t,
// Laplace and Cauchy distributions against closed forms, identities and goodness-of-fit tests,
// exact antisymmetry, subnormal uniforms, and the rejection of uniforms outside (0, 1). gamma_p,
// gamma_q and the gamma and chi-square quantiles: test_random_gamma.cpp.
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
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <iomanip>
#include <limits>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "kernattn/core/errors.hpp"
#include "kernattn/random/distributions.hpp"
#include "random_checks.hpp"

namespace test_random_quantiles {

namespace {

namespace rnd = kernattn::random;
using namespace random_checks;

/// The CDF of Student's t with 5 degrees of freedom: with theta = atan(t / sqrt(5)),
/// F(t) = 1/2 + (theta + sin(theta) cos(theta) (1 + 2/3 cos^2(theta))) / pi.
double student_t5_cdf(double t) {
  const double theta = std::atan(t / std::sqrt(5.0));
  const double c = std::cos(theta);
  return 0.5 + (theta + std::sin(theta) * c * (1.0 + 2.0 / 3.0 * c * c)) / pi;
}

/// u on a log grid from 1e-300 to 1/2, then 1 - t for t from 1/2 down to 1e-16.
std::vector<double> unit_grid() {
  std::vector<double> us = log_grid(-300.0, std::log10(0.5), 0.01);
  std::vector<double> tails = log_grid(-16.0, std::log10(0.5), 0.01);
  for (auto t = tails.rbegin(); t != tails.rend(); ++t) us.push_back(1.0 - *t);
  return us;
}

}  // namespace

// === normal_quantile ============================================================================

TEST_CASE("normal_quantile inverts normal_cdf from 1e-300 to 1 - 1e-12", "[random][normal]") {
  // In the tail d log(Phi)/dx ~ |x|, so no double x can make Phi(x) closer to u than
  // |x| ulp(x)/2 relative, and normal_cdf itself is only as accurate as its argument (it scales
  // x by 1/sqrt(2) before erfc). We allow one ulp of x (a faithfully rounded quantile) on top of
  // 1e-13.
  Worst lower, upper;
  std::vector<double> us, xs;  // the grid in increasing u, for the monotonicity check
  for (const double u : log_grid(-300.0, std::log10(0.5), 0.01)) {
    const double x = rnd::normal_quantile(u);
    const double p = rnd::normal_cdf(x);
    lower.update(std::abs(p / u - 1.0), 1e-13 + std::abs(x) * ulp(x), "Phi(x)/u - 1", u, p, u);
    us.push_back(u);
    xs.push_back(x);
  }
  std::vector<double> tails = log_grid(-12.0, std::log10(0.5), 0.01);
  std::reverse(tails.begin(), tails.end());
  for (const double t : tails) {
    const double u = 1.0 - t;
    const double tail = 1.0 - u;  // exact (Sterbenz)
    const double x = rnd::normal_quantile(u);
    const double q = rnd::normal_cdf(-x);
    upper.update(std::abs(q / tail - 1.0), 1e-13 + std::abs(x) * ulp(x), "Phi(-x)/(1-u) - 1", u, q,
                 tail);
    us.push_back(u);
    xs.push_back(x);
  }
  CHECK_WORST(lower);
  CHECK_WORST(upper);

  // Monotone: adjacent grid points differ by 2.3% in u (or in 1 - u), far more than the
  // quantile's error, so the quantile must strictly increase along the grid.
  std::size_t violations = 0;
  for (std::size_t i = 1; i < xs.size(); ++i) violations += xs[i] > xs[i - 1] ? 0 : 1;
  CHECK(violations == 0);
  CHECK(std::is_sorted(us.begin(), us.end()));
}

TEST_CASE("normal_quantile is exactly antisymmetric", "[random][normal]") {
  // normal_quantile(1 - u) == -normal_quantile(u) wherever 1 - u is exact, u = 1/2 included
  // (where it makes the quantile 0). Candidates: dyadic grids, powers of two, random uniforms.
  std::vector<double> candidates;
  for (int k = 1; k < 1024; ++k) candidates.push_back(k / 1024.0);
  for (int j = 2; j <= 60; ++j) candidates.push_back(std::ldexp(1.0, -j));
  for (const double u : uniforms({5, 5}, 4096)) candidates.push_back(u);
  std::size_t checked = 0;
  for (const double u : candidates) {
    const double complement = 1.0 - u;
    if (1.0 - complement != u) continue;  // 1 - u was rounded (the subtraction back is exact)
    ++checked;
    const double x = rnd::normal_quantile(u);
    const double y = rnd::normal_quantile(complement);
    INFO(std::setprecision(17) << "u = " << u << ": Q(u) = " << x << ", Q(1-u) = " << y);
    CHECK(y == -x);
  }
  // Not vacuous: the 1023 dyadic points, 52 powers of two and the ~2048 random uniforms above
  // 1/2 (those below, odd multiples of 2^-54, never have an exact complement).
  CHECK(checked > 2900);
}

TEST_CASE("normal_quantile of uniforms is standard normal", "[random][normal]") {
  constexpr std::size_t n = 200000;
  std::vector<double> z = uniforms({77, 1}, n);
  for (double& v : z) v = rnd::normal_quantile(v);
  const double root_n = std::sqrt(double(n));

  const double d = ks_distance(z, [](double x) { return rnd::normal_cdf(x); });
  CAPTURE(d, ks_critical(n));
  CHECK(d <= ks_critical(n));

  // Standard errors: mean 1/sqrt(n); variance sqrt((mu_4 - 1)/n) = sqrt(2/n); fourth moment
  // E z^4 = 3 with sqrt((E z^8 - 9)/n) = sqrt(96/n) (E z^8 = 105).
  const Moments m = moments(z);
  double fourth = 0.0;
  for (const double v : z) fourth += v * v * v * v;
  fourth /= double(n);
  CAPTURE(m.mean, m.variance, fourth);
  CHECK(std::abs(m.mean) <= k_sigma / root_n);
  CHECK(std::abs(m.variance - 1.0) <= k_sigma * std::sqrt(2.0) / root_n);
  CHECK(std::abs(fourth - 3.0) <= k_sigma * std::sqrt(96.0) / root_n);
}

// === Student-t ==================================================================================

TEST_CASE("student_t_from_uniforms gives Student's t", "[random][student]") {
  SECTION("1 degree of freedom: Cauchy, CDF 1/2 + atan(x)/pi") {
    constexpr std::size_t n = 50000;
    const std::vector<double> u = uniforms({8, 1}, 2 * n);
    std::vector<double> t(n);
    for (std::size_t i = 0; i < n; ++i)
      t[i] = rnd::student_t_from_uniforms(1.0, u[2 * i], u[2 * i + 1]);
    const double d = ks_distance(t, [](double x) { return 0.5 + std::atan(x) / pi; });
    CAPTURE(d, ks_critical(n));
    CHECK(d <= ks_critical(n));
  }
  SECTION("5 degrees of freedom: mean 0, variance 5/3, the t_5 CDF") {
    constexpr std::size_t n = 100000;
    const double nu = 5.0;
    const std::vector<double> u = uniforms({8, 5}, 2 * n);
    std::vector<double> t(n);
    for (std::size_t i = 0; i < n; ++i)
      t[i] = rnd::student_t_from_uniforms(nu, u[2 * i], u[2 * i + 1]);
    // Var t = nu/(nu-2) = 5/3 and E t^4 = 3 nu^2/((nu-2)(nu-4)) = 25: standard errors
    // sqrt((5/3)/n) for the mean and sqrt((25 - 25/9)/n) for the variance. Moments of order
    // >= 5 are infinite (E|t^2|^3 among them, so no Berry-Esseen bound), and the sample variance
    // approaches its normal limit slowly, with a heavy right tail: we allow k = 6 for it.
    const Moments m = moments(t);
    CAPTURE(m.mean, m.variance);
    CHECK(std::abs(m.mean) <= k_sigma * std::sqrt(nu / (nu - 2.0) / double(n)));
    CHECK(std::abs(m.variance - nu / (nu - 2.0)) <=
          6.0 * std::sqrt((25.0 - 25.0 / 9.0) / double(n)));
    const double d = ks_distance(t, student_t5_cdf);
    CAPTURE(d, ks_critical(n));
    CHECK(d <= ks_critical(n));
  }
}

// === Laplace and Cauchy =========================================================================

TEST_CASE("laplace_quantile inverts the Laplace CDF", "[random][laplace]") {
  // Below 1/2, F(x) = e^x / 2 = u; above, 1 - F(x) = e^-x / 2 = 1 - u (exact). x = log(2u) is
  // faithful, an absolute error of up to |x| eps, which exp turns into a relative one; exp
  // adds one ulp and the halving none: (|x| + 2) eps relative.
  Worst worst;
  for (const double u : unit_grid()) {
    const double x = rnd::laplace_quantile(u);
    const double tail = u < 0.5 ? u : 1.0 - u;
    const double f = 0.5 * std::exp(-std::abs(x));
    worst.update(std::abs(f / tail - 1.0), (std::abs(x) + 2.0) * eps, "Laplace tail", u, f, tail);
    CHECK((u < 0.5 ? x < 0.0 : x >= 0.0));
  }
  CHECK_WORST(worst);
  CHECK(rnd::laplace_quantile(0.5) == 0.0);
  CHECK(rnd::laplace_quantile(0.25) == std::log(0.5));
  CHECK(rnd::laplace_quantile(0.75) == -std::log(0.5));
}

TEST_CASE("cauchy_quantile inverts the Cauchy CDF", "[random][cauchy]") {
  // F(x) = 1/2 + atan(x)/pi. In the tails we compare the equivalent atan(1/|x|)/pi with
  // min(u, 1 - u), free of cancellation: the quantile rounds pi u (eps/2, pi's own rounding
  // eps/4), tan (one ulp, its condition <= pi/2 below 1/4 and undone by atan above) and the
  // reciprocal (eps/2), the reference 1/|x|, atan and the division (2 eps): 8 eps relative.
  // The direct form 1/2 + atan(x)/pi must equal u to 4 eps absolute.
  Worst tails, direct;
  for (const double u : unit_grid()) {
    const double x = rnd::cauchy_quantile(u);
    const double tail = u < 0.5 ? u : 1.0 - u;
    const double f = std::atan(1.0 / std::abs(x)) / pi;
    tails.update(std::abs(f / tail - 1.0), 8.0 * eps, "Cauchy tail", u, f, tail);
    const double cdf = 0.5 + std::atan(x) / pi;
    direct.update(std::abs(cdf - u), 4.0 * eps, "Cauchy CDF", u, cdf, u);
    CHECK((u < 0.5 ? x < 0.0 : x > 0.0));
  }
  CHECK_WORST(tails);
  CHECK_WORST(direct);
  CHECK(rnd::cauchy_quantile(0.5) == 0.0);
  CHECK(rnd::cauchy_quantile(0.25) == Approx(-1.0).epsilon(4 * eps));
}

TEST_CASE("laplace_quantile and cauchy_quantile are exactly antisymmetric",
          "[random][laplace][cauchy]") {
  std::size_t checked = 0;
  std::vector<double> candidates = uniforms({6, 6}, 4096);
  for (int k = 1; k < 1024; ++k) candidates.push_back(k / 1024.0);
  for (const double u : candidates) {
    const double complement = 1.0 - u;
    if (1.0 - complement != u) continue;  // 1 - u was rounded
    ++checked;
    CAPTURE(u);
    CHECK(rnd::laplace_quantile(complement) == -rnd::laplace_quantile(u));
    CHECK(rnd::cauchy_quantile(complement) == -rnd::cauchy_quantile(u));
  }
  // The 1023 dyadic points and the ~2048 random uniforms above 1/2.
  CHECK(checked > 2900);
}

// === Bad input ==================================================================================

TEST_CASE("Transforms reject uniforms outside (0, 1) and bad shapes", "[random][errors]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double infinity = std::numeric_limits<double>::infinity();
  for (const double u : {0.0, 1.0, nan, -0.1, 1.5, infinity, -0.0}) {
    CAPTURE(u);
    REQUIRE_INVALID_ARGUMENT(rnd::normal_quantile(u), "normal_quantile");
    REQUIRE_INVALID_ARGUMENT(rnd::normal_quantile(u), "strictly inside (0, 1)");
    REQUIRE_INVALID_ARGUMENT(rnd::gamma_quantile(1.0, u), "gamma_quantile");
    REQUIRE_INVALID_ARGUMENT(rnd::laplace_quantile(u), "laplace_quantile");
    REQUIRE_INVALID_ARGUMENT(rnd::cauchy_quantile(u), "cauchy_quantile");
  }
  for (const double shape : {0.0, -1.0, nan, infinity}) {
    CAPTURE(shape);
    REQUIRE_INVALID_ARGUMENT(rnd::gamma_quantile(shape, 0.5), "gamma_quantile");
    REQUIRE_INVALID_ARGUMENT(rnd::gamma_quantile(shape, 0.5), "shape");
  }
  REQUIRE_INVALID_ARGUMENT(rnd::gamma_quantile(1.0, 1.0), "gamma_quantile");
  REQUIRE_INVALID_ARGUMENT(rnd::laplace_quantile(0.0), "got 0");
  REQUIRE_INVALID_ARGUMENT(rnd::cauchy_quantile(1.0), "got 1");
  // The composite transforms reject through the transform they call.
  REQUIRE_THROWS_AS(rnd::chi_square_quantile(0.0, 0.5), kernattn::InvalidArgument);
  REQUIRE_THROWS_AS(rnd::chi_quantile(3.0, 1.0), kernattn::InvalidArgument);
  REQUIRE_THROWS_AS(rnd::student_t_from_uniforms(5.0, 0.0, 0.5), kernattn::InvalidArgument);
  REQUIRE_THROWS_AS(rnd::student_t_from_uniforms(5.0, 0.5, 1.0), kernattn::InvalidArgument);
}

// === Extreme inputs ==============================================================================

TEST_CASE("normal_quantile handles subnormal uniforms", "[random]") {
  // Phi^-1(u) for the subnormal u >= 2^-1074 lies in [-38.5, -37.5]; the quantile must be
  // finite and invert normal_cdf (to one ulp of x, as above, plus the subnormal u's own
  // relative spacing 2^-1074/u).
  for (const double u :
       {1e-310, 5e-311, 1e-315, 1e-320, std::numeric_limits<double>::denorm_min()}) {
    const double x = rnd::normal_quantile(u);
    INFO(std::setprecision(17) << "u = " << u << ", x = " << x);
    REQUIRE(std::isfinite(x));
    CHECK(std::abs(rnd::normal_cdf(x) / u - 1.0) <=
          1e-13 + std::abs(x) * ulp(x) + std::numeric_limits<double>::denorm_min() / u);
  }
}

}  // namespace test_random_quantiles
