// Graph attention (docs/math.md, section 4): GraphAttention over a sparse adjacency against a naive
// double reference that loops over each node's edges, and against the dense engine with the
// equivalent mask::Boolean, for every engine form (dot-product, distance, direct, feature) with Lp
// magnitudes; then the edge semantics (stored entries are edges whatever their value, any
// storage order), nodes without neighbours, self-loops, the batch x heads layout, thread-count
// bit identity, bad input and non-finite data.
//
// Tolerances come from the reference's derived first-order bounds (tests/support/reference.hpp),
// which check::require_matches also requires to be informative.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "kernattn/attention/graph_attention.hpp"
#include "reference.hpp"

namespace features = kernattn::features;
namespace spectral = kernattn::spectral;
using kernattn::BatchLayout;
using kernattn::GraphAttention;
using kernattn::GraphOptions;

namespace {

using ref::MatrixXd;
using ref::Row;

/// A directed graph from N_q query nodes to N_k key nodes: `neighbours[i]` lists, in increasing
/// order, the keys that node i attends to.
struct Graph {
  Index keys = 0;
  std::vector<std::vector<Index>> neighbours;

  [[nodiscard]] Index queries() const { return Index(neighbours.size()); }

  /// The equivalent dense set filter: query i sees key j iff (i, j) is an edge.
  [[nodiscard]] ref::Visibility visibility() const {
    ref::Visibility visible = ref::Visibility::Constant(queries(), keys, false);
    for (Index i = 0; i < queries(); ++i)
      for (const Index j : neighbours[std::size_t(i)]) visible(i, j) = true;
    return visible;
  }

  /// The adjacency storing every edge, with the values 0, 1, -2.5, 7, 0, 1, ... in edge order:
  /// the values must not matter, and an explicitly stored 0 is an edge.
  template <class S, int Order = Eigen::RowMajor>
  [[nodiscard]] Eigen::SparseMatrix<S, Order> adjacency() const {
    const S values[] = {S(0), S(1), S(-2.5), S(7)};
    std::vector<Eigen::Triplet<S>> triplets;
    for (Index i = 0; i < queries(); ++i)
      for (const Index j : neighbours[std::size_t(i)])
        triplets.emplace_back(i, j, values[triplets.size() % 4]);
    Eigen::SparseMatrix<S, Order> a(queries(), keys);
    a.setFromTriplets(triplets.begin(), triplets.end());
    return a;
  }

  /// The same graph with the edge (i, i) in every row.
  [[nodiscard]] Graph with_self_loops() const {
    Graph g = *this;
    for (Index i = 0; i < queries(); ++i) {
      auto& row = g.neighbours[std::size_t(i)];
      const auto at = std::lower_bound(row.begin(), row.end(), i);
      if (at == row.end() || *at != i) row.insert(at, i);
    }
    return g;
  }

  [[nodiscard]] bool isolated(Index i) const { return neighbours[std::size_t(i)].empty(); }
};

/// Every (i, j) is an edge with probability p; then `isolated` random rows lose all their edges.
Graph random_graph(Index nq, Index nk, double p, Index isolated, std::uint32_t seed) {
  std::mt19937 engine(seed);
  std::bernoulli_distribution edge(p);
  Graph g{nk, std::vector<std::vector<Index>>(std::size_t(nq))};
  for (Index i = 0; i < nq; ++i)
    for (Index j = 0; j < nk; ++j)
      if (edge(engine)) g.neighbours[std::size_t(i)].push_back(j);
  std::uniform_int_distribution<Index> node(0, nq - 1);
  for (Index c = 0; c < isolated; ++c) g.neighbours[std::size_t(node(engine))].clear();
  return g;
}

/// The naive kernel smoother over the edges, in double: for each node i, the weights of its
/// neighbours only, normalised, times their values (a node without neighbours is zero). The
/// per-row weights and their first-order error bounds for precision u come from the reference's
/// kernel and magnitude models (ref::detail::row_weights, smooth_row), plus the reference's own
/// rounding.
ref::Reference edge_reference(const ref::Problem& p, const Graph& g, const ref::KernelModel& kernel,
                              const ref::MagnitudeModel& magnitude, double u) {
  REQUIRE(g.queries() == p.Q.rows());
  REQUIRE(g.keys == p.K.rows());
  const Index dv = p.V.cols();
  ref::Reference r{MatrixXd::Zero(g.queries(), dv), MatrixXd::Zero(g.queries(), dv)};
  for (Index i = 0; i < g.queries(); ++i) {
    const std::vector<Index>& edges = g.neighbours[std::size_t(i)];
    if (edges.empty()) continue;
    MatrixXd values(Index(edges.size()), dv);
    for (std::size_t t = 0; t < edges.size(); ++t) values.row(Index(t)) = p.V.row(edges[t]);
    const Row q = p.Q.row(i);
    const auto library = ref::detail::smooth_row(
        ref::detail::row_weights(q, p.K, edges, kernel, magnitude, u), values, u);
    const auto own = ref::detail::smooth_row(
        ref::detail::row_weights(q, p.K, edges, kernel, magnitude, ref::u_double), values,
        ref::u_double);
    r.out.row(i) = library.out;
    r.bound.row(i) = library.bound + own.bound;
  }
  return r;
}

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

/// Calls check(kernel, magnitude) for a kernel of each form, for head dimension d: the tests
/// that compare library runs bit for bit.
template <class T, class Check>
void for_each_form(Index d, const Check& check) {
  {
    INFO("Rbf x Lp(3)");
    check(kernels::Rbf<T>(), magnitude::Lp<T>(T(3)));
  }
  {
    INFO("Matern 5/2, no magnitude");
    check(kernels::Matern52<T>(), magnitude::None{});
  }
  {
    INFO("Polynomial of degree 3 x L2");
    check(kernels::Polynomial<T>(3), magnitude::L2<T>());
  }
  {
    INFO("RandomFeature<Fourier> x Lp(2)");
    check(kernels::RandomFeature<features::Fourier<T>>(features::Fourier<T>::draw(
              spectral::Gaussian<T>(T(2)), 16, d, kernattn::random::RandomStream{77, 0})),
          magnitude::Lp<T>(T(2)));
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

TEMPLATE_TEST_CASE("Nodes without neighbours output exact zeros", "[graph]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index n = 30, d = 4, dv = 3;
  const ref::Problem p = ref::random_problem<T>(n, n, d, dv, 4301);
  const ref::Matrix<T> Q = p.q<T>(), K = p.k<T>(), V = p.v<T>();
  SECTION("an adjacency without entries") {
    for_each_form<T>(d, [&](const auto& kernel, const auto& mu) {
      const Eigen::SparseMatrix<T> empty(n, n);
      const ref::Matrix<T> out = GraphAttention(kernel, mu)(empty, Q, K, V);
      CHECK(out.rows() == n);
      CHECK(out.cols() == dv);
      CHECK((out.array() == 0).all());
    });
  }
  SECTION("no keys, no queries") {
    const GraphAttention graph(kernels::Rbf<T>(), magnitude::Lp<T>(T(3)));
    const ref::Matrix<T> no_keys =
        graph(Eigen::SparseMatrix<T>(n, 0), Q, K.topRows(0), V.topRows(0));
    CHECK(no_keys.rows() == n);
    CHECK((no_keys.array() == 0).all());
    const ref::Matrix<T> no_queries = graph(Eigen::SparseMatrix<T>(0, n), Q.topRows(0), K, V);
    CHECK(no_queries.rows() == 0);
    CHECK(no_queries.cols() == dv);
  }
  SECTION("a direct kernel whose weights all vanish") {
    // Linear: kappa(q, k) = q.k = 0 for q = 0, so the row's weights sum to exactly 0.
    ref::Matrix<T> zero_query = Q;
    zero_query.row(7).setZero();
    const Graph g = random_graph(n, n, 0.3, 0, 4302);
    REQUIRE_FALSE(g.isolated(7));
    const ref::Matrix<T> out = GraphAttention(kernels::Linear<T>(), magnitude::Lp<T>(T(2)))(
        g.adjacency<T>(), zero_query, K, V);
    CHECK(check::zero_row(out, 7));
    CHECK(out.allFinite());
  }
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
    const GraphAttention with_loops(kernel, mu, GraphOptions{0, true});
    const ref::Matrix<T> expected = plain(looped.adjacency<T>(), Q, K, V);
    CHECK(check::identical(with_loops(g.adjacency<T>(), Q, K, V), expected));
    CHECK(check::identical(with_loops(g.adjacency<bool, Eigen::ColMajor>(), Q, K, V), expected));
    CHECK(check::identical(with_loops(looped.adjacency<T>(), Q, K, V), expected));
  });
  {
    INFO("against the edge reference of the graph with its diagonal");
    const GraphAttention with_loops(kernels::Rbf<T>(), magnitude::Lp<T>(T(3)),
                                    GraphOptions{0, true});
    const ref::Matrix<T> out = with_loops(g.adjacency<T>(), Q, K, V);
    check::require_matches<T>(
        out, edge_reference(p, looped, ref::rbf(std::sqrt(6.0)),
                            ref::lp(3, ref::default_gamma(6), 2), ref::unit_roundoff<T>));
  }
  {
    INFO("needs a square adjacency");
    const GraphAttention with_loops(kernels::Rbf<T>(), magnitude::None{}, GraphOptions{0, true});
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

TEMPLATE_TEST_CASE("The thread count never changes a bit of the result", "[graph][threads]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index n = 300, H = 2, d = 6, dv = 4;
  const Graph g = random_graph(n, n, 0.05, 5, 4601);
  const ref::Problem p = ref::rounded<T>(
      {ref::normal(n, H * d, 4602), ref::normal(n, H * d, 4603), ref::normal(n, H * dv, 4604)});
  const ref::Matrix<T> Q = p.q<T>(), K = p.k<T>(), V = p.v<T>();
  const auto adjacency = g.adjacency<T>();
  for_each_form<T>(d, [&](const auto& kernel, const auto& mu) {
    const ref::Matrix<T> one =
        GraphAttention(kernel, mu, GraphOptions{1})(adjacency, Q, K, V, {1, H});
    for (const int threads : {2, 3, 4}) {
      CAPTURE(threads);
      CHECK(check::identical(
          GraphAttention(kernel, mu, GraphOptions{threads})(adjacency, Q, K, V, {1, H}), one));
    }
  });
}

TEST_CASE("Graph attention rejects bad input, naming the argument", "[graph][errors]") {
  using Matrix = ref::Matrix<float>;
  const GraphAttention<kernels::Exponential<float>> graph;
  const Matrix Q = ref::normal(5, 64, 4701).cast<float>(),
               K = ref::normal(7, 64, 4702).cast<float>(),
               V = ref::normal(7, 3, 4703).cast<float>();
  const Eigen::SparseMatrix<float> adjacency(5, 7);
  SECTION("adjacency rows != N_q") {
    REQUIRE_INVALID_ARGUMENT(graph(Eigen::SparseMatrix<float>(6, 7), Q, K, V),
                             "adjacency is 6x7 but must be N_q x N_k = 5x7");
  }
  SECTION("adjacency columns != N_k") {
    REQUIRE_INVALID_ARGUMENT(graph(Eigen::SparseMatrix<bool>(5, 8), Q, K, V),
                             "adjacency is 5x8 but must be N_q x N_k = 5x7");
    REQUIRE_INVALID_ARGUMENT(graph(Eigen::SparseMatrix<bool>(5, 8), Q, K, V),
                             "Q is 5x64, K is 7x64");
  }
  SECTION("an adjacency for the whole batch instead of one sequence") {
    const Matrix Q2 = ref::normal(10, 64, 4704).cast<float>(),
                 K2 = ref::normal(14, 64, 4705).cast<float>(),
                 V2 = ref::normal(14, 3, 4706).cast<float>();
    REQUIRE_INVALID_ARGUMENT(graph(Eigen::SparseMatrix<float>(10, 14), Q2, K2, V2, {2, 1}),
                             "adjacency is 10x14 but must be N_q x N_k = 5x7");
  }
  SECTION("K, V and out of the wrong shape") {
    REQUIRE_INVALID_ARGUMENT(graph(adjacency, Q, Matrix(7, 63), V),
                             "K has 63 columns but Q has 64");
    REQUIRE_INVALID_ARGUMENT(graph(adjacency, Q, K, Matrix(6, 3)), "V has 6 rows but K has 7");
    Matrix wrong(4, 3);
    REQUIRE_INVALID_ARGUMENT(graph.compute(adjacency, Q, K, V, wrong),
                             "out is 4x3 but the attention output is 5x3");
  }
  SECTION("a layout that does not divide the columns") {
    REQUIRE_INVALID_ARGUMENT(graph(adjacency, Q, K, V, {1, 3}),
                             "must have a multiple of 3 columns for 3 heads");
  }
  SECTION("a negative thread count") {
    REQUIRE_INVALID_ARGUMENT((GraphAttention<kernels::Exponential<float>>(
                                 kernels::Exponential<float>(), {}, GraphOptions{-1})),
                             "GraphOptions: threads must be >= 0");
  }
}

TEMPLATE_TEST_CASE("A NaN or infinity reaches only the nodes that have it as a neighbour",
                   "[graph][nonfinite]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index n = 80;
  constexpr Index poisoned_key = 11, poisoned_value = 42;
  const Graph g = random_graph(n, n, 0.08, 3, 4801);
  const ref::Problem clean = ref::random_problem<T>(n, n, 6, 3, 4802);
  ref::Problem poisoned = clean;
  poisoned.K(poisoned_key, 2) = std::numeric_limits<double>::quiet_NaN();
  poisoned.V.row(poisoned_value).setConstant(std::numeric_limits<double>::infinity());
  const auto adjacency = g.adjacency<T>();
  const ref::Visibility sees = g.visibility();
  REQUIRE(sees.col(poisoned_key).any());
  REQUIRE(sees.col(poisoned_value).any());
  REQUIRE_FALSE((sees.col(poisoned_key) || sees.col(poisoned_value)).all());
  for_each_form<T>(6, [&](const auto& kernel, const auto& mu) {
    const GraphAttention graph(kernel, mu);
    const ref::Matrix<T> out = graph(adjacency, poisoned.q<T>(), poisoned.k<T>(), poisoned.v<T>());
    const ref::Matrix<T> reference = graph(adjacency, clean.q<T>(), clean.k<T>(), clean.v<T>());
    for (Index i = 0; i < n; ++i) {
      CAPTURE(i);
      if (sees(i, poisoned_key) || sees(i, poisoned_value))
        CHECK_FALSE(out.row(i).allFinite());
      else
        CHECK(check::identical(out.row(i), reference.row(i)));
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

TEMPLATE_TEST_CASE("A neighbour whose log-weight is -inf weighs exactly zero", "[graph][nonfinite]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index n = 40, d = 4, hidden = 5;
  // Key 5 is (-inf, 0, 0, 0) and every query is positive, so q.k = -inf: log kappa = -inf for
  // Exponential and Rbf (whose key term is -inf too). Its value is huge, so
  // that any weight short of exactly 0 (Eigen's vectorised exp(-inf) is ~1e-39 in float, ~1e-308
  // in double) would show; node 0 has no other neighbour and must output zeros.
  ref::Problem p = ref::random_problem<T>(n, n, d, 3, 5001);
  p.Q = p.Q.cwiseAbs() + MatrixXd::Constant(n, d, 0.125);
  p.K.row(hidden) << -std::numeric_limits<double>::infinity(), 0, 0, 0;
  p.V.row(hidden).setConstant(double(std::numeric_limits<T>::max() / 4));
  p = ref::rounded<T>(p);
  Graph g = random_graph(n, n, 0.2, 0, 5002);
  g.neighbours[0] = {hidden};
  Graph without = g;
  Index edges_to_hidden = 0;
  for (auto& row : without.neighbours) edges_to_hidden += Index(std::erase(row, hidden));
  REQUIRE(edges_to_hidden > 3);
  const auto adjacency = g.adjacency<T>();
  const auto expect = [&](const ref::KernelModel& model) {
    return edge_reference(p, without, model, ref::unit_magnitude(), ref::unit_roundoff<T>);
  };
  {
    INFO("Exponential");
    const ref::Matrix<T> out =
        GraphAttention(kernels::Exponential<T>())(adjacency, p.q<T>(), p.k<T>(), p.v<T>());
    check::require_matches<T>(out, expect(ref::exponential(1 / std::sqrt(double(d)))));
    CHECK(check::zero_row(out, 0));
  }
  {
    INFO("Rbf");
    const ref::Matrix<T> out =
        GraphAttention(kernels::Rbf<T>())(adjacency, p.q<T>(), p.k<T>(), p.v<T>());
    check::require_matches<T>(out, expect(ref::rbf(std::sqrt(double(d)))));
    CHECK(check::zero_row(out, 0));
  }
}

TEMPLATE_TEST_CASE("An edge stored more than once is one edge", "[graph][duplicates]",
                   KERNATTN_TEST_SCALARS) {
  // N(i) is a set, as in the dense mask: an uncompressed matrix with a repeated insert, a summed
  // entry, and a Map over CSR arrays that repeat (and disorder) column indices all give the
  // output of the graph without repeats, bit for bit.
  using T = TestType;
  constexpr Index n = 50, d = 6, dv = 3;
  const Graph g = random_graph(n, n, 0.12, 3, 5101);
  const ref::Problem p = ref::random_problem<T>(n, n, d, dv, 5102);
  const ref::Matrix<T> Q = p.q<T>(), K = p.k<T>(), V = p.v<T>();
  // Every third edge of each row stored twice, the repeat right after it or at the row's end.
  auto stored = std::vector<std::vector<Index>>(std::size_t(n));
  for (Index i = 0; i < n; ++i) {
    const auto& row = g.neighbours[std::size_t(i)];
    auto& out = stored[std::size_t(i)];
    for (std::size_t t = 0; t < row.size(); ++t) {
      out.push_back(row[t]);
      if (t % 3 == 0) out.push_back(row[t]);
    }
    if (!row.empty()) out.push_back(row.front());
  }
  Eigen::SparseMatrix<T, Eigen::RowMajor> uncompressed(n, n);
  Eigen::VectorXi sizes(n);
  for (Index i = 0; i < n; ++i) sizes(i) = int(stored[std::size_t(i)].size()) + 2;
  uncompressed.reserve(sizes);
  for (Index i = 0; i < n; ++i)
    for (const Index j : stored[std::size_t(i)]) uncompressed.insertBackUncompressed(i, j) = T(1);
  REQUIRE_FALSE(uncompressed.isCompressed());
  std::vector<int> starts{0}, columns;
  std::vector<T> values;
  for (Index i = 0; i < n; ++i) {
    auto row = stored[std::size_t(i)];
    std::reverse(row.begin(), row.end());
    for (const Index j : row) columns.push_back(int(j));
    values.resize(columns.size(), T(1));
    starts.push_back(int(columns.size()));
  }
  const Eigen::Map<const Eigen::SparseMatrix<T, Eigen::RowMajor>> map(
      n, n, Index(columns.size()), starts.data(), columns.data(), values.data());
  std::vector<Eigen::Triplet<T>> triplets;
  for (Index i = 0; i < n; ++i)
    for (const Index j : g.neighbours[std::size_t(i)]) {
      triplets.emplace_back(i, j, T(1));
      triplets.emplace_back(i, j, T(-1));  // summed to a stored 0: still one edge
    }
  Eigen::SparseMatrix<T, Eigen::RowMajor> summed(n, n);
  summed.setFromTriplets(triplets.begin(), triplets.end());
  for_each_form<T>(d, [&](const auto& kernel, const auto& mu) {
    const GraphAttention graph(kernel, mu);
    const ref::Matrix<T> expected = graph(g.adjacency<T>(), Q, K, V);
    CHECK(check::identical(graph(uncompressed, Q, K, V), expected));
    CHECK(check::identical(graph(map, Q, K, V), expected));
    CHECK(check::identical(graph(summed, Q, K, V), expected));
    {
      INFO("converted from column-major storage with the repeats");
      const Eigen::SparseMatrix<T, Eigen::ColMajor> column_major = map;
      CHECK(check::identical(graph(column_major, Q, K, V), expected));
    }
    {
      INFO("with self-loops, some stored twice already");
      const GraphAttention looped(kernel, mu, GraphOptions{0, true});
      CHECK(check::identical(looped(uncompressed, Q, K, V), looped(g.adjacency<T>(), Q, K, V)));
    }
  });
  {
    INFO("against the dense engine with the same boolean mask");
    const GraphAttention graph(kernels::Matern32<T>(), magnitude::Lp<T>(T(3)));
    const ref::Reference expected =
        edge_reference(p, g, ref::matern(3, std::pow(double(d), 0.25)),
                       ref::lp(3, ref::default_gamma(d), 2), ref::unit_roundoff<T>);
    const ref::Matrix<T> out = graph(uncompressed, Q, K, V);
    check::require_matches<T>(out, expected);
    check::require_close(out,
                         check::run<T>(p, kernels::Matern32<T>(), magnitude::Lp<T>(T(3)),
                                       mask::Boolean(g.visibility())),
                         2 * expected.bound);
  }
}

TEST_CASE("An adjacency with an index outside its shape or a broken structure is rejected",
          "[graph][errors]") {
  // Maps over the caller's CSR (or CSC) arrays: nothing is read out of bounds (the ASan build
  // checks that), and the message names the adjacency, the index and the shape.
  using Matrix = ref::Matrix<float>;
  using RowMap = Eigen::Map<const Eigen::SparseMatrix<float, Eigen::RowMajor>>;
  using ColumnMap = Eigen::Map<const Eigen::SparseMatrix<float, Eigen::ColMajor>>;
  const GraphAttention<kernels::Exponential<float>> graph;
  const Matrix Q = ref::normal(5, 4, 5201).cast<float>(), K = ref::normal(7, 4, 5202).cast<float>(),
               V = ref::normal(7, 3, 5203).cast<float>();
  const std::vector<float> values(8, 1.0f);
  SECTION("a column index past the last key") {
    const std::vector<int> starts{0, 2, 3, 5, 6, 8}, columns{0, 3, 6, 1, 7, 2, 4, 5};
    REQUIRE_INVALID_ARGUMENT(
        graph(RowMap(5, 7, 8, starts.data(), columns.data(), values.data()), Q, K, V),
        "adjacency: row 2 stores column index 7, outside [0, 7) (adjacency is 5x7)");
  }
  SECTION("a negative column index") {
    const std::vector<int> starts{0, 2, 3, 5, 6, 8}, columns{0, 3, 6, 1, 4, 2, -1, 5};
    REQUIRE_INVALID_ARGUMENT(
        graph(RowMap(5, 7, 8, starts.data(), columns.data(), values.data()), Q, K, V),
        "adjacency: row 4 stores column index -1, outside [0, 7) (adjacency is 5x7)");
  }
  SECTION("a row index past the last query, in column-major storage") {
    const std::vector<int> starts{0, 1, 2, 3, 4, 5, 6, 8}, rows{0, 1, 2, 3, 4, 0, 1, 9};
    REQUIRE_INVALID_ARGUMENT(
        graph(ColumnMap(5, 7, 8, starts.data(), rows.data(), values.data()), Q, K, V),
        "adjacency: column 6 stores row index 9, outside [0, 5) (adjacency is 5x7)");
  }
  SECTION("an outer index array that decreases or overruns the entries") {
    const std::vector<int> columns{0, 3, 6, 1, 4, 2, 4, 5};
    const std::vector<int> decreasing{0, 4, 3, 5, 6, 8};
    REQUIRE_INVALID_ARGUMENT(
        graph(RowMap(5, 7, 8, decreasing.data(), columns.data(), values.data()), Q, K, V),
        "adjacency: its outer index array must be non-decreasing, but row 1 starts at entry 4 "
        "and row 2 at entry 3 (adjacency is 5x7)");
    const std::vector<int> overrun{0, 2, 3, 5, 6, 9};
    REQUIRE_INVALID_ARGUMENT(
        graph(RowMap(5, 7, 8, overrun.data(), columns.data(), values.data()), Q, K, V),
        "adjacency: its outer index array ends at entry 9 but it declares 8 stored entries");
    const std::vector<int> negative{-1, 2, 3, 5, 6, 7};
    REQUIRE_INVALID_ARGUMENT(
        graph(RowMap(5, 7, 8, negative.data(), columns.data(), values.data()), Q, K, V),
        "adjacency: its outer index array starts at -1, below 0");
  }
  SECTION("an uncompressed row that holds more entries than its space") {
    const std::vector<int> starts{0, 2, 3, 5, 6, 8}, columns{0, 3, 6, 1, 4, 2, 4, 5},
        counts{2, 1, 3, 1, 2};
    REQUIRE_INVALID_ARGUMENT(
        graph(RowMap(5, 7, 8, starts.data(), columns.data(), values.data(), counts.data()), Q, K,
              V),
        "adjacency: row 2 holds 3 entries from entry 3, but the next row "
        "starts at entry 5 (adjacency is 5x7)");
  }
  SECTION("a valid Map is read as it is") {
    const std::vector<int> starts{0, 2, 3, 5, 6, 8}, columns{0, 3, 6, 1, 4, 2, 4, 5};
    const Matrix out =
        graph(RowMap(5, 7, 8, starts.data(), columns.data(), values.data()), Q, K, V);
    CHECK(out.allFinite());
  }
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
  const GraphOptions loops{0, true};
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
