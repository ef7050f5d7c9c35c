// The distance kernels (Matern 1/2 = Laplacian, 3/2, 5/2 and RationalQuadratic), with every
// magnitude, against the naive double-precision kernel smoother of tests/support/reference.hpp.
// The library forms squared distances as |q|^2 + |k|^2 - 2 q.k and recomputes them directly where
// that cancels; the reference's error model (ref::detail::squared_distance_error) states both
// bounds. Inputs near the end of the floating-point range: test_extreme_inputs.cpp.
#include <cmath>
#include <limits>
#include <type_traits>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "reference.hpp"

namespace test_kernels_distance {

namespace {

/// d^(1/4), the default lengthscale of every distance kernel.
double default_lengthscale(Index d) { return std::pow(double(d), 0.25); }

/// Matern with nu = TwiceNu / 2: default lengthscale at d = 8, lengthscale 1.3 at d = 16.
template <class T, int TwiceNu>
void check_matern(std::uint32_t seed) {
  using Kernel = kernels::Matern<T, TwiceNu>;
  SECTION("default lengthscale d^(1/4)") {
    check::kernel_with_magnitudes<T>(Kernel(), ref::matern(TwiceNu, default_lengthscale(8)), 8,
                                     seed);
  }
  SECTION("lengthscale 1.3, d = 16") {
    check::kernel_with_magnitudes<T>(Kernel(T(1.3)), ref::matern(TwiceNu, double(T(1.3))), 16,
                                     seed + 1);
  }
}

}  // namespace

TEMPLATE_TEST_CASE("Matern 1/2 (Laplacian) attention matches the reference for every magnitude",
                   "[kernels][matern]", float, double) {
  using T = TestType;
  CHECK(std::is_same_v<kernels::Laplacian<T>, kernels::Matern12<T>>);
  CHECK(std::is_same_v<kernels::Matern12<T>, kernels::Matern<T, 1>>);
  check_matern<T, 1>(61);
}

TEMPLATE_TEST_CASE("Matern 3/2 attention matches the reference for every magnitude",
                   "[kernels][matern]", float, double) {
  using T = TestType;
  CHECK(std::is_same_v<kernels::Matern32<T>, kernels::Matern<T, 3>>);
  check_matern<T, 3>(71);
}

TEMPLATE_TEST_CASE("Matern 5/2 attention matches the reference for every magnitude",
                   "[kernels][matern]", float, double) {
  using T = TestType;
  CHECK(std::is_same_v<kernels::Matern52<T>, kernels::Matern<T, 5>>);
  check_matern<T, 5>(81);
  SECTION("compile-time p") {
    check::kernel_with_compile_time_p<T>(kernels::Matern52<T>(),
                                         ref::matern(5, default_lengthscale(8)), 8, 83);
  }
}

TEMPLATE_TEST_CASE("RationalQuadratic attention matches the reference for every magnitude",
                   "[kernels][rq]", float, double) {
  using T = TestType;
  using Kernel = kernels::RationalQuadratic<T>;
  SECTION("defaults: alpha 1, lengthscale d^(1/4)") {
    check::kernel_with_magnitudes<T>(Kernel(), ref::rational_quadratic(1, default_lengthscale(8)),
                                     8, 91);
  }
  SECTION("alpha 0.5, default lengthscale") {
    check::kernel_with_magnitudes<T>(Kernel(T(0.5)),
                                     ref::rational_quadratic(0.5, default_lengthscale(8)), 8, 92);
  }
  SECTION("alpha 3.7, lengthscale 0.9, d = 16") {
    check::kernel_with_magnitudes<T>(
        Kernel(T(3.7), T(0.9)), ref::rational_quadratic(double(T(3.7)), double(T(0.9))), 16, 93);
  }
}

TEMPLATE_TEST_CASE("Distance kernels stay accurate where a query coincides with a key",
                   "[kernels][distance]", float, double) {
  // r = 0 is where |q|^2 + |k|^2 - 2 q.k cancels completely (and may round below 0). The engine
  // recomputes such pairs directly, so even Matern 1/2, whose log kappa has slope 1 in r at r = 0,
  // is as accurate as anywhere else: the reference's bound, with the usual informative limit.
  using T = TestType;
  ref::Problem p = ref::random_problem<T>(12, 30, 8, 4, 95);
  p.Q.topRows(6) = p.K.middleRows(3, 6);
  const ref::Visibility all = ref::all_visible(12, 30);
  constexpr double u = ref::unit_roundoff<T>;
  const double l = default_lengthscale(8);
  const auto none = ref::unit_magnitude();
  for (const kernattn::ExecutionOptions& options : check::tilings) {
    CAPTURE(options.query_tile, options.key_tile);
    const auto run = [&](const auto& kernel) {
      return check::run<T>(p, kernel, magnitude::None{}, mask::None{}, options);
    };
    check::require_matches<T>(run(kernels::Matern12<T>()),
                              ref::attention(p, ref::matern(1, l), none, all, u));
    check::require_matches<T>(run(kernels::Matern32<T>()),
                              ref::attention(p, ref::matern(3, l), none, all, u));
    check::require_matches<T>(run(kernels::Matern52<T>()),
                              ref::attention(p, ref::matern(5, l), none, all, u));
    check::require_matches<T>(run(kernels::RationalQuadratic<T>()),
                              ref::attention(p, ref::rational_quadratic(1, l), none, all, u));
  }
}

TEMPLATE_TEST_CASE("A distant key weighs exactly zero; one beyond the numeric range is rejected",
                   "[kernels][distance][range]", float, double) {
  using T = TestType;
  // Key 3 far away: sqrt(max)/8 in each of 4 coordinates keeps (|q| + |k|)^2 below the range
  // limit max/8 (docs/numerics.md), so its Matern weight underflows to exactly 0. With sqrt(max)
  // in each coordinate |k|^2 would overflow: the call throws, naming the pair.
  const ref::Problem p = ref::random_problem<T>(20, 12, 4, 3, 71);
  const double largest = double(std::numeric_limits<T>::max());
  ref::Problem far = p;
  far.K.row(3).setConstant(double(T(std::sqrt(largest) / 8)));
  const ref::Problem without{p.Q, ref::MatrixXd(p.K.rows() - 1, p.K.cols()),
                             ref::MatrixXd(p.V.rows() - 1, p.V.cols())};
  ref::Problem rest = without;
  rest.K << p.K.topRows(3), p.K.bottomRows(8);
  rest.V << p.V.topRows(3), p.V.bottomRows(8);
  ref::Problem beyond = p;
  beyond.K.row(3).setConstant(double(T(std::sqrt(largest))));
  const auto compare = [&](const auto& kernel, const ref::KernelModel& model) {
    const ref::Matrix<T> out = check::run<T>(far, kernel);
    CHECK(out.allFinite());
    check::require_matches<T>(out, ref::attention(rest, model, ref::unit_magnitude(),
                                                  ref::all_visible(20, 11), ref::unit_roundoff<T>));
    REQUIRE_INVALID_ARGUMENT(check::run<T>(beyond, kernel), "Attention: query 0 (norm ");
    REQUIRE_INVALID_ARGUMENT(check::run<T>(beyond, kernel), ") and key 3 (norm ");
    REQUIRE_INVALID_ARGUMENT(check::run<T>(beyond, kernel),
                             "of Q and K are too large for the distance kernel in ");
  };
  compare(kernels::Laplacian<T>(), ref::matern(1, default_lengthscale(4)));
  compare(kernels::Matern32<T>(), ref::matern(3, default_lengthscale(4)));
  compare(kernels::Matern52<T>(), ref::matern(5, default_lengthscale(4)));
  compare(kernels::RationalQuadratic<T>(), ref::rational_quadratic(1, default_lengthscale(4)));
}

}  // namespace test_kernels_distance
