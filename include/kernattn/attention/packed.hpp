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
  detail::require_packed_offsets(query_offsets, Q.rows(), "query_offsets", "Q");
  detail::require_packed_offsets(key_offsets, K.rows(), "key_offsets", "K");
  require(query_offsets.size() == key_offsets.size(), "attend_packed: query_offsets has ",
          query_offsets.size(), " entries but key_offsets has ", key_offsets.size(),
          " (one more than the number of sequences each)");
  require(V.rows() == K.rows(), "attend_packed: V has ", V.rows(), " rows but K has ", K.rows());
  require(out.rows() == Q.rows() && out.cols() == V.cols(), "attend_packed: out is ",
          detail::shape_of(out), " but the output is ", detail::shape_of(Q.rows(), V.cols()));
  require(!detail::may_share_memory(out, Q) && !detail::may_share_memory(out, K) &&
              !detail::may_share_memory(out, V),
          "attend_packed: out must not share memory with Q, K or V");
  const Index sequences = Index(query_offsets.size()) - 1;
  const auto attend = [&](const Head& runner, Index s) {
    const Index q0 = query_offsets[std::size_t(s)], k0 = key_offsets[std::size_t(s)];
    const Index nq = query_offsets[std::size_t(s) + 1] - q0;
    const Index nk = key_offsets[std::size_t(s) + 1] - k0;
    if (nq == 0) return;
    try {
      runner.compute(Q.middleRows(q0, nq), K.middleRows(k0, nk), V.middleRows(k0, nk),
                     out.middleRows(q0, nq), BatchLayout{1, heads});
    } catch (const InvalidArgument& error) {
      throw InvalidArgument(detail::concat("attend_packed: sequence ", s, " (query rows [", q0,
                                           ", ", q0 + nq, "), key rows [", k0, ", ", k0 + nk,
                                           ")): ", error.what()));
    }
  };
  const int team = resolve_thread_count(threads);
  if constexpr (requires(Head copy) { copy.set_threads(1); }) {
    if (sequences >= 2 * Index(team)) {
      std::vector<Index> order(static_cast<std::size_t>(sequences));
      std::iota(order.begin(), order.end(), Index(0));
      const auto work = [&](Index s) {
        return double(query_offsets[std::size_t(s) + 1] - query_offsets[std::size_t(s)]) *
               double(key_offsets[std::size_t(s) + 1] - key_offsets[std::size_t(s)]);
      };
      std::stable_sort(order.begin(), order.end(),
                       [&](Index a, Index b) { return work(a) > work(b); });
      Head single = head;
      single.set_threads(1);
      parallel_for(sequences, team, [&](Index task) { attend(single, order[std::size_t(task)]); });
      return;
    }
  }
  for (Index s = 0; s < sequences; ++s) attend(head, s);
}

}  // namespace kernattn
