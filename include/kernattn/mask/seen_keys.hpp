#pragma once
/// \file
/// `seen_keys`: which keys of a sequence at least one query sees, \f$\bigcup_i M(i)\f$.

#include <algorithm>

#include "kernattn/mask/mask.hpp"

namespace kernattn::mask {

/// Flags, one per key of a sequence with `queries` queries and `keys` keys:
/// \f$\text{seen}_j = \exists i : j \in M(i)\f$, from a bound mask. Key tiles the mask calls
/// fully visible or hidden are settled at once; in a partial tile each key asks query tiles from
/// the last one up (the last query of a causal mask sees every key) and scans a partial query
/// tile pair by pair, so banded masks cost \f$O(N_k)\f$ coverage calls.
template <BoundMask Bound>
[[nodiscard]] Eigen::Array<bool, Eigen::Dynamic, 1> seen_keys(const Bound& bound, Index queries,
                                                              Index keys) {
  constexpr Index tile = 256;
  Eigen::Array<bool, Eigen::Dynamic, 1> seen = Eigen::Array<bool, Eigen::Dynamic, 1>::Zero(keys);
  if (queries == 0) return seen;
  const auto some_query_sees = [&](Index j) {
    for (Index end = queries; end > 0; end -= std::min(end, tile)) {
      const Range rows{std::max<Index>(end - tile, 0), end};
      switch (bound.coverage(rows, Range{j, j + 1})) {
        case Coverage::full:
          return true;
        case Coverage::hidden:
          continue;
        case Coverage::partial:
          for (Index i = rows.end - 1; i >= rows.begin; --i)
            if (bound.visible(i, j)) return true;
      }
    }
    return false;
  };
  for (Index begin = 0; begin < keys; begin += tile) {
    const Range cols{begin, std::min(begin + tile, keys)};
    const Coverage coverage = bound.coverage(Range{0, queries}, cols);
    if (coverage == Coverage::hidden) continue;
    for (Index j = cols.begin; j < cols.end; ++j)
      seen(j) = coverage == Coverage::full || some_query_sees(j);
  }
  return seen;
}

}  // namespace kernattn::mask
