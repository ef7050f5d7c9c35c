#pragma once
/// \file
/// The score seam: `Scoring<Kernel>` says, for the form of `Kernel` (`kernels::Kernel`), how
/// the engines score queries against keys. The streaming engine (`attend_query_tile`), the graph
/// engine (`attend_graph_rows`), the per-key work (`compute_key_terms`) and the range checks
/// (`LogWeightRange`) call it and never branch on the form; a new form is one header in `forms/`
/// that specialises `Scoring` for its concept (docs/extending.md).
///
/// Every specialisation provides, for kernels of scalar type T:
///  - `exponential`: whether scores are \f$\log\kappa\f$ (weights \f$e^{x}\f$, normalised by an
///    online softmax) rather than \f$\kappa\f$ itself (normalised directly);
///  - `has_key_term`: whether the kernel adds a term of its own to a key's log-weight (a
///    dot-product kernel's \f$g(k)\f$, a feature map's log-scale \f$s_k\f$);
///  - `key_terms(kernel, keys, terms, log_terms)`: the per-key work (squared norms, key features;
///    a feature kernel's log-scales added to `log_terms`), done once per key;
///    `add_key_terms(kernel, keys, log_terms)` adds \f$g(k_j)\f$ to `log_terms(j)` where the form
///    has one;
///  - `log_factors(kernel, columns, add)`: calls `add(first, columns, distance, scale)` for each
///    log-domain factor on inputs of `columns` columns (the range checks' view of the kernel);
///  - streaming: `prepare_tile(kernel, queries, scratch)` once per query tile, then
///    `score_tile(kernel, queries, scratch, keys, terms, first_key, tile)` per key tile: the
///    query tile x key tile of scores, up to terms of the query alone (they cancel);
///  - single pairs (forms the graph engine evaluates): `prepare_rows(kernel, queries)`,
///    `pair_keys(terms, keys)` (the rows a pair reads, one per key), `score_pair(prepared, i,
///    key)` and `map_scores(kernel, scores, d)`, which turns the gathered pair values into
///    scores.
///
/// A form may also score in blocks (`BlockScoring`), the exact engine's fast path: its tile
/// scores are the products of the prepared queries with the keys, finished per block by
/// `finish_block(kernel, queries, first_row, scratch, keys, terms, first_key, scores)` (rows
/// [first_row, first_row + scores.rows()) of the query tile, a row-major block of scores).

#include "kernattn/engine/forms/direct.hpp"
#include "kernattn/engine/forms/distance.hpp"
#include "kernattn/engine/forms/dot_product.hpp"
#include "kernattn/engine/forms/feature.hpp"
#include "kernattn/engine/forms/product.hpp"
#include "kernattn/engine/forms/scoring.hpp"

namespace kernattn::detail {

/// The kernels whose form scores in blocks: the raw scores of a query block and a key tile are
/// the dot products of the prepared queries (`prepare_tile`) with the keys' rows, and
/// `finish_block` turns them into log-weights.
template <class Kernel>
concept BlockScoring = Scoring<Kernel>::exponential && requires {
  requires Scoring<Kernel>::block_scoring;
};

/// The block-scoring kernels whose log-weights are \f$e + \log P\f$: `finish_block` leaves the
/// exponents \f$e\f$ in the scores and writes the prefactors \f$P \ge 1\f$ at the same places
/// of `TileScratch::block_prefactors`, so that the weights are formed as \f$P\,e^{e - m}\f$
/// (`kernels::PrefactoredDistanceKernel`).
template <class Kernel>
concept BlockPrefactors = BlockScoring<Kernel> && requires {
  requires Scoring<Kernel>::block_prefactors;
};

/// The kernels whose form scores single pairs (every form but the product form).
template <class Kernel>
concept PairScoring = requires(const Kernel& kernel, const Matrix<typename Kernel::Scalar>& x) {
  Scoring<Kernel>::prepare_rows(kernel, x);
};

}  // namespace kernattn::detail
