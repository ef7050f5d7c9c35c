// The exact engine's backward pass and row statistics (engine/exact_backward.hpp) for every
// kernel form (dot-product, distance, direct, product) and magnitude, under a Boolean mask that
// shows everything and a random one with a row that sees nothing: against the naive backward of
// support/gradient_reference.hpp, against central finite differences of the library's own
// forward (double), and bit for bit across thread counts. Typed masks, batches and hidden keys:
// test_backward_masks.cpp.
#include <cmath>
#include <cstdint>

#include "backward_checks.hpp"
#include "catch.hpp"
#include "invalid_argument.hpp"
#include "reference.hpp"

namespace test_backward_exact {

namespace {

using backward_checks::Mat;
using kernattn::Attention;
namespace mask = kernattn::mask;

constexpr Index d = 6;
constexpr Index position_columns = 2;

/// Runs `check(attention, kernel model, magnitude model)` for every composition: each kernel
/// form with each magnitude at least once.
template <class T, class Mask, class Check>
void for_each_composition(const Mask& m, Check&& check) {
  using kernattn::magnitude::FeaturePart;
  using kernattn::magnitude::L1;
  using kernattn::magnitude::L2;
  using kernattn::magnitude::Lp;
  using None = kernattn::magnitude::None;
  const double s = 1 / std::sqrt(double(d));
  const double gamma = ref::default_gamma(d);
  const double l = std::sqrt(std::sqrt(double(d)));
  {
    INFO("Exponential (softmax)");
    check(Attention<kernels::Exponential<T>, None, Mask>({}, {}, m), gref::exponential(s),
          gref::unit_magnitude());
  }
  {
    INFO("Rbf x Lp(3)");
    check(Attention<kernels::Rbf<T>, Lp<T>, Mask>({}, Lp<T>(T(3)), m),
          gref::rbf(std::sqrt(double(d))), gref::lp(3, gamma, 2));
  }
  {
    INFO("Rbf x L2 (softmax again)");
    check(Attention<kernels::Rbf<T>, L2<T>, Mask>({}, L2<T>(), m), gref::rbf(std::sqrt(double(d))),
          gref::lp(2, gamma, 2));
  }
  {
    INFO("Laplacian x L1 (gamma 0.3, exponent 1)");
    check(Attention<kernels::Laplacian<T>, L1<T>, Mask>({}, L1<T>(T(0.3), T(1)), m),
          gref::matern(1, l), gref::lp(1, double(T(0.3)), 1));
  }
  {
    INFO("Matern32 x Lp(1.5)");
    check(Attention<kernels::Matern32<T>, Lp<T>, Mask>({}, Lp<T>(T(1.5)), m), gref::matern(3, l),
          gref::lp(1.5, gamma, 2));
  }
  {
    INFO("Matern52 (lengthscale 0.8)");
    check(Attention<kernels::Matern52<T>, None, Mask>(kernels::Matern52<T>(T(0.8)), {}, m),
          gref::matern(5, double(T(0.8))), gref::unit_magnitude());
  }
  {
    INFO("RationalQuadratic(0.7)");
    check(Attention<kernels::RationalQuadratic<T>, None, Mask>(
              kernels::RationalQuadratic<T>(T(0.7)), {}, m),
          gref::rational_quadratic(double(T(0.7)), l), gref::unit_magnitude());
  }
  {
    INFO("Polynomial(2) x L2");
    check(Attention<kernels::Polynomial<T>, L2<T>, Mask>(kernels::Polynomial<T>(2), L2<T>(), m),
          gref::polynomial(2, 1, double(T(s))), gref::lp(2, gamma, 2));
  }
  {
    INFO("Polynomial(3, offset 2)");
    check(Attention<kernels::Polynomial<T>, None, Mask>(kernels::Polynomial<T>(3, T(2)), {}, m),
          gref::polynomial(3, 2, double(T(s))), gref::unit_magnitude());
  }
  {
    INFO("Linear");
    check(Attention<kernels::Linear<T>, None, Mask>({}, {}, m), gref::linear(),
          gref::unit_magnitude());
  }
  {
    INFO("Product<Exponential, Rbf>");
    using Product = kernels::Product<kernels::Exponential<T>, kernels::Rbf<T>>;
    check(Attention<Product, None, Mask>(Product({}, {}, position_columns), {}, m),
          gref::product(gref::exponential(1 / std::sqrt(double(d - position_columns))),
                        gref::rbf(std::sqrt(double(position_columns))), position_columns),
          gref::unit_magnitude());
  }
  {
    INFO("Product<Rbf, Matern32> x FeaturePart<Lp(3)>");
    using Product = kernels::Product<kernels::Rbf<T>, kernels::Matern32<T>>;
    using Magnitude = FeaturePart<Lp<T>>;
    const Index features = d - position_columns;
    check(Attention<Product, Magnitude, Mask>(Product({}, {}, position_columns),
                                              Magnitude(Lp<T>(T(3)), position_columns), m),
          gref::product(gref::rbf(std::sqrt(double(features))),
                        gref::matern(3, std::sqrt(std::sqrt(double(position_columns)))),
                        position_columns),
          gref::feature_part(gref::lp(3, ref::default_gamma(features), 2), position_columns));
  }
}

/// A random visibility in which row 3 sees nothing.
ref::Visibility boolean_visibility(Index nq, Index nk, std::uint32_t seed) {
  ref::Visibility visible = ref::random_visibility(nq, nk, 0.6, seed);
  visible.row(3).setConstant(false);
  return visible;
}

}  // namespace

TEMPLATE_TEST_CASE("Exact backward: every form and magnitude against the naive backward",
                   "[backward]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  std::uint32_t seed = 100;
  for (const std::pair<Index, Index>& shape : {std::pair<Index, Index>{13, 17}, {1, 1}, {9, 40}}) {
    const Index nq = shape.first;
    const Index nk = shape.second;
    CAPTURE(nq, nk);
    // A Boolean mask says every tile is partial, so this is the per-pair path throughout; the
    // path of tiles a mask shows in full is that of the typed masks (test_backward_masks.cpp),
    // and the form does not choose between them.
    for (const ref::Visibility& visible :
         {ref::all_visible(nq, nk),
          nq < 4 ? ref::all_visible(nq, nk) : boolean_visibility(nq, nk, seed++)}) {
      for_each_composition<T>(
          mask::Boolean(visible), [&](const auto& attention, const auto& kernel, const auto& mu) {
            backward_checks::check_backward<T>(attention, kernel, mu, visible, d, seed++);
          });
    }
  }
}

TEST_CASE("Exact backward: central finite differences of the library's forward (double)",
          "[backward][finite_differences]") {
  using T = double;
  const Index nq = 6;
  const Index nk = 7;
  const Index dv = 2;
  const ref::Visibility visible = boolean_visibility(nq, nk, 301);
  std::uint32_t seed = 310;
  for_each_composition<T>(
      mask::Boolean(visible), [&](const auto& attention, const auto&, const auto&) {
        // Entries around 1: the direct kernels' weights are then positive, so no row's denominator
        // is near 0, where the differences would need a far smaller step.
        const Mat<T> Q = ref::normal(nq, d, seed++, 1.0, 0.5);
        const Mat<T> K = ref::normal(nk, d, seed++, 1.0, 0.5);
        const Mat<T> V = ref::normal(nk, dv, seed++);
        const Mat<T> weights = ref::normal(nq, dv, seed++);
        backward_checks::check_exact_finite_differences(attention, Q, K, V, weights);
      });
}

TEMPLATE_TEST_CASE("Exact backward: empty calls and bad arguments", "[backward][errors]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  using Softmax = Attention<kernels::Exponential<T>>;
  using Poly = Attention<kernels::Polynomial<T>>;
  const Softmax softmax;
  const Mat<T> Q = ref::normal(5, 4, 401).cast<T>();
  const Mat<T> K = ref::normal(6, 4, 402).cast<T>();
  const Mat<T> V = ref::normal(6, 3, 403).cast<T>();
  Mat<T> out(5, 3);
  Mat<T> statistics;

  SECTION("no keys: the statistics say so and every gradient is zero") {
    const Mat<T> none(0, 4);
    const Mat<T> no_values(0, 3);
    softmax.compute(Q, none, no_values, out, statistics);
    CHECK((statistics.array() == -std::numeric_limits<T>::infinity()).all());
    const auto gradients = softmax.gradients(Q, none, no_values, out, statistics, out);
    CHECK(gradients.dQ.isZero(0));
    CHECK(gradients.dK.size() == 0);
    Poly().compute(Q, none, no_values, out, statistics);
    CHECK(statistics.isZero(0));
  }
  SECTION("no value columns: the statistics are those of the keys") {
    Mat<T> expected;
    softmax.compute(Q, K, V, out, expected);
    Mat<T> empty_out(5, 0);
    softmax.compute(Q, K, Mat<T>(6, 0), empty_out, statistics);
    CHECK(check::identical(statistics, expected));
  }
  SECTION("statistics that share memory with an input") {
    Mat<T> expected;
    softmax.compute(Q, K, V, out, expected);
    Mat<T> queries = Q;
    softmax.compute(queries, K, V, out, queries);
    CHECK(check::identical(queries, expected));
  }
  SECTION("gradients written over their inputs") {
    softmax.compute(Q, K, V, out, statistics);
    const auto expected = softmax.gradients(Q, K, V, out, statistics, out);
    Mat<T> q = Q;
    Mat<T> k = K;
    Mat<T> v = V;
    softmax.backward(q, k, v, out, statistics, out, q, k, v);
    CHECK(check::identical(q, expected.dQ));
    CHECK(check::identical(k, expected.dK));
    CHECK(check::identical(v, expected.dV));
  }
  SECTION("shapes") {
    softmax.compute(Q, K, V, out, statistics);
    REQUIRE_INVALID_ARGUMENT(softmax.gradients(Q, K, V, out, Mat<T>(5, 2), out),
                             "statistics is 5x2 but must be 5x1");
    REQUIRE_INVALID_ARGUMENT(softmax.gradients(Q, K, V, out, statistics, Mat<T>(5, 2)),
                             "dOut is 5x2 but must be 5x3");
    Mat<T> dQ(4, 4);
    Mat<T> dK(6, 4);
    Mat<T> dV(6, 3);
    REQUIRE_INVALID_ARGUMENT(softmax.backward(Q, K, V, out, statistics, out, dQ, dK, dV),
                             "dQ is 4x4 but must be 5x4");
    REQUIRE_INVALID_ARGUMENT(softmax.gradients(Q, K, Mat<T>(6, 2), out, statistics, out),
                             "out is 5x3 but the attention output is 5x2");
  }
}

}  // namespace test_backward_exact
