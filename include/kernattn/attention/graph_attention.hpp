#pragma once
/// \file
/// `GraphAttention<Kernel, Magnitude>`: the kernel smoother over the neighbourhoods of a sparse
/// graph (docs/math.md, section 4), \f$ out_i = \sum_{j\in N(i)} w_{ij} v_j / \sum_{j\in N(i)}
/// w_{ij}\f$ with \f$w_{ij} = \kappa(q_i,k_j)\,\mu(k_j)\f$, at a cost of \f$O(\mathrm{nnz}\cdot
/// d)\f$.

#include <Eigen/SparseCore>
#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/core/threading.hpp"
#include "kernattn/engine/backward_front_end.hpp"
#include "kernattn/engine/exact_backward.hpp"
#include "kernattn/engine/front_end.hpp"
#include "kernattn/engine/graph_backward.hpp"
#include "kernattn/engine/graph_engine.hpp"
#include "kernattn/engine/key_terms.hpp"
#include "kernattn/engine/merge_partial.hpp"
#include "kernattn/engine/options.hpp"
#include "kernattn/engine/prepare_keys.hpp"
#include "kernattn/engine/row_statistics.hpp"
#include "kernattn/engine/scoring.hpp"
#include "kernattn/kernels/kernel.hpp"
#include "kernattn/magnitude/magnitude.hpp"
#include "kernattn/magnitude/none.hpp"

namespace kernattn {

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
  static_assert(detail::PairScoring<KernelT>,
                "GraphAttention evaluates kernels whose form scores single pairs: dot-product, "
                "distance, direct and feature kernels");

 public:
  using Scalar = typename KernelT::Scalar;
  using Kernel = KernelT;
  using Magnitude = MagnitudeT;
  /// What `compute(..., statistics)` writes: the log-normaliser for the exponential forms, the
  /// signed denominator for the direct forms (`merge_partial_result` needs to know).
  static constexpr RowStatistic row_statistic = detail::Scoring<KernelT>::exponential
                                                    ? RowStatistic::log_normaliser
                                                    : RowStatistic::denominator;

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
    static_assert(detail::all_of_scalar<Scalar, DQ, DK, DV, Out>,
                  "Q, K, V and out must have the attention's scalar type");
    detail::validate_attention_shapes(Q, K, V, out, layout);
    const auto& rows = checked_adjacency(adjacency, Q, K, layout);
    detail::with_input_views(
        Q, K, V, out,
        [&](const auto& queries, const auto& keys, const auto& values, auto& destination) {
          run(rows, queries, keys, values, destination, layout, detail::StatisticsOut<Scalar>{});
        });
  }

  /// Writes the attention output into `out`, as `compute(adjacency, Q, K, V, out, layout)`, and
  /// the row statistics into `statistics`, resized to \f$(B N_q) \times H\f$, exactly as the
  /// dense engine defines them (docs/gradients.md): per node and head, the log-normaliser
  /// \f$L_i = \log\sum_{j\in N(i)} w_{ij}\f$ (\f$-\infty\f$ for a node without neighbours) for
  /// the exponential forms, the signed denominator \f$\sum_{j\in N(i)} w_{ij}\f$ for the direct
  /// forms. They are what `backward` needs.
  template <class DA, class DQ, class DK, class DV, detail::EigenDense Out>
  void compute(const Eigen::SparseMatrixBase<DA>& adjacency, const Eigen::MatrixBase<DQ>& Q,
               const Eigen::MatrixBase<DK>& K, const Eigen::MatrixBase<DV>& V, Out&& out,
               Matrix<Scalar>& statistics, BatchLayout layout = {}) const {
    static_assert(detail::all_of_scalar<Scalar, DQ, DK, DV, Out>,
                  "Q, K, V and out must have the attention's scalar type");
    detail::validate_attention_shapes(Q, K, V, out, layout);
    const auto& rows = checked_adjacency(adjacency, Q, K, layout);
    Matrix<Scalar> written(Q.rows(), layout.heads);
    detail::with_input_views(
        Q, K, V, out,
        [&](const auto& queries, const auto& keys, const auto& values, auto& destination) {
          run(rows, queries, keys, values, destination, layout,
              detail::StatisticsOut<Scalar>{&written, Q.rows() / layout.sequences});
        });
    statistics = std::move(written);
  }

  /// The backward pass (docs/gradients.md): given the inputs of a forward call, its output `out`
  /// and `statistics` (from `compute(adjacency, Q, K, V, out, statistics, layout)`) and \f$dOut
  /// = \partial\ell/\partial out\f$, writes \f$\partial\ell/\partial Q\f$, \f$\partial\ell/
  /// \partial K\f$ and \f$\partial\ell/\partial V\f$ into dQ, dK and dV (through temporaries
  /// where they may overlap an argument), in \f$O(\mathrm{nnz}\cdot d)\f$ time and two or three
  /// scalars of memory per edge (see `detail::attend_graph_backward`). Feature kernels recompute
  /// the features of a key's attending queries per edge, \f$O(\mathrm{nnz}\cdot M d)\f$. The
  /// gradients are bit-identical for every thread count; a node without neighbours, or whose
  /// denominator is 0, has zero gradient, and a key no node attends to has zero dK and dV.
  template <class DA, class DQ, class DK, class DV, class DO, class DG, detail::EigenDense GQ,
            detail::EigenDense GK, detail::EigenDense GV>
  void backward(const Eigen::SparseMatrixBase<DA>& adjacency, const Eigen::MatrixBase<DQ>& Q,
                const Eigen::MatrixBase<DK>& K, const Eigen::MatrixBase<DV>& V,
                const Eigen::MatrixBase<DO>& out, const Matrix<Scalar>& statistics,
                const Eigen::MatrixBase<DG>& dOut, GQ&& dQ, GK&& dK, GV&& dV,
                BatchLayout layout = {}) const {
    static_assert(kernels::DifferentiableKernel<Kernel>,
                  "GraphAttention::backward: the kernel has no derivatives (a user-defined kernel "
                  "needs those of kernels::DifferentiableKernel; a feature-map kernel, a map "
                  "with feature_gradient)");
    static_assert(magnitude::DifferentiableMagnitude<Magnitude>,
                  "GraphAttention::backward: the magnitude has no log_magnitude_gradient");
    static_assert(detail::all_of_scalar<Scalar, DQ, DK, DV, DO, DG, GQ, GK, GV>,
                  "every argument must have the attention's scalar type");
    detail::validate_backward_shapes(Q, K, V, out, statistics, dOut, dQ, dK, dV, layout);
    const auto& rows = checked_adjacency(adjacency, Q, K, layout);
    const detail::GraphEdges edges = detail::graph_edges(
        rows, Q.rows() / layout.sequences, K.rows() / layout.sequences, options_.add_self_loops);
    const detail::InputView<DQ> queries(Q);
    const detail::InputView<DK> keys(K);
    const detail::InputView<DV> values(V);
    const detail::InputView<DO> output(out);
    const detail::InputView<DG> output_gradient(dOut);
    const auto run = [&](auto& query_gradient, auto& key_gradient, auto& value_gradient) {
      detail::attend_graph_backward(
          kernel_, magnitude_, edges, options_.query_tile, resolve_thread_count(options_.threads),
          detail::backward_call(queries, keys, values, output, statistics, output_gradient,
                                query_gradient, key_gradient, value_gradient, layout));
    };
    detail::write_gradients<Scalar>(dQ, dK, dV, run, queries, keys, values, output, statistics,
                                    output_gradient);
  }

  /// `backward` into new matrices.
  template <class DA, class DQ, class DK, class DV, class DO, class DG>
  [[nodiscard]] AttentionGradients<Scalar> gradients(
      const Eigen::SparseMatrixBase<DA>& adjacency, const Eigen::MatrixBase<DQ>& Q,
      const Eigen::MatrixBase<DK>& K, const Eigen::MatrixBase<DV>& V,
      const Eigen::MatrixBase<DO>& out, const Matrix<Scalar>& statistics,
      const Eigen::MatrixBase<DG>& dOut, BatchLayout layout = {}) const {
    return detail::new_gradients<Scalar>(Q, K, V, [&](auto& dQ, auto& dK, auto& dV) {
      backward(adjacency, Q, K, V, out, statistics, dOut, dQ, dK, dV, layout);
    });
  }

 private:
  /// Checks the adjacency against the shapes of Q and K and its own structure
  /// (`detail::validate_adjacency`), and returns its row-major view.
  template <class DA, class DQ, class DK>
  decltype(auto) checked_adjacency(const Eigen::SparseMatrixBase<DA>& adjacency,
                                   const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                                   BatchLayout layout) const {
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
    return detail::row_major_adjacency(adjacency);
  }

  template <class Adjacency, class Queries, class Keys, class Values, class Out>
  void run(const Adjacency& adjacency, const Queries& Q, const Keys& K, const Values& V, Out& out,
           BatchLayout layout, detail::StatisticsOut<Scalar> statistics) const {
    const detail::CallBlocks call(Q, K, V, out, layout);
    const int threads = resolve_thread_count(options_.threads);

    // Per sequence and head: the key terms, and the rows a pair reads (keys or key features)
    // and the values as row-major copies, so that gathering a neighbour reads one contiguous row.
    const auto heads = std::size_t(call.sequences * call.heads);
    std::vector<detail::KeyTerms<Scalar>> key_terms(heads);
    std::vector<RowMajorMatrix<Scalar>> key_rows(heads);
    std::vector<RowMajorMatrix<Scalar>> value_rows(heads);
    call.for_each_head(threads, [&](Index b, Index h) {
      const auto index = std::size_t(b * call.heads + h);
      key_terms[index] =
          detail::compute_key_terms(kernel_, magnitude_, call.keys_of(b, h), call.values_of(b, h));
      key_rows[index] = detail::Scoring<Kernel>::pair_keys(key_terms[index], call.keys_of(b, h));
      value_rows[index] = call.values_of(b, h);
    });

    call.for_each_query_block(
        options_.query_tile, threads, [&](Index b, Index h, Index first, Index rows) {
          const auto index = std::size_t(b * call.heads + h);
          detail::with_statistics_rows(statistics, b, h, first, rows, [&](auto&& statistics_rows) {
            detail::attend_graph_rows<Kernel, Magnitude>(
                kernel_, adjacency, options_.add_self_loops, call.query_rows(b, h, first, rows),
                first, key_rows[index], value_rows[index], key_terms[index],
                call.out_rows(b, h, first, rows), statistics_rows);
          });
        });
  }

  Kernel kernel_{};
  Magnitude magnitude_{};
  GraphOptions options_{};
};

}  // namespace kernattn
