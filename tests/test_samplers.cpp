// The spectral samplers (kernattn/spectral/): the law of the frequencies each one draws, against
// exact distribution functions (tests/support/sampler_reference.hpp and this file). The layout of
// the uniforms and determinism: test_samplers_layout.cpp; the orthogonal frames:
// test_samplers_orthogonal.cpp; the MLP generator and implicit samplers:
// test_samplers_implicit.cpp; bad input: test_samplers_errors.cpp.
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
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numbers>
#include <string>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "kernattn/kernattn.hpp"
#include "sampler_reference.hpp"

namespace test_samplers {

namespace {

using namespace sampler_ref;  // its aliases (sp, kr, Index, Mat, ...) and helpers

double cauchy_cdf(double x, double scale) { return 0.5 + std::atan(x / scale) / std::numbers::pi; }

constexpr double moment_k = 5.0;

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

constexpr Index n_samples = 8000;

}  // namespace

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

}  // namespace test_samplers
