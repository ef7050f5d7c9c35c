// Application families of kernattn_bench (docs/conventions.md): d = dv = 64, float, softmax,
// one thread, credited with the 4 N^2 d flops of each query head.
//
//   BM_GroupedQuery/N        GroupedQuery: 32 query heads over 8 key/value heads, read in place
//   BM_GroupedQueryCopied/N  the same problem with K and V copied to 32 heads (repeat_interleave,
//                            the copy timed too), then one call over the 32 heads
#include <benchmark/benchmark.h>

#include <kernattn/kernattn.hpp>

#include "bench_common.hpp"

namespace kernattn_bench {

namespace {

constexpr Index kQueryHeads = 32;
constexpr Index kKeyHeads = 8;

void grouped_query_benchmark(benchmark::State& state, bool copied) {
  using Softmax = kernattn::Attention<kernattn::kernels::Exponential<float>>;
  const Softmax softmax({}, {}, {}, with_threads(1));
  const Index n = state.range(0);
  const Problem queries = make_problem(n, kQueryHeads);
  const Problem keys = make_problem(n, kKeyHeads);
  Mat out(n, kQueryHeads * kHeadDim);
  const kernattn::GroupedQuery grouped(softmax, kQueryHeads, kKeyHeads);
  Mat repeated_K(n, kQueryHeads * kHeadDim), repeated_V(n, kQueryHeads * kHeadDim);
  constexpr Index group = kQueryHeads / kKeyHeads;
  timed_loop(state, n, double(kQueryHeads) * flops(n), out, [&] {
    if (copied) {
      for (Index h = 0; h < kQueryHeads; ++h) {
        repeated_K.middleCols(h * kHeadDim, kHeadDim) =
            keys.K.middleCols((h / group) * kHeadDim, kHeadDim);
        repeated_V.middleCols(h * kHeadDim, kHeadDim) =
            keys.V.middleCols((h / group) * kHeadDim, kHeadDim);
      }
      softmax.compute(queries.Q, repeated_K, repeated_V, out,
                      kernattn::BatchLayout{1, kQueryHeads});
    } else {
      grouped.compute(queries.Q, keys.K, keys.V, out);
    }
  });
}

const bool registered = [] {
  for (const bool copied : {false, true})
    benchmark::RegisterBenchmark(
        copied ? "BM_GroupedQueryCopied" : "BM_GroupedQuery",
        [copied](benchmark::State& state) { grouped_query_benchmark(state, copied); })
        ->Arg(1024)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  return true;
}();

}  // namespace

}  // namespace kernattn_bench
