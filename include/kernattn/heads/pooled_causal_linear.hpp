#pragma once
/// \file
/// The linear engine under the causal filter of `ScaledHead` (`mask::PooledCausal`), forward and
/// backward: query i sees its first \f$f_i\f$ windows through the prefix state and its own
/// partial window \f$p_i\f$ (the mean of the tokens \f$P_i\f$ of its current window it has seen)
/// directly, in time \f$O(N M d)\f$ (docs/primal_dual.md, docs/gradients.md "Compositions").

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/linear_backward.hpp"
#include "kernattn/engine/linear_engine.hpp"
#include "kernattn/engine/masked_product.hpp"
#include "kernattn/engine/options.hpp"
#include "kernattn/features/feature_map.hpp"
#include "kernattn/magnitude/magnitude.hpp"

namespace kernattn::detail {

/// Whether key j of a tile (features and log-scales in `scratch`) poisons: the rule of
/// `first_poisoned_key`, for one key.
template <Real T>
[[nodiscard]] bool poisons(const LinearScratch<T>& scratch, Index j) {
  return !(scratch.log_scales(j) < std::numeric_limits<double>::infinity()) ||
         !scratch.features.row(j).allFinite();
}

/// The chunks of a call under a pooled causal filter: query i sees the first \f$f_i\f$ =
/// `bound.whole_windows(i)` windows (f non-decreasing). Before chunk \f$[i_0, i_1)\f$ the state
/// takes in the windows every query of the chunk sees, up to \f$f_{i_0}\f$; the chunk's windows
/// are \f$[f_{i_0}, f_{i_1 - 1})\f$.
template <class Bound>
[[nodiscard]] std::vector<ChunkKeys> pooled_causal_chunks(Index queries, Index chunk,
                                                          const Bound& bound) {
  std::vector<ChunkKeys> chunks;
  Index in_state = 0;
  for (Index first_query = 0; first_query < queries; first_query += chunk) {
    const Index rows = std::min(chunk, queries - first_query);
    const Index key_begin = std::max(bound.whole_windows(first_query), in_state);
    const Index key_end = std::max(bound.whole_windows(first_query + rows - 1), key_begin);
    chunks.push_back({first_query, rows, in_state, key_begin, key_end});
    in_state = key_end;
  }
  return chunks;
}

/// A chunk of queries against the state before it, its windows and each query's partial window:
/// the `CausalChunk` of its windows, whose references, denominators and scale sums also take in
/// the partial window, and the partial windows' own terms.
template <Real T>
struct PooledCausalChunk : CausalChunk<T> {
  LinearScratch<T> own;         ///< \f$\tilde\varphi(p_i)\f$ and \f$\ell(p_i)\f$, one per query.
  Eigen::VectorXd own_factors;  ///< \f$e^{\ell(p_i) - r_i}\f$ (0 where the output is NaN).
  Vector<T> own_weights;        ///< \f$e^{\ell(p_i) - r_i}\,a_i\cdot\tilde\varphi(p_i)\f$.
};

/// Evaluates the chunk `range` of queries against the state before it, the chunk's windows
/// (their features and log-scales left in `scratch`) and each query's partial window (row i of
/// `partial_keys`, seen when `partial_valid(i)`): `evaluate_chunk` with one more key per query,
/// relative to \f$r_i = \max(m, \ell \text{ of its visible chunk windows}, \ell(p_i))\f$. A
/// query that sees a window or partial window that poisons (`first_poisoned_key`) gets a NaN
/// denominator, scale sum and reference.
template <features::FeatureMap Map, magnitude::Magnitude Magnitude, class Queries, class Windows,
          class Partials, class Bound, class WindowValid, class PartialValid>
void evaluate_pooled_chunk(const Map& map, const Magnitude& magnitude, const Queries& queries,
                           const Windows& windows, const Partials& partial_keys,
                           const ChunkKeys& range, const Bound& bound,
                           const WindowValid& window_valid, const PartialValid& partial_valid,
                           const LinearState<typename Map::Scalar>& state,
                           LinearScratch<typename Map::Scalar>& scratch,
                           PooledCausalChunk<typename Map::Scalar>& chunk) {
  using T = typename Map::Scalar;
  const Index first_query = range.first_query;
  const Index rows = range.rows;
  const Index key_begin = range.key_begin;
  const Index chunk_keys = range.key_end - range.key_begin;
  chunk.query_log_scales.setZero(rows);
  map.features(queries.middleRows(first_query, rows), chunk.query_features, chunk.query_log_scales);
  key_tile_features(map, magnitude, windows.middleRows(key_begin, chunk_keys), key_begin,
                    window_valid, scratch);
  key_tile_features(map, magnitude, partial_keys.middleRows(first_query, rows), first_query,
                    partial_valid, chunk.own);
  const Index first_poisoned = state.poisoned ? 0 : first_poisoned_key(scratch);

  chunk.weights.noalias() = chunk.query_features * scratch.features.transpose();
  chunk.from_state.noalias() = chunk.query_features * state.weighted_values;
  const Vector<T> state_denominators = chunk.query_features * state.feature_sum;
  const Vector<T> own_products =
      (chunk.query_features.array() * chunk.own.features.array()).rowwise().sum();
  chunk.denominators.resize(rows);
  chunk.scale_sums.resize(rows);
  chunk.references.resize(rows);
  chunk.own_factors.setZero(rows);
  chunk.own_weights.setZero(rows);
  chunk.visible_keys.assign(std::size_t(rows), 0);
  double prefix_max = log_of_zero;
  Index seen = 0;
  for (Index r = 0; r < rows; ++r) {
    const Index visible =
        std::clamp<Index>(bound.whole_windows(first_query + r) - key_begin, 0, chunk_keys);
    chunk.visible_keys[std::size_t(r)] = visible;
    if (state.poisoned || visible > first_poisoned || poisons(chunk.own, r)) {
      // It sees a window or a partial window that poisons: NaN, as in `evaluate_chunk`.
      chunk.denominators(r) = std::numeric_limits<T>::quiet_NaN();
      chunk.scale_sums(r) = std::numeric_limits<double>::quiet_NaN();
      chunk.references(r) = std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    for (; seen < visible; ++seen) prefix_max = std::max(prefix_max, scratch.log_scales(seen));
    const double reference = std::max({state.log_reference, prefix_max, chunk.own.log_scales(r)});
    const double state_factor = exp_difference(state.log_reference, reference);
    double scale_sum = state.scale_sum * state_factor;
    for (Index c = 0; c < chunk_keys; ++c) {
      const double factor = c < visible ? exp_difference(scratch.log_scales(c), reference) : 0.0;
      chunk.weights(r, c) = factor == 0.0 ? T(0) : chunk.weights(r, c) * T(factor);
      scale_sum += factor;
    }
    const double own_factor = exp_difference(chunk.own.log_scales(r), reference);
    chunk.own_factors(r) = own_factor;
    chunk.own_weights(r) = own_factor == 0.0 ? T(0) : own_products(r) * T(own_factor);
    chunk.scale_sums(r) = scale_sum + own_factor;
    const T chunk_sum = visible > 0 ? chunk.weights.row(r).head(visible).sum() : T(0);
    chunk.denominators(r) =
        state_denominators(r) * T(state_factor) + chunk_sum + chunk.own_weights(r);
    chunk.from_state.row(r) *= T(state_factor);
    chunk.references(r) = reference;
  }
}

/// Adds the chunk's windows (their values from row `key_begin` of `window_values`) and partial
/// windows (`partial_values`, the chunk's rows) to the numerators `chunk.from_state` of the
/// queries that see no poison, each query's row from the values it sees alone.
template <Real T, class WindowValues, class PartialValues, class WindowValid>
void add_pooled_values(PooledCausalChunk<T>& chunk, const WindowValues& window_values,
                       Index key_begin, const PartialValues& partial_values,
                       const WindowValid& window_valid) {
  for (Index r = 0; r < chunk.from_state.rows(); ++r) {
    if (std::isnan(chunk.references(r))) continue;  // its output is NaN
    auto numerator = chunk.from_state.row(r);
    const Index visible = chunk.visible_keys[std::size_t(r)];
    if (visible > 0) {
      const auto seen_values = window_values.middleRows(key_begin, visible);
      if (seen_values.allFinite())
        numerator.noalias() += chunk.weights.row(r).head(visible) * seen_values;
      else
        accumulate_nonfinite_values(
            chunk.weights.row(r).head(visible), seen_values,
            [&](Index, Index c) { return window_valid(key_begin + c); }, numerator);
    }
    if (chunk.own_factors(r) != 0.0) numerator += chunk.own_weights(r) * partial_values.row(r);
  }
}

/// One sequence and head of a `ScaledHead` over `LinearAttention` under a causal filter: query i
/// sees the first \f$f_i\f$ = `bound.whole_windows(i)` windows (f non-decreasing; a window that
/// `bound` hides from the last query, which sees every token but the padded ones, weighs nothing)
/// and its own partial window, row i of `partial_keys` and `partial_values`, when `bound`
/// (`mask::PooledCausal`) lets it.
///
/// The chunks of `attend_causal` with one more key per query (`pooled_causal_chunks`,
/// `evaluate_pooled_chunk`): before chunk \f$[i_0, i_1)\f$ the state takes in the windows every
/// query of the chunk sees; the chunk's windows and each query's partial window are weighted
/// directly, relative to the query's own reference. A query's sums read only the windows, partial
/// window and values it sees, one row at a time, so data it does not see, finite or not, never
/// changes a bit of its output; a query that sees a window or partial window that poisons (see
/// `first_poisoned_key`) outputs NaN.
template <features::FeatureMap Map, magnitude::Magnitude Magnitude, class Queries, class Windows,
          class WindowValues, class Partials, class PartialValues, class Bound, class Out>
void attend_pooled_causal(const Map& map, const Magnitude& magnitude, const Queries& queries,
                          const Windows& windows, const WindowValues& window_values,
                          const Partials& partial_keys, const PartialValues& partial_values,
                          const Bound& bound, const LinearOptions& options, Out&& out) {
  using T = typename Map::Scalar;
  const Index nq = queries.rows();
  const Index count = windows.rows();
  const Index dv = window_values.cols();
  if (dv == 0) return;  // nothing to write (and no row of an empty matrix to form)
  const auto window_valid = [&](Index w) { return bound.visible(nq - 1, w); };
  const auto partial_valid = [&](Index i) { return bound.visible(i, count + i); };
  LinearState<T> state(map.feature_dimension(), dv);
  LinearScratch<T>& scratch = LinearScratch<T>::of_this_thread();
  PooledCausalChunk<T> chunk;
  for (const ChunkKeys& range : pooled_causal_chunks(nq, options.causal_chunk, bound)) {
    consume_keys(map, magnitude, windows, window_values, range.consumed, range.key_begin,
                 window_valid, options.key_tile, scratch, state);
    evaluate_pooled_chunk(map, magnitude, queries, windows, partial_keys, range, bound,
                          window_valid, partial_valid, state, scratch, chunk);
    add_pooled_values(chunk, window_values, range.key_begin,
                      partial_values.middleRows(range.first_query, range.rows), window_valid);
    write_guarded_rows<Map::non_negative>(chunk.from_state, chunk.denominators, chunk.scale_sums,
                                          options.denominator_floor,
                                          out.middleRows(range.first_query, range.rows));
    add_keys_to_state(
        scratch, window_values.middleRows(range.key_begin, range.key_end - range.key_begin), state);
  }
}

/// The partial windows' share of a chunk's adjoints (`attend_backward_pooled_causal`): with
/// \f$e_i\f$ = `chunk.own_factors(i)` and \f$dp_i = e_i\,(dn_i\cdot\bar v_{P_i} + dden_i)\f$, adds
/// \f$dp_i\,\tilde\varphi(p_i)\f$ to the queries' `feature_adjoints`, writes
/// \f$\partial\ell/\partial\tilde\varphi(p_i) = dp_i\,a_i\f$ and the \f$Z\f$ term
/// \f$e_i\,\tau\,dden_i\f$ into `own`, and \f$d\bar v_{P_i} = e_i\,(a_i\cdot\tilde\varphi(p_i))
/// \,dn_i\f$ into `value_gradient`. A partial window a query does not see (\f$e_i = 0\f$) gets
/// zeros, whatever it holds.
template <Real T, class PartialValues, class ValueGradient>
void partial_window_adjoints(const PooledCausalChunk<T>& chunk, const RowAdjoints<T>& rows,
                             const PartialValues& partial_values, Matrix<T>& feature_adjoints,
                             KeyAdjoints<T>& own, ValueGradient&& value_gradient) {
  const Index count = chunk.own_factors.size();
  Vector<T> pairs(count);
  own.scale_terms.resize(count);
  for (Index r = 0; r < count; ++r) {
    const double factor = chunk.own_factors(r);
    pairs(r) =
        factor == 0.0
            ? T(0)
            : T(factor) * (rows.outputs.row(r).dot(partial_values.row(r)) + rows.denominators(r));
    own.scale_terms(r) = factor * rows.scale_sums(r);
  }
  feature_adjoints.noalias() += pairs.asDiagonal() * chunk.own.features;
  own.features.noalias() = pairs.asDiagonal() * chunk.query_features;
  value_gradient.noalias() = chunk.own_weights.asDiagonal() * rows.outputs;
}

/// The backward pass of `attend_pooled_causal` for one sequence and head: the chunks of
/// `attend_backward_causal` with one more key per query, its partial window \f$p_i\f$. Each
/// chunk's queries take their adjoints (`RowAdjoints`, from the denominators and scale sums the
/// forward formed, partial windows included) through the state before them, the chunk's windows
/// and their partial windows (`partial_window_adjoints`); the chunk's windows collect the
/// within-chunk pairs and the adjoint state of the later chunks; each partial window's gradient
/// comes from its own query alone; then the chunk's queries join the adjoint state, which reaches
/// the windows the state took in just before the chunk. The log-scale and magnitude terms reach
/// the windows' and partial windows' gradients through `finish_key_gradients`.
///
/// Writes dQ into `query_gradient`, the windows' gradients into `window_gradient` and
/// `window_value_gradient` (zero for windows no query sees), and the partial windows' into
/// `partial_gradient` and `partial_value_gradient`, row i for query i (zero where `bound` hides
/// it). What hidden windows and partial windows hold reaches no gradient. Time
/// \f$O(N M d)\f$; memory one state (D x d_v) per chunk and the chunk's tiles.
template <features::DifferentiableFeatureMap Map, magnitude::DifferentiableMagnitude Magnitude,
          class Queries, class Windows, class WindowValues, class Partials, class PartialValues,
          class Bound, class Out, class OutGradient, class QueryGradient, class WindowGradient,
          class WindowValueGradient, class PartialGradient, class PartialValueGradient>
void attend_backward_pooled_causal(
    const Map& map, const Magnitude& magnitude, const Queries& queries, const Windows& windows,
    const WindowValues& window_values, const Partials& partial_keys,
    const PartialValues& partial_values, const Bound& bound, const LinearOptions& options,
    const Out& out, const OutGradient& out_gradient, QueryGradient&& query_gradient,
    WindowGradient&& window_gradient, WindowValueGradient&& window_value_gradient,
    PartialGradient&& partial_gradient, PartialValueGradient&& partial_value_gradient) {
  using T = typename Map::Scalar;
  const Index nq = queries.rows();
  const Index count = windows.rows();
  const auto window_valid = [&](Index w) { return bound.visible(nq - 1, w); };
  const auto partial_valid = [&](Index i) { return bound.visible(i, count + i); };
  LinearScratch<T>& scratch = LinearScratch<T>::of_this_thread();
  LinearBackwardScratch<T>& work = LinearBackwardScratch<T>::of_this_thread();
  const std::vector<ChunkKeys> chunks = pooled_causal_chunks(nq, options.causal_chunk, bound);
  std::vector<LinearState<T>>& states = work.states;
  keep_states_before_chunks(map, magnitude, windows, window_values, chunks, window_valid,
                            options.key_tile, scratch, states);
  const Index last_seen = chunks.empty() ? 0 : chunks.back().key_end;
  window_gradient.middleRows(last_seen, count - last_seen).setZero();
  window_value_gradient.middleRows(last_seen, count - last_seen).setZero();

  AdjointState<T> adjoint(map.feature_dimension(), window_values.cols());
  RowAdjoints<T>& rows_adjoints = work.rows;
  KeyAdjoints<T>& key_adjoints = work.keys;
  Matrix<T>& feature_adjoints = work.feature_adjoints;
  PooledCausalChunk<T> chunk;
  for (std::size_t c = chunks.size(); c-- > 0;) {
    const ChunkKeys& range = chunks[c];
    const LinearState<T>& before = states[c];
    evaluate_pooled_chunk(map, magnitude, queries, windows, partial_keys, range, bound,
                          window_valid, partial_valid, before, scratch, chunk);
    const Index first = range.first_query;
    const Index rows = range.rows;
    const Index chunk_keys = range.key_end - range.key_begin;
    rows_adjoints.template compute<Map::non_negative>(
        out_gradient.middleRows(first, rows), out.middleRows(first, rows), chunk.denominators,
        chunk.scale_sums, options.denominator_floor);

    // The chunk's windows: the pairs within the chunk and the later chunks' share, then dK.
    state_feature_adjoints(before, chunk.references, rows_adjoints, feature_adjoints);
    const auto chunk_values = window_values.middleRows(range.key_begin, chunk_keys);
    auto chunk_value_gradient = window_value_gradient.middleRows(range.key_begin, chunk_keys);
    chunk_pair_adjoints(chunk, scratch, rows_adjoints, chunk_values, work.pair_adjoints,
                        feature_adjoints, key_adjoints, chunk_value_gradient);
    if (chunk_keys > 0) {
      add_adjoint_state_to_keys(adjoint, scratch.features, scratch.log_scales, chunk_values,
                                key_adjoints, chunk_value_gradient);
      finish_key_gradients(map, magnitude, windows.middleRows(range.key_begin, chunk_keys),
                           range.key_begin, window_valid, scratch.features, key_adjoints,
                           window_gradient.middleRows(range.key_begin, chunk_keys),
                           chunk_value_gradient);
    }

    // The chunk's partial windows, then the queries.
    auto own_value_gradient = partial_value_gradient.middleRows(first, rows);
    partial_window_adjoints(chunk, rows_adjoints, partial_values.middleRows(first, rows),
                            feature_adjoints, key_adjoints, own_value_gradient);
    finish_key_gradients(map, magnitude, partial_keys.middleRows(first, rows), first, partial_valid,
                         chunk.own.features, key_adjoints, partial_gradient.middleRows(first, rows),
                         own_value_gradient);
    features::feature_gradient_of(map, queries.middleRows(first, rows), chunk.query_features,
                                  feature_adjoints, Eigen::VectorXd::Zero(rows), work.inputs,
                                  nullptr);
    query_gradient.middleRows(first, rows) = work.inputs;

    adjoint.add(chunk.query_features, rows_adjoints, chunk.references);
    state_key_gradients(map, magnitude, windows, window_values, range.consumed, range.key_begin,
                        window_valid, options.key_tile, adjoint, scratch, key_adjoints,
                        window_gradient, window_value_gradient);
  }
}

}  // namespace kernattn::detail
