// The spectral samplers (kernattn/spectral/): the layout of the uniforms each one reads, against
// the transforms of kernattn::random, and determinism in (seed, stream), with draws that extend
// with M.
#include <cmath>
#include <limits>

#include "catch.hpp"
#include "kernattn/kernattn.hpp"
#include "sampler_reference.hpp"

namespace test_samplers_layout {

namespace {

using namespace sampler_ref;  // its aliases (sp, kr, Index, Mat, ...) and helpers

}  // namespace

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

}  // namespace test_samplers_layout
