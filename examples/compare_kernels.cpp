// compare_kernels: every kernel of kernattn on one random attention problem.
//
// Attention is a kernel smoother: out_i = sum_j w_ij v_j / sum_j w_ij with
// w_ij = kappa(q_i, k_j) * mu(k_j), a kernel kappa times a per-key magnitude mu. Softmax attention
// is one choice; this program runs it and the other kernels on the same Q, K, V and prints, for
// each, the time of one call, its throughput and how far its output is from softmax's.
//
// Usage: compare_kernels [--threads N]      (default: 1 thread; 0 = the OpenMP default)
//
// Exit status: 0, or 1 when RBF x L2 magnitude does not reproduce softmax attention (it must,
// up to rounding: see the decomposition printed in the header), 2 for a bad argument.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <kernattn/kernattn.hpp>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace kernels = kernattn::kernels;
namespace magnitude = kernattn::magnitude;
namespace mask = kernattn::mask;
using kernattn::Attention;
using kernattn::Index;
using Mat = kernattn::Matrix<float>;

constexpr Index kTokens = 1024;  // N: queries = keys
constexpr Index kHeadDim = 64;   // d
constexpr Index kValueDim = 64;  // dv
constexpr int kWarmUpRuns = 5;   // untimed calls first (caches, page faults, clock ramp-up)
constexpr int kTimedRuns = 9;    // each time is the median of this many calls
constexpr unsigned kSeed = 42;
constexpr double kSelfCheckTolerance = 1e-5;

/// A rows x cols matrix of entries uniform on [-sqrt 3, sqrt 3) (mean 0, variance 1). The bits of
/// std::mt19937 are fixed by the standard, so the problem is the same on every platform.
Mat random_matrix(Index rows, Index cols, std::mt19937& generator) {
  Mat m(rows, cols);
  for (Index j = 0; j < cols; ++j)
    for (Index i = 0; i < rows; ++i)
      m(i, j) = float((double(generator()) / 4294967296.0 * 2.0 - 1.0) * 1.7320508075688772);
  return m;
}

/// One line of the table.
struct Result {
  std::string name;
  double milliseconds;
  double relative_difference;  // ||out - out_softmax||_F / ||out_softmax||_F
};

/// Runs every configuration on the same inputs; the first one run is the softmax reference.
class Comparison {
 public:
  explicit Comparison(int threads) {
    options_.threads = threads;
    std::mt19937 generator(kSeed);
    Q_ = random_matrix(kTokens, kHeadDim, generator);
    K_ = random_matrix(kTokens, kHeadDim, generator);
    V_ = random_matrix(kTokens, kValueDim, generator);
  }

  /// Times `Attention<Kernel, Magnitude, Mask>` and records its distance from the reference.
  template <class Kernel, class Magnitude = magnitude::None, class Mask = mask::None>
  void run(std::string name, Kernel kernel, Magnitude mu = {}, Mask filter = {}) {
    const Attention<Kernel, Magnitude, Mask> attention(kernel, mu, filter, options_);
    Mat out(kTokens, kValueDim);
    for (int call = 0; call < kWarmUpRuns; ++call) attention.compute(Q_, K_, V_, out);
    std::vector<double> times;
    for (int call = 0; call < kTimedRuns; ++call) {
      const auto start = std::chrono::steady_clock::now();
      attention.compute(Q_, K_, V_, out);
      times.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count());
    }
    std::nth_element(times.begin(), times.begin() + kTimedRuns / 2, times.end());

    if (reference_.size() == 0) reference_ = out;
    const double difference = double((out - reference_).norm() / reference_.norm());
    results_.push_back({std::move(name), times[kTimedRuns / 2], difference});
  }

  [[nodiscard]] const std::vector<Result>& results() const { return results_; }

 private:
  kernattn::ExecutionOptions options_;
  Mat Q_, K_, V_;
  Mat reference_;
  std::vector<Result> results_;
};

/// Parses `--threads N`; returns false on anything else.
bool parse_arguments(int argc, char** argv, int& threads) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument = argv[i];
    if (argument != "--threads" || i + 1 == argc) return false;
    char* end = nullptr;
    const long value = std::strtol(argv[++i], &end, 10);
    if (*end != '\0' || end == argv[i] || value < 0 || value > 1024) return false;
    threads = int(value);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1;
  if (!parse_arguments(argc, argv, threads)) {
    std::fprintf(stderr, "usage: %s [--threads N]   (N >= 0; 0 = the OpenMP default)\n", argv[0]);
    return 2;
  }
  const double gflop = 4.0 * double(kTokens) * double(kTokens) * double(kHeadDim) * 1e-9;

  std::puts("kernattn: every kernel on one attention problem");
  std::printf("  N = %ld queries and keys, d = %ld, dv = %ld, float, %d thread(s)\n", long(kTokens),
              long(kHeadDim), long(kValueDim), kernattn::resolve_thread_count(threads));
  std::printf("  Q, K, V uniform, mean 0, variance 1 (seed %u); time = median of %d calls\n", kSeed,
              kTimedRuns);
  std::puts("  GFLOP/s = 4 N^2 d / time (Q K^T plus the product with V)");
  std::puts(
      "  exp(q.k/s) = RBF(q, k) * exp(|q|^2/(2s)) * exp(|k|^2/(2s)), s = sqrt(d) = RBF variance:");
  std::puts(
      "  the query factor cancels, so RBF x L2 magnitude exp(|k|^2/(2s)) IS softmax attention\n");

  Comparison comparison(threads);
  // The reference first: scaled dot-product (softmax) attention.
  comparison.run("softmax (Exponential kernel)", kernels::Exponential<float>{});
  // The decomposition: the same weights, computed as a kernel times a magnitude.
  comparison.run("RBF x L2 magnitude (= softmax)", kernels::Rbf<float>{}, magnitude::L2<float>{});
  // Other p-norms in the magnitude weight the keys differently (p is a runtime value here).
  comparison.run("RBF x Lp magnitude, p = 1", kernels::Rbf<float>{}, magnitude::Lp<float>(1.0f));
  comparison.run("RBF x Lp magnitude, p = 3", kernels::Rbf<float>{}, magnitude::Lp<float>(3.0f));
  comparison.run("RBF alone (no magnitude)", kernels::Rbf<float>{});
  // Distance kernels: a function of |q - k|, via a GEMM for the squared distances.
  comparison.run("Laplacian (Matern 1/2)", kernels::Laplacian<float>{});
  comparison.run("Matern 3/2", kernels::Matern32<float>{});
  comparison.run("Matern 5/2", kernels::Matern52<float>{});
  comparison.run("rational quadratic (alpha = 1)", kernels::RationalQuadratic<float>{});
  // Direct kernels: weights that may be zero or negative, normalised by their plain sum.
  comparison.run("polynomial (degree 2)", kernels::Polynomial<float>{});
  comparison.run("linear (q.k)", kernels::Linear<float>{});
  // A set filter: query i sees keys 0..i only (key tiles above the diagonal are skipped).
  comparison.run("softmax, causal mask", kernels::Exponential<float>{}, magnitude::None{},
                 mask::Causal{});

  std::printf("%-32s %10s %9s  %s\n", "kernel x magnitude", "time [ms]", "GFLOP/s",
              "relative difference from softmax");
  for (const Result& result : comparison.results())
    std::printf("%-32s %10.3f %9.1f  %.2e\n", result.name.c_str(), result.milliseconds,
                gflop / (result.milliseconds * 1e-3), result.relative_difference);
  std::puts("\nrelative difference = ||out - out_softmax||_F / ||out_softmax||_F");
  std::puts("RBF x L2 is bit-identical: its key terms -|k|^2/(2s) and +|k|^2/(2s) are computed in");
  std::puts("double and cancel exactly, leaving the scores q.k/s of softmax. The causal row skips");
  std::puts("the key tiles above the diagonal but is credited with all 4 N^2 d flops. The linear");
  std::puts(
      "kernel's weights can sum to nearly zero for some queries, so its outputs can be large.");

  // The self-check: RBF x L2 must be softmax up to float rounding.
  const double decomposition_error = comparison.results()[1].relative_difference;
  const bool ok = decomposition_error <= kSelfCheckTolerance;
  std::printf("\nself-check: RBF x L2 magnitude vs softmax: %.2e (tolerance %.0e): %s\n",
              decomposition_error, kSelfCheckTolerance, ok ? "OK" : "FAILED");
  return ok ? 0 : 1;
}
