#pragma once
/// \file
/// A set filter over keys pooled in windows, derived from the filter over the original tokens.

#include <algorithm>
#include <utility>

#include "kernattn/core/errors.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn::mask {

/// Keys pooled over windows of `factor` tokens (window w covers tokens
/// \f$[w r, \min((w+1) r, N))\f$ of the `tokens` = N original keys, the last one possibly
/// shorter): query i sees pooled key w only when `Inner` lets it see **every** token of the
/// window. Under `Causal` a pooled key thus becomes visible once its last token is, so no query
/// sees a pooled key that averages a token it could not see.
template <Mask Inner>
struct Pooled {
  Inner inner;
  Index factor = 1;
  Index tokens = 0;

  struct Bound {
    decltype(std::declval<const Inner&>().bind(Shape{})) inner;
    Index factor;
    Index tokens;

    [[nodiscard]] Range tokens_of(Range windows) const {
      return {windows.begin * factor, std::min(windows.end * factor, tokens)};
    }
    /// A tile's coverage is that of its tokens': all visible, all hidden (then every window has
    /// a hidden token), or partial.
    [[nodiscard]] Coverage coverage(Range rows, Range cols) const {
      return inner.coverage(rows, tokens_of(cols));
    }
    [[nodiscard]] bool visible(Index i, Index window) const {
      const Range span = tokens_of({window, window + 1});
      for (Index j = span.begin; j < span.end; ++j)
        if (!inner.visible(i, j)) return false;
      return true;
    }
  };

  /// Binds to `shape.keys` pooled keys, which must be \f$\lceil N / r\rceil\f$.
  [[nodiscard]] Bound bind(const Shape& shape) const {
    require(factor >= 1, "mask::Pooled: the pooling factor must be >= 1, got ", factor);
    require(shape.keys == (tokens + factor - 1) / factor, "mask::Pooled: ", tokens,
            " tokens pooled by ", factor, " give ", (tokens + factor - 1) / factor,
            " keys, but the call has ", shape.keys);
    return {inner.bind(Shape{shape.queries, tokens, shape.sequence, shape.sequences}), factor,
            tokens};
  }
};

}  // namespace kernattn::mask
