// Attention-BN and Attention-SH (primal-dual attentions, docs/primal_dual.md): keys normalised
// with their own statistics, which every query shares (so every query must see the same keys: an
// encoder), and heads that attend over keys and values pooled along the sequence, also in a
// causal decoder, where each query sees the windows before it and the part of its own window.
#include <chrono>
#include <cstdio>
#include <kernattn/kernattn.hpp>
#include <utility>
#include <vector>

int main() {
  using namespace kernattn;
  const Index n = 1024, heads = 8, d = 32;
  // Keys with a large offset and spread: plain softmax attention collapses onto a few keys.
  const Eigen::MatrixXf Q = Eigen::MatrixXf::Random(n, heads * d);
  const Eigen::MatrixXf K = (20.0f * Eigen::MatrixXf::Random(n, heads * d)).array() + 3.0f;
  const Eigen::MatrixXf V = Eigen::MatrixXf::Random(n, heads * d);
  const BatchLayout layout{1, heads};
  const auto seconds = [&](const auto& attention) {
    const auto start = std::chrono::steady_clock::now();
    const Eigen::MatrixXf out = attention(Q, K, V);
    return std::pair{
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), out};
  };

  // Attention-BN over an encoder's softmax heads (no mask). The size of the outputs shows how
  // many keys a query averages: attending to one key copies its value (|v| averages 0.5),
  // averaging many gives about 0.
  using Softmax = Attention<kernels::Exponential<float>>;
  const Softmax softmax;
  const BatchNormalized<Softmax> normalised(softmax);  // beta = 1, epsilon = 1e-5
  std::printf("mean |output|: softmax %.3f, Attention-BN %.3f\n",
              softmax(Q, K, V, layout).cwiseAbs().mean(),
              normalised(Q, K, V, layout).cwiseAbs().mean());

  // Attention-SH: head h pools keys and values over windows of r_h tokens, on normalised inputs.
  const std::vector<Index> factors = {1, 1, 2, 2, 4, 4, 8, 8};
  const auto scaled = scaled_heads(normalised, factors);
  const auto plain = scaled_heads(normalised, std::vector<Index>(heads, 1));
  const auto [plain_time, plain_out] = seconds(plain);
  const auto [scaled_time, scaled_out] = seconds(scaled);
  std::printf("BN + SH with r_h = 1,1,2,2,4,4,8,8: %.1f ms, all r_h = 1: %.1f ms\n",
              1e3 * scaled_time, 1e3 * plain_time);
  for (Index h = 0; h < heads; ++h)
    std::printf("  head %ld (r = %ld): %4ld keys, mean |output - unpooled| = %.4f\n", long(h),
                long(factors[std::size_t(h)]),
                long((n + factors[std::size_t(h)] - 1) / factors[std::size_t(h)]),
                (scaled_out - plain_out).middleCols(h * d, d).cwiseAbs().mean());

  // A causal decoder with scaled heads: query i sees the windows that end at or before it and
  // the mean of the tokens of its current window up to itself, so no query is left without keys
  // and none sees a later token: changing the second half of the sequence leaves the outputs of
  // the first half unchanged, bit for bit.
  using CausalSoftmax = Attention<kernels::Exponential<float>, magnitude::None, mask::Causal>;
  const auto decoder = scaled_heads(CausalSoftmax{}, factors);
  const auto unpooled_decoder = scaled_heads(CausalSoftmax{}, std::vector<Index>(heads, 1));
  const auto [decoder_time, decoded] = seconds(decoder);
  const auto [unpooled_time, unpooled] = seconds(unpooled_decoder);
  Eigen::MatrixXf later_K = K;
  Eigen::MatrixXf later_V = V;
  later_K.bottomRows(n / 2).setConstant(1e30f);
  later_V.bottomRows(n / 2).setConstant(-1e30f);
  const Eigen::MatrixXf changed = decoder(Q, later_K, later_V);
  const bool causal = (changed.topRows(n / 2).array() == decoded.topRows(n / 2).array()).all();
  const bool first_rows_attend = (decoded.topRows(8).array() != 0.0f).rowwise().any().all();
  std::printf("causal SH decoder: %.1f ms (unpooled: %.1f ms); the first 8 queries attend: %s; "
              "rows 0..%ld unchanged when tokens %ld.. change: %s\n",
              1e3 * decoder_time, 1e3 * unpooled_time, first_rows_attend ? "yes" : "no",
              long(n / 2 - 1), long(n / 2), causal ? "yes" : "no");

  // Attention-BN shares its statistics across the queries: under a causal mask they would
  // depend on later keys, so it refuses.
  bool refused = false;
  try {
    static_cast<void>(BatchNormalized<CausalSoftmax>(CausalSoftmax{})(Q, K, V, layout));
  } catch (const InvalidArgument&) {
    refused = true;
  }
  std::printf("Attention-BN over causal heads: %s\n", refused ? "refused" : "accepted");

  // Self-checks: r = 1 is BN attention itself, bit for bit; pooled heads stay finite.
  const bool same = (plain_out.array() == normalised(Q, K, V, layout).array()).all();
  std::printf("all r_h = 1 equals Attention-BN bit for bit: %s\n", same ? "yes" : "no");
  const bool ok = same && scaled_out.allFinite() && decoded.allFinite() && causal &&
                  first_rows_attend && refused && unpooled.allFinite();
  return ok ? 0 : 1;
}
