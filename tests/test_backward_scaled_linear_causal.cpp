// The backward pass of ScaledHead<LinearAttention> under a causal filter
// (heads/pooled_causal_linear.hpp): the windows through the prefix state, each query's partial
// window directly. Against central differences of its own forward in double, float against
// double, bit for bit on 1 and 2 threads, and blind to what padding hides. Small chunks and key
// tiles put windows across chunk boundaries; N_q = N_k makes the first queries see their partial
// window alone.
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "backward_checks.hpp"
#include "catch.hpp"
#include "reference.hpp"

namespace test_backward_scaled_linear_causal {

namespace {

using backward_checks::Mat;
using kernattn::BatchLayout;
using kernattn::LinearAttention;
using kernattn::LinearOptions;
using kernattn::ScaledHead;
using ref::MatrixXd;
namespace features = kernattn::features;
namespace mask = kernattn::mask;
namespace magnitude = kernattn::magnitude;

constexpr Index d = 3;
constexpr Index dv = 2;
constexpr Index M = 8;  // features

/// Chunks of 3 queries and key tiles of 2 windows, and the defaults (one chunk).
const std::vector<LinearOptions> tilings = {
    {.threads = 1, .key_tile = 2, .causal_chunk = 3},
    {.threads = 1},
};

using CausalPadding = mask::Intersection<mask::Causal, mask::KeyPadding>;

/// A FAVOR+ map in T with the frequencies and input scale of the float one, so that the float and
/// double heads compute the same function.
template <class T>
features::Positive<T> positive_map() {
  const auto drawn = features::Positive<float>::draw(M, d, kernattn::random::RandomStream{71, 0});
  return features::Positive<T>(drawn.frequencies().template cast<T>(), T(drawn.input_scale()));
}

/// `ScaledHead<LinearAttention<Positive<T>, Magnitude, Mask>>` pooled by `factor`.
template <class T, class Magnitude, class Mask>
auto pooled_head(Magnitude mu, Mask filter, Index factor, const LinearOptions& options) {
  using Linear = LinearAttention<features::Positive<T>, Magnitude, Mask>;
  return ScaledHead<Linear>(Linear(positive_map<T>(), std::move(mu), std::move(filter), options),
                            factor);
}

struct Problem {
  MatrixXd Q, K, V, dOut;
};

/// Random inputs of B sequences and H heads, exact in float.
Problem problem(Index nq, Index nk, BatchLayout layout, std::uint32_t seed) {
  const Index B = layout.sequences;
  const Index H = layout.heads;
  const auto in_float = [](const MatrixXd& x) { return x.cast<float>().cast<double>().eval(); };
  return {in_float(ref::normal(B * nq, H * d, seed, 0.2, 0.6)),
          in_float(ref::normal(B * nk, H * d, seed + 1, -0.1, 0.6)),
          in_float(ref::normal(B * nk, H * dv, seed + 2)),
          in_float(ref::normal(B * nq, H * dv, seed + 3))};
}

/// dQ, dK and dV of `head` (double) against the central difference of <dOut, head(Q, K, V)> in a
/// random direction of each: the quotient errs by about h^2 |f'''| + u |f| / h ~ 1e-10, far
/// below 1e-6 of the sum of |gradient x direction|.
template <class Head>
void check_directional_differences(const Head& head, const Problem& p, BatchLayout layout,
                                   std::uint32_t seed) {
  const kernattn::AttentionGradients<double> g =
      head.gradients(p.Q, p.K, p.V, head(p.Q, p.K, p.V, layout), p.dOut, layout);
  const auto loss = [&](const MatrixXd& q, const MatrixXd& k, const MatrixXd& v) {
    return head(q, k, v, layout).cwiseProduct(p.dOut).sum();
  };
  const double h = 1e-5;
  const auto check = [&](const char* name, const MatrixXd& x, const MatrixXd& gradient,
                         std::uint32_t direction_seed, const auto& loss_at) {
    INFO(name);
    const MatrixXd direction = ref::normal(x.rows(), x.cols(), direction_seed);
    const double difference = (loss_at(x + h * direction) - loss_at(x - h * direction)) / (2 * h);
    const double scale = gradient.cwiseProduct(direction).cwiseAbs().sum();
    CHECK(scale > 1e-3);  // the check is informative
    CHECK(std::abs(difference - gradient.cwiseProduct(direction).sum()) <= 1e-6 * scale);
  };
  check("dQ", p.Q, g.dQ, seed, [&](const MatrixXd& x) { return loss(x, p.K, p.V); });
  check("dK", p.K, g.dK, seed + 1, [&](const MatrixXd& x) { return loss(p.Q, x, p.V); });
  check("dV", p.V, g.dV, seed + 2, [&](const MatrixXd& x) { return loss(p.Q, p.K, x); });
}

/// max |a - b| / max |b|.
template <class A>
double relative_difference(const Eigen::MatrixBase<A>& a, const MatrixXd& b) {
  return (a.template cast<double>() - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff();
}

/// The float head's gradients within 200 u (float's unit roundoff) of the double head's on the
/// same inputs, relative to the largest double gradient of each.
template <class FloatHead, class DoubleHead>
void check_float_against_double(const FloatHead& single, const DoubleHead& twice, const Problem& p,
                                BatchLayout layout) {
  const Mat<float> Q = p.Q.cast<float>(), K = p.K.cast<float>(), V = p.V.cast<float>();
  const Mat<float> dOut = p.dOut.cast<float>();
  const auto f = single.gradients(Q, K, V, single(Q, K, V, layout), dOut, layout);
  const auto g = twice.gradients(p.Q, p.K, p.V, twice(p.Q, p.K, p.V, layout), p.dOut, layout);
  const double bound = 200 * ref::unit_roundoff<float>;
  CHECK(relative_difference(f.dQ, g.dQ) <= bound);
  CHECK(relative_difference(f.dK, g.dK) <= bound);
  CHECK(relative_difference(f.dV, g.dV) <= bound);
}

}  // namespace

TEST_CASE("ScaledHead<LinearAttention>::backward, causal: central differences (double)",
          "[backward][primal_dual][scaled_head][linear]") {
  const magnitude::Lp<double> lp(3.0);
  for (const LinearOptions& options : tilings)
    for (const Index factor : {2, 3}) {
      CAPTURE(options.causal_chunk, factor);
      {
        INFO("causal, N_q = N_k = 11: the first queries see their partial window alone");
        const BatchLayout one{};
        check_directional_differences(
            pooled_head<double>(magnitude::None{}, mask::Causal{}, factor, options),
            problem(11, 11, one, 1200), one, 1210);
        check_directional_differences(pooled_head<double>(lp, mask::Causal{}, factor, options),
                                      problem(11, 11, one, 1220), one, 1230);
      }
      {
        INFO("causal, Lp(3), 7 queries over 11 tokens");
        check_directional_differences(pooled_head<double>(lp, mask::Causal{}, factor, options),
                                      problem(7, 11, {}, 1240), {}, 1250);
      }
      {
        INFO("causal && padding {8, 10}, two sequences and two heads");
        const BatchLayout layout{2, 2};
        const CausalPadding filter = mask::Causal{} && mask::KeyPadding::from_lengths({8, 10});
        check_directional_differences(
            pooled_head<double>(magnitude::None{}, filter, factor, options),
            problem(11, 11, layout, 1260), layout, 1270);
        check_directional_differences(pooled_head<double>(lp, filter, factor, options),
                                      problem(11, 11, layout, 1280), layout, 1290);
      }
    }
  SECTION("a signed map, denominators raised to the floor (tau = 0.9 holds for most rows)") {
    const LinearOptions floored{
        .threads = 1, .key_tile = 2, .causal_chunk = 3, .denominator_floor = 0.9};
    const auto fourier = features::Fourier<double>::draw(
        kernattn::spectral::Gaussian<double>(2.0), M, d, kernattn::random::RandomStream{73, 0});
    using Linear = LinearAttention<features::Fourier<double>, magnitude::Lp<double>, mask::Causal>;
    check_directional_differences(ScaledHead<Linear>(Linear(fourier, lp, {}, floored), 3),
                                  problem(10, 10, {}, 1300), {}, 1310);
  }
}

TEST_CASE("ScaledHead<LinearAttention>::backward, causal: float against double",
          "[backward][primal_dual][scaled_head][linear]") {
  const BatchLayout layout{2, 2};
  const CausalPadding filter = mask::Causal{} && mask::KeyPadding::from_lengths({8, 10});
  const Problem p = problem(11, 11, layout, 1320);
  const LinearOptions& options = tilings.front();
  for (const Index factor : {2, 3}) {
    CAPTURE(factor);
    check_float_against_double(
        pooled_head<float>(magnitude::Lp<float>(3.0f), filter, factor, options),
        pooled_head<double>(magnitude::Lp<double>(3.0), filter, factor, options), p, layout);
  }
}

TEST_CASE("ScaledHead<LinearAttention>::backward, causal: threads, padding, non-finite data",
          "[backward][primal_dual][scaled_head][linear]") {
  using T = float;
  const BatchLayout layout{2, 2};
  const Index n = 11;
  const std::vector<Index> lengths = {8, 10};
  auto head =
      pooled_head<T>(magnitude::Lp<T>(T(3)),
                     mask::Causal{} && mask::KeyPadding::from_lengths(lengths), 3, tilings.front());
  const Problem p = problem(n, n, layout, 1330);
  const Mat<T> Q = p.Q.cast<T>(), K = p.K.cast<T>(), V = p.V.cast<T>(), dOut = p.dOut.cast<T>();
  const Mat<T> out = head(Q, K, V, layout);
  head.set_threads(1);
  const auto g = head.gradients(Q, K, V, out, dOut, layout);
  SECTION("1 and 2 threads give the same bits") {
    head.set_threads(2);
    const auto again = head.gradients(Q, K, V, out, dOut, layout);
    CHECK(check::identical(again.dQ, g.dQ));
    CHECK(check::identical(again.dK, g.dK));
    CHECK(check::identical(again.dV, g.dV));
  }
  SECTION("padded tokens get zero gradients, and NaN or infinity there changes no bit") {
    Mat<T> K2 = K;
    Mat<T> V2 = V;
    for (Index b = 0; b < 2; ++b) {
      const Index padded = n - lengths[std::size_t(b)];
      CHECK(g.dK.middleRows(b * n + lengths[std::size_t(b)], padded).isZero(0));
      CHECK(g.dV.middleRows(b * n + lengths[std::size_t(b)], padded).isZero(0));
      K2.middleRows(b * n + lengths[std::size_t(b)], padded)
          .setConstant(std::numeric_limits<T>::quiet_NaN());
      V2.middleRows(b * n + lengths[std::size_t(b)], padded)
          .setConstant(std::numeric_limits<T>::infinity());
    }
    const Mat<T> out2 = head(Q, K2, V2, layout);
    CHECK(check::identical(out2, out));
    const auto again = head.gradients(Q, K2, V2, out2, dOut, layout);
    CHECK(check::identical(again.dQ, g.dQ));
    CHECK(check::identical(again.dK, g.dK));
    CHECK(check::identical(again.dV, g.dV));
  }
  SECTION("a non-finite token that a query sees throws, naming it") {
    Mat<T> K2 = K;
    K2(n + 9, 1) = std::numeric_limits<T>::quiet_NaN();  // seen only through partial windows
    REQUIRE_THROWS_WITH(head.gradients(Q, K2, V, out, dOut, layout),
                        Catch::Contains("ScaledHead::backward: sequence 1, head 0: K (key 9)"));
  }
}

}  // namespace test_backward_scaled_linear_causal
