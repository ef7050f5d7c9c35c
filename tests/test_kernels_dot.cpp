// The dot-product and direct kernels (Exponential, Rbf, Polynomial, Linear), with every
// magnitude, against the naive double-precision kernel smoother of tests/support/reference.hpp.
#include <cmath>

#include "catch.hpp"
#include "reference.hpp"

namespace test_kernels_dot {

namespace {

/// s = 1/sqrt(d), the default scale of Exponential and Polynomial.
double softmax_scale(Index d) { return 1 / std::sqrt(double(d)); }

}  // namespace

TEMPLATE_TEST_CASE("Exponential attention matches the reference for every magnitude",
                   "[kernels][exponential]", float, double) {
  using T = TestType;
  SECTION("default scale 1/sqrt(d)") {
    check::kernel_with_magnitudes<T>(kernels::Exponential<T>(), ref::exponential(softmax_scale(8)),
                                     8, 11);
  }
  SECTION("scale 0.3, d = 16") {
    check::kernel_with_magnitudes<T>(kernels::Exponential<T>(T(0.3)),
                                     ref::exponential(double(T(0.3))), 16, 12);
  }
  SECTION("compile-time p") {
    check::kernel_with_compile_time_p<T>(kernels::Exponential<T>(),
                                         ref::exponential(softmax_scale(8)), 8, 13);
  }
}

TEMPLATE_TEST_CASE("Rbf attention matches the reference for every magnitude", "[kernels][rbf]",
                   float, double) {
  using T = TestType;
  SECTION("default variance sqrt(d)") {
    check::kernel_with_magnitudes<T>(kernels::Rbf<T>(), ref::rbf(std::sqrt(8.0)), 8, 21);
  }
  SECTION("variance 1.7, d = 16") {
    check::kernel_with_magnitudes<T>(kernels::Rbf<T>(T(1.7)), ref::rbf(double(T(1.7))), 16, 22);
  }
}

// The direct kernels run on data with mean 1, so that q.k is mostly positive and the weights
// of a row do not nearly cancel (their sum is then well conditioned; odd degrees still give
// some negative weights).
TEMPLATE_TEST_CASE("Polynomial attention matches the reference for every magnitude",
                   "[kernels][polynomial]", float, double) {
  using T = TestType;
  SECTION("defaults: degree 2, offset 1, scale 1/sqrt(d)") {
    check::kernel_with_magnitudes<T>(kernels::Polynomial<T>(),
                                     ref::polynomial(2, 1, softmax_scale(8)), 8, 31, 1.0);
  }
  SECTION("odd degree 3, default offset and scale") {
    check::kernel_with_magnitudes<T>(kernels::Polynomial<T>(3),
                                     ref::polynomial(3, 1, softmax_scale(8)), 8, 32, 1.0);
  }
  SECTION("degree 3, offset 0.5, scale 0.3") {
    check::kernel_with_magnitudes<T>(kernels::Polynomial<T>(3, T(0.5), T(0.3)),
                                     ref::polynomial(3, 0.5, double(T(0.3))), 8, 33, 1.0);
  }
  SECTION("degree 4, offset 0, scale 0.5") {
    check::kernel_with_magnitudes<T>(kernels::Polynomial<T>(4, T(0), T(0.5)),
                                     ref::polynomial(4, 0, 0.5), 8, 34, 1.0);
  }
  SECTION("degree 1, offset 2") {
    check::kernel_with_magnitudes<T>(kernels::Polynomial<T>(1, T(2)),
                                     ref::polynomial(1, 2, softmax_scale(8)), 8, 35, 1.0);
  }
  SECTION("compile-time p") {
    check::kernel_with_compile_time_p<T>(kernels::Polynomial<T>(),
                                         ref::polynomial(2, 1, softmax_scale(8)), 8, 36);
  }
}

TEMPLATE_TEST_CASE("Linear attention matches the reference for every magnitude",
                   "[kernels][linear]", float, double) {
  using T = TestType;
  check::kernel_with_magnitudes<T>(kernels::Linear<T>(), ref::linear(), 8, 41, 1.0);
}

TEMPLATE_TEST_CASE("Direct kernels output exactly zero where the weights sum to exactly zero",
                   "[kernels][direct]", float, double) {
  using T = TestType;
  // Keys k and -k: the weights q.k and q.(-k) are exact negatives of each other (negation is
  // exact and both products are summed in the same order), so every row's sum is exactly 0.
  const ref::MatrixXd k = ref::normal(1, 6, 51);
  ref::Problem p = ref::random_problem<T>(5, 2, 6, 3, 52);
  p.K << k, -k;
  p = ref::rounded<T>(p);
  const ref::Matrix<T> linear = check::run<T>(p, kernels::Linear<T>());
  const ref::Matrix<T> affine = check::run<T>(p, kernels::Polynomial<T>(1, T(0), T(0.5)));
  CHECK((linear.array() == 0).all());
  CHECK((affine.array() == 0).all());
}

}  // namespace test_kernels_dot
