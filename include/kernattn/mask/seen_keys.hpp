#pragma once
/// \file
/// `seen_keys`: which keys of a sequence at least one query sees, \f$\bigcup_i M(i)\f$; and
/// `first_unshared_key`: whether every query that sees a key sees all of them.

#include <algorithm>
#include <optional>
#include <vector>

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

/// A query that sees some key but not `key`, which another query of its sequence sees.
struct UnsharedKey {
  Index query;
  Index key;
};

/// Checks that every query either sees no key or sees exactly the keys flagged in `seen`
/// (\f$S = \bigcup_i M(i)\f$, from `seen_keys`): \f$M(i) \in \{\emptyset, S\}\f$ for every i.
/// Returns the first query and key that break it, or nothing. Tiles the mask calls fully visible
/// are settled at once; a key of S that some query does not see asks whether that query sees
/// any key at all (once per query). Query-independent masks (padding) cost \f$O(N_k)\f$
/// coverage calls, a causal mask stops at its first partial tile, and a `Boolean` mask costs
/// \f$O(N_q N_k)\f$ pairs, the size of the mask itself.
template <BoundMask Bound>
[[nodiscard]] std::optional<UnsharedKey> first_unshared_key(
    const Bound& bound, Index queries, Index keys,
    const Eigen::Array<bool, Eigen::Dynamic, 1>& seen) {
  constexpr Index tile = 256;
  const Range all_queries{0, queries};
  std::vector<signed char> sees_any(std::size_t(queries), -1);  // -1: not asked yet
  const auto sees_some_key = [&](Index i) {
    signed char& known = sees_any[std::size_t(i)];
    if (known < 0) {
      known = 0;
      for (Index begin = 0; begin < keys && known == 0; begin += tile) {
        const Range cols{begin, std::min(begin + tile, keys)};
        switch (bound.coverage(Range{i, i + 1}, cols)) {
          case Coverage::full:
            known = 1;
            break;
          case Coverage::hidden:
            break;
          case Coverage::partial:
            for (Index j = cols.begin; j < cols.end && known == 0; ++j)
              if (bound.visible(i, j)) known = 1;
        }
      }
    }
    return known == 1;
  };
  for (Index begin = 0; begin < keys; begin += tile) {
    const Range cols{begin, std::min(begin + tile, keys)};
    if (bound.coverage(all_queries, cols) == Coverage::full) continue;
    for (Index j = cols.begin; j < cols.end; ++j) {
      if (!seen(j) || bound.coverage(all_queries, Range{j, j + 1}) == Coverage::full) continue;
      for (Index first = 0; first < queries; first += tile) {
        const Range rows{first, std::min(first + tile, queries)};
        const Coverage coverage = bound.coverage(rows, Range{j, j + 1});
        if (coverage == Coverage::full) continue;
        for (Index i = rows.begin; i < rows.end; ++i)
          if ((coverage == Coverage::hidden || !bound.visible(i, j)) && sees_some_key(i))
            return UnsharedKey{i, j};
      }
    }
  }
  return std::nullopt;
}

}  // namespace kernattn::mask
