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

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <kernattn/kernattn.hpp>
#include <limits>
#include <optional>
#include <vector>

namespace {

using namespace kernattn;
using Real = float;
using Mat = Matrix<Real>;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "attention_fuzz: invariant violated: %s\n", what);
  std::abort();
}

/// One entry: mostly ordinary values at a chosen scale, sometimes a special value.
Real decode_value(FuzzedDataProvider& data, Real scale, bool specials) {
  if (specials) {
    switch (data.ConsumeIntegralInRange<int>(0, 15)) {
      case 0:
        return std::numeric_limits<Real>::quiet_NaN();
      case 1:
        return std::numeric_limits<Real>::infinity();
      case 2:
        return -std::numeric_limits<Real>::infinity();
      case 3:
        return std::numeric_limits<Real>::denorm_min();
      case 4:
        return std::numeric_limits<Real>::max();
      case 5:
        return -std::numeric_limits<Real>::max();
      default:
        break;
    }
  }
  return scale * Real(data.ConsumeIntegralInRange<int>(-64, 64)) / Real(16);
}

Mat decode_matrix(FuzzedDataProvider& data, Index rows, Index cols) {
  static constexpr Real scales[] = {Real(1e-30), Real(1e-3), Real(1),    Real(4),
                                    Real(30),    Real(1e4),  Real(1e15), Real(1e30)};
  const Real scale = scales[data.ConsumeIntegralInRange<int>(0, 7)];
  const bool specials = data.ConsumeIntegralInRange<int>(0, 7) == 0;
  Mat m(rows, cols);
  for (Index c = 0; c < cols; ++c)
    for (Index r = 0; r < rows; ++r) m(r, c) = decode_value(data, scale, specials);
  return m;
}

struct Problem {
  Index sequences = 1, heads = 1, nq = 0, nk = 0, d = 1, dv = 1;
  Mat Q, K, V;
  [[nodiscard]] bool finite() const { return Q.allFinite() && K.allFinite() && V.allFinite(); }
  [[nodiscard]] BatchLayout layout() const { return {sequences, heads}; }
};

/// Checks the output of a composition whose set filter, bound per sequence, is `visibility_of(b)`
/// (nullptr-like `std::nullopt` when the checker cannot know it). With `zero_rows_allowed`, a
/// row of a head may be all zeros, which is its definition when its weights all vanish: every
/// visible log-weight -inf in the exact engine, an estimated denominator of exactly 0 in linear
/// attention (no feature, or every product underflows).
template <class VisibilityOf>
void check_output(const Problem& p, const Mat& out, bool nonnegative_weights,
                  VisibilityOf visibility_of, bool zero_rows_allowed = false) {
  if (out.rows() != p.nq * p.sequences || out.cols() != p.dv * p.heads) fail("output shape");
  if (!p.finite()) return;
  if (!out.allFinite()) fail("finite inputs gave a non-finite output");
  if (!nonnegative_weights) return;
  for (Index b = 0; b < p.sequences; ++b) {
    const auto visibility = visibility_of(b);
    for (Index h = 0; h < p.heads; ++h)
      for (Index i = 0; i < p.nq; ++i) {
        if (zero_rows_allowed && p.dv > 0 &&
            out.row(b * p.nq + i).segment(h * p.dv, p.dv).isZero(0))
          continue;
        for (Index c = 0; c < p.dv; ++c) {
          Real low = std::numeric_limits<Real>::infinity();
          Real high = -low;
          for (Index j = 0; j < p.nk; ++j) {
            if (visibility && !visibility->visible(i, j)) continue;
            const Real v = p.V(b * p.nk + j, h * p.dv + c);
            low = std::min(low, v);
            high = std::max(high, v);
          }
          const Real o = out(b * p.nq + i, h * p.dv + c);
          if (low > high) {
            if (visibility && o != Real(0)) fail("a row that sees no key is not zero");
            continue;
          }
          const Real margin = Real(1e-3) * std::max(std::abs(low), std::abs(high)) +
                              std::numeric_limits<Real>::min();
          if (o < low - margin || o > high + margin) fail("output outside the visible values");
        }
      }
  }
}

template <class Composition, class Mask>
void run_exact(const Problem& p, const Composition& attention, const Mask& mask,
               bool nonnegative_weights) {
  const Mat out = attention(p.Q, p.K, p.V, p.layout());
  // A row whose visible log-weights all underflow to -inf (an extreme kernel parameter) outputs
  // zeros by definition (docs/numerics.md, section 3).
  check_output(
      p, out, nonnegative_weights,
      [&](Index b) {
        return std::optional(mask.bind(mask::Shape{p.nq, p.nk, b, p.sequences}));
      },
      true);
}

/// The mask, chosen by the fuzzer, then the composition with it.
template <class Kernel, class Magnitude>
void with_mask(FuzzedDataProvider& data, const Problem& p, Kernel kernel, Magnitude magnitude,
               bool nonnegative_weights) {
  ExecutionOptions options;
  options.key_tile = data.ConsumeIntegralInRange<Index>(1, 40);
  options.query_tile = data.ConsumeIntegralInRange<Index>(0, 40);
  switch (data.ConsumeIntegralInRange<int>(0, 4)) {
    case 0: {
      const Attention<Kernel, Magnitude> attention(kernel, magnitude, {}, options);
      run_exact(p, attention, mask::None{}, nonnegative_weights);
      break;
    }
    case 1: {
      const Attention<Kernel, Magnitude, mask::Causal> attention(kernel, magnitude, {}, options);
      run_exact(p, attention, mask::Causal{}, nonnegative_weights);
      break;
    }
    case 2: {
      const mask::Window window(data.ConsumeIntegralInRange<Index>(-3, 40),
                                data.ConsumeIntegralInRange<Index>(-3, 40));
      const Attention<Kernel, Magnitude, mask::Window> attention(kernel, magnitude, window,
                                                                 options);
      run_exact(p, attention, window, nonnegative_weights);
      break;
    }
    case 3: {
      std::vector<Index> lengths;
      const Index count = data.ConsumeBool() ? 1 : p.sequences;
      for (Index b = 0; b < count; ++b)
        lengths.push_back(data.ConsumeIntegralInRange<Index>(-1, p.nk + 1));
      const auto padding = mask::KeyPadding::from_lengths(lengths);
      const Attention<Kernel, Magnitude, mask::KeyPadding> attention(kernel, magnitude, padding,
                                                                     options);
      run_exact(p, attention, padding, nonnegative_weights);
      break;
    }
    default: {
      Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic> allowed(p.nq, p.nk);
      for (Index j = 0; j < p.nk; ++j)
        for (Index i = 0; i < p.nq; ++i) allowed(i, j) = data.ConsumeBool();
      const mask::Boolean boolean(allowed);
      const Attention<Kernel, Magnitude, mask::Boolean> attention(kernel, magnitude, boolean,
                                                                  options);
      run_exact(p, attention, boolean, nonnegative_weights);
      break;
    }
  }
}

Real decode_parameter(FuzzedDataProvider& data) {
  static constexpr Real values[] = {Real(1e-30), Real(1e-3), Real(0.05), Real(0.5), Real(1),
                                    Real(2),     Real(3),    Real(7.5),  Real(1e3), Real(1e30)};
  return values[data.ConsumeIntegralInRange<int>(0, 9)];
}

template <class Kernel>
void with_magnitude(FuzzedDataProvider& data, const Problem& p, Kernel kernel,
                    bool nonnegative_weights) {
  if (data.ConsumeBool()) {
    with_mask(data, p, kernel, magnitude::None{}, nonnegative_weights);
  } else {
    const Real power = decode_parameter(data);
    const magnitude::Lp<Real> lp(
        power, data.ConsumeBool() ? std::optional<Real>(decode_parameter(data)) : std::nullopt);
    with_mask(data, p, kernel, lp, nonnegative_weights);
  }
}

void exact(FuzzedDataProvider& data, const Problem& p) {
  switch (data.ConsumeIntegralInRange<int>(0, 6)) {
    case 0:
      return with_magnitude(data, p, kernels::Exponential<Real>(), true);
    case 1:
      return with_magnitude(data, p, kernels::Rbf<Real>(decode_parameter(data)), true);
    case 2:
      return with_magnitude(data, p, kernels::Laplacian<Real>(decode_parameter(data)), true);
    case 3:
      return with_magnitude(data, p, kernels::Matern52<Real>(decode_parameter(data)), true);
    case 4: {
      const kernels::RationalQuadratic<Real> kernel(decode_parameter(data), decode_parameter(data));
      return with_magnitude(data, p, kernel, true);
    }
    case 5: {
      const kernels::Polynomial<Real> kernel(data.ConsumeIntegralInRange<int>(-1, 12),
                                             decode_parameter(data));
      return with_magnitude(data, p, kernel, false);
    }
    default:
      return with_magnitude(data, p, kernels::Linear<Real>(), false);
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

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  FuzzedDataProvider data(bytes, size);
  try {
    run(data);
  } catch (const InvalidArgument& error) {
    if (error.what()[0] == '\0') fail("an InvalidArgument without a message");
  } catch (const std::exception& error) {
    std::fprintf(stderr, "attention_fuzz: unexpected exception: %s\n", error.what());
    std::abort();
  }
  return 0;
}
