#pragma once
/// \file
/// The sparse (graph) engine: each query row attends over the neighbourhood its row of a sparse
/// adjacency stores, in \f$O(\mathrm{nnz}\cdot d)\f$; and the checks and the row-major view of
/// the adjacency it reads. Pairs are scored by the kernel form's `Scoring`.

#include <Eigen/SparseCore>
#include <algorithm>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/key_terms.hpp"
#include "kernattn/engine/log_weight_range.hpp"
#include "kernattn/engine/prepare_keys.hpp"
#include "kernattn/engine/row_statistics.hpp"
#include "kernattn/engine/scoring.hpp"
#include "kernattn/engine/tile_scratch.hpp"
#include "kernattn/kernels/kernel.hpp"
#include "kernattn/magnitude/magnitude.hpp"

namespace kernattn::detail {

/// The adjacency as row-major compressed storage, whose rows are the neighbourhoods: the
/// argument itself when it already is (a row-major `SparseMatrix`, `Map` or `Ref`), otherwise one
/// row-major copy of it.
template <class Adjacency>
[[nodiscard]] decltype(auto) row_major_adjacency(const Eigen::SparseMatrixBase<Adjacency>& a) {
  if constexpr (Adjacency::IsRowMajor &&
                std::is_base_of_v<Eigen::SparseCompressedBase<Adjacency>, Adjacency>)
    return a.derived();
  else
    return Eigen::SparseMatrix<typename Adjacency::Scalar, Eigen::RowMajor,
                               typename Adjacency::StorageIndex>(a);
}

/// Requires the structure of a sparse adjacency to be one the engine can read safely: every
/// stored index within the shape. A compressed object given as it is (a `SparseMatrix`, or a
/// `Map` or `Ref` over the caller's arrays, in either storage order) is read from its arrays: its
/// outer index array must be non-decreasing from a start >= 0 and end within the entries it
/// declares, an uncompressed one's per-row counts must fit between consecutive starts, and every
/// inner index must lie in [0, inner size). Any other expression is read through its iterators,
/// whose inner indices are checked the same way. O(outer size + nnz), once per call.
template <class Adjacency>
void validate_adjacency(const Eigen::SparseMatrixBase<Adjacency>& adjacency) {
  const Adjacency& a = adjacency.derived();
  const std::string_view outer_name = Adjacency::IsRowMajor ? "row" : "column";
  const std::string_view inner_name = Adjacency::IsRowMajor ? "column" : "row";
  const Index inner_size = a.innerSize();
  const MatrixShape shape = shape_of(a);
  const auto require_index = [&](Index outer, Index inner) {
    require(0 <= inner && inner < inner_size, "adjacency: ", outer_name, " ", outer, " stores ",
            inner_name, " index ", inner, ", outside [0, ", inner_size, ") (adjacency is ", shape,
            ")");
  };
  if constexpr (std::is_base_of_v<Eigen::SparseCompressedBase<Adjacency>, Adjacency>) {
    const Index outer_size = a.outerSize();
    if (outer_size == 0) return;
    const auto* starts = a.outerIndexPtr();
    const auto* counts = a.innerNonZeroPtr();
    const auto* indices = a.innerIndexPtr();
    const Index first = starts[0];
    const Index last = starts[outer_size];
    require(first >= 0, "adjacency: its outer index array starts at ", first,
            ", below 0 (adjacency is ", shape, ")");
    require(!a.isCompressed() || last - first <= a.nonZeros(),
            "adjacency: its outer index array ends at entry ", last, " but it declares ",
            a.nonZeros(), " stored entries from entry ", first, " (adjacency is ", shape, ")");
    // The structure first, so that no index is read outside [first, last).
    for (Index outer = 0; outer < outer_size; ++outer) {
      const Index begin = starts[outer];
      const Index next = starts[outer + 1];
      require(begin <= next, "adjacency: its outer index array must be non-decreasing, but ",
              outer_name, " ", outer, " starts at entry ", begin, " and ", outer_name, " ",
              outer + 1, " at entry ", next, " (adjacency is ", shape, ")");
      const Index count = counts == nullptr ? next - begin : Index(counts[outer]);
      require(0 <= count && count <= next - begin, "adjacency: ", outer_name, " ", outer, " holds ",
              count, " entries from entry ", begin, ", but the next ", outer_name,
              " starts at entry ", next, " (adjacency is ", shape, ")");
    }
    for (Index outer = 0; outer < outer_size; ++outer) {
      const Index begin = starts[outer];
      const Index end = counts == nullptr ? starts[outer + 1] : begin + Index(counts[outer]);
      for (Index p = begin; p < end; ++p) require_index(outer, Index(indices[p]));
    }
  } else {
    const Eigen::internal::evaluator<Adjacency> entries(a);
    for (Index outer = 0; outer < a.outerSize(); ++outer)
      for (typename Eigen::internal::evaluator<Adjacency>::InnerIterator entry(entries, outer);
           entry; ++entry)
        require_index(outer, Index(entry.index()));
  }
}

/// Writes into `neighbours` the neighbourhood \f$N(i)\f$ of row `node` of the row-major
/// `adjacency`: the column indices its row stores, in increasing order, each once (an index stored
/// twice is one edge), with `node` itself added when `add_self_loops` and it is missing.
template <class Adjacency>
void collect_neighbours(const Adjacency& adjacency, Index node, bool add_self_loops,
                        std::vector<Index>& neighbours) {
  neighbours.clear();
  for (typename Adjacency::InnerIterator edge(adjacency, node); edge; ++edge)
    neighbours.push_back(edge.index());
  if (!std::is_sorted(neighbours.begin(), neighbours.end()))
    std::sort(neighbours.begin(), neighbours.end());
  neighbours.erase(std::unique(neighbours.begin(), neighbours.end()), neighbours.end());
  if (add_self_loops) {
    const auto at = std::lower_bound(neighbours.begin(), neighbours.end(), node);
    if (at == neighbours.end() || *at != node) neighbours.insert(at, node);
  }
}

/// Attends rows [first_row, first_row + queries.rows()) of one sequence and head over their
/// neighbourhoods (rows of the row-major `adjacency`) and writes their output rows. `keys` holds
/// one row per key (the key features for feature kernels) and `values` one row per value.
///
/// Row i's neighbourhood \f$N(i)\f$ is the set of column indices its row stores, visited in
/// increasing order: an index stored twice is one edge. A distance kernel's squared distances
/// are computed directly, \f$\sum_l (q_l - k_l)^2\f$, at the cost of the inner product, so they
/// are accurate to \f$(d + 2)\,u\,r^2\f$ however close a neighbour is. The pairs of each row are
/// checked against the numeric range (`LogWeightRange`) before any arithmetic.
///
/// Row i gathers its neighbours' scores into a buffer, maps them with the kernel once, and
/// normalises them stably, relative to a row maximum \f$m_i\f$ over its neighbours only:
///  - exponential forms: \f$w_{ij} = e^{x_{ij} - m_i}\f$ with \f$x_{ij} = \log\kappa(q_i,k_j) +
///    g(k_j) + \log\mu(k_j)\f$ and \f$m_i = \max_{j\in N(i)} x_{ij}\f$;
///  - direct form: \f$w_{ij} = \kappa(q_i,k_j)\,e^{\log\mu(k_j) - m_i}\f$ with
///    \f$m_i = \max_{j\in N(i)}\log\mu(k_j)\f$ (no maximum without a magnitude);
/// then \f$out_i = \sum_j w_{ij} v_j / \sum_j w_{ij}\f$, and a row without neighbours, or whose
/// weights sum to exactly zero, outputs zeros. Row i reads the keys and values of its neighbours
/// only, so a non-finite key or value reaches exactly the rows of the nodes that attend to it.
///
/// `statistics` is `NoStatistics` or the rows' segment of the row statistics, written from
/// \f$m_i\f$ and \f$\sum_j w_{ij}\f$ as the dense engine writes them (`write_row_statistics`).
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude, class Adjacency, class QueryRows,
          class Keys, class Values, class OutRows, class Statistics>
void attend_graph_rows(const Kernel& kernel, const Adjacency& adjacency, bool add_self_loops,
                       const QueryRows& queries, Index first_row, const Keys& keys,
                       const Values& values, const KeyTerms<typename Kernel::Scalar>& terms,
                       OutRows&& out, Statistics&& statistics) {
  using T = typename Kernel::Scalar;
  constexpr T minus_infinity = ScalarTraits<T>::negative_infinity;
  using Form = Scoring<Kernel>;
  constexpr bool exponential = Form::exponential;
  constexpr bool add_key_bias = has_key_bias<Kernel, Magnitude>();

  const Index rows = queries.rows();
  const Index d = queries.cols();

  // The queries, prepared once per block of rows.
  const auto prepared = Form::prepare_rows(kernel, queries);

  const LogWeightRange<T> range = LogWeightRange<T>::of(kernel, d);
  Eigen::ArrayXXd query_norms;
  range.norms(queries, query_norms);

  std::vector<Index> neighbours;
  Eigen::Array<T, Eigen::Dynamic, 1> buffer;
  Eigen::Matrix<T, 1, Eigen::Dynamic> accumulated(values.cols());
  // The rows' outputs, stored into `out` as one block at the end (rows of a column-major output
  // are strided).
  RowMajorMatrix<T> results(rows, values.cols());
  constexpr bool write_statistics = !std::is_same_v<std::remove_cvref_t<Statistics>, NoStatistics>;
  // Each row's reference m_i (-inf without one) and the sum of its weights relative to it.
  Eigen::Array<T, Eigen::Dynamic, 1> row_maxima =
      Eigen::Array<T, Eigen::Dynamic, 1>::Constant(rows, minus_infinity);
  Eigen::Array<T, Eigen::Dynamic, 1> row_sums = Eigen::Array<T, Eigen::Dynamic, 1>::Zero(rows);

  for (Index i = 0; i < rows; ++i) {
    const Index node = first_row + i;
    collect_neighbours(adjacency, node, add_self_loops, neighbours);

    const auto count = Index(neighbours.size());
    if (count == 0) {
      results.row(i).setZero();
      continue;
    }
    if (buffer.size() < count) buffer.resize(count);
    auto scores = buffer.head(count);
    const auto neighbour = [&](Index t) { return neighbours[std::size_t(t)]; };
    range.require_keys("GraphAttention", node, LogWeightRange<T>::row_of(query_norms, i),
                       terms.range_norms, terms.range_key_terms, neighbours);

    for (Index t = 0; t < count; ++t)
      scores(t) = Form::score_pair(prepared, i, keys.row(neighbour(t)));
    Form::map_scores(kernel, scores, d);

    // Weights relative to the row maximum; a maximum of -inf means that every weight is 0.
    // Eigen's vectorised exp does not give exactly 0 for -inf: those weights are set to 0.
    if constexpr (exponential) {
      if constexpr (add_key_bias)
        for (Index t = 0; t < count; ++t) scores(t) += terms.key_bias(neighbour(t));
      const T maximum = scores.maxCoeff();
      row_maxima(i) = maximum;
      if (maximum == minus_infinity)
        scores.setZero();
      else
        scores = (scores == minus_infinity).select(T(0), (scores - maximum).exp());
    } else if constexpr (add_key_bias) {
      T maximum = minus_infinity;
      for (Index t = 0; t < count; ++t) maximum = std::max(maximum, terms.key_bias(neighbour(t)));
      row_maxima(i) = maximum;
      if (maximum == minus_infinity)
        scores.setZero();
      else
        for (Index t = 0; t < count; ++t)
          scores(t) *= std::exp(terms.key_bias(neighbour(t)) - maximum);
    }
    const T sum = scores.sum();
    row_sums(i) = sum;
    if (sum == T(0)) {
      results.row(i).setZero();
      continue;
    }
    accumulated.setZero();
    for (Index t = 0; t < count; ++t) accumulated += scores(t) * values.row(neighbour(t));
    results.row(i) = accumulated / sum;
  }
  out = results;
  if constexpr (write_statistics)
    write_row_statistics(kernel, queries, first_row, TileScratch<T>::of_this_thread(), row_maxima,
                         row_sums, statistics);
}

}  // namespace kernattn::detail
