#pragma once
/// \file
/// `ScaledHead<Head>` and `scaled_heads`: Attention-SH (Nguyen et al. 2024, docs/primal_dual.md),
/// heads that attend over keys and values pooled along the sequence. The formulas and the rules for
/// masks are in docs/primal_dual.md.

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernattn/attention/linear_attention.hpp"
#include "kernattn/core/errors.hpp"
#include "kernattn/core/threading.hpp"
#include "kernattn/engine/backward_front_end.hpp"
#include "kernattn/engine/front_end.hpp"
#include "kernattn/engine/score_bias.hpp"
#include "kernattn/heads/multi_head.hpp"
#include "kernattn/heads/pooled_causal_linear.hpp"
#include "kernattn/mask/none.hpp"
#include "kernattn/mask/pooled.hpp"

namespace kernattn {

namespace detail {
template <class Head>
inline constexpr bool is_linear_attention = false;
template <features::FeatureMap Map, magnitude::Magnitude Magnitude, mask::LinearMask Mask>
inline constexpr bool is_linear_attention<LinearAttention<Map, Magnitude, Mask>> = true;

/// The queries of one call of an exact head under a pooled causal filter.
inline constexpr Index pooled_causal_group = 64;

/// Queries [first, first + queries) of a bound `mask::PooledCausal` against its first `windows`
/// windows (at least all that any of these queries sees), then their own partial windows in
/// query order: the keys of one call of an exact head under `ScaledHead`. Only the group's own
/// partial windows lie along the diagonal, so the call costs about `queries` keys per query more
/// than the windows. Tiles take their coverage from the full filter; pairs are read from
/// `visible`, the group's queries x keys, filled by `fill` (the engine asks for every pair of a
/// partial tile, and most of a group's tiles are partial).
template <class Full>
struct PooledCausalGroup {
  using Table = Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic>;

  const Full* full = nullptr;
  const Table* visible = nullptr;
  Index first = 0;
  Index windows = 0;

  /// The group's visibility table: each query's windows by halving a range until the full filter
  /// calls it fully visible or hidden (\f$O(\log W)\f$ coverage calls per query under a causal
  /// filter), then its own partial window.
  static void fill(const Full& full, Index first, Index windows, Index queries, Table& table) {
    table.setConstant(queries, windows + queries, false);
    for (Index r = 0; r < queries; ++r) {
      const Index i = first + r;
      const auto split = [&](const auto& self, Index begin, Index end) -> void {
        switch (full.coverage(mask::Range{i, i + 1}, mask::Range{begin, end})) {
          case mask::Coverage::full:
            table.row(r).segment(begin, end - begin).setConstant(true);
            return;
          case mask::Coverage::hidden:
            return;
          case mask::Coverage::partial:
            break;
        }
        if (end - begin == 1) {
          table(r, begin) = full.visible(i, begin);
          return;
        }
        const Index middle = begin + (end - begin) / 2;
        self(self, begin, middle);
        self(self, middle, end);
      };
      if (windows > 0) split(split, 0, windows);
      table(r, windows + r) = full.visible(i, full.count + i);
    }
  }

  struct Bound {
    const Full* full;
    const Table* visible_pairs;
    Index first;
    Index windows;

    [[nodiscard]] mask::Coverage coverage(mask::Range rows, mask::Range cols) const {
      const mask::Range shifted{rows.begin + first, rows.end + first};
      const mask::Range pooled{cols.begin, std::min(cols.end, windows)};
      const mask::Range own{std::max(cols.begin, windows), cols.end};
      if (own.begin >= own.end) return full->coverage(shifted, pooled);
      const Index offset = full->count + first - windows;  // own key -> the full filter's key
      const mask::Coverage mine =
          full->coverage(shifted, mask::Range{own.begin + offset, own.end + offset});
      if (pooled.begin >= pooled.end) return mine;
      return full->coverage(shifted, pooled) == mine ? mine : mask::Coverage::partial;
    }
    [[nodiscard]] bool visible(Index i, Index key) const { return (*visible_pairs)(i, key); }
  };

  [[nodiscard]] Bound bind(const mask::Shape& shape) const {
    require(shape.queries == visible->rows() && shape.keys == visible->cols(),
            "ScaledHead: a group of ", visible->rows(), " queries over ", windows,
            " windows was called with ", shape.queries, " queries and ", shape.keys, " keys");
    return {full, visible, first, windows};
  }
};
}  // namespace detail

/// Runs `Head` with the keys and values mean-pooled over windows of r = `factor` tokens, the
/// queries at full length: pooled key \f$\bar k_w = \frac1{|W_w|}\sum_{j\in W_w} k_j\f$ (and
/// \f$\bar v_w\f$ likewise) over window \f$W_w = [w r, \min((w+1) r, N_k))\f$, the last window
/// ragged, for \f$w < W = \lceil N_k/r\rceil\f$. The head's cost in the keys falls by r.
///
/// Set filters: a pooled key is visible to a query only when every token in its window is
/// (`mask::Pooled`); `mask::None` stays `None`. Under a causal filter (`Causal`, alone or
/// intersected with another filter: `mask::has_causal_limit`) query i, which may see the first
/// \f$t_i\f$ tokens, also sees its **partial window**: the mean \f$\bar k_{P_i}, \bar v_{P_i}\f$ of
/// the tokens \f$P_i = [\lfloor t_i/r\rfloor r, t_i)\f$ of its current window that it has seen,
/// when \f$t_i\f$ is neither a multiple of r nor \f$N_k\f$ and the filter lets it see all of
/// \f$P_i\f$ (`mask::PooledCausal`). So no query sees a token after its limit, and the first r - 1
/// queries of a causal sequence attend over the tokens they have seen instead of outputting
/// zeros. An exact head runs once per group of 64 queries, over the windows the group's last query
/// sees followed by the group's own partial windows (`detail::PooledCausalGroup`: at most 64 keys
/// per query more than the windows), the groups in parallel; `LinearAttention` keeps its prefix
/// state over the windows and adds each query's partial window directly, in linear time, forward
/// and backward (`detail::attend_pooled_causal`, `detail::attend_backward_pooled_causal`).
///
/// The pooled means are summed in double in token order and rounded once (a partial window's
/// mean at the end of its window is the window's mean, bit for bit); with r = 1 the head runs on
/// the inputs unchanged, bit for bit. Any factor \f$r \ge 1\f$ costs \f$O(N d)\f$ to pool.
/// \f$N_k = 0\f$ gives zeros and \f$N_q = 0\f$ an empty output, without calling the head.
///
/// `Head` needs `mask()` and `with_mask(mask)`: `Attention`, `LinearAttention`, or a
/// `BatchNormalized` of `Attention` (which refuses the pooled causal filters, whose queries see
/// different keys).
template <AttentionHead Head>
class ScaledHead : public detail::AttentionCalls<ScaledHead<Head>>,
                   public detail::GradientCalls<ScaledHead<Head>> {
 public:
  using Scalar = typename Head::Scalar;

  ScaledHead(Head head, Index factor) : head_(std::move(head)), factor_(factor) {
    static_assert(!detail::has_score_bias<Head>(),
                  "ScaledHead pools the keys, so a score bias over token positions has no pooled "
                  "counterpart: give the head a mask without one");
    require(factor_ >= 1, "ScaledHead: the pooling factor must be >= 1, got ", factor_);
  }

  [[nodiscard]] const Head& head() const { return head_; }
  [[nodiscard]] Index factor() const { return factor_; }
  /// The head's set filter over the tokens (before pooling).
  [[nodiscard]] decltype(auto) mask() const requires requires(const Head& head) { head.mask(); }
  { return head_.mask(); }

  /// The same pooling around the head with another set filter.
  template <class NewMask>
  requires requires(const Head& head, NewMask mask) { head.with_mask(std::move(mask)); }
  [[nodiscard]] auto with_mask(NewMask mask) const {
    using NewHead = decltype(head_.with_mask(std::move(mask)));
    return ScaledHead<NewHead>(head_.with_mask(std::move(mask)), factor_);
  }

  /// The backward pass (docs/gradients.md, "Compositions") under a filter without a causal
  /// limit: the head's backward (`DifferentiableHead`) on the window means, then the adjoint of
  /// the pooling, \f$dk_j = d\bar k_w / |W_w|\f$ and \f$dv_j = d\bar v_w / |W_w|\f$ for the tokens
  /// j of window w. A window the pooled filter hides gives its tokens zero gradients. Under a
  /// causal filter each query's partial window also goes back to its tokens,
  /// \f$dk_j \mathrel{+}= d\bar k_{P_i} / |P_i|\f$ for \f$j \in P_i\f$: a head that runs per group
  /// of queries (`Attention`) runs its backward per group, and a `LinearAttention` head runs
  /// `detail::attend_backward_pooled_causal` per sequence and head, in time \f$O(N M d)\f$ and
  /// memory one state (D x d_v) per chunk of `LinearOptions::causal_chunk` queries. There Q, out,
  /// dOut and every token that a query sees must be finite (`InvalidArgument` otherwise); tokens
  /// that no query sees may hold anything and get zero gradients.
  template <class DQ, class DK, class DV, class DO, class DG, detail::EigenDense GQ,
            detail::EigenDense GK, detail::EigenDense GV>
  void backward(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
                const Eigen::MatrixBase<DG>& dOut, GQ&& dQ, GK&& dK, GV&& dV,
                BatchLayout layout = {}) const {
    static_assert(DifferentiableHead<Head>,
                  "ScaledHead::backward: the head needs a backward pass (DifferentiableHead)");
    static_assert(detail::all_of_scalar<Scalar, DQ, DK, DV, DO, DG, GQ, GK, GV>,
                  "every argument must have the attention's scalar type");
    detail::validate_backward_shapes(Q, K, V, out, dOut, dQ, dK, dV, layout);
    const Index B = layout.sequences;
    const Index nq = Q.rows() / B;
    const Index nk = K.rows() / B;
    if (factor_ == 1 || nq == 0 || nk == 0 || V.cols() == 0) {
      // The head on the tokens themselves, or a call whose loss does not depend on them.
      Matrix<Scalar> query_gradient = Matrix<Scalar>::Zero(Q.rows(), Q.cols());
      Matrix<Scalar> key_gradient = Matrix<Scalar>::Zero(K.rows(), K.cols());
      Matrix<Scalar> value_gradient = Matrix<Scalar>::Zero(V.rows(), V.cols());
      if (factor_ == 1)
        detail::head_backward(head_, Q, K, V, out, dOut, query_gradient, key_gradient,
                              value_gradient, layout);
      dQ = query_gradient;
      dK = key_gradient;
      dV = value_gradient;
      return;
    }
    if constexpr (mask::has_causal_limit<MaskOf<Head>>) {
      Matrix<Scalar> query_gradient(Q.rows(), Q.cols());
      Matrix<Scalar> key_gradient(K.rows(), K.cols());
      Matrix<Scalar> value_gradient(V.rows(), V.cols());
      if constexpr (detail::is_linear_attention<Head>)
        backward_causal_linear(Q, K, V, out, dOut, query_gradient, key_gradient, value_gradient,
                               layout);
      else
        backward_causal(Q, K, V, out, dOut, query_gradient, key_gradient, value_gradient, layout);
      // Written last, so that a gradient may overlap any input.
      dQ = query_gradient;
      dK = key_gradient;
      dV = value_gradient;
      return;
    }
    const Index windows = mask::pooled_windows(nk, factor_);
    Matrix<Scalar> query_gradient(Q.rows(), Q.cols());
    Matrix<Scalar> window_key_gradient(B * windows, K.cols());
    Matrix<Scalar> window_value_gradient(B * windows, V.cols());
    detail::head_backward(head_.with_mask(pooled_mask(nk)), Q, window_means(K, B),
                          window_means(V, B), out, dOut, query_gradient, window_key_gradient,
                          window_value_gradient, layout);
    // Written last, so that a gradient may overlap any input.
    dQ = query_gradient;
    spread_over_windows(window_key_gradient, B, nk, dK);
    spread_over_windows(window_value_gradient, B, nk, dV);
  }

  /// Sets the threads of the head and of the groups of queries under a causal filter (0 = the
  /// OpenMP default).
  ScaledHead& set_threads(int threads) {
    head_.set_threads(threads);
    threads_ = threads;
    return *this;
  }

 private:
  friend class detail::AttentionCalls<ScaledHead>;
  template <class H>
  using MaskOf = std::remove_cvref_t<decltype(std::declval<const H&>().mask())>;

  /// The head checks its own dimension.
  template <class DQ>
  void check_head_dimension(Index, const DQ&, BatchLayout) const {}

  template <class Queries, class Keys, class Values, class Out>
  void run(const Queries& Q, const Keys& K, const Values& V, Out& out, BatchLayout layout) const {
    if (factor_ == 1) {
      head_.compute(Q, K, V, out, layout);
      return;
    }
    const Index B = layout.sequences;
    const Index nq = Q.rows() / B;
    const Index nk = K.rows() / B;
    // No query sees a key, or there is nothing to write: no pooling, no blocks of empty inputs.
    if (nq == 0 || nk == 0 || V.cols() == 0) {
      out.setZero();
      return;
    }
    if constexpr (mask::has_causal_limit<MaskOf<Head>>)
      run_causal(Q, K, V, out, layout);
    else
      head_.with_mask(pooled_mask(nk))
          .compute(Q, window_means(K, B), window_means(V, B), out, layout);
  }

  [[nodiscard]] auto pooled_mask(Index tokens) const {
    if constexpr (std::is_same_v<MaskOf<Head>, mask::None>)
      return mask::None{};
    else
      return mask::Pooled<MaskOf<Head>>{head_.mask(), factor_, tokens};
  }

  /// The pooled inputs of a call under a causal filter (`mask::PooledCausal`): each sequence's
  /// bound filter, its W window means (sequence b from row b W) and its queries' partial window
  /// means (from row \f$b N_q\f$).
  template <class Bound>
  struct CausalPooling {
    Index windows = 0;
    std::vector<Bound> bounds;
    Matrix<Scalar> window_keys;
    Matrix<Scalar> window_values;
    Matrix<Scalar> partial_keys;
    Matrix<Scalar> partial_values;
  };

  /// The bound filter of a sequence under a causal filter.
  template <class H = Head>
  using CausalBound =
      decltype(std::declval<const mask::PooledCausal<MaskOf<H>>&>().bind(mask::Shape{}));

  /// Whether the head takes a group's filter in `with_mask`, so that it runs per group of queries
  /// under a causal filter.
  template <class Bound>
  static constexpr bool runs_query_groups = requires(const Head& head,
                                                     detail::PooledCausalGroup<Bound> group) {
    head.with_mask(group);
  };

  /// Calls `body(pooling)` with the `CausalPooling` of K and V (the filter outlives the call).
  template <class Keys, class Values, class Body>
  void with_causal_pooling(const Keys& K, const Values& V, Index nq, BatchLayout layout,
                           Body&& body) const {
    const Index B = layout.sequences;
    const Index nk = K.rows() / B;
    const mask::PooledCausal<MaskOf<Head>> filter{head_.mask(), factor_, nk};
    using Bound = decltype(filter.bind(mask::Shape{}));
    CausalPooling<Bound> pooling;
    const Index W = mask::pooled_windows(nk, factor_);
    pooling.windows = W;
    pooling.bounds.reserve(std::size_t(B));
    for (Index b = 0; b < B; ++b)
      pooling.bounds.push_back(filter.bind(mask::Shape{nq, W + nq, b, B}));
    pooling.window_keys.resize(B * W, K.cols());
    pooling.window_values.resize(B * W, V.cols());
    pooling.partial_keys.resize(B * nq, K.cols());
    pooling.partial_values.resize(B * nq, V.cols());
    for (Index b = 0; b < B; ++b) {
      const Bound& bound = pooling.bounds[std::size_t(b)];
      write_window_means(K, b * nk, nk, pooling.window_keys.middleRows(b * W, W));
      write_window_means(V, b * nk, nk, pooling.window_values.middleRows(b * W, W));
      write_partial_means(K, b * nk, bound, pooling.partial_keys.middleRows(b * nq, nq));
      write_partial_means(V, b * nk, bound, pooling.partial_values.middleRows(b * nq, nq));
    }
    body(static_cast<const CausalPooling<Bound>&>(pooling));
  }

  /// Calls `body(head, keys, values, first, rows, seen)` for the group of queries [first, first
  /// + rows) of sequence b (`detail::pooled_causal_group` at a time): `head` under the group's
  /// filter, `keys` and `values` the `seen` windows its last query sees followed by the group's
  /// own partial windows. The groups of every sequence run in parallel.
  template <class Bound, class Body>
  void for_each_query_group(const CausalPooling<Bound>& pooling, Index nq, Index sequences,
                            Body&& body) const {
    constexpr Index group = detail::pooled_causal_group;
    const Index W = pooling.windows;
    const Index groups = nq / group + (nq % group != 0 ? 1 : 0);
    parallel_for(sequences * groups, resolve_thread_count(threads_), [&](Index item) {
      const Index b = item / groups;
      const Index first = item % groups * group;
      const Index rows = std::min(group, nq - first);
      const Bound& bound = pooling.bounds[std::size_t(b)];
      const Index seen = bound.whole_windows(first + rows - 1);
      Matrix<Scalar> keys(seen + rows, pooling.window_keys.cols());
      Matrix<Scalar> values(seen + rows, pooling.window_values.cols());
      keys.topRows(seen) = pooling.window_keys.middleRows(b * W, seen);
      keys.bottomRows(rows) = pooling.partial_keys.middleRows(b * nq + first, rows);
      values.topRows(seen) = pooling.window_values.middleRows(b * W, seen);
      values.bottomRows(rows) = pooling.partial_values.middleRows(b * nq + first, rows);
      typename detail::PooledCausalGroup<Bound>::Table visible;
      detail::PooledCausalGroup<Bound>::fill(bound, first, seen, rows, visible);
      body(head_.with_mask(detail::PooledCausalGroup<Bound>{&bound, &visible, first, seen}), keys,
           values, b, first, rows, seen);
    });
  }

  /// Under a causal filter: the windows and every query's partial window (`mask::PooledCausal`).
  template <class Queries, class Keys, class Values, class Out>
  void run_causal(const Queries& Q, const Keys& K, const Values& V, Out& out,
                  BatchLayout layout) const {
    static_assert(detail::is_linear_attention<Head> || runs_query_groups<CausalBound<>>,
                  "ScaledHead: under a causal mask the head must be a LinearAttention or take "
                  "any set filter in with_mask (Attention, or a BatchNormalized Attention)");
    const Index B = layout.sequences;
    const Index H = layout.heads;
    const Index nq = Q.rows() / B;
    with_causal_pooling(K, V, nq, layout, [&](const auto& pooling) {
      const Index W = pooling.windows;
      if constexpr (detail::is_linear_attention<Head>) {
        const Index d = linear_head_dimension(Q, H);
        const Index dv = V.cols() / H;
        const LinearOptions& options = head_.options();
        parallel_for(B * H, resolve_thread_count(options.threads), [&](Index item) {
          const Index b = item / H;
          const Index h = item % H;
          detail::attend_pooled_causal(
              head_.feature_map(), head_.magnitude(), Q.block(b * nq, h * d, nq, d),
              pooling.window_keys.block(b * W, h * d, W, d),
              pooling.window_values.block(b * W, h * dv, W, dv),
              pooling.partial_keys.block(b * nq, h * d, nq, d),
              pooling.partial_values.block(b * nq, h * dv, nq, dv), pooling.bounds[std::size_t(b)],
              options, out.block(b * nq, h * dv, nq, dv));
        });
      } else {
        // Groups of queries, each against the windows its last query sees and its own partial
        // windows; one call of the head per group, the groups in parallel.
        for_each_query_group(
            pooling, nq, B,
            [&](const auto& head, const Matrix<Scalar>& keys, const Matrix<Scalar>& values, Index b,
                Index first, Index rows, Index) {
              head.compute(Q.middleRows(b * nq + first, rows), keys, values,
                           out.middleRows(b * nq + first, rows), BatchLayout{1, H});
            });
      }
    });
  }

  /// The backward pass under a causal filter, for a head that runs per group of queries: each
  /// group's head backward on its windows and partial windows; the windows' gradients summed
  /// over the groups in group order, then spread over their tokens, and each partial window's
  /// gradient spread over its tokens \f$P_i\f$ (over \f$|P_i|\f$), in query order.
  template <class Queries, class Keys, class Values, class Out, class OutGradient>
  void backward_causal(const Queries& Q, const Keys& K, const Values& V, const Out& out,
                       const OutGradient& dOut, Matrix<Scalar>& dQ, Matrix<Scalar>& dK,
                       Matrix<Scalar>& dV, BatchLayout layout) const {
    const Index B = layout.sequences;
    const Index H = layout.heads;
    const Index nq = Q.rows() / B;
    const Index nk = K.rows() / B;
    with_causal_pooling(K, V, nq, layout, [&](const auto& pooling) {
      constexpr Index group = detail::pooled_causal_group;
      const Index W = pooling.windows;
      const Index groups = nq / group + (nq % group != 0 ? 1 : 0);
      // Per sequence and group: its windows' gradients; per query: its partial window's.
      std::vector<Matrix<Scalar>> window_key_parts(std::size_t(B * groups));
      std::vector<Matrix<Scalar>> window_value_parts(std::size_t(B * groups));
      Matrix<Scalar> partial_key_gradients(B * nq, K.cols());
      Matrix<Scalar> partial_value_gradients(B * nq, V.cols());
      for_each_query_group(
          pooling, nq, B,
          [&](const auto& head, const Matrix<Scalar>& keys, const Matrix<Scalar>& values, Index b,
              Index first, Index rows, Index seen) {
            Matrix<Scalar> key_gradient(keys.rows(), keys.cols());
            Matrix<Scalar> value_gradient(values.rows(), values.cols());
            detail::head_backward(head, Q.middleRows(b * nq + first, rows), keys, values,
                                  out.middleRows(b * nq + first, rows),
                                  dOut.middleRows(b * nq + first, rows),
                                  dQ.middleRows(b * nq + first, rows), key_gradient, value_gradient,
                                  BatchLayout{1, H});
            const auto part = std::size_t(b * groups + first / group);
            window_key_parts[part] = key_gradient.topRows(seen);
            window_value_parts[part] = value_gradient.topRows(seen);
            partial_key_gradients.middleRows(b * nq + first, rows) = key_gradient.bottomRows(rows);
            partial_value_gradients.middleRows(b * nq + first, rows) =
                value_gradient.bottomRows(rows);
          });
      Matrix<Scalar> window_key_gradient = Matrix<Scalar>::Zero(B * W, K.cols());
      Matrix<Scalar> window_value_gradient = Matrix<Scalar>::Zero(B * W, V.cols());
      for (Index b = 0; b < B; ++b)
        for (Index g = 0; g < groups; ++g) {
          const auto part = std::size_t(b * groups + g);
          const Index seen = window_key_parts[part].rows();
          window_key_gradient.middleRows(b * W, seen) += window_key_parts[part];
          window_value_gradient.middleRows(b * W, seen) += window_value_parts[part];
        }
      spread_over_windows(window_key_gradient, B, nk, dK);
      spread_over_windows(window_value_gradient, B, nk, dV);
      spread_over_partial_windows(pooling, partial_key_gradients, partial_value_gradients, dK, dV);
    });
  }

  /// The backward pass under a causal filter for a `LinearAttention` head:
  /// `detail::attend_backward_pooled_causal` per sequence and head (in parallel) on the window
  /// means and partial window means, then the windows' gradients spread over their tokens and
  /// each partial window's over its tokens \f$P_i\f$ (over \f$|P_i|\f$), in query order.
  template <class Queries, class Keys, class Values, class Out, class OutGradient>
  void backward_causal_linear(const Queries& Q, const Keys& K, const Values& V, const Out& out,
                              const OutGradient& dOut, Matrix<Scalar>& dQ, Matrix<Scalar>& dK,
                              Matrix<Scalar>& dV, BatchLayout layout) const {
    const Index B = layout.sequences;
    const Index H = layout.heads;
    const Index nq = Q.rows() / B;
    const Index nk = K.rows() / B;
    const Index d = linear_head_dimension(Q, H);
    const Index dv = V.cols() / H;
    with_causal_pooling(K, V, nq, layout, [&](const auto& pooling) {
      require_finite_seen_inputs(Q, K, V, out, dOut, pooling, layout);
      const Index W = pooling.windows;
      Matrix<Scalar> window_key_gradient(B * W, K.cols());
      Matrix<Scalar> window_value_gradient(B * W, V.cols());
      Matrix<Scalar> partial_key_gradients(B * nq, K.cols());
      Matrix<Scalar> partial_value_gradients(B * nq, V.cols());
      const LinearOptions& options = head_.options();
      parallel_for(B * H, resolve_thread_count(options.threads), [&](Index item) {
        const Index b = item / H;
        const Index h = item % H;
        detail::attend_backward_pooled_causal(
            head_.feature_map(), head_.magnitude(), Q.block(b * nq, h * d, nq, d),
            pooling.window_keys.block(b * W, h * d, W, d),
            pooling.window_values.block(b * W, h * dv, W, dv),
            pooling.partial_keys.block(b * nq, h * d, nq, d),
            pooling.partial_values.block(b * nq, h * dv, nq, dv), pooling.bounds[std::size_t(b)],
            options, out.block(b * nq, h * dv, nq, dv), dOut.block(b * nq, h * dv, nq, dv),
            dQ.block(b * nq, h * d, nq, d), window_key_gradient.block(b * W, h * d, W, d),
            window_value_gradient.block(b * W, h * dv, W, dv),
            partial_key_gradients.block(b * nq, h * d, nq, d),
            partial_value_gradients.block(b * nq, h * dv, nq, dv));
      });
      spread_over_windows(window_key_gradient, B, nk, dK);
      spread_over_windows(window_value_gradient, B, nk, dV);
      spread_over_partial_windows(pooling, partial_key_gradients, partial_value_gradients, dK, dV);
    });
  }

  /// The head dimension d of Q's H heads, which a `LinearAttention`'s feature map must take.
  template <class Queries>
  [[nodiscard]] Index linear_head_dimension(const Queries& Q, Index H) const {
    const Index d = Q.cols() / H;
    require(d == head_.feature_map().input_dimension(), "ScaledHead: the head dimension is ", d,
            " (Q is ", detail::shape_of(Q), " for ", H,
            " head(s)) but the LinearAttention's feature map takes d = ",
            head_.feature_map().input_dimension());
    return d;
  }

  /// Requires, sequence by sequence and head by head, Q, out, dOut and the tokens that a query
  /// sees (`seen_tokens`) to be finite, as `LinearAttention::backward` does, naming the first
  /// that is not.
  template <class Queries, class Keys, class Values, class Out, class OutGradient, class Bound>
  void require_finite_seen_inputs(const Queries& Q, const Keys& K, const Values& V, const Out& out,
                                  const OutGradient& dOut, const CausalPooling<Bound>& pooling,
                                  BatchLayout layout) const {
    const Index B = layout.sequences;
    const Index H = layout.heads;
    const Index nq = Q.rows() / B;
    const Index nk = K.rows() / B;
    const Index d = Q.cols() / H;
    const Index dv = V.cols() / H;
    for (Index b = 0; b < B; ++b) {
      const std::vector<bool> seen =
          seen_tokens(pooling.bounds[std::size_t(b)], nq, nk, pooling.windows);
      for (Index h = 0; h < H; ++h)
        detail::require_finite_backward_inputs(
            Q.block(b * nq, h * d, nq, d), K.block(b * nk, h * d, nk, d),
            V.block(b * nk, h * dv, nk, dv), out.block(b * nq, h * dv, nq, dv),
            dOut.block(b * nq, h * dv, nq, dv), [&](Index j) { return bool(seen[std::size_t(j)]); },
            b, h, "ScaledHead::backward");
    }
  }

  /// Whether a query sees each of a sequence's `count` tokens: it lies in a window that `bound`
  /// shows the last query (who sees every window any query sees) or in a partial window that
  /// `bound` shows its query. The partial windows grow with the query, so each token is marked
  /// once.
  template <class Bound>
  [[nodiscard]] std::vector<bool> seen_tokens(const Bound& bound, Index nq, Index count,
                                              Index windows) const {
    std::vector<bool> seen(std::size_t(count), false);
    for (Index w = 0; w < windows; ++w) {
      if (!bound.visible(nq - 1, w)) continue;
      const Index begin = w * factor_;  // < count: no overflow
      const Index end = begin + std::min(factor_, count - begin);
      for (Index j = begin; j < end; ++j) seen[std::size_t(j)] = true;
    }
    Index marked = 0;
    for (Index i = 0; i < nq; ++i) {
      if (!bound.visible(i, windows + i)) continue;
      const mask::Range span = bound.partial_tokens(i);
      for (Index j = std::max(span.begin, marked); j < span.end; ++j) seen[std::size_t(j)] = true;
      marked = std::max(marked, span.end);
    }
    return seen;
  }

  /// Adds each query's partial window gradient (row \f$b N_q + i\f$ of `key_gradients` and
  /// `value_gradients`) to its tokens \f$P_i\f$ over \f$|P_i|\f$, in query order.
  template <class Bound>
  void spread_over_partial_windows(const CausalPooling<Bound>& pooling,
                                   const Matrix<Scalar>& key_gradients,
                                   const Matrix<Scalar>& value_gradients, Matrix<Scalar>& dK,
                                   Matrix<Scalar>& dV) const {
    const auto B = Index(pooling.bounds.size());
    const Index nq = key_gradients.rows() / B;
    const Index nk = dK.rows() / B;
    for (Index b = 0; b < B; ++b)
      for (Index i = 0; i < nq; ++i) {
        const mask::Range span = pooling.bounds[std::size_t(b)].partial_tokens(i);
        const auto size = Scalar(span.end - span.begin);
        for (Index j = span.begin; j < span.end; ++j) {
          dK.row(b * nk + j) += key_gradients.row(b * nq + i) / size;
          dV.row(b * nk + j) += value_gradients.row(b * nq + i) / size;
        }
      }
  }

  /// The window means of every sequence of `tokens` (\f$B N_k\f$ rows), sequence after sequence.
  template <class Tokens>
  [[nodiscard]] Matrix<Scalar> window_means(const Tokens& tokens, Index sequences) const {
    const Index count = tokens.rows() / sequences;
    const Index windows = mask::pooled_windows(count, factor_);
    Matrix<Scalar> means(sequences * windows, tokens.cols());
    for (Index b = 0; b < sequences; ++b)
      write_window_means(tokens, b * count, count, means.middleRows(b * windows, windows));
    return means;
  }

  /// The means of the windows of the `count` tokens from row `first` of `tokens` (at least one
  /// token and one column), one row per window: each window summed in double in token order, then
  /// divided by its size and rounded once. Every token is read once, whatever r.
  template <class Tokens, class Target>
  void write_window_means(const Tokens& tokens, Index first, Index count, Target&& means) const {
    for (Index c = 0; c < tokens.cols(); ++c)
      for (Index w = 0; w < means.rows(); ++w) {
        const Index begin = w * factor_;  // < count: no overflow
        const Index end = begin + std::min(factor_, count - begin);
        double sum = double(tokens(first + begin, c));
        for (Index j = begin + 1; j < end; ++j) sum += double(tokens(first + j, c));
        means(w, c) = Scalar(sum / double(end - begin));
      }
  }

  /// The adjoint of `window_means`: token j of window w of each sequence gets row w of
  /// `window_gradients` over \f$|W_w|\f$.
  template <class Gradient>
  void spread_over_windows(const Matrix<Scalar>& window_gradients, Index sequences, Index count,
                           Gradient& tokens) const {
    const Index windows = window_gradients.rows() / sequences;
    for (Index b = 0; b < sequences; ++b)
      for (Index w = 0; w < windows; ++w) {
        const Index begin = w * factor_;
        const Index size = std::min(factor_, count - begin);
        const auto share = (window_gradients.row(b * windows + w) / Scalar(size)).eval();
        for (Index j = begin; j < begin + size; ++j) tokens.row(b * count + j) = share;
      }
  }

  /// Row i: the mean of query i's partial window \f$P_i\f$ (`bound.partial_tokens(i)`) of the
  /// tokens from row `first` of `tokens`, zero when it has none. The limits \f$t_i\f$ do not
  /// decrease, so one running sum per window serves every query in it and every token is read
  /// at most once; each sum runs in token order from the window's first token, as in
  /// `write_window_means`.
  template <class Tokens, class Bound, class Target>
  void write_partial_means(const Tokens& tokens, Index first, const Bound& bound,
                           Target&& means) const {
    std::vector<mask::Range> spans(std::size_t(means.rows()));
    for (Index i = 0; i < means.rows(); ++i) spans[std::size_t(i)] = bound.partial_tokens(i);
    for (Index c = 0; c < tokens.cols(); ++c) {
      Index window_begin = -1;
      Index summed_to = 0;
      double sum = 0.0;
      for (Index i = 0; i < means.rows(); ++i) {
        const mask::Range span = spans[std::size_t(i)];
        if (span.begin >= span.end) {
          means(i, c) = Scalar(0);
          continue;
        }
        if (span.begin != window_begin) {
          window_begin = span.begin;
          sum = double(tokens(first + span.begin, c));
          summed_to = span.begin + 1;
        }
        for (; summed_to < span.end; ++summed_to) sum += double(tokens(first + summed_to, c));
        means(i, c) = Scalar(sum / double(span.end - span.begin));
      }
    }
  }

  Head head_;
  Index factor_ = 1;
  int threads_ = 0;
};

/// Attention-SH: one `ScaledHead` of `head` per pooling factor, head h pooling by `factors[h]`.
template <AttentionHead Head>
[[nodiscard]] MultiHead<ScaledHead<Head>> scaled_heads(const Head& head,
                                                       const std::vector<Index>& factors,
                                                       MultiHeadOptions options = {}) {
  std::vector<ScaledHead<Head>> heads;
  heads.reserve(factors.size());
  for (const Index factor : factors) heads.emplace_back(head, factor);
  return MultiHead<ScaledHead<Head>>(std::move(heads), options);
}

}  // namespace kernattn
