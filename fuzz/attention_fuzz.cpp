/// \file
/// libFuzzer target: decodes bytes into shapes, a composition (engine, kernel, magnitude, mask),
/// its parameters and input values (finite, huge, subnormal, NaN, infinite), runs it, and checks
/// the library's promises (docs/robustness.md):
///  - no crash and no undefined behaviour (the target is built with ASan and UBSan);
///  - every exception is a `kernattn::InvalidArgument` with a message;
///  - finite inputs give finite outputs;
///  - for kernels with non-negative weights, every output row lies within the per-column range of
///    the values its query sees (up to rounding), and a row that sees no key is zero.

#include <fuzzer/FuzzedDataProvider.h>

#include <exception>
#include <vector>

#include "attention_fuzz/exact.hpp"

namespace attention_fuzz {
namespace {

/// The exact engine: the dot-product kernels here, the distance kernels in
/// attention_fuzz/exact_distance_kernels.cpp.
void exact(FuzzedDataProvider& data, const Problem& p) {
  switch (const int choice = data.ConsumeIntegralInRange<int>(0, 6)) {
    case 0:
      return with_magnitude(data, p, kernels::Exponential<Real>(), true);
    case 5: {
      const kernels::Polynomial<Real> kernel(data.ConsumeIntegralInRange<int>(-1, 12),
                                             decode_parameter(data));
      return with_magnitude(data, p, kernel, false);
    }
    case 6:
      return with_magnitude(data, p, kernels::Linear<Real>(), false);
    default:
      return exact_distance_kernel(data, p, choice);
  }
}

void linear(FuzzedDataProvider& data, const Problem& p) {
  const Index m = data.ConsumeIntegralInRange<Index>(0, 24);
  const random::RandomStream stream{data.ConsumeIntegral<std::uint32_t>(), 0};
  LinearOptions options;
  options.query_tile = data.ConsumeIntegralInRange<Index>(1, 40);
  options.key_tile = data.ConsumeIntegralInRange<Index>(1, 40);
  options.causal_chunk = data.ConsumeIntegralInRange<Index>(1, 40);
  const bool causal = data.ConsumeBool();
  if (data.ConsumeBool()) {
    const auto map = features::Positive<Real>::draw(m, p.d, stream);
    Mat out;
    if (causal)
      out = LinearAttention<features::Positive<Real>, magnitude::None, mask::Causal>(
          map, {}, {}, options)(p.Q, p.K, p.V, p.layout());
    else
      out = LinearAttention<features::Positive<Real>>(map, {}, {}, options)(p.Q, p.K, p.V,
                                                                            p.layout());
    // FAVOR+ weights are non-negative, but their products may fall among float subnormals,
    // where the ratio loses its relative accuracy: only finiteness and the rows that see nothing
    // are checked (docs/numerics.md, section 2, "Linear attention").
    check_output(
        p, out, false,
        [&](Index b) {
          return causal
                     ? std::optional(mask::Causal{}.bind(mask::Shape{p.nq, p.nk, b, p.sequences}))
                     : std::nullopt;
        },
        true);
  } else {
    const auto map = features::Fourier<Real>::draw(spectral::Gaussian<Real>(decode_parameter(data)),
                                                   m, p.d, stream);
    const magnitude::Lp<Real> lp(decode_parameter(data));
    Mat out;
    if (causal)
      out = LinearAttention<features::Fourier<Real>, magnitude::Lp<Real>, mask::Causal>(
          map, lp, {}, options)(p.Q, p.K, p.V, p.layout());
    else
      out = LinearAttention<features::Fourier<Real>, magnitude::Lp<Real>>(map, lp, {}, options)(
          p.Q, p.K, p.V, p.layout());
    check_output(p, out, false, [](Index) { return std::optional<mask::Causal::Bound>(); });
  }
}

void primal_dual(FuzzedDataProvider& data, const Problem& p) {
  using Softmax = Attention<kernels::Exponential<Real>>;
  const auto unmasked = [](Index) { return std::optional<mask::Causal::Bound>(); };
  if (data.ConsumeBool()) {
    const BatchNormalized<Softmax> bn(Softmax{}, double(data.ConsumeIntegralInRange<int>(0, 4)) / 4,
                                      double(decode_parameter(data)));
    check_output(p, bn(p.Q, p.K, p.V, p.layout()), true, unmasked);
  } else {
    const Index factor = data.ConsumeBool() ? data.ConsumeIntegralInRange<Index>(-2, 12)
                                            : data.ConsumeIntegral<Index>();
    const ScaledHead<Softmax> sh(Softmax{}, factor);
    check_output(p, sh(p.Q, p.K, p.V, p.layout()), true, unmasked);
  }
}

/// The pairs of a graph: i sees j when the adjacency has the edge (i, j), or i = j with self
/// loops.
struct NodeEdges {
  Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic> edge;

  static NodeEdges of(Index nodes, const std::vector<int>& outer, const std::vector<int>& inner,
                      bool self_loops) {
    NodeEdges edges{
        Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic>::Constant(nodes, nodes, false)};
    for (Index i = 0; i < nodes; ++i) {
      for (int e = outer[std::size_t(i)]; e < outer[std::size_t(i) + 1]; ++e)
        edges.edge(i, inner[std::size_t(e)]) = true;
      if (self_loops) edges.edge(i, i) = true;
    }
    return edges;
  }
  [[nodiscard]] bool visible(Index i, Index j) const { return edge(i, j); }
};

void graph(FuzzedDataProvider& data, Problem& p) {
  // One sequence and head of nq nodes: the keys are the node features too, the values new.
  p.sequences = 1;
  p.heads = 1;
  p.nk = p.nq;
  p.Q = p.Q.topLeftCorner(p.nq, p.d).eval();
  p.K = p.Q;
  p.V = decode_matrix(data, p.nq, p.dv);
  std::vector<int> outer{0};
  std::vector<int> inner;
  for (Index i = 0; i < p.nq; ++i) {
    const int degree = data.ConsumeIntegralInRange<int>(0, 4);
    for (int e = 0; e < degree; ++e)
      inner.push_back(data.ConsumeIntegralInRange<int>(-1, int(p.nq)));  // may be out of range
    outer.push_back(int(inner.size()));
  }
  const std::vector<Real> weights(inner.size(), Real(1));
  const Eigen::Map<const Eigen::SparseMatrix<Real, Eigen::RowMajor, int>> adjacency(
      p.nq, p.nq, Index(inner.size()), outer.data(), inner.data(), weights.data());
  GraphOptions options;
  options.add_self_loops = data.ConsumeBool();
  const GraphAttention<kernels::Rbf<Real>, magnitude::Lp<Real>> attention(
      {}, magnitude::Lp<Real>(decode_parameter(data)), options);
  const Mat out = attention(adjacency, p.Q, p.K, p.V);
  // The call validated the adjacency: every index is a node. A node without edges outputs zeros.
  const auto edges = std::optional(NodeEdges::of(p.nq, outer, inner, options.add_self_loops));
  check_output(p, out, true, [&](Index) { return edges; });
}

void run(FuzzedDataProvider& data) {
  Problem p;
  p.sequences = data.ConsumeIntegralInRange<Index>(1, 3);
  p.heads = data.ConsumeIntegralInRange<Index>(1, 2);
  p.nq = data.ConsumeIntegralInRange<Index>(0, 24);
  p.nk = data.ConsumeIntegralInRange<Index>(0, 24);
  p.d = data.ConsumeIntegralInRange<Index>(1, 6);
  p.dv = data.ConsumeIntegralInRange<Index>(0, 3);
  const int engine = data.ConsumeIntegralInRange<int>(0, 3);
  p.Q = decode_matrix(data, p.sequences * p.nq, p.heads * p.d);
  p.K = decode_matrix(data, p.sequences * p.nk, p.heads * p.d);
  p.V = decode_matrix(data, p.sequences * p.nk, p.heads * p.dv);
  switch (engine) {
    case 0:
      return exact(data, p);
    case 1:
      return linear(data, p);
    case 2:
      return primal_dual(data, p);
    default:
      return graph(data, p);
  }
}

}  // namespace
}  // namespace attention_fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  FuzzedDataProvider data(bytes, size);
  try {
    attention_fuzz::run(data);
  } catch (const kernattn::InvalidArgument& error) {
    if (error.what()[0] == '\0') attention_fuzz::fail("an InvalidArgument without a message");
  } catch (const std::exception& error) {
    std::fprintf(stderr, "attention_fuzz: unexpected exception: %s\n", error.what());
    std::abort();
  }
  return 0;
}
