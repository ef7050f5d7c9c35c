#pragma once
/// \file
/// Where a score bias (`mask::BoundScoreBias`) enters the exact engine's log-weights.

#include <type_traits>
#include <utility>

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/scoring.hpp"
#include "kernattn/kernels/kernel.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn::detail {

/// Adds \f$b(\mathrm{first\_query} + r, \mathrm{first\_key} + c)\f$ to entry (r, c) of a tile of
/// log-weights when the bound mask biases the scores; does nothing otherwise. Hidden pairs get
/// their bias too: the engines overwrite them afterwards.
template <class BoundMask, class Tile>
void add_score_bias(const BoundMask& bound, Index first_query, Index first_key, Tile&& tile) {
  if constexpr (mask::BoundScoreBias<BoundMask>) {
    using T = typename std::remove_cvref_t<Tile>::Scalar;
    for (Index c = 0; c < tile.cols(); ++c)
      for (Index r = 0; r < tile.rows(); ++r)
        tile(r, c) += T(bound.bias(first_query + r, first_key + c));
  }
}

/// Score biases add to log-weights, so only the exponential forms take them: a direct form's
/// weight is no exponential to add to (docs/conventions.md, "Score biases").
template <kernels::Kernel Kernel, class Mask>
inline constexpr bool accepts_mask = !mask::ScoreBias<Mask> || Scoring<Kernel>::exponential;

/// Whether a head's mask biases the scores (false for a head without a mask).
template <class Head>
[[nodiscard]] constexpr bool has_score_bias() {
  if constexpr (requires(const Head& head) { head.mask(); })
    return mask::ScoreBias<std::remove_cvref_t<decltype(std::declval<const Head&>().mask())>>;
  else
    return false;
}

}  // namespace kernattn::detail
