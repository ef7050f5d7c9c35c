// Backward families of kernattn_bench (docs/gradients.md): d = dv = 64, float, one head, one
// thread unless stated. Each call is one `Attention::backward` given the forward's output and
// row statistics (computed once, outside the timed loop), credited with the 10 N^2 d flops of its
// five products of 2 N^2 d (the scores Q K^T, dOut V^T, P^T dOut, dS^T Q and dS K): 2.5 times the
// 4 N^2 d of the forward, so its GFLOPS read against BM_Softmax's directly.
//
//   BM_SoftmaxBackward/N      Exponential kernel, N in {1024, 4096}
//   BM_RbfLp3Backward/N       RBF x Lp magnitude, p = 3
//   BM_SoftmaxBackward_2T/N   Exponential kernel on two threads, N = 4096
//   BM_T5Backward/N           causal softmax with a T5 relative-position table (32 buckets),
//                             N = 1024, credited with half the flops (the causal half)
//   BM_T5TableGradient/N      the same backward, also differentiating the table
//                             (`ScoreBiasGradient`): its cost is the ratio of the two
//   BM_LinearPositiveBackward/N        LinearAttention<Positive> (M = 256), N in {1024, 4096,
//                                      16384}: `LinearAttention::backward` given the output,
//                                      credited with three times the forward's flops (it
//                                      recomputes the state, then takes the queries' and the
//                                      keys' adjoints, each about one forward)
//   BM_LinearPositiveCausalBackward/N  the same with mask::Causal
//   BM_ImplicitTrainingStep/N  one training step of the implicit kernel with its noise held
//                              fixed: the frequencies Omega = g(noise) of an MlpGenerator
//                              (noise 64 -> 128 -> 64, M = 256), LinearAttention<Fourier>
//                              forward and backward with dOmega, then the generator's
//                              backward (`parameter_gradient(noise, dOmega)`); N = 1024
//   BM_ImplicitGenerator/N     the generator's forward and backward of that step alone: its
//                              share of the step is the ratio of the two
//
// Peak memory: `kernattn_bench --peak-memory-backward` runs the N = 32768 forward with statistics
// and then the backward once, in a process that has allocated nothing else, and prints the peak
// resident set.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <kernattn/kernattn.hpp>

#include "bench_common.hpp"

namespace kernattn_bench {

namespace {

/// 10 N^2 d: five products of 2 N^2 d.
double backward_flops(Index n) { return 2.5 * flops(n); }

/// A forward with statistics, then the timed backward, credited with `flop_share` of
/// `backward_flops`; `extra` (e.g. a `ScoreBiasGradient`) is passed on to `backward` after dV.
template <class AttentionT, class... Extra>
void backward_benchmark(benchmark::State& state, const AttentionT& attention,
                        double flop_share = 1.0, Extra&... extra) {
  const Index n = state.range(0);
  Problem p = make_problem(n);
  Mat statistics;
  attention.compute(p.Q, p.K, p.V, p.out, statistics);
  const Mat dOut = make_problem(n).V.reverse();
  Mat dQ(n, kHeadDim);
  Mat dK(n, kHeadDim);
  Mat dV(n, kHeadDim);
  timed_loop(state, n, flop_share * backward_flops(n), dQ, [&] {
    attention.backward(p.Q, p.K, p.V, p.out, statistics, dOut, dQ, dK, dV, extra...);
  });
}

/// `backward_benchmark` for causal softmax (half the flops) with a T5 table, with or without the
/// table's gradient.
void t5_backward_benchmark(benchmark::State& state, bool table_gradient) {
  const auto biased = kernattn::mask::Causal{} && kernattn::bias::RelativePositions<float>(
                                                      make_problem(32).Q.leftCols(1), false, 128);
  const kernattn::Attention<kernattn::kernels::Exponential<float>, kernattn::magnitude::None,
                            decltype(biased)>
      attention({}, {}, biased, with_threads(1));
  kernattn::ScoreBiasGradient gradient;
  if (table_gradient)
    backward_benchmark(state, attention, 0.5, gradient);
  else
    backward_benchmark(state, attention, 0.5);
}

/// The forward, then the timed linear backward (no statistics).
template <class AttentionT>
void linear_backward_benchmark(benchmark::State& state, const AttentionT& attention) {
  const Index n = state.range(0);
  Problem p = make_problem(n);
  attention.compute(p.Q, p.K, p.V, p.out);
  const Mat dOut = make_problem(n).V.reverse();
  Mat dQ(n, kHeadDim);
  Mat dK(n, kHeadDim);
  Mat dV(n, kHeadDim);
  timed_loop(state, n, 3.0 * linear_flops(n, kFrequencies, kFrequencies), dQ,
             [&] { attention.backward(p.Q, p.K, p.V, p.out, dOut, dQ, dK, dV); });
}

template <class AttentionT>
void register_linear_backward(const char* name, const AttentionT& attention) {
  benchmark::RegisterBenchmark(
      name, [attention](benchmark::State& state) { linear_backward_benchmark(state, attention); })
      ->Arg(1024)
      ->Arg(4096)
      ->Arg(16384)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

template <class AttentionT>
void register_backward(const char* name, const AttentionT& attention,
                       std::initializer_list<Index> sizes) {
  auto* family = benchmark::RegisterBenchmark(
      name, [attention](benchmark::State& state) { backward_benchmark(state, attention); });
  for (const Index n : sizes) family->Arg(n);
  family->UseRealTime()->Unit(benchmark::kMillisecond);
}

/// The implicit sampler of the training-step families: noise 64 -> 128 -> 64, LeakyReLU.
kernattn::spectral::Implicit<kernattn::spectral::MlpGenerator<float>> implicit_sampler() {
  using Generator = kernattn::spectral::MlpGenerator<float>;
  const auto layer = [](Index in, Index out, int seed) {
    std::srand(unsigned(seed));
    return Generator::Layer{Mat::Random(in, out) / std::sqrt(float(in)),
                            kernattn::Vector<float>::Zero(out)};
  };
  return kernattn::spectral::Implicit<Generator>(
      Generator({layer(kHeadDim, 128, 41), layer(128, kHeadDim, 42)}));
}

/// One training step of the implicit kernel (`whole`), or only its generator's part.
void implicit_step_benchmark(benchmark::State& state, bool whole) {
  using Fourier = kernattn::features::Fourier<float>;
  const Index n = state.range(0);
  const auto sampler = implicit_sampler();
  const Mat noise = kernattn::spectral::draw_frequencies(
      sampler.base(), kFrequencies, kHeadDim, kernattn::random::RandomStream{20240521u, 3});
  kernattn::LinearOptions one;
  one.threads = 1;
  Problem p = make_problem(n);
  const Mat dOut = make_problem(n).V.reverse();
  Mat dQ(n, kHeadDim), dK(n, kHeadDim), dV(n, kHeadDim);
  Mat d_frequencies = Mat::Constant(kFrequencies, kHeadDim, 1e-3f);
  Eigen::VectorXd d_theta;
  for (auto _ : state) {
    Mat frequencies = sampler.generator()(noise);
    if (whole) {
      const kernattn::LinearAttention<Fourier> attention(Fourier(std::move(frequencies)), {}, {},
                                                         one);
      attention.compute(p.Q, p.K, p.V, p.out);
      attention.backward(p.Q, p.K, p.V, p.out, dOut, dQ, dK, dV, d_frequencies);
    }
    benchmark::DoNotOptimize(frequencies.data());
    d_theta = sampler.generator().parameter_gradient(noise, d_frequencies);
    benchmark::DoNotOptimize(d_theta.data());
    benchmark::ClobberMemory();
  }
  state.counters["items/s"] =
      benchmark::Counter(double(n), benchmark::Counter::kIsIterationInvariantRate);
}

const bool registered = [] {
  namespace kernels = kernattn::kernels;
  namespace magnitude = kernattn::magnitude;
  using kernattn::Attention;
  register_backward("BM_SoftmaxBackward",
                    Attention<kernels::Exponential<float>>({}, {}, {}, with_threads(1)),
                    {1024, 4096});
  register_backward("BM_RbfLp3Backward",
                    Attention<kernels::Rbf<float>, magnitude::Lp<float>>(
                        {}, magnitude::Lp<float>(3.0f), {}, with_threads(1)),
                    {1024, 4096});
  register_backward("BM_SoftmaxBackward_2T",
                    Attention<kernels::Exponential<float>>({}, {}, {}, with_threads(2)), {4096});
  for (const bool table_gradient : {false, true})
    benchmark::RegisterBenchmark(
        table_gradient ? "BM_T5TableGradient" : "BM_T5Backward",
        [table_gradient](benchmark::State& state) { t5_backward_benchmark(state, table_gradient); })
        ->Arg(1024)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);

  using Positive = kernattn::features::Positive<float>;
  const Positive positive =
      Positive::draw(kFrequencies, kHeadDim, kernattn::random::RandomStream{20240521u, 2});
  kernattn::LinearOptions one;
  one.threads = 1;
  register_linear_backward("BM_LinearPositiveBackward",
                           kernattn::LinearAttention<Positive>(positive, {}, {}, one));
  register_linear_backward(
      "BM_LinearPositiveCausalBackward",
      kernattn::LinearAttention<Positive, magnitude::None, kernattn::mask::Causal>(positive, {}, {},
                                                                                   one));
  for (const bool whole : {true, false})
    benchmark::RegisterBenchmark(
        whole ? "BM_ImplicitTrainingStep" : "BM_ImplicitGenerator",
        [whole](benchmark::State& state) { implicit_step_benchmark(state, whole); })
        ->Arg(1024)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  return true;
}();

}  // namespace

/// `--peak-memory-backward`: the N = 32768 softmax forward with statistics and its backward, once.
int peak_memory_backward_main() {
  const double before_inputs = peak_rss_mb();
  Problem p = make_problem(kLongSequence);
  const Mat dOut = make_problem(kLongSequence).V.reverse();
  Mat statistics(kLongSequence, 1);
  Mat dQ(kLongSequence, kHeadDim);
  Mat dK(kLongSequence, kHeadDim);
  Mat dV(kLongSequence, kHeadDim);
  dQ.setZero();
  dK.setZero();
  dV.setZero();
  const double with_arguments = peak_rss_mb();
  const kernattn::Attention<kernattn::kernels::Exponential<float>> softmax({}, {}, {},
                                                                           with_threads(1));
  softmax.compute(p.Q, p.K, p.V, p.out, statistics);
  const auto start = std::chrono::steady_clock::now();
  softmax.backward(p.Q, p.K, p.V, p.out, statistics, dOut, dQ, dK, dV);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  benchmark::DoNotOptimize(dQ.data());
  std::printf(
      "exact softmax backward, N = %ld, d = dv = %ld, float, 1 thread: %.2f s, %.1f GFLOP/s\n",
      long(kLongSequence), long(kHeadDim), seconds, backward_flops(kLongSequence) * 1e-9 / seconds);
  std::printf("peak RSS before the arguments:                          %8.1f MB\n", before_inputs);
  std::printf("peak RSS with Q, K, V, out, dOut, dQ, dK, dV (%.0f MB): %8.1f MB\n",
              8.0 * double(p.Q.size()) * sizeof(float) / (1024.0 * 1024.0), with_arguments);
  std::printf("peak_rss_MB after the backward:                         %8.1f MB\n", peak_rss_mb());
  return 0;
}

}  // namespace kernattn_bench
