#pragma once
/// \file
/// `ScaledHead<Head>` and `scaled_heads`: Attention-SH (Nguyen et al. 2024, DESIGN 1.7), heads
/// that attend over keys and values pooled along the sequence.

#include <type_traits>
#include <utility>
#include <vector>

#include "kernattn/attention/arguments.hpp"
#include "kernattn/attention/linear_attention.hpp"
#include "kernattn/attention/multi_head.hpp"
#include "kernattn/mask/key_padding.hpp"
#include "kernattn/mask/none.hpp"
#include "kernattn/mask/pooled.hpp"

namespace kernattn {

namespace detail {
/// The linear engine evaluates every pooled filter it evaluates unpooled: pooled padding is still
/// padding, and a pooled causal filter keeps its prefix form. Query i sees \f$t_i\f$ leading
/// tokens, so the \f$\lfloor t_i / r\rfloor\f$ windows that end inside them, and all
/// \f$\lceil N/r\rceil\f$ windows (the ragged one too) once \f$t_i = N\f$.
template <class Inner>
requires LinearMaskTraits<Inner>::supported struct LinearMaskTraits<mask::Pooled<Inner>>
    : LinearMaskTraits<Inner> {
  [[nodiscard]] static auto visible_count(const mask::Pooled<Inner>& pooled, Index nq,
                                          Index windows) requires LinearMaskTraits<Inner>::causal {
    return [tokens_seen = LinearMaskTraits<Inner>::visible_count(pooled.inner, nq, pooled.tokens),
            factor = pooled.factor, tokens = pooled.tokens, windows](Index i) {
      const Index seen = tokens_seen(i);
      return seen == tokens ? windows : seen / factor;
    };
  }
};
}  // namespace detail

/// Runs `Head` with the keys and values mean-pooled over windows of r = `factor` tokens, the
/// queries at full length: pooled key \f$\bar k_w = \frac1{|W_w|}\sum_{j\in W_w} k_j\f$ (and
/// \f$\bar v_w\f$ likewise) over window \f$W_w = [w r, \min((w+1) r, N_k))\f$, the last window
/// ragged, for \f$w < \lceil N_k/r\rceil\f$. The head's cost in the keys falls by r.
///
/// Set filters follow `mask::Pooled`: a pooled key is visible to a query only when every token in
/// its window is (under `Causal`, once the window's last token is). `mask::None` stays `None`;
/// `LinearAttention` takes the pooled form of every filter it takes (a pooled causal filter is
/// still a prefix of the keys for each query). The pooled means are summed in double in token order
/// and rounded once. With r = 1 the head runs on the inputs unchanged, bit for bit.
///
/// `Head` needs `mask()` and `with_mask(mask)` (`Attention`, `LinearAttention`,
/// `BatchNormalized` of either).
template <AttentionHead Head>
class ScaledHead : public detail::AttentionCalls<ScaledHead<Head>> {
 public:
  using Scalar = typename Head::Scalar;

  ScaledHead(Head head, Index factor) : head_(std::move(head)), factor_(factor) {
    require(factor_ >= 1, "ScaledHead: the pooling factor must be >= 1, got ", factor_);
  }

  [[nodiscard]] const Head& head() const { return head_; }
  [[nodiscard]] Index factor() const { return factor_; }

  ScaledHead& set_threads(int threads) {
    head_.set_threads(threads);
    return *this;
  }

 private:
  friend class detail::AttentionCalls<ScaledHead>;

  /// The head checks its own dimension.
  template <class DQ>
  void check_head_dimension(Index, const DQ&, BatchLayout) const {}

  template <class Queries, class Keys, class Values, class Out>
  void run(const Queries& Q, const Keys& K, const Values& V, Out& out, BatchLayout layout) const {
    if (factor_ == 1) {
      head_.compute(Q, K, V, out, layout);
      return;
    }
    const Index nk = K.rows() / layout.sequences;
    head_.with_mask(pooled_mask(nk))
        .compute(Q, pooled(K, layout.sequences), pooled(V, layout.sequences), out, layout);
  }

  [[nodiscard]] auto pooled_mask(Index tokens) const {
    using Mask = std::remove_cvref_t<decltype(head_.mask())>;
    if constexpr (std::is_same_v<Mask, mask::None>)
      return mask::None{};
    else
      return mask::Pooled<Mask>{head_.mask(), factor_, tokens};
  }

  /// The window means of every sequence of `tokens` (\f$B N_k\f$ rows) in order, each window
  /// summed token by token in double. Column by column, the full windows of a sequence are
  /// viewed as an r x W matrix (one window per column), whose rows are added in order with one
  /// lane per window; the ragged last window is summed on its own.
  template <class Tokens>
  [[nodiscard]] Matrix<Scalar> pooled(const Tokens& tokens, Index sequences) const {
    using Stride = Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>;
    const Index r = factor_;
    const Index count = tokens.rows() / sequences;
    const Index full = count / r;
    const Index windows = (count + r - 1) / r;
    const Index row_step = Tokens::IsRowMajor ? tokens.outerStride() : 1;
    const Index column_step = Tokens::IsRowMajor ? 1 : tokens.outerStride();
    Matrix<Scalar> means(sequences * windows, tokens.cols());
    Eigen::VectorXd sums(full);
    for (Index c = 0; c < tokens.cols(); ++c)
      for (Index b = 0; b < sequences; ++b) {
        const Scalar* first = tokens.data() + b * count * row_step + c * column_step;
        const Eigen::Map<const Matrix<Scalar>, 0, Stride> by_window(first, r, full,
                                                                    Stride(r * row_step, row_step));
        sums.head(full) = by_window.row(0).transpose().template cast<double>();
        for (Index t = 1; t < r; ++t) sums += by_window.row(t).transpose().template cast<double>();
        means.col(c).segment(b * windows, full) = (sums / double(r)).template cast<Scalar>();
        if (windows > full) {
          double last = 0.0;
          for (Index j = full * r; j < count; ++j) last += double(first[j * row_step]);
          means(b * windows + full, c) = Scalar(last / double(count - full * r));
        }
      }
    return means;
  }

  Head head_;
  Index factor_ = 1;
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
