// The linear engine's backward pass (engine/linear_backward.hpp) for every feature map (Fourier,
// Yaglom, Positive), magnitude and filter it takes: against the naive backward of
// support/gradient_reference.hpp on the weights phi(q).phi(k) mu(k) written out in double, against
// central finite differences of the library's own forward (double, floored denominators too),
// bit for bit across thread counts, and blind to what padding hides.
#include <cmath>
#include <cstdint>
#include <limits>

#include "backward_checks.hpp"
#include "catch.hpp"
#include "feature_gradient_reference.hpp"
#include "gradient_reference.hpp"
#include "invalid_argument.hpp"
#include "linear_reference.hpp"
#include "reference.hpp"

namespace test_backward_linear {

namespace {

using backward_checks::Mat;
using kernattn::BatchLayout;
using kernattn::LinearAttention;
using kernattn::LinearOptions;
using linear_ref::Kind;
using linear_ref::NaiveMap;
using ref::MatrixXd;
using ref::Row;
namespace mask = kernattn::mask;
namespace magnitude = kernattn::magnitude;

constexpr Index d = 5;
constexpr Index dv = 3;

/// The tilings of the backward checks: the defaults, and tiles and chunks that leave partial
/// ones everywhere.
const std::vector<LinearOptions> tilings = {
    {.threads = 1},
    {.threads = 2, .query_tile = 5, .key_tile = 4, .causal_chunk = 3},
};

/// The row statistics and gradients of `attention` (a LinearAttention) on a random problem
/// against the naive backward of the same weights, for every tiling, and the same bits on 1 and
/// 3 threads.
template <class T, class Attention>
void check_linear_backward(const Attention& attention, const NaiveMap& naive,
                           const gref::MagnitudeModel& mu, const ref::Visibility& visible,
                           std::uint32_t seed) {
  const Index nq = visible.rows();
  const Index nk = visible.cols();
  const ref::Problem p = ref::random_problem<T>(nq, nk, d, dv, seed);
  const MatrixXd dOut = ref::normal(nq, dv, seed + 7).cast<T>().template cast<double>();
  const gref::Backward expected =
      gref::backward(p.Q, p.K, p.V, dOut, feature_gradient_ref::feature_pair(naive), mu, visible,
                     ref::unit_roundoff<T>);
  // The statistics leave out the query's own log-scale (Positive), as the exact engine's do.
  const gref::Backward expected_statistics =
      gref::backward(p.Q, p.K, p.V, dOut, feature_gradient_ref::feature_pair(naive, true), mu,
                     visible, ref::unit_roundoff<T>);
  const Mat<T> Q = p.Q.cast<T>();
  const Mat<T> K = p.K.cast<T>();
  const Mat<T> V = p.V.cast<T>();
  const Mat<T> dO = dOut.cast<T>();
  for (const LinearOptions& options : tilings) {
    CAPTURE(options.query_tile, options.key_tile, options.causal_chunk);
    const Attention reconfigured(attention.feature_map(), attention.magnitude(), attention.mask(),
                                 options);
    Mat<T> out(nq, dv);
    Mat<T> statistics;
    reconfigured.compute(Q, K, V, out, statistics);
    CHECK(check::identical(out, reconfigured(Q, K, V)));
    backward_checks::require_within(statistics, expected_statistics.statistics,
                                    expected_statistics.statistics_bound, "statistics");
    const kernattn::AttentionGradients<T> gradients = reconfigured.gradients(Q, K, V, out, dO);
    backward_checks::require_within(gradients.dQ, expected.dQ, expected.dQ_bound, "dQ");
    backward_checks::require_within(gradients.dK, expected.dK, expected.dK_bound, "dK");
    backward_checks::require_within(gradients.dV, expected.dV, expected.dV_bound, "dV");
    for (const int threads : {1, 3}) {
      Attention other = reconfigured;
      other.set_threads(threads);
      const kernattn::AttentionGradients<T> again = other.gradients(Q, K, V, out, dO);
      CHECK(check::identical(again.dQ, gradients.dQ));
      CHECK(check::identical(again.dK, gradients.dK));
      CHECK(check::identical(again.dV, gradients.dV));
    }
  }
}

/// Runs `check(map, naive twin)` for the three maps of linear_reference.hpp.
template <class T, class Check>
void for_each_map(Check&& check) {
  const auto maps = linear_ref::Maps<T>::make(d, 17);
  {
    INFO("Fourier");
    check(maps.fourier, maps.naive_fourier);
  }
  {
    INFO("Yaglom");
    check(maps.yaglom, maps.naive_yaglom);
  }
  {
    INFO("Positive");
    check(maps.positive, maps.naive_positive);
  }
}

/// Central differences of sum(dOut o attention(Q, K, V)) in every entry of `x`.
template <class Loss>
MatrixXd finite_differences(const MatrixXd& x, const Loss& loss) {
  const double h = 1e-6;
  MatrixXd gradient(x.rows(), x.cols());
  for (Index i = 0; i < x.size(); ++i) {
    MatrixXd up = x;
    MatrixXd down = x;
    up(i) += h;
    down(i) -= h;
    gradient(i) = (loss(up) - loss(down)) / (2 * h);
  }
  return gradient;
}

/// dQ, dK and dV of `attention` (double) against central differences of its own forward: the
/// difference quotient's error is O(h^2 f''') + O(u f / h) ~ 1e-9 of the gradients' scale.
template <class Attention>
void check_finite_differences(const Attention& attention, Index nq, Index nk, std::uint32_t seed,
                              BatchLayout layout = {}) {
  const ref::Problem p =
      ref::random_problem<double>(nq, nk, d * layout.heads, dv * layout.heads, seed);
  const MatrixXd dOut = ref::normal(nq, dv * layout.heads, seed + 3);
  const MatrixXd out = attention(p.Q, p.K, p.V, layout);
  const kernattn::AttentionGradients<double> g =
      attention.gradients(p.Q, p.K, p.V, out, dOut, layout);
  const auto loss = [&](const MatrixXd& q, const MatrixXd& k, const MatrixXd& v) {
    return attention(q, k, v, layout).cwiseProduct(dOut).sum();
  };
  const MatrixXd fq = finite_differences(p.Q, [&](const MatrixXd& x) { return loss(x, p.K, p.V); });
  const MatrixXd fk = finite_differences(p.K, [&](const MatrixXd& x) { return loss(p.Q, x, p.V); });
  const MatrixXd fv = finite_differences(p.V, [&](const MatrixXd& x) { return loss(p.Q, p.K, x); });
  const double scale = std::max(
      {fq.cwiseAbs().maxCoeff(), fk.cwiseAbs().maxCoeff(), fv.cwiseAbs().maxCoeff(), 1e-3});
  CHECK((g.dQ - fq).cwiseAbs().maxCoeff() <= 1e-7 * scale);
  CHECK((g.dK - fk).cwiseAbs().maxCoeff() <= 1e-7 * scale);
  CHECK((g.dV - fv).cwiseAbs().maxCoeff() <= 1e-7 * scale);
}

}  // namespace

TEMPLATE_TEST_CASE("LinearAttention::backward matches the naive backward of its weights",
                   "[backward][linear]", float, double) {
  using T = TestType;
  const double gamma = ref::default_gamma(d);
  const Index nq = 11;
  const Index nk = 9;
  for_each_map<T>([&](const auto& map, const NaiveMap& naive) {
    using Map = std::decay_t<decltype(map)>;
    {
      INFO("no mask, no magnitude");
      check_linear_backward<T>(LinearAttention<Map>(map), naive, gref::unit_magnitude(),
                               ref::all_visible(nq, nk), 101);
    }
    {
      INFO("causal, Lp(3)");
      check_linear_backward<T>(
          LinearAttention<Map, magnitude::Lp<T>, mask::Causal>(map, magnitude::Lp<T>(T(3))), naive,
          gref::lp(3, gamma, 2), ref::causal(nq, nk), 102);
      check_linear_backward<T>(
          LinearAttention<Map, magnitude::Lp<T>, mask::Causal>(map, magnitude::Lp<T>(T(3))), naive,
          gref::lp(3, gamma, 2), ref::causal(nk, nq + 3), 103);
    }
    {
      INFO("padding and causal && padding, L1");
      const std::vector<Index> lengths = {6};
      ref::Visibility padded = ref::all_visible(nq, nk);
      padded.rightCols(nk - 6).setConstant(false);
      check_linear_backward<T>(
          LinearAttention<Map, magnitude::L1<T>, mask::KeyPadding>(
              map, magnitude::L1<T>(), mask::KeyPadding::from_lengths(lengths)),
          naive, gref::lp(1, gamma, 2), padded, 104);
      const ref::Visibility both = padded && ref::causal(nq, nk);
      check_linear_backward<T>(
          LinearAttention<Map, magnitude::L1<T>,
                          mask::Intersection<mask::Causal, mask::KeyPadding>>(
              map, magnitude::L1<T>(), mask::Causal{} && mask::KeyPadding::from_lengths(lengths)),
          naive, gref::lp(1, gamma, 2), both, 105);
    }
  });
}

TEST_CASE("LinearAttention::backward matches finite differences in double", "[backward][linear]") {
  const auto maps = linear_ref::Maps<double>::make(d, 23);
  const LinearOptions small{.threads = 1, .query_tile = 4, .key_tile = 3, .causal_chunk = 3};
  SECTION("every map, causal and not, with Lp(3)") {
    check_finite_differences(
        LinearAttention(maps.positive, magnitude::Lp<double>(3.0), mask::Causal{}, small), 10, 8,
        31);
    check_finite_differences(
        LinearAttention(maps.fourier, magnitude::Lp<double>(3.0), mask::None{}, small), 7, 9, 32);
    check_finite_differences(
        LinearAttention(maps.yaglom, magnitude::Lp<double>(1.5), mask::Causal{}, small), 6, 11, 33);
  }
  SECTION("Performer's epsilon, both sides of its threshold") {
    using Positive = kernattn::features::Positive<double>;
    for (const double epsilon : {1e-4, 0.5}) {
      CAPTURE(epsilon);
      const Positive map(
          Positive::draw(6, d, kernattn::random::RandomStream{5, 0}, true, 1.2, epsilon));
      check_finite_differences(LinearAttention(map, magnitude::None{}, mask::Causal{}, small), 8, 8,
                               34);
    }
  }
  SECTION("denominators raised to the floor (tau = 0.9 holds for most rows)") {
    const LinearOptions floored{
        .threads = 1, .query_tile = 4, .key_tile = 3, .causal_chunk = 3, .denominator_floor = 0.9};
    check_finite_differences(
        LinearAttention(maps.fourier, magnitude::Lp<double>(3.0), mask::Causal{}, floored), 9, 9,
        35);
    check_finite_differences(LinearAttention(maps.yaglom, magnitude::None{}, mask::None{}, floored),
                             9, 7, 36);
  }
  SECTION("a batch of two sequences and three heads, with padding") {
    check_finite_differences(
        LinearAttention(maps.positive, magnitude::Lp<double>(3.0),
                        mask::Causal{} && mask::KeyPadding::from_lengths({5, 8}), small),
        2 * 6, 2 * 8, 37, BatchLayout{2, 3});
  }
}

TEMPLATE_TEST_CASE(
    "LinearAttention::backward ignores what padding hides and rejects what it "
    "cannot differentiate",
    "[backward][linear]", float, double) {
  using T = TestType;
  const auto maps = linear_ref::Maps<T>::make(d, 41);
  const ref::Problem p = ref::random_problem<T>(8, 10, d, dv, 43);
  const Mat<T> Q = p.Q.cast<T>();
  const Mat<T> K = p.K.cast<T>();
  const Mat<T> V = p.V.cast<T>();
  const Mat<T> dO = ref::normal(8, dv, 44).cast<T>();
  const LinearAttention attention(maps.positive, magnitude::Lp<T>(T(3)),
                                  mask::Causal{} && mask::KeyPadding::from_lengths({7}));
  const Mat<T> out = attention(Q, K, V);
  const auto g = attention.gradients(Q, K, V, out, dO);
  CHECK(g.dK.bottomRows(3).isZero(0));
  CHECK(g.dV.bottomRows(3).isZero(0));
  SECTION("hidden keys and values may be anything") {
    Mat<T> K2 = K;
    Mat<T> V2 = V;
    K2.bottomRows(3).setConstant(std::numeric_limits<T>::quiet_NaN());
    V2.bottomRows(3).setConstant(std::numeric_limits<T>::infinity());
    const auto again = attention.gradients(Q, K2, V2, attention(Q, K2, V2), dO);
    CHECK(check::identical(again.dQ, g.dQ));
    CHECK(check::identical(again.dK, g.dK));
    CHECK(check::identical(again.dV, g.dV));
  }
  SECTION("a non-finite visible key, query or output gradient throws, naming it") {
    Mat<T> K2 = K;
    K2(2, 1) = std::numeric_limits<T>::quiet_NaN();
    REQUIRE_THROWS_WITH(attention.gradients(Q, K2, V, out, dO),
                        Catch::Contains("K (key 2)") && Catch::Contains("finite"));
    Mat<T> Q2 = Q;
    Q2(0, 0) = std::numeric_limits<T>::infinity();
    REQUIRE_THROWS_WITH(attention.gradients(Q2, K, V, out, dO), Catch::Contains("Q must be"));
    Mat<T> dO2 = dO;
    dO2(1, 1) = std::numeric_limits<T>::quiet_NaN();
    REQUIRE_THROWS_WITH(attention.gradients(Q, K, V, out, dO2), Catch::Contains("dOut"));
  }
  SECTION("shapes are checked, naming the argument") {
    Mat<T> wrong(3, 3);
    Mat<T> dK(K.rows(), K.cols());
    Mat<T> dV(V.rows(), V.cols());
    REQUIRE_THROWS_WITH(attention.backward(Q, K, V, out, dO, wrong, dK, dV),
                        Catch::Contains("dQ is 3x3"));
    REQUIRE_THROWS_WITH(attention.gradients(Q, K, V, out, wrong), Catch::Contains("dOut"));
  }
  SECTION("gradients written over their own inputs go through temporaries") {
    Mat<T> q = Q;
    Mat<T> k = K;
    Mat<T> v = V;
    attention.backward(q, k, v, out, dO, q, k, v);
    CHECK(check::identical(q, g.dQ));
    CHECK(check::identical(k, g.dK));
    CHECK(check::identical(v, g.dV));
  }
  SECTION("row statistics: NaN where a row sees a non-finite key, the same bits otherwise") {
    Mat<T> statistics;
    Mat<T> written(out.rows(), out.cols());
    attention.compute(Q, K, V, written, statistics);
    Mat<T> K2 = K;
    K2.row(4).setConstant(std::numeric_limits<T>::quiet_NaN());
    Mat<T> poisoned;
    attention.compute(Q, K2, V, written, poisoned);
    // Causal, aligned bottom-right: query i sees keys up to i + N_k - N_q = i + 2.
    for (Index i = 0; i < Q.rows(); ++i) {
      CAPTURE(i);
      if (i + 2 >= 4)
        CHECK(std::isnan(poisoned(i, 0)));
      else
        CHECK(poisoned(i, 0) == statistics(i, 0));
    }
  }
  SECTION("row statistics beyond the largest T throw, naming the row") {
    // log mu(k) = gamma |k|^2 with gamma = 1e5 puts every denominator near e^(1e4 |k|^2 / 4).
    const LinearAttention huge(maps.positive, magnitude::Lp<T>(T(2), T(1e5)));
    Mat<T> statistics;
    Mat<T> written(out.rows(), out.cols());
    REQUIRE_THROWS_WITH(huge.compute(Q, K, V, written, statistics),
                        Catch::Contains("LinearAttention: the denominator of query") &&
                            Catch::Contains("overflows"));
  }
  SECTION("no queries, keys or value columns: zero gradients") {
    const auto empty = attention.gradients(Q.topRows(0), K, V, out.topRows(0), dO.topRows(0));
    CHECK(empty.dK.isZero(0));
    CHECK(empty.dV.isZero(0));
    const LinearAttention unmasked(maps.fourier);
    const auto no_values = unmasked.gradients(Q, K, V.leftCols(0), out.leftCols(0), dO.leftCols(0));
    CHECK(no_values.dQ.isZero(0));
    CHECK(no_values.dK.isZero(0));
  }
}

TEST_CASE("LinearAttention::backward: the frequencies' gradient matches central differences",
          "[backward][linear][parameters]") {
  const auto maps = linear_ref::Maps<double>::make(d, 57);
  const LinearOptions small{.threads = 2, .query_tile = 4, .key_tile = 3, .causal_chunk = 3};
  const auto check = [&](const auto& attention, Index nq, Index nk, BatchLayout layout,
                         std::uint32_t seed, Index hidden_from) {
    using Attention = std::decay_t<decltype(attention)>;
    const Index B = layout.sequences;
    const Index H = layout.heads;
    const ref::Problem p = ref::random_problem<double>(B * nq, B * nk, H * d, H * dv, seed);
    MatrixXd K = p.K;
    // What padding hides may be anything: it must not reach the gradient.
    for (Index b = 0; b < B; ++b)
      K.middleRows(b * nk + hidden_from, nk - hidden_from)
          .setConstant(std::numeric_limits<double>::quiet_NaN());
    const MatrixXd dOut = ref::normal(B * nq, H * dv, seed + 1);
    const MatrixXd out = attention(p.Q, K, p.V, layout);
    MatrixXd dQ(p.Q.rows(), p.Q.cols()), dK(K.rows(), K.cols()), dV(p.V.rows(), p.V.cols());
    MatrixXd gradient;
    attention.backward(p.Q, K, p.V, out, dOut, dQ, dK, dV, gradient, layout);
    const MatrixXd omega = attention.feature_map().frequencies();
    REQUIRE(gradient.rows() == omega.rows());
    REQUIRE(gradient.cols() == omega.cols());
    const auto plain = attention.gradients(p.Q, K, p.V, out, dOut, layout);
    CHECK(check::identical(plain.dQ, dQ));
    CHECK(check::identical(plain.dK, dK));
    const auto loss = [&](const MatrixXd& frequencies) {
      const Attention moved(attention.feature_map().with_frequencies(frequencies),
                            attention.magnitude(), attention.mask(), attention.options());
      return moved(p.Q, K, p.V, layout).cwiseProduct(dOut).sum();
    };
    const MatrixXd differences = finite_differences(omega, loss);
    const double scale = differences.cwiseAbs().maxCoeff();
    CHECK(scale > 1e-3);  // the check is informative
    CHECK((gradient - differences).cwiseAbs().maxCoeff() <= 1e-7 * scale);
    CHECK(gradient.allFinite());
    Attention one = attention;
    one.set_threads(1);
    MatrixXd again;
    one.backward(p.Q, K, p.V, out, dOut, dQ, dK, dV, again, layout);
    CHECK(check::identical(again, gradient));
  };
  SECTION("Fourier, no filter") {
    check(LinearAttention(maps.fourier, magnitude::None{}, mask::None{}, small), 7, 9,
          BatchLayout{}, 61, 9);
  }
  SECTION("Yaglom x Lp(3), causal") {
    check(LinearAttention(maps.yaglom, magnitude::Lp<double>(3.0), mask::Causal{}, small), 7, 9,
          BatchLayout{}, 62, 9);
  }
  SECTION("Positive x L1, padding, two sequences and two heads") {
    check(LinearAttention(maps.positive, magnitude::L1<double>(),
                          mask::KeyPadding::from_lengths({6, 6}), small),
          5, 8, BatchLayout{2, 2}, 63, 6);
  }
  SECTION("Positive with Performer's epsilon, causal && padding") {
    using Positive = kernattn::features::Positive<double>;
    const Positive with_epsilon(maps.positive.frequencies(), std::nullopt,
                                Positive::performer_epsilon);
    check(LinearAttention(with_epsilon, magnitude::None{},
                          mask::Causal{} && mask::KeyPadding::from_lengths({7}), small),
          9, 9, BatchLayout{}, 64, 7);
  }
}

TEST_CASE("LinearAttention: the gradient reaches an implicit sampler's generator network",
          "[backward][linear][parameters]") {
  // Fourier features of an implicit sampler, omega = g(epsilon): d(loss)/d(theta) of the
  // generator's weights and biases, through the frequencies' gradient, against central
  // differences of the whole forward with the noise (the stream) held fixed.
  namespace spectral = kernattn::spectral;
  using Generator = spectral::MlpGenerator<double>;
  using Sampler = spectral::Implicit<Generator>;
  const auto layer = [](Index in, Index out, std::uint32_t seed) {
    return Generator::Layer{0.6 * ref::normal(in, out, seed), 0.3 * ref::normal(out, 1, seed + 1)};
  };
  const Sampler sampler(Generator({layer(3, 6, 91), layer(6, d, 93)}));
  const kernattn::random::RandomStream stream{19, 2};
  constexpr Index M = 12;
  const auto attention_of = [&](const Sampler& s) {
    return LinearAttention(kernattn::features::Fourier<double>::draw(s, M, d, stream),
                           magnitude::Lp<double>(3.0), mask::Causal{});
  };
  const ref::Problem p = ref::random_problem<double>(7, 7, d, dv, 95);
  const MatrixXd dOut = ref::normal(7, dv, 96);
  const auto attention = attention_of(sampler);
  const MatrixXd out = attention(p.Q, p.K, p.V);
  MatrixXd dQ(7, d), dK(7, d), dV(7, dv), d_frequencies;
  attention.backward(p.Q, p.K, p.V, out, dOut, dQ, dK, dV, d_frequencies);
  const Eigen::VectorXd gradient =
      spectral::frequency_parameter_gradient(sampler, d, stream, d_frequencies);
  const Eigen::VectorXd theta = sampler.parameters();
  REQUIRE(gradient.size() == theta.size());
  const MatrixXd differences = finite_differences(theta, [&](const MatrixXd& values) {
    return attention_of(sampler.with_parameters(values))(p.Q, p.K, p.V).cwiseProduct(dOut).sum();
  });
  const double scale = differences.cwiseAbs().maxCoeff();
  CHECK(scale > 1e-3);
  CHECK((gradient - differences).cwiseAbs().maxCoeff() <= 1e-7 * scale);
}

}  // namespace test_backward_linear
