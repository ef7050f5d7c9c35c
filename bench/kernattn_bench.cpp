// kernattn_bench: single-head attention throughput, d = dv = 64, float.
//
// The exact families run over N = Nq = Nk in {256, 1024, 4096} on ONE thread (except
// BM_Softmax_2T) and report GFLOPS = 4 N^2 d / time (Q K^T plus the product with V) and
// items_per_second = queries per second. All families use wall-clock time, so the two-thread family
// compares fairly.
//
//   BM_PeakFma<T>    (bench/peak_fma.cpp) independent vector FMAs in registers: the core's
//                    floating-point ceiling for the build's instruction set
//   BM_Gemm          plain Eigen S = Q K^T, O = S V (the same flops): Eigen's GEMM rate
//   BM_NaiveSoftmax  materialised softmax(Q K^T / sqrt(d)) V in Eigen (an N x N matrix)
//   BM_Softmax       kernattn, Exponential kernel (streaming, no N x N matrix)
//   BM_RbfL2         kernattn, RBF x Lp magnitude with a *runtime* p = 2: equals softmax
//   BM_RbfLp3        kernattn, RBF x Lp magnitude, p = 3
//   BM_Laplacian     kernattn, distance kernels (one more element-wise map per score)
//   BM_Matern32
//   BM_Softmax_2T    kernattn, Exponential kernel on two threads
//   BM_SoftmaxLong   kernattn, Exponential kernel at N = 32768, one call per repetition, with a
//                    counter peak_rss_MB (the peak resident set of the process)
//
// Random features, M = 256 frequencies, N in {1024, 4096, 16384}, one thread, with their own
// flop models (D = the feature dimension; GFLOPS = model / time, items_per_second = tokens):
//
//   BM_LinearFourier        LinearAttention<Fourier>, Gaussian sampler (RBF), D = 2M, not causal
//   BM_LinearPositive       LinearAttention<Positive> (FAVOR+, orthogonal), D = M, not causal
//   BM_LinearPositiveCausal the same with mask::Causal
//       linear model: 2*2*N*d*M (the frequency products of Q and K) + 2*N*D*dv (the state
//       S = phi(K)^T V) + 2*N*D*dv (the read phi(Q) S); the denominators (2*N*D each) and the
//       exponentials or sines and cosines (N*D per input) are not counted. The causal family is
//       credited with the same model: its chunk x chunk diagonal blocks (chunk = 64) add
//       2*N*64*(D + dv) flops, about 30% more for Positive.
//   BM_IkaQuadratic         make_ika_reference (official implicit kernel attention, Yaglom
//                           features, D = 2M) on the exact quadratic engine
//       quadratic model: 2*N^2*D (feature dot products) + 2*N^2*dv (the product with V) +
//       2*2*N*d*D (the features of Q and K); the logarithms and exponentials are not counted.
//       At N = 16384 one call takes seconds: above the 0.5 s minimum time, so each repetition
//       runs it once.
//
// Compare BM_LinearPositive/4096 with BM_Softmax/4096 (the exact softmax it estimates).
//
// Backward passes (BM_SoftmaxBackward, BM_RbfLp3Backward, BM_SoftmaxBackward_2T): see
// bench/backward.cpp.
//
// Multi-head, H = 8 heads of d = dv = 64 (Q, K, V are N x 512), N in {1024, 4096}, one thread
// unless stated:
//
//   BM_MultiHead            MultiHead of 8 exact softmax heads; GFLOPS = 8 * 4 N^2 d / time
//   BM_MultiHead_2T         the same on two threads (the heads run in parallel)
//   BM_ScaledHeads          Attention-SH: the softmax heads with keys and values pooled by
//                           r_h = 1, 1, 2, 2, 4, 4, 8, 8; credited with sum_h 4 N (N / r_h) d
//   BM_MultiHeadCopula      8 linear heads, Fourier features (M = 128) of Gaussian samplers with
//                           lengthscales 4..11, drawn with a Gaussian copula (R_gh = 0.5)
//   BM_MultiHeadIndependent the same heads drawn independently
//       The coupling acts when the heads are drawn (once, outside the timed loop), so the two
//       must run equally fast: their ratio is the copula's cost per call.
//   BM_DrawIndependent      MultiHead::draw of those 8 heads (8 x 128 frequencies of d = 64,
//   BM_DrawGaussianCopula   each head's Fourier map built), independent, with the Gaussian
//   BM_DrawStudentTCopula   copula above and with a t copula (nu = 4); items = frequencies
//
//   BM_Graph/nnz            GraphAttention (softmax kernel) over a random graph with 32
//                           neighbours per node, N = nnz / 32 in {1024, 4096}, one head of
//                           d = 64; GFLOPS = 4 nnz d
//
// The comparison grid (`--grid`, not in the default run): every kernel of bench/comparison.hpp
// (the exact kernels, positional, Attention-BN, Attention-SH, FAVOR+ and Fourier features) with no
// magnitude and with L^3, masks none, causal and window:128, N in {256, 1024, 4096}, d in
// {32, 64, 128}, float and double, one thread: the families compare/<kernel>/<magnitude>/<mask>/
// <scalar>/d:<d>/n:<N>/threads:1, credited with the flops of the pairs each mask lets through.
// The same code path as `kernattn_compare`; select a part with --benchmark_filter, e.g.
//   ./kernattn_bench --grid --benchmark_filter='compare/.*/none/none/float/d:64/'
//
// Reading the numbers: at N = 4096 the score matrix of BM_Gemm and BM_NaiveSoftmax is 64 MB,
// more than a small machine's last-level cache, so they become memory-bound; BM_Gemm at N = 1024
// is the better compute ceiling.
//
// How to run:
//   cmake --workflow --preset bench       (Release, -O3 -march=native; runs 5 repetitions)
// or by hand:
//   g++ -std=c++20 -O3 -march=native -DNDEBUG -fopenmp -Iinclude -isystem /usr/include/eigen3
//       bench/kernattn_bench.cpp -lbenchmark -lpthread -o kernattn_bench
//   ./kernattn_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//       --benchmark_counters_tabular=true --benchmark_min_time=0.2
// Peak memory:
//   ./kernattn_bench --peak-memory            (and --peak-memory-backward: bench/backward.cpp)
// runs the N = 32768 softmax once, outside Google Benchmark, in a process that has allocated
// nothing else, and prints the peak RSS (one materialised N x N float matrix would be 4 GiB).
//
// ru_maxrss is a high-water mark of the whole process: BM_SoftmaxLong's peak_rss_MB only means
// something when nothing bigger ran before it in the same process. It is registered first, so it
// runs first in the default order (or run it alone: --benchmark_filter=BM_SoftmaxLong); with
// --benchmark_enable_random_interleaving it is meaningless. --peak-memory is the reference.
//
// Use an otherwise idle machine: check `uptime` (and top) before trusting the numbers.

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <Eigen/SparseCore>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <kernattn/kernattn.hpp>
#include <random>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "bench_common.hpp"
#include "comparison.hpp"

namespace kernattn_bench {
/// `--peak-memory-backward` (bench/backward.cpp).
int peak_memory_backward_main();
}  // namespace kernattn_bench

namespace {

using namespace kernattn_bench;

constexpr Index kHeads = 8;                 // H of the multi-head families
constexpr Index kCoupledFrequencies = 128;  // M of each head of the coupled families
constexpr Index kGraphDegree = 32;          // neighbours per node of BM_Graph

/// Quadratic attention through D features (dv = d): 2*N^2*D for the feature dot products,
/// 2*N^2*dv for the product with V, 2*2*N*d*D for the features of Q and K.
double quadratic_feature_flops(Index n, Index features) {
  const double N = double(n);
  const double d = double(kHeadDim);
  const double D = double(features);
  return 2.0 * N * N * D + 2.0 * N * N * d + 2.0 * 2.0 * N * d * D;
}

void BM_Gemm(benchmark::State& state) {
  const Index n = state.range(0);
  Problem p = make_problem(n);
  Mat scores(n, n);
  timed_loop(state, n, p.out, [&] {
    scores.noalias() = p.Q * p.K.transpose();
    p.out.noalias() = scores * p.V;
  });
}

/// What a framework does without a fused kernel: the whole N x N score matrix, passes over it for
/// the row maxima, the exponentials, the row sums and the division, then a GEMM with V.
void BM_NaiveSoftmax(benchmark::State& state) {
  const Index n = state.range(0);
  Problem p = make_problem(n);
  const float scale = 1.0f / std::sqrt(float(kHeadDim));
  Mat scores(n, n);
  Eigen::VectorXf row_max(n);
  Eigen::VectorXf row_sum(n);
  timed_loop(state, n, p.out, [&] {
    scores.noalias() = scale * p.Q * p.K.transpose();
    row_max.noalias() = scores.rowwise().maxCoeff();
    scores = (scores.array().colwise() - row_max.array()).exp().matrix();
    row_sum.noalias() = scores.rowwise().sum();
    scores.array().colwise() /= row_sum.array();
    p.out.noalias() = scores * p.V;
  });
}

/// Any kernattn configuration: `compute` writes into the preallocated output; `flop_model(n)`
/// gives the flops credited to one call.
template <class AttentionT, class FlopModel>
void library_benchmark(benchmark::State& state, const AttentionT& attention,
                       const FlopModel& flop_model, Index heads = 1) {
  const Index n = state.range(0);
  Problem p = make_problem(n, heads);
  timed_loop(state, n, flop_model(n), p.out, [&] { attention.compute(p.Q, p.K, p.V, p.out); });
}

/// The same, credited with the 4 N^2 d flops of exact attention.
template <class AttentionT>
void library_benchmark(benchmark::State& state, const AttentionT& attention) {
  library_benchmark(state, attention, flops);
}

/// The long exact softmax; peak_rss_MB is read after the run (see the top of the file).
void BM_SoftmaxLong(benchmark::State& state) {
  const kernattn::Attention<kernattn::kernels::Exponential<float>> softmax({}, {}, {},
                                                                           with_threads(1));
  library_benchmark(state, softmax);
  state.counters["peak_rss_MB"] = peak_rss_mb();
}

/// N in {256, 1024, 4096}, wall-clock time, milliseconds.
void standard_sizes(benchmark::internal::Benchmark* family) {
  family->Arg(256)->Arg(1024)->Arg(4096)->UseRealTime()->Unit(benchmark::kMillisecond);
}

template <class AttentionT>
void register_library(const char* name, const AttentionT& attention) {
  benchmark::RegisterBenchmark(name, [attention](benchmark::State& state) {
    library_benchmark(state, attention);
  })->Apply(standard_sizes);
}

/// N in {1024, 4096, 16384}, wall-clock time, milliseconds: the random-feature families.
void feature_sizes(benchmark::internal::Benchmark* family) {
  family->Arg(1024)->Arg(4096)->Arg(16384)->UseRealTime()->Unit(benchmark::kMillisecond);
}

template <class AttentionT, class FlopModel>
void register_feature_family(const char* name, const AttentionT& attention, FlopModel flop_model) {
  benchmark::RegisterBenchmark(name, [attention, flop_model](benchmark::State& state) {
    library_benchmark(state, attention, flop_model);
  })->Apply(feature_sizes);
}

/// The random-feature families (see the top of the file): M = kFrequencies, fixed streams.
void register_feature_benchmarks() {
  namespace features = kernattn::features;
  namespace spectral = kernattn::spectral;
  using Fourier = features::Fourier<float>;
  using Positive = features::Positive<float>;
  const kernattn::random::RandomStream stream{20240521u, 0};
  kernattn::LinearOptions one;
  one.threads = 1;

  const Fourier fourier =
      Fourier::draw(spectral::Gaussian<float>{}, kFrequencies, kHeadDim, stream.with_stream(1));
  const Positive positive = Positive::draw(kFrequencies, kHeadDim, stream.with_stream(2));
  register_feature_family("BM_LinearFourier",
                          kernattn::LinearAttention<Fourier>(fourier, {}, {}, one),
                          [](Index n) { return linear_flops(n, kFrequencies, 2 * kFrequencies); });
  register_feature_family("BM_LinearPositive",
                          kernattn::LinearAttention<Positive>(positive, {}, {}, one),
                          [](Index n) { return linear_flops(n, kFrequencies, kFrequencies); });
  register_feature_family(
      "BM_LinearPositiveCausal",
      kernattn::LinearAttention<Positive, kernattn::magnitude::None, kernattn::mask::Causal>(
          positive, {}, {}, one),
      [](Index n) { return linear_flops(n, kFrequencies, kFrequencies); });

  // The official layout: W1, W2 are d x M (one frequency per column), used at scale 2 pi.
  const Mat w1 = spectral::draw_frequencies(spectral::Gaussian<float>{}, kFrequencies, kHeadDim,
                                            stream.with_stream(3))
                     .transpose();
  const Mat w2 = spectral::draw_frequencies(spectral::Gaussian<float>{}, kFrequencies, kHeadDim,
                                            stream.with_stream(4))
                     .transpose();
  register_feature_family(
      "BM_IkaQuadratic",
      kernattn::make_ika_reference(w1, w2, 2.0f, kernattn::mask::None{}, with_threads(1)),
      [](Index n) { return quadratic_feature_flops(n, 2 * kFrequencies); });
}

/// N in {1024, 4096}, wall-clock time, milliseconds: the multi-head families.
void multi_head_sizes(benchmark::internal::Benchmark* family) {
  family->Arg(1024)->Arg(4096)->UseRealTime()->Unit(benchmark::kMillisecond);
}

template <class AttentionT, class FlopModel>
void register_multi_head_family(const char* name, const AttentionT& attention,
                                FlopModel flop_model) {
  benchmark::RegisterBenchmark(name, [attention, flop_model](benchmark::State& state) {
    library_benchmark(state, attention, flop_model, kHeads);
  })->Apply(multi_head_sizes);
}

/// The multi-head families (see the top of the file): H = kHeads heads of d = dv = kHeadDim.
void register_multi_head_benchmarks() {
  namespace features = kernattn::features;
  namespace spectral = kernattn::spectral;
  namespace coupling = kernattn::coupling;
  using Softmax = kernattn::Attention<kernattn::kernels::Exponential<float>>;
  using kernattn::MultiHead;
  kernattn::MultiHeadOptions one;
  one.threads = 1;
  kernattn::MultiHeadOptions two;
  two.threads = 2;
  const auto exact_flops = [](Index n) { return double(kHeads) * flops(n); };

  const std::vector<Softmax> softmax_heads(kHeads);
  register_multi_head_family("BM_MultiHead", MultiHead<Softmax>(softmax_heads, one), exact_flops);
  register_multi_head_family("BM_MultiHead_2T", MultiHead<Softmax>(softmax_heads, two),
                             exact_flops);
  register_multi_head_family(
      "BM_ScaledHeads", kernattn::scaled_heads(Softmax(), {1, 1, 2, 2, 4, 4, 8, 8}, one),
      [](Index n) {  // head h costs 4 N (N / r_h) d
        double total = 0;
        for (const Index r : {1, 1, 2, 2, 4, 4, 8, 8})
          total += 4.0 * double(n) * double((n + r - 1) / r) * double(kHeadDim);
        return total;
      });

  // Linear heads with Fourier features of Gaussian samplers, lengthscales 4 ... 11: drawn once
  // with a Gaussian copula (R_gh = 0.5) and once independently.
  using Linear = kernattn::LinearAttention<features::Fourier<float>>;
  kernattn::LinearOptions linear_options;
  linear_options.threads = 1;
  using Recipe = kernattn::SampledHead<spectral::Gaussian<float>,
                                       std::function<Linear(kernattn::Matrix<float>)>>;
  std::vector<Recipe> recipes;
  for (Index h = 0; h < kHeads; ++h)
    recipes.push_back({spectral::Gaussian<float>(4.0f + float(h)), kCoupledFrequencies,
                       [linear_options](kernattn::Matrix<float> omega) {
                         return Linear(features::Fourier<float>(std::move(omega)), {}, {},
                                       linear_options);
                       }});
  kernattn::Matrix<double> correlation = kernattn::Matrix<double>::Constant(kHeads, kHeads, 0.5);
  correlation.diagonal().setOnes();
  const kernattn::random::RandomStream stream{20240521u, 100};
  const auto linear_flops_all = [](Index n) {
    return double(kHeads) * linear_flops(n, kCoupledFrequencies, 2 * kCoupledFrequencies);
  };
  register_multi_head_family(
      "BM_MultiHeadCopula",
      MultiHead<Linear, coupling::GaussianCopula>::draw(coupling::GaussianCopula(correlation),
                                                        recipes, kHeadDim, stream, one),
      linear_flops_all);
  register_multi_head_family(
      "BM_MultiHeadIndependent",
      MultiHead<Linear>::draw(coupling::Independent{}, recipes, kHeadDim, stream, one),
      linear_flops_all);

  // The draws themselves, where the coupling does its work.
  const auto register_draw = [&](const char* name, const auto& coupler) {
    using Coupler = std::remove_cvref_t<decltype(coupler)>;
    benchmark::RegisterBenchmark(
        name,
        [coupler, recipes, stream](benchmark::State& state) {
          for (auto _ : state) {
            auto heads = MultiHead<Linear, Coupler>::draw(coupler, recipes, kHeadDim, stream);
            benchmark::DoNotOptimize(heads);
          }
          state.SetItemsProcessed(state.iterations() * kHeads * kCoupledFrequencies);
        })
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  };
  register_draw("BM_DrawIndependent", coupling::Independent{});
  register_draw("BM_DrawGaussianCopula", coupling::GaussianCopula(correlation));
  register_draw("BM_DrawStudentTCopula", coupling::StudentTCopula(correlation, 4.0));
}

/// A graph of n nodes, each with kGraphDegree distinct random neighbours (self included by
/// chance only), as a row-major sparse adjacency.
Eigen::SparseMatrix<float, Eigen::RowMajor> random_graph(Index n) {
  std::mt19937 generator(20240521u);
  std::uniform_int_distribution<Index> node(0, n - 1);
  std::vector<Eigen::Triplet<float>> edges;
  edges.reserve(std::size_t(n * kGraphDegree));
  for (Index i = 0; i < n; ++i) {
    std::vector<Index> neighbours;
    while (Index(neighbours.size()) < kGraphDegree) {
      const Index j = node(generator);
      if (std::find(neighbours.begin(), neighbours.end(), j) == neighbours.end())
        neighbours.push_back(j);
    }
    for (const Index j : neighbours) edges.emplace_back(i, j, 1.0f);
  }
  Eigen::SparseMatrix<float, Eigen::RowMajor> adjacency(n, n);
  adjacency.setFromTriplets(edges.begin(), edges.end());
  return adjacency;
}

/// Graph attention, softmax kernel, over kGraphDegree neighbours per node: the argument is nnz,
/// N = nnz / kGraphDegree; GFLOPS = 4 nnz d.
void BM_Graph(benchmark::State& state) {
  const Index nnz = state.range(0);
  const Index n = nnz / kGraphDegree;
  Problem p = make_problem(n);
  const auto adjacency = random_graph(n);
  kernattn::GraphOptions options;
  options.threads = 1;
  const kernattn::GraphAttention<kernattn::kernels::Exponential<float>> graph({}, {}, options);
  timed_loop(state, n, 4.0 * double(nnz) * double(kHeadDim), p.out,
             [&] { graph.compute(adjacency, p.Q, p.K, p.V, p.out); });
}

void register_benchmarks() {
  namespace kernels = kernattn::kernels;
  namespace magnitude = kernattn::magnitude;
  using kernattn::Attention;
  const auto one = with_threads(1);

  // First, so that its peak RSS is not inflated by the N x N matrices of the others.
  benchmark::RegisterBenchmark("BM_SoftmaxLong", BM_SoftmaxLong)
      ->Arg(kLongSequence)
      ->Iterations(1)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);

  benchmark::RegisterBenchmark("BM_Gemm", BM_Gemm)->Apply(standard_sizes);
  benchmark::RegisterBenchmark("BM_NaiveSoftmax", BM_NaiveSoftmax)->Apply(standard_sizes);

  register_library("BM_Softmax", Attention<kernels::Exponential<float>>({}, {}, {}, one));
  register_library("BM_RbfL2", Attention<kernels::Rbf<float>, magnitude::Lp<float>>(
                                   {}, magnitude::Lp<float>(2.0f), {}, one));
  register_library("BM_RbfLp3", Attention<kernels::Rbf<float>, magnitude::Lp<float>>(
                                    {}, magnitude::Lp<float>(3.0f), {}, one));
  register_library("BM_Laplacian", Attention<kernels::Laplacian<float>>({}, {}, {}, one));
  register_library("BM_Matern32", Attention<kernels::Matern32<float>>({}, {}, {}, one));
  register_library("BM_Softmax_2T",
                   Attention<kernels::Exponential<float>>({}, {}, {}, with_threads(2)));
  register_feature_benchmarks();
  register_multi_head_benchmarks();
  benchmark::RegisterBenchmark("BM_Graph", BM_Graph)
      ->Arg(1024 * kGraphDegree)
      ->Arg(4096 * kGraphDegree)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

/// `--peak-memory`: the N = 32768 softmax once, in a process that allocates nothing else.
int peak_memory_main() {
  const double before_inputs = peak_rss_mb();
  Problem p = make_problem(kLongSequence);
  const double with_inputs = peak_rss_mb();
  const kernattn::Attention<kernattn::kernels::Exponential<float>> softmax({}, {}, {},
                                                                           with_threads(1));

  const auto start = std::chrono::steady_clock::now();
  softmax.compute(p.Q, p.K, p.V, p.out);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  benchmark::DoNotOptimize(p.out.data());

  const double inputs_mb = 4.0 * double(p.Q.size()) * sizeof(float) / (1024.0 * 1024.0);
  const double materialised_mb =
      double(kLongSequence) * double(kLongSequence) * sizeof(float) / (1024.0 * 1024.0);
  std::printf(
      "exact softmax attention, N = %ld, d = dv = %ld, float, 1 thread: %.2f s, %.1f GFLOP/s\n",
      long(kLongSequence), long(kHeadDim), seconds, flops(kLongSequence) * 1e-9 / seconds);
  std::printf("peak RSS before the inputs:        %8.1f MB\n", before_inputs);
  std::printf("peak RSS with Q, K, V, out (%.0f MB): %8.1f MB\n", inputs_mb, with_inputs);
  std::printf("peak_rss_MB after the call:        %8.1f MB\n", peak_rss_mb());
  std::printf("(one materialised N x N float score matrix would be %.0f MB)\n", materialised_mb);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // The reference GEMMs run on one thread like the library; the library sets its own threads.
  Eigen::setNbThreads(1);
  bool grid = false;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--peak-memory") return peak_memory_main();
    if (std::string_view(argv[i]) == "--peak-memory-backward")
      return kernattn_bench::peak_memory_backward_main();
    if (std::string_view(argv[i]) == "--grid") {
      grid = true;
      std::copy(argv + i + 1, argv + argc, argv + i);
      argv[--argc] = nullptr;
      --i;
    }
  }

  register_benchmarks();
  if (grid)
    for (const auto& configuration : full_grid()) register_configuration(configuration);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
