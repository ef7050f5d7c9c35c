// Parameters at the edges of their ranges: each one a constructor accepts must give finite
// results for finite inputs of ordinary size, and each one it cannot serve must be rejected by
// that constructor with the parameter and its range in the message.
//
//  - the inverse CDFs at huge shapes (Student-t degrees of freedom, gamma shapes of 1e30), where
//    the iteration counts once overflowed an int, and the large-nu Student-t CDF;
//  - samplers whose parameters make frequencies beyond the scalar type (tiny degrees of freedom or
//    lengthscales): the smallest accepted value is derived from the extreme uniforms 2^-53 and
//    1 - 2^-53 of the streams, and checked to be tight;
//  - Gaussian copula factors scaled by 1e+-200;
//  - Lp magnitudes far beyond the float range, polynomial degrees, Yaglom frequency scales and
//    sinusoidal bases, end to end through the attention classes.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "kernattn/kernattn.hpp"
#include "reference.hpp"

namespace test_parameter_ranges {

namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;
namespace rnd = kernattn::random;
namespace sp = kernattn::spectral;
namespace features = kernattn::features;
namespace coupling = kernattn::coupling;

constexpr double smallest_uniform = 0x1p-53;
constexpr double largest_uniform = 1.0 - 0x1p-53;

template <class T>
using Mat = kernattn::Matrix<T>;

/// The uniforms of one frequency that make a sampler's largest frequency: the normal columns at
/// 1 - 2^-53 (z = 8.21) and the extra columns (a chi-square, a precision) at `extra`.
MatrixXd extreme_uniforms(Index d, Index extra_columns, double extra) {
  MatrixXd u(1, d + extra_columns);
  u.leftCols(d).setConstant(largest_uniform);
  u.rightCols(extra_columns).setConstant(extra);
  return u;
}

/// Requires every output entry to be finite and to lie within the range of V's column: each
/// output row of attention with non-negative weights is a convex combination of V's rows.
template <class T>
void require_convex_combinations(const Mat<T>& out, const Mat<T>& V) {
  REQUIRE(out.allFinite());
  for (Index c = 0; c < V.cols(); ++c) {
    const double low = double(V.col(c).minCoeff());
    const double high = double(V.col(c).maxCoeff());
    const double slack = 1e-5 * std::max(std::abs(low), std::abs(high));
    CAPTURE(c, low, high, double(out.col(c).minCoeff()), double(out.col(c).maxCoeff()));
    CHECK(double(out.col(c).minCoeff()) >= low - slack);
    CHECK(double(out.col(c).maxCoeff()) <= high + slack);
  }
}

}  // namespace

// === Distributions at huge shapes ===============================================================

TEST_CASE("gamma_quantile and student_t_cdf at shapes of 1e30 are finite and take the limits",
          "[ranges][distributions]") {
  // Gamma(a) ~ N(a, a): the quantile is a (1 + z/sqrt(a)) to first order. At a = 5e29 the
  // Wilson-Hilferty cube is the quantile to within one rounding (its error is 4.9 a^-1.5).
  for (const double a : {0x1p37 * 2, 5e29, 1e300}) {
    for (const double u : {smallest_uniform, 0.1, 0.5, 0.9, largest_uniform}) {
      const double z = rnd::normal_quantile(u);
      const double x = rnd::gamma_quantile(a, u);
      CAPTURE(a, u, x);
      REQUIRE(std::isfinite(x));
      // x / a = 1 + z / sqrt(a) + (z^2 - 1) / (3a) + O(a^-1.5), each rounded to a few eps.
      CHECK(std::abs(x / a - 1.0 - z / std::sqrt(a)) <= (z * z + 1.0) / a + 8.0 * 0x1p-52);
    }
  }
  // The summed P and Q stop at 2^37 with a message that gives the range.
  REQUIRE_INVALID_ARGUMENT(rnd::gamma_p(1e30, 1e30), "gamma_p: the shape must lie in (0, 2^37");
  REQUIRE_INVALID_ARGUMENT(rnd::gamma_q(0.0, 1.0), "gamma_q: the shape must lie in (0, 2^37");

  // T_nu -> Phi as nu -> oo, with T_nu(t) - Phi(t) = -phi(t) (t^3 + t) / (4 nu) + O(nu^-2).
  for (const double nu : {1e8, 1e12, 1e30, std::numeric_limits<double>::max()}) {
    for (const double t : {-38.0, -8.0, -2.0, -0.3, 0.7, 5.0}) {
      const double phi = std::exp(-0.5 * t * t) / std::sqrt(2.0 * std::numbers::pi);
      const double expected = rnd::normal_cdf(t) - phi * (t * t * t + t) / (4.0 * nu);
      const double got = rnd::student_t_cdf(nu, t);
      const double tail = std::min(expected, 1.0 - expected);
      CAPTURE(nu, t, got, expected);
      CHECK(std::abs(got - expected) <= 1e-12 * tail + 4.0 * phi * std::pow(t, 6) / (nu * nu));
    }
  }
  // Just below and above the switch to the large-nu form the two agree to 5e-10.
  for (const double t : {-20.0, -5.0, -1.0, 0.5}) {
    const double below = rnd::student_t_cdf(rnd::student_t_large_degrees_of_freedom, t);
    const double above =
        rnd::student_t_cdf(std::nextafter(rnd::student_t_large_degrees_of_freedom, 1e300), t);
    CAPTURE(t, below, above);
    CHECK(std::abs(below - above) <= 5e-10 * std::min(below, 1.0 - below));
  }
}

TEST_CASE("student_t_cdf keeps the tail when t^2 overflows and for tiny degrees of freedom",
          "[ranges][distributions]") {
  // nu = 1: T(t) = atan(-1/t)/pi for t < 0 (= 1/(pi |t|) for huge |t|).
  for (const double t : {-1e160, -1e200, -1e300, -std::numeric_limits<double>::max()}) {
    const double expected = (1.0 / std::numbers::pi) / -t;
    CAPTURE(t);
    CHECK(std::abs(rnd::student_t_cdf(1.0, t) / expected - 1.0) <= 1e-13);
  }
  // nu = 0.11: the lower tail at t falls only like |t|^-nu / (nu B(nu/2, 1/2)) nu^(nu/2).
  const double nu = 0.11;
  for (const double t : {-1e100, -1e200, -1e300}) {
    const double log_beta = std::lgamma(nu / 2) + std::lgamma(0.5) - std::lgamma(nu / 2 + 0.5);
    const double expected = std::exp(nu / 2 * std::log(nu) - nu * std::log(-t) - log_beta) / nu;
    CAPTURE(t, expected);
    CHECK(std::abs(rnd::student_t_cdf(nu, t) / expected - 1.0) <= 1e-12);
  }
}

// === Samplers: degrees of freedom, shapes and lengthscales ======================================

TEMPLATE_TEST_CASE(
    "Student-t and gamma-mixture samplers at nu, alpha = 1e30 give Gaussian frequencies",
    "[ranges][sampler]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const Index M = 2000;
  const Index d = 4;
  // The same uniforms: the normals from the first d columns, the chi-square / nu and the
  // precision (1 + O(1e-15) at 1e30) from the last.
  const MatrixXd u = sp::draw_uniforms({7, 3}, M, d + 1);
  const MatrixXd gaussian =
      sp::Gaussian<T>(T(1.5)).frequencies_from_uniforms(u.leftCols(d), d).template cast<double>();
  const MatrixXd student =
      sp::StudentT<T>(T(1e30), T(1.5)).frequencies_from_uniforms(u, d).template cast<double>();
  const MatrixXd mixture = sp::GammaScaleMixture<T>(T(1e30), T(1.5))
                               .frequencies_from_uniforms(u, d)
                               .template cast<double>();
  // Rounding, plus the real difference: w / nu = 1 + O(sqrt(2/nu) z), tau = 1 + O(z/sqrt(alpha)),
  // scaling omega by at most 8.21 sqrt(2 / 1e30) / 2 relative.
  const double tolerance = 4.0 * std::numeric_limits<T>::epsilon() + 8.21 * std::sqrt(2e-30);
  CHECK(((student - gaussian).array().abs() <= tolerance * gaussian.array().abs()).all());
  CHECK(((mixture - gaussian).array().abs() <= tolerance * gaussian.array().abs()).all());

  // End to end: a linear head over these frequencies gives finite outputs.
  const ref::Problem p = ref::random_problem<T>(20, 30, d, 3, 11);
  const kernattn::LinearAttention<features::Fourier<T>> head(
      features::Fourier<T>::draw(sp::StudentT<T>(T(1e30)), 64, d, {8, 0}));
  CHECK(head(p.q<T>(), p.k<T>(), p.v<T>()).allFinite());
}

TEMPLATE_TEST_CASE("StudentT rejects degrees of freedom whose frequencies overflow T",
                   "[ranges][sampler]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const bool is_float = std::is_same_v<T, float>;
  // Float: the largest frequency reaches the largest float below nu = 0.4214. Double: first the
  // chi-square / nu of 2^-53 leaves the normal doubles, below nu = 0.1033.
  const std::string bound = is_float ? "0.422" : "0.104";
  for (const double nu : {5e-324, 1e-30, is_float ? 0.42 : 0.103}) {
    if (T(nu) == T(0)) continue;  // 5e-324 is 0 in float
    CAPTURE(nu);
    REQUIRE_INVALID_ARGUMENT(sp::StudentT<T>(T(nu)), "StudentT: degrees_of_freedom = ");
    REQUIRE_INVALID_ARGUMENT(sp::StudentT<T>(T(nu)),
                             "with this lengthscale degrees_of_freedom must be >= " + bound);
  }
  // At the bound the extreme uniforms (z = 8.21, the chi-square of 2^-53) give a finite
  // frequency, in float within a factor 2 of the largest float.
  const T nu = T(std::stod(bound));
  const sp::StudentT<T> edge(nu);
  const MatrixXd u = extreme_uniforms(1, 1, smallest_uniform);
  const double largest = double(edge.frequencies_from_uniforms(u, 1).cwiseAbs().maxCoeff());
  const double predicted = sp::StudentT<T>::largest_frequency(double(nu), 1.0);
  CAPTURE(largest, predicted);
  CHECK(std::isfinite(largest));
  CHECK(std::abs(largest / predicted - 1.0) <= 4.0 * std::numeric_limits<T>::epsilon());
  if (is_float) CHECK(largest >= 0.5 * double(std::numeric_limits<T>::max()));
  // A smaller fixed lengthscale scales the largest frequency up past the largest T.
  const T small = is_float ? T(0.5) : T(1e-160);
  REQUIRE_INVALID_ARGUMENT(sp::StudentT<T>(nu, small), "with lengthscale");
  REQUIRE_INVALID_ARGUMENT(sp::StudentT<T>(nu, small), "degrees_of_freedom must be >= ");
  // A lengthscale too small for any degrees of freedom.
  const T tiny_lengthscale = is_float ? T(1e-38) : T(1e-310);
  REQUIRE_INVALID_ARGUMENT(sp::StudentT<T>(T(10), tiny_lengthscale),
                           "no degrees_of_freedom works with it: the lengthscale must be >= ");
}

TEMPLATE_TEST_CASE("Lengthscales too small for T are rejected with the smallest one that works",
                   "[ranges][sampler]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const double max = double(std::numeric_limits<T>::max());
  const double z = sp::largest_normal();
  // Gaussian: z / l, Laplace: 52 log 2 / l, Cauchy: 1 / tan(pi 2^-53) / l.
  const double gaussian_bound = sp::round_up_for_message(z / max);
  const double laplace_bound = sp::round_up_for_message(52.0 * std::log(2.0) / max);
  const double cauchy_bound = sp::round_up_for_message(rnd::cauchy_quantile(largest_uniform) / max);
  const T tiny = std::numeric_limits<T>::denorm_min();
  REQUIRE_INVALID_ARGUMENT(sp::Gaussian<T>(tiny), "Gaussian: lengthscale = ");
  REQUIRE_INVALID_ARGUMENT(sp::Gaussian<T>(tiny), "the lengthscale must be >= ");
  REQUIRE_INVALID_ARGUMENT(sp::Laplace<T>(tiny), "Laplace: lengthscale = ");
  REQUIRE_INVALID_ARGUMENT(sp::Cauchy<T>(tiny), "Cauchy: lengthscale = ");
  REQUIRE_INVALID_ARGUMENT(sp::GammaScaleMixture<T>(T(1), tiny), "GammaScaleMixture: lengthscale");
  if constexpr (std::is_same_v<T, float>) {
    // The reported case: 1e-40 (a float subnormal) gave an infinite frequency.
    REQUIRE_INVALID_ARGUMENT(sp::Gaussian<float>(1e-40f), "the lengthscale must be >= 2.42e-38");
  } else {
    // In double 1e-40 is fine.
    CHECK(sp::draw_frequencies(sp::Gaussian<double>(1e-40), 16, 4, {1, 0}).allFinite());
  }
  // At each bound the extreme uniform gives a finite frequency near the largest T.
  const MatrixXd u = extreme_uniforms(1, 0, 0.0);
  for (const auto& [name, largest] :
       {std::pair{"Gaussian", sp::Gaussian<T>(T(gaussian_bound)).frequencies_from_uniforms(u, 1)},
        std::pair{"Laplace", sp::Laplace<T>(T(laplace_bound)).frequencies_from_uniforms(u, 1)},
        std::pair{"Cauchy", sp::Cauchy<T>(T(cauchy_bound)).frequencies_from_uniforms(u, 1)}}) {
    CAPTURE(name, double(largest(0, 0)));
    CHECK(std::isfinite(largest(0, 0)));
    CHECK(double(largest(0, 0)) >= 0.5 * max);
  }
}

TEST_CASE("Uniforms beyond the streams' range are reported with the sampler", "[ranges][sampler]") {
  // The lengthscale 2.42e-38 is checked for z = 8.21; a user uniform of 1e-300 gives z = 37.
  const sp::Gaussian<float> gaussian(2.42e-38f);
  MatrixXd u(1, 2);
  u << 0.5, 1e-300;
  REQUIRE_INVALID_ARGUMENT(gaussian.frequencies_from_uniforms(u, 2),
                           "Gaussian: frequency (0, 1) is -inf, not a finite float");
  // Orthogonal's radius grows like sqrt(d): the base checks its lengthscale for one coordinate,
  // the draw catches a radius chi_4^-1(1 - 2^-53) = 9.1 along an axis (the other normals 0).
  const sp::Orthogonal<sp::Gaussian<float>> orthogonal(gaussian);
  MatrixXd axis(1, 5);
  axis << 0.9, 0.5, 0.5, 0.5, largest_uniform;
  REQUIRE_INVALID_ARGUMENT(orthogonal.frequencies_from_uniforms(axis, 4),
                           "Orthogonal: frequency (0, 0) is inf");
  REQUIRE_INVALID_ARGUMENT(orthogonal.frequencies_from_uniforms(axis, 4), "grows like sqrt(d)");
}

TEST_CASE(
    "Mixture samplers stay finite at extreme parameters; mirrored scales beyond T are "
    "rejected",
    "[ranges][sampler]") {
  // A mixture's noise sqrt(v) z is at most sqrt(max_T) 38.5, far below the rounding of a mean
  // near the largest T: the frequencies round to the mean.
  const float largest = std::numeric_limits<float>::max();
  kernattn::Vector<float> weights(1);
  weights << 1.0f;
  kernattn::Matrix<float> means(1, 2), variances(1, 2);
  means << 0.0f, -largest;
  variances << 1.0f, largest;
  const sp::GaussianMixture<float> edge(weights, means, variances);
  const kernattn::Matrix<float> omega = sp::draw_frequencies(edge, 100, 2, {1, 0});
  CHECK(omega.allFinite());
  CHECK(omega.col(1).cwiseAbs().minCoeff() == largest);
  // A mirrored Gaussian's scale multiplies z itself: sigma 8.21 must stay below the largest T.
  kernattn::Vector<float> mean(2), scale(2);
  mean << 0.0f, 0.0f;
  scale << 1.0f, 1e38f;
  REQUIRE_INVALID_ARGUMENT(sp::MirroredGaussian<float>(mean, scale),
                           "MirroredGaussian: mean entry 1 = 0 and scale 1e+38 make noise");
  scale << 1.0f, 4e37f;
  CHECK(sp::draw_frequencies(sp::MirroredGaussian<float>(mean, scale), 100, 2, {1, 0}).allFinite());
}

// === Copulas ====================================================================================

TEST_CASE("Student-t copula: nu = 1e30 is the Gaussian copula, nu below 0.104 is rejected",
          "[ranges][coupling]") {
  MatrixXd R(2, 2);
  R << 1, 0.6, 0.6, 1;
  const auto gaussian = coupling::GaussianCopula(R).uniforms({4, 0}, 2, 50, 20);
  const auto student = coupling::StudentTCopula(R, 1e30).uniforms({4, 0}, 2, 50, 20);
  for (std::size_t h = 0; h < 2; ++h) {
    const Eigen::ArrayXXd g = gaussian[h].array();
    const Eigen::ArrayXXd tail = g.min(1.0 - g);
    // The shared chi-square / nu is 1 + O(1.4e-15 z): t moves by ~6e-15 relative, the tail by
    // ~t^2 times that.
    CHECK(((student[h].array() - g).abs() <= 2e-12 * tail).all());
  }
  REQUIRE_INVALID_ARGUMENT(coupling::StudentTCopula(R, 5e-324),
                           "StudentTCopula: degrees_of_freedom must be a finite number >= 0.104");
  REQUIRE_INVALID_ARGUMENT(coupling::StudentTCopula(R, 0.1), ">= 0.104");
  // The bound: at nu = 0.104 the chi-square / nu of the extreme uniform is a normal double.
  const double shape = 0.5 * coupling::StudentTCopula::min_degrees_of_freedom;
  CHECK(rnd::gamma_quantile(shape, smallest_uniform) / shape >= std::numeric_limits<double>::min());
  // And the copula then works: uniforms strictly inside (0, 1), both heads.
  for (const MatrixXd& u : coupling::StudentTCopula(R, 0.104).uniforms({5, 0}, 2, 200, 10)) {
    CHECK(u.allFinite());
    CHECK(u.minCoeff() > 0.0);
    CHECK(u.maxCoeff() < 1.0);
  }
}

TEST_CASE("A Gaussian copula factor scaled by 1e+-200 normalises to the same correlation",
          "[ranges][coupling]") {
  MatrixXd factor(3, 3);
  factor << 2, 0, 0, 1, 1, 0, -1, 3, 0.5;
  const coupling::GaussianCopula plain = coupling::GaussianCopula::from_factor(factor);
  const auto expected = plain.uniforms({9, 0}, 3, 30, 8);
  for (const double scale : {1e200, 1e-200}) {
    CAPTURE(scale);
    const coupling::GaussianCopula scaled = coupling::GaussianCopula::from_factor(scale * factor);
    CHECK((scaled.correlation() - plain.correlation()).cwiseAbs().maxCoeff() <= 1e-15);
    const auto got = scaled.uniforms({9, 0}, 3, 30, 8);
    for (std::size_t h = 0; h < 3; ++h) {
      CHECK(got[h].allFinite());
      CHECK((got[h] - expected[h]).cwiseAbs().maxCoeff() <= 1e-14);
    }
  }
}

// === Magnitudes, kernels, features and positions, end to end ====================================

TEMPLATE_TEST_CASE("Lp magnitudes far beyond T give finite attention", "[ranges][magnitude]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const Index d = 16;
  const ref::Problem p = ref::random_problem<T>(12, 40, d, 3, 21);
  const Mat<T> V = p.v<T>();
  const auto exact = [&](auto magnitude) {
    return kernattn::Attention<kernels::Exponential<T>, decltype(magnitude)>({}, magnitude)(
        p.q<T>(), p.k<T>(), V);
  };
  const auto linear = [&](auto magnitude) {
    return kernattn::LinearAttention<features::Positive<T>, decltype(magnitude)>(
        features::Positive<T>::draw(64, d, {3, 0}), magnitude)(p.q<T>(), p.k<T>(), V);
  };
  // p = 0.05 (||k||_p ~ 16^20: log mu ~ 1e47), p = 1e-3 (beyond double), exponent 1e30 (beyond
  // double for ||k|| > 1), gamma = 1e38 (beyond float).
  const std::vector<magnitude::Lp<T>> cases = {magnitude::Lp<T>(T(0.05)), magnitude::Lp<T>(T(1e-3)),
                                               magnitude::Lp<T>(T(2), std::nullopt, T(1e30)),
                                               magnitude::Lp<T>(T(2), T(1e38))};
  for (const magnitude::Lp<T>& mu : cases) {
    CAPTURE(double(mu.p()), double(mu.exponent()), mu.gamma(d));
    double largest = 0;
    for (Index j = 0; j < p.K.rows(); ++j)
      largest = std::max(largest, mu.log_magnitude(p.k<T>().row(j)));
    CHECK(std::isfinite(largest));
    CHECK(largest <= magnitude::Lp<T>::max_log_magnitude);
    // The linear engine combines log-scales in double: finite for every case.
    require_convex_combinations<T>(linear(mu), V);
    // The exact engine holds log-weights in T: finite in double; in float these key terms are
    // beyond its range and the call says so (scale K down or compute in double).
    if constexpr (std::is_same_v<T, double>)
      require_convex_combinations<T>(exact(mu), V);
    else
      REQUIRE_INVALID_ARGUMENT(exact(mu), "key term g(k) + log mu(k)");
  }
}

TEST_CASE("Lp with p = 0.05 in double attends to the key of largest p-norm",
          "[ranges][magnitude]") {
  // log mu_j = ||k_j||_p^2 / 8 ~ 1e47 (d = 16): every query's weight goes to the key of largest
  // ||k||_p (the exponential kernel's q.k/4 is 1e-46 of the gaps), so the output is that key's
  // value. The naive reference: log ||k||_p = log(sum |k_i|^p) / p in long double.
  const Index d = 16;
  const ref::Problem p = ref::random_problem<double>(6, 25, d, 3, 31);
  Index best = 0;
  long double best_log = -1e300L;
  for (Index j = 0; j < p.K.rows(); ++j) {
    long double sum = 0;
    for (Index i = 0; i < d; ++i) sum += std::pow(std::abs((long double)p.K(j, i)), 0.05L);
    const long double log_norm = std::log(sum) / 0.05L;
    if (log_norm > best_log) {
      best_log = log_norm;
      best = j;
    }
  }
  const MatrixXd out = kernattn::Attention<kernels::Exponential<double>, magnitude::Lp<double>>(
      {}, magnitude::Lp<double>(0.05))(p.Q, p.K, p.V);
  for (Index i = 0; i < out.rows(); ++i)
    CHECK((out.row(i) - p.V.row(best)).cwiseAbs().maxCoeff() <= 1e-15);
}

TEMPLATE_TEST_CASE("Polynomial degrees beyond T are rejected; accepted ones stay finite",
                   "[ranges][kernel]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const bool is_float = std::is_same_v<T, float>;
  const int largest = is_float ? 31 : 330;  // (1 + 7)^n 2^32 < 2^128 or 2^1024
  REQUIRE_INVALID_ARGUMENT(kernels::Polynomial<T>(largest + 1),
                           "Polynomial: degree " + std::to_string(largest + 1));
  REQUIRE_INVALID_ARGUMENT(kernels::Polynomial<T>(largest + 1),
                           "with this offset the degree must be <= " + std::to_string(largest));
  REQUIRE_INVALID_ARGUMENT(kernels::Polynomial<T>(2, T(is_float ? 1e30 : 1e300)),
                           "with this degree the offset < ");
  if constexpr (is_float) REQUIRE_INVALID_ARGUMENT(kernels::Polynomial<T>(200), "degree 200");
  // The largest accepted even degree on N(0, 1) inputs at the default scale: non-negative weights,
  // finite outputs inside the range of V.
  const ref::Problem p = ref::random_problem<T>(30, 50, 16, 3, 41);
  for (const int degree : {largest - 1, is_float ? 20 : 200}) {
    CAPTURE(degree);
    require_convex_combinations<T>(
        kernattn::Attention<kernels::Polynomial<T>>(kernels::Polynomial<T>(degree))(
            p.q<T>(), p.k<T>(), p.v<T>()),
        p.v<T>());
  }
}

TEMPLATE_TEST_CASE("Yaglom frequency scales beyond T are rejected", "[ranges][features]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  Mat<T> first = sp::draw_frequencies(sp::Gaussian<T>(T(1)), 32, 8, {2, 0});
  const Mat<T> second = sp::draw_frequencies(sp::Gaussian<T>(T(1)), 32, 8, {2, 1});
  // c up to 1/epsilon: the reported c = 1e38 made the phases of unit inputs overflow.
  const double largest_scale = 1.0 / double(std::numeric_limits<T>::epsilon());
  REQUIRE_INVALID_ARGUMENT(features::Yaglom<T>(first, second, T(1e38)),
                           "Yaglom: frequency_scale c must lie in (0, ");
  REQUIRE_INVALID_ARGUMENT(features::Yaglom<T>(first, second, T(2 * largest_scale)),
                           "1/epsilon of");
  // At the largest c the features of unit-size inputs are finite.
  const features::Yaglom<T> edge(first, second, T(largest_scale));
  CHECK(edge(ref::normal(5, 8, 3).cast<T>()).allFinite());
  // c omega itself must be finite.
  first(3, 2) = T(double(std::numeric_limits<T>::max()) / largest_scale * 4);
  REQUIRE_INVALID_ARGUMENT(features::Yaglom<T>(first, second, T(largest_scale)),
                           "for these frequencies c must be <= ");
}

TEST_CASE("sinusoidal_positions rejects bases whose frequencies overflow", "[ranges][positions]") {
  REQUIRE_INVALID_ARGUMENT(kernattn::sinusoidal_positions<float>(10, 64, 5e-324),
                           "sinusoidal_positions: base = ");
  REQUIRE_INVALID_ARGUMENT(kernattn::sinusoidal_positions<float>(10, 64, 5e-324),
                           "the base must be >= ");
  // The bound for 64 columns and positions up to 9: (max / 9)^(-64/62).
  const double bound = std::exp(-std::log(std::numeric_limits<double>::max() / 9.0) * 64.0 / 62.0);
  CHECK(kernattn::sinusoidal_positions<float>(10, 64, bound * 1.001).allFinite());
  REQUIRE_INVALID_ARGUMENT(kernattn::sinusoidal_positions<float>(10, 64, bound * 0.999),
                           "sinusoidal_positions");
  // Bases of 1 or more never overflow.
  CHECK(kernattn::sinusoidal_positions<double>(1000, 7, 1.0, -500).allFinite());
}

}  // namespace test_parameter_ranges
