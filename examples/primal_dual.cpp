// Attention-BN and Attention-SH (primal-dual attentions): keys normalised with their own
// statistics, and heads that attend over keys and values pooled along the sequence.
#include <chrono>
#include <cstdio>
#include <kernattn/kernattn.hpp>
#include <vector>

int main() {
  using namespace kernattn;
  const Index n = 1024, heads = 8, d = 32;
  // Keys with a large offset and spread: plain softmax attention collapses onto a few keys.
  const Eigen::MatrixXf Q = Eigen::MatrixXf::Random(n, heads * d);
  const Eigen::MatrixXf K = (20.0f * Eigen::MatrixXf::Random(n, heads * d)).array() + 3.0f;
  const Eigen::MatrixXf V = Eigen::MatrixXf::Random(n, heads * d);
  const BatchLayout layout{1, heads};

  using Softmax = Attention<kernels::Exponential<float>, magnitude::None, mask::Causal>;
  const Softmax softmax;
  const BatchNormalized<Softmax> normalised(softmax);  // beta = 1, epsilon = 1e-5
  // The size of the last query's output (it sees every key) shows how many keys it averages:
  // attending to one key copies its value (|v| averages 0.5), averaging many gives about 0.
  const auto last_row = [](const Eigen::MatrixXf& m) { return m.bottomRows(1).cwiseAbs().mean(); };
  std::printf("mean |output| of the last query: softmax %.3f, Attention-BN %.3f\n",
              last_row(softmax(Q, K, V, layout)), last_row(normalised(Q, K, V, layout)));

  // Attention-SH: head h pools keys and values over windows of r_h tokens. Under the causal mask
  // a pooled key is visible once every token of its window is.
  const std::vector<Index> factors = {1, 1, 2, 2, 4, 4, 8, 8};
  const auto scaled = scaled_heads(normalised, factors);
  const auto plain = scaled_heads(normalised, std::vector<Index>(heads, 1));
  const auto seconds = [&](const auto& attention) {
    const auto start = std::chrono::steady_clock::now();
    const Eigen::MatrixXf out = attention(Q, K, V);
    return std::pair{
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), out};
  };
  const auto [plain_time, plain_out] = seconds(plain);
  const auto [scaled_time, scaled_out] = seconds(scaled);
  std::printf("BN + SH with r_h = 1,1,2,2,4,4,8,8: %.1f ms, all r_h = 1: %.1f ms\n",
              1e3 * scaled_time, 1e3 * plain_time);
  for (Index h = 0; h < heads; ++h)
    std::printf("  head %ld (r = %ld): %4ld keys, mean |output - unpooled| = %.4f\n", long(h),
                long(factors[std::size_t(h)]),
                long((n + factors[std::size_t(h)] - 1) / factors[std::size_t(h)]),
                (scaled_out - plain_out).middleCols(h * d, d).cwiseAbs().mean());

  // Self-checks: r = 1 is BN attention itself, bit for bit; pooled heads stay finite.
  const bool same = (plain_out.array() == normalised(Q, K, V, layout).array()).all();
  std::printf("all r_h = 1 equals Attention-BN bit for bit: %s\n", same ? "yes" : "no");
  return same && scaled_out.allFinite() ? 0 : 1;
}
