// compare_kernels: every kernel of kernattn on one random attention problem.
//
// Attention is a kernel smoother: out_i = sum_j w_ij v_j / sum_j w_ij with
// w_ij = kappa(q_i, k_j) * mu(k_j), a kernel kappa times a per-key magnitude mu. Softmax attention
// is one choice; this program runs it and the other kernels on the same Q, K, V and prints, for
// each, the time of one call, its throughput and how far its output is from softmax's.
//
// A second table runs random-feature estimates of some of these kernels (Fourier features of a
// spectral sampler, FAVOR+ positive features) in linear time, and the quadratic implicit kernel
// attention reference, each with its distance from the exact kernel it estimates.
//
// Usage: compare_kernels [--threads N]      (default: 1 thread; 0 = the OpenMP default)
//
// Exit status: 0; 1 when a self-check fails: RBF x L2 magnitude does not reproduce softmax
// attention (it must, up to rounding: see the decomposition printed in the header), a
// random-feature estimate is further from its exact kernel than kErrorConstant / sqrt(M), the
// linear engine disagrees with the quadratic engine on the same features, or an output is not
// finite; 2 for a bad argument.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <kernattn/kernattn.hpp>
#include <numbers>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace kernels = kernattn::kernels;
namespace magnitude = kernattn::magnitude;
namespace mask = kernattn::mask;
namespace features = kernattn::features;
namespace spectral = kernattn::spectral;
using kernattn::Attention;
using kernattn::Index;
using kernattn::LinearAttention;
using Mat = kernattn::Matrix<float>;

constexpr Index kTokens = 1024;  // N: queries = keys
constexpr Index kHeadDim = 64;   // d
constexpr Index kValueDim = 64;  // dv
constexpr int kWarmUpRuns = 5;   // untimed calls first (caches, page faults, clock ramp-up)
constexpr int kTimedRuns = 9;    // each time is the median of this many calls
constexpr unsigned kSeed = 42;
constexpr double kSelfCheckTolerance = 1e-5;
constexpr Index kFrequencies = 256;  // M, random frequencies per feature map
/// Every random-feature row must have a mean |out - out_exact| below kErrorConstant / sqrt(M)
/// (0.31 for M = 256): an estimate that has lost its kernel (a wrong scale, a broken
/// denominator) gives errors of the order of |v| ~ 0.9. The worst correct row here is FAVOR+
/// causal, about 0.2 (0.17 to 0.24 over 20 random streams).
constexpr double kErrorConstant = 5.0;
/// The linear engine against the quadratic engine (Attention<RandomFeature<Map>>) on the same
/// features: the same weights, summed in another order (relative Frobenius difference).
constexpr double kEngineTolerance = 1e-4;

/// A rows x cols matrix of entries uniform on [-sqrt 3, sqrt 3) (mean 0, variance 1). The bits of
/// std::mt19937 are fixed by the standard, so the problem is the same on every platform.
Mat random_matrix(Index rows, Index cols, std::mt19937& generator) {
  Mat m(rows, cols);
  for (Index j = 0; j < cols; ++j)
    for (Index i = 0; i < rows; ++i)
      m(i, j) = float((double(generator()) / 4294967296.0 * 2.0 - 1.0) * 1.7320508075688772);
  return m;
}

/// The median time of kTimedRuns calls of `compute()`, after kWarmUpRuns untimed ones.
template <class Compute>
double median_milliseconds(Compute&& compute) {
  for (int call = 0; call < kWarmUpRuns; ++call) compute();
  std::vector<double> times;
  for (int call = 0; call < kTimedRuns; ++call) {
    const auto start = std::chrono::steady_clock::now();
    compute();
    times.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
  }
  std::nth_element(times.begin(), times.begin() + kTimedRuns / 2, times.end());
  return times[kTimedRuns / 2];
}

/// One line of the table.
struct Result {
  std::string name;
  double milliseconds;
  double relative_difference;  // ||out - out_softmax||_F / ||out_softmax||_F
};

/// An output and the median time of the call that computed it.
struct Timed {
  Mat out;
  double milliseconds;
};

/// One line of the random-feature table; the optionals are empty when there is no exact kernel.
struct Estimate {
  std::string name;
  double milliseconds;
  std::optional<double> exact_milliseconds;  // the exact Attention with the estimated kernel
  std::optional<double> max_abs_error;       // max |out - out_exact|
  std::optional<double> mean_abs_error;      // mean |out - out_exact|
  std::optional<double> baseline_error;      // mean |uniform weights - out_exact|
  std::string reference;                     // the exact kernel, or why there is none
  bool finite;                               // every output entry is finite
};

/// Runs every configuration on the same inputs; the first one run is the softmax reference.
class Comparison {
 public:
  explicit Comparison(int threads) {
    options_.threads = threads;
    linear_options_.threads = threads;
    std::mt19937 generator(kSeed);
    Q_ = random_matrix(kTokens, kHeadDim, generator);
    K_ = random_matrix(kTokens, kHeadDim, generator);
    V_ = random_matrix(kTokens, kValueDim, generator);
    uniform_weights_ = V_.colwise().mean().replicate(kTokens, 1);
    causal_uniform_weights_.resize(kTokens, kValueDim);
    Eigen::RowVectorXd prefix_sum = Eigen::RowVectorXd::Zero(kValueDim);
    for (Index i = 0; i < kTokens; ++i) {
      prefix_sum += V_.row(i).cast<double>();
      causal_uniform_weights_.row(i) = (prefix_sum / double(i + 1)).cast<float>();
    }
  }

  [[nodiscard]] const kernattn::ExecutionOptions& options() const { return options_; }
  [[nodiscard]] const kernattn::LinearOptions& linear_options() const { return linear_options_; }

  /// Times `attention.compute(Q, K, V, out)` (any engine) and returns its output.
  template <class AttentionT>
  [[nodiscard]] Timed evaluate(const AttentionT& attention) const {
    Timed timed{Mat(kTokens, kValueDim), 0.0};
    timed.milliseconds = median_milliseconds([&] { attention.compute(Q_, K_, V_, timed.out); });
    return timed;
  }

  /// Times `Attention<Kernel, Magnitude, Mask>` and records its distance from the reference.
  template <class Kernel, class Magnitude = magnitude::None, class Mask = mask::None>
  void run(std::string name, Kernel kernel, Magnitude mu = {}, Mask filter = {}) {
    const Timed timed = evaluate(Attention<Kernel, Magnitude, Mask>(kernel, mu, filter, options_));
    if (reference_.size() == 0) reference_ = timed.out;
    const double difference = double((timed.out - reference_).norm() / reference_.norm());
    results_.push_back({std::move(name), timed.milliseconds, difference});
  }

  /// Times the estimate `estimator` and compares it with `exact` (an exact Attention) when given;
  /// `causal` says whether they use the causal mask (for the uniform-weights baseline).
  template <class Estimator>
  void estimate(std::string name, const Estimator& estimator, const Timed* exact,
                std::string reference, bool causal = false) {
    const Timed timed = evaluate(estimator);
    Estimate row{std::move(name),      timed.milliseconds,   {}, {}, {}, {},
                 std::move(reference), timed.out.allFinite()};
    if (exact != nullptr) {
      const Mat difference = (timed.out - exact->out).cwiseAbs();
      row.exact_milliseconds = exact->milliseconds;
      row.max_abs_error = double(difference.maxCoeff());
      row.mean_abs_error = double(difference.mean());
      const Mat& uniform = causal ? causal_uniform_weights_ : uniform_weights_;
      row.baseline_error = double((uniform - exact->out).cwiseAbs().mean());
    }
    estimates_.push_back(std::move(row));
  }

  /// ||a(Q, K, V) - b(Q, K, V)||_F / ||b(Q, K, V)||_F, untimed.
  template <class A, class B>
  [[nodiscard]] double relative_difference(const A& a, const B& b) const {
    const Mat out_b = b(Q_, K_, V_);
    return double((a(Q_, K_, V_) - out_b).norm() / out_b.norm());
  }

  [[nodiscard]] const std::vector<Result>& results() const { return results_; }
  [[nodiscard]] const std::vector<Estimate>& estimates() const { return estimates_; }

 private:
  kernattn::ExecutionOptions options_;
  kernattn::LinearOptions linear_options_;
  Mat Q_, K_, V_;
  Mat uniform_weights_;         // every row mean_j v_j: the output of uniform weights
  Mat causal_uniform_weights_;  // row i mean_{j <= i} v_j: the same under the causal mask
  Mat reference_;
  std::vector<Result> results_;
  std::vector<Estimate> estimates_;
};

/// `value` printed with `format`.
std::string format_number(double value, const char* format) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, format, value);
  return buffer;
}

/// `value` printed with `format`, or "n/a".
std::string format_optional(const std::optional<double>& value, const char* format) {
  return value ? format_number(*value, format) : "n/a";
}

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

/// The random-feature rows: each estimate timed and compared with the exact Attention of the
/// kernel it estimates, printed as a second table. Appends its self-checks' lines to `checks`
/// and returns whether they hold.
bool random_feature_table(Comparison& comparison, std::vector<std::string>& checks) {
  using Fourier = features::Fourier<float>;
  using Positive = features::Positive<float>;
  using Gaussian = spectral::Gaussian<float>;
  const kernattn::ExecutionOptions& exact_options = comparison.options();
  const kernattn::LinearOptions& linear_options = comparison.linear_options();
  const kernattn::random::RandomStream stream{kSeed, 0};
  const std::string m = "M=" + std::to_string(kFrequencies);

  // l = sqrt(d): |q - k|^2 is about 2d for these inputs, so the kernels take values near e^-1
  // (at the softmax RBF's l = d^(1/4) every value would be about e^-8, far below the noise of
  // an estimate from M = 256 frequencies). Rbf takes the variance l^2, the samplers l.
  const float lengthscale = std::sqrt(float(kHeadDim));
  const Fourier rbf_map =
      Fourier::draw(Gaussian(lengthscale), kFrequencies, kHeadDim, stream.with_stream(1));
  const Fourier orthogonal_map =
      Fourier::draw(spectral::Orthogonal<Gaussian>(Gaussian(lengthscale)), kFrequencies, kHeadDim,
                    stream.with_stream(2));
  // Student-t with nu' = 3 degrees of freedom: the spectral density of Matern nu = 3/2.
  const Fourier matern_map = Fourier::draw(spectral::StudentT<float>(3.0f, lengthscale),
                                           kFrequencies, kHeadDim, stream.with_stream(3));
  // FAVOR+: orthogonal standard normal frequencies, input scale d^(-1/4), for exp(q.k/sqrt(d)).
  const Positive favor_map = Positive::draw(kFrequencies, kHeadDim, stream.with_stream(4));
  // The official layout of implicit kernel attention: W1, W2 are d x M, used at frequency scale
  // 2 pi; drawn here so that 2 pi W ~ N(0, 1/l^2).
  const Gaussian ika_sampler(2.0f * std::numbers::pi_v<float> * lengthscale);
  const Mat w1 =
      spectral::draw_frequencies(ika_sampler, kFrequencies, kHeadDim, stream.with_stream(5))
          .transpose();
  const Mat w2 =
      spectral::draw_frequencies(ika_sampler, kFrequencies, kHeadDim, stream.with_stream(6))
          .transpose();

  const Timed exact_rbf = comparison.evaluate(Attention<kernels::Rbf<float>>(
      kernels::Rbf<float>(lengthscale * lengthscale), {}, {}, exact_options));
  const Timed exact_matern = comparison.evaluate(Attention<kernels::Matern32<float>>(
      kernels::Matern32<float>(lengthscale), {}, {}, exact_options));
  const Timed exact_softmax =
      comparison.evaluate(Attention<kernels::Exponential<float>>({}, {}, {}, exact_options));
  const Timed exact_causal =
      comparison.evaluate(Attention<kernels::Exponential<float>, magnitude::None, mask::Causal>(
          {}, {}, {}, exact_options));

  comparison.estimate("Fourier RBF (" + m + "), linear",
                      LinearAttention<Fourier>(rbf_map, {}, {}, linear_options), &exact_rbf,
                      "RBF, variance l^2");
  comparison.estimate("Orthogonal RBF (" + m + "), linear",
                      LinearAttention<Fourier>(orthogonal_map, {}, {}, linear_options), &exact_rbf,
                      "RBF, variance l^2");
  comparison.estimate("Fourier Matern 3/2 (StudentT, " + m + ")",
                      LinearAttention<Fourier>(matern_map, {}, {}, linear_options), &exact_matern,
                      "Matern 3/2, lengthscale l");
  comparison.estimate("Positive/FAVOR+ (" + m + "), linear",
                      LinearAttention<Positive>(favor_map, {}, {}, linear_options), &exact_softmax,
                      "softmax");
  comparison.estimate("Positive/FAVOR+ causal (" + m + ")",
                      LinearAttention<Positive, magnitude::None, mask::Causal>(
                          favor_map, {}, mask::Causal{}, linear_options),
                      &exact_causal, "softmax, causal mask", true);
  comparison.estimate("IKA reference (" + m + "), quadratic",
                      kernattn::make_ika_reference(w1, w2, 2.0f, mask::None{}, exact_options),
                      nullptr, "none (implicit kernel)");

  std::printf("\nrandom-feature estimates (same Q, K, V; M = %ld frequencies, l = sqrt(d) = %g)\n",
              long(kFrequencies), double(lengthscale));
  std::printf("%-38s %9s %8s %10s %11s %9s  %s\n", "estimate", "time [ms]", "speed-up",
              "max |diff|", "mean |diff|", "baseline", "exact kernel");
  for (const Estimate& row : comparison.estimates()) {
    const std::string speed_up =
        row.exact_milliseconds ? format_number(*row.exact_milliseconds / row.milliseconds, "%.1fx")
                               : "n/a";
    std::printf("%-38s %9.3f %8s %10s %11s %9s  %s\n", row.name.c_str(), row.milliseconds,
                speed_up.c_str(), format_optional(row.max_abs_error, "%.4f").c_str(),
                format_optional(row.mean_abs_error, "%.5f").c_str(),
                format_optional(row.baseline_error, "%.5f").c_str(), row.reference.c_str());
  }
  std::puts(
      "\n|diff| = |out - out_exact| over all N x dv outputs; out_exact is the exact Attention");
  std::puts(
      "with the estimated kernel, and speed-up = the exact Attention's time / the estimate's");
  std::puts(
      "time. baseline = mean |diff| of uniform weights (the mean of the values a query sees):");
  std::puts("an estimate says something about its kernel only well below it. For these isotropic");
  std::puts("inputs |q - k|^2 is about 2d = 128 +- 19, so at l = sqrt(d) the stationary kernels'");
  std::puts("log-weights vary by only about 0.15. FAVOR+ estimates exp(q.k/sqrt(d)) with relative");
  std::puts("variance exp(|q + k|^2/sqrt(d)) - 1, about e^16 per frequency here (|q|^2 ~ d): far");
  std::puts("from softmax at M = 256. The IKA reference (p = 2, W1 and W2 d x M) is the official");
  std::puts("quadratic engine of an implicit kernel, which has no closed form: no exact kernel.");

  // Self-checks: every estimate close to its kernel, the engines agree, the outputs are finite.
  bool ok = true;
  const double bound = kErrorConstant / std::sqrt(double(kFrequencies));
  double worst = 0.0;
  for (const Estimate& row : comparison.estimates()) {
    if (!row.finite) {
      checks.push_back("self-check FAILED: " + row.name + " has non-finite outputs");
      ok = false;
    }
    if (!row.mean_abs_error) continue;
    worst = std::max(worst, *row.mean_abs_error);
    if (!(*row.mean_abs_error <= bound)) {
      checks.push_back("self-check FAILED: " + row.name + ": mean |diff| " +
                       format_number(*row.mean_abs_error, "%.4f") + " > bound");
      ok = false;
    }
  }
  checks.push_back("self-check: random features, largest mean |diff| " +
                   format_number(worst, "%.4f") + " (bound " + format_number(kErrorConstant, "%g") +
                   " / sqrt(M) = " + format_number(bound, "%.4f") +
                   "): " + (worst <= bound ? "OK" : "FAILED"));

  // The linear engine computes the weights of Attention<RandomFeature<Map>> in O(N M d).
  const double fourier_engines = comparison.relative_difference(
      LinearAttention<Fourier>(rbf_map, {}, {}, linear_options),
      Attention<kernels::RandomFeature<Fourier>>(kernels::RandomFeature<Fourier>(rbf_map), {}, {},
                                                 exact_options));
  const double positive_engines = comparison.relative_difference(
      LinearAttention<Positive>(favor_map, {}, {}, linear_options),
      Attention<kernels::RandomFeature<Positive>>(kernels::RandomFeature<Positive>(favor_map), {},
                                                  {}, exact_options));
  const double causal_engines = comparison.relative_difference(
      LinearAttention<Positive, magnitude::None, mask::Causal>(favor_map, {}, mask::Causal{},
                                                               linear_options),
      Attention<kernels::RandomFeature<Positive>, magnitude::None, mask::Causal>(
          kernels::RandomFeature<Positive>(favor_map), {}, mask::Causal{}, exact_options));
  const bool engines_ok = fourier_engines <= kEngineTolerance &&
                          positive_engines <= kEngineTolerance &&
                          causal_engines <= kEngineTolerance;
  checks.push_back("self-check: linear vs quadratic engine, same features (tolerance " +
                   format_number(kEngineTolerance, "%.0e") +
                   "): " + (engines_ok ? "OK" : "FAILED"));
  checks.push_back("  Fourier RBF " + format_number(fourier_engines, "%.1e") + ", FAVOR+ " +
                   format_number(positive_engines, "%.1e") + ", FAVOR+ causal " +
                   format_number(causal_engines, "%.1e"));
  return ok && engines_ok;
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
  const bool decomposition_ok = decomposition_error <= kSelfCheckTolerance;

  std::vector<std::string> checks;
  const bool estimates_ok = random_feature_table(comparison, checks);

  std::printf("\nself-check: RBF x L2 magnitude vs softmax: %.2e (tolerance %.0e): %s\n",
              decomposition_error, kSelfCheckTolerance, decomposition_ok ? "OK" : "FAILED");
  for (const std::string& line : checks) std::puts(line.c_str());
  const bool ok = decomposition_ok && estimates_ok;
  if (!ok) std::puts("self-check FAILED");
  return ok ? 0 : 1;
}
