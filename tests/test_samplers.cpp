// The spectral samplers (kernattn/spectral/): the law of the frequencies each one draws, against
// exact distribution functions written out in this file; the layout of the uniforms; the
// orthogonal frames; the MLP generator against a naive double forward pass; determinism; bad
// input.
//
// Statistical checks and their significance. Every sample comes from a fixed (seed, stream), so
// each check has one fixed outcome; the bounds say how unlikely a failure of a correct sampler
// would have been for a random seed.
//  - Kolmogorov-Smirnov: D_n = sup_x |F_n(x) - F(x)| against the exact CDF F of an i.i.d.
//    sample. The Dvoretzky-Kiefer-Wolfowitz inequality with Massart's constant,
//    P(D_n > eps) <= 2 exp(-2 n eps^2) for every n, gives the critical value
//    sqrt(ln(2/alpha)/2)/sqrt(n) at significance alpha = 1e-3 (1.95/sqrt(n)).
//  - Moments: a sample mean of f(x) must lie within k = 5 standard errors sqrt(Var f(x) / n)
//    of E f(x), with the exact Var f(x) (a two-sided normal tail of 5.7e-7 per check).
#include <Eigen/SVD>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "kernattn/kernattn.hpp"

namespace {

namespace sp = kernattn::spectral;
namespace kr = kernattn::random;
using kernattn::Index;
using kr::RandomStream;
using MatrixXd = kernattn::Matrix<double>;
using VectorXd = kernattn::Vector<double>;
template <class T>
using Mat = kernattn::Matrix<T>;
template <class T>
using Vec = kernattn::Vector<T>;

// ---------------------------------------------------------------------------------------------
// Exact distribution functions

double normal_cdf(double x, double mean = 0.0, double sd = 1.0) {
  return 0.5 * std::erfc(-(x - mean) / (sd * std::numbers::sqrt2));
}

/// The Student-t CDF with an integer number of degrees of freedom nu (Abramowitz and Stegun
/// 26.7.3-26.7.4): with theta = atan(t/sqrt(nu)), A = P(|T| < t) is
/// (2/pi)[theta + sin(theta)(cos + 2/3 cos^3 + ... + (2.4...(nu-3))/(1.3...(nu-2)) cos^(nu-2))]
/// for odd nu (2 theta/pi for nu = 1) and sin(theta)[1 + 1/2 cos^2 + ... +
/// (1.3...(nu-3))/(2.4...(nu-2)) cos^(nu-2)] for even nu; F(t) = (1 + A)/2 (A is odd in t).
double student_t_cdf(double t, int nu) {
  const double theta = std::atan(t / std::sqrt(double(nu)));
  const double cos2 = std::cos(theta) * std::cos(theta);
  double a;
  if (nu % 2 == 1) {
    double sum = 0.0;
    if (nu > 1) {
      double term = std::cos(theta);
      sum = term;
      for (int k = 3; k <= nu - 2; k += 2) {
        term *= double(k - 1) / k * cos2;
        sum += term;
      }
    }
    a = 2.0 / std::numbers::pi * (theta + std::sin(theta) * sum);
  } else {
    double term = 1.0, sum = 1.0;
    for (int k = 2; k <= nu - 2; k += 2) {
      term *= double(k - 1) / k * cos2;
      sum += term;
    }
    a = std::sin(theta) * sum;
  }
  return 0.5 * (1.0 + a);
}

double cauchy_cdf(double x, double scale) { return 0.5 + std::atan(x / scale) / std::numbers::pi; }

double laplace_cdf(double x, double scale) {
  return x < 0 ? 0.5 * std::exp(x / scale) : 1.0 - 0.5 * std::exp(-x / scale);
}

/// The chi-square CDF for an even number k of degrees of freedom, in closed form:
/// 1 - exp(-x/2) sum_{j < k/2} (x/2)^j / j!.
double chi_square_cdf_even(double x, int k) {
  if (x <= 0) return 0.0;
  double term = 1.0, sum = 1.0;
  for (int j = 1; j < k / 2; ++j) {
    term *= 0.5 * x / j;
    sum += term;
  }
  return 1.0 - std::exp(-0.5 * x) * sum;
}

// ---------------------------------------------------------------------------------------------
// Statistical checks

constexpr double ks_alpha = 1e-3;
constexpr double moment_k = 5.0;

double ks_critical(std::size_t n) {
  return std::sqrt(std::log(2.0 / ks_alpha) / 2.0) / std::sqrt(double(n));
}

double ks_statistic(std::vector<double> sample, const std::function<double(double)>& cdf) {
  std::sort(sample.begin(), sample.end());
  const double n = double(sample.size());
  double d = 0.0;
  for (std::size_t i = 0; i < sample.size(); ++i) {
    const double f = cdf(sample[i]);
    d = std::max({d, f - double(i) / n, double(i + 1) / n - f});
  }
  return d;
}

void check_ks(const std::vector<double>& sample, const std::function<double(double)>& cdf,
              const std::string& what) {
  const double statistic = ks_statistic(sample, cdf);
  INFO(what << ": KS statistic " << statistic << ", critical value " << ks_critical(sample.size())
            << " (n = " << sample.size() << ", alpha = " << ks_alpha << ")");
  CHECK(statistic < ks_critical(sample.size()));
}

/// The mean of `values` within k standard errors of `expected`, given the exact variance of one
/// value.
void check_mean(const std::vector<double>& values, double expected, double variance,
                const std::string& what) {
  double sum = 0.0;
  for (const double v : values) sum += v;
  const double mean = sum / double(values.size());
  const double standard_error = std::sqrt(variance / double(values.size()));
  INFO(what << ": sample mean " << mean << ", expected " << expected << ", standard error "
            << standard_error);
  CHECK(std::abs(mean - expected) <= moment_k * standard_error);
}

/// f applied to every value.
std::vector<double> mapped(const std::vector<double>& values,
                           const std::function<double(double)>& f) {
  std::vector<double> out(values.size());
  std::transform(values.begin(), values.end(), out.begin(), f);
  return out;
}

/// Column c of the frequencies, or their projections on a direction, as a sample.
std::vector<double> column(const MatrixXd& omega, Index c) {
  std::vector<double> out(std::size_t(omega.rows()));
  for (Index m = 0; m < omega.rows(); ++m) out[std::size_t(m)] = omega(m, c);
  return out;
}

std::vector<double> projection(const MatrixXd& omega, const VectorXd& direction) {
  const VectorXd p = omega * direction;
  return {p.data(), p.data() + p.size()};
}

/// A unit vector in a direction drawn uniformly from the sphere (fixed by `seed`).
VectorXd random_direction(Index d, std::uint64_t seed) {
  const RandomStream stream{seed, 77};
  VectorXd u(d);
  for (Index i = 0; i < d; ++i) u(i) = kr::normal_quantile(stream.uniform(std::uint64_t(i)));
  return u.normalized();
}

template <class S>
MatrixXd draw(const S& sampler, Index rows, Index d, RandomStream stream) {
  return sp::draw_frequencies(sampler, rows, d, stream).template cast<double>();
}

/// The value T holds for `x` (parameters are given to the samplers in T).
template <class T>
double held(double x) {
  return double(T(x));
}

constexpr Index n_samples = 8000;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Distributions

TEMPLATE_TEST_CASE("Gaussian frequencies are N(0, I/l^2): coordinates, directions, radii",
                   "[sampler][gaussian]", float, double) {
  using T = TestType;
  const Index d = 8;
  const double l = held<T>(1.3);
  const MatrixXd omega = draw(sp::Gaussian<T>(T(l)), n_samples, d, {11, 0});
  const auto normal = [l](double x) { return normal_cdf(x, 0.0, 1.0 / l); };
  check_ks(column(omega, 0), normal, "coordinate 0");
  check_ks(projection(omega, random_direction(d, 1)), normal, "random direction");
  std::vector<double> radius2(std::size_t(omega.rows()));
  for (Index m = 0; m < omega.rows(); ++m)
    radius2[std::size_t(m)] = l * l * omega.row(m).squaredNorm();
  check_ks(
      radius2, [](double x) { return chi_square_cdf_even(x, 8); }, "l^2 |omega|^2 ~ chi2_8");
  const auto x = column(omega, 3);
  check_mean(x, 0.0, 1.0 / (l * l), "mean");
  check_mean(mapped(x, [](double v) { return v * v; }), 1.0 / (l * l), 2.0 / std::pow(l, 4),
             "second moment");
}

TEMPLATE_TEST_CASE("StudentT frequencies: every projection of l*omega is Student-t with nu' dof",
                   "[sampler][student_t]", float, double) {
  using T = TestType;
  const Index d = 6;
  const double l = held<T>(0.8);
  for (const int nu : {1, 3, 4, 5}) {
    const MatrixXd omega =
        draw(sp::StudentT<T>(T(nu), T(l)), n_samples, d, {12, std::uint64_t(nu)});
    const auto t = [l, nu](double x) { return student_t_cdf(l * x, nu); };
    const std::string name = "nu' = " + std::to_string(nu);
    check_ks(column(omega, 0), t, name + ", coordinate 0");
    check_ks(column(omega, d - 1), t, name + ", coordinate d-1");
    check_ks(projection(omega, random_direction(d, 2)), t, name + ", random direction");
  }
  SECTION(
      "moments at nu' = 9: E x^2 = nu/(nu-2), E x^4 = 3 nu^2/((nu-2)(nu-4)) (times l^-2, l^-4)") {
    const double nu = 9;
    const MatrixXd omega = draw(sp::StudentT<T>(T(nu), T(l)), n_samples, d, {12, 9});
    const double second = nu / (nu - 2) / (l * l);
    const double fourth = 3 * nu * nu / ((nu - 2) * (nu - 4)) / std::pow(l, 4);
    const auto x = column(omega, 2);
    check_mean(x, 0.0, second, "mean");
    check_mean(mapped(x, [](double v) { return v * v; }), second, fourth - second * second,
               "second moment");
  }
}

TEMPLATE_TEST_CASE("Cauchy frequencies: independent Cauchy(0, 1/l) coordinates",
                   "[sampler][cauchy]", float, double) {
  using T = TestType;
  const Index d = 4;
  const double l = held<T>(1.7);
  const MatrixXd omega = draw(sp::Cauchy<T>(T(l)), n_samples, d, {13, 0});
  for (const Index c : {Index(0), d - 1})
    check_ks(
        column(omega, c), [l](double x) { return cauchy_cdf(x, 1.0 / l); },
        "coordinate " + std::to_string(c));
  // Independence: both of two coordinates are positive with probability 1/4 (variance 3/16).
  std::vector<double> both_positive(std::size_t(omega.rows()));
  for (Index m = 0; m < omega.rows(); ++m)
    both_positive[std::size_t(m)] = omega(m, 0) > 0 && omega(m, 1) > 0 ? 1.0 : 0.0;
  check_mean(both_positive, 0.25, 3.0 / 16.0, "P(omega_0 > 0, omega_1 > 0)");
}

TEMPLATE_TEST_CASE("Laplace frequencies: independent Laplace(0, 1/l) coordinates",
                   "[sampler][laplace]", float, double) {
  using T = TestType;
  const Index d = 4;
  const double l = held<T>(0.6);
  const double b = 1.0 / l;
  const MatrixXd omega = draw(sp::Laplace<T>(T(l)), n_samples, d, {14, 0});
  for (const Index c : {Index(0), d - 1})
    check_ks(
        column(omega, c), [b](double x) { return laplace_cdf(x, b); },
        "coordinate " + std::to_string(c));
  const auto x = column(omega, 2);
  check_mean(x, 0.0, 2 * b * b, "mean");
  check_mean(mapped(x, [](double v) { return v * v; }), 2 * b * b,
             24 * std::pow(b, 4) - 4 * std::pow(b, 4), "second moment (E x^4 = 24 b^4)");
  // Independence: E|omega_0||omega_1| = b^2 (E|x| = b), variance (2b^2)^2 - b^4.
  std::vector<double> product(std::size_t(omega.rows()));
  for (Index m = 0; m < omega.rows(); ++m)
    product[std::size_t(m)] = std::abs(omega(m, 0) * omega(m, 1));
  check_mean(product, b * b, 3 * std::pow(b, 4), "E|omega_0 omega_1|");
}

TEMPLATE_TEST_CASE("GammaScaleMixture frequencies: z sqrt(tau)/l with tau ~ Gamma(alpha, alpha)",
                   "[sampler][gamma_scale_mixture]", float, double) {
  using T = TestType;
  const Index d = 5;
  const double l = held<T>(1.1);
  SECTION("alpha = 1: every projection is Laplace(0, 1/(sqrt(2) l))") {
    // tau ~ Exp(1): a normal with exponentially distributed variance is Laplace, 2 b^2 = 1/l^2.
    const MatrixXd omega = draw(sp::GammaScaleMixture<T>(T(1), T(l)), n_samples, d, {15, 0});
    const double b = 1.0 / (std::numbers::sqrt2 * l);
    const auto laplace = [b](double x) { return laplace_cdf(x, b); };
    check_ks(column(omega, 0), laplace, "coordinate 0");
    check_ks(projection(omega, random_direction(d, 3)), laplace, "random direction");
  }
  SECTION("moments: E (l x)^2 = 1, E (l x)^4 = 3(1 + 1/alpha), E (l x)^8 = 105 E tau^4") {
    for (const double alpha : {0.5, 3.0}) {
      const MatrixXd omega = draw(sp::GammaScaleMixture<T>(T(alpha), T(l)), n_samples, d, {15, 1});
      const auto x = mapped(column(omega, 1), [l](double v) { return l * v; });
      const double fourth = 3 * (1 + 1 / alpha);
      const double eighth = 105 * (alpha + 1) * (alpha + 2) * (alpha + 3) / std::pow(alpha, 3);
      const std::string name = "alpha = " + std::to_string(alpha);
      check_mean(mapped(x, [](double v) { return v * v; }), 1.0, fourth - 1.0,
                 name + ", second moment");
      check_mean(mapped(x, [](double v) { return std::pow(v, 4); }), fourth,
                 eighth - fourth * fourth, name + ", fourth moment");
    }
  }
}

namespace {

/// A mixture with a zero-weight component far away (never to be drawn).
template <class T>
sp::GaussianMixture<T> test_mixture() {
  Vec<T> weights(4);
  weights << T(0.2), T(0), T(0.3), T(0.5);
  Mat<T> means(4, 3), variances(4, 3);
  means << T(1.5), T(-0.5), T(0), T(40), T(40), T(40), T(0), T(2), T(-1), T(0.5), T(0.5), T(3);
  variances << T(0.3), T(1), T(0.5), T(1), T(1), T(1), T(0.2), T(0.4), T(1.5), T(1), T(0.1),
      T(0.25);
  return {weights, means, variances};
}

}  // namespace

TEMPLATE_TEST_CASE("GaussianMixture frequencies: the symmetric mixture at +-mu_q",
                   "[sampler][gaussian_mixture]", float, double) {
  using T = TestType;
  const auto mixture = test_mixture<T>();
  const VectorXd w = mixture.weights().template cast<double>();
  const MatrixXd mu = mixture.means().template cast<double>();
  const MatrixXd var = mixture.variances().template cast<double>();
  const Index d = 3;
  SECTION("coordinates and a projection follow the mixture CDF") {
    const MatrixXd omega = draw(mixture, n_samples, d, {16, 0});
    const VectorXd u = random_direction(d, 4);
    // Given (q, s), omega.u ~ N(s mu_q.u, sum_i var_qi u_i^2).
    const auto projected_cdf = [&](double x) {
      double f = 0;
      for (Index q = 0; q < 4; ++q) {
        const double m = mu.row(q).dot(u), sd = std::sqrt(var.row(q).dot(u.cwiseAbs2()));
        f += w(q) * 0.5 * (normal_cdf(x, m, sd) + normal_cdf(x, -m, sd));
      }
      return f;
    };
    check_ks(projection(omega, u), projected_cdf, "random direction");
    for (Index c = 0; c < d; ++c) {
      const auto cdf = [&, c](double x) {
        double f = 0;
        for (Index q = 0; q < 4; ++q) {
          const double sd = std::sqrt(var(q, c));
          f += w(q) * 0.5 * (normal_cdf(x, mu(q, c), sd) + normal_cdf(x, -mu(q, c), sd));
        }
        return f;
      };
      check_ks(column(omega, c), cdf, "coordinate " + std::to_string(c));
    }
    // Moments of coordinate 2: E x = 0, E x^2 = sum w (mu^2 + v),
    // E x^4 = sum w (mu^4 + 6 mu^2 v + 3 v^2).
    double second = 0, fourth = 0;
    for (Index q = 0; q < 4; ++q) {
      const double m2 = mu(q, 2) * mu(q, 2), v = var(q, 2);
      second += w(q) * (m2 + v);
      fourth += w(q) * (m2 * m2 + 6 * m2 * v + 3 * v * v);
    }
    const auto x = column(omega, 2);
    check_mean(x, 0.0, second, "mean");
    check_mean(mapped(x, [](double v) { return v * v; }), second, fourth - second * second,
               "second moment");
  }
  SECTION("the last uniform picks the component and the sign, coordinate i uses column i") {
    // Cumulative weights 0.2, 0.2, 0.5, 1: component 0 on [0, 0.2) (+ below 0.1), component 2
    // on [0.2, 0.5) (+ below 0.35), component 3 on [0.5, 1) (+ below 0.75); component 1 never.
    const std::vector<std::pair<double, double>> cases = {{0.05, 0}, {0.15, 0}, {0.21, 2},
                                                          {0.4, 2},  {0.6, 3},  {0.9, 3}};
    const std::vector<double> signs = {1, -1, 1, -1, 1, -1};
    MatrixXd uniforms = MatrixXd::Constant(Index(cases.size()), d + 1, 0.5);  // z = 0
    for (std::size_t k = 0; k < cases.size(); ++k) uniforms(Index(k), d) = cases[k].first;
    const MatrixXd omega = mixture.frequencies_from_uniforms(uniforms, d).template cast<double>();
    for (std::size_t k = 0; k < cases.size(); ++k) {
      const VectorXd expected = signs[k] * mu.row(Index(cases[k].second)).transpose();
      INFO("u_d = " << cases[k].first);
      CHECK((omega.row(Index(k)).transpose() - expected).cwiseAbs().maxCoeff() < 1e-12);
    }
    // Moving column i's uniform moves coordinate i alone, by sqrt(v_qi) Phi^-1(u).
    for (Index i = 0; i < d; ++i) {
      MatrixXd moved = uniforms.topRows(1);
      moved(0, i) = 0.9;
      const MatrixXd shifted =
          mixture.frequencies_from_uniforms(moved, d).template cast<double>() - omega.topRows(1);
      const double expected = std::sqrt(var(0, i)) * kernattn::random::normal_quantile(0.9);
      // Both frequencies are rounded to T: a few units of T's epsilon times their size (< 3).
      const double tolerance = 8.0 * std::numeric_limits<T>::epsilon() * 3.0;
      for (Index c = 0; c < d; ++c) {
        CAPTURE(i, c);
        CHECK(std::abs(shifted(0, c) - (c == i ? expected : 0.0)) <= tolerance);
      }
    }
  }
}

TEMPLATE_TEST_CASE("MirroredGaussian: the first ceil(M/2) rows N(mu, s^2), the rest N(-mu, s^2)",
                   "[sampler][mirrored_gaussian]", float, double) {
  using T = TestType;
  Vec<T> mean(3), scale(3);
  mean << T(1), T(-2), T(0.5);
  scale << T(0.5), T(1), T(2);
  const sp::MirroredGaussian<T> sampler(mean, scale);
  SECTION("both halves follow their normal laws") {
    const Index rows = 2 * (n_samples / 2) + 1;
    const Index positive = rows / 2 + 1;
    const MatrixXd omega = draw(sampler, rows, 3, {17, 0});
    for (Index c = 0; c < 3; ++c) {
      const double m = double(mean(c)), s = double(scale(c));
      check_ks(
          column(omega.topRows(positive), c), [m, s](double x) { return normal_cdf(x, m, s); },
          "positive half, coordinate " + std::to_string(c));
      check_ks(
          column(omega.bottomRows(rows - positive), c),
          [m, s](double x) { return normal_cdf(x, -m, s); },
          "negative half, coordinate " + std::to_string(c));
    }
  }
  SECTION("the split point: 3 of 5 rows are positive") {
    const MatrixXd omega =
        sampler.frequencies_from_uniforms(MatrixXd::Constant(5, 3, 0.5), 3).template cast<double>();
    const VectorXd mu = mean.template cast<double>();
    for (Index m = 0; m < 5; ++m) {
      INFO("row " << m);
      const VectorXd expected = (m < 3 ? 1.0 : -1.0) * mu;
      CHECK((omega.row(m).transpose() - expected).cwiseAbs().maxCoeff() < 1e-12);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The uniforms' layout, against the transforms of kernattn::random

TEMPLATE_TEST_CASE("Samplers read their uniforms in the documented layout", "[sampler][layout]",
                   float, double) {
  using T = TestType;
  const Index d = 3, rows = 4;
  const double l = held<T>(0.7);
  const double tolerance = 8 * std::numeric_limits<T>::epsilon();
  const auto check_close = [tolerance](const Mat<T>& actual, const MatrixXd& expected) {
    REQUIRE(actual.rows() == expected.rows());
    REQUIRE(actual.cols() == expected.cols());
    for (Index m = 0; m < actual.rows(); ++m)
      for (Index i = 0; i < actual.cols(); ++i) {
        INFO("entry (" << m << ", " << i << ")");
        CHECK(double(actual(m, i)) == Approx(expected(m, i)).epsilon(tolerance).margin(tolerance));
      }
  };
  const MatrixXd u4 = sp::draw_uniforms({21, 0}, rows, d + 1);
  const MatrixXd u3 = u4.leftCols(d);
  SECTION("StudentT: d normals, then the chi-square uniform") {
    const double nu = 3;
    MatrixXd expected(rows, d);
    for (Index m = 0; m < rows; ++m) {
      const double w = kr::chi_square_quantile(nu, u4(m, d));
      for (Index i = 0; i < d; ++i)
        expected(m, i) = kr::normal_quantile(u4(m, i)) / (l * std::sqrt(w / nu));
    }
    check_close(sp::StudentT<T>(T(nu), T(l)).frequencies_from_uniforms(u4, d), expected);
  }
  SECTION("GammaScaleMixture: d normals, then the Gamma uniform") {
    const double alpha = 2.5;
    MatrixXd expected(rows, d);
    for (Index m = 0; m < rows; ++m) {
      const double tau = kr::gamma_quantile(alpha, u4(m, d)) / alpha;
      for (Index i = 0; i < d; ++i)
        expected(m, i) = kr::normal_quantile(u4(m, i)) * std::sqrt(tau) / l;
    }
    check_close(sp::GammaScaleMixture<T>(T(alpha), T(l)).frequencies_from_uniforms(u4, d),
                expected);
  }
  SECTION("Cauchy and Laplace: one quantile per coordinate") {
    check_close(sp::Cauchy<T>(T(l)).frequencies_from_uniforms(u3, d),
                u3.unaryExpr([l](double u) { return kr::cauchy_quantile(u) / l; }));
    check_close(sp::Laplace<T>(T(l)).frequencies_from_uniforms(u3, d),
                u3.unaryExpr([l](double u) { return kr::laplace_quantile(u) / l; }));
  }
  SECTION("isotropic radii") {
    const double r[2] = {0.3, 0.8};
    CHECK(sp::Gaussian<T>(T(l)).radius_from_uniforms(r, 5) ==
          Approx(kr::chi_quantile(5, 0.3) / l).epsilon(1e-14));
    CHECK(sp::StudentT<T>(T(3), T(l)).radius_from_uniforms(r, 5) ==
          Approx(kr::chi_quantile(5, 0.3) / (l * std::sqrt(kr::chi_square_quantile(3, 0.8) / 3)))
              .epsilon(1e-14));
    CHECK(sp::GammaScaleMixture<T>(T(2), T(l)).radius_from_uniforms(r, 5) ==
          Approx(kr::chi_quantile(5, 0.3) * std::sqrt(kr::gamma_quantile(2, 0.8) / 2) / l)
              .epsilon(1e-14));
    CHECK(sp::StudentT<T>(T(3)).radial_uniforms(5) == 2);
    CHECK(sp::GammaScaleMixture<T>().radial_uniforms(5) == 2);
  }
  SECTION("uniforms per frequency") {
    CHECK(sp::StudentT<T>(T(3)).uniforms_per_frequency(7) == 8);
    CHECK(sp::Cauchy<T>().uniforms_per_frequency(7) == 7);
    CHECK(sp::Laplace<T>().uniforms_per_frequency(7) == 7);
    CHECK(sp::GammaScaleMixture<T>().uniforms_per_frequency(7) == 8);
    CHECK(test_mixture<T>().uniforms_per_frequency(3) == 4);
    CHECK(sp::Orthogonal<sp::Gaussian<T>>().uniforms_per_frequency(7) == 8);
    CHECK(sp::Orthogonal<sp::StudentT<T>>(sp::StudentT<T>(T(3))).uniforms_per_frequency(7) == 9);
  }
  SECTION("default lengthscale d^(1/4)") {
    CHECK(sp::StudentT<T>(T(3)).lengthscale(16) == T(2));
    CHECK(sp::Cauchy<T>().lengthscale(16) == T(2));
    CHECK(sp::Laplace<T>().lengthscale(81) == T(3));
    CHECK(sp::GammaScaleMixture<T>().lengthscale(16) == T(2));
    CHECK(sp::GammaScaleMixture<T>().alpha() == T(1));
  }
}

// ---------------------------------------------------------------------------------------------
// Orthogonal random features

namespace {

/// The columns of G orthonormalised by modified Gram-Schmidt: the Q of the unique QR
/// factorisation with a positive diagonal of R.
MatrixXd gram_schmidt(MatrixXd g) {
  for (Index j = 0; j < g.cols(); ++j) {
    for (Index k = 0; k < j; ++k) g.col(j) -= g.col(k).dot(g.col(j)) * g.col(k);
    g.col(j).normalize();
  }
  return g;
}

}  // namespace

TEMPLATE_TEST_CASE("Orthogonal: frames are Gram-Schmidt of the Gaussian blocks, radii the base's",
                   "[sampler][orthogonal]", float, double) {
  using T = TestType;
  const Index d = 16, rows = 3 * d + 5;  // three full blocks and one of 5 rows
  const double l = held<T>(1.3);
  const sp::Orthogonal<sp::Gaussian<T>> sampler{sp::Gaussian<T>(T(l))};
  CHECK(sampler.base().lengthscale(d) == T(l));
  const MatrixXd uniforms = sp::draw_uniforms({31, 0}, rows, d + 1);
  const MatrixXd omega = sampler.frequencies_from_uniforms(uniforms, d).template cast<double>();
  // Rounding to T, plus the forward error of the QR factor Q in double: about cond(G) d u
  // (Higham, ch. 19), for both Householder QR and modified Gram-Schmidt.
  const double rounding = 16 * double(d) * std::numeric_limits<T>::epsilon();
  double largest_across_blocks = 0;
  for (Index begin = 0; begin < rows; begin += d) {
    const Index size = std::min(d, rows - begin);
    // Sign-fixed Householder QR = Gram-Schmidt (both are the QR with R_jj > 0).
    MatrixXd g(d, size);
    for (Index j = 0; j < size; ++j)
      for (Index i = 0; i < d; ++i) g(i, j) = kr::normal_quantile(uniforms(begin + j, i));
    const MatrixXd frame = gram_schmidt(g);
    const VectorXd singular_values = Eigen::JacobiSVD<MatrixXd>(g).singularValues();
    const double condition = singular_values(0) / singular_values(size - 1);
    const double tolerance =
        rounding + 16 * double(d) * condition * std::numeric_limits<double>::epsilon();
    for (Index j = 0; j < size; ++j) {
      const Index m = begin + j;
      const double radius = kr::chi_quantile(double(d), uniforms(m, d)) / l;
      INFO("row " << m);
      CHECK(omega.row(m).norm() == Approx(radius).epsilon(tolerance));
      CHECK((omega.row(m).transpose() / radius - frame.col(j)).cwiseAbs().maxCoeff() < tolerance);
      for (Index k = 0; k < j; ++k) {
        const double cosine = omega.row(m).dot(omega.row(begin + k)) /
                              (omega.row(m).norm() * omega.row(begin + k).norm());
        CHECK(std::abs(cosine) < rounding);
      }
      if (begin > 0)
        largest_across_blocks = std::max(
            largest_across_blocks,
            std::abs(omega.row(m).dot(omega.row(j)) / (omega.row(m).norm() * omega.row(j).norm())));
    }
  }
  // Different blocks are independent, so their rows are not orthogonal.
  CHECK(largest_across_blocks > 0.1);
}

TEMPLATE_TEST_CASE("Orthogonal: every frequency keeps the base's law", "[sampler][orthogonal]",
                   float, double) {
  // Rows of one block are dependent; rows of different blocks are independent, so the direction
  // checks take one row per block (row b mod d of block b). Radii are independent of the frame
  // and of each other, so those checks use every row.
  using T = TestType;
  const Index d = 8, blocks = 1500, rows = blocks * d;
  const auto one_per_block = [&](const MatrixXd& omega) {
    std::vector<double> sample(static_cast<std::size_t>(blocks));
    for (Index b = 0; b < blocks; ++b) sample[std::size_t(b)] = omega(b * d + b % d, 0);
    return sample;
  };
  SECTION("Gaussian base") {
    const double l = held<T>(1.3);
    const MatrixXd omega =
        draw(sp::Orthogonal<sp::Gaussian<T>>(sp::Gaussian<T>(T(l))), rows, d, {32, 0});
    std::vector<double> radius2(static_cast<std::size_t>(rows));
    for (Index m = 0; m < rows; ++m) radius2[std::size_t(m)] = l * l * omega.row(m).squaredNorm();
    check_ks(
        radius2, [](double x) { return chi_square_cdf_even(x, 8); }, "l^2 |omega|^2 ~ chi2_8");
    check_ks(
        one_per_block(omega), [l](double x) { return normal_cdf(x, 0.0, 1.0 / l); },
        "coordinate 0");
  }
  SECTION("StudentT base, nu' = 3") {
    const double l = held<T>(0.8);
    const MatrixXd omega =
        draw(sp::Orthogonal<sp::StudentT<T>>(sp::StudentT<T>(T(3), T(l))), rows, d, {32, 1});
    check_ks(
        one_per_block(omega), [l](double x) { return student_t_cdf(l * x, 3); }, "coordinate 0");
  }
  SECTION("GammaScaleMixture base, alpha = 1") {
    const double l = held<T>(1.1);
    const MatrixXd omega =
        draw(sp::Orthogonal<sp::GammaScaleMixture<T>>(sp::GammaScaleMixture<T>(T(1), T(l))), rows,
             d, {32, 2});
    const double b = 1.0 / (std::numbers::sqrt2 * l);
    check_ks(
        one_per_block(omega), [b](double x) { return laplace_cdf(x, b); }, "coordinate 0");
  }
}

TEMPLATE_TEST_CASE("Orthogonal features estimate the RBF kernel with a lower variance",
                   "[sampler][orthogonal]", float, double) {
  // kappa_hat(r) = mean_m cos(omega_m . r) at |r| = l, d = 64, over 50 seeds and 16 directions.
  // Both estimators are unbiased, so the mean squared error about kappa(r) is their variance.
  // iid: var cos(omega.r) / M = ((1 + e^-2)/2 - e^-1) / M = 0.2 / M. Yu et al. (2016) show
  // that orthogonal blocks lower it, the more so the larger d; measured here: a ratio near 0.09.
  using T = TestType;
  const Index d = 64, seeds = 50, directions = 16;
  const double l = held<T>(1.3);
  const sp::Gaussian<T> iid{T(l)};
  const sp::Orthogonal<sp::Gaussian<T>> orthogonal(iid);
  MatrixXd r(d, directions);
  for (Index j = 0; j < directions; ++j) r.col(j) = l * random_direction(d, 100 + std::uint64_t(j));
  const double kappa = std::exp(-0.5);
  for (const Index frequencies : {d, 2 * d}) {
    double iid_error = 0, orthogonal_error = 0;
    for (Index s = 0; s < seeds; ++s) {
      const MatrixXd a = draw(iid, frequencies, d, {33, std::uint64_t(s)});
      const MatrixXd b = draw(orthogonal, frequencies, d, {34, std::uint64_t(s)});
      iid_error += ((a * r).array().cos().colwise().mean() - kappa).square().sum();
      orthogonal_error += ((b * r).array().cos().colwise().mean() - kappa).square().sum();
    }
    INFO("M = " << frequencies << ": iid MSE " << iid_error / double(seeds * directions)
                << ", orthogonal MSE " << orthogonal_error / double(seeds * directions)
                << ", ratio " << orthogonal_error / iid_error);
    CHECK(orthogonal_error < iid_error);
    CHECK(orthogonal_error < 0.5 * iid_error);
  }
}

// ---------------------------------------------------------------------------------------------
// Determinism

namespace {

/// Same (seed, stream): the same bits; another stream or seed: other frequencies; and, when
/// `prefix_rows` > 0, the first `prefix_rows` rows do not depend on M.
template <class S>
void check_determinism(const S& sampler, Index d, Index prefix_rows) {
  using T = typename S::Scalar;
  const RandomStream stream{41, 3};
  const Mat<T> first = sp::draw_frequencies(sampler, 40, d, stream);
  const Mat<T> again = sp::draw_frequencies(sampler, 40, d, stream);
  CHECK(first.allFinite());
  CHECK(first == again);
  CHECK(first != sp::draw_frequencies(sampler, 40, d, stream.with_stream(4)));
  CHECK(first != sp::draw_frequencies(sampler, 40, d, RandomStream{42, 3}));
  if (prefix_rows > 0) {
    const Mat<T> longer = sp::draw_frequencies(sampler, 97, d, stream);
    CHECK(longer.topRows(prefix_rows) == first.topRows(prefix_rows));
  }
}

}  // namespace

TEMPLATE_TEST_CASE("Samplers are deterministic in (seed, stream) and extend with M",
                   "[sampler][determinism]", float, double) {
  using T = TestType;
  check_determinism(sp::Gaussian<T>(), 5, 40);
  check_determinism(sp::StudentT<T>(T(3)), 5, 40);
  check_determinism(sp::Cauchy<T>(), 5, 40);
  check_determinism(sp::Laplace<T>(), 5, 40);
  check_determinism(sp::GammaScaleMixture<T>(T(0.7)), 5, 40);
  check_determinism(test_mixture<T>(), 3, 40);
  // Orthogonal: full blocks (40 = 8 blocks of 5) extend; MirroredGaussian's signs depend on M.
  check_determinism(sp::Orthogonal<sp::Gaussian<T>>(), 5, 40);
  check_determinism(sp::Orthogonal<sp::StudentT<T>>(sp::StudentT<T>(T(5))), 5, 40);
  Vec<T> ones = Vec<T>::Ones(5);
  check_determinism(sp::MirroredGaussian<T>(ones, ones), 5, 0);
  SECTION("Orthogonal: a partial last block is the start of the full block") {
    // q_j depends only on g_0 .. g_j (Gram-Schmidt in a fixed order), so the rows of a partial
    // block are those of the full block, bit for bit.
    const sp::Orthogonal<sp::Gaussian<T>> sampler;
    const Mat<T> a = sp::draw_frequencies(sampler, 12, 5, {43, 0});  // blocks 5, 5, 2
    const Mat<T> b = sp::draw_frequencies(sampler, 15, 5, {43, 0});  // blocks 5, 5, 5
    CHECK(a == b.topRows(12));
    CHECK(a.row(11).norm() > 0);
  }
}

// ---------------------------------------------------------------------------------------------
// The MLP generator and implicit samplers

namespace {

/// A matrix of values in [-1, 1) from a stream, in T.
template <class T>
Mat<T> uniform_matrix(Index rows, Index cols, std::uint64_t stream) {
  return (2.0 * sp::draw_uniforms({51, stream}, rows, cols).array() - 1.0)
      .matrix()
      .template cast<T>();
}

template <class T>
std::vector<typename sp::MlpGenerator<T>::Layer> test_layers(Index in, Index hidden, Index out) {
  return {{uniform_matrix<T>(in, hidden, 1), uniform_matrix<T>(hidden, 1, 2)},
          {uniform_matrix<T>(hidden, hidden, 3), uniform_matrix<T>(hidden, 1, 4)},
          {uniform_matrix<T>(hidden, out, 5), uniform_matrix<T>(out, 1, 6)}};
}

/// The network's output for one input row, in double, one multiply-add at a time, with a
/// first-order bound on the error of an evaluation in precision T (unit roundoff u): per layer
/// |e_out| <= |W|^T |e_in| + (n + 2) u (|W|^T |x| + |b|) for an inner product of length n plus
/// the bias, and LeakyReLU adds at most u |y| (its slope is at most 1, so errors do not grow).
struct ForwardResult {
  VectorXd value, error;
};

template <class T>
ForwardResult naive_forward(const sp::MlpGenerator<T>& generator, VectorXd x, double u) {
  VectorXd error = VectorXd::Zero(x.size());
  const auto& layers = generator.layers();
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const MatrixXd w = layers[l].weights.template cast<double>();
    const VectorXd b = layers[l].bias.template cast<double>();
    VectorXd y(w.cols()), e(w.cols());
    for (Index o = 0; o < w.cols(); ++o) {
      double sum = b(o), size = std::abs(b(o)), propagated = 0;
      for (Index i = 0; i < w.rows(); ++i) {
        sum += w(i, o) * x(i);
        size += std::abs(w(i, o) * x(i));
        propagated += std::abs(w(i, o)) * error(i);
      }
      y(o) = sum;
      e(o) = propagated + double(w.rows() + 2) * u * size;
    }
    if (l + 1 < layers.size()) {
      const double slope = double(generator.negative_slope());
      for (Index o = 0; o < y.size(); ++o) {
        if (y(o) <= 0) y(o) *= slope;
        e(o) += u * std::abs(y(o));
      }
    }
    x = y;
    error = e;
  }
  return {x, error};
}

}  // namespace

TEMPLATE_TEST_CASE("MlpGenerator matches a naive double forward pass", "[sampler][mlp]", float,
                   double) {
  using T = TestType;
  const double u = std::numeric_limits<T>::epsilon() / 2;
  const Index in = 4, hidden = 6, rows = 9;
  Mat<T> noise = uniform_matrix<T>(rows, in, 7) * T(3);
  noise(0, 1) = T(0);
  for (const auto form : {sp::MlpForm::plain, sp::MlpForm::sign_symmetric}) {
    for (const T slope : {T(0.2), T(0.05)}) {
      const sp::MlpGenerator<T> generator(test_layers<T>(in, hidden, in), form, slope);
      CHECK(generator.input_dimension() == in);
      CHECK(generator.output_dimension() == in);
      CHECK(generator.form() == form);
      const Mat<T> out = generator(noise);
      REQUIRE(out.rows() == rows);
      REQUIRE(out.cols() == in);
      const bool symmetric = form == sp::MlpForm::sign_symmetric;
      for (Index m = 0; m < rows; ++m) {
        const VectorXd z = noise.row(m).transpose().template cast<double>();
        const ForwardResult h = naive_forward(generator, symmetric ? VectorXd(z.cwiseAbs()) : z, u);
        for (Index i = 0; i < in; ++i) {
          const double sign = symmetric ? (z(i) > 0 ? 1.0 : z(i) < 0 ? -1.0 : 0.0) : 1.0;
          INFO("form " << int(form) << ", slope " << slope << ", row " << m << ", output " << i
                       << ": bound " << h.error(i));
          // The bound is small enough to mean something (0.1% for float).
          CHECK(h.error(i) < 2e4 * u * (1 + std::abs(h.value(i))));
          CHECK(std::abs(double(out(m, i)) - sign * h.value(i)) <= h.error(i));
        }
      }
      if (symmetric) {
        // Odd in every coordinate, bit for bit.
        CHECK(generator(Mat<T>(-noise)) == Mat<T>(-out));
        CHECK(out(0, 1) == T(0));
      }
    }
  }
}

namespace {

/// The smallest user-defined generator, as documented in spectral/implicit.hpp.
struct Doubling {
  using Scalar = float;
  kernattn::Index input_dimension() const { return 4; }
  kernattn::Index output_dimension() const { return 4; }
  kernattn::Matrix<float> operator()(const kernattn::Matrix<float>& noise) const {
    return 2.0f * noise;
  }
};

/// A generator that breaks its contract (returns one row too few).
struct Truncating {
  using Scalar = double;
  kernattn::Index input_dimension() const { return 2; }
  kernattn::Index output_dimension() const { return 2; }
  kernattn::Matrix<double> operator()(const kernattn::Matrix<double>& noise) const {
    return noise.topRows(noise.rows() - 1);
  }
};

static_assert(sp::FrequencyGenerator<Doubling>);
static_assert(sp::FrequencyGenerator<sp::MlpGenerator<float>>);
static_assert(!sp::FrequencyGenerator<sp::Gaussian<float>>);
static_assert(sp::SpectralSampler<sp::Implicit<Doubling>>);
static_assert(!sp::ClosedFormSampler<sp::Implicit<Doubling>>);
static_assert(!sp::ClosedFormSampler<sp::MirroredGaussian<float>>);
static_assert(sp::ClosedFormSampler<sp::Orthogonal<sp::Gaussian<double>>>);
static_assert(sp::IsotropicSampler<sp::StudentT<float>> &&
              sp::IsotropicSampler<sp::GammaScaleMixture<float>>);
static_assert(!sp::IsotropicSampler<sp::Cauchy<float>> &&
              !sp::IsotropicSampler<sp::Laplace<float>> &&
              !sp::IsotropicSampler<sp::GaussianMixture<float>>);

}  // namespace

TEMPLATE_TEST_CASE("Implicit: the generator applied to the base sampler's frequencies",
                   "[sampler][implicit]", float, double) {
  using T = TestType;
  const Index in = 3, hidden = 5, out = 4, rows = 33;
  const RandomStream stream{52, 1};
  SECTION("default base: standard normal noise") {
    const sp::MlpGenerator<T> generator(test_layers<T>(in, hidden, out));
    const sp::Implicit<sp::MlpGenerator<T>> sampler(generator);
    CHECK(sampler.base().lengthscale(in) == T(1));
    CHECK(sampler.uniforms_per_frequency(out) == in);
    const MatrixXd uniforms = sp::draw_uniforms(stream, rows, in);
    const Mat<T> expected =
        generator(sp::Gaussian<T>(T(1)).frequencies_from_uniforms(uniforms, in));
    CHECK(sampler.frequencies_from_uniforms(uniforms, out) == expected);
    CHECK(sp::draw_frequencies(sampler, rows, out, stream) == expected);
  }
  SECTION("the official IKA form: mirrored noise, sign-symmetric network") {
    Vec<T> mean(in), scale(in);
    mean << T(0.5), T(-1), T(2);
    scale << T(1), T(0.3), T(0.7);
    const sp::MirroredGaussian<T> noise(mean, scale);
    const sp::MlpGenerator<T> generator(test_layers<T>(in, hidden, in),
                                        sp::MlpForm::sign_symmetric);
    const sp::Implicit<sp::MlpGenerator<T>, sp::MirroredGaussian<T>> sampler(generator, noise);
    const MatrixXd uniforms = sp::draw_uniforms(stream, rows, in);
    CHECK(sampler.frequencies_from_uniforms(uniforms, in) ==
          generator(noise.frequencies_from_uniforms(uniforms, in)));
  }
}

TEST_CASE("Implicit with the smallest user-defined generator", "[sampler][implicit]") {
  // 2 * float(z) is float(2 z) exactly, so Doubling over N(0, 1) is Gaussian(1/2) bit for bit.
  const sp::Implicit<Doubling> sampler(Doubling{});
  CHECK(sp::draw_frequencies(sampler, 17, 4, {53, 0}) ==
        sp::draw_frequencies(sp::Gaussian<float>(0.5f), 17, 4, {53, 0}));
  REQUIRE_INVALID_ARGUMENT(
      sp::draw_frequencies(sp::Implicit<Truncating>(Truncating{}), 6, 2, {53, 0}),
      "Implicit: the generator returned 5x2 for noise of 6x2, expected 6x2");
}

// ---------------------------------------------------------------------------------------------
// Bad input

namespace {

/// Wrong M, d, uniforms' columns and uniforms outside (0, 1) for any sampler.
template <class S>
void check_bad_uniforms(const S& sampler, Index d, const std::string& name) {
  const RandomStream stream{61, 0};
  REQUIRE_INVALID_ARGUMENT(sp::draw_frequencies(sampler, 0, d, stream),
                           "draw_frequencies: M (the number of frequencies) must be >= 1, got 0");
  REQUIRE_INVALID_ARGUMENT(sp::draw_frequencies(sampler, 4, 0, stream),
                           "the dimension d must be >= 1, got 0");
  const Index columns = sampler.uniforms_per_frequency(d);
  const MatrixXd good = sp::draw_uniforms(stream, 4, columns);
  CHECK_NOTHROW(sampler.frequencies_from_uniforms(good, d));
  REQUIRE_INVALID_ARGUMENT(sampler.frequencies_from_uniforms(MatrixXd(0, columns), d),
                           name + ": M (the number of frequencies) must be >= 1, got 0");
  REQUIRE_INVALID_ARGUMENT(sampler.frequencies_from_uniforms(good.leftCols(columns - 1), d),
                           name + ": the uniforms are 4x" + std::to_string(columns - 1) + " but " +
                               std::to_string(columns) + " uniforms per frequency are needed");
  for (const double bad : {0.0, 1.0, -0.5, std::numeric_limits<double>::quiet_NaN()}) {
    MatrixXd uniforms = good;
    uniforms(2, columns - 1) = bad;
    INFO("uniform " << bad);
    REQUIRE_INVALID_ARGUMENT(sampler.frequencies_from_uniforms(uniforms, d),
                             name + ": every uniform must lie strictly inside (0, 1)");
  }
}

}  // namespace

TEST_CASE("Samplers reject bad shapes and uniforms", "[sampler][errors]") {
  check_bad_uniforms(sp::StudentT<float>(3.0f), 4, "StudentT");
  check_bad_uniforms(sp::Cauchy<float>(), 4, "Cauchy");
  check_bad_uniforms(sp::Laplace<double>(), 4, "Laplace");
  check_bad_uniforms(sp::GammaScaleMixture<float>(), 4, "GammaScaleMixture");
  check_bad_uniforms(test_mixture<double>(), 3, "GaussianMixture");
  check_bad_uniforms(sp::Orthogonal<sp::Gaussian<float>>(), 4, "Orthogonal");
  Vec<float> ones = Vec<float>::Ones(4);
  check_bad_uniforms(sp::MirroredGaussian<float>(ones, ones), 4, "MirroredGaussian");
  const sp::MlpGenerator<float> generator(test_layers<float>(2, 3, 4));
  check_bad_uniforms(sp::Implicit<sp::MlpGenerator<float>>(generator), 4, "Implicit");
}

TEST_CASE("Samplers reject bad parameters", "[sampler][errors]") {
  constexpr float nan = std::numeric_limits<float>::quiet_NaN();
  constexpr float inf = std::numeric_limits<float>::infinity();
  SECTION("lengthscales") {
    REQUIRE_INVALID_ARGUMENT(sp::StudentT<float>(3.0f, 0.0f),
                             "StudentT: lengthscale must be a finite number > 0, got 0");
    REQUIRE_INVALID_ARGUMENT(sp::Cauchy<float>(-1.0f),
                             "Cauchy: lengthscale must be a finite number > 0, got -1");
    REQUIRE_INVALID_ARGUMENT(sp::Laplace<double>(double(inf)),
                             "Laplace: lengthscale must be a finite number > 0, got inf");
    REQUIRE_INVALID_ARGUMENT(sp::GammaScaleMixture<float>(1.0f, nan),
                             "GammaScaleMixture: lengthscale must be a finite number > 0, got nan");
  }
  SECTION("StudentT degrees of freedom") {
    REQUIRE_INVALID_ARGUMENT(sp::StudentT<float>(-1.0f),
                             "StudentT: degrees_of_freedom must be a finite number > 0, got -1");
    REQUIRE_INVALID_ARGUMENT(sp::StudentT<double>(0.0, 1.0),
                             "StudentT: degrees_of_freedom must be a finite number > 0, got 0");
    REQUIRE_INVALID_ARGUMENT(sp::StudentT<float>(nan), "degrees_of_freedom must be a finite");
    const VectorXd r = VectorXd::Constant(3, 0.5);
    REQUIRE_INVALID_ARGUMENT(sp::StudentT<float>(2.0f).kernel_at(r),
                             "StudentT: kernel_at has no closed form for degrees_of_freedom 2");
    REQUIRE_INVALID_ARGUMENT(sp::StudentT<double>(2.5).kernel_at(r),
                             "no closed form for degrees_of_freedom 2.5");
    REQUIRE_INVALID_ARGUMENT(sp::StudentT<double>(3000001.0).kernel_at(r),
                             "closed form for degrees_of_freedom up to 1000001, got 3000001");
  }
  SECTION("GammaScaleMixture alpha") {
    REQUIRE_INVALID_ARGUMENT(sp::GammaScaleMixture<float>(0.0f),
                             "GammaScaleMixture: alpha must be a finite number > 0, got 0");
    REQUIRE_INVALID_ARGUMENT(sp::GammaScaleMixture<double>(-2.0, 1.0),
                             "GammaScaleMixture: alpha must be a finite number > 0, got -2");
  }
  SECTION("GaussianMixture") {
    using GM = sp::GaussianMixture<double>;
    const VectorXd w = (VectorXd(2) << 0.4, 0.6).finished();
    const MatrixXd mu = MatrixXd::Zero(2, 3), var = MatrixXd::Ones(2, 3);
    CHECK_NOTHROW(GM(w, mu, var));
    REQUIRE_INVALID_ARGUMENT(GM(VectorXd(0), MatrixXd(0, 3), MatrixXd(0, 3)),
                             "GaussianMixture: at least one component is needed");
    REQUIRE_INVALID_ARGUMENT(GM((VectorXd(2) << 0.4, 0.5).finished(), mu, var),
                             "GaussianMixture: weights must sum to 1, got 0.9");
    REQUIRE_INVALID_ARGUMENT(GM((VectorXd(2) << -0.4, 1.4).finished(), mu, var),
                             "GaussianMixture: weight 0 must be a finite number >= 0, got -0.4");
    REQUIRE_INVALID_ARGUMENT(GM((VectorXd(3) << 0.2, 0.2, 0.6).finished(), mu, var),
                             "GaussianMixture: means are 2x3 but there are 3 weights");
    REQUIRE_INVALID_ARGUMENT(GM(w, mu, MatrixXd::Ones(2, 2)),
                             "GaussianMixture: variances are 2x2 but means are 2x3");
    MatrixXd negative = var;
    negative(1, 2) = -1;
    REQUIRE_INVALID_ARGUMENT(
        GM(w, mu, negative),
        "GaussianMixture: variance (1, 2) must be a finite number > 0, got -1");
    MatrixXd bad_mean = mu;
    bad_mean(0, 1) = std::numeric_limits<double>::infinity();
    REQUIRE_INVALID_ARGUMENT(GM(w, bad_mean, var), "GaussianMixture: every mean must be finite");
    const GM mixture(w, mu, var);
    REQUIRE_INVALID_ARGUMENT(sp::draw_frequencies(mixture, 5, 4, {62, 0}),
                             "GaussianMixture: the dimension d = 4 differs from the means' "
                             "dimension 3 (means are 2x3)");
    REQUIRE_INVALID_ARGUMENT(mixture.kernel_at(VectorXd::Zero(2)),
                             "GaussianMixture: the dimension d = 2 differs");
  }
  SECTION("MirroredGaussian") {
    using MG = sp::MirroredGaussian<float>;
    const Vec<float> ones = Vec<float>::Ones(3);
    REQUIRE_INVALID_ARGUMENT(MG(ones, Vec<float>::Ones(2)),
                             "MirroredGaussian: the scale has 2 entries but the mean has 3");
    REQUIRE_INVALID_ARGUMENT(MG(Vec<float>(0), Vec<float>(0)), "at least one entry");
    REQUIRE_INVALID_ARGUMENT(MG(ones, (Vec<float>(3) << 1.0f, 0.0f, 1.0f).finished()),
                             "MirroredGaussian: scale entry 1 must be a finite number > 0, got 0");
    REQUIRE_INVALID_ARGUMENT(MG((Vec<float>(3) << 1.0f, 1.0f, nan).finished(), ones),
                             "MirroredGaussian: mean entry 2 must be finite, got nan");
    REQUIRE_INVALID_ARGUMENT(
        sp::draw_frequencies(MG(ones, ones), 4, 2, {62, 0}),
        "MirroredGaussian: the dimension d = 2 differs from the mean's size 3");
  }
  SECTION("MlpGenerator") {
    using Mlp = sp::MlpGenerator<float>;
    const auto layer = [](Index in, Index out) {
      return Mlp::Layer{Mat<float>::Ones(in, out), Vec<float>::Zero(out)};
    };
    REQUIRE_INVALID_ARGUMENT(Mlp({}), "MlpGenerator: at least one layer is needed");
    REQUIRE_INVALID_ARGUMENT(
        Mlp({layer(8, 64), layer(32, 16)}),
        "MlpGenerator: layer 2 weights are 32x16 but layer 1 outputs 64 values");
    REQUIRE_INVALID_ARGUMENT(Mlp({{Mat<float>::Ones(8, 64), Vec<float>::Zero(5)}}),
                             "MlpGenerator: layer 1 bias has 5 entries but its weights are 8x64 "
                             "(64 outputs)");
    REQUIRE_INVALID_ARGUMENT(Mlp({layer(0, 4)}), "MlpGenerator: layer 1 weights are 0x4");
    auto bad_weights = layer(4, 4);
    bad_weights.weights(1, 1) = nan;
    REQUIRE_INVALID_ARGUMENT(Mlp({layer(2, 4), bad_weights}),
                             "MlpGenerator: layer 2 weights must be finite");
    auto bad_bias = layer(4, 4);
    bad_bias.bias(0) = inf;
    REQUIRE_INVALID_ARGUMENT(Mlp({bad_bias}), "MlpGenerator: layer 1 bias must be finite");
    REQUIRE_INVALID_ARGUMENT(Mlp({layer(4, 4)}, sp::MlpForm::plain, nan),
                             "MlpGenerator: negative_slope must be finite");
    REQUIRE_INVALID_ARGUMENT(Mlp({layer(8, 6), layer(6, 4)}, sp::MlpForm::sign_symmetric),
                             "the sign-symmetric form needs as many outputs as inputs, got 8 "
                             "inputs and 4 outputs");
    REQUIRE_INVALID_ARGUMENT(Mlp({layer(8, 4)})(Mat<float>::Zero(5, 3)),
                             "MlpGenerator: the noise is 5x3 but the network takes 8 inputs");
    const sp::Implicit<Mlp> sampler(Mlp({layer(2, 3)}));
    REQUIRE_INVALID_ARGUMENT(sp::draw_frequencies(sampler, 4, 5, {62, 0}),
                             "Implicit: the dimension d = 5 differs from the generator's output "
                             "dimension 3");
  }
}
