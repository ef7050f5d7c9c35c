// Accuracy against cost of the random-feature estimators (estimator_accuracy.hpp).
//
// The inputs, fixed per (inputs, n, d); every random number comes from a `RandomStream` of seed
// kInputSeed (row-major, so the first n rows do not depend on n), normals as Phi^-1 of its
// uniforms, so the inputs are the same on every platform:
//  - unit: Q, K, V with i.i.d. entries uniform on [-sqrt 3, sqrt 3) (mean 0, variance 1), as in
//    the other benchmarks (not the same numbers).
//  - trained: a synthetic stand-in for the queries and keys of a trained model, not taken from
//    one. Per-coordinate scales a_i = exp(0.5 z_i), z_i ~ N(0, 1) (log-normal), and the first
//    ceil(d/32) coordinates 4 a_i (outliers); a key mean m = |a| u, u a fixed random unit vector
//    (as long as the typical random part of a key, so the keys share a direction); then
//        q_j = c (a o g_j),   k_j = c (a o h_j + m),   g_j, h_j ~ N(0, I_d),
//    with c = (9 d / sum_i a_i^4)^(1/4), so that the logits q.k_j / sqrt(d) of a query over the
//    keys have variance 9 on average over queries: a standard deviation of 3 within a row, what
//    softmax sees. Measured at N = 1024, d = 64: within-row standard deviation 3.02 (root mean
//    square over the queries), 3.70 over all N^2 pairs (which adds the per-query offset q.c m);
//    softmax then spreads a query over about 28 keys (1 / sum_j w_ij^2, mean over queries;
//    about 390 for unit), the two outlier coordinates carry 22 % of sum_i a_i^4 and the scales
//    range over [0.33, 3.4]. V is that of unit.
//
// The implicit estimator's generator (`spectral::MlpGenerator<float>`, sign-symmetric as in the
// official IKA code, LeakyReLU slope 0.2): d -> d -> d, the weights of layer 1 N(0, 2/d), its bias
// N(0, 1/4), layer 2 N(0, 1/d), its bias N(0, 1/100), drawn from stream 0 of seed kGeneratorSeed
// in that order, then layer 2 (weights and bias) scaled so that the mean of |omega|^2 over the
// first 4096 frequencies of stream 1 is 1, then rounded to float (the double reference uses the
// same weights). Its frequencies have the size of those of a Gaussian of lengthscale sqrt(d) (the
// lengthscale of compare_kernels' Fourier rows): wider than softmax's RBF (lengthscale d^(1/4)),
// so its kernel is not negligible at the typical distances |q - k| ~ sqrt(2 d) of unit inputs and
// the reference of 2^15 frequencies resolves it.
#include "estimator_accuracy.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <utility>

#include "comparison.hpp"

namespace kernattn_bench {

namespace {

namespace features = kernattn::features;
namespace kernels = kernattn::kernels;
namespace magnitude = kernattn::magnitude;
namespace spectral = kernattn::spectral;
using kernattn::Attention;
using kernattn::Index;
using kernattn::LinearAttention;
using kernattn::random::RandomStream;
using MatrixF = kernattn::Matrix<float>;
using MatrixD = kernattn::Matrix<double>;

constexpr std::uint64_t kInputSeed = 9000;
constexpr std::uint64_t kFrequencySeed = 9100;  // draw s at M: stream s of seed kFrequencySeed + M
constexpr std::uint64_t kReferenceSeed = 9200;  // the implicit reference's frequencies, stream 0
constexpr std::uint64_t kGeneratorSeed = 9300;
constexpr Index kReferenceFrequencies = Index(1) << 15;
constexpr Index kCalibrationFrequencies = 4096;
constexpr int kWarmUpCalls = 2;
constexpr int kTimedCalls = 5;
constexpr double kTrainedLogitSd = 3.0;
constexpr double kTrainedLogScaleSd = 0.5;
constexpr double kTrainedOutlierFactor = 4.0;
constexpr Index kTrainedDimensionsPerOutlier = 32;

/// Standard normals Phi^-1(u) of the uniforms of `stream`, row-major: entry (j, i) is uniform
/// j cols + i, so a larger `rows` extends a smaller one.
MatrixD normals(Index rows, Index cols, RandomStream stream) {
  MatrixD m(rows, cols);
  for (Index j = 0; j < rows; ++j)
    for (Index i = 0; i < cols; ++i)
      m(j, i) = kernattn::random::normal_quantile(stream.uniform(std::uint64_t(j * cols + i)));
  return m;
}

/// Entries uniform on [-sqrt 3, sqrt 3), row-major as `normals`.
MatrixD unit_variance_uniforms(Index rows, Index cols, RandomStream stream) {
  MatrixD m(rows, cols);
  for (Index j = 0; j < rows; ++j)
    for (Index i = 0; i < cols; ++i)
      m(j, i) = (2.0 * stream.uniform(std::uint64_t(j * cols + i)) - 1.0) * std::sqrt(3.0);
  return m;
}

/// One problem, in float; the double references use it converted (exactly).
struct Inputs {
  MatrixF Q, K, V;
};

/// The inputs of the file's top comment.
Inputs make_inputs(const std::string& kind, Index n, Index d) {
  const RandomStream stream{kInputSeed, 0};
  Inputs inputs;
  inputs.V = unit_variance_uniforms(n, d, stream.with_stream(2)).cast<float>();
  if (kind == "unit") {
    inputs.Q = unit_variance_uniforms(n, d, stream.with_stream(0)).cast<float>();
    inputs.K = unit_variance_uniforms(n, d, stream.with_stream(1)).cast<float>();
    return inputs;
  }
  Eigen::RowVectorXd scales =
      (kTrainedLogScaleSd * normals(1, d, stream.with_stream(3))).array().exp();
  const Index outliers = (d + kTrainedDimensionsPerOutlier - 1) / kTrainedDimensionsPerOutlier;
  scales.head(outliers) *= kTrainedOutlierFactor;
  const Eigen::RowVectorXd direction = normals(1, d, stream.with_stream(4)).normalized();
  const Eigen::RowVectorXd key_mean = scales.norm() * direction;
  const double c =
      std::pow(kTrainedLogitSd * kTrainedLogitSd * double(d) / scales.array().pow(4).sum(), 0.25);
  const MatrixD g = normals(n, d, stream.with_stream(0));
  const MatrixD h = normals(n, d, stream.with_stream(1));
  inputs.Q = (c * (g.array().rowwise() * scales.array())).cast<float>();
  inputs.K =
      (c * ((h.array().rowwise() * scales.array()).rowwise() + key_mean.array())).cast<float>();
  return inputs;
}

/// The median time of kTimedCalls calls of `compute()`, after kWarmUpCalls untimed ones.
template <class Compute>
double median_milliseconds(Compute&& compute) {
  for (int call = 0; call < kWarmUpCalls; ++call) compute();
  std::vector<double> times;
  for (int call = 0; call < kTimedCalls; ++call) {
    const auto start = std::chrono::steady_clock::now();
    compute();
    times.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
  }
  std::nth_element(times.begin(), times.begin() + kTimedCalls / 2, times.end());
  return times[kTimedCalls / 2];
}

/// ||out - exact||_F / ||exact||_F in double.
double relative_error(const MatrixF& out, const MatrixD& exact) {
  return (out.cast<double>() - exact).norm() / exact.norm();
}

/// The implicit estimator's generator (the file's top comment), in T from the float weights.
template <class T>
spectral::MlpGenerator<T> implicit_generator(Index d) {
  using Layer = typename spectral::MlpGenerator<double>::Layer;
  const RandomStream stream{kGeneratorSeed, 0};
  const MatrixD draws = normals(1, 2 * d * d + 2 * d, stream);
  Index at = 0;
  const auto next = [&](Index rows, Index cols, double sd) {
    MatrixD block = sd * draws.middleCols(at, rows * cols).reshaped(rows, cols);
    at += rows * cols;
    return block;
  };
  std::vector<Layer> layers(2);
  layers[0].weights = next(d, d, std::sqrt(2.0 / double(d)));
  layers[0].bias = next(d, 1, 0.5);
  layers[1].weights = next(d, d, std::sqrt(1.0 / double(d)));
  layers[1].bias = next(d, 1, 0.1);
  const spectral::Implicit<spectral::MlpGenerator<double>> unscaled(
      spectral::MlpGenerator<double>(layers, spectral::MlpForm::sign_symmetric));
  const MatrixD omega =
      spectral::draw_frequencies(unscaled, kCalibrationFrequencies, d, stream.with_stream(1));
  const double scale = 1.0 / std::sqrt(omega.rowwise().squaredNorm().mean());
  layers[1].weights *= scale;
  layers[1].bias *= scale;
  std::vector<typename spectral::MlpGenerator<T>::Layer> rounded;
  for (const Layer& layer : layers)
    rounded.push_back({layer.weights.cast<float>().cast<T>(), layer.bias.cast<float>().cast<T>()});
  return spectral::MlpGenerator<T>(std::move(rounded), spectral::MlpForm::sign_symmetric);
}

/// The exact (or, for implicit, reference) output in double, its time in float and its words.
struct Reference {
  MatrixD out;
  double time_ms;
  std::string words;
};

/// `value` as "1.2e-03".
std::string scientific(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.1e", value);
  return buffer;
}

/// The reference of `estimator` (estimator_accuracy.hpp) on `inputs`.
Reference make_reference(const std::string& estimator, const Inputs& inputs, int threads) {
  kernattn::ExecutionOptions options;
  options.threads = threads;
  kernattn::LinearOptions linear_options;
  linear_options.threads = threads;
  const MatrixD Q = inputs.Q.cast<double>(), K = inputs.K.cast<double>(),
                V = inputs.V.cast<double>();
  MatrixF out(inputs.Q.rows(), inputs.V.cols());
  const auto float_time_ms = [&](const auto& attention) {
    return median_milliseconds([&] { attention.compute(inputs.Q, inputs.K, inputs.V, out); });
  };
  const Attention<kernels::Exponential<double>> softmax({}, {}, {}, options);
  const Attention<kernels::Exponential<float>> softmax_float({}, {}, {}, options);
  if (estimator == "favor")
    return {softmax(Q, K, V), float_time_ms(softmax_float), "softmax, exact, double"};
  if (estimator == "implicit") {
    using Sampler = spectral::Implicit<spectral::MlpGenerator<double>>;
    const auto map = features::Fourier<double>::draw(
        Sampler(implicit_generator<double>(inputs.Q.cols())), kReferenceFrequencies,
        inputs.Q.cols(), RandomStream{kReferenceSeed, 0});
    const LinearAttention<features::Fourier<double>, magnitude::Lp<double>> reference(
        map, magnitude::Lp<double>(2.0), {}, linear_options);
    return {reference(Q, K, V), float_time_ms(softmax_float),
            "the same estimator, double, M_ref = 2^15 independent frequencies (own error ~ "
            "M_ref^-1/2); exact time: softmax"};
  }
  // Fourier features of the Student-t (nu' = 3, 5) and Gamma scale-mixture samplers at their
  // default lengthscale d^(1/4): the Matern 3/2, 5/2 and rational-quadratic kernels at theirs.
  const auto exact_with_l2 = [&](auto kernel, auto float_kernel, const char* words) {
    const Attention<decltype(kernel), magnitude::Lp<double>> exact(
        kernel, magnitude::Lp<double>(2.0), {}, options);
    const Attention<decltype(float_kernel), magnitude::Lp<float>> exact_float(
        float_kernel, magnitude::Lp<float>(2.0f), {}, options);
    return Reference{exact(Q, K, V), float_time_ms(exact_float), words};
  };
  if (estimator == "fourier-matern32")
    return exact_with_l2(kernels::Matern32<double>{}, kernels::Matern32<float>{},
                         "Matern 3/2 x L2 magnitude, exact, double");
  if (estimator == "fourier-matern52")
    return exact_with_l2(kernels::Matern52<double>{}, kernels::Matern52<float>{},
                         "Matern 5/2 x L2 magnitude, exact, double");
  if (estimator == "fourier-rq")
    return exact_with_l2(kernels::RationalQuadratic<double>{}, kernels::RationalQuadratic<float>{},
                         "rational quadratic (alpha = 1) x L2 magnitude, exact, double");
  const Attention<kernels::Rbf<double>, magnitude::Lp<double>> rbf_l2(
      kernels::Rbf<double>{}, magnitude::Lp<double>(2.0), {}, options);
  const Attention<kernels::Rbf<float>, magnitude::Lp<float>> rbf_l2_float(
      kernels::Rbf<float>{}, magnitude::Lp<float>(2.0f), {}, options);
  MatrixD exact = rbf_l2(Q, K, V);
  const MatrixD exact_softmax = softmax(Q, K, V);
  const double from_softmax = (exact - exact_softmax).norm() / exact_softmax.norm();
  return {std::move(exact), float_time_ms(rbf_l2_float),
          "RBF (variance sqrt d) x L2 magnitude, exact, double (= softmax to " +
              scientific(from_softmax) + ")"};
}

/// The points of `estimator` at every M of `frequencies`; `estimate(M, stream)` returns its float
/// LinearAttention with M frequencies drawn from `stream`.
template <class Estimate>
std::vector<AccuracyPoint> curve(const std::string& estimator, const std::string& inputs_name,
                                 const std::vector<Index>& frequencies, const Inputs& inputs,
                                 int seeds, const Estimate& estimate, const Reference& reference) {
  std::vector<AccuracyPoint> points;
  MatrixF out(inputs.Q.rows(), inputs.V.cols());
  const MatrixF uniform = MatrixF::Ones(inputs.Q.rows(), 1) * inputs.V.colwise().mean();
  const double uniform_error = relative_error(uniform, reference.out);
  for (const Index M : frequencies) {
    double error_sum = 0;
    for (int s = 0; s < seeds; ++s) {
      const auto attention =
          estimate(M, RandomStream{kFrequencySeed + std::uint64_t(M), std::uint64_t(s)});
      attention.compute(inputs.Q, inputs.K, inputs.V, out);
      error_sum += relative_error(out, reference.out);
    }
    const auto attention = estimate(M, RandomStream{kFrequencySeed + std::uint64_t(M), 0});
    const double time_ms =
        median_milliseconds([&] { attention.compute(inputs.Q, inputs.K, inputs.V, out); });
    points.push_back({estimator, inputs_name, M, inputs.Q.rows(), inputs.Q.cols(),
                      error_sum / seeds, uniform_error, time_ms, reference.time_ms,
                      reference.words});
  }
  return points;
}

/// Requires `value` to be one of `names`; the message names `argument` and lists the choices.
void require_choice(const std::string& value, const std::vector<std::string>& names,
                    const char* argument) {
  kernattn::require(std::find(names.begin(), names.end(), value) != names.end(),
                    "estimator_accuracy: unknown ", argument, " '", value,
                    "'; valid: ", joined(names));
}

}  // namespace

const std::vector<std::string>& estimator_names() {
  static const std::vector<std::string> names{"fourier",          "orthogonal", "fourier-matern32",
                                              "fourier-matern52", "fourier-rq", "favor",
                                              "implicit"};
  return names;
}

const std::vector<std::string>& input_names() {
  static const std::vector<std::string> names{"unit", "trained"};
  return names;
}

std::vector<AccuracyPoint> estimator_accuracy(const std::string& estimator,
                                              const std::string& inputs,
                                              const std::vector<Index>& frequencies, Index n,
                                              Index d, int threads, int seeds) {
  require_choice(estimator, estimator_names(), "estimator");
  require_choice(inputs, input_names(), "inputs");
  kernattn::require(!frequencies.empty(),
                    "estimator_accuracy: frequencies (the values of M) must not be empty");
  for (const Index M : frequencies)
    kernattn::require(M >= 1, "estimator_accuracy: every M in frequencies must be >= 1, got ", M);
  kernattn::require(n >= 1, "estimator_accuracy: n (tokens) must be >= 1, got ", n);
  kernattn::require(d >= 1, "estimator_accuracy: d (head dimension) must be >= 1, got ", d);
  kernattn::require(threads >= 0,
                    "estimator_accuracy: threads must be >= 0 (0: the OpenMP default), got ",
                    threads);
  kernattn::require(seeds >= 1, "estimator_accuracy: seeds must be >= 1, got ", seeds);

  const Inputs problem = make_inputs(inputs, n, d);
  const Reference reference = make_reference(estimator, problem, threads);
  kernattn::LinearOptions options;
  options.threads = threads;
  using Fourier = features::Fourier<float>;
  using FourierAttention = LinearAttention<Fourier, magnitude::Lp<float>>;
  using Gaussian = spectral::Gaussian<float>;
  const auto fourier_of = [d, options](const auto& sampler) {
    return [sampler, d, options](Index M, RandomStream stream) {
      return FourierAttention(Fourier::draw(sampler, M, d, stream), magnitude::Lp<float>(2.0f), {},
                              options);
    };
  };
  if (estimator == "fourier")
    return curve(estimator, inputs, frequencies, problem, seeds, fourier_of(Gaussian{}), reference);
  if (estimator == "fourier-matern32")
    return curve(estimator, inputs, frequencies, problem, seeds,
                 fourier_of(spectral::StudentT<float>(3.0f)), reference);
  if (estimator == "fourier-matern52")
    return curve(estimator, inputs, frequencies, problem, seeds,
                 fourier_of(spectral::StudentT<float>(5.0f)), reference);
  if (estimator == "fourier-rq")
    return curve(estimator, inputs, frequencies, problem, seeds,
                 fourier_of(spectral::GammaScaleMixture<float>{}), reference);
  if (estimator == "orthogonal")
    return curve(estimator, inputs, frequencies, problem, seeds,
                 fourier_of(spectral::Orthogonal<Gaussian>{}), reference);
  if (estimator == "implicit")
    return curve(
        estimator, inputs, frequencies, problem, seeds,
        fourier_of(spectral::Implicit<spectral::MlpGenerator<float>>(implicit_generator<float>(d))),
        reference);
  return curve(
      estimator, inputs, frequencies, problem, seeds,
      [d, options](Index M, RandomStream stream) {
        return LinearAttention<features::Positive<float>>(
            features::Positive<float>::draw(M, d, stream), {}, {}, options);
      },
      reference);
}

}  // namespace kernattn_bench
