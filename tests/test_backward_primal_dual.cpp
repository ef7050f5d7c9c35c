// The backward pass of Attention-BN (BatchNormalized): the head's backward on the normalised
// queries and keys, then through the keys' mean and variance. Checked against central finite
// differences in double (exact and linear heads, beta 1 and 0.5, padding, two sequences and two
// heads), for padded keys that hold anything, and by an identity: with beta = 1 a common shift
// of every query and key feature changes no normalised input, so the gradients sum to 0. And of
// Attention-SH (ScaledHead): the adjoint of the pooling, under a causal filter through each
// query's partial window too.
#include <cstdint>
#include <limits>

#include "backward_checks.hpp"
#include "catch.hpp"
#include "linear_reference.hpp"
#include "reference.hpp"

namespace test_backward_primal_dual {

namespace {

using backward_checks::Mat;
using kernattn::Attention;
using kernattn::BatchLayout;
using kernattn::BatchNormalized;
using kernattn::LinearAttention;
namespace mask = kernattn::mask;
namespace magnitude = kernattn::magnitude;

constexpr Index d = 3;
constexpr Index dv = 2;

/// dQ, dK, dV of `attention` (double) against central differences of its own forward.
template <class AttentionT>
void check_against_differences(const AttentionT& attention, Index nq, Index nk, BatchLayout layout,
                               std::uint32_t seed) {
  const Index B = layout.sequences;
  const Index H = layout.heads;
  Mat<double> Q = ref::normal(B * nq, H * d, seed, 0.3, 0.7);
  Mat<double> K = ref::normal(B * nk, H * d, seed + 1, -0.2, 0.7);
  Mat<double> V = ref::normal(B * nk, H * dv, seed + 2);
  const Mat<double> weights = ref::normal(B * nq, H * dv, seed + 3);
  const auto loss = [&] { return (attention(Q, K, V, layout).array() * weights.array()).sum(); };
  const kernattn::AttentionGradients<double> g =
      attention.gradients(Q, K, V, attention(Q, K, V, layout), weights, layout);
  backward_checks::check_finite_differences(Q, K, V, g, loss);
}

}  // namespace

TEST_CASE("BatchNormalized::backward matches central finite differences (double)",
          "[backward][primal_dual]") {
  using T = double;
  SECTION("an exact RBF x Lp(3) head, beta 1 and 0.5, two sequences with padding, two heads") {
    using Head = Attention<kernels::Rbf<T>, magnitude::Lp<T>, mask::KeyPadding>;
    for (const double beta : {1.0, 0.5}) {
      CAPTURE(beta);
      const BatchNormalized<Head> attention(
          Head({}, magnitude::Lp<T>(3.0), mask::KeyPadding::from_lengths({5, 3})), beta, 0.1);
      check_against_differences(attention, 4, 5, BatchLayout{2, 2}, 1100);
    }
  }
  SECTION("a linear FAVOR+ head") {
    const auto maps = linear_ref::Maps<T>::make(d, 61);
    const BatchNormalized<LinearAttention<kernattn::features::Positive<T>>> attention(
        LinearAttention<kernattn::features::Positive<T>>(maps.positive));
    check_against_differences(attention, 5, 6, BatchLayout{}, 1110);
  }
}

TEMPLATE_TEST_CASE("BatchNormalized::backward: padded keys have zero gradients and change nothing",
                   "[backward][primal_dual]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  using Head = Attention<kernels::Exponential<T>, magnitude::None, mask::KeyPadding>;
  const BatchNormalized<Head> attention(Head({}, {}, mask::KeyPadding::from_lengths({4})));
  const Mat<T> Q = ref::normal(5, d, 1121).cast<T>();
  const Mat<T> K = ref::normal(6, d, 1122).cast<T>();
  const Mat<T> V = ref::normal(6, dv, 1123).cast<T>();
  const Mat<T> dO = ref::normal(5, dv, 1124).cast<T>();
  const auto g = attention.gradients(Q, K, V, attention(Q, K, V), dO);
  CHECK(g.dK.bottomRows(2).isZero(0));
  CHECK(g.dV.bottomRows(2).isZero(0));
  Mat<T> K2 = K;
  Mat<T> V2 = V;
  K2.bottomRows(2).setConstant(std::numeric_limits<T>::quiet_NaN());
  V2.bottomRows(2).setConstant(std::numeric_limits<T>::infinity());
  const auto again = attention.gradients(Q, K2, V2, attention(Q, K2, V2), dO);
  CHECK(check::identical(again.dQ, g.dQ));
  CHECK(check::identical(again.dK, g.dK));
  CHECK(check::identical(again.dV, g.dV));
  // The gradient of the keys' statistics: shifting every key and query feature by the same
  // constant changes no normalised input (beta = 1), so the gradients sum to 0 per feature.
  const Mat<T> sums = g.dQ.colwise().sum() + g.dK.colwise().sum();
  CHECK(sums.cwiseAbs().maxCoeff() <=
        200 * ref::unit_roundoff<T> * (g.dQ.cwiseAbs().sum() + g.dK.cwiseAbs().sum()));
}

TEST_CASE("ScaledHead::backward matches central finite differences (double)",
          "[backward][primal_dual][scaled_head]") {
  using T = double;
  using Head = Attention<kernels::Rbf<T>, magnitude::Lp<T>, mask::KeyPadding>;
  const Head head({}, magnitude::Lp<T>(3.0), mask::KeyPadding::from_lengths({7, 8}));
  SECTION("an exact head pooled by 3: a ragged last window, one hidden by padding") {
    check_against_differences(kernattn::ScaledHead<Head>(head, 3), 4, 8, BatchLayout{2, 1}, 1130);
  }
  SECTION("a linear FAVOR+ head pooled by 2") {
    const auto maps = linear_ref::Maps<T>::make(d, 67);
    using Linear = LinearAttention<kernattn::features::Positive<T>>;
    check_against_differences(kernattn::ScaledHead<Linear>(Linear(maps.positive), 2), 5, 7,
                              BatchLayout{}, 1140);
  }
  SECTION("an exact causal head pooled by 3: partial windows, two groups of queries") {
    using Causal = Attention<kernels::Rbf<T>, magnitude::Lp<T>, mask::Causal>;
    const kernattn::ScaledHead<Causal> pooled(Causal({}, magnitude::Lp<T>(3.0)), 3);
    check_against_differences(pooled, 70, 70, BatchLayout{}, 1145);
    // The groups run in parallel; their windows' gradients are summed in group order.
    const Mat<T> Q = ref::normal(70, d, 1146), K = ref::normal(70, d, 1147);
    const Mat<T> V = ref::normal(70, dv, 1148), dO = ref::normal(70, dv, 1149);
    kernattn::ScaledHead<Causal> one = pooled;
    kernattn::ScaledHead<Causal> three = pooled;
    one.set_threads(1);
    three.set_threads(3);
    const auto a = one.gradients(Q, K, V, pooled(Q, K, V), dO);
    const auto b = three.gradients(Q, K, V, pooled(Q, K, V), dO);
    CHECK(check::identical(a.dQ, b.dQ));
    CHECK(check::identical(a.dK, b.dK));
    CHECK(check::identical(a.dV, b.dV));
  }
  SECTION("causal && padding pooled by 2, two sequences and two heads") {
    using Masked = Attention<kernels::Rbf<T>, magnitude::Lp<T>,
                             mask::Intersection<mask::Causal, mask::KeyPadding>>;
    const Masked head({}, magnitude::Lp<T>(3.0),
                      mask::Causal{} && mask::KeyPadding::from_lengths({7, 5}));
    check_against_differences(kernattn::ScaledHead<Masked>(head, 2), 6, 8, BatchLayout{2, 2}, 1155);
  }
  SECTION("Attention-SH: heads pooled by 1, 2 and 4") {
    using Unpadded = Attention<kernels::Rbf<T>, magnitude::Lp<T>>;
    check_against_differences(
        kernattn::scaled_heads(Unpadded({}, magnitude::Lp<T>(3.0)), {1, 2, 4}), 5, 9,
        BatchLayout{1, 3}, 1150);
  }
}

TEMPLATE_TEST_CASE("ScaledHead::backward: factor 1 is the head's backward, hidden windows get 0",
                   "[backward][primal_dual][scaled_head]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  using Head = Attention<kernels::Exponential<T>, magnitude::None, mask::KeyPadding>;
  const Head head({}, {}, mask::KeyPadding::from_lengths({7}));
  const Mat<T> Q = ref::normal(5, d, 1161).cast<T>();
  const Mat<T> K = ref::normal(9, d, 1162).cast<T>();
  const Mat<T> V = ref::normal(9, dv, 1163).cast<T>();
  const Mat<T> dO = ref::normal(5, dv, 1164).cast<T>();
  const kernattn::ScaledHead<Head> unpooled(head, 1);
  const auto g = unpooled.gradients(Q, K, V, unpooled(Q, K, V), dO);
  Mat<T> out(5, dv);
  Mat<T> statistics;
  head.compute(Q, K, V, out, statistics);
  const auto own = head.gradients(Q, K, V, out, statistics, dO);
  CHECK(check::identical(g.dQ, own.dQ));
  CHECK(check::identical(g.dK, own.dK));
  CHECK(check::identical(g.dV, own.dV));
  // Pooled by 3: windows [0, 3), [3, 6), [6, 9); the last holds padded tokens 7 and 8, so token 6
  // gets no gradient either; NaN in the padded tokens changes nothing.
  const kernattn::ScaledHead<Head> pooled(head, 3);
  const auto p = pooled.gradients(Q, K, V, pooled(Q, K, V), dO);
  CHECK(p.dK.bottomRows(3).isZero(0));
  CHECK(p.dV.bottomRows(3).isZero(0));
  CHECK(check::identical(p.dK.row(0), p.dK.row(2)));
  Mat<T> K2 = K;
  K2.bottomRows(2).setConstant(std::numeric_limits<T>::quiet_NaN());
  const auto again = pooled.gradients(Q, K2, V, pooled(Q, K2, V), dO);
  CHECK(check::identical(again.dQ, p.dQ));
  CHECK(check::identical(again.dK, p.dK));
}

}  // namespace test_backward_primal_dual
