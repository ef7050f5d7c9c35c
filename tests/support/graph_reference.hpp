// The graph attention tests' helpers (test_graph_attention*.cpp; docs/math.md, section 4): graphs
// and their sparse adjacencies, the naive double smoother over each node's edges with its error
// bound, and a kernel of each engine form.
#pragma once

#include <Eigen/SparseCore>
#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "catch.hpp"
#include "reference.hpp"

namespace graph_ref {

namespace features = kernattn::features;
namespace spectral = kernattn::spectral;
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
inline Graph random_graph(Index nq, Index nk, double p, Index isolated, std::uint32_t seed) {
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
inline ref::Reference edge_reference(const ref::Problem& p, const Graph& g,
                                     const ref::KernelModel& kernel,
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

}  // namespace graph_ref
