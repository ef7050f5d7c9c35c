// Additive score biases (bias/*.hpp): bias::Dense (PyTorch's float attn_mask), bias::Alibi and
// bias::RelativePositions (T5), alone and intersected with masks, in the exact engine's paths
// (block path, a cache's tile-of-queries and single-query paths), forward and backward. Every
// output is checked against scores plus bias, softmax and the values written out here, per
// sequence and head; the slopes and buckets against the published formulas written out here; the
// gradients against a materialised softmax backward and central differences (double).
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "backward_checks.hpp"
#include "catch.hpp"
#include "invalid_argument.hpp"
#include "reference.hpp"

namespace test_score_biases {

namespace {

using backward_checks::Mat;
using Eigen::MatrixXd;
using kernattn::Attention;
using kernattn::BatchLayout;
using kernattn::ExecutionOptions;
namespace bias = kernattn::bias;
namespace mask = kernattn::mask;
namespace magnitude = kernattn::magnitude;

constexpr Index d = 8;
constexpr double minus_infinity = -std::numeric_limits<double>::infinity();

/// The bias expected at pair (i, j) of sequence b and head h; -inf hides the pair.
using BiasOf = std::function<double(Index b, Index h, Index i, Index j)>;
/// Whether query i sees key j apart from the bias.
using VisibleOf = std::function<bool(Index i, Index j)>;

/// What the naive computation returns: the output and a bound on the library's error.
struct Expected {
  MatrixXd out;
  double tolerance;
};

/// Scores plus bias, softmax over the keys each query sees, times the values: for each of B
/// sequences and H heads of the batch x heads layout, \f$x_{ij} = \log\kappa(q_i, k_j) +
/// \log\mu(k_j) + b(i, j)\f$ over the visible pairs with a bias above -inf; a row that sees none
/// is zeros. The tolerance is \f$\max|v|\,(2\max_{ij}\delta_{ij} + (N_k + 8)u)\f$ with
/// \f$\delta_{ij}\f$ the kernel's and magnitude's error bounds plus the rounding of the bias and
/// the sum: a perturbation \f$\delta\f$ of every log-weight moves a softmax average of the values
/// by at most \f$2\delta\max|v|\f$.
Expected naive_biased(const MatrixXd& Q, const MatrixXd& K, const MatrixXd& V, Index sequences,
                      Index heads, const ref::KernelModel& kernel,
                      const ref::MagnitudeModel& magnitude, const BiasOf& bias_of,
                      const VisibleOf& visible, double u) {
  const Index nq = Q.rows() / sequences;
  const Index nk = K.rows() / sequences;
  const Index dq = Q.cols() / heads;
  const Index dv = V.cols() / heads;
  MatrixXd out = MatrixXd::Zero(Q.rows(), V.cols());
  double largest_error = 0;
  for (Index b = 0; b < sequences; ++b)
    for (Index h = 0; h < heads; ++h) {
      const MatrixXd q = Q.block(b * nq, h * dq, nq, dq);
      const MatrixXd k = K.block(b * nk, h * dq, nk, dq);
      const MatrixXd v = V.block(b * nk, h * dv, nk, dv);
      for (Index i = 0; i < nq; ++i) {
        Eigen::VectorXd x = Eigen::VectorXd::Constant(nk, minus_infinity);
        for (Index j = 0; j < nk; ++j) {
          const double bias = bias_of(b, h, i, j);
          if (!visible(i, j) || bias == minus_infinity) continue;
          const ref::Row qi = q.row(i);
          const ref::Row kj = k.row(j);
          x(j) = kernel.value(qi, kj) + magnitude.log_mu(kj) + bias;
          largest_error = std::max(largest_error, kernel.error(qi, kj, u) + magnitude.error(kj, u) +
                                                      2 * u * (std::abs(x(j)) + std::abs(bias)));
        }
        const double largest = x.maxCoeff();
        if (largest == minus_infinity) continue;
        const Eigen::VectorXd w = (x.array() - largest).exp().matrix();
        out.block(b * nq + i, h * dv, 1, dv) = (w.transpose() * v) / w.sum();
      }
    }
  return {out, V.cwiseAbs().maxCoeff() * (2 * largest_error + double(nk + 8) * u)};
}

const VisibleOf all_pairs = [](Index, Index) { return true; };

/// Query i sees keys j <= i + nk - nq (bottom-right, mask::Causal).
VisibleOf causal_pairs(Index nq, Index nk) {
  return [nq, nk](Index i, Index j) { return j <= i + nk - nq; };
}

/// The ALiBi slopes of the paper's code, written out: for n a power of two, start = 2^(-8/n)
/// and slope h = start^(h+1); otherwise those of the power of two below n, then the slopes of
/// twice that many heads at indices 0, 2, 4, ... until there are n.
std::vector<double> paper_slopes(Index n) {
  const auto power_of_two = [](Index count) {
    const double start = std::pow(2.0, -std::pow(2.0, -(std::log2(double(count)) - 3)));
    std::vector<double> slopes;
    for (Index h = 0; h < count; ++h) slopes.push_back(start * std::pow(start, double(h)));
    return slopes;
  };
  const double log2n = std::log2(double(n));
  if (log2n == std::floor(log2n)) return power_of_two(n);
  const auto closest = Index(std::pow(2.0, std::floor(log2n)));
  std::vector<double> slopes = power_of_two(closest);
  const std::vector<double> finer = paper_slopes(2 * closest);
  for (std::size_t h = 0; Index(slopes.size()) < n; h += 2) slopes.push_back(finer[h]);
  return slopes;
}

/// T5's `_relative_position_bucket` (HuggingFace transformers), written out.
Index t5_bucket(Index relative_position, Index num_buckets, bool bidirectional,
                Index max_distance) {
  Index buckets = 0;
  if (bidirectional) {
    num_buckets /= 2;
    buckets += relative_position > 0 ? num_buckets : 0;
    relative_position = std::abs(relative_position);
  } else {
    relative_position = -std::min<Index>(relative_position, 0);
  }
  const Index max_exact = num_buckets / 2;
  if (relative_position < max_exact) return buckets + relative_position;
  const auto large = Index(max_exact + std::log(double(relative_position) / double(max_exact)) /
                                           std::log(double(max_distance) / double(max_exact)) *
                                           double(num_buckets - max_exact));
  return buckets + std::min(large, num_buckets - 1);
}

/// Runs `check(attention)` for `biased` under the softmax and under RBF x L^3, with the models of
/// both, at the default tiles and at tiles of 3 queries and 4 keys (partial, full and hidden
/// tiles).
template <class T, class Bias, class Check>
void for_each_kernel(const Bias& biased, Check&& check) {
  ExecutionOptions small;
  small.query_tile = 3;
  small.key_tile = 4;
  for (const ExecutionOptions& options : {ExecutionOptions{}, small}) {
    {
      INFO("Exponential (softmax)");
      check(Attention<kernels::Exponential<T>, magnitude::None, Bias>({}, {}, biased, options),
            ref::exponential(1 / std::sqrt(double(d))), ref::unit_magnitude());
    }
    {
      INFO("RBF x L^3");
      check(Attention<kernels::Rbf<T>, magnitude::Lp<T>, Bias>({}, magnitude::Lp<T>(T(3)), biased,
                                                               options),
            ref::rbf(std::sqrt(double(d))), ref::lp(3, ref::default_gamma(d), 2));
    }
  }
}

/// Checks every kernel with `biased` on B sequences and H heads against `naive_biased`.
template <class T, class Bias>
void check_biased(const Bias& biased, Index sequences, Index heads, Index nq, Index nk,
                  const BiasOf& bias_of, const VisibleOf& visible, std::uint32_t seed) {
  const MatrixXd Q = ref::normal(sequences * nq, heads * d, seed).cast<T>().template cast<double>();
  const MatrixXd K =
      ref::normal(sequences * nk, heads * d, seed + 1).cast<T>().template cast<double>();
  const MatrixXd V =
      ref::normal(sequences * nk, heads * 3, seed + 2).cast<T>().template cast<double>();
  for_each_kernel<T>(biased, [&](const auto& attention, const auto& kernel, const auto& mu) {
    const Expected expected = naive_biased(Q, K, V, sequences, heads, kernel, mu, bias_of, visible,
                                           ref::unit_roundoff<T>);
    const kernattn::Matrix<T> out =
        attention(Q.cast<T>(), K.cast<T>(), V.cast<T>(), BatchLayout{sequences, heads});
    const double error = (out.template cast<double>() - expected.out).cwiseAbs().maxCoeff();
    CAPTURE(error, expected.tolerance);
    REQUIRE(error <= expected.tolerance);
  });
}

}  // namespace

TEST_CASE("ALiBi's standard slopes are the paper's", "[bias][alibi]") {
  for (const Index heads : {1, 2, 3, 5, 8, 12, 16, 24, 64}) {
    CAPTURE(heads);
    const std::vector<double> slopes = bias::Alibi::standard_slopes(heads);
    const std::vector<double> expected = paper_slopes(heads);
    REQUIRE(slopes.size() == expected.size());
    for (std::size_t h = 0; h < slopes.size(); ++h) {
      CAPTURE(h);
      REQUIRE(slopes[h] == Approx(expected[h]).epsilon(1e-14));
    }
  }
  // Eight heads: 1/2, 1/4, ..., 1/256, as the paper lists them.
  const std::vector<double> eight = bias::Alibi::standard_slopes(8);
  for (std::size_t h = 0; h < 8; ++h) REQUIRE(eight[h] == std::ldexp(1.0, -int(h) - 1));
}

TEST_CASE("T5's relative-position buckets are HuggingFace's", "[bias][t5]") {
  for (const bool bidirectional : {true, false})
    for (const Index buckets : {8, 32, 64})
      for (const Index max_distance : {20, 128})
        for (Index r = -400; r <= 400; ++r) {
          CAPTURE(bidirectional, buckets, max_distance, r);
          REQUIRE(
              bias::RelativePositions<double>::bucket(r, buckets, bidirectional, max_distance) ==
              t5_bucket(r, buckets, bidirectional, max_distance));
        }
  // Worked by hand, 32 buckets and max_distance 128: bidirectional, 16 per sign and 8 exact.
  using Buckets = bias::RelativePositions<double>;
  REQUIRE(Buckets::bucket(0, 32, true, 128) == 0);
  REQUIRE(Buckets::bucket(1, 32, true, 128) == 17);
  REQUIRE(Buckets::bucket(-1, 32, true, 128) == 1);
  REQUIRE(Buckets::bucket(-8, 32, true, 128) == 8);
  REQUIRE(Buckets::bucket(-16, 32, true, 128) == 10);  // 8 + ln 2 / ln 16 * 8
  REQUIRE(Buckets::bucket(-1000, 32, true, 128) == 15);
  REQUIRE(Buckets::bucket(5, 32, false, 128) == 0);     // a later key: bucket 0 in a decoder
  REQUIRE(Buckets::bucket(-20, 32, false, 128) == 17);  // 16 + floor(ln 1.25 / ln 8 * 16)
}

TEMPLATE_TEST_CASE("Score biases: scores plus bias, softmax, times the values", "[bias]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const Index sequences = 2;
  const Index heads = 3;
  const Index nq = 7;
  const Index nk = 11;
  SECTION("ALiBi, bottom-right and top-left, alone and causal") {
    const std::vector<double> slopes = paper_slopes(heads);
    for (const mask::Alignment alignment :
         {mask::Alignment::bottom_right, mask::Alignment::top_left}) {
      const Index offset = alignment == mask::Alignment::top_left ? 0 : nk - nq;
      const BiasOf alibi = [&](Index, Index h, Index i, Index j) {
        return -slopes[std::size_t(h)] * double(std::abs(i + offset - j));
      };
      CAPTURE(offset);
      check_biased<T>(bias::Alibi::standard(heads, alignment), sequences, heads, nq, nk, alibi,
                      all_pairs, 10);
      check_biased<T>(mask::Causal{} && bias::Alibi::standard(heads, alignment), sequences, heads,
                      nq, nk, alibi, causal_pairs(nq, nk), 20);
    }
  }
  SECTION("ALiBi with a slope per sequence and head") {
    std::vector<double> slopes;
    for (Index s = 0; s < sequences * heads; ++s) slopes.push_back(0.05 * double(s + 1));
    const BiasOf alibi = [&](Index b, Index h, Index i, Index j) {
      return -slopes[std::size_t(b * heads + h)] * double(std::abs(i + nk - nq - j));
    };
    check_biased<T>(bias::Alibi(slopes), sequences, heads, nq, nk, alibi, all_pairs, 30);
  }
  SECTION("A dense bias, shared and per sequence and head, with -inf hiding pairs") {
    for (const bool shared : {true, false}) {
      CAPTURE(shared);
      MatrixXd values = ref::normal(shared ? nq : sequences * heads * nq, nk, 40, 0.0, 2.0);
      const auto hidden = ref::random_visibility(values.rows(), nk, 0.7, 41);
      for (Index r = 0; r < values.rows(); ++r)
        for (Index j = 0; j < nk; ++j)
          if (!hidden(r, j)) values(r, j) = minus_infinity;
      values.row(2).setConstant(minus_infinity);             // a query that sees no key
      values.block(3, 0, 4, 4).setConstant(minus_infinity);  // a tile of 3 x 4 hidden whole
      const MatrixXd rounded = values.cast<T>().template cast<double>();
      const BiasOf dense = [&](Index b, Index h, Index i, Index j) {
        return rounded(shared ? i : (b * heads + h) * nq + i, j);
      };
      check_biased<T>(bias::Dense<T>(values.cast<T>()), sequences, heads, nq, nk, dense, all_pairs,
                      50);
      check_biased<T>(mask::Causal{} && bias::Dense<T>(values.cast<T>()), sequences, heads, nq, nk,
                      dense, causal_pairs(nq, nk), 60);
    }
  }
  SECTION("T5 relative positions, an encoder's (bidirectional) and a decoder's (causal)") {
    const MatrixXd table = ref::normal(16, heads, 70).cast<T>().template cast<double>();
    for (const bool bidirectional : {true, false}) {
      CAPTURE(bidirectional);
      const BiasOf t5 = [&](Index, Index h, Index i, Index j) {
        return table(t5_bucket(j - (i + nk - nq), 16, bidirectional, 20), h);
      };
      const bias::RelativePositions<T> positions(table.cast<T>(), bidirectional, 20);
      if (bidirectional)
        check_biased<T>(positions, sequences, heads, nq, nk, t5, all_pairs, 80);
      else
        check_biased<T>(mask::Causal{} && positions, sequences, heads, nq, nk, t5,
                        causal_pairs(nq, nk), 90);
    }
  }
}

TEMPLATE_TEST_CASE("Score biases in a cache's decoding steps equal the full causal attention",
                   "[bias][cache]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const Index n = 40;
  const auto biased = mask::Causal{} && bias::Alibi({0.3});
  using Softmax = Attention<kernels::Exponential<T>, magnitude::None, decltype(biased)>;
  ExecutionOptions options;
  options.key_tile = 4;  // parts of 64 keys: a long step's keys merged from two parts
  const Softmax attention({}, {}, biased, options);
  const kernattn::Matrix<T> Q = ref::normal(n, d, 100).cast<T>();
  const kernattn::Matrix<T> K = ref::normal(n, d, 101).cast<T>();
  const kernattn::Matrix<T> V = ref::normal(n, 3, 102).cast<T>();
  const kernattn::Matrix<T> full = attention(Q, K, V);
  kernattn::KeyValueCache<kernels::Exponential<T>, magnitude::None, decltype(biased)> cache(
      attention, d, 3);
  // Steps of 27 and 11 tokens (tiles of queries) and of 1 (a single query).
  Index done = 0;
  for (const Index step : {Index(27), Index(1), Index(11), Index(1)}) {
    cache.append(K.middleRows(done, step), V.middleRows(done, step));
    const kernattn::Matrix<T> out = cache.attend(Q.middleRows(done, step));
    CAPTURE(done, step);
    REQUIRE((out - full.middleRows(done, step)).cwiseAbs().maxCoeff() <=
            64 * std::numeric_limits<T>::epsilon() * V.cwiseAbs().maxCoeff());
    done += step;
  }
}

TEMPLATE_TEST_CASE("Grouped-query attention with ALiBi equals attention over repeated K and V",
                   "[bias][grouped-query]", KERNATTN_TEST_SCALARS) {
  // H_q = 6 query heads over H_kv = 2 key/value heads, one slope per query head: forward in one
  // grouped call, backward query head by query head with each head's own slope.
  using T = TestType;
  using Matrix = kernattn::Matrix<T>;
  const Index B = 2, nq = 7, nk = 10, dv = 3, Hq = 6, Hkv = 2, g = Hq / Hkv;
  const auto biased = mask::Causal{} && bias::Alibi::standard(Hq);
  const Attention<kernels::Exponential<T>, magnitude::None, decltype(biased)> head({}, {}, biased);
  const Matrix Q = ref::normal(B * nq, Hq * d, 150).cast<T>();
  const Matrix K = ref::normal(B * nk, Hkv * d, 151).cast<T>();
  const Matrix V = ref::normal(B * nk, Hkv * dv, 152).cast<T>();
  const Matrix dO = ref::normal(B * nq, Hq * dv, 153).cast<T>();
  Matrix repeated_K(B * nk, Hq * d), repeated_V(B * nk, Hq * dv);
  for (Index h = 0; h < Hq; ++h) {
    repeated_K.middleCols(h * d, d) = K.middleCols((h / g) * d, d);
    repeated_V.middleCols(h * dv, dv) = V.middleCols((h / g) * dv, dv);
  }
  const BatchLayout layout{B, Hq};
  Matrix expected(B * nq, Hq * dv);
  Matrix statistics;
  head.compute(Q, repeated_K, repeated_V, expected, statistics, layout);
  const kernattn::GroupedQuery grouped(head, Hq, Hkv);
  const Matrix out = grouped(Q, K, V, B);
  REQUIRE(out == expected);

  const kernattn::AttentionGradients<T> repeated =
      head.gradients(Q, repeated_K, repeated_V, expected, statistics, dO, layout);
  const kernattn::AttentionGradients<T> gradients = grouped.gradients(Q, K, V, out, dO, B);
  REQUIRE(gradients.dQ == repeated.dQ);
  Matrix summed_dK = Matrix::Zero(B * nk, Hkv * d);
  Matrix summed_dV = Matrix::Zero(B * nk, Hkv * dv);
  for (Index h = 0; h < Hq; ++h) {
    summed_dK.middleCols((h / g) * d, d) += repeated.dK.middleCols(h * d, d);
    summed_dV.middleCols((h / g) * dv, dv) += repeated.dV.middleCols(h * dv, dv);
  }
  REQUIRE(gradients.dK == summed_dK);
  REQUIRE(gradients.dV == summed_dV);
}

TEMPLATE_TEST_CASE("Keys a dense bias hides cannot reach the output", "[bias][hidden]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const Index nq = 9;
  const Index nk = 13;
  MatrixXd values = ref::normal(nq, nk, 200);
  values.col(5).setConstant(minus_infinity);
  values.col(12).setConstant(minus_infinity);
  const Attention<kernels::Exponential<T>, magnitude::None, bias::Dense<T>> attention(
      {}, {}, bias::Dense<T>(values.cast<T>()));
  kernattn::Matrix<T> Q = ref::normal(nq, d, 201).cast<T>();
  kernattn::Matrix<T> K = ref::normal(nk, d, 202).cast<T>();
  kernattn::Matrix<T> V = ref::normal(nk, 2, 203).cast<T>();
  const kernattn::Matrix<T> before = attention(Q, K, V);
  for (const Index j : {Index(5), Index(12)}) {
    K.row(j).setConstant(std::numeric_limits<T>::quiet_NaN());
    V.row(j).setConstant(T(1e30));
  }
  const kernattn::Matrix<T> after = attention(Q, K, V);
  REQUIRE(after.cwiseEqual(before).all());
}

TEMPLATE_TEST_CASE("Backward with a score bias against the materialised softmax backward",
                   "[bias][backward]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const Index sequences = 2;
  const Index heads = 2;
  const Index nq = 6;
  const Index nk = 9;
  const double s = 1 / std::sqrt(double(d));
  const std::vector<double> slopes = paper_slopes(heads);
  MatrixXd dense = ref::normal(sequences * heads * nq, nk, 300);
  dense(1, 4) = minus_infinity;
  dense.row(nq + 2).setConstant(minus_infinity);
  const MatrixXd rounded = dense.cast<T>().template cast<double>();
  const auto check = [&](const auto& biased, const BiasOf& bias_of, const VisibleOf& visible) {
    using Biased = std::remove_cvref_t<decltype(biased)>;
    const Attention<kernels::Exponential<T>, magnitude::None, Biased> attention({}, {}, biased);
    const kernattn::Matrix<T> Q = ref::normal(sequences * nq, heads * d, 301).cast<T>();
    const kernattn::Matrix<T> K = ref::normal(sequences * nk, heads * d, 302).cast<T>();
    const kernattn::Matrix<T> V = ref::normal(sequences * nk, heads * 2, 303).cast<T>();
    const kernattn::Matrix<T> dO = ref::normal(sequences * nq, heads * 2, 304).cast<T>();
    const BatchLayout layout{sequences, heads};
    kernattn::Matrix<T> out(Q.rows(), V.cols());
    kernattn::Matrix<T> statistics;
    attention.compute(Q, K, V, out, statistics, layout);
    const kernattn::AttentionGradients<T> gradients =
        attention.gradients(Q, K, V, out, statistics, dO, layout);
    // The materialised backward, and per entry the sum of the absolute values of its terms
    // (`scale`): each gradient is a sum of products of at most N_k + d terms from log-weights of
    // size up to X, so the library's error is at most 8 (N_k + d + 8) u (1 + X) scale.
    MatrixXd dQ = MatrixXd::Zero(Q.rows(), Q.cols());
    MatrixXd dK = MatrixXd::Zero(K.rows(), K.cols());
    MatrixXd dV = MatrixXd::Zero(V.rows(), V.cols());
    MatrixXd dQ_scale = dQ;
    MatrixXd dK_scale = dK;
    MatrixXd dV_scale = dV;
    double largest_log_weight = 0;
    for (Index b = 0; b < sequences; ++b)
      for (Index h = 0; h < heads; ++h) {
        const MatrixXd q = Q.block(b * nq, h * d, nq, d).template cast<double>();
        const MatrixXd k = K.block(b * nk, h * d, nk, d).template cast<double>();
        const MatrixXd v = V.block(b * nk, h * 2, nk, 2).template cast<double>();
        const MatrixXd dout = dO.block(b * nq, h * 2, nq, 2).template cast<double>();
        // P = softmax(s Q K^T + bias) over the visible pairs; dV = P^T dO; dX = P o (dO V^T -
        // rowsum(P o dO V^T)); dQ = s dX K; dK = s dX^T Q.
        MatrixXd P = MatrixXd::Zero(nq, nk);
        for (Index i = 0; i < nq; ++i) {
          Eigen::VectorXd x = Eigen::VectorXd::Constant(nk, minus_infinity);
          for (Index j = 0; j < nk; ++j)
            if (visible(i, j) && bias_of(b, h, i, j) != minus_infinity) {
              x(j) = s * q.row(i).dot(k.row(j)) + bias_of(b, h, i, j);
              largest_log_weight = std::max(largest_log_weight, std::abs(x(j)));
            }
          if (x.maxCoeff() == minus_infinity) continue;
          const Eigen::VectorXd w = (x.array() - x.maxCoeff()).exp().matrix();
          P.row(i) = (w / w.sum()).transpose();
        }
        const MatrixXd dP = dout * v.transpose();
        const Eigen::VectorXd row_sums = (P.array() * dP.array()).rowwise().sum().matrix();
        const MatrixXd dX = (P.array() * (dP.colwise() - row_sums).array()).matrix();
        const MatrixXd dX_scale =
            (P.array() * (dP.cwiseAbs().colwise() + row_sums.cwiseAbs()).array()).matrix();
        dQ.block(b * nq, h * d, nq, d) = s * dX * k;
        dK.block(b * nk, h * d, nk, d) = s * dX.transpose() * q;
        dV.block(b * nk, h * 2, nk, 2) = P.transpose() * dout;
        dQ_scale.block(b * nq, h * d, nq, d) = s * dX_scale * k.cwiseAbs();
        dK_scale.block(b * nk, h * d, nk, d) = s * dX_scale.transpose() * q.cwiseAbs();
        dV_scale.block(b * nk, h * 2, nk, 2) = P.transpose() * dout.cwiseAbs();
      }
    const double bound = 8 * double(nk + d + 8) * ref::unit_roundoff<T> * (1 + largest_log_weight);
    const auto within = [&](const kernattn::Matrix<T>& actual, const MatrixXd& expected,
                            const MatrixXd& scale) {
      const MatrixXd excess =
          (actual.template cast<double>() - expected).cwiseAbs() - bound * scale;
      CAPTURE(excess.maxCoeff());
      REQUIRE(excess.maxCoeff() <= 0);
    };
    within(gradients.dQ, dQ, dQ_scale);
    within(gradients.dK, dK, dK_scale);
    within(gradients.dV, dV, dV_scale);
  };
  SECTION("causal ALiBi") {
    check(
        mask::Causal{} && bias::Alibi(slopes),
        [&](Index, Index h, Index i, Index j) {
          return -slopes[std::size_t(h)] * double(std::abs(i + nk - nq - j));
        },
        causal_pairs(nq, nk));
  }
  SECTION("a dense bias per sequence and head, with a query that sees no key") {
    check(
        bias::Dense<T>(dense.cast<T>()),
        [&](Index b, Index h, Index i, Index j) { return rounded((b * heads + h) * nq + i, j); },
        all_pairs);
  }
}

TEST_CASE("Backward with a score bias: central finite differences (double)",
          "[bias][backward][finite_differences]") {
  const Index nq = 5;
  const Index nk = 7;
  const Mat<double> Q = ref::normal(nq, d, 400, 0.5, 0.5);
  const Mat<double> K = ref::normal(nk, d, 401, 0.5, 0.5);
  const Mat<double> V = ref::normal(nk, 2, 402);
  const Mat<double> weights = ref::normal(nq, 2, 403);
  {
    INFO("RBF x L^3, causal T5 relative positions");
    const auto biased =
        mask::Causal{} && bias::RelativePositions<double>(ref::normal(8, 1, 404), false, 10);
    const Attention<kernels::Rbf<double>, magnitude::Lp<double>, decltype(biased)> attention(
        {}, magnitude::Lp<double>(3), biased);
    backward_checks::check_exact_finite_differences(attention, Q, K, V, weights);
  }
  {
    INFO("softmax, a dense bias with hidden pairs");
    MatrixXd dense = ref::normal(nq, nk, 405);
    dense(0, 3) = minus_infinity;
    dense(4, 0) = minus_infinity;
    const Attention<kernels::Exponential<double>, magnitude::None, bias::Dense<double>> attention(
        {}, {}, bias::Dense<double>(dense));
    backward_checks::check_exact_finite_differences(attention, Q, K, V, weights);
  }
}

TEST_CASE("Score biases reject bad input with the argument and the shapes", "[bias][errors]") {
  using Softmax = kernels::Exponential<double>;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double infinity = std::numeric_limits<double>::infinity();
  MatrixXd values = MatrixXd::Zero(4, 5);
  values(2, 3) = nan;
  REQUIRE_INVALID_ARGUMENT(bias::Dense<double>{values}, "entry (2, 3) is nan");
  values(2, 3) = infinity;
  REQUIRE_INVALID_ARGUMENT(bias::Dense<double>{values}, "entry (2, 3) is inf");
  REQUIRE_INVALID_ARGUMENT(bias::Alibi({0.5, nan}), "slopes[1] must be finite");
  REQUIRE_INVALID_ARGUMENT(bias::Alibi(std::vector<double>{}), "slopes are empty");
  REQUIRE_INVALID_ARGUMENT(bias::Alibi::standard_slopes(0), "heads must be >= 1");
  REQUIRE_INVALID_ARGUMENT(bias::RelativePositions<double>(MatrixXd::Zero(3, 1), true, 10),
                           "it needs at least 4");
  REQUIRE_INVALID_ARGUMENT(bias::RelativePositions<double>(MatrixXd::Zero(8, 1), true, 2),
                           "max_distance must exceed the 2 exact buckets");

  const MatrixXd Q = ref::normal(4, 2 * d, 500);
  const MatrixXd K = ref::normal(5, 2 * d, 501);
  const MatrixXd V = ref::normal(5, 2, 502);
  const BatchLayout two_heads{1, 2};
  const Attention<Softmax, magnitude::None, bias::Dense<double>> dense(
      {}, {}, bias::Dense<double>(MatrixXd::Zero(3, 5)));
  REQUIRE_INVALID_ARGUMENT(dense(Q, K, V, two_heads),
                           "bias::Dense is 3x5 but the attention is 4x5 (queries x keys) for each "
                           "of 1 sequence(s) and 2 head(s): give 4x5 or 8x5");
  const Attention<Softmax, magnitude::None, bias::Alibi> alibi({}, {}, bias::Alibi({0.5, 0.25, 1}));
  REQUIRE_INVALID_ARGUMENT(alibi(Q, K, V, two_heads),
                           "bias::Alibi has 3 slope(s) but the attention "
                           "has 2 head(s) and 1 sequence(s): give 2 or 2");
  const Attention<Softmax, magnitude::None, bias::RelativePositions<double>> t5(
      {}, {}, bias::RelativePositions<double>(MatrixXd::Zero(8, 3), true, 10));
  REQUIRE_INVALID_ARGUMENT(t5(Q, K, V, two_heads),
                           "bias::RelativePositions has a table of 3 head(s) (columns) but the "
                           "attention has 2");
}

}  // namespace test_score_biases
