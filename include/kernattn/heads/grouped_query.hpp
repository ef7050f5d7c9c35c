#pragma once
/// \file
/// `GroupedQuery<Head>`: grouped-query and multi-query attention, query heads sharing key and
/// value heads without copies of K or V (docs/conventions.md, "Grouped-query attention").

#include <string>
#include <type_traits>
#include <utility>

#include "kernattn/attention/attention.hpp"
#include "kernattn/core/aliasing.hpp"
#include "kernattn/core/errors.hpp"
#include "kernattn/engine/backward_front_end.hpp"
#include "kernattn/engine/exact_engine.hpp"
#include "kernattn/engine/front_end.hpp"
#include "kernattn/engine/options.hpp"
#include "kernattn/engine/score_bias.hpp"
#include "kernattn/heads/attention_head.hpp"

namespace kernattn {

namespace detail {

/// Whether a head is the exact engine's `Attention`, which runs every query head in one call.
template <class Head>
inline constexpr bool is_exact_attention = false;
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude, mask::Mask Mask>
inline constexpr bool is_exact_attention<Attention<Kernel, Magnitude, Mask>> = true;

/// A mask bound as head `head` of `heads` in a call of one head: what lets one query head of a
/// grouped call run alone with the score bias of its place among the heads.
template <mask::Mask Inner>
struct AsHeadOf {
  Inner inner;
  Index head;
  Index heads;

  [[nodiscard]] auto bind(mask::Shape shape) const {
    shape.head = head;
    shape.heads = heads;
    return inner.bind(shape);
  }
};

}  // namespace detail

/// \f$H_q\f$ query heads over \f$H_{kv}\f$ key/value heads, \f$H_q = g\,H_{kv}\f$: query head h
/// attends with key/value head \f$\lfloor h/g \rfloor\f$, as PyTorch's `enable_gqa=True` (K and V
/// repeated with `repeat_interleave`) and FlashAttention do. \f$H_{kv} = 1\f$ is multi-query
/// attention. Q is \f$(B N_q) \times (H_q d)\f$, K is \f$(B N_k) \times (H_{kv} d)\f$, V is
/// \f$(B N_k) \times (H_{kv} d_v)\f$ and the output \f$(B N_q) \times (H_q d_v)\f$; every query
/// head runs `head` on its columns of Q and its key head's columns of K and V, read in place
/// (nothing is copied), with all B sequences. With an exact `Attention` head, every query head
/// runs in one call of the exact engine (its work spread over the head's threads as a call of
/// \f$H_q\f$ heads would be), each key/value head's per-key terms computed once for its group,
/// and a score bias bound to each query head (\f$H_q\f$ ALiBi slopes, a dense bias of
/// \f$B H_q N_q\f$ rows). Other heads run query head after query head, each with the head's
/// own threads, their key terms computed once per query head.
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
    const HeadDimensions dims = validate(Q, K, V);
    require(out.rows() == Q.rows() && out.cols() == query_heads_ * dims.dv, "GroupedQuery: out is ",
            shape_of(out), " but the output is ", shape_of(Q.rows(), query_heads_ * dims.dv),
            " (Q's rows x ", query_heads_, " query heads x d_v = ", dims.dv, ")");
    require(!detail::may_share_memory(out, Q) && !detail::may_share_memory(out, K) &&
                !detail::may_share_memory(out, V),
            "GroupedQuery: out must not share memory with Q, K or V");
    if constexpr (detail::is_exact_attention<Head>) {
      // One call of the exact engine over every query head, in the batch x heads layout with
      // query heads sharing key/value heads: each key/value head's terms are computed once, and
      // a score bias binds to each query head.
      naming_head(0, [&] {
        detail::validate_attention_shapes(Q.middleCols(0, dims.d), K.middleCols(0, dims.d),
                                          V.middleCols(0, dims.dv), out.middleCols(0, dims.dv),
                                          BatchLayout{sequences, 1});
      });
      detail::with_input_views(
          Q, K, V, out,
          [&](const auto& queries, const auto& keys, const auto& values, auto& destination) {
            detail::attend_exact(
                head_.kernel(), head_.magnitude(), head_.mask(), head_.options(),
                detail::CallBlocks(queries, keys, values, destination,
                                   BatchLayout{sequences, query_heads_}, group_size()));
          });
    } else {
      for (Index h = 0; h < query_heads_; ++h) {
        const Index kv = h / group_size();
        naming_head(h, [&] {
          head_.compute(Q.middleCols(h * dims.d, dims.d), K.middleCols(kv * dims.d, dims.d),
                        V.middleCols(kv * dims.dv, dims.dv), out.middleCols(h * dims.dv, dims.dv),
                        BatchLayout{sequences, 1});
        });
      }
    }
  }

  /// The backward pass (docs/gradients.md, "Compositions"): given the inputs of a forward call,
  /// its output and \f$dOut = \partial\ell/\partial out\f$, writes dQ, dK and dV (of Q's, K's
  /// and V's shapes; through temporaries where one may overlap an argument). Query head h's
  /// columns of dQ are the head's own backward (`DifferentiableHead`) on its columns; a
  /// key/value head's columns of dK and dV are the sums of the gradients of its g query heads,
  /// \f$dK_{kv} = \sum_{h = kv\,g}^{(kv+1)g - 1} dK^{(h)}\f$, added in head order, so the result
  /// is bit-identical for every thread count. A head that needs row statistics (`Attention`)
  /// recomputes them with a forward call of its own, as in `MultiHead::backward`.
  template <class DQ, class DK, class DV, class DO, class DG, detail::EigenDense GQ,
            detail::EigenDense GK, detail::EigenDense GV>
  void backward(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
                const Eigen::MatrixBase<DG>& dOut, GQ&& dQ, GK&& dK, GV&& dV,
                Index sequences = 1) const {
    static_assert(DifferentiableHead<Head>,
                  "GroupedQuery::backward: the head needs a backward pass (DifferentiableHead)");
    static_assert(detail::all_of_scalar<Scalar, DQ, DK, DV, DO, DG, GQ, GK, GV>,
                  "every argument must have the attention's scalar type");
    const HeadDimensions dims = validate(Q, K, V);
    detail::require_shape(out, "out", Q.rows(), query_heads_ * dims.dv,
                          "Q's rows x the query heads' value columns");
    detail::require_gradient_shapes(Q, K, V, out, dOut, dQ, dK, dV);
    const Index d = dims.d;
    const Index dv = dims.dv;
    detail::with_backward_views<Scalar>(
        Q, K, V, out, dOut, dQ, dK, dV,
        [&](const auto& queries, const auto& keys, const auto& values, const auto& output,
            const auto& output_gradient, auto& query_gradient, auto& key_gradient,
            auto& value_gradient) {
          Matrix<Scalar> member_key_gradient(K.rows(), d);
          Matrix<Scalar> member_value_gradient(V.rows(), dv);
          for (Index h = 0; h < query_heads_; ++h) {
            const Index kv = h / group_size();
            auto key_columns = detail::columns_of(key_gradient, kv * d, d);
            auto value_columns = detail::columns_of(value_gradient, kv * dv, dv);
            const bool first_of_group = h % group_size() == 0;
            naming_head(h, [&] {
              const auto run = [&](auto& head_key_gradient, auto& head_value_gradient) {
                detail::head_backward(
                    query_head(h), detail::columns_of(queries, h * d, d),
                    detail::columns_of(keys, kv * d, d), detail::columns_of(values, kv * dv, dv),
                    detail::columns_of(output, h * dv, dv),
                    detail::columns_of(output_gradient, h * dv, dv),
                    detail::columns_of(query_gradient, h * d, d), head_key_gradient,
                    head_value_gradient, BatchLayout{sequences, 1});
              };
              if (first_of_group) {
                run(key_columns, value_columns);
              } else {
                run(member_key_gradient, member_value_gradient);
                key_columns += member_key_gradient;
                value_columns += member_value_gradient;
              }
            });
          }
        });
  }

  /// `backward` into new matrices.
  template <class DQ, class DK, class DV, class DO, class DG>
  [[nodiscard]] AttentionGradients<Scalar> gradients(const Eigen::MatrixBase<DQ>& Q,
                                                     const Eigen::MatrixBase<DK>& K,
                                                     const Eigen::MatrixBase<DV>& V,
                                                     const Eigen::MatrixBase<DO>& out,
                                                     const Eigen::MatrixBase<DG>& dOut,
                                                     Index sequences = 1) const {
    return detail::new_gradients<Scalar>(Q, K, V, [&](auto& dQ, auto& dK, auto& dV) {
      backward(Q, K, V, out, dOut, dQ, dK, dV, sequences);
    });
  }

 private:
  /// d and \f$d_v\f$ of one head.
  struct HeadDimensions {
    Index d;
    Index dv;
  };

  /// Checks Q, K and V against the heads; the messages name the argument and its shape.
  template <class DQ, class DK, class DV>
  [[nodiscard]] HeadDimensions validate(const Eigen::MatrixBase<DQ>& Q,
                                        const Eigen::MatrixBase<DK>& K,
                                        const Eigen::MatrixBase<DV>& V) const {
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
    return {d, V.cols() / key_heads_};
  }

  /// The head as query head h runs alone (a call of one head): the head itself, or with a score
  /// bias, the head with its bias bound as head h of \f$H_q\f$, as the forward binds it.
  [[nodiscard]] decltype(auto) query_head(Index h) const {
    if constexpr (detail::has_score_bias<Head>())
      return head_.with_mask(detail::AsHeadOf<std::remove_cvref_t<decltype(head_.mask())>>{
          head_.mask(), h, query_heads_});
    else
      return (head_);
  }

  /// Runs `call`, prefixing an `InvalidArgument` it throws with query head h and its key head.
  template <class Call>
  void naming_head(Index h, const Call& call) const {
    try {
      call();
    } catch (const InvalidArgument& error) {
      throw InvalidArgument(detail::concat("GroupedQuery: query head ", h, " of ", query_heads_,
                                           " (key/value head ", h / group_size(),
                                           "): ", error.what()));
    }
  }

  Head head_;
  Index query_heads_;
  Index key_heads_;
};

}  // namespace kernattn
