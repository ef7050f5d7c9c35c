#pragma once
/// \file
/// The linear-time engine (docs/math.md, section 5): with features, \f$w_{ij} =
/// \varphi(q_i)\cdot\psi(k_j)\f$, \f$\psi(k) = \varphi(k)\,\mu(k)\f$, and \f$out_i = \varphi(q_i)^T
/// S / \varphi(q_i)^T z\f$ with \f$S = \sum_j \psi(k_j) v_j^T\f$, \f$z = \sum_j \psi(k_j)\f$: time
/// \f$O(N M d)\f$, state \f$O(M d_v)\f$.
///
/// Keys are kept in the log domain: a key's feature is \f$\tilde\varphi(k_j)\,e^{\ell_j}\f$ with
/// \f$\ell_j = s_j + \log\mu(k_j)\f$ (feature log-scale plus log-magnitude, in double). The state
/// is held relative to the running maximum \f$m\f$ of \f$\ell\f$ over the keys summed so far,
/// exactly as the exact engine's online softmax: \f$S = \sum_j e^{\ell_j - m}\tilde\varphi(k_j)
/// v_j^T\f$, and likewise \f$z\f$ and \f$Z = \sum_j e^{\ell_j - m}\f$ (the denominator if every
/// kernel value were 1, which scales the guard of `LinearOptions::denominator_floor`).

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/masked_product.hpp"
#include "kernattn/engine/options.hpp"
#include "kernattn/engine/statistics_out.hpp"
#include "kernattn/features/feature_map.hpp"
#include "kernattn/magnitude/magnitude.hpp"

namespace kernattn::detail {

/// The log-scale of a key that counts for nothing (\f$e^{\ell} = 0\f$).
inline constexpr double log_of_zero = -std::numeric_limits<double>::infinity();

/// \f$e^{a - b}\f$, exactly 0 when \f$a = -\infty\f$.
[[nodiscard]] inline double exp_difference(double a, double b) {
  return a == -std::numeric_limits<double>::infinity() ? 0.0 : std::exp(a - b);
}

/// The sums over the keys seen so far, relative to their largest log-scale.
template <Real T>
struct LinearState {
  Matrix<T> weighted_values;           ///< \f$S\f$, D x d_v.
  Vector<T> feature_sum;               ///< \f$z\f$, D.
  double scale_sum = 0.0;              ///< \f$Z\f$.
  double log_reference = log_of_zero;  ///< \f$m\f$.
  /// A key summed so far poisons (see `first_poisoned_key`): every query that sees the state
  /// outputs NaN, and the sums are left as they are.
  bool poisoned = false;

  LinearState(Index features, Index value_dimension)
      : weighted_values(Matrix<T>::Zero(features, value_dimension)),
        feature_sum(Vector<T>::Zero(features)) {}

  /// Moves the reference to \f$\max(m, m')\f$, rescaling the sums.
  void raise_reference(double candidate) {
    if (!(candidate > log_reference)) return;
    const double rescale = exp_difference(log_reference, candidate);
    weighted_values *= T(rescale);
    feature_sum *= T(rescale);
    scale_sum *= rescale;
    log_reference = candidate;
  }
};

/// The scratch of one thread: features of a tile and their log-scales, kept from call to call
/// (a fresh tile of 256 x 512 floats would cost page faults every time).
template <Real T>
struct LinearScratch {
  Matrix<T> features;
  Eigen::VectorXd log_scales;
  Matrix<T> masked_values;
  Matrix<T> products;

  [[nodiscard]] static LinearScratch& of_this_thread() {
    thread_local LinearScratch scratch;
    return scratch;
  }
};

/// Scaled key features \f$\tilde\varphi(k_j)\f$ of a tile into `scratch.features` and
/// \f$\ell_j\f$ into `scratch.log_scales`; a key that `key_valid` rejects gets
/// \f$\ell_j = -\infty\f$ and a zero feature row.
template <features::FeatureMap Map, magnitude::Magnitude Magnitude, class Keys, class KeyValid>
void key_tile_features(const Map& map, const Magnitude& magnitude, const Keys& keys,
                       Index first_key, const KeyValid& key_valid,
                       LinearScratch<typename Map::Scalar>& scratch) {
  const Index count = keys.rows();
  scratch.log_scales.setZero(count);
  map.features(keys, scratch.features, scratch.log_scales);
  if constexpr (!Magnitude::is_unit)
    magnitude::add_log_magnitudes(magnitude, keys, scratch.log_scales);
  for (Index j = 0; j < count; ++j) {
    if (!key_valid(first_key + j)) {
      scratch.log_scales(j) = log_of_zero;
      scratch.features.row(j).setZero();
    }
  }
}

/// The first key of a tile (features and log-scales in `scratch`) that poisons, or the tile's
/// size when none does. A key poisons when its log-scale is NaN or \f$+\infty\f$ or one of its
/// features is not finite (it holds a NaN or an infinity): its weight is then NaN for every query,
/// so, as in the exact engine, every query that sees it outputs NaN. A rejected key never poisons
/// (its features are zero, its log-scale \f$-\infty\f$).
template <Real T>
[[nodiscard]] Index first_poisoned_key(const LinearScratch<T>& scratch) {
  const Index count = scratch.log_scales.size();
  const auto poisons = [&](Index j) {
    return !(scratch.log_scales(j) < std::numeric_limits<double>::infinity()) ||
           !scratch.features.row(j).allFinite();
  };
  if ((scratch.log_scales.array() < std::numeric_limits<double>::infinity()).all() &&
      scratch.features.allFinite())
    return count;
  for (Index j = 0; j < count; ++j)
    if (poisons(j)) return j;
  return count;
}

/// Adds the keys of a tile (features and log-scales in `scratch`) with their values to the
/// state: \f$S \mathrel{+}= \sum_j e^{\ell_j - m}\tilde\varphi(k_j) v_j^T\f$, and \f$z\f$, \f$Z\f$.
/// A rejected key contributes exactly nothing, even when its value is not finite; a key that
/// poisons (see `first_poisoned_key`) poisons the state.
template <Real T, class Values>
void add_keys_to_state(LinearScratch<T>& scratch, const Values& values, LinearState<T>& state) {
  const Index count = values.rows();
  if (count == 0 || state.poisoned) return;
  if (first_poisoned_key(scratch) < count) {
    state.poisoned = true;
    return;
  }
  state.raise_reference(scratch.log_scales.maxCoeff());
  if (state.log_reference == log_of_zero) return;
  bool any_rejected = false;
  Vector<T> weights(count);
  for (Index j = 0; j < count; ++j) {
    const double weight = exp_difference(scratch.log_scales(j), state.log_reference);
    any_rejected |= scratch.log_scales(j) == log_of_zero;
    state.scale_sum += weight;
    weights(j) = T(weight);
  }
  for (Index c = 0; c < scratch.features.cols(); ++c)
    scratch.features.col(c).array() *= weights.array();
  state.feature_sum.noalias() += scratch.features.colwise().sum().transpose();
  if (any_rejected) {
    scratch.masked_values = values;
    for (Index j = 0; j < count; ++j)
      if (scratch.log_scales(j) == log_of_zero) scratch.masked_values.row(j).setZero();
    state.weighted_values.noalias() += scratch.features.transpose() * scratch.masked_values;
  } else {
    state.weighted_values.noalias() += scratch.features.transpose() * values;
  }
}

/// Sums keys `[begin, end)` into the state, `tile` at a time, until one poisons it.
template <features::FeatureMap Map, magnitude::Magnitude Magnitude, class Keys, class Values,
          class KeyValid>
void consume_keys(const Map& map, const Magnitude& magnitude, const Keys& keys,
                  const Values& values, Index begin, Index end, const KeyValid& key_valid,
                  Index tile, LinearScratch<typename Map::Scalar>& scratch,
                  LinearState<typename Map::Scalar>& state) {
  for (Index first = begin; first < end && !state.poisoned; first += tile) {
    const Index count = std::min(tile, end - first);
    key_tile_features(map, magnitude, keys.middleRows(first, count), first, key_valid, scratch);
    add_keys_to_state(scratch, values.middleRows(first, count), state);
  }
}

/// Writes \f$out_i = n_i / \mathrm{guard}(den_i)\f$ for a block of rows: the numerators are
/// scaled column by column and the block is stored at once (row-by-row stores into a
/// column-major output of power-of-two height thrash the cache). Non-negative maps: a zero
/// denominator (no visible key, or every weight underflowed) gives zeros. A denominator so small
/// that its reciprocal overflows T is divided by in double instead. Signed maps: the
/// denominator is raised to \f$\tau Z_i\f$, and \f$Z_i = 0\f$ (no visible key) gives zeros.
/// A NaN denominator (the row sees a NaN or an infinity) with \f$Z_i \ne 0\f$ gives NaN.
template <bool NonNegative, Real T, class ScaleSums, class OutBlock>
void write_guarded_rows(Matrix<T>& numerators, const Vector<T>& denominators,
                        const ScaleSums& scale_sums, double floor, OutBlock&& out) {
  const Index rows = numerators.rows();
  Vector<T> inverse(rows);
  Eigen::VectorXd divide_by = Eigen::VectorXd::Zero(rows);  // rows whose 1/den leaves T's range
  bool any_special = false;
  for (Index i = 0; i < rows; ++i) {
    double denominator = double(denominators(i));
    const bool empty = scale_sums(i) == 0.0 || (NonNegative && denominator == 0.0);
    if constexpr (!NonNegative)
      if (!std::isnan(denominator)) denominator = std::max(denominator, floor * scale_sums(i));
    const T reciprocal = empty ? T(0) : T(1.0 / denominator);
    const bool tiny = !empty && std::isinf(reciprocal);
    inverse(i) = tiny ? T(1) : reciprocal;
    if (tiny) divide_by(i) = denominator;
    any_special |= empty || tiny;
  }
  for (Index c = 0; c < numerators.cols(); ++c) numerators.col(c).array() *= inverse.array();
  if (any_special)
    for (Index i = 0; i < rows; ++i) {
      if (inverse(i) == T(0)) numerators.row(i).setZero();
      if (divide_by(i) != 0.0)
        numerators.row(i) =
            (numerators.row(i).template cast<double>() / divide_by(i)).template cast<T>();
    }
  out = numerators;
}

/// Requires the output of sequence `b` and head `h` to be finite when its queries, keys and values
/// are: the estimated numerators and denominators of a signed feature map can make a ratio
/// beyond the largest T (the floor bounds the denominator, not the numerator), and such a call
/// throws rather than return an infinity. One pass over the output; the inputs are read only when
/// it fails.
template <class Queries, class Keys, class Values, class Out>
void require_finite_output(const Queries& queries, const Keys& keys, const Values& values,
                           const Out& out, Index b, Index h) {
  using T = typename Out::Scalar;
  if (out.allFinite() || !queries.allFinite() || !keys.allFinite() || !values.allFinite()) return;
  throw InvalidArgument(concat(
      "LinearAttention: sequence ", b, ", head ", h, " has finite Q, K and V but an output beyond ",
      ScalarTraits<T>::name,
      ": an estimated weighted sum over a denominator near its floor overflows (docs/numerics.md); "
      "raise LinearOptions::denominator_floor, scale V down",
      std::is_same_v<T, float> ? ", or compute in double" : ""));
}

/// Whether a call passes a segment of row statistics to write rather than `NoStatistics`.
template <class Statistics>
inline constexpr bool writes_statistics =
    !std::is_same_v<std::remove_cvref_t<Statistics>, NoStatistics>;

/// Non-causal queries of one tile (rows from `first_query` on) against a finished state; with
/// `statistics`, each row's signed denominator \f$\sum_j \tilde\varphi(q_i)\cdot\psi(k_j)\f$
/// before the guard (`checked_denominator`): 0 for a row that sees no key, NaN for one that sees
/// a key that poisons.
template <features::FeatureMap Map, class Queries, class OutTile, class Statistics>
void read_state(const Map& map, const Queries& queries, Index first_query,
                const LinearState<typename Map::Scalar>& state, double floor,
                LinearScratch<typename Map::Scalar>& scratch, OutTile&& out,
                Statistics&& statistics) {
  using T = typename Map::Scalar;
  if (state.poisoned) {
    out.setConstant(std::numeric_limits<T>::quiet_NaN());
    if constexpr (writes_statistics<Statistics>)
      statistics.setConstant(std::numeric_limits<T>::quiet_NaN());
    return;
  }
  if (state.scale_sum == 0.0) {
    out.setZero();
    if constexpr (writes_statistics<Statistics>) statistics.setZero();
    return;
  }
  scratch.log_scales.setZero(queries.rows());
  map.features(queries, scratch.features, scratch.log_scales);
  scratch.products.noalias() = scratch.features * state.weighted_values;
  const Vector<T> denominators = scratch.features * state.feature_sum;
  if constexpr (writes_statistics<Statistics>)
    for (Index i = 0; i < queries.rows(); ++i)
      statistics(i) = checked_denominator<T>("LinearAttention", double(denominators(i)),
                                             state.log_reference, first_query + i);
  write_guarded_rows<Map::non_negative>(scratch.products, denominators,
                                        Eigen::VectorXd::Constant(queries.rows(), state.scale_sum),
                                        floor, out);
}

/// One chunk of queries of the causal engine against the state before it and its own keys.
template <Real T>
struct CausalChunk {
  Matrix<T> query_features;          ///< \f$\tilde\varphi(q_i)\f$, rows x D.
  Eigen::VectorXd query_log_scales;  ///< Their log-scales (dropped: they cancel).
  Matrix<T> weights;                 ///< \f$p_{ic} = e^{\ell_c - r_i}\,\tilde\varphi(q_i)\cdot
                                     ///< \tilde\varphi(k_c)\f$, 0 for keys i does not see.
  Matrix<T> from_state;              ///< \f$e^{m - r_i}\,\tilde\varphi(q_i)^T S\f$.
  Vector<T> denominators;           ///< \f$e^{m - r_i}\tilde\varphi(q_i)\cdot z + \sum_c p_{ic}\f$.
  Eigen::VectorXd scale_sums;       ///< \f$Z_i\f$ relative to \f$r_i\f$.
  Eigen::VectorXd references;       ///< \f$r_i\f$.
  std::vector<Index> visible_keys;  ///< How many of the chunk's keys query i sees.
};

/// The key ranges of the causal chunk of queries `[first_query, first_query + rows)`: the state
/// takes in keys `[consumed, key_begin)` before it, its own keys are `[key_begin, key_end)`.
struct ChunkKeys {
  Index first_query = 0;
  Index rows = 0;
  Index consumed = 0;
  Index key_begin = 0;
  Index key_end = 0;
};

/// The chunks of a causal call (docs/math.md, section 5, "chunked"): query \f$i\f$ sees the
/// first \f$n_i\f$ = `visible_count(i)` keys, \f$n_i\f$ non-decreasing in \f$i\f$. Before chunk
/// \f$[i_0, i_1)\f$ the state takes in keys up to \f$b = \max(n_{i_0} - 1, 0)\f$ (exclusive), which
/// every query of the chunk sees; the chunk's keys are \f$[b, n_{i_1 - 1})\f$.
template <class VisibleCount>
[[nodiscard]] std::vector<ChunkKeys> causal_chunks(Index queries, Index chunk,
                                                   const VisibleCount& visible_count) {
  std::vector<ChunkKeys> chunks;
  Index in_state = 0;
  for (Index first_query = 0; first_query < queries; first_query += chunk) {
    const Index rows = std::min(chunk, queries - first_query);
    const Index key_begin = std::max(visible_count(first_query) - 1, in_state);
    const Index key_end = visible_count(first_query + rows - 1);
    chunks.push_back({first_query, rows, in_state, key_begin, key_end});
    in_state = key_end;
  }
  return chunks;
}

/// Evaluates a chunk of queries against the state before it and the chunk's keys (their
/// features and log-scales left in `scratch`): query \f$i\f$ takes the first \f$n_i - b\f$ of
/// the chunk's keys, relative to its own reference \f$r_i = \max(m, \max_{\text{visible chunk
/// keys}} \ell_j)\f$, so a later key, however large, never underflows an earlier one. A query that
/// sees a key that poisons (see `first_poisoned_key`), in the state or in its chunk, gets a NaN
/// denominator and scale sum.
template <features::FeatureMap Map, magnitude::Magnitude Magnitude, class Queries, class Keys,
          class VisibleCount, class KeyValid>
void evaluate_chunk(const Map& map, const Magnitude& magnitude, const Queries& queries,
                    const Keys& keys, const ChunkKeys& range, const VisibleCount& visible_count,
                    const KeyValid& key_valid, const LinearState<typename Map::Scalar>& state,
                    LinearScratch<typename Map::Scalar>& scratch,
                    CausalChunk<typename Map::Scalar>& chunk) {
  using T = typename Map::Scalar;
  const Index rows = range.rows;
  const Index chunk_keys = range.key_end - range.key_begin;
  chunk.query_log_scales.setZero(rows);
  map.features(queries.middleRows(range.first_query, rows), chunk.query_features,
               chunk.query_log_scales);
  key_tile_features(map, magnitude, keys.middleRows(range.key_begin, chunk_keys), range.key_begin,
                    key_valid, scratch);
  const Index first_poisoned = state.poisoned ? 0 : first_poisoned_key(scratch);

  chunk.weights.noalias() = chunk.query_features * scratch.features.transpose();
  chunk.from_state.noalias() = chunk.query_features * state.weighted_values;
  const Vector<T> denominator_from_state = chunk.query_features * state.feature_sum;
  chunk.denominators.resize(rows);
  chunk.scale_sums.resize(rows);
  chunk.references.resize(rows);
  chunk.visible_keys.assign(std::size_t(rows), 0);
  double prefix_max = log_of_zero;
  Index seen = 0;
  for (Index r = 0; r < rows; ++r) {
    const Index visible =
        std::clamp<Index>(visible_count(range.first_query + r) - range.key_begin, 0, chunk_keys);
    chunk.visible_keys[std::size_t(r)] = visible;
    if (state.poisoned || visible > first_poisoned) {
      // It sees a key that poisons (every query of the chunk sees the state's keys).
      chunk.denominators(r) = std::numeric_limits<T>::quiet_NaN();
      chunk.scale_sums(r) = std::numeric_limits<double>::quiet_NaN();
      chunk.references(r) = std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    for (; seen < visible; ++seen) prefix_max = std::max(prefix_max, scratch.log_scales(seen));
    const double reference = std::max(state.log_reference, prefix_max);
    double scale_sum = state.scale_sum * exp_difference(state.log_reference, reference);
    for (Index c = 0; c < chunk_keys; ++c) {
      const double factor = c < visible ? exp_difference(scratch.log_scales(c), reference) : 0.0;
      chunk.weights(r, c) = factor == 0.0 ? T(0) : chunk.weights(r, c) * T(factor);
      scale_sum += factor;
    }
    const T state_factor = T(exp_difference(state.log_reference, reference));
    chunk.from_state.row(r) *= state_factor;
    chunk.denominators(r) = denominator_from_state(r) * state_factor +
                            (chunk_keys > 0 ? chunk.weights.row(r).sum() : T(0));
    chunk.scale_sums(r) = scale_sum;
    chunk.references(r) = reference;
  }
}

/// Causal attention of one sequence and head, chunk after chunk (`causal_chunks`,
/// `evaluate_chunk`); `mask::Causal` gives \f$n_i = i + N_k - N_q + 1\f$, clamped to
/// \f$[0, N_k]\f$. Then the chunk's keys join the state. Each token's features are computed
/// once. A query that sees a key that poisons outputs NaN; the queries before that key are
/// untouched. With `statistics`, each row's signed denominator as in `read_state`.
template <features::FeatureMap Map, magnitude::Magnitude Magnitude, class Queries, class Keys,
          class Values, class VisibleCount, class KeyValid, class Out, class Statistics>
void attend_causal(const Map& map, const Magnitude& magnitude, const Queries& queries,
                   const Keys& keys, const Values& values, const VisibleCount& visible_count,
                   const KeyValid& key_valid, const LinearOptions& options, Out&& out,
                   Statistics&& statistics) {
  using T = typename Map::Scalar;
  const Index dv = values.cols();
  if (dv == 0) return;  // nothing to write (and no row of an empty matrix to form)
  LinearState<T> state(map.feature_dimension(), dv);
  LinearScratch<T>& scratch = LinearScratch<T>::of_this_thread();
  CausalChunk<T> chunk;
  for (const ChunkKeys& range :
       causal_chunks(queries.rows(), options.causal_chunk, visible_count)) {
    consume_keys(map, magnitude, keys, values, range.consumed, range.key_begin, key_valid,
                 options.key_tile, scratch, state);
    evaluate_chunk(map, magnitude, queries, keys, range, visible_count, key_valid, state, scratch,
                   chunk);
    if constexpr (writes_statistics<Statistics>)
      for (Index r = 0; r < range.rows; ++r)
        statistics(range.first_query + r) =
            chunk.scale_sums(r) == 0.0
                ? T(0)
                : checked_denominator<T>("LinearAttention", double(chunk.denominators(r)),
                                         chunk.references(r), range.first_query + r);
    const Index chunk_keys = range.key_end - range.key_begin;
    if (chunk_keys > 0) {
      auto chunk_values = values.middleRows(range.key_begin, chunk_keys);
      if (chunk_values.allFinite())
        chunk.from_state.noalias() += chunk.weights * chunk_values;
      else
        accumulate_nonfinite_values(
            chunk.weights, chunk_values,
            [&](Index r, Index c) {
              return c < chunk.visible_keys[std::size_t(r)] && key_valid(range.key_begin + c);
            },
            chunk.from_state);
    }
    write_guarded_rows<Map::non_negative>(chunk.from_state, chunk.denominators, chunk.scale_sums,
                                          options.denominator_floor,
                                          out.middleRows(range.first_query, range.rows));
    add_keys_to_state(scratch, values.middleRows(range.key_begin, chunk_keys), state);
  }
}

}  // namespace kernattn::detail
