// Couplings of the heads' spectral samplers (docs/random_features.md): the Student-t CDF they rely
// on, the validation of correlation matrices, Kendall's tau between coupled heads' noise, unchanged
// marginals (Kolmogorov-Smirnov), the Student-t copula's tail dependence, and R = I against
// independent heads.

#include <algorithm>
#include <cmath>
#include <numbers>
#include <tuple>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "kernattn/coupling/gaussian_copula.hpp"
#include "kernattn/coupling/independent.hpp"
#include "kernattn/coupling/student_t_copula.hpp"
#include "kernattn/heads/multi_head.hpp"
#include "kernattn/kernattn.hpp"

namespace test_coupling {

namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;
using kernattn::Index;
namespace coupling = kernattn::coupling;
namespace spectral = kernattn::spectral;
namespace features = kernattn::features;

// ---------------------------------------------------------------------------------------------
// Statistics, written out in the test

/// Kendall's tau of paired samples and its standard error from the sample (Hoeffding: the
/// variance of the U-statistic is 4 zeta_1 / n to first order, zeta_1 the variance of each point's
/// mean concordance with the others).
struct Kendall {
  double tau;
  double standard_error;
};

Kendall kendall(const VectorXd& x, const VectorXd& y) {
  const Index n = x.size();
  VectorXd concordance = VectorXd::Zero(n);
  double total = 0;
  for (Index i = 0; i < n; ++i)
    for (Index j = i + 1; j < n; ++j) {
      const double s =
          double((x(i) > x(j)) - (x(i) < x(j))) * double((y(i) > y(j)) - (y(i) < y(j)));
      concordance(i) += s;
      concordance(j) += s;
      total += s;
    }
  const double tau = total / (0.5 * double(n) * double(n - 1));
  const VectorXd per_point = concordance / double(n - 1);
  const double zeta = (per_point.array() - per_point.mean()).square().mean();
  return {tau, std::sqrt(4 * zeta / double(n))};
}

/// The Kolmogorov-Smirnov statistic of `sample` against the CDF `cdf`.
template <class Cdf>
double kolmogorov_smirnov(VectorXd sample, Cdf cdf) {
  std::sort(sample.begin(), sample.end());
  const double n = double(sample.size());
  double largest = 0;
  for (Index i = 0; i < sample.size(); ++i) {
    const double f = cdf(sample(i));
    largest = std::max({largest, f - double(i) / n, double(i + 1) / n - f});
  }
  return largest;
}

/// The critical value of the KS statistic at level 0.001: P(sqrt(n) D > 1.95) ~ 0.001.
double ks_critical(Index n) { return 1.95 / std::sqrt(double(n)); }

double standard_normal_cdf(double x) { return 0.5 * std::erfc(-x / std::numbers::sqrt2); }

/// P(X > a, Y > a) for a standard bivariate normal with correlation rho, by Simpson's rule on
/// the integral of phi(x) P(Y > a | X = x) over x in [a, a + 12].
double bivariate_normal_upper(double a, double rho) {
  const int steps = 20000;
  const double h = 12.0 / steps;
  double sum = 0;
  for (int s = 0; s <= steps; ++s) {
    const double x = a + s * h;
    const double density = std::exp(-0.5 * x * x) / std::sqrt(2 * std::numbers::pi);
    const double conditional = 1 - standard_normal_cdf((a - rho * x) / std::sqrt(1 - rho * rho));
    const double weight = (s == 0 || s == steps) ? 1 : (s % 2 ? 4 : 2);
    sum += weight * density * conditional;
  }
  return sum * h / 3;
}

/// Every entry of a matrix as one sample vector.
VectorXd entries(const MatrixXd& m) { return Eigen::Map<const VectorXd>(m.data(), m.size()); }

using FourierHead = kernattn::LinearAttention<features::Fourier<double>>;

MatrixXd frequencies_of(const FourierHead& head) { return head.feature_map().frequencies(); }

template <class Sampler>
auto fourier_recipe(Sampler sampler, Index frequencies) {
  return kernattn::SampledHead{sampler, frequencies, [](kernattn::Matrix<double> omega) {
                                 return FourierHead(features::Fourier<double>(std::move(omega)));
                               }};
}

MatrixXd correlation_2(double rho) {
  MatrixXd r(2, 2);
  r << 1, rho, rho, 1;
  return r;
}

MatrixXd correlation_4() {
  MatrixXd r(4, 4);
  r << 1, 0.6, 0.3, -0.4,  //
      0.6, 1, 0.2, -0.1,   //
      0.3, 0.2, 1, 0.5,    //
      -0.4, -0.1, 0.5, 1;
  return r;
}

}  // namespace

TEST_CASE("student_t_cdf matches the closed forms for 1 and 2 degrees of freedom",
          "[coupling][distributions]") {
  using kernattn::random::student_t_cdf;
  for (double t = -1e6; t<0; t = t> - 1e-3 ? 0 : t / 1.7) {
    // Lower tails without cancellation: atan(-1/t)/pi (Cauchy) and
    // 1 / (sqrt(2 + t^2) (sqrt(2 + t^2) + |t|)) (nu = 2).
    const double cauchy = std::atan(-1 / t) / std::numbers::pi;
    const double root = std::sqrt(2 + t * t);
    const double two = 1 / (root * (root - t));
    CAPTURE(t);
    CHECK(std::abs(student_t_cdf(1, t) - cauchy) <= 1e-13 * cauchy);
    CHECK(std::abs(student_t_cdf(2, t) - two) <= 1e-13 * two);
    CHECK(std::abs(student_t_cdf(1, -t) - (1 - cauchy)) <= 1e-15);
  }
  CHECK(student_t_cdf(5, 0.0) == 0.5);
  CHECK(student_t_cdf(5, -INFINITY) == 0.0);
  CHECK(student_t_cdf(5, INFINITY) == 1.0);
  // Large nu tends to the normal CDF (the difference is O(1/nu)).
  for (double t = -6; t <= 6; t += 0.5)
    CHECK(std::abs(student_t_cdf(1e6, t) - standard_normal_cdf(t)) <= 1e-6);
  REQUIRE_INVALID_ARGUMENT(student_t_cdf(0, 1.0), "degrees of freedom");
  REQUIRE_INVALID_ARGUMENT(student_t_cdf(3, NAN), "NaN");
}

TEST_CASE("Correlation matrices are validated and factors normalised", "[coupling]") {
  MatrixXd asymmetric = correlation_2(0.5);
  asymmetric(0, 1) = 0.4;
  REQUIRE_INVALID_ARGUMENT(coupling::GaussianCopula{asymmetric},
                           "not symmetric: R(1,0) = 0.5 but R(0,1)");
  MatrixXd diagonal = correlation_2(0.5);
  diagonal(1, 1) = 2;
  REQUIRE_INVALID_ARGUMENT(coupling::GaussianCopula{diagonal},
                           "diagonal must be 1, but R(1,1) = 2");
  REQUIRE_INVALID_ARGUMENT(coupling::GaussianCopula{correlation_2(1.0)}, "not positive definite");
  MatrixXd indefinite(3, 3);
  indefinite << 1, 0.9, -0.9, 0.9, 1, 0.9, -0.9, 0.9, 1;
  REQUIRE_INVALID_ARGUMENT(coupling::StudentTCopula(indefinite, 4),
                           "R (3x3) is not positive definite");
  REQUIRE_INVALID_ARGUMENT(coupling::GaussianCopula{MatrixXd(2, 3)}, "square");
  MatrixXd infinite = correlation_2(0.5);
  infinite(0, 1) = INFINITY;
  REQUIRE_INVALID_ARGUMENT(coupling::GaussianCopula{infinite}, "non-finite");
  REQUIRE_INVALID_ARGUMENT(coupling::StudentTCopula(correlation_2(0.5), 0), "degrees_of_freedom");
  REQUIRE_INVALID_ARGUMENT(coupling::StudentTCopula(correlation_2(0.5), INFINITY),
                           "degrees_of_freedom must be a finite number >= 0.104");

  MatrixXd upper(2, 2);
  upper << 1, 0.5, 0, 1;
  REQUIRE_INVALID_ARGUMENT(coupling::GaussianCopula::from_factor(upper), "lower triangular");
  MatrixXd singular(2, 2);
  singular << 1, 0, 1, 0;
  REQUIRE_INVALID_ARGUMENT(coupling::GaussianCopula::from_factor(singular), "L(1,1) = 0");

  // The official code's X = L eps never rescales to unit variance; from_factor does:
  // R = D^-1/2 L L^T D^-1/2.
  MatrixXd factor(3, 3);
  factor << 2, 0, 0, 1, 1, 0, -1, 3, 0.5;
  const MatrixXd product = factor * factor.transpose();
  const VectorXd inverse_sd = product.diagonal().cwiseSqrt().cwiseInverse();
  const MatrixXd expected = inverse_sd.asDiagonal() * product * inverse_sd.asDiagonal();
  const coupling::GaussianCopula copula = coupling::GaussianCopula::from_factor(factor);
  CHECK((copula.correlation() - expected).cwiseAbs().maxCoeff() <= 1e-15);
  CHECK(copula.heads() == 3);

  REQUIRE_INVALID_ARGUMENT(copula.uniforms({1, 0}, 2, 4, 4), "R is 3x3 but 2 heads are drawn");
}

TEST_CASE("Gaussian copula: Kendall's tau between two heads' noise is (2/pi) arcsin(rho)",
          "[coupling]") {
  const Index M = 64;
  const Index d = 64;
  for (const double rho : {-0.7, 0.0, 0.3, 0.6, 0.95}) {
    const auto heads = kernattn::MultiHead<FourierHead, coupling::GaussianCopula>::draw(
        coupling::GaussianCopula(correlation_2(rho)),
        std::vector(2, fourier_recipe(spectral::Gaussian<double>(1.0), M)), d, {2024, 10});
    const Kendall estimate = kendall(entries(frequencies_of(heads.heads()[0])),
                                     entries(frequencies_of(heads.heads()[1])));
    const double expected = 2 / std::numbers::pi * std::asin(rho);
    CAPTURE(rho, estimate.tau, estimate.standard_error, expected);
    CHECK(estimate.standard_error < 0.015);
    CHECK(std::abs(estimate.tau - expected) <= 5 * estimate.standard_error);
  }
}

TEST_CASE(
    "Gaussian and Student-t copulas over four heads with different samplers: tau per pair "
    "and unchanged marginals",
    "[coupling]") {
  const Index M = 64;
  const Index d = 64;
  const auto recipes = std::tuple(fourier_recipe(spectral::Gaussian<double>(1.0), M),
                                  fourier_recipe(spectral::Cauchy<double>(1.0), M),
                                  fourier_recipe(spectral::Laplace<double>(1.0), M),
                                  fourier_recipe(spectral::Gaussian<double>(0.5), M));
  using Four = kernattn::Heads<FourierHead, FourierHead, FourierHead, FourierHead>;
  const MatrixXd R = correlation_4();

  const auto check_heads = [&](const auto& multi_head) {
    std::vector<VectorXd> noise;
    std::apply([&](const auto&... head) { (noise.push_back(entries(frequencies_of(head))), ...); },
               multi_head.heads());
    for (Index g = 0; g < 4; ++g)
      for (Index h = g + 1; h < 4; ++h) {
        const Kendall estimate = kendall(noise[std::size_t(g)], noise[std::size_t(h)]);
        const double expected = 2 / std::numbers::pi * std::asin(R(g, h));
        CAPTURE(g, h, estimate.tau, estimate.standard_error, expected);
        CHECK(std::abs(estimate.tau - expected) <= 5 * estimate.standard_error);
      }
    // Each head keeps its sampler's law: N(0, 1), standard Cauchy, standard Laplace, N(0, 4).
    const Index n = noise[0].size();
    CHECK(kolmogorov_smirnov(noise[0], standard_normal_cdf) <= ks_critical(n));
    CHECK(kolmogorov_smirnov(noise[1], [](double x) {
            return 0.5 + std::atan(x) / std::numbers::pi;
          }) <= ks_critical(n));
    CHECK(kolmogorov_smirnov(noise[2], [](double x) {
            return x < 0 ? 0.5 * std::exp(x) : 1 - 0.5 * std::exp(-x);
          }) <= ks_critical(n));
    CHECK(kolmogorov_smirnov(noise[3], [](double x) { return standard_normal_cdf(x / 2); }) <=
          ks_critical(n));
  };

  SECTION("Gaussian copula") {
    check_heads(kernattn::MultiHead<Four, coupling::GaussianCopula>::draw(
        coupling::GaussianCopula(R), recipes, d, {77, 0}));
  }
  SECTION("Student-t copula, 4 degrees of freedom") {
    check_heads(kernattn::MultiHead<Four, coupling::StudentTCopula>::draw(
        coupling::StudentTCopula(R, 4), recipes, d, {78, 0}));
  }
}

TEST_CASE(
    "A Gaussian mixture head and a Gaussian head: coordinate i's noise of one is coupled with "
    "coordinate i of the other",
    "[coupling][gaussian_mixture]") {
  // Every sampler makes coordinate i from uniform column i (the mixture's component is in column
  // d), so a copula of correlation rho gives Kendall's tau (2/pi) asin(rho) between the heads'
  // coordinate-i noise. The mixture's noise z_i = omega_i - s mu_qi is recovered from its
  // frequencies: its signed components sit at -300, -100, 100, 300 with unit variance, so the
  // nearest one is the one drawn (|z| <= 8.3 for every stream uniform).
  const Index M = 128;
  const Index d = 8;
  Eigen::VectorXd weights(2);
  weights << 0.5, 0.5;
  MatrixXd means(2, d);
  means.row(0).setConstant(100.0);
  means.row(1).setConstant(300.0);
  const spectral::GaussianMixture<double> mixture(weights, means, MatrixXd::Ones(2, d));
  const auto recipes =
      std::tuple(fourier_recipe(mixture, M), fourier_recipe(spectral::Gaussian<double>(1.0), M));
  using Two = kernattn::Heads<FourierHead, FourierHead>;
  const double rho = 0.9;
  const double expected = 2 / std::numbers::pi * std::asin(rho);

  const auto check_heads = [&](const auto& multi_head) {
    const MatrixXd mixed = frequencies_of(std::get<0>(multi_head.heads()));
    const MatrixXd plain = frequencies_of(std::get<1>(multi_head.heads()));
    MatrixXd noise = mixed;
    for (Index m = 0; m < M; ++m)
      for (Index i = 0; i < d; ++i) {
        const double centre =
            std::copysign(std::abs(mixed(m, i)) < 200.0 ? 100.0 : 300.0, mixed(m, i));
        noise(m, i) = mixed(m, i) - centre;
      }
    REQUIRE(noise.cwiseAbs().maxCoeff() < 9.0);  // each noise is its own component's
    const Kendall same = kendall(entries(noise), entries(plain));
    CAPTURE(same.tau, same.standard_error, expected);
    CHECK(same.standard_error < 0.02);
    CHECK(std::abs(same.tau - expected) <= 5 * same.standard_error);
    // Coordinate i against coordinate i + 1 (the pairing of a mixture that spent column 0 on its
    // component): independent.
    const Kendall shifted =
        kendall(entries(noise.leftCols(d - 1)), entries(plain.rightCols(d - 1)));
    CAPTURE(shifted.tau, shifted.standard_error);
    CHECK(std::abs(shifted.tau) <= 5 * shifted.standard_error);
  };
  SECTION("Gaussian copula") {
    check_heads(kernattn::MultiHead<Two, coupling::GaussianCopula>::draw(
        coupling::GaussianCopula(correlation_2(rho)), recipes, d, {91, 0}));
  }
  SECTION("Student-t copula, 4 degrees of freedom") {
    check_heads(kernattn::MultiHead<Two, coupling::StudentTCopula>::draw(
        coupling::StudentTCopula(correlation_2(rho), 4), recipes, d, {92, 0}));
  }
}

TEST_CASE("The Student-t copula has upper-tail dependence that the Gaussian copula lacks",
          "[coupling]") {
  // P(U_2 > q | U_1 > q) at q = 0.99 from 100,000 coupled pairs; rho = 0.5.
  const double rho = 0.5;
  const double q = 0.99;
  const Index rows = 1000;
  const Index cols = 100;
  const auto co_exceedance = [&](const std::vector<MatrixXd>& u) {
    const Eigen::ArrayXXd first = u[0].array();
    const Eigen::ArrayXXd second = u[1].array();
    const double above = double((first > q).count());
    const double both = double(((first > q) && (second > q)).count());
    return std::pair{both / above, above};
  };
  const auto [gaussian, gaussian_count] =
      co_exceedance(coupling::GaussianCopula(correlation_2(rho)).uniforms({5, 0}, 2, rows, cols));
  const auto [student, student_count] = co_exceedance(
      coupling::StudentTCopula(correlation_2(rho), 3).uniforms({5, 0}, 2, rows, cols));
  const auto standard_error = [](double p, double count) { return std::sqrt(p * (1 - p) / count); };

  // The Gaussian value agrees with the bivariate normal orthant probability.
  const double threshold = kernattn::random::normal_quantile(q);
  const double exact_gaussian = bivariate_normal_upper(threshold, rho) / (1 - q);
  const double gaussian_error = standard_error(exact_gaussian, gaussian_count);
  const double student_error = standard_error(student, student_count);
  CAPTURE(gaussian, exact_gaussian, student, gaussian_count, student_count);
  CHECK(std::abs(gaussian - exact_gaussian) <= 5 * gaussian_error);
  // The Student-t copula exceeds it by far more than the sampling error.
  CHECK(student - gaussian >= 5 * std::hypot(gaussian_error, student_error));

  // Both copulas keep uniform marginals.
  for (const auto& copula_uniforms :
       {coupling::GaussianCopula(correlation_2(rho)).uniforms({6, 0}, 2, 100, 100),
        coupling::StudentTCopula(correlation_2(rho), 3).uniforms({6, 0}, 2, 100, 100)})
    for (const MatrixXd& u : copula_uniforms) {
      CHECK(kolmogorov_smirnov(entries(u), [](double x) { return x; }) <= ks_critical(u.size()));
      CHECK(u.minCoeff() > 0);
      CHECK(u.maxCoeff() < 1);
    }
}

TEST_CASE(
    "R = I gives exactly the frequencies of independent heads, and independent head h "
    "those its sampler draws alone from stream + h",
    "[coupling]") {
  const Index M = 48;
  const Index d = 16;
  const Index H = 5;
  const spectral::StudentT<double> sampler(3.0, 1.5);
  const auto recipes = std::vector(std::size_t(H), fourier_recipe(sampler, M));
  const kernattn::random::RandomStream stream{99, 40};
  const auto copula = kernattn::MultiHead<FourierHead, coupling::GaussianCopula>::draw(
      coupling::GaussianCopula(MatrixXd::Identity(H, H)), recipes, d, stream);
  const auto independent =
      kernattn::MultiHead<FourierHead>::draw(coupling::Independent{}, recipes, d, stream);
  for (Index h = 0; h < H; ++h) {
    const MatrixXd alone =
        features::Fourier<double>::draw(sampler, M, d, stream.with_stream(40 + std::uint64_t(h)))
            .frequencies();
    CHECK((frequencies_of(independent.heads()[std::size_t(h)]).array() == alone.array()).all());
    CHECK((frequencies_of(copula.heads()[std::size_t(h)]).array() == alone.array()).all());
  }
  // A block-diagonal R leaves the first head (a unit row of L) exactly independent too.
  MatrixXd block = MatrixXd::Identity(3, 3);
  block(1, 2) = block(2, 1) = 0.5;
  const auto partly = kernattn::MultiHead<FourierHead, coupling::GaussianCopula>::draw(
      coupling::GaussianCopula(block), std::vector(3, fourier_recipe(sampler, M)), d, stream);
  CHECK(
      (frequencies_of(partly.heads()[0]).array() == frequencies_of(independent.heads()[0]).array())
          .all());
  CHECK(
      (frequencies_of(partly.heads()[1]).array() == frequencies_of(independent.heads()[1]).array())
          .all());
  CHECK(
      !(frequencies_of(partly.heads()[2]).array() == frequencies_of(independent.heads()[2]).array())
           .all());
}

TEST_CASE("Coupled draws depend only on the seed and stream", "[coupling]") {
  const coupling::StudentTCopula copula(correlation_4(), 2.5);
  const auto first = copula.uniforms({3, 1}, 4, 20, 7);
  const auto again = copula.uniforms({3, 1}, 4, 20, 7);
  const auto other = copula.uniforms({3, 2}, 4, 20, 7);
  for (std::size_t h = 0; h < 4; ++h) {
    CHECK((first[h].array() == again[h].array()).all());
    CHECK(!(first[h].array() == other[h].array()).any());
  }
}

}  // namespace test_coupling
