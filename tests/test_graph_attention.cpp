// Graph attention (docs/math.md, section 4): GraphAttention over a sparse adjacency against a naive
// double reference that loops over each node's edges (tests/support/graph_reference.hpp), and
// against the dense engine with the equivalent mask::Boolean, for every engine form (dot-product,
// distance, direct, feature) with Lp magnitudes; then the edge semantics (stored entries are edges
// whatever their value, any storage order), self-loops, the batch x heads layout, thread-count bit
// identity, an output that overlaps an input, and distance kernels on self-loops. Hostile input
// (nodes without neighbours, bad input, broken adjacencies, repeated edges, non-finite data):
// test_graph_attention_hostile.cpp.
//
// Tolerances come from the reference's derived first-order bounds (tests/support/reference.hpp),
// which check::require_matches also requires to be informative.
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "catch.hpp"
#include "graph_reference.hpp"
#include "invalid_argument.hpp"
#include "kernattn/attention/graph_attention.hpp"
#include "reference.hpp"

namespace test_graph_attention {

namespace features = kernattn::features;
namespace spectral = kernattn::spectral;
using kernattn::BatchLayout;
using kernattn::GraphAttention;
using kernattn::GraphOptions;

namespace {

using namespace graph_ref;
using ref::MatrixXd;

/// The same for the batch x heads layout, one adjacency for every sequence and head.
ref::Reference edge_reference(const ref::Problem& p, const Graph& g, BatchLayout layout,
                              const ref::KernelModel& kernel, const ref::MagnitudeModel& magnitude,
                              double u) {
  const Index nq = g.queries(), nk = g.keys;
  const Index d = p.Q.cols() / layout.heads, dv = p.V.cols() / layout.heads;
  ref::Reference r{MatrixXd(p.Q.rows(), p.V.cols()), MatrixXd(p.Q.rows(), p.V.cols())};
  for (Index b = 0; b < layout.sequences; ++b)
    for (Index h = 0; h < layout.heads; ++h) {
      const ref::Problem block{p.Q.block(b * nq, h * d, nq, d), p.K.block(b * nk, h * d, nk, d),
                               p.V.block(b * nk, h * dv, nk, dv)};
      const ref::Reference one = edge_reference(block, g, kernel, magnitude, u);
      r.out.block(b * nq, h * dv, nq, dv) = one.out;
      r.bound.block(b * nq, h * dv, nq, dv) = one.bound;
    }
  return r;
}

/// Runs GraphAttention on the graph's row-major adjacency and requires it to match the edge
/// reference, to agree with the dense engine under the equivalent Boolean mask to rounding (each
/// is within the bound of the reference, so within twice of each other), and to output exact
/// zeros for nodes without neighbours.
template <class T, class Kernel, class Magnitude>
void check_graph(const ref::Problem& p, const Graph& g, const Kernel& kernel, const Magnitude& mu,
                 const ref::KernelModel& km, const ref::MagnitudeModel& mm) {
  const ref::Reference expected = edge_reference(p, g, km, mm, ref::unit_roundoff<T>);
  const GraphAttention<Kernel, Magnitude> graph(kernel, mu);
  const ref::Matrix<T> out = graph(g.template adjacency<T>(), p.q<T>(), p.k<T>(), p.v<T>());
  check::require_matches<T>(out, expected);
  {
    INFO("against the dense engine with mask::Boolean");
    const ref::Matrix<T> dense = check::run<T>(p, kernel, mu, mask::Boolean(g.visibility()),
                                               kernattn::ExecutionOptions{0, 16, 24});
    check::require_close(out, dense, 2 * expected.bound);
  }
  for (Index i = 0; i < g.queries(); ++i)
    if (g.isolated(i)) {
      CAPTURE(i);
      CHECK(check::zero_row(out, i));
    }
}

/// check_graph for one kernel of each form, each with an Lp magnitude, at d = 8, dv = 4.
template <class T>
void check_every_form(const Graph& g, std::uint32_t seed) {
  constexpr Index d = 8, dv = 4;
  const ref::Problem p = ref::random_problem<T>(g.queries(), g.keys, d, dv, seed);
  const double s = 1 / std::sqrt(double(d));
  const double gamma = ref::default_gamma(d);
  const double lengthscale = std::pow(double(d), 0.25);
  {
    INFO("Exponential x Lp(3)");
    check_graph<T>(p, g, kernels::Exponential<T>(), magnitude::Lp<T>(T(3)), ref::exponential(s),
                   ref::lp(3, gamma, 2));
  }
  {
    INFO("Rbf x Lp(2): softmax attention over the neighbours");
    check_graph<T>(p, g, kernels::Rbf<T>(), magnitude::Lp<T>(T(2)), ref::rbf(std::sqrt(double(d))),
                   ref::lp(2, gamma, 2));
  }
  {
    INFO("Matern 3/2 x Lp(1.5, gamma = 0.2, a = 1.5)");
    check_graph<T>(p, g, kernels::Matern32<T>(), magnitude::Lp<T>(T(1.5), T(0.2), T(1.5)),
                   ref::matern(3, lengthscale), ref::lp(1.5, double(T(0.2)), 1.5));
  }
  {
    INFO("Laplacian x L1");
    check_graph<T>(p, g, kernels::Laplacian<T>(), magnitude::L1<T>(), ref::matern(1, lengthscale),
                   ref::lp(1, gamma, 2));
  }
  {
    INFO("Polynomial of degree 2 (direct) x Lp(3)");
    check_graph<T>(p, g, kernels::Polynomial<T>(), magnitude::Lp<T>(T(3)), ref::polynomial(2, 1, s),
                   ref::lp(3, gamma, 2));
  }
  {
    INFO("RandomFeature<Fourier> (feature form, direct) x Lp(2)");
    // As in test_ika.cpp: lengthscale 2 and small data keep every estimate near 0.9, so no
    // directly normalised row sum nears 0.
    constexpr Index M = 32;
    const auto map = features::Fourier<T>::draw(spectral::Gaussian<T>(T(2)), M, d,
                                                kernattn::random::RandomStream{seed, 0});
    const ref::Problem small = ref::rounded<T>({ref::normal(g.queries(), d, seed + 10, 0.0, 0.25),
                                                ref::normal(g.keys, d, seed + 11, 0.0, 0.25),
                                                ref::normal(g.keys, dv, seed + 12)});
    const ref::MagnitudeModel mm = ref::lp(2, gamma, 2);
    check_graph<T>(small, g, kernels::RandomFeature<features::Fourier<T>>(map),
                   magnitude::Lp<T>(T(2)),
                   ref::fourier_model(map.frequencies().template cast<double>(), g.keys,
                                      ref::largest_log_magnitude(small.K, mm)),
                   mm);
  }
}

}  // namespace

TEMPLATE_TEST_CASE("GraphAttention is the kernel smoother over each node's neighbours", "[graph]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  SECTION("square: 200 nodes, edge probability 0.05, some isolated nodes") {
    const Graph g = random_graph(200, 200, 0.05, 6, 4101);
    Index isolated = 0;
    for (Index i = 0; i < g.queries(); ++i) isolated += g.isolated(i) ? 1 : 0;
    REQUIRE(isolated >= 3);
    check_every_form<T>(g, 4102);
  }
  SECTION("rectangular: 70 query nodes, 150 key nodes") {
    check_every_form<T>(random_graph(70, 150, 0.06, 3, 4111), 4112);
  }
  SECTION("dense rows: 60 nodes, edge probability 0.6") {
    check_every_form<T>(random_graph(60, 60, 0.6, 2, 4121), 4122);
  }
}

TEMPLATE_TEST_CASE("Every stored entry is an edge, whatever its value and the storage order",
                   "[graph]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const Graph g = random_graph(120, 100, 0.07, 4, 4201);
  const ref::Problem p = ref::random_problem<T>(120, 100, 6, 3, 4202);
  const ref::Matrix<T> Q = p.q<T>(), K = p.k<T>(), V = p.v<T>();
  for_each_form<T>(6, [&](const auto& kernel, const auto& mu) {
    const GraphAttention graph(kernel, mu);
    const Eigen::SparseMatrix<T, Eigen::RowMajor> row_major = g.adjacency<T>();
    const ref::Matrix<T> out = graph(row_major, Q, K, V);
    CHECK(check::identical(graph(g.adjacency<bool, Eigen::ColMajor>(), Q, K, V), out));
    CHECK(check::identical(graph(g.adjacency<double, Eigen::ColMajor>(), Q, K, V), out));
    CHECK(check::identical(graph(g.adjacency<bool>(), Q, K, V), out));
    CHECK(check::identical(
        graph(g.adjacency<double, Eigen::ColMajor>().template cast<T>(), Q, K, V), out));
    {
      INFO("uncompressed storage");
      Eigen::SparseMatrix<T, Eigen::RowMajor> uncompressed = row_major;
      uncompressed.uncompress();
      CHECK(check::identical(graph(uncompressed, Q, K, V), out));
    }
    {
      INFO("a Map over the caller's arrays");
      const Eigen::Map<const Eigen::SparseMatrix<T, Eigen::RowMajor>> map(
          row_major.rows(), row_major.cols(), row_major.nonZeros(), row_major.outerIndexPtr(),
          row_major.innerIndexPtr(), row_major.valuePtr());
      CHECK(check::identical(graph(map, Q, K, V), out));
    }
    {
      INFO("pruning the stored zeros removes exactly those edges");
      Eigen::SparseMatrix<T, Eigen::RowMajor> pruned = row_major;
      pruned.prune([](Index, Index, T value) { return value != T(0); });
      REQUIRE(pruned.nonZeros() < row_major.nonZeros());
      Graph without_zeros{g.keys, std::vector<std::vector<Index>>(std::size_t(g.queries()))};
      for (Index i = 0; i < pruned.outerSize(); ++i)
        for (typename Eigen::SparseMatrix<T, Eigen::RowMajor>::InnerIterator it(pruned, i); it;
             ++it)
          without_zeros.neighbours[std::size_t(i)].push_back(it.index());
      const ref::Matrix<T> pruned_out = graph(pruned, Q, K, V);
      CHECK(check::identical(graph(without_zeros.adjacency<T>(), Q, K, V), pruned_out));
      CHECK_FALSE(check::identical(pruned_out, out));
    }
  });
}

TEMPLATE_TEST_CASE("add_self_loops equals adding the diagonal to the adjacency", "[graph]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const Graph g = random_graph(150, 150, 0.05, 5, 4401);
  const Graph looped = g.with_self_loops();
  Index stored_diagonal = 0;
  for (Index i = 0; i < g.queries(); ++i)
    stored_diagonal +=
        looped.neighbours[std::size_t(i)].size() == g.neighbours[std::size_t(i)].size();
  REQUIRE(stored_diagonal > 0);                  // rows that store (i, i) already
  REQUIRE(stored_diagonal < g.queries() - 100);  // and many that do not
  const ref::Problem p = ref::random_problem<T>(150, 150, 6, 3, 4402);
  const ref::Matrix<T> Q = p.q<T>(), K = p.k<T>(), V = p.v<T>();
  for_each_form<T>(6, [&](const auto& kernel, const auto& mu) {
    const GraphAttention plain(kernel, mu);
    const GraphAttention with_loops(kernel, mu, GraphOptions{.add_self_loops = true});
    const ref::Matrix<T> expected = plain(looped.adjacency<T>(), Q, K, V);
    CHECK(check::identical(with_loops(g.adjacency<T>(), Q, K, V), expected));
    CHECK(check::identical(with_loops(g.adjacency<bool, Eigen::ColMajor>(), Q, K, V), expected));
    CHECK(check::identical(with_loops(looped.adjacency<T>(), Q, K, V), expected));
  });
  {
    INFO("against the edge reference of the graph with its diagonal");
    const GraphAttention with_loops(kernels::Rbf<T>(), magnitude::Lp<T>(T(3)),
                                    GraphOptions{.add_self_loops = true});
    const ref::Matrix<T> out = with_loops(g.adjacency<T>(), Q, K, V);
    check::require_matches<T>(
        out, edge_reference(p, looped, ref::rbf(std::sqrt(6.0)),
                            ref::lp(3, ref::default_gamma(6), 2), ref::unit_roundoff<T>));
  }
  {
    INFO("needs a square adjacency");
    const GraphAttention with_loops(kernels::Rbf<T>(), magnitude::None{},
                                    GraphOptions{.add_self_loops = true});
    REQUIRE_INVALID_ARGUMENT(with_loops(random_graph(150, 149, 0.05, 0, 4403).adjacency<T>(), Q,
                                        K.topRows(149), V.topRows(149)),
                             "add_self_loops needs a square adjacency");
  }
}

TEMPLATE_TEST_CASE("Batch x heads use one adjacency for every sequence and head", "[graph][batch]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index B = 2, H = 3, nq = 90, nk = 110, d = 5, dv = 3;
  const Graph g = random_graph(nq, nk, 0.06, 4, 4501);
  const ref::Problem p =
      ref::rounded<T>({ref::normal(B * nq, H * d, 4502), ref::normal(B * nk, H * d, 4503),
                       ref::normal(B * nk, H * dv, 4504)});
  const ref::Matrix<T> Q = p.q<T>(), K = p.k<T>(), V = p.v<T>();
  const auto adjacency = g.adjacency<T>();
  for_each_form<T>(d, [&](const auto& kernel, const auto& mu) {
    const GraphAttention graph(kernel, mu);
    const ref::Matrix<T> batched = graph(adjacency, Q, K, V, {B, H});
    ref::Matrix<T> blockwise(B * nq, H * dv);
    for (Index b = 0; b < B; ++b)
      for (Index h = 0; h < H; ++h)
        graph.compute(adjacency, Q.block(b * nq, h * d, nq, d), K.block(b * nk, h * d, nk, d),
                      V.block(b * nk, h * dv, nk, dv), blockwise.block(b * nq, h * dv, nq, dv));
    CHECK(check::identical(batched, blockwise));
  });
  {
    INFO("against the edge reference");
    const GraphAttention graph(kernels::Exponential<T>(), magnitude::Lp<T>(T(3)));
    check::require_matches<T>(
        graph(adjacency, Q, K, V, {B, H}),
        edge_reference(p, g, {B, H}, ref::exponential(1 / std::sqrt(double(d))),
                       ref::lp(3, ref::default_gamma(d), 2), ref::unit_roundoff<T>));
  }
}

TEMPLATE_TEST_CASE("Neither the thread count nor the query tile changes a bit of the result",
                   "[graph][threads]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index n = 300, H = 2, d = 6, dv = 4;
  const Graph g = random_graph(n, n, 0.05, 5, 4601);
  const ref::Problem p = ref::rounded<T>(
      {ref::normal(n, H * d, 4602), ref::normal(n, H * d, 4603), ref::normal(n, H * dv, 4604)});
  const ref::Matrix<T> Q = p.q<T>(), K = p.k<T>(), V = p.v<T>();
  const auto adjacency = g.adjacency<T>();
  for_each_form<T>(d, [&](const auto& kernel, const auto& mu) {
    const ref::Matrix<T> one =
        GraphAttention(kernel, mu, GraphOptions{.threads = 1})(adjacency, Q, K, V, {1, H});
    for (const int threads : {2, 3, 4}) {
      CAPTURE(threads);
      CHECK(check::identical(
          GraphAttention(kernel, mu, GraphOptions{.threads = threads})(adjacency, Q, K, V, {1, H}),
          one));
    }
    // Random-feature kernels compute the query features a tile at a time: the tile may change
    // their last bits.
    if (kernattn::kernels::FeatureMapKernel<std::decay_t<decltype(kernel)>>) return;
    for (const Index query_tile : {1, 7, 1000}) {
      CAPTURE(query_tile);
      const GraphOptions options{.threads = 2, .query_tile = query_tile};
      CHECK(check::identical(GraphAttention(kernel, mu, options)(adjacency, Q, K, V, {1, H}), one));
    }
  });
}

TEMPLATE_TEST_CASE("The output may overlap an input", "[graph]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const Graph g = random_graph(40, 40, 0.1, 2, 4901);
  ref::Matrix<T> X = ref::random_problem<T>(40, 40, 5, 5, 4902).template q<T>();
  const GraphAttention graph(kernels::Rbf<T>(), magnitude::Lp<T>(T(3)));
  const ref::Matrix<T> expected = graph(g.adjacency<T>(), X, X, X);
  graph.compute(g.adjacency<T>(), X, X, X, X);
  CHECK(check::identical(X, expected));
}

TEMPLATE_TEST_CASE("Distance kernels are accurate on self-loops, where q = k", "[graph][distance]",
                   KERNATTN_TEST_SCALARS) {
  // Keys = queries: every self-loop has r = 0. Squared distances are computed directly per edge,
  // so the reference's bound holds there as everywhere (the expansion |q|^2 + |k|^2 - 2 q.k
  // would be only sqrt(u)-accurate in r).
  using T = TestType;
  constexpr Index n = 120, d = 32, dv = 4;
  const Graph g = random_graph(n, n, 0.05, 4, 5301);
  ref::Problem p = ref::random_problem<T>(n, n, d, dv, 5302);
  p.K = p.Q;
  const GraphOptions loops{.add_self_loops = true};
  const double l = std::pow(double(d), 0.25);
  const auto check_kernel = [&](const auto& kernel, const ref::KernelModel& model) {
    const ref::Matrix<T> out = GraphAttention(kernel, magnitude::None{}, loops)(
        g.adjacency<T>(), p.q<T>(), p.k<T>(), p.v<T>());
    check::require_matches<T>(out, edge_reference(p, g.with_self_loops(), model,
                                                  ref::unit_magnitude(), ref::unit_roundoff<T>));
  };
  check_kernel(kernels::Laplacian<T>(), ref::matern(1, l));
  check_kernel(kernels::Matern52<T>(), ref::matern(5, l));
  check_kernel(kernels::RationalQuadratic<T>(), ref::rational_quadratic(1, l));
}

}  // namespace test_graph_attention
