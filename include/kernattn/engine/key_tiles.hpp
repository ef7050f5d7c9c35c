#pragma once
/// \file
/// The walk over the key tiles of one query tile, shared by both paths of the exact engine.

#include <algorithm>

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/key_terms.hpp"
#include "kernattn/engine/log_weight_range.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn::detail {

/// Walks the key tiles of a query tile (rows [first_query, first_query + rows) of a sequence),
/// `key_tile` keys at a time: skips a tile the mask hides entirely, runs the range checks on the
/// pairs a tile shows (`LogWeightRange::require_tile`, before any arithmetic on it), then calls
/// `body(first_key, tile_keys, partial, visible)`, where `partial` says whether the mask hides
/// some of the tile's pairs and `visible(i, j)` whether query i of the query tile sees key j of
/// the key tile.
template <Real T, mask::BoundMask BoundMask, class Body>
void for_each_key_tile(const BoundMask& visibility, Index first_query, Index rows, Index key_count,
                       Index key_tile, const LogWeightRange<T>& range,
                       const Eigen::ArrayXXd& query_norms, const KeyTerms<T>& terms, Body&& body) {
  const mask::Range query_range{first_query, first_query + rows};
  for (Index first_key = 0; first_key < key_count; first_key += key_tile) {
    const Index tile_keys = std::min(key_tile, key_count - first_key);
    const mask::Coverage coverage =
        visibility.coverage(query_range, {first_key, first_key + tile_keys});
    if (coverage == mask::Coverage::hidden) continue;
    const bool partial = coverage == mask::Coverage::partial;
    const auto visible = [&](Index i, Index j) {
      return visibility.visible(first_query + i, first_key + j);
    };
    range.require_tile("Attention", query_norms, first_query, terms.range_norms,
                       terms.range_key_terms, first_key, tile_keys,
                       [&](Index i, Index j) { return !partial || visible(i, j); });
    body(first_key, tile_keys, partial, visible);
  }
}

}  // namespace kernattn::detail
