#pragma once
/// \file
/// `GroupedQuery<Head>`: grouped-query and multi-query attention, query heads sharing key and
/// value heads without copies of K or V (docs/conventions.md, "Grouped-query attention").

#include <string>

#include "kernattn/core/aliasing.hpp"
#include "kernattn/core/errors.hpp"
#include "kernattn/engine/options.hpp"
#include "kernattn/heads/attention_head.hpp"

namespace kernattn {

/// \f$H_q\f$ query heads over \f$H_{kv}\f$ key/value heads, \f$H_q = g\,H_{kv}\f$: query head h
/// attends with key/value head \f$\lfloor h/g \rfloor\f$, as PyTorch's `enable_gqa=True` (K and V
/// repeated with `repeat_interleave`) and FlashAttention do. \f$H_{kv} = 1\f$ is multi-query
/// attention. Q is \f$(B N_q) \times (H_q d)\f$, K is \f$(B N_k) \times (H_{kv} d)\f$, V is
/// \f$(B N_k) \times (H_{kv} d_v)\f$ and the output \f$(B N_q) \times (H_q d_v)\f$; every query
/// head runs `head` on its columns of Q and its key head's columns of K and V, read in place
/// (nothing is copied), with all B sequences. The heads run one after another, each with the
/// head's own threads; the key terms of a key head are computed once per query head of its
/// group.
template <AttentionHead Head>
class GroupedQuery {
 public:
  using Scalar = typename Head::Scalar;

  GroupedQuery(Head head, Index query_heads, Index key_heads)
      : head_(std::move(head)), query_heads_(query_heads), key_heads_(key_heads) {
    require(key_heads >= 1 && query_heads >= 1 && query_heads % key_heads == 0,
            "GroupedQuery: the query heads (", query_heads,
            ") must be a positive multiple of the key/value heads (", key_heads, ")");
  }

  [[nodiscard]] Index query_heads() const { return query_heads_; }
  [[nodiscard]] Index key_heads() const { return key_heads_; }
  /// g, the query heads per key/value head.
  [[nodiscard]] Index group_size() const { return query_heads_ / key_heads_; }
  [[nodiscard]] const Head& head() const { return head_; }

  /// The output, \f$(B N_q) \times (H_q d_v)\f$.
  template <class DQ, class DK, class DV>
  [[nodiscard]] Matrix<Scalar> operator()(const Eigen::MatrixBase<DQ>& Q,
                                          const Eigen::MatrixBase<DK>& K,
                                          const Eigen::MatrixBase<DV>& V,
                                          Index sequences = 1) const {
    Matrix<Scalar> out(Q.rows(), query_heads_ * (V.cols() / key_heads_));
    compute(Q, K, V, out, sequences);
    return out;
  }

  /// Writes the output into `out`, which must not share memory with Q, K or V.
  template <class DQ, class DK, class DV, class Out>
  void compute(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
               const Eigen::MatrixBase<DV>& V, Out&& out, Index sequences = 1) const {
    using detail::shape_of;
    require(Q.cols() % query_heads_ == 0 && Q.cols() >= query_heads_, "GroupedQuery: Q is ",
            shape_of(Q), " but must have d columns for each of the ", query_heads_, " query heads");
    const Index d = Q.cols() / query_heads_;
    require(K.cols() == key_heads_ * d, "GroupedQuery: K is ", shape_of(K), " but must have ",
            key_heads_, " key heads x d = ", d, " columns (Q is ", shape_of(Q), ", ", query_heads_,
            " query heads)");
    require(V.cols() % key_heads_ == 0 && V.rows() == K.rows(), "GroupedQuery: V is ", shape_of(V),
            " but must have K's ", K.rows(), " rows and d_v columns for each of the ", key_heads_,
            " value heads");
    const Index dv = V.cols() / key_heads_;
    require(out.rows() == Q.rows() && out.cols() == query_heads_ * dv, "GroupedQuery: out is ",
            shape_of(out), " but the output is ", shape_of(Q.rows(), query_heads_ * dv),
            " (Q's rows x ", query_heads_, " query heads x d_v = ", dv, ")");
    require(!detail::may_share_memory(out, Q) && !detail::may_share_memory(out, K) &&
                !detail::may_share_memory(out, V),
            "GroupedQuery: out must not share memory with Q, K or V");
    const Index g = group_size();
    for (Index h = 0; h < query_heads_; ++h) {
      const Index kv = h / g;
      try {
        head_.compute(Q.middleCols(h * d, d), K.middleCols(kv * d, d), V.middleCols(kv * dv, dv),
                      out.middleCols(h * dv, dv), BatchLayout{sequences, 1});
      } catch (const InvalidArgument& error) {
        throw InvalidArgument(detail::concat("GroupedQuery: query head ", h, " of ", query_heads_,
                                             " (key/value head ", kv, "): ", error.what()));
      }
    }
  }

 private:
  Head head_;
  Index query_heads_;
  Index key_heads_;
};

}  // namespace kernattn
