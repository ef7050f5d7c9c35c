// Bochner's theorem, checked sampler by sampler: the random-feature estimate
// kappa_hat(r) = (1/M) sum_m cos(omega_m . r) converges to the sampler's closed form kernel_at(r)
// at the Monte Carlo rate 1/sqrt(M); and each closed form agrees with the library's kernel of the
// same name (kernattn/kernels/) or with an independent formula.
//
// The estimator. For a density symmetric about 0 (every sampler here), E sin(omega.r) = 0, so
// one term cos(omega.r) has mean kappa(r) and variance
//   sigma_r^2 = E cos^2(omega.r) - kappa(r)^2 = (1 + kappa(2r))/2 - kappa(r)^2 <= 1,
// and kappa_hat(r) has standard error sigma_r / sqrt(M) for independent frequencies.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "catch.hpp"
#include "kernattn/kernattn.hpp"

namespace test_sampler_convergence {

namespace {

namespace sp = kernattn::spectral;
namespace kernels = kernattn::kernels;
using kernattn::Index;
using kernattn::random::RandomStream;
using MatrixXd = kernattn::Matrix<double>;
using VectorXd = kernattn::Vector<double>;
using RowVectorXd = Eigen::RowVectorXd;

constexpr Index n_differences = 64;
constexpr std::uint64_t n_seeds = 8;
constexpr Index small_m = 256;
constexpr Index large_m = 4096;

/// 64 difference vectors (columns): directions uniform on the sphere, lengths evenly spread over
/// [0.1, 2] times `scale`, so that kappa(r) covers most of (0, 1).
MatrixXd differences(Index d, double scale) {
  const RandomStream stream{900, std::uint64_t(d)};
  MatrixXd r(d, n_differences);
  for (Index j = 0; j < n_differences; ++j) {
    for (Index i = 0; i < d; ++i)
      r(i, j) = kernattn::random::normal_quantile(stream.uniform(std::uint64_t(j * d + i)));
    r.col(j) *= scale * (0.1 + 1.9 * double(j) / double(n_differences - 1)) / r.col(j).norm();
  }
  return r;
}

struct Errors {
  double mean_absolute = 0;  // over differences and seeds
  double mean_square = 0;
  double largest = 0;
};

/// |kappa_hat(r) - kappa(r)| over the differences and `n_seeds` streams of `seed`.
template <class S>
Errors estimate(const S& sampler, Index d, const MatrixXd& r, const VectorXd& kappa,
                Index frequencies, std::uint64_t seed) {
  Errors errors;
  for (std::uint64_t s = 0; s < n_seeds; ++s) {
    const MatrixXd omega =
        sp::draw_frequencies(sampler, frequencies, d, {seed, s}).template cast<double>();
    const VectorXd error = (omega * r).array().cos().colwise().mean().transpose().matrix() - kappa;
    errors.mean_absolute += error.cwiseAbs().sum();
    errors.mean_square += error.squaredNorm();
    errors.largest = std::max(errors.largest, error.cwiseAbs().maxCoeff());
  }
  const double count = double(n_seeds) * double(n_differences);
  errors.mean_absolute /= count;
  errors.mean_square /= count;
  return errors;
}

/// The checks, for a sampler of dimension d at differences of size about `scale`:
///  - rate: mean |error| falls by sqrt(4096/256) = 4 from M = 256 to M = 4096. The band [3, 5.5]
///    allows for the sampling noise of the two averages of 512 errors (8 independent seeds, 64
///    correlated differences each); the measured ratios are reported with the results.
///  - size at M = 4096, from the variance: E err^2 = sigma_r^2 / M, so the mean square error
///    over differences and seeds has expectation mean(sigma_r^2)/M. Even if all 64 differences'
///    errors were fully correlated, 8 seeds make it mean(sigma_r^2)/M times a chi^2_8/8 variable
///    at worst, which exceeds 4 with probability 9e-5: we require at most 4 mean(sigma_r^2)/M.
///    With sigma_r <= 1 that also gives mean |error| <= 2/sqrt(M); the brief's bound
///    mean |error| <= 1/sqrt(M) (one standard error) is checked as well, and the largest single
///    error must stay below 5/sqrt(M) (five standard errors at the largest possible sigma_r).
/// For Orthogonal the frequencies within a block are dependent, but the estimator's variance is
/// below the iid one (test_samplers_orthogonal.cpp measures it), so the same bounds hold.
template <class S>
void check_convergence(const S& sampler, Index d, double scale, std::uint64_t seed,
                       const std::string& name) {
  const MatrixXd r = differences(d, scale);
  VectorXd kappa(n_differences), variance(n_differences);
  for (Index j = 0; j < n_differences; ++j) {
    kappa(j) = sampler.kernel_at(r.col(j));
    variance(j) = 0.5 * (1 + sampler.kernel_at(2 * r.col(j))) - kappa(j) * kappa(j);
  }
  REQUIRE(variance.maxCoeff() <= 1.0);
  REQUIRE(variance.minCoeff() >= 0.0);
  const Errors small = estimate(sampler, d, r, kappa, small_m, seed);
  const Errors large = estimate(sampler, d, r, kappa, large_m, seed + 1);
  const double ratio = small.mean_absolute / large.mean_absolute;
  const double expected_square = variance.mean() / double(large_m);
  INFO(name << ": mean |error| " << small.mean_absolute << " at M = " << small_m << ", "
            << large.mean_absolute << " at M = " << large_m << ", ratio " << ratio
            << "; mean square error at M = " << large_m << " is " << large.mean_square << " = "
            << large.mean_square / expected_square << " x its expectation; largest error "
            << large.largest << "; kappa in [" << kappa.minCoeff() << ", " << kappa.maxCoeff()
            << "]");
  CHECK(ratio >= 3.0);
  CHECK(ratio <= 5.5);
  CHECK(large.mean_square <= 4 * expected_square);
  CHECK(large.mean_absolute <= 1.0 / std::sqrt(double(large_m)));
  CHECK(large.largest <= 5.0 / std::sqrt(double(large_m)));
  // kappa must vary over the differences, or the checks would say little.
  CHECK(kappa.maxCoeff() - kappa.minCoeff() > 0.3);
}

template <class T>
sp::GaussianMixture<T> mixture() {
  kernattn::Vector<T> weights(2);
  weights << T(0.3), T(0.7);
  kernattn::Matrix<T> means(2, 3), variances(2, 3);
  means << T(1), T(0), T(-0.5), T(0), T(0.5), T(2);
  variances << T(0.5), T(1), T(0.8), T(0.3), T(0.3), T(0.3);
  return {weights, means, variances};
}

}  // namespace

TEMPLATE_TEST_CASE("Random-feature estimates converge to kernel_at at the rate 1/sqrt(M)",
                   "[convergence][sampler]", float, double) {
  using T = TestType;
  const Index d = 8;
  const double l = std::sqrt(std::sqrt(double(d)));  // the default lengthscale d^(1/4)
  SECTION("Gaussian") { check_convergence(sp::Gaussian<T>(), d, l, 100, "Gaussian"); }
  SECTION("StudentT nu' = 1, 3, 5") {
    for (const int nu : {1, 3, 5})
      check_convergence(sp::StudentT<T>(T(nu)), d, l, 110 + 2 * std::uint64_t(nu),
                        "StudentT nu' = " + std::to_string(nu));
  }
  SECTION("Cauchy") {
    // kappa = exp(-|r|_1 / l) and |r|_1 is about sqrt(2d/pi) |r|_2: shorter differences.
    check_convergence(sp::Cauchy<T>(), d, l / 2, 130, "Cauchy");
  }
  SECTION("Laplace") { check_convergence(sp::Laplace<T>(), d, l, 140, "Laplace"); }
  SECTION("GammaScaleMixture") {
    check_convergence(sp::GammaScaleMixture<T>(T(0.8), T(1.5)), d, 1.5, 150, "GammaScaleMixture");
  }
  SECTION("GaussianMixture") { check_convergence(mixture<T>(), 3, 1.0, 160, "GaussianMixture"); }
  SECTION("Orthogonal<Gaussian>") {
    check_convergence(sp::Orthogonal<sp::Gaussian<T>>(), d, l, 170, "Orthogonal<Gaussian>");
  }
}

// ---------------------------------------------------------------------------------------------
// Closed forms against the library's kernels

namespace {

/// kernel(q, k) for the row vectors q = r^T, k = 0 (so q - k = r exactly).
template <class Kernel>
double at(const Kernel& kernel, const VectorXd& r) {
  const RowVectorXd q = r.transpose();
  return double(kernel(q, RowVectorXd::Zero(r.size())));
}

}  // namespace

TEMPLATE_TEST_CASE("Closed forms agree with the library kernels", "[sampler][closed_form]", float,
                   double) {
  using T = TestType;
  const Index d = 6;
  const MatrixXd r = differences(d, 2.0);
  const double l = double(T(1.3));  // the value the samplers hold
  const double tolerance = 1e-13;
  for (Index j = 0; j < n_differences; ++j) {
    const VectorXd x = r.col(j);
    INFO("difference " << j << ", |r| = " << x.norm());
    // Matern nu = nu'/2, at a fixed and at the default lengthscale d^(1/4).
    CHECK(sp::StudentT<T>(T(1), T(l)).kernel_at(x) ==
          Approx(at(kernels::Matern12<double>(l), x)).epsilon(tolerance));
    CHECK(sp::StudentT<T>(T(3), T(l)).kernel_at(x) ==
          Approx(at(kernels::Matern32<double>(l), x)).epsilon(tolerance));
    CHECK(sp::StudentT<T>(T(5), T(l)).kernel_at(x) ==
          Approx(at(kernels::Matern52<double>(l), x)).epsilon(tolerance));
    CHECK(sp::StudentT<T>(T(1)).kernel_at(x) ==
          Approx(at(kernels::Matern12<double>(), x)).epsilon(tolerance));
    CHECK(sp::StudentT<T>(T(5)).kernel_at(x) ==
          Approx(at(kernels::Matern52<double>(), x)).epsilon(tolerance));
    // Rational quadratic.
    const double alpha = double(T(0.7));
    CHECK(sp::GammaScaleMixture<T>(T(alpha), T(l)).kernel_at(x) ==
          Approx(at(kernels::RationalQuadratic<double>(alpha, l), x)).epsilon(tolerance));
    CHECK(sp::GammaScaleMixture<T>().kernel_at(x) ==
          Approx(at(kernels::RationalQuadratic<double>(), x)).epsilon(tolerance));
    // RBF: exp(-|r|^2/(2 l^2)) is Rbf with variance l^2; Orthogonal forwards to its base.
    const double rbf = std::exp(-x.squaredNorm() / (2 * l * l));
    CHECK(sp::Gaussian<T>(T(l)).kernel_at(x) == Approx(rbf).epsilon(tolerance));
    CHECK(sp::Gaussian<T>(T(l)).kernel_at(x) ==
          Approx(at(kernels::Rbf<double>(l * l), x)).epsilon(tolerance));
    CHECK(sp::Orthogonal<sp::Gaussian<T>>(sp::Gaussian<T>(T(l))).kernel_at(x) ==
          Approx(rbf).epsilon(tolerance));
    // A one-component mixture at mu = 0 with variances v is the RBF kernel of variance 1/v.
    const double v = double(T(0.6));
    const sp::GaussianMixture<T> centred(kernattn::Vector<T>::Ones(1),
                                         kernattn::Matrix<T>::Zero(1, d),
                                         kernattn::Matrix<T>::Constant(1, d, T(v)));
    CHECK(centred.kernel_at(x) == Approx(at(kernels::Rbf<double>(1 / v), x)).epsilon(tolerance));
    // In one dimension, the product Laplacian is the Laplacian kernel (Matern 1/2).
    const VectorXd first = x.head(1);
    CHECK(sp::Cauchy<T>(T(l)).kernel_at(first) ==
          Approx(at(kernels::Laplacian<double>(l), first)).epsilon(tolerance));
  }
  CHECK(sp::StudentT<T>(T(7)).kernel_at(VectorXd::Zero(d)) == 1.0);
  CHECK(sp::Laplace<T>().kernel_at(VectorXd::Zero(d)) == 1.0);
  CHECK(mixture<T>().kernel_at(VectorXd::Zero(3)) == Approx(1.0).epsilon(1e-15));
}

#if defined(__cpp_lib_math_special_functions)
TEST_CASE("StudentT closed forms at higher odd dof agree with the Bessel form of Matern",
          "[sampler][closed_form]") {
  // kappa = 2^(1-nu)/Gamma(nu) x^nu K_nu(x), x = sqrt(2 nu) |r| / l (Rasmussen and Williams,
  // eq. 4.14), evaluated with the standard library's modified Bessel function.
  const Index d = 5;
  const MatrixXd r = differences(d, 3.0);
  const double l = 0.9;
  for (const int twice_nu : {1, 3, 5, 7, 9, 21}) {
    const double nu = 0.5 * twice_nu;
    const sp::StudentT<double> sampler(twice_nu, l);
    for (Index j = 0; j < n_differences; ++j) {
      const double x = std::sqrt(2 * nu) * r.col(j).norm() / l;
      const double bessel =
          std::exp((1 - nu) * std::log(2.0) - std::lgamma(nu) + nu * std::log(x)) *
          std::cyl_bessel_k(nu, x);
      INFO("nu' = " << twice_nu << ", x = " << x);
      CHECK(sampler.kernel_at(r.col(j)) == Approx(bessel).epsilon(1e-12).margin(1e-300));
    }
  }
}
#endif

}  // namespace test_sampler_convergence
