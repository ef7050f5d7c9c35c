// The exact engine's backward pass for the feature form: `Attention<RandomFeature<Map>>` with
// every feature map (Fourier, Yaglom, Positive) and the implicit kernel attention energy
// (`IkaEnergy<Yaglom>`), under a Boolean mask with a row that sees nothing and under the causal
// mask: statistics and gradients against the naive backward of feature_gradient_reference.hpp,
// bit for bit across thread counts (backward_checks.hpp), against central finite differences in
// double, and against the linear engine's backward on the same weights; and the gradient of the
// map's frequencies against central differences.
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "backward_checks.hpp"
#include "catch.hpp"
#include "feature_gradient_reference.hpp"
#include "linear_reference.hpp"
#include "reference.hpp"

namespace test_backward_features {

namespace {

using backward_checks::Mat;
using feature_gradient_ref::NaiveMap;
using kernattn::Attention;
using kernattn::BatchLayout;
namespace mask = kernattn::mask;

constexpr Index d = 5;

/// A random visibility in which row 3 sees nothing.
ref::Visibility boolean_visibility(Index nq, Index nk, std::uint32_t seed) {
  ref::Visibility visible = ref::random_visibility(nq, nk, 0.6, seed);
  visible.row(3).setConstant(false);
  return visible;
}

/// Runs `check(attention, kernel model, magnitude model)` for each map's RandomFeature kernel
/// (with Lp(3), and without a magnitude for Fourier) and for IkaEnergy<Yaglom> with L1.
template <class T, class Mask, class Check>
void for_each_feature_composition(const Mask& m, Check&& check) {
  using kernattn::kernels::IkaEnergy;
  using kernattn::kernels::RandomFeature;
  using kernattn::magnitude::L1;
  using kernattn::magnitude::Lp;
  const auto maps = linear_ref::Maps<T>::make(d, 29);
  const double gamma = ref::default_gamma(d);
  using Fourier = kernattn::features::Fourier<T>;
  using Yaglom = kernattn::features::Yaglom<T>;
  using Positive = kernattn::features::Positive<T>;
  {
    INFO("RandomFeature<Fourier>, no magnitude");
    check(Attention<RandomFeature<Fourier>, kernattn::magnitude::None, Mask>(
              RandomFeature<Fourier>(maps.fourier), {}, m),
          feature_gradient_ref::feature_pair(maps.naive_fourier), gref::unit_magnitude());
  }
  {
    INFO("RandomFeature<Yaglom> x Lp(3)");
    check(Attention<RandomFeature<Yaglom>, Lp<T>, Mask>(RandomFeature<Yaglom>(maps.yaglom),
                                                        Lp<T>(T(3)), m),
          feature_gradient_ref::feature_pair(maps.naive_yaglom), gref::lp(3, gamma, 2));
  }
  {
    INFO("RandomFeature<Positive> x Lp(3)");
    check(Attention<RandomFeature<Positive>, Lp<T>, Mask>(RandomFeature<Positive>(maps.positive),
                                                          Lp<T>(T(3)), m),
          feature_gradient_ref::feature_pair(maps.naive_positive, true), gref::lp(3, gamma, 2));
  }
  {
    INFO("IkaEnergy<Yaglom> x L1");
    check(Attention<IkaEnergy<Yaglom>, L1<T>, Mask>(IkaEnergy<Yaglom>(maps.yaglom), L1<T>(), m),
          feature_gradient_ref::ika_energy_pair(maps.naive_yaglom), gref::lp(1, gamma, 2));
  }
}

}  // namespace

TEMPLATE_TEST_CASE("Exact backward of the feature form against the naive backward",
                   "[backward][features]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  std::uint32_t seed = 500;
  const Index nq = 11;
  const Index nk = 14;
  SECTION("a Boolean mask (every tile partial) with a row that sees nothing") {
    const ref::Visibility visible = boolean_visibility(nq, nk, seed++);
    for_each_feature_composition<T>(
        mask::Boolean(visible), [&](const auto& attention, const auto& kernel, const auto& mu) {
          backward_checks::check_backward<T>(attention, kernel, mu, visible, d, seed++);
        });
  }
  SECTION("causal (tiles shown in full, partial and hidden)") {
    for_each_feature_composition<T>(
        mask::Causal{}, [&](const auto& attention, const auto& kernel, const auto& mu) {
          backward_checks::check_backward<T>(attention, kernel, mu, ref::causal(nq, nk), d, seed++);
        });
  }
}

TEST_CASE("Exact backward of the feature form: central finite differences (double)",
          "[backward][features][finite_differences]") {
  using T = double;
  const Index nq = 6;
  const Index nk = 7;
  const Index dv = 2;
  const ref::Visibility visible = boolean_visibility(nq, nk, 601);
  std::uint32_t seed = 610;
  for_each_feature_composition<T>(
      mask::Boolean(visible), [&](const auto& attention, const auto&, const auto&) {
        const Mat<T> Q = ref::normal(nq, d, seed++, 0.0, 0.5);
        const Mat<T> K = ref::normal(nk, d, seed++, 0.0, 0.5);
        const Mat<T> V = ref::normal(nk, dv, seed++);
        const Mat<T> weights = ref::normal(nq, dv, seed++);
        backward_checks::check_exact_finite_differences(attention, Q, K, V, weights);
      });
}

TEMPLATE_TEST_CASE("Exact and linear backward agree on the same feature weights",
                   "[backward][features][linear]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  using Positive = kernattn::features::Positive<T>;
  using kernattn::magnitude::Lp;
  const auto maps = linear_ref::Maps<T>::make(d, 31);
  const ref::Problem p = ref::random_problem<T>(12, 12, d, 3, 700);
  const Mat<T> Q = p.Q.cast<T>();
  const Mat<T> K = p.K.cast<T>();
  const Mat<T> V = p.V.cast<T>();
  const Mat<T> dO = ref::normal(12, 3, 701).cast<T>();
  const Attention<kernattn::kernels::RandomFeature<Positive>, Lp<T>, mask::Causal> exact(
      kernattn::kernels::RandomFeature<Positive>(maps.positive), Lp<T>(T(3)));
  const kernattn::LinearAttention<Positive, Lp<T>, mask::Causal> linear(maps.positive, Lp<T>(T(3)));
  Mat<T> out(12, 3);
  Mat<T> statistics;
  exact.compute(Q, K, V, out, statistics);
  const auto e = exact.gradients(Q, K, V, out, statistics, dO);
  const auto l = linear.gradients(Q, K, V, linear(Q, K, V), dO);
  // Both are within their bounds of the same naive gradients (tested above and in
  // test_backward_linear.cpp); here they are compared with each other at a few hundred ulps of
  // the largest entry.
  const double tolerance = 400 * ref::unit_roundoff<T>;
  CHECK(linear_ref::relative_difference(l.dQ, e.dQ) <= tolerance);
  CHECK(linear_ref::relative_difference(l.dK, e.dK) <= tolerance);
  CHECK(linear_ref::relative_difference(l.dV, e.dV) <= tolerance);
}

TEST_CASE("The implicit kernel attention reference mode runs backward (double)",
          "[backward][features][ika][finite_differences]") {
  using T = double;
  const Index M = 6;
  // The official layout (d x M, one frequency per column) at the official scale 2 pi; frequencies
  // of 0.2 keep the phases near a radian, where the differences' h^2 f''' term stays small.
  const Mat<T> w1 = 0.2 * ref::normal(d, M, 901);
  const Mat<T> w2 = 0.2 * ref::normal(d, M, 902);
  const auto attention = kernattn::make_ika_reference<T>(w1, w2, 3.0, mask::Causal{});
  backward_checks::check_exact_finite_differences(attention, ref::normal(6, d, 903, 0.0, 0.5),
                                                  ref::normal(8, d, 904, 0.0, 0.5),
                                                  ref::normal(8, 2, 905), ref::normal(6, 2, 906));
}

TEST_CASE("Exact backward of the feature form: the frequencies' gradient (double)",
          "[backward][features][parameters]") {
  using kernattn::kernels::IkaEnergy;
  using kernattn::kernels::RandomFeature;
  const auto maps = linear_ref::Maps<double>::make(d, 37);
  const kernattn::ExecutionOptions small{.threads = 2, .query_tile = 4, .key_tile = 3};
  const auto check = [&](const auto& attention, BatchLayout layout, Index hidden_from,
                         std::uint32_t seed) {
    using AttentionT = std::decay_t<decltype(attention)>;
    const Index B = layout.sequences, H = layout.heads, n = 8;
    const Mat<double> Q = ref::normal(B * n, H * d, seed, 0.0, 0.5);
    Mat<double> K = ref::normal(B * n, H * d, seed + 1, 0.0, 0.5);
    const Mat<double> V = ref::normal(B * n, H * 3, seed + 2);
    const Mat<double> W = ref::normal(B * n, H * 3, seed + 3);
    for (Index b = 0; b < B; ++b)  // hidden keys may hold anything
      K.middleRows(b * n + hidden_from, n - hidden_from)
          .setConstant(std::numeric_limits<double>::quiet_NaN());
    Mat<double> out(Q.rows(), V.cols()), statistics;
    attention.compute(Q, K, V, out, statistics, layout);
    Mat<double> dQ(Q.rows(), Q.cols()), dK(K.rows(), K.cols()), dV(V.rows(), V.cols());
    Mat<double> gradient;
    attention.backward(Q, K, V, out, statistics, W, dQ, dK, dV, gradient, layout);
    const auto plain = attention.gradients(Q, K, V, out, statistics, W, layout);
    CHECK(dK.allFinite());  // the hidden keys' gradients are 0, whatever they hold
    CHECK(check::identical(plain.dQ, dQ));
    CHECK(check::identical(plain.dK, dK));
    const Mat<double> omega = attention.kernel().feature_map().frequencies();
    REQUIRE(gradient.rows() == omega.rows());
    REQUIRE(gradient.cols() == omega.cols());
    Mat<double> differences(omega.rows(), omega.cols());
    for (Index i = 0; i < omega.size(); ++i) {
      const auto loss = [&](double delta) {
        Mat<double> moved = omega;
        moved(i) += delta;
        using Kernel = typename AttentionT::Kernel;
        const AttentionT other(Kernel(attention.kernel().feature_map().with_frequencies(moved)),
                               attention.magnitude(), attention.mask(), attention.options());
        return (other(Q, K, V, layout).array() * W.array()).sum();
      };
      differences(i) = (loss(1e-6) - loss(-1e-6)) / 2e-6;
    }
    const double scale = differences.cwiseAbs().maxCoeff();
    CHECK(scale > 1e-3);
    CHECK((gradient - differences).cwiseAbs().maxCoeff() <= 1e-7 * scale);
    AttentionT one = attention;
    one.set_threads(1);
    Mat<double> again;
    one.backward(Q, K, V, out, statistics, W, dQ, dK, dV, again, layout);
    CHECK(check::identical(again, gradient));
  };
  SECTION("RandomFeature<Fourier> under a Boolean mask with an empty row") {
    ref::Visibility visible = ref::random_visibility(8, 8, 0.6, 41);
    visible.row(2).setConstant(false);
    using Fourier = kernattn::features::Fourier<double>;
    check(Attention<RandomFeature<Fourier>, kernattn::magnitude::None, mask::Boolean>(
              RandomFeature<Fourier>(maps.fourier), {}, mask::Boolean(visible), small),
          BatchLayout{}, 8, 42);
  }
  SECTION("RandomFeature<Positive> x Lp(3), causal: through the keys' log-scales too") {
    using Positive = kernattn::features::Positive<double>;
    check(Attention<RandomFeature<Positive>, kernattn::magnitude::Lp<double>, mask::Causal>(
              RandomFeature<Positive>(maps.positive), kernattn::magnitude::Lp<double>(3.0), {},
              small),
          BatchLayout{}, 8, 43);
  }
  SECTION("IkaEnergy<Yaglom> x L1, padding, two sequences and two heads") {
    using Yaglom = kernattn::features::Yaglom<double>;
    check(Attention<IkaEnergy<Yaglom>, kernattn::magnitude::L1<double>, mask::KeyPadding>(
              IkaEnergy<Yaglom>(maps.yaglom), kernattn::magnitude::L1<double>(),
              mask::KeyPadding::from_lengths({6, 6}), small),
          BatchLayout{2, 2}, 6, 44);
  }
}

}  // namespace test_backward_features
