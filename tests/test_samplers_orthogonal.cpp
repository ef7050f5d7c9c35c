// Orthogonal random features (kernattn/spectral/): the frames are Gram-Schmidt of the Gaussian
// blocks and the radii the base sampler's, every frequency keeps the base's law, and the RBF
// estimate has a lower variance than with i.i.d. frequencies.
//
// Statistical checks and their significance. Every sample comes from a fixed (seed, stream), so
// each check has one fixed outcome; the bounds say how unlikely a failure of a correct sampler
// would have been for a random seed.
//  - Kolmogorov-Smirnov: D_n = sup_x |F_n(x) - F(x)| against the exact CDF F of an i.i.d.
//    sample. The Dvoretzky-Kiefer-Wolfowitz inequality with Massart's constant,
//    P(D_n > eps) <= 2 exp(-2 n eps^2) for every n, gives the critical value
//    sqrt(ln(2/alpha)/2)/sqrt(n) at significance alpha = 1e-3 (1.95/sqrt(n)).
#include <Eigen/SVD>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <vector>

#include "catch.hpp"
#include "kernattn/kernattn.hpp"
#include "sampler_reference.hpp"

namespace test_samplers_orthogonal {

namespace {

using namespace sampler_ref;  // its aliases (sp, kr, Index, Mat, ...) and helpers

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

}  // namespace test_samplers_orthogonal
