#pragma once
/// \file
/// Set filters over keys pooled in windows, derived from the filter over the original tokens:
/// `Pooled` (whole windows) and `PooledCausal` (whole windows, and under a causal filter the part
/// of its current window a query has seen). The formulas are in docs/primal_dual.md.

#include <algorithm>
#include <type_traits>
#include <utility>

#include "kernattn/core/errors.hpp"
#include "kernattn/mask/causal.hpp"
#include "kernattn/mask/intersection.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn::mask {

/// \f$\lceil N / r\rceil\f$, the number of windows of r tokens (the last one possibly shorter)
/// that cover N tokens, without overflow for any \f$r \ge 1\f$.
[[nodiscard]] constexpr Index pooled_windows(Index tokens, Index factor) {
  return tokens / factor + (tokens % factor != 0 ? 1 : 0);
}

/// Whether a bound mask lets query i see every token of `span` (true for an empty span): the
/// coverage of the row first, then the tokens one by one from the last (under a causal or padding
/// filter the hidden tokens of a window are its last ones).
template <BoundMask Bound>
[[nodiscard]] bool sees_all(const Bound& bound, Index i, Range span) {
  if (span.begin >= span.end) return true;
  switch (bound.coverage(Range{i, i + 1}, span)) {
    case Coverage::full:
      return true;
    case Coverage::hidden:
      return false;
    case Coverage::partial:
      break;
  }
  for (Index j = span.end - 1; j >= span.begin; --j)
    if (!bound.visible(i, j)) return false;
  return true;
}

/// Keys pooled over windows of `factor` = r tokens (window w covers tokens
/// \f$[w r, \min((w+1) r, N))\f$ of the `tokens` = N original keys, the last one possibly
/// shorter): query i sees pooled key w only when `Inner` lets it see **every** token of the
/// window. Under `Causal` a pooled key thus becomes visible once its last token is, so no query
/// sees a pooled key that averages a token it could not see. Every factor \f$r \ge 1\f$ is valid,
/// up to the largest `Index`.
template <Mask Inner>
struct Pooled {
  Inner inner;
  Index factor = 1;
  Index tokens = 0;

  struct Bound {
    decltype(std::declval<const Inner&>().bind(Shape{})) inner;
    Index factor;
    Index tokens;

    /// The tokens of windows [begin, end), which must lie in [0, W].
    [[nodiscard]] Range tokens_of(Range windows) const {
      return {first_token(windows.begin), first_token(windows.end)};
    }
    /// A tile's coverage is that of its tokens': all visible, all hidden (then every window has
    /// a hidden token), or partial.
    [[nodiscard]] Coverage coverage(Range rows, Range cols) const {
      return inner.coverage(rows, tokens_of(cols));
    }
    [[nodiscard]] bool visible(Index i, Index window) const {
      return sees_all(inner, i, tokens_of({window, window + 1}));
    }

   private:
    /// \f$\min(w r, N)\f$: \f$w r < N\f$ for every window w < W, so nothing overflows.
    [[nodiscard]] Index first_token(Index window) const {
      return window < pooled_windows(tokens, factor) ? window * factor : tokens;
    }
  };

  /// Binds to `shape.keys` pooled keys, which must be \f$\lceil N / r\rceil\f$.
  [[nodiscard]] Bound bind(const Shape& shape) const {
    require(factor >= 1, "mask::Pooled: the pooling factor must be >= 1, got ", factor);
    require(tokens >= 0, "mask::Pooled: the number of tokens must be >= 0, got ", tokens);
    const Index windows = pooled_windows(tokens, factor);
    require(shape.keys == windows, "mask::Pooled: ", tokens, " tokens pooled by ", factor, " give ",
            windows, " keys, but the call has ", shape.keys);
    return {inner.bind(Shape{shape.queries, tokens, shape.sequence, shape.sequences}), factor,
            tokens};
  }
};

/// Masks whose every query stops at the causal limit of `Causal` (the first
/// \f$t_i = \min(\max(i + N - N_q + 1, 0), N)\f$ tokens, aligned bottom-right): `Causal` itself
/// and any intersection with it (`Causal{} && padding`, a causal window, ...).
template <class M>
inline constexpr bool has_causal_limit = false;
template <>
inline constexpr bool has_causal_limit<Causal> = true;
template <Mask A, Mask B>
inline constexpr bool has_causal_limit<Intersection<A, B>> =
    has_causal_limit<A> || has_causal_limit<B>;

/// The keys `ScaledHead` attends over under a causal filter `Inner` (`has_causal_limit`):
/// the W = \f$\lceil N/r\rceil\f$ windows of `Pooled<Inner>`, with the same rule, then one
/// **partial window** per query. Query i may see the first \f$t_i\f$ tokens (the causal limit);
/// when \f$t_i\f$ is neither a multiple of r nor N, key W + i stands for tokens
/// \f$P_i = [\lfloor t_i/r\rfloor r, t_i)\f$, the part of its current window that query i has
/// seen (`ScaledHead` puts their mean there), and query i alone sees it, when `Inner` lets it see
/// every token of \f$P_i\f$. So query i sees \f$\lfloor t_i/r\rfloor\f$ whole windows and the
/// rest of its \f$t_i\f$ tokens through one partial mean, and nothing after token \f$t_i - 1\f$.
template <Mask Inner>
requires has_causal_limit<Inner>
struct PooledCausal {
  Inner inner;
  Index factor = 1;
  Index tokens = 0;

  struct Bound {
    typename Pooled<Inner>::Bound windows;
    Index count;  ///< W, the number of windows: key W + i is query i's partial window.
    Index shift;  ///< \f$N - N_q + 1\f$: \f$t_i = \min(\max(i + \mathrm{shift}, 0), N)\f$.

    /// \f$t_i\f$, the number of leading tokens query i may see.
    [[nodiscard]] Index limit(Index i) const {
      return std::clamp<Index>(i + shift, 0, windows.tokens);
    }
    /// The whole windows inside query i's limit: \f$\lfloor t_i/r\rfloor\f$, or W once
    /// \f$t_i = N\f$ (the ragged last window too).
    [[nodiscard]] Index whole_windows(Index i) const {
      const Index t = limit(i);
      return t == windows.tokens ? count : t / windows.factor;
    }
    /// \f$P_i\f$, the tokens of query i's partial window (empty when it has none).
    [[nodiscard]] Range partial_tokens(Index i) const {
      const Index t = limit(i);
      if (t == windows.tokens) return {t, t};
      return {t - t % windows.factor, t};
    }

    [[nodiscard]] Coverage coverage(Range rows, Range cols) const {
      const Range pooled{cols.begin, std::min(cols.end, count)};
      const Range partial{std::max(cols.begin, count) - count, cols.end - count};
      if (partial.begin >= partial.end) return windows.coverage(rows, pooled);
      const bool meet = std::max(rows.begin, partial.begin) < std::min(rows.end, partial.end);
      const Coverage own = meet ? Coverage::partial : Coverage::hidden;
      if (pooled.begin >= pooled.end) return own;
      return windows.coverage(rows, pooled) == own ? own : Coverage::partial;
    }
    [[nodiscard]] bool visible(Index i, Index key) const {
      if (key < count) return windows.visible(i, key);
      const Range span = partial_tokens(i);
      return key - count == i && span.begin < span.end && sees_all(windows.inner, i, span);
    }
  };

  /// Binds to \f$W + N_q\f$ keys (`shape.keys`): the windows, then one partial window per query.
  [[nodiscard]] Bound bind(const Shape& shape) const {
    require(factor >= 1, "mask::PooledCausal: the pooling factor must be >= 1, got ", factor);
    require(tokens >= 0, "mask::PooledCausal: the number of tokens must be >= 0, got ", tokens);
    const Index count = pooled_windows(tokens, factor);
    require(shape.keys == count + shape.queries, "mask::PooledCausal: ", tokens,
            " tokens pooled by ", factor, " give ", count, " windows and ", shape.queries,
            " partial windows, ", count + shape.queries, " keys, but the call has ", shape.keys);
    // The inner mask bound here, not through a copy: a bound mask may point into its mask.
    return {
        {inner.bind(Shape{shape.queries, tokens, shape.sequence, shape.sequences}), factor, tokens},
        count,
        tokens - shape.queries + 1};
  }
};

}  // namespace kernattn::mask
