// BM_PeakFma: the core's floating-point ceiling for the instruction set this build targets.
//
// Independent fused multiply-adds on Eigen's widest packet of the scalar (16 floats with
// AVX-512, 8 with AVX2, 4 with SSE or NEON), all in registers: kAccumulators chains, each
// a <- a * b + c, so that as many FMAs are in flight as the pipelines hold (latency 4 x
// 2 pipes = 8 on current x86 cores; 12 leaves room). GFLOPS counts 2 flops per lane per FMA.
// Without an FMA instruction Eigen's pmadd is a multiply and an add, and the figure is the
// ceiling of that pair, still counted as 2 flops.
//
// Read every other family against it in the same run: e.g. BM_Softmax/4096's GFLOPS over
// BM_PeakFma<float>'s is the fraction of the machine's peak the exact engine reaches.

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <cstddef>

namespace {

constexpr std::size_t kAccumulators = 12;
constexpr int kStepsPerIteration = 1024;

template <class Scalar>
void BM_PeakFma(benchmark::State& state) {
  using Packet = typename Eigen::internal::packet_traits<Scalar>::type;
  constexpr std::size_t lanes = sizeof(Packet) / sizeof(Scalar);
  // Multiplier and addend chosen so that the accumulators stay finite and normal for ever:
  // a <- a * (1 - 2^-20) + 2^-20 converges to 1.
  const Packet multiplier = Eigen::internal::pset1<Packet>(Scalar(1) - Scalar(1) / Scalar(1 << 20));
  const Packet addend = Eigen::internal::pset1<Packet>(Scalar(1) / Scalar(1 << 20));
  Packet accumulators[kAccumulators];
  for (std::size_t a = 0; a < kAccumulators; ++a)
    accumulators[a] = Eigen::internal::pset1<Packet>(Scalar(a) / Scalar(kAccumulators));

  for (auto _ : state) {
    for (int step = 0; step < kStepsPerIteration; ++step)
      for (Packet& accumulator : accumulators)
        accumulator = Eigen::internal::pmadd(accumulator, multiplier, addend);
    for (Packet& accumulator : accumulators) benchmark::DoNotOptimize(accumulator);
  }
  const double flops_per_iteration =
      2.0 * double(lanes) * double(kAccumulators) * double(kStepsPerIteration);
  state.counters["GFLOPS"] =
      benchmark::Counter(flops_per_iteration * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["lanes"] = double(lanes);
}

BENCHMARK_TEMPLATE(BM_PeakFma, float)->UseRealTime();
BENCHMARK_TEMPLATE(BM_PeakFma, double)->UseRealTime();

}  // namespace
