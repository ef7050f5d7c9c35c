// Application families of kernattn_bench (docs/conventions.md): d = dv = 64, float, softmax,
// one thread, credited with the 4 N^2 d flops of each query head.
//
//   BM_GroupedQuery/N        GroupedQuery: 32 query heads over 8 key/value heads, read in place
//   BM_GroupedQueryCopied/N  the same problem with K and V copied to 32 heads (repeat_interleave,
//                            the copy timed too), then one call over the 32 heads
//   BM_Packed                ten sequences of 64 to 4096 tokens (self-attention, causal) packed
//                            by offsets (`attend_packed`)
//   BM_Padded                the same sequences padded to 4096 tokens: B = 10, KeyPadding by
//                            lengths; the real work is sum n^2 = 14 % of the padded B 4096^2
//   BM_PackedLongest         the longest of them alone (4096 tokens), packed as one sequence
//   BM_Unpacked              the ten sequences, one call each: what packing should cost (the
//                            work of each length at that length's own rate)
//   BM_LinearDecode/L        one decoding step of LinearDecoder<Positive> (M = 256): append a
//                            key and value, answer a query, after L cached tokens (L = 1024,
//                            65536); items are tokens
//   BM_DecodeSoftmax/L       one decoding step of KeyValueCache (softmax; RBF x L^3 for
//   BM_DecodeRbfLp3/L        BM_DecodeRbfLp3) after L cached tokens (L = 4096, 32768): append a
//                            key and value, answer their query, forget the token again; bytes
//                            are those of the L + 1 keys and values read
//   BM_StreamingSum/L        the bandwidth reference: one sum over as many bytes as BM_Decode*/L
//                            reads
#include <benchmark/benchmark.h>

#include <cstdint>
#include <kernattn/kernattn.hpp>
#include <utility>
#include <vector>

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

/// The lengths of the packed and padded families.
const std::vector<Index> kPackedLengths{64, 4096, 128, 256, 1024, 64, 512, 2048, 256, 1024};
constexpr Index kPaddedLength = 4096;

/// How the packed family runs its sequences.
enum class Packing { packed, padded, longest, unpacked };

void packed_benchmark(benchmark::State& state, Packing packing) {
  using Causal = kernattn::Attention<kernattn::kernels::Exponential<float>,
                                     kernattn::magnitude::None, kernattn::mask::Causal>;
  using CausalPadded = kernattn::Attention<
      kernattn::kernels::Exponential<float>, kernattn::magnitude::None,
      kernattn::mask::Intersection<kernattn::mask::Causal, kernattn::mask::KeyPadding>>;
  const std::vector<Index> lengths =
      packing == Packing::longest ? std::vector<Index>{kPaddedLength} : kPackedLengths;
  const Index sequences = Index(lengths.size());
  std::vector<Index> offsets{0};
  for (const Index length : lengths) offsets.push_back(offsets.back() + length);
  const Index rows = packing == Packing::padded ? sequences * kPaddedLength : offsets.back();
  const Problem p = make_problem(rows);
  Mat out(rows, kHeadDim);
  const Causal causal({}, {}, {}, with_threads(1));
  const CausalPadded padded(
      {}, {}, kernattn::mask::Causal{} && kernattn::mask::KeyPadding::from_lengths(kPackedLengths),
      with_threads(1));
  double work = 0.0;
  for (const Index length : lengths) work += 2.0 * double(length) * double(length);
  timed_loop(state, offsets.back(), work * double(kHeadDim), out, [&] {
    if (packing == Packing::padded) {
      padded.compute(p.Q, p.K, p.V, out, kernattn::BatchLayout{sequences, 1});
    } else if (packing == Packing::unpacked) {
      for (Index b = 0; b < sequences; ++b) {
        const Index first = offsets[std::size_t(b)];
        const Index length = lengths[std::size_t(b)];
        causal.compute(p.Q.middleRows(first, length), p.K.middleRows(first, length),
                       p.V.middleRows(first, length), out.middleRows(first, length));
      }
    } else {
      kernattn::attend_packed(causal, p.Q, p.K, p.V, out, offsets, offsets, 1, 1);
    }
  });
}

void linear_decode_benchmark(benchmark::State& state) {
  using Positive = kernattn::features::Positive<float>;
  const Index cached = state.range(0);
  const Problem p = make_problem(cached);
  kernattn::LinearDecoder<Positive> decoder(
      Positive::draw(kFrequencies, kHeadDim, kernattn::random::RandomStream{20240521u, 2}),
      kHeadDim);
  decoder.append(p.K, p.V);
  Index t = 0;
  for (auto _ : state) {
    decoder.append(p.K.row(t % cached), p.V.row(t % cached));
    Mat out = decoder.attend(p.Q.row(t % cached));
    benchmark::DoNotOptimize(out.data());
    ++t;
  }
  state.SetItemsProcessed(state.iterations());
}

/// One decoding step of a key/value cache of `attention` holding L tokens: the bytes of K and V
/// it reads are the figure of merit (against BM_StreamingSum/L).
template <class AttentionT>
void decode_benchmark(benchmark::State& state, const AttentionT& attention) {
  const Index cached = state.range(0);
  const Problem p = make_problem(cached + 1);
  kernattn::KeyValueCache cache(attention, kHeadDim, kHeadDim);
  cache.append(p.K.topRows(cached), p.V.topRows(cached));
  for (auto _ : state) {
    cache.append(p.K.row(cached), p.V.row(cached));
    Mat out = cache.attend(p.Q.row(cached));
    benchmark::DoNotOptimize(out.data());
    cache.truncate(cached);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * (cached + 1) * 2 * kHeadDim *
                          std::int64_t(sizeof(float)));
}

void streaming_sum_benchmark(benchmark::State& state) {
  const Index count = (state.range(0) + 1) * 2 * kHeadDim;
  const Eigen::ArrayXf data = Eigen::ArrayXf::Random(count);
  for (auto _ : state) {
    float sum = data.sum();
    benchmark::DoNotOptimize(sum);
  }
  state.SetBytesProcessed(state.iterations() * count * std::int64_t(sizeof(float)));
}

const bool registered = [] {
  for (const bool copied : {false, true})
    benchmark::RegisterBenchmark(
        copied ? "BM_GroupedQueryCopied" : "BM_GroupedQuery",
        [copied](benchmark::State& state) { grouped_query_benchmark(state, copied); })
        ->Arg(1024)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  for (const auto& [name, packing] :
       {std::pair{"BM_Packed", Packing::packed}, std::pair{"BM_Padded", Packing::padded},
        std::pair{"BM_PackedLongest", Packing::longest},
        std::pair{"BM_Unpacked", Packing::unpacked}})
    benchmark::RegisterBenchmark(
        name, [packing = packing](benchmark::State& state) { packed_benchmark(state, packing); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_LinearDecode", linear_decode_benchmark)
      ->Arg(1024)
      ->Arg(65536)
      ->Unit(benchmark::kMicrosecond);
  using kernattn::Attention;
  namespace kernels = kernattn::kernels;
  const Attention<kernels::Exponential<float>> softmax({}, {}, {}, with_threads(1));
  const Attention<kernels::Rbf<float>, kernattn::magnitude::Lp<float>> rbf_lp3(
      {}, kernattn::magnitude::Lp<float>(3.0f), {}, with_threads(1));
  benchmark::RegisterBenchmark(
      "BM_DecodeSoftmax", [softmax](benchmark::State& state) { decode_benchmark(state, softmax); })
      ->Arg(4096)
      ->Arg(32768)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark(
      "BM_DecodeRbfLp3", [rbf_lp3](benchmark::State& state) { decode_benchmark(state, rbf_lp3); })
      ->Arg(4096)
      ->Arg(32768)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_StreamingSum", streaming_sum_benchmark)
      ->Arg(4096)
      ->Arg(32768)
      ->Unit(benchmark::kMicrosecond);
  return true;
}();

}  // namespace

}  // namespace kernattn_bench
