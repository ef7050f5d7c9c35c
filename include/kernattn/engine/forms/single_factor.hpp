#pragma once
/// \file
/// The streaming scoring shared by the forms that are one log-domain factor on all columns of
/// the inputs (dot-product and distance kernels).

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/key_terms.hpp"
#include "kernattn/engine/tile_scratch.hpp"

namespace kernattn::detail {

/// `Factor` is the form's `Scoring`: its `prepare_factor` and `factor_tile` on all columns.
template <class Kernel, class Factor>
struct SingleFactorScoring {
  using T = typename Kernel::Scalar;
  static constexpr bool exponential = true;

  template <class Add>
  static void log_factors(const Kernel& kernel, Index columns, Add&& add) {
    Factor::log_factor(kernel, 0, columns, add);
  }

  template <class QueryTile>
  static void prepare_tile(const Kernel& kernel, const QueryTile& queries,
                           TileScratch<T>& scratch) {
    Factor::prepare_factor(kernel, queries,
                           scratch.prepared_queries(queries.rows(), queries.cols()),
                           scratch.query_squared_norms[0], scratch.distance[0]);
  }

  template <class QueryTile, class KeyRows, class Tile>
  static void score_tile(const Kernel& kernel, const QueryTile& queries, TileScratch<T>& scratch,
                         const KeyRows& keys, const KeyTerms<T>& terms, Index first_key,
                         Tile&& tile) {
    Factor::factor_tile(kernel, queries, scratch.prepared_queries(queries.rows(), queries.cols()),
                        scratch.query_squared_norms[0], keys, terms.squared_norms, first_key,
                        scratch.distance[0], tile);
  }
};

}  // namespace kernattn::detail
