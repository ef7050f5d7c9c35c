#pragma once
/// \file
/// The backward pass of the sparse (graph) engine (docs/gradients.md): dQ, dK and dV from Q, K,
/// V, the output, the row statistics and dOut, in \f$O(\mathrm{nnz}\cdot d)\f$ time, reading for
/// each row its neighbours only and for each key the rows that attend to it only.

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/core/threading.hpp"
#include "kernattn/engine/exact_backward.hpp"
#include "kernattn/engine/graph_engine.hpp"
#include "kernattn/engine/key_terms.hpp"
#include "kernattn/engine/log_weight_range.hpp"
#include "kernattn/engine/options.hpp"
#include "kernattn/engine/score_gradients.hpp"
#include "kernattn/kernels/kernel.hpp"
#include "kernattn/magnitude/magnitude.hpp"

namespace kernattn::detail {

/// The edges of a graph call twice over: by row (row i's neighbours \f$N(i)\f$, increasing, at
/// `row_edges[row_starts[i] .. row_starts[i + 1])`) and by key (the edges into key j, by
/// increasing row, at `incoming[key_starts[j] .. key_starts[j + 1])`, each an index into the
/// by-row list).
struct GraphEdges {
  std::vector<Index> row_starts;
  std::vector<Index> row_edges;
  std::vector<Index> key_starts;
  std::vector<Index> incoming;
  /// The row of each edge of the by-row list.
  std::vector<Index> edge_rows;

  [[nodiscard]] Index edges() const { return Index(row_edges.size()); }
};

/// The `GraphEdges` of a row-major `adjacency` with `keys` columns (`collect_neighbours` for
/// each row, then a counting sort by key, which keeps the rows in order).
template <class Adjacency>
[[nodiscard]] GraphEdges graph_edges(const Adjacency& adjacency, Index queries, Index keys,
                                     bool add_self_loops) {
  GraphEdges edges;
  edges.row_starts.assign(std::size_t(queries) + 1, 0);
  std::vector<Index> neighbours;
  for (Index i = 0; i < queries; ++i) {
    collect_neighbours(adjacency, i, add_self_loops, neighbours);
    edges.row_edges.insert(edges.row_edges.end(), neighbours.begin(), neighbours.end());
    edges.edge_rows.insert(edges.edge_rows.end(), neighbours.size(), i);
    edges.row_starts[std::size_t(i) + 1] = edges.edges();
  }
  edges.key_starts.assign(std::size_t(keys) + 1, 0);
  for (const Index j : edges.row_edges) ++edges.key_starts[std::size_t(j) + 1];
  for (std::size_t j = 0; j < std::size_t(keys); ++j)
    edges.key_starts[j + 1] += edges.key_starts[j];
  std::vector<Index> next(edges.key_starts.begin(), edges.key_starts.end() - 1);
  edges.incoming.resize(edges.row_edges.size());
  for (Index e = 0; e < edges.edges(); ++e)
    edges.incoming[std::size_t(next[std::size_t(edges.row_edges[std::size_t(e)])]++)] = e;
  return edges;
}

/// What the row pass of one sequence and head leaves per edge for its key pass: the normalised
/// weight \f$P_{ij}\f$, the score gradient \f$G_{ij}\f$, and (direct forms with a key bias) the
/// bias's share \f$P_{ij}E_{ij}\f$; the exponential forms' share is \f$G_{ij}\f$.
template <Real T>
struct EdgeGradients {
  Vector<T> weights;
  Vector<T> score_gradients;
  Vector<T> bias_shares;
};

/// The rows `selected` of `rows`, gathered into `gathered`.
template <class Rows, class Gathered>
void gather_rows(const Rows& rows, const Index* selected, Index count, Gathered& gathered) {
  gathered.resize(count, rows.cols());
  for (Index t = 0; t < count; ++t) gathered.row(t) = rows.row(selected[t]);
}

/// The key terms that `ScoreGradients` reads of the keys `selected`, gathered in their order.
template <Real T>
void gather_key_terms(const KeyTerms<T>& terms, const Index* selected, Index count,
                      KeyTerms<T>& gathered) {
  const auto gather = [&](const auto& all, auto& part) {
    if (all.size() == 0)
      part.resize(0, 1);
    else
      gather_rows(all, selected, count, part);
  };
  gather(terms.key_bias, gathered.key_bias);
  gather(terms.squared_norms, gathered.squared_norms);
  gather(terms.features, gathered.features);
}

/// The row pass of one sequence and head, rows [first, first + rows): for each row i, its
/// neighbours' scores are recomputed as one 1 x |N(i)| tile, turned into \f$P_{ij}\f$ and
/// \f$G_{ij}\f$ (`weights_and_score_gradients`), kept per edge, and \f$dq_i = \sum_j G_{ij}\,
/// \partial s_{ij}/\partial q_i\f$ is written. A row without neighbours gets \f$dq_i = 0\f$.
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude, class Queries, class Keys,
          class Values, class OutGradient, class QueryGradient>
void graph_backward_rows(const Kernel& kernel, const GraphEdges& edges, Index first, Index rows,
                         const Queries& queries, const Keys& keys, const Values& values,
                         const OutGradient& dOut,
                         const HeadBackwardTerms<typename Kernel::Scalar>& head,
                         EdgeGradients<typename Kernel::Scalar>& edge_gradients,
                         QueryGradient&& dQ) {
  using T = typename Kernel::Scalar;
  using Gradients = ScoreGradients<Kernel>;
  BackwardTiles<T>& tiles = BackwardTiles<T>::of_this_thread();
  const Index d = queries.cols();
  const LogWeightRange<T> range = LogWeightRange<T>::of(kernel, d);
  Eigen::ArrayXXd query_norms;
  range.norms(queries.middleRows(first, rows), query_norms);
  RowMajorMatrix<T> query(1, d);
  RowMajorMatrix<T> out_gradient(1, values.cols());
  RowMajorMatrix<T> neighbour_keys;
  RowMajorMatrix<T> neighbour_values;
  Matrix<T> query_gradient(1, d);
  Matrix<T> unused_key_gradients;
  KeyTerms<T> neighbour_terms;
  Eigen::Array<T, Eigen::Dynamic, 1> bias_shares;
  const auto always = [](Index, Index) { return true; };

  for (Index i = first; i < first + rows; ++i) {
    const Index begin = edges.row_starts[std::size_t(i)];
    const Index count = edges.row_starts[std::size_t(i) + 1] - begin;
    if (count == 0) {
      dQ.row(i).setZero();
      continue;
    }
    const Index* neighbours = edges.row_edges.data() + begin;
    range.require_keys("GraphAttention", i, LogWeightRange<T>::row_of(query_norms, i - first),
                       head.key_terms.range_norms, head.key_terms.range_key_terms,
                       std::span<const Index>(neighbours, std::size_t(count)));
    query = queries.row(i);
    out_gradient = dOut.row(i);
    gather_rows(keys, neighbours, count, neighbour_keys);
    gather_rows(values, neighbours, count, neighbour_values);
    gather_key_terms(head.key_terms, neighbours, count, neighbour_terms);

    Matrix<T>& weights = tiles.weights;
    Matrix<T>& gradient = tiles.weight_gradients;
    weights.resize(1, count);
    Gradients::scores(kernel, query, neighbour_keys, neighbour_terms, 0, tiles.scoring, weights);
    gradient.noalias() = out_gradient * neighbour_values.transpose();
    gradient.array() -= head.products(i);
    bias_shares.setZero(count);
    weights_and_score_gradients<Kernel, Magnitude>(
        neighbour_terms, 0, head.references.segment(i, 1).array(), false, always,
        [](const Matrix<T>&) {}, weights, gradient, bias_shares);
    edge_gradients.weights.segment(begin, count) = weights.row(0).transpose();
    edge_gradients.score_gradients.segment(begin, count) = gradient.row(0).transpose();
    if (edge_gradients.bias_shares.size() != 0)
      edge_gradients.bias_shares.segment(begin, count) = bias_shares.matrix();
    query_gradient.setZero();
    unused_key_gradients.setZero(count, d);
    Gradients::add_gradients(kernel, query, neighbour_keys, tiles.scoring, gradient, query_gradient,
                             unused_key_gradients);
    dQ.row(i) = query_gradient;
  }
}

/// The key pass of one sequence and head, keys [first, first + count): for each key j, the rows
/// that attend to it are gathered as one \f$|\{i : j \in N(i)\}| \times 1\f$ tile, and
/// \f$dv_j = \sum_i P_{ij}\,dO_i\f$ and \f$dk_j = \sum_i G_{ij}\,\partial s_{ij}/\partial k_j +
/// (\sum_i \mathrm{share}_{ij})\,\nabla(g + \log\mu)(k_j)\f$ are written, the sums in increasing
/// i. A key no row attends to gets zeros.
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude, class Queries, class Keys,
          class OutGradient, class KeyGradient, class ValueGradient>
void graph_backward_keys(const Kernel& kernel, const GraphEdges& edges, Index first, Index count,
                         const Queries& queries, const Keys& keys, const OutGradient& dOut,
                         const HeadBackwardTerms<typename Kernel::Scalar>& head,
                         const EdgeGradients<typename Kernel::Scalar>& edge_gradients,
                         KeyGradient&& dK, ValueGradient&& dV) {
  using T = typename Kernel::Scalar;
  using Gradients = ScoreGradients<Kernel>;
  BackwardTiles<T>& tiles = BackwardTiles<T>::of_this_thread();
  const Index d = queries.cols();
  RowMajorMatrix<T> key(1, d);
  RowMajorMatrix<T> attending_queries;
  RowMajorMatrix<T> attending_out_gradients;
  std::vector<Index> rows;
  Vector<T> weights;
  Vector<T> shares;
  Matrix<T> key_gradient(1, d);
  Matrix<T> unused_query_gradients;

  for (Index j = first; j < first + count; ++j) {
    const Index begin = edges.key_starts[std::size_t(j)];
    const Index attending = edges.key_starts[std::size_t(j) + 1] - begin;
    if (attending == 0) {
      dK.row(j).setZero();
      dV.row(j).setZero();
      continue;
    }
    rows.resize(std::size_t(attending));
    weights.resize(attending);
    Matrix<T>& gradient = tiles.weight_gradients;
    gradient.resize(attending, 1);
    shares.resize(attending);
    for (Index t = 0; t < attending; ++t) {
      const auto e = std::size_t(edges.incoming[std::size_t(begin + t)]);
      rows[std::size_t(t)] = edges.edge_rows[e];
      weights(t) = edge_gradients.weights(Index(e));
      gradient(t, 0) = edge_gradients.score_gradients(Index(e));
      shares(t) = edge_gradients.bias_shares.size() == 0 ? gradient(t, 0)
                                                         : edge_gradients.bias_shares(Index(e));
    }
    gather_rows(queries, rows.data(), attending, attending_queries);
    gather_rows(dOut, rows.data(), attending, attending_out_gradients);
    key = keys.row(j);
    dV.row(j) = weights.transpose() * attending_out_gradients;

    Matrix<T>& scores = tiles.weights;
    scores.resize(attending, 1);
    Gradients::scores(kernel, attending_queries, key, head.key_terms, j, tiles.scoring, scores);
    key_gradient.setZero();
    unused_query_gradients.setZero(attending, d);
    Gradients::add_gradients(kernel, attending_queries, key, tiles.scoring, gradient,
                             unused_query_gradients, key_gradient);
    if constexpr (has_key_bias<Kernel, Magnitude>())
      key_gradient += shares.sum() * head.bias_gradients.row(j);
    dK.row(j) = key_gradient;
  }
}

/// The backward pass of the graph engine (`attend_graph_rows`) for every sequence and head of
/// `call` (a `BackwardCall`), in two passes over the edges: the row pass (parallel over blocks of
/// `query_block` rows) writes dQ and keeps \f$P_{ij}\f$, \f$G_{ij}\f$ and the bias's share per
/// edge; the key pass (parallel over blocks of as many keys) writes dK and dV from them. Each
/// gradient row is written by one task and summed in a fixed order, so the gradients are
/// bit-identical for every thread count. Extra memory: two or three scalars per edge and sequence
/// and head, plus the edge lists. A row reads its neighbours only and a key the rows that attend
/// to it only, so non-finite data reaches the gradients of exactly the pairs that see it.
template <kernels::DifferentiableKernel Kernel, magnitude::DifferentiableMagnitude Magnitude,
          class Call>
void attend_graph_backward(const Kernel& kernel, const Magnitude& magnitude,
                           const GraphEdges& edges, Index query_block, int threads,
                           const Call& call) {
  using T = typename Kernel::Scalar;
  constexpr bool keep_bias_shares =
      !Scoring<Kernel>::exponential && has_key_bias<Kernel, Magnitude>();
  const Index heads = call.layout.heads;
  const Index queries = call.queries();
  const Index keys = call.keys();
  const Index d = call.d();
  const Index dv = call.dv();
  const Index pairs = call.layout.sequences * heads;
  const auto queries_of = [&](Index b, Index h) { return call.block_of(call.Q, b, h, queries, d); };
  const auto keys_of = [&](Index b, Index h) { return call.block_of(call.K, b, h, keys, d); };
  const auto values_of = [&](Index b, Index h) { return call.block_of(call.V, b, h, keys, dv); };
  const auto out_gradient_of = [&](Index b, Index h) {
    return call.block_of(call.dOut, b, h, queries, dv);
  };

  const auto count = static_cast<std::size_t>(pairs);
  std::vector<HeadBackwardTerms<T>> head_terms(count);
  std::vector<EdgeGradients<T>> edge_gradients(count);
  std::vector<RowMajorMatrix<T>> key_rows(count);
  std::vector<RowMajorMatrix<T>> value_rows(count);
  parallel_for(pairs, threads, [&](Index pair) {
    const Index b = pair / heads;
    const Index h = pair % heads;
    const auto p = std::size_t(pair);
    head_terms[p] =
        head_backward_terms(kernel, magnitude, queries_of(b, h), keys_of(b, h), values_of(b, h),
                            call.block_of(call.out, b, h, queries, dv), out_gradient_of(b, h),
                            call.statistics.col(h).segment(b * queries, queries));
    key_rows[p] = keys_of(b, h);
    value_rows[p] = values_of(b, h);
    edge_gradients[p].weights.resize(edges.edges());
    edge_gradients[p].score_gradients.resize(edges.edges());
    if constexpr (keep_bias_shares) edge_gradients[p].bias_shares.resize(edges.edges());
  });

  const auto blocks_of = [&](Index size) { return size == 0 ? 0 : 1 + (size - 1) / query_block; };
  const Index row_blocks = blocks_of(queries);
  parallel_for(pairs * row_blocks, threads, [&](Index task) {
    const Index pair = task / row_blocks;
    const Index first = task % row_blocks * query_block;
    const auto p = std::size_t(pair);
    graph_backward_rows<Kernel, Magnitude>(
        kernel, edges, first, std::min(query_block, queries - first),
        queries_of(pair / heads, pair % heads), key_rows[p], value_rows[p],
        out_gradient_of(pair / heads, pair % heads), head_terms[p], edge_gradients[p],
        call.block_of(call.dQ, pair / heads, pair % heads, queries, d));
  });
  const Index key_blocks = blocks_of(keys);
  parallel_for(pairs * key_blocks, threads, [&](Index task) {
    const Index pair = task / key_blocks;
    const Index first = task % key_blocks * query_block;
    const Index b = pair / heads;
    const Index h = pair % heads;
    const auto p = std::size_t(pair);
    graph_backward_keys<Kernel, Magnitude>(
        kernel, edges, first, std::min(query_block, keys - first), queries_of(b, h), key_rows[p],
        out_gradient_of(b, h), head_terms[p], edge_gradients[p],
        call.block_of(call.dK, b, h, keys, d), call.block_of(call.dV, b, h, keys, dv));
  });
}

}  // namespace kernattn::detail
