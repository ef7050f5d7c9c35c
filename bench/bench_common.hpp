// What the kernattn_bench sources share: the problems, the flop model of exact attention, the
// timed loop and the peak resident memory.
#pragma once

#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <Eigen/Core>
#include <kernattn/kernattn.hpp>
#include <random>
#include <utility>

namespace kernattn_bench {

using kernattn::Index;
using Mat = kernattn::Matrix<float>;

constexpr Index kHeadDim = 64;
constexpr Index kLongSequence = 32768;

/// One problem with Nq = Nk = n and d = dv = kHeadDim per head (`heads` heads side by side, as
/// after a projection), plus its output.
struct Problem {
  Mat Q, K, V, out;
};

/// Fixed-seed inputs, entries uniform on [-sqrt 3, sqrt 3) (unit variance). std::mt19937's output
/// is fixed by the standard, so the inputs are the same with every standard library.
inline Problem make_problem(Index n, Index heads = 1) {
  std::mt19937 generator(20240521u);
  const auto fill = [&](Index rows) {
    Mat m(rows, heads * kHeadDim);
    for (Index j = 0; j < m.cols(); ++j)
      for (Index i = 0; i < m.rows(); ++i)
        m(i, j) = float((double(generator()) / 4294967296.0 * 2.0 - 1.0) * 1.7320508075688772);
    return m;
  };
  Problem problem;
  problem.Q = fill(n);
  problem.K = fill(n);
  problem.V = fill(n);
  problem.out = Mat::Zero(n, heads * kHeadDim);
  return problem;
}

/// 4 N^2 d: 2 N^2 d for the scores Q K^T and 2 N^2 dv (dv = d) for the product with V.
inline double flops(Index n) { return 4.0 * double(n) * double(n) * double(kHeadDim); }

/// M, the random frequencies of the feature families.
constexpr Index kFrequencies = 256;

/// Linear attention with M frequencies and D features (dv = d): 2*2*N*d*M for the frequency
/// products of Q and K, 2*N*D*dv for the state phi(K)^T V, 2*N*D*dv for the read phi(Q) S.
inline double linear_flops(Index n, Index frequencies, Index features) {
  const double N = double(n);
  const double d = double(kHeadDim);
  return 2.0 * 2.0 * N * d * double(frequencies) + 4.0 * N * double(features) * d;
}

inline double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

inline kernattn::ExecutionOptions with_threads(int threads) {
  kernattn::ExecutionOptions options;
  options.threads = threads;
  return options;
}

/// The timed loop shared by every family: `evaluate()` computes one attention (or GEMM pair) into
/// `result`; everything it needs was allocated before the loop. `flop_count` is the flops
/// credited to one call.
template <class Evaluate>
void timed_loop(benchmark::State& state, Index n, double flop_count, const Mat& result,
                Evaluate&& evaluate) {
  for (auto _ : state) {
    evaluate();
    benchmark::DoNotOptimize(result.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] =
      benchmark::Counter(flop_count * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetItemsProcessed(state.iterations() * n);
}

/// The same, credited with the 4 N^2 d flops of exact attention.
template <class Evaluate>
void timed_loop(benchmark::State& state, Index n, const Mat& result, Evaluate&& evaluate) {
  timed_loop(state, n, flops(n), result, std::forward<Evaluate>(evaluate));
}

}  // namespace kernattn_bench
