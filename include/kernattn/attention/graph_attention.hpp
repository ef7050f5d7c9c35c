#pragma once
/// \file
/// `GraphAttention<Kernel, Magnitude>`: the kernel smoother over the neighbourhoods of a sparse
/// graph (docs/math.md, section 4), \f$ out_i = \sum_{j\in N(i)} w_{ij} v_j / \sum_{j\in N(i)}
/// w_{ij}\f$ with \f$w_{ij} = \kappa(q_i,k_j)\,\mu(k_j)\f$, at a cost of \f$O(\mathrm{nnz}\cdot
/// d)\f$.

#include <Eigen/SparseCore>
#include <algorithm>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernattn/attention/arguments.hpp"
#include "kernattn/attention/key_terms.hpp"
#include "kernattn/attention/log_weight_range.hpp"
#include "kernattn/attention/options.hpp"
#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/core/threading.hpp"
#include "kernattn/kernels/kernel.hpp"
#include "kernattn/magnitude/magnitude.hpp"
#include "kernattn/magnitude/none.hpp"

namespace kernattn {

/// Settings of `GraphAttention`.
struct GraphOptions {
  /// Threads for the parallel loop over sequence x head x block of rows; 0 = the OpenMP
  /// default. No setting of it changes a bit of the result.
  int threads = 0;
  /// Whether every node also attends to itself: \f$N(i) \cup \{i\}\f$, whether or not the
  /// adjacency stores \f$(i, i)\f$. Needs a square adjacency (\f$N_q = N_k\f$).
  bool add_self_loops = false;

  void validate() const {
    require(threads >= 0, "GraphOptions: threads must be >= 0 (0 = the OpenMP default), got ",
            threads);
  }
};

namespace detail {

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
  const auto require_index = [&](Index outer, Index inner) {
    require(0 <= inner && inner < inner_size, "adjacency: ", outer_name, " ", outer, " stores ",
            inner_name, " index ", inner, ", outside [0, ", inner_size, ") (adjacency is ",
            shape_of(a), ")");
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
            ", below 0 (adjacency is ", shape_of(a), ")");
    require(!a.isCompressed() || last - first <= a.nonZeros(),
            "adjacency: its outer index array ends at entry ", last, " but it declares ",
            a.nonZeros(), " stored entries from entry ", first, " (adjacency is ", shape_of(a),
            ")");
    // The structure first, so that no index is read outside [first, last).
    for (Index outer = 0; outer < outer_size; ++outer) {
      const Index begin = starts[outer];
      const Index next = starts[outer + 1];
      require(begin <= next, "adjacency: its outer index array must be non-decreasing, but ",
              outer_name, " ", outer, " starts at entry ", begin, " and ", outer_name, " ",
              outer + 1, " at entry ", next, " (adjacency is ", shape_of(a), ")");
      const Index count = counts == nullptr ? next - begin : Index(counts[outer]);
      require(0 <= count && count <= next - begin, "adjacency: ", outer_name, " ", outer, " holds ",
              count, " entries from entry ", begin, ", but the next ", outer_name,
              " starts at entry ", next, " (adjacency is ", shape_of(a), ")");
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
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude, class Adjacency, class QueryRows,
          class Keys, class Values, class OutRows>
void attend_graph_rows(const Kernel& kernel, const Adjacency& adjacency, bool add_self_loops,
                       const QueryRows& queries, Index first_row, const Keys& keys,
                       const Values& values, const KeyTerms<typename Kernel::Scalar>& terms,
                       OutRows&& out) {
  using T = typename Kernel::Scalar;
  constexpr T minus_infinity = ScalarTraits<T>::negative_infinity;
  constexpr bool exponential = [] {
    if constexpr (kernels::FeatureKernel<Kernel>) return bool(Kernel::log_domain);
    return !kernels::DirectKernel<Kernel>;
  }();
  constexpr bool add_key_bias = has_key_bias<Kernel, Magnitude>();

  const Index rows = queries.rows();
  const Index d = queries.cols();

  // The queries once per block of rows: a q for dot-product and direct kernels, the queries
  // themselves for distance kernels (row-major, like the keys); the query features of feature
  // kernels (their log-scales cancel and are dropped).
  RowMajorMatrix<T> scaled_queries;
  Matrix<T> query_features;
  if constexpr (kernels::DistanceKernel<Kernel>) {
    scaled_queries = queries;
  } else if constexpr (kernels::FeatureKernel<Kernel>) {
    Eigen::VectorXd query_log_scales = Eigen::VectorXd::Zero(rows);
    kernel.features(queries, query_features, query_log_scales);
  } else {
    scaled_queries = kernel.dot_scale(d) * queries;
  }

  const LogWeightRange<T> range = LogWeightRange<T>::of(kernel, d);
  Eigen::ArrayXXd query_norms;
  range.norms(queries, query_norms);

  std::vector<Index> neighbours;
  Eigen::Array<T, Eigen::Dynamic, 1> buffer;
  Eigen::Matrix<T, 1, Eigen::Dynamic> accumulated(values.cols());
  // The rows' outputs, stored into `out` as one block at the end (rows of a column-major output
  // are strided).
  RowMajorMatrix<T> results(rows, values.cols());

  for (Index i = 0; i < rows; ++i) {
    const Index node = first_row + i;
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

    for (Index t = 0; t < count; ++t) {
      const Index j = neighbour(t);
      if constexpr (kernels::FeatureKernel<Kernel>)
        scores(t) = query_features.row(i).dot(keys.row(j));
      else if constexpr (kernels::DistanceKernel<Kernel>)
        scores(t) = (scaled_queries.row(i) - keys.row(j)).squaredNorm();
      else
        scores(t) = scaled_queries.row(i).dot(keys.row(j));
    }
    if constexpr (kernels::FeatureKernel<Kernel>)
      kernel.from_feature_dot(scores);
    else if constexpr (kernels::DistanceKernel<Kernel>)
      kernel.log_from_squared_distance(scores, d);
    else if constexpr (kernels::DirectKernel<Kernel>)
      kernel.from_scaled_dot(scores);

    // Weights relative to the row maximum; a maximum of -inf means that every weight is 0.
    // Eigen's vectorised exp does not give exactly 0 for -inf: those weights are set to 0.
    if constexpr (exponential) {
      if constexpr (add_key_bias)
        for (Index t = 0; t < count; ++t) scores(t) += terms.key_bias(neighbour(t));
      const T maximum = scores.maxCoeff();
      if (maximum == minus_infinity)
        scores.setZero();
      else
        scores = (scores == minus_infinity).select(T(0), (scores - maximum).exp());
    } else if constexpr (add_key_bias) {
      T maximum = minus_infinity;
      for (Index t = 0; t < count; ++t) maximum = std::max(maximum, terms.key_bias(neighbour(t)));
      if (maximum == minus_infinity)
        scores.setZero();
      else
        for (Index t = 0; t < count; ++t)
          scores(t) *= std::exp(terms.key_bias(neighbour(t)) - maximum);
    }
    const T sum = scores.sum();
    if (sum == T(0)) {
      results.row(i).setZero();
      continue;
    }
    accumulated.setZero();
    for (Index t = 0; t < count; ++t) accumulated += scores(t) * values.row(neighbour(t));
    results.row(i) = accumulated / sum;
  }
  out = results;
}

}  // namespace detail

/// Graph attention (GAT with any kernel and magnitude): node i attends to its neighbours,
/// \f[ out_i = \frac{\sum_{j\in N(i)} \kappa(q_i,k_j)\,\mu(k_j)\, v_j}
///                  {\sum_{j\in N(i)} \kappa(q_i,k_j)\,\mu(k_j)}, \f]
/// where \f$N(i)\f$ is row i of a sparse \f$N_q \times N_k\f$ adjacency: exactly the dense
/// `Attention<Kernel, Magnitude, mask::Boolean>` with that adjacency as its mask, evaluated in
/// \f$O(\mathrm{nnz}\cdot d)\f$ time without ever forming an \f$N_q \times N_k\f$ matrix.
///
/// The adjacency: any `Eigen::SparseMatrixBase` expression of any scalar type (`bool`, `float`,
/// ...) and storage order. **Every stored entry is an edge** \f$i \to j\f$ ("query i sees key
/// j"); the stored values are ignored, so an explicitly stored zero is an edge too (call
/// `prune()` on the matrix first to drop those). An edge stored more than once (an uncompressed
/// matrix with a repeated insert, a `Map` whose row repeats a column index) is one edge:
/// \f$N(i)\f$ is a set, as in the dense mask. A row-major `SparseMatrix` (or `Map`/`Ref` of
/// one) is read in place; anything else is converted to row-major once per call. Every call
/// first checks the adjacency's stored structure (see `detail::validate_adjacency`): an index
/// outside the shape, a decreasing outer index array or counts that overrun it throw
/// `InvalidArgument` naming the adjacency, the index and the shape, never read out of bounds. A
/// node without neighbours (an empty row) outputs zeros. `GraphOptions::add_self_loops` adds
/// \f$(i, i)\f$ to every row that lacks it.
///
/// Numerics (docs/numerics.md): distance kernels' squared distances are computed directly per
/// edge, so a node attending to itself or to a near-duplicate is as accurate as any other pair;
/// the numeric range of log-weights is that of the dense engine, checked for the edges only (a
/// pair beyond it throws `InvalidArgument`), and a node whose neighbours' log-weights are all
/// \f$-\infty\f$ outputs zeros.
///
/// Q is \f$N_q\times d\f$, K is \f$N_k\times d\f$, V is \f$N_k\times d_v\f$, or the batch x
/// heads layout of `BatchLayout`: every head uses the same adjacency, and so does every one of
/// B sequences (node i of sequence b attends to nodes \f$N(i)\f$ of sequence b). To attend B
/// different graphs at once, stack them into one block-diagonal adjacency with B = 1.
///
/// The scalar type is the kernel's (float or double); the per-key terms (magnitude, kernel key
/// term, norms, features) are computed once per key, and weights are normalised stably as in the
/// dense engine (see `detail::attend_graph_rows`).
///
/// Thread safety: a const GraphAttention may be used from many threads at once. Each row is
/// computed by one thread in a fixed order, so results are bit-identical for every thread count.
template <kernels::Kernel KernelT, magnitude::Magnitude MagnitudeT = magnitude::None>
class GraphAttention {
  static_assert(kernels::DotProductKernel<KernelT> || kernels::DistanceKernel<KernelT> ||
                    kernels::DirectKernel<KernelT> || kernels::FeatureKernel<KernelT>,
                "GraphAttention evaluates dot-product, distance, direct and feature kernels");

 public:
  using Scalar = typename KernelT::Scalar;
  using Kernel = KernelT;
  using Magnitude = MagnitudeT;

  GraphAttention() = default;
  explicit GraphAttention(Kernel kernel, Magnitude magnitude = {}, GraphOptions options = {})
      : kernel_(std::move(kernel)), magnitude_(std::move(magnitude)), options_(options) {
    options_.validate();
  }

  [[nodiscard]] const Kernel& kernel() const { return kernel_; }
  [[nodiscard]] const Magnitude& magnitude() const { return magnitude_; }
  [[nodiscard]] const GraphOptions& options() const { return options_; }

  /// The attention output, \f$N_q \times d_v\f$ (or \f$(B N_q) \times (H d_v)\f$ for a batch).
  template <class DA, class DQ, class DK, class DV>
  [[nodiscard]] Matrix<Scalar> operator()(const Eigen::SparseMatrixBase<DA>& adjacency,
                                          const Eigen::MatrixBase<DQ>& Q,
                                          const Eigen::MatrixBase<DK>& K,
                                          const Eigen::MatrixBase<DV>& V,
                                          BatchLayout layout = {}) const {
    Matrix<Scalar> out(Q.rows(), V.cols());
    compute(adjacency, Q, K, V, out, layout);
    return out;
  }

  /// Writes the attention output into `out` (a matrix, Map, Ref or block of the right shape),
  /// which may overlap Q, K or V (the result then goes through a temporary first).
  template <class DA, class DQ, class DK, class DV, detail::EigenDense Out>
  void compute(const Eigen::SparseMatrixBase<DA>& adjacency, const Eigen::MatrixBase<DQ>& Q,
               const Eigen::MatrixBase<DK>& K, const Eigen::MatrixBase<DV>& V, Out&& out,
               BatchLayout layout = {}) const {
    static_assert(std::is_same_v<typename DQ::Scalar, Scalar> &&
                      std::is_same_v<typename DK::Scalar, Scalar> &&
                      std::is_same_v<typename DV::Scalar, Scalar> &&
                      std::is_same_v<typename std::remove_cvref_t<Out>::Scalar, Scalar>,
                  "Q, K, V and out must have the attention's scalar type");
    detail::validate_attention_shapes(Q, K, V, out, layout);
    const Index nq = Q.rows() / layout.sequences;
    const Index nk = K.rows() / layout.sequences;
    require(adjacency.rows() == nq && adjacency.cols() == nk, "adjacency is ",
            detail::shape_of(adjacency), " but must be N_q x N_k = ", detail::shape_of(nq, nk),
            " (Q's rows x K's rows per sequence, for ", layout.sequences, " sequence(s)): Q is ",
            detail::shape_of(Q), ", K is ", detail::shape_of(K));
    require(!options_.add_self_loops || nq == nk,
            "GraphOptions::add_self_loops needs a square adjacency (N_q = N_k), but adjacency is ",
            detail::shape_of(adjacency));
    detail::validate_adjacency(adjacency);
    const auto& rows = detail::row_major_adjacency(adjacency);
    detail::with_input_views(
        Q, K, V, out,
        [&](const auto& queries, const auto& keys, const auto& values, auto& destination) {
          run(rows, queries, keys, values, destination, layout);
        });
  }

 private:
  /// Rows per parallel task: a fixed count, so the work split never depends on the threads.
  static constexpr Index rows_per_task = 64;

  template <class Adjacency, class Queries, class Keys, class Values, class Out>
  void run(const Adjacency& adjacency, const Queries& Q, const Keys& K, const Values& V, Out& out,
           BatchLayout layout) const {
    const Index B = layout.sequences;
    const Index H = layout.heads;
    const Index nq = Q.rows() / B;
    const Index nk = K.rows() / B;
    const Index d = Q.cols() / H;
    const Index dv = V.cols() / H;
    const int threads = resolve_thread_count(options_.threads);

    const auto keys_of = [&](Index b, Index h) { return K.block(b * nk, h * d, nk, d); };
    const auto values_of = [&](Index b, Index h) { return V.block(b * nk, h * dv, nk, dv); };

    // Per sequence and head: the key terms, and the keys (or key features) and values as
    // row-major copies, so that gathering a neighbour reads one contiguous row.
    std::vector<detail::KeyTerms<Scalar>> key_terms(std::size_t(B * H));
    std::vector<RowMajorMatrix<Scalar>> key_rows(std::size_t(B * H));
    std::vector<RowMajorMatrix<Scalar>> value_rows(std::size_t(B * H));
    parallel_for(B * H, threads, [&](Index item) {
      const auto index = std::size_t(item);
      key_terms[index] = detail::compute_key_terms(kernel_, magnitude_, keys_of(item / H, item % H),
                                                   values_of(item / H, item % H));
      if constexpr (kernels::FeatureKernel<Kernel>)
        key_rows[index] = key_terms[index].features;
      else
        key_rows[index] = keys_of(item / H, item % H);
      value_rows[index] = values_of(item / H, item % H);
    });

    const Index tasks = nq == 0 ? 0 : 1 + (nq - 1) / rows_per_task;
    parallel_for(B * H * tasks, threads, [&](Index item) {
      const Index task = item % tasks;
      const Index b = item / tasks / H;
      const Index h = item / tasks % H;
      const Index first = task * rows_per_task;
      const Index rows = std::min(rows_per_task, nq - first);
      detail::attend_graph_rows<Kernel, Magnitude>(
          kernel_, adjacency, options_.add_self_loops, Q.block(b * nq + first, h * d, rows, d),
          first, key_rows[std::size_t(b * H + h)], value_rows[std::size_t(b * H + h)],
          key_terms[std::size_t(b * H + h)], out.block(b * nq + first, h * dv, rows, dv));
    });
  }

  Kernel kernel_{};
  Magnitude magnitude_{};
  GraphOptions options_{};
};

}  // namespace kernattn
