// The gradient of a loss with respect to a score bias's parameters (Attention::backward with a
// ScoreBiasGradient): bias::RelativePositions's table (T5) and bias::Alibi's slopes, alone and
// intersected with causal masks, over sequences and heads. Checked against a materialised softmax
// backward written out here (the score gradient P_ij (dO_i . v_j - D_i) summed into the entry
// each pair reads), against central differences of the loss in double, across thread counts and
// key tiles (bit for bit), and against keys that no query sees (they change nothing).
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "catch.hpp"
#include "reference.hpp"

namespace test_score_bias_gradients {

namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;
using kernattn::Attention;
using kernattn::BatchLayout;
using kernattn::ExecutionOptions;
using kernattn::ScoreBiasGradient;
namespace bias = kernattn::bias;
namespace kernels = kernattn::kernels;
namespace mask = kernattn::mask;
namespace magnitude = kernattn::magnitude;

constexpr Index d = 8;
constexpr Index sequences = 2;
constexpr Index heads = 2;

static_assert(mask::DifferentiableScoreBias<bias::RelativePositions<double>>);
static_assert(mask::DifferentiableScoreBias<bias::Alibi>);
static_assert(mask::DifferentiableScoreBias<mask::Intersection<mask::Causal, bias::Alibi>>);
static_assert(!mask::DifferentiableScoreBias<bias::Dense<double>>);
static_assert(!mask::DifferentiableScoreBias<mask::Causal>);

/// For pair (i, j) of sequence s and head h: the parameter it reads and
/// \f$\partial b(i, j)/\partial\theta\f$ there.
struct Entry {
  Index parameter;
  double derivative;
};
using EntryOf = std::function<Entry(Index s, Index h, Index i, Index j)>;
using BiasOf = std::function<double(Index s, Index h, Index i, Index j)>;
using VisibleOf = std::function<bool(Index i, Index j)>;

/// The naive gradient and, per parameter, \f$\sum |G_{ij}\,\partial b/\partial\theta|\f$ over the
/// pairs that read it, which bounds its rounding.
struct Expected {
  VectorXd gradient;
  VectorXd magnitude;
};

/// Softmax attention with the bias \f$b(i, j) = \sum_p c_p(i, j)\,\theta_p\f$ materialised per
/// sequence and head: \f$x_{ij} = q_i \cdot k_j / \sqrt d + b(i, j)\f$ over the visible pairs,
/// \f$P\f$ its softmax, \f$out_i = \sum_j P_{ij} v_j\f$, \f$D_i = dO_i \cdot out_i\f$,
/// \f$G_{ij} = P_{ij}(dO_i \cdot v_j - D_i)\f$ and \f$\partial\ell/\partial\theta_p =
/// \sum_{ij} G_{ij} c_p(i, j)\f$.
Expected naive_gradient(const MatrixXd& Q, const MatrixXd& K, const MatrixXd& V,
                        const MatrixXd& dOut, const BiasOf& b, const EntryOf& entry,
                        const VisibleOf& visible, Index parameters) {
  const Index nq = Q.rows() / sequences;
  const Index nk = K.rows() / sequences;
  const Index dv = V.cols() / heads;
  Expected expected{VectorXd::Zero(parameters), VectorXd::Zero(parameters)};
  for (Index s = 0; s < sequences; ++s)
    for (Index h = 0; h < heads; ++h) {
      const MatrixXd q = Q.block(s * nq, h * d, nq, d);
      const MatrixXd k = K.block(s * nk, h * d, nk, d);
      const MatrixXd v = V.block(s * nk, h * dv, nk, dv);
      const MatrixXd dout = dOut.block(s * nq, h * dv, nq, dv);
      for (Index i = 0; i < nq; ++i) {
        VectorXd x = VectorXd::Constant(nk, -std::numeric_limits<double>::infinity());
        for (Index j = 0; j < nk; ++j)
          if (visible(i, j)) x(j) = q.row(i).dot(k.row(j)) / std::sqrt(double(d)) + b(s, h, i, j);
        const double largest = x.maxCoeff();
        if (largest == -std::numeric_limits<double>::infinity()) continue;
        VectorXd p = (x.array() - largest).exp().matrix();
        p /= p.sum();
        const double D = dout.row(i).dot(p.transpose() * v);
        for (Index j = 0; j < nk; ++j) {
          if (!visible(i, j)) continue;
          const double g = p(j) * (dout.row(i).dot(v.row(j)) - D);
          const Entry e = entry(s, h, i, j);
          expected.gradient(e.parameter) += g * e.derivative;
          expected.magnitude(e.parameter) += std::abs(g * e.derivative);
        }
      }
    }
  return expected;
}

/// The library's bias gradient in T, against the naive one in double: each pair's score gradient
/// carries a relative error of \f$O((d + N_k)u)\f$ (its log-weight, the softmax sum, \f$D_i\f$),
/// so parameter p is off by at most that times its magnitude.
template <class T, class MaskT>
void check_against_naive(const MaskT& biased, Index nq, Index nk, const EntryOf& entry,
                         const VisibleOf& visible, std::uint64_t seed) {
  const Index dv = 3;
  const MatrixXd Q = ref::normal(sequences * nq, heads * d, seed);
  const MatrixXd K = ref::normal(sequences * nk, heads * d, seed + 1);
  const MatrixXd V = ref::normal(sequences * nk, heads * dv, seed + 2);
  const MatrixXd dOut = ref::normal(sequences * nq, heads * dv, seed + 3);
  const BatchLayout layout{sequences, heads};
  ExecutionOptions options;
  options.key_tile = 4;  // several key tiles and stripes per sequence and head
  const Attention<kernels::Exponential<T>, magnitude::None, MaskT> attention({}, {}, biased,
                                                                             options);
  using M = kernattn::Matrix<T>;
  const M q = Q.cast<T>(), k = K.cast<T>(), v = V.cast<T>(), dout = dOut.cast<T>();
  M out(q.rows(), v.cols()), statistics;
  attention.compute(q, k, v, out, statistics, layout);
  M dq(q.rows(), q.cols()), dk(k.rows(), k.cols()), dvv(v.rows(), v.cols());
  ScoreBiasGradient gradient;
  attention.backward(q, k, v, out, statistics, dout, dq, dk, dvv, gradient, layout);

  const auto bound = [&](Index s, Index h) {
    return biased.bind(mask::Shape{nq, nk, s, sequences, h, heads});
  };
  const Expected expected = naive_gradient(
      Q, K, V, dOut,
      [&](Index s, Index h, Index i, Index j) { return double(bound(s, h).bias(i, j)); }, entry,
      visible, biased.bias_parameter_count());
  REQUIRE(gradient.values.size() == expected.gradient.size());
  const double u = ref::unit_roundoff<T>;
  for (Index p = 0; p < expected.gradient.size(); ++p) {
    CAPTURE(p, gradient.values(p), expected.gradient(p));
    CHECK(std::abs(gradient.values(p) - expected.gradient(p)) <=
          16 * double(d + nk) * u * expected.magnitude(p) + 1e-300);
  }
  CHECK(expected.magnitude.maxCoeff() > 0);
}

bias::RelativePositions<double> t5_table(bool bidirectional, mask::Alignment alignment,
                                         std::uint64_t seed) {
  return bias::RelativePositions<double>(ref::normal(8, heads, seed), bidirectional, 12, alignment);
}

template <class T>
bias::RelativePositions<T> cast_table(const bias::RelativePositions<double>& table,
                                      bool bidirectional, mask::Alignment alignment) {
  return bias::RelativePositions<T>(table.table().cast<T>(), bidirectional, 12, alignment);
}

/// Table entry (bucket of j - c_i, h), column-major, with c_i = i + offset.
EntryOf t5_entry(Index offset, bool bidirectional) {
  return [offset, bidirectional](Index, Index h, Index i, Index j) {
    const Index bucket =
        bias::RelativePositions<double>::bucket(j - i - offset, 8, bidirectional, 12);
    return Entry{bucket + h * 8, 1.0};
  };
}

}  // namespace

TEMPLATE_TEST_CASE("A T5 table's gradient equals the materialised softmax backward's",
                   "[bias][gradients]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  SECTION("encoder: bidirectional, top-left, N_q != N_k, no mask") {
    const Index nq = 9, nk = 13;
    const auto table = t5_table(true, mask::Alignment::top_left, 40);
    check_against_naive<T>(
        cast_table<T>(table, true, mask::Alignment::top_left), nq, nk, t5_entry(0, true),
        [](Index, Index) { return true; }, 41);
  }
  SECTION("decoder: causal, bottom-right, N_q != N_k") {
    const Index nq = 7, nk = 17;
    const auto table = t5_table(false, mask::Alignment::bottom_right, 50);
    check_against_naive<T>(
        mask::Causal{} && cast_table<T>(table, false, mask::Alignment::bottom_right), nq, nk,
        t5_entry(nk - nq, false), [&](Index i, Index j) { return j <= i + nk - nq; }, 51);
  }
}

TEMPLATE_TEST_CASE("ALiBi slopes' gradient equals the materialised softmax backward's",
                   "[bias][gradients]", KERNATTN_TEST_SCALARS) {
  // One slope per sequence and head (B H of them), under the top-left causal mask.
  const Index nq = 11, nk = 11;
  const bias::Alibi alibi({0.5, 0.25, 0.125, 0.0625}, mask::Alignment::top_left);
  check_against_naive<TestType>(
      mask::CausalTopLeft{} && alibi, nq, nk,
      [&](Index s, Index h, Index i, Index j) {
        return Entry{s * heads + h, -double(std::abs(i - j))};
      },
      [](Index i, Index j) { return j <= i; }, 60);
}

TEST_CASE("Bias gradients agree with central differences of the loss (double)",
          "[bias][gradients]") {
  // The loss sum(W o out) for a fixed W, so that dOut = W; each parameter moved by +-h.
  const Index nq = 6, nk = 10, dv = 2;
  const MatrixXd Q = ref::normal(sequences * nq, heads * d, 70);
  const MatrixXd K = ref::normal(sequences * nk, heads * d, 71);
  const MatrixXd V = ref::normal(sequences * nk, heads * dv, 72);
  const MatrixXd W = ref::normal(sequences * nq, heads * dv, 73);
  const BatchLayout layout{sequences, heads};
  const double step = 1e-5;
  const auto check = [&](const auto& make_attention, VectorXd theta) {
    const auto loss = [&](const VectorXd& parameters) {
      return make_attention(parameters)(Q, K, V, layout).cwiseProduct(W).sum();
    };
    const auto attention = make_attention(theta);
    MatrixXd out(Q.rows(), V.cols()), statistics;
    attention.compute(Q, K, V, out, statistics, layout);
    MatrixXd dq(Q.rows(), Q.cols()), dk(K.rows(), K.cols()), dvv(V.rows(), V.cols());
    ScoreBiasGradient gradient;
    attention.backward(Q, K, V, out, statistics, W, dq, dk, dvv, gradient, layout);
    REQUIRE(gradient.values.size() == theta.size());
    for (Index p = 0; p < theta.size(); ++p) {
      VectorXd up = theta, down = theta;
      up(p) += step;
      down(p) -= step;
      const double difference = (loss(up) - loss(down)) / (2 * step);
      CAPTURE(p, gradient.values(p), difference);
      CHECK(std::abs(gradient.values(p) - difference) <=
            1e-6 * std::max(1.0, std::abs(difference)));
    }
  };
  SECTION("T5 table, causal decoder") {
    const MatrixXd table = ref::normal(8, heads, 74);
    check(
        [&](const VectorXd& entries) {
          const MatrixXd moved = Eigen::Map<const MatrixXd>(entries.data(), 8, heads);
          return Attention<kernels::Exponential<double>, magnitude::None,
                           mask::Intersection<mask::Causal, bias::RelativePositions<double>>>(
              {}, {}, mask::Causal{} && bias::RelativePositions<double>(moved, false, 12));
        },
        Eigen::Map<const VectorXd>(table.data(), table.size()));
  }
  SECTION("ALiBi slopes, RBF x L^3") {
    check(
        [&](const VectorXd& slopes) {
          return Attention<kernels::Rbf<double>, magnitude::Lp<double>, bias::Alibi>(
              {}, magnitude::Lp<double>(3.0),
              bias::Alibi(std::vector<double>(slopes.data(), slopes.data() + slopes.size())));
        },
        VectorXd::LinSpaced(2, 0.3, 0.7));
  }
}

TEST_CASE("Bias gradients are bit-identical across threads and blind to keys no query sees",
          "[bias][gradients]") {
  // Top-left causal with N_q < N_k: keys N_q.. are hidden from every query.
  const Index nq = 12, nk = 40, dv = 3;
  const MatrixXd Q = ref::normal(sequences * nq, heads * d, 80);
  MatrixXd K = ref::normal(sequences * nk, heads * d, 81);
  MatrixXd V = ref::normal(sequences * nk, heads * dv, 82);
  const MatrixXd dOut = ref::normal(sequences * nq, heads * dv, 83);
  const BatchLayout layout{sequences, heads};
  const auto biased =
      mask::CausalTopLeft{} && bias::RelativePositions<double>(ref::normal(8, heads, 84), false, 12,
                                                               mask::Alignment::top_left);
  const auto gradient_of = [&](const MatrixXd& keys, const MatrixXd& values, int threads) {
    ExecutionOptions options;
    options.key_tile = 4;
    options.threads = threads;
    const Attention<kernels::Exponential<double>, magnitude::None, decltype(biased)> attention(
        {}, {}, biased, options);
    MatrixXd out(Q.rows(), values.cols()), statistics;
    attention.compute(Q, keys, values, out, statistics, layout);
    MatrixXd dq(Q.rows(), Q.cols()), dk(keys.rows(), keys.cols()), dvv(values.rows(), dv * heads);
    ScoreBiasGradient gradient;
    attention.backward(Q, keys, values, out, statistics, dOut, dq, dk, dvv, gradient, layout);
    return gradient.values;
  };
  const VectorXd one = gradient_of(K, V, 1);
  CHECK(one == gradient_of(K, V, 2));
  for (Index s = 0; s < sequences; ++s) {
    K.block(s * nk + nq, 0, nk - nq, K.cols()).setConstant(1e30);
    V.block(s * nk + nq, 0, nk - nq, V.cols()).setConstant(std::nan(""));
  }
  CHECK(one == gradient_of(K, V, 2));
}

}  // namespace test_score_bias_gradients
