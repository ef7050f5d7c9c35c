#pragma once
/// \file
/// Packed variable-length batches (docs/conventions.md, "Packed batches"): sequences of
/// different lengths concatenated row by row, given by offsets like FlashAttention's
/// `cu_seqlens`, attended without padding.

#include <algorithm>
#include <numeric>
#include <string_view>
#include <vector>

#include "kernattn/core/aliasing.hpp"
#include "kernattn/core/errors.hpp"
#include "kernattn/core/threading.hpp"
#include "kernattn/engine/backward_front_end.hpp"
#include "kernattn/engine/front_end.hpp"
#include "kernattn/engine/options.hpp"
#include "kernattn/heads/attention_head.hpp"

namespace kernattn {

namespace detail {

/// Offsets of S packed sequences over `rows` rows: S + 1 entries, the first 0, non-decreasing,
/// the last `rows`.
inline void require_packed_offsets(const std::vector<Index>& offsets, Index rows,
                                   std::string_view name, std::string_view matrix) {
  require(offsets.size() >= 2, "attend_packed: ", name,
          " needs at least 2 entries (0, then the end of each sequence), got ", offsets.size());
  require(offsets.front() == 0, "attend_packed: ", name, " must start at 0, got ", offsets.front());
  for (std::size_t s = 1; s < offsets.size(); ++s)
    require(offsets[s] >= offsets[s - 1], "attend_packed: ", name, " must not decrease, but ", name,
            "[", s, "] = ", offsets[s], " < ", name, "[", s - 1, "] = ", offsets[s - 1]);
  require(offsets.back() == rows, "attend_packed: ", name, " ends at ", offsets.back(), " but ",
          matrix, " has ", rows, " rows");
}

/// The rows of packed sequence s: its queries `[q0, q0 + nq)` and keys `[k0, k0 + nk)`.
struct PackedRows {
  Index q0;
  Index nq;
  Index k0;
  Index nk;
};

/// Checks the offsets of a packed call against Q's and K's rows and V against K.
template <class DQ, class DK, class DV>
void validate_packed(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                     const Eigen::MatrixBase<DV>& V, const std::vector<Index>& query_offsets,
                     const std::vector<Index>& key_offsets) {
  require_packed_offsets(query_offsets, Q.rows(), "query_offsets", "Q");
  require_packed_offsets(key_offsets, K.rows(), "key_offsets", "K");
  require(query_offsets.size() == key_offsets.size(), "attend_packed: query_offsets has ",
          query_offsets.size(), " entries but key_offsets has ", key_offsets.size(),
          " (one more than the number of sequences each)");
  require(V.rows() == K.rows(), "attend_packed: V has ", V.rows(), " rows but K has ", K.rows());
}

/// Runs `attend(runner, rows)` for every packed sequence, naming the sequence in an
/// `InvalidArgument` it throws. With at least twice as many sequences as `threads`, the
/// sequences run in parallel, largest \f$N_q N_k\f$ first, each on one thread of a copy of
/// `head` (`runner`); otherwise one after another on `head` itself. The sequences' rows are
/// disjoint, so what each writes does not depend on the schedule.
template <AttentionHead Head, class Attend>
void for_each_packed_sequence(const Head& head, const std::vector<Index>& query_offsets,
                              const std::vector<Index>& key_offsets, int threads,
                              const Attend& attend) {
  const Index sequences = Index(query_offsets.size()) - 1;
  const auto rows_of = [&](Index s) {
    const std::size_t at = std::size_t(s);
    return PackedRows{query_offsets[at], query_offsets[at + 1] - query_offsets[at], key_offsets[at],
                      key_offsets[at + 1] - key_offsets[at]};
  };
  const auto run = [&](const Head& runner, Index s) {
    const PackedRows rows = rows_of(s);
    try {
      attend(runner, rows);
    } catch (const InvalidArgument& error) {
      throw InvalidArgument(concat("attend_packed: sequence ", s, " (query rows [", rows.q0, ", ",
                                   rows.q0 + rows.nq, "), key rows [", rows.k0, ", ",
                                   rows.k0 + rows.nk, ")): ", error.what()));
    }
  };
  const int team = resolve_thread_count(threads);
  if constexpr (requires(Head copy) { copy.set_threads(1); }) {
    if (sequences >= 2 * Index(team)) {
      std::vector<Index> order(static_cast<std::size_t>(sequences));
      std::iota(order.begin(), order.end(), Index(0));
      const auto work = [&](Index s) {
        const PackedRows rows = rows_of(s);
        return double(rows.nq) * double(rows.nk);
      };
      std::stable_sort(order.begin(), order.end(),
                       [&](Index a, Index b) { return work(a) > work(b); });
      Head single = head;
      single.set_threads(1);
      parallel_for(sequences, team, [&](Index task) { run(single, order[std::size_t(task)]); });
      return;
    }
  }
  for (Index s = 0; s < sequences; ++s) run(head, s);
}

}  // namespace detail

/// Attention over packed sequences: sequence s has queries `Q.middleRows(query_offsets[s],
/// query_offsets[s+1] - query_offsets[s])` and keys and values in the rows `[key_offsets[s],
/// key_offsets[s+1])` of K and V, and writes the rows of its queries in `out`; `heads` heads side
/// by side in the columns, as in `BatchLayout`. Each sequence is one call of `head` with
/// `BatchLayout{1, heads}`, so its filter binds each sequence as a lone one (a causal filter
/// aligns within the sequence; data that describe several sequences, such as padding lengths,
/// do not apply: nothing is padded). The results are those of each sequence run alone, bit for
/// bit.
///
/// Threads: with at least twice as many sequences as `threads` (0 = the OpenMP default), the
/// sequences run in parallel, largest work (\f$N_q N_k\f$) first, each call on one thread of the
/// head's copy, so that the work is balanced by tokens; otherwise they run one after another,
/// each on the head's own threads. `out` must not share memory with Q, K or V.
template <AttentionHead Head, class DQ, class DK, class DV, class Out>
void attend_packed(const Head& head, const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                   const Eigen::MatrixBase<DV>& V, Out&& out,
                   const std::vector<Index>& query_offsets, const std::vector<Index>& key_offsets,
                   Index heads = 1, int threads = 0) {
  detail::validate_packed(Q, K, V, query_offsets, key_offsets);
  require(out.rows() == Q.rows() && out.cols() == V.cols(), "attend_packed: out is ",
          detail::shape_of(out), " but the output is ", detail::shape_of(Q.rows(), V.cols()));
  require(!detail::may_share_memory(out, Q) && !detail::may_share_memory(out, K) &&
              !detail::may_share_memory(out, V),
          "attend_packed: out must not share memory with Q, K or V");
  detail::for_each_packed_sequence(
      head, query_offsets, key_offsets, threads, [&](const Head& runner, detail::PackedRows rows) {
        if (rows.nq == 0) return;
        runner.compute(Q.middleRows(rows.q0, rows.nq), K.middleRows(rows.k0, rows.nk),
                       V.middleRows(rows.k0, rows.nk), out.middleRows(rows.q0, rows.nq),
                       BatchLayout{1, heads});
      });
}

/// The backward pass of `attend_packed` (docs/gradients.md, "Packed batches"): given the inputs
/// of a forward call, its output and \f$dOut = \partial\ell/\partial out\f$, writes dQ, dK and
/// dV (of Q's, K's and V's shapes; through temporaries where one may overlap an argument). Each
/// sequence's rows are the head's backward (`DifferentiableHead`) on that sequence alone, with
/// `BatchLayout{1, heads}`; the keys and values of a sequence without queries get zero
/// gradients. The sequences' rows are disjoint, so the threads (scheduled as in
/// `attend_packed`) never write the same row, and the gradients are bit-identical for every
/// thread count. A head that needs row statistics (`Attention`) recomputes them per sequence,
/// as in `MultiHead::backward`.
template <AttentionHead Head, class DQ, class DK, class DV, class DO, class DG,
          detail::EigenDense GQ, detail::EigenDense GK, detail::EigenDense GV>
void attend_packed_backward(const Head& head, const Eigen::MatrixBase<DQ>& Q,
                            const Eigen::MatrixBase<DK>& K, const Eigen::MatrixBase<DV>& V,
                            const Eigen::MatrixBase<DO>& out, const Eigen::MatrixBase<DG>& dOut,
                            GQ&& dQ, GK&& dK, GV&& dV, const std::vector<Index>& query_offsets,
                            const std::vector<Index>& key_offsets, Index heads = 1,
                            int threads = 0) {
  static_assert(DifferentiableHead<Head>,
                "attend_packed_backward: the head needs a backward pass (DifferentiableHead)");
  using Scalar = typename Head::Scalar;
  static_assert(detail::all_of_scalar<Scalar, DQ, DK, DV, DO, DG, GQ, GK, GV>,
                "every argument must have the head's scalar type");
  detail::validate_packed(Q, K, V, query_offsets, key_offsets);
  detail::require_shape(out, "out", Q.rows(), V.cols(), "Q's rows x V's columns");
  detail::require_gradient_shapes(Q, K, V, out, dOut, dQ, dK, dV);
  detail::with_backward_views<Scalar>(
      Q, K, V, out, dOut, dQ, dK, dV,
      [&](const auto& queries, const auto& keys, const auto& values, const auto& output,
          const auto& output_gradient, auto& query_gradient, auto& key_gradient,
          auto& value_gradient) {
        detail::for_each_packed_sequence(
            head, query_offsets, key_offsets, threads,
            [&](const Head& runner, detail::PackedRows rows) {
              if (rows.nq == 0) {
                key_gradient.middleRows(rows.k0, rows.nk).setZero();
                value_gradient.middleRows(rows.k0, rows.nk).setZero();
                return;
              }
              detail::head_backward(
                  runner, queries.middleRows(rows.q0, rows.nq), keys.middleRows(rows.k0, rows.nk),
                  values.middleRows(rows.k0, rows.nk), output.middleRows(rows.q0, rows.nq),
                  output_gradient.middleRows(rows.q0, rows.nq),
                  query_gradient.middleRows(rows.q0, rows.nq),
                  key_gradient.middleRows(rows.k0, rows.nk),
                  value_gradient.middleRows(rows.k0, rows.nk), BatchLayout{1, heads});
            });
      });
}

}  // namespace kernattn
