// The backward passes of grouped-query attention and of packed batches.
// `GroupedQuery::backward`: the gradients of attention over K and V repeated per query head (the
// PyTorch way, `repeat_interleave`), with the gradients of the repeated columns summed back onto
// their key/value head; central finite differences in double; a head without row statistics
// (linear attention); bit-identical for every thread count; an output gradient that overlaps an
// input; bad shapes.
// `attend_packed_backward`: each sequence's gradients are those of the sequence run alone (a
// sequence without queries gives its keys zero gradients), on every thread count; central finite
// differences; bad offsets and shapes.

#include <algorithm>
#include <type_traits>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "linear_reference.hpp"
#include "reference.hpp"

namespace test_backward_grouped_packed {

namespace {

using kernattn::AttentionGradients;
using kernattn::BatchLayout;
using kernattn::GroupedQuery;
using kernattn::Matrix;

constexpr Index B = 2, nq = 7, nk = 9, d = 3, dv = 2, Hq = 6;

/// K or V (`width` columns per head) repeated from `key_heads` to Hq heads, as
/// `repeat_interleave(Hq / key_heads)` does.
template <class T>
Matrix<T> repeated(const Matrix<T>& m, Index key_heads, Index width) {
  Matrix<T> result(m.rows(), Hq * width);
  const Index g = Hq / key_heads;
  for (Index h = 0; h < Hq; ++h)
    result.middleCols(h * width, width) = m.middleCols((h / g) * width, width);
  return result;
}

/// The repeated columns of a gradient summed back onto their `key_heads` heads, in head order.
template <class T>
Matrix<T> summed_per_group(const Matrix<T>& gradient, Index key_heads, Index width) {
  Matrix<T> result = Matrix<T>::Zero(gradient.rows(), key_heads * width);
  const Index g = Hq / key_heads;
  for (Index h = 0; h < Hq; ++h)
    result.middleCols((h / g) * width, width) += gradient.middleCols(h * width, width);
  return result;
}

/// Requires |actual - expected| <= tolerance * max|expected| entry by entry.
template <class T>
void require_close(const Matrix<T>& actual, const Matrix<T>& expected, double tolerance) {
  REQUIRE(actual.rows() == expected.rows());
  REQUIRE(actual.cols() == expected.cols());
  const double scale = std::max(1.0, double(expected.cwiseAbs().maxCoeff()));
  CHECK(double((actual - expected).cwiseAbs().maxCoeff()) <= tolerance * scale);
}

/// Checks every entry of `gradient` against the central difference of `loss_of` at `argument`,
/// perturbed by +-1e-6.
template <class Loss>
void check_central_differences(const ref::MatrixXd& argument, const ref::MatrixXd& gradient,
                               const Loss& loss_of) {
  const double h = 1e-6;
  for (Index i = 0; i < argument.rows(); ++i)
    for (Index j = 0; j < argument.cols(); ++j) {
      ref::MatrixXd up = argument, down = argument;
      up(i, j) += h;
      down(i, j) -= h;
      const double numeric = (loss_of(up) - loss_of(down)) / (2 * h);
      CAPTURE(i, j);
      CHECK(gradient(i, j) == Approx(numeric).margin(1e-7).epsilon(1e-6));
    }
}

template <class T>
using CausalRbfLp3 = kernattn::Attention<kernattn::kernels::Rbf<T>, kernattn::magnitude::Lp<T>,
                                         kernattn::mask::Causal>;

}  // namespace

TEMPLATE_TEST_CASE(
    "GroupedQuery::backward equals the gradients over K and V repeated per query "
    "head, summed per key/value head",
    "[backward][grouped-query]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const CausalRbfLp3<T> head({}, kernattn::magnitude::Lp<T>(T(3)));
  const double tolerance = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  const Matrix<T> Q = ref::normal(B * nq, Hq * d, 901).cast<T>();
  for (const Index Hkv : {Index(2), Index(1), Index(Hq)}) {
    CAPTURE(Hkv);
    const Matrix<T> K = ref::normal(B * nk, Hkv * d, 902).cast<T>();
    const Matrix<T> V = ref::normal(B * nk, Hkv * dv, 903).cast<T>();
    const Matrix<T> dOut = ref::normal(B * nq, Hq * dv, 904).cast<T>();
    const Matrix<T> K_repeated = repeated(K, Hkv, d);
    const Matrix<T> V_repeated = repeated(V, Hkv, dv);
    const BatchLayout layout{B, Hq};
    Matrix<T> out(B * nq, Hq * dv), statistics;
    head.compute(Q, K_repeated, V_repeated, out, statistics, layout);
    const AttentionGradients<T> expected =
        head.gradients(Q, K_repeated, V_repeated, out, statistics, dOut, layout);

    const GroupedQuery grouped(head, Hq, Hkv);
    const AttentionGradients<T> actual = grouped.gradients(Q, K, V, out, dOut, B);
    require_close(actual.dQ, expected.dQ, tolerance);
    require_close(actual.dK, summed_per_group(expected.dK, Hkv, d), tolerance);
    require_close(actual.dV, summed_per_group(expected.dV, Hkv, dv), tolerance);

    // Threads: the heads run in order and each is bit-identical for every thread count.
    GroupedQuery<CausalRbfLp3<T>> two_threads(CausalRbfLp3<T>(head).set_threads(2), Hq, Hkv);
    const AttentionGradients<T> threaded = two_threads.gradients(Q, K, V, out, dOut, B);
    CHECK(threaded.dQ == actual.dQ);
    CHECK(threaded.dK == actual.dK);
    CHECK(threaded.dV == actual.dV);
  }
}

TEST_CASE("GroupedQuery::backward matches central finite differences",
          "[backward][grouped-query]") {
  // Loss sum(out .* W) of causal softmax attention, 4 query heads over 2 key/value heads, one
  // sequence: every entry of Q, K and V is perturbed by +-h.
  using Softmax = kernattn::Attention<kernattn::kernels::Exponential<double>,
                                      kernattn::magnitude::None, kernattn::mask::Causal>;
  const Index heads = 4, key_heads = 2, n = 5, dk = 3, dval = 2;
  const GroupedQuery grouped(Softmax(), heads, key_heads);
  const ref::MatrixXd Q = ref::normal(n, heads * dk, 911);
  const ref::MatrixXd K = ref::normal(n, key_heads * dk, 912);
  const ref::MatrixXd V = ref::normal(n, key_heads * dval, 913);
  const ref::MatrixXd W = ref::normal(n, heads * dval, 914);
  const auto loss = [&](const ref::MatrixXd& q, const ref::MatrixXd& k, const ref::MatrixXd& v) {
    return grouped(q, k, v).cwiseProduct(W).sum();
  };
  const AttentionGradients<double> analytic = grouped.gradients(Q, K, V, grouped(Q, K, V), W);
  check_central_differences(Q, analytic.dQ, [&](const ref::MatrixXd& q) { return loss(q, K, V); });
  check_central_differences(K, analytic.dK, [&](const ref::MatrixXd& k) { return loss(Q, k, V); });
  check_central_differences(V, analytic.dV, [&](const ref::MatrixXd& v) { return loss(Q, K, v); });
}

TEST_CASE("GroupedQuery::backward of a head without row statistics (causal linear attention)",
          "[backward][grouped-query]") {
  using Favor = kernattn::LinearAttention<kernattn::features::Positive<double>,
                                          kernattn::magnitude::None, kernattn::mask::Causal>;
  const Favor head(linear_ref::Maps<double>::make(d, 921).positive);
  const Index Hkv = 3;
  const ref::MatrixXd Q = ref::normal(B * nq, Hq * d, 922);
  const ref::MatrixXd K = ref::normal(B * nk, Hkv * d, 923);
  const ref::MatrixXd V = ref::normal(B * nk, Hkv * dv, 924);
  const ref::MatrixXd dOut = ref::normal(B * nq, Hq * dv, 925);
  const ref::MatrixXd K_repeated = repeated(K, Hkv, d);
  const ref::MatrixXd V_repeated = repeated(V, Hkv, dv);
  const BatchLayout layout{B, Hq};
  const ref::MatrixXd out = head(Q, K_repeated, V_repeated, layout);
  const AttentionGradients<double> expected =
      head.gradients(Q, K_repeated, V_repeated, out, dOut, layout);
  const AttentionGradients<double> actual =
      GroupedQuery(head, Hq, Hkv).gradients(Q, K, V, out, dOut, B);
  require_close(actual.dQ, expected.dQ, 1e-12);
  require_close(actual.dK, summed_per_group(expected.dK, Hkv, d), 1e-12);
  require_close(actual.dV, summed_per_group(expected.dV, Hkv, dv), 1e-12);
}

TEST_CASE("GroupedQuery::backward writes through overlapping gradients and rejects bad shapes",
          "[backward][grouped-query][errors]") {
  const CausalRbfLp3<double> head({}, kernattn::magnitude::Lp<double>(3.0));
  const Index Hkv = 2;
  const GroupedQuery grouped(head, Hq, Hkv);
  ref::MatrixXd Q = ref::normal(B * nq, Hq * d, 931);
  const ref::MatrixXd K = ref::normal(B * nk, Hkv * d, 932);
  const ref::MatrixXd V = ref::normal(B * nk, Hkv * dv, 933);
  const ref::MatrixXd out = grouped(Q, K, V, B);
  const ref::MatrixXd dOut = ref::normal(B * nq, Hq * dv, 934);
  const AttentionGradients<double> expected = grouped.gradients(Q, K, V, out, dOut, B);

  // dQ written over Q itself: the gradient is computed from the old Q.
  ref::MatrixXd dK(K.rows(), K.cols()), dV(V.rows(), V.cols());
  grouped.backward(Q, K, V, out, dOut, Q, dK, dV, B);
  CHECK(Q == expected.dQ);
  CHECK(dK == expected.dK);
  CHECK(dV == expected.dV);

  const ref::MatrixXd Q_fresh = ref::normal(B * nq, Hq * d, 931);
  ref::MatrixXd dQ(Q_fresh.rows(), Q_fresh.cols()), narrow(K.rows(), K.cols() - 1);
  REQUIRE_INVALID_ARGUMENT(grouped.backward(Q_fresh, K, V, out, dOut, dQ, narrow, dV, B),
                           "dK is 18x5 but must be 18x6 (the shape of K)");
  REQUIRE_INVALID_ARGUMENT(
      grouped.backward(Q_fresh, K, V, out, ref::MatrixXd(B * nq, 3), dQ, dK, dV, B),
      "dOut is 14x3 but must be 14x12");
  REQUIRE_INVALID_ARGUMENT(
      grouped.backward(Q_fresh, K, V, ref::MatrixXd(B * nq, 2), dOut, dQ, dK, dV, B),
      "out is 14x2 but must be 14x12");
  REQUIRE_INVALID_ARGUMENT(grouped.gradients(Q_fresh, K, V, out, dOut, 3),
                           "GroupedQuery: query head 0 of 6 (key/value head 0)");
}

TEMPLATE_TEST_CASE(
    "attend_packed_backward equals each sequence's gradients run alone, on every "
    "thread count",
    "[backward][packed]", KERNATTN_TEST_SCALARS) {
  // Five sequences (one without queries, one without keys), two heads, causal RBF x L^3: the
  // gradients of each sequence's rows are the head's own on that sequence, bit for bit, whether
  // the sequences run in parallel (1, 2 threads) or one after another (64 threads).
  using T = TestType;
  const Index heads = 2;
  const std::vector<Index> query_offsets{0, 7, 8, 8, 30, 37};
  const std::vector<Index> key_offsets{0, 9, 13, 16, 40, 40};
  const CausalRbfLp3<T> head({}, kernattn::magnitude::Lp<T>(T(3)));
  const Matrix<T> Q = ref::normal(37, heads * d, 941).cast<T>();
  const Matrix<T> K = ref::normal(40, heads * d, 942).cast<T>();
  const Matrix<T> V = ref::normal(40, heads * dv, 943).cast<T>();
  const Matrix<T> dOut = ref::normal(37, heads * dv, 944).cast<T>();
  Matrix<T> out(37, heads * dv);
  kernattn::attend_packed(head, Q, K, V, out, query_offsets, key_offsets, heads);

  AttentionGradients<T> expected{Matrix<T>::Zero(Q.rows(), Q.cols()),
                                 Matrix<T>::Zero(K.rows(), K.cols()),
                                 Matrix<T>::Zero(V.rows(), V.cols())};
  for (std::size_t s = 0; s + 1 < query_offsets.size(); ++s) {
    const Index q0 = query_offsets[s], nq = query_offsets[s + 1] - q0;
    const Index k0 = key_offsets[s], nk = key_offsets[s + 1] - k0;
    if (nq == 0) continue;
    const BatchLayout alone{1, heads};
    Matrix<T> statistics, sequence_out(nq, heads * dv);
    head.compute(Q.middleRows(q0, nq), K.middleRows(k0, nk), V.middleRows(k0, nk), sequence_out,
                 statistics, alone);
    const AttentionGradients<T> own =
        head.gradients(Q.middleRows(q0, nq), K.middleRows(k0, nk), V.middleRows(k0, nk),
                       out.middleRows(q0, nq), statistics, dOut.middleRows(q0, nq), alone);
    expected.dQ.middleRows(q0, nq) = own.dQ;
    expected.dK.middleRows(k0, nk) = own.dK;
    expected.dV.middleRows(k0, nk) = own.dV;
  }
  for (const int threads : {1, 2, 64}) {
    CAPTURE(threads);
    Matrix<T> dQ = Matrix<T>::Constant(Q.rows(), Q.cols(), T(7));
    Matrix<T> dK = Matrix<T>::Constant(K.rows(), K.cols(), T(7));
    Matrix<T> dV = Matrix<T>::Constant(V.rows(), V.cols(), T(7));
    kernattn::attend_packed_backward(head, Q, K, V, out, dOut, dQ, dK, dV, query_offsets,
                                     key_offsets, heads, threads);
    CHECK(dQ == expected.dQ);
    CHECK(dK == expected.dK);
    CHECK(dV == expected.dV);
  }
}

TEST_CASE("attend_packed_backward matches central finite differences", "[backward][packed]") {
  // Loss sum(out .* W) of causal softmax over three packed sequences (3, 1 and 4 tokens), one
  // head: every entry of Q, K and V is perturbed by +-h.
  using Softmax = kernattn::Attention<kernattn::kernels::Exponential<double>,
                                      kernattn::magnitude::None, kernattn::mask::Causal>;
  const Softmax head;
  const std::vector<Index> offsets{0, 3, 4, 8};
  const ref::MatrixXd Q = ref::normal(8, d, 951);
  const ref::MatrixXd K = ref::normal(8, d, 952);
  const ref::MatrixXd V = ref::normal(8, dv, 953);
  const ref::MatrixXd W = ref::normal(8, dv, 954);
  const auto forward = [&](const ref::MatrixXd& q, const ref::MatrixXd& k, const ref::MatrixXd& v) {
    ref::MatrixXd out(8, dv);
    kernattn::attend_packed(head, q, k, v, out, offsets, offsets);
    return out;
  };
  const auto loss = [&](const ref::MatrixXd& q, const ref::MatrixXd& k, const ref::MatrixXd& v) {
    return forward(q, k, v).cwiseProduct(W).sum();
  };
  ref::MatrixXd dQ(8, d), dK(8, d), dV(8, dv);
  kernattn::attend_packed_backward(head, Q, K, V, forward(Q, K, V), W, dQ, dK, dV, offsets,
                                   offsets);
  check_central_differences(Q, dQ, [&](const ref::MatrixXd& q) { return loss(q, K, V); });
  check_central_differences(K, dK, [&](const ref::MatrixXd& k) { return loss(Q, k, V); });
  check_central_differences(V, dV, [&](const ref::MatrixXd& v) { return loss(Q, K, v); });
}

TEST_CASE("attend_packed_backward rejects bad offsets and shapes", "[backward][packed][errors]") {
  const CausalRbfLp3<double> head({}, kernattn::magnitude::Lp<double>(3.0));
  const std::vector<Index> offsets{0, 4, 9};
  const ref::MatrixXd Q = ref::normal(9, d, 961);
  const ref::MatrixXd K = ref::normal(9, d, 962);
  const ref::MatrixXd V = ref::normal(9, dv, 963);
  ref::MatrixXd out(9, dv), dQ(9, d), dK(9, d), dV(9, dv);
  kernattn::attend_packed(head, Q, K, V, out, offsets, offsets);
  const ref::MatrixXd dOut = ref::normal(9, dv, 964);
  REQUIRE_INVALID_ARGUMENT(
      kernattn::attend_packed_backward(head, Q, K, V, out, dOut, dQ, dK, dV, {0, 5, 4, 9}, offsets),
      "query_offsets must not decrease");
  REQUIRE_INVALID_ARGUMENT(
      kernattn::attend_packed_backward(head, Q, K, V, out, dOut, dQ, dK, dV, offsets, {0, 9}),
      "query_offsets has 3 entries but key_offsets has 2");
  ref::MatrixXd wide(9, dv + 1);
  REQUIRE_INVALID_ARGUMENT(
      kernattn::attend_packed_backward(head, Q, K, V, out, dOut, dQ, dK, wide, offsets, offsets),
      "dV is 9x3 but must be 9x2 (the shape of V)");
  REQUIRE_INVALID_ARGUMENT(kernattn::attend_packed_backward(head, Q, K, V, out, dOut, dQ, dK, dV,
                                                            offsets, offsets, 2, 64),
                           "attend_packed: sequence 0 (query rows [0, 4), key rows [0, 4))");
}

}  // namespace test_backward_grouped_packed
