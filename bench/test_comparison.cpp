// The comparison catalogue (comparison.hpp), the code path of kernattn_compare and of
// kernattn_bench --grid: each named exact kernel, magnitude and mask gives the attention that the
// tests' naive reference (tests/support/reference.hpp) computes from the formulas, in float and
// double; the compositions give their own definitions; the flop credits count the visible pairs;
// bad names are refused with the valid choices.

#include <cmath>
#include <string>

#include "catch.hpp"
#include "comparison.hpp"
#include "pooling.hpp"
#include "positional_reference.hpp"
#include "reference.hpp"

namespace test_comparison {

using kernattn_bench::Configuration;

Configuration configuration(const std::string& kernel, const std::string& magnitude,
                            const std::string& mask, const std::string& scalar) {
  Configuration c;
  c.kernel = kernel;
  c.magnitude = magnitude;
  c.mask = mask;
  c.scalar = scalar;
  c.n = 37;
  c.d = 8;
  c.frequencies = 64;
  return c;
}

/// The kernel of an exact name, with the library's defaults for dimension d written out.
ref::KernelModel kernel_model(const std::string& kernel, kernattn::Index d) {
  const double root_d = std::sqrt(double(d));
  const double lengthscale = std::pow(double(d), 0.25);
  if (kernel == "softmax") return ref::exponential(1.0 / root_d);
  if (kernel == "rbf") return ref::rbf(root_d);
  if (kernel == "laplacian") return ref::matern(1, lengthscale);
  if (kernel == "matern32") return ref::matern(3, lengthscale);
  if (kernel == "matern52") return ref::matern(5, lengthscale);
  if (kernel == "rq") return ref::rational_quadratic(1.0, lengthscale);
  if (kernel == "polynomial") return ref::polynomial(2, 1.0, 1.0 / root_d);
  REQUIRE(kernel == "linear");
  return ref::linear();
}

ref::Visibility visibility(const std::string& mask, kernattn::Index n) {
  if (mask == "none") return ref::all_visible(n, n);
  if (mask == "causal") return ref::causal(n, n);
  REQUIRE(mask == "window:5");
  return ref::window(n, n, 5, 0);
}

/// The catalogue's case output and its inputs, in the precision of `c.scalar`.
struct Run {
  ref::Problem problem;
  ref::MatrixXd out;
};

template <class T>
Run run(const Configuration& c) {
  const auto inputs = kernattn_bench::comparison_inputs(c.n, c.d);
  const auto attention = kernattn_bench::make_case(c);
  attention->run();
  return {ref::rounded<T>({inputs.Q, inputs.K, inputs.V}), attention->output()};
}

template <class T>
std::string scalar_name() {
  return std::is_same_v<T, float> ? "float" : "double";
}

TEMPLATE_TEST_CASE("every exact kernel, magnitude and mask of the catalogue is the reference's",
                   "[comparison]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  for (const std::string kernel :
       {"softmax", "rbf", "laplacian", "matern32", "matern52", "rq", "polynomial", "linear"})
    for (const std::string magnitude : {"none", "lp:3"})
      for (const std::string mask : {"none", "causal", "window:5"}) {
        const Configuration c = configuration(kernel, magnitude, mask, scalar_name<T>());
        CAPTURE(c.name());
        const Run result = run<T>(c);
        const ref::MagnitudeModel mu = magnitude == "none"
                                           ? ref::unit_magnitude()
                                           : ref::lp(3.0, ref::default_gamma(c.d), 2.0);
        const ref::Reference expected =
            ref::attention(result.problem, kernel_model(kernel, c.d), mu, visibility(mask, c.n),
                           ref::unit_roundoff<T>);
        check::require_matches<T>(result.out, expected);
      }
}

TEMPLATE_TEST_CASE("the catalogue's compositions are their definitions", "[comparison]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const double u = ref::unit_roundoff<T>;
  const std::string scalar = scalar_name<T>();

  SECTION("positional: softmax over the features times RBF over 16 sinusoidal coordinates") {
    const Configuration c = configuration("positional", "none", "causal", scalar);
    const Run result = run<T>(c);
    ref::Problem joined = result.problem;
    joined.Q.conservativeResize(c.n, c.d + 16);
    joined.K.conservativeResize(c.n, c.d + 16);
    joined.Q.rightCols(16) = kernattn::sinusoidal_positions<T>(c.n, 16).template cast<double>();
    joined.K.rightCols(16) = joined.Q.rightCols(16);
    const ref::KernelModel product =
        positional_ref::product(ref::exponential(1.0 / std::sqrt(double(c.d))), ref::rbf(4.0), c.d);
    check::require_matches<T>(result.out, ref::attention(joined, product, ref::unit_magnitude(),
                                                         ref::causal(c.n, c.n), u));
  }

  SECTION("bn: softmax of queries and keys normalised by the keys' mean and variance") {
    const Configuration c = configuration("bn", "none", "none", scalar);
    const Run result = run<T>(c);
    // q' = (q - mean_K) / sqrt(var_K + 1e-5), the same for k (population variance), rounded to T.
    ref::Problem normalised = result.problem;
    for (kernattn::Index column = 0; column < c.d; ++column) {
      const double mean = result.problem.K.col(column).mean();
      const double variance = (result.problem.K.col(column).array() - mean).square().mean();
      const double scale = 1 / std::sqrt(variance + 1e-5);
      normalised.Q.col(column) = (result.problem.Q.col(column).array() - mean) * scale;
      normalised.K.col(column) = (result.problem.K.col(column).array() - mean) * scale;
    }
    check::require_matches<T>(
        result.out,
        ref::attention(ref::rounded<T>(normalised), ref::exponential(1.0 / std::sqrt(double(c.d))),
                       ref::unit_magnitude(), ref::all_visible(c.n, c.n), u));
  }

  SECTION("sh: softmax over keys and values mean-pooled by 4") {
    const Configuration c = configuration("sh", "none", "none", scalar);
    const Run result = run<T>(c);
    const ref::Problem pooled = ref::pooled_problem<T>(result.problem, 4);
    check::require_matches<T>(
        result.out,
        ref::attention(pooled, ref::exponential(1.0 / std::sqrt(double(c.d))),
                       ref::unit_magnitude(), ref::all_visible(c.n, pooled.K.rows()), u));
  }

  SECTION("favor and fourier estimate softmax: 16 times the frequencies, a quarter the error") {
    // Both estimators' errors fall like M^(-1/2) (docs/random_features.md): from M = 256 to 4096
    // the distance from softmax falls by about 4; a wiring error (a wrong scale, a kernel other
    // than softmax's) leaves a bias that does not fall. Half is the bound: a factor 2 of slack.
    for (const std::string estimator : {"favor", "fourier"}) {
      Configuration c =
          configuration(estimator, estimator == "fourier" ? "lp:2" : "none", "none", scalar);
      CAPTURE(estimator);
      const Run softmax = run<T>(c.softmax_reference());
      c.frequencies = 256;
      const double coarse = (run<T>(c).out - softmax.out).norm();
      c.frequencies = 4096;
      const double fine = (run<T>(c).out - softmax.out).norm();
      CHECK(fine < 0.5 * coarse);
    }
  }
}

TEST_CASE("the catalogue credits the flops of the visible pairs", "[comparison]") {
  Configuration c = configuration("softmax", "none", "none", "float");
  c.n = 10;
  const double per_pair = 4.0 * double(c.d);
  CHECK(kernattn_bench::credited_flops(c) == per_pair * 100);
  c.mask = "causal";
  CHECK(kernattn_bench::credited_flops(c) == per_pair * 55);
  c.mask = "window:2";  // rows 0, 1 see 1, 2 keys; the other 8 see 3
  CHECK(kernattn_bench::credited_flops(c) == per_pair * (1 + 2 + 8 * 3));
  c.kernel = "sh";  // 3 pooled keys (4, 4, 2 tokens)
  c.mask = "none";
  CHECK(kernattn_bench::credited_flops(c) == per_pair * 30);
  c.mask = "causal";  // rows 0-3 see 1 pooled key, 4-7 see 2, 8-9 see 3
  CHECK(kernattn_bench::credited_flops(c) == per_pair * (4 + 8 + 6));
  c.kernel = "positional";
  c.mask = "none";
  CHECK(kernattn_bench::credited_flops(c) == (2.0 * (8 + 16) + 2.0 * 8) * 100);
}

TEST_CASE("the catalogue refuses bad names with the valid choices", "[comparison]") {
  const auto refuses = [](Configuration c, const std::string& fragment) {
    CAPTURE(c.name());
    CHECK_THROWS_WITH(kernattn_bench::make_case(c), message_contains(fragment));
  };
  const Configuration good = configuration("softmax", "none", "none", "float");
  Configuration c = good;
  c.kernel = "softmx";
  refuses(c, "unknown kernel 'softmx'; valid: softmax, rbf, laplacian");
  c = good;
  c.magnitude = "lp:-1";
  refuses(c, "magnitude must be none or lp:<p> with a finite p > 0, got 'lp:-1'");
  c = good;
  c.mask = "window:x";
  refuses(c, "mask must be one of none, causal, window:<w>");
  c = good;
  c.scalar = "half";
  refuses(c, "valid: float, double");
  c = configuration("favor", "none", "window:3", "float");
  refuses(c, "favor runs in the linear-time engine, which takes the masks none and causal");
  c = configuration("bn", "none", "causal", "float");
  const auto attention = kernattn_bench::make_case(c);
  CHECK_THROWS_AS(attention->run(), kernattn::InvalidArgument);
}

}  // namespace test_comparison
