#pragma once
/// \file
/// The backward pass of the linear engine (docs/gradients.md, "Linear attention"). With
/// \f$a_i = \tilde\varphi(q_i)\f$, key features \f$\psi_j = \tilde\varphi(k_j)\,e^{\ell_j}\f$ and
/// the output \f$o_i = a_i^T S_i / den_i\f$, \f$den_i = a_i\cdot z_i\f$ (or \f$\tau Z_i\f$ when the
/// floor holds): \f[ dn_i = dO_i / den_i,\quad dden_i = -(dO_i\cdot o_i)/den_i,\quad
///     da_i = S_i\, dn_i + z_i\, dden_i, \f]
/// and key \f$j\f$ collects \f$\partial\ell/\partial\psi_j = \sum_{i \ni j} a_i\,(dn_i\cdot v_j +
/// dden_i)\f$ and \f$dv_j = \sum_{i\ni j} (a_i\cdot\psi_j)\,dn_i\f$ from the queries that see it:
/// the adjoint state \f$dS = \sum_i a_i\,dn_i^T\f$, \f$dz = \sum_i a_i\,dden_i\f$, summed over the
/// queries after a key (causal) or over all (otherwise). Then \f$\partial\ell/\partial\ell_j =
/// \tilde\varphi(k_j)\cdot\partial\ell/\partial\tilde\varphi(k_j)\f$ (plus the floor's \f$Z\f$
/// term), and the feature map's and the magnitude's derivatives carry both to \f$dk_j\f$.
///
/// Everything stays relative, as in the forward: a query's terms are relative to its reference
/// \f$r_i\f$, the adjoint state to \f$\rho = \min r_i\f$ over the queries summed into it, a key's
/// factor is \f$e^{\ell_j - \rho} \le 1\f$ (every query that sees key j has \f$r_i \ge \ell_j\f$).

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>
#include <vector>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/linear_engine.hpp"
#include "kernattn/engine/options.hpp"
#include "kernattn/features/feature_map.hpp"
#include "kernattn/magnitude/magnitude.hpp"

namespace kernattn::detail {

/// The adjoints of a block of query rows: \f$dn_i\f$, the part of \f$dden_i\f$ that reaches the
/// weights, and the part that reaches \f$Z_i\f$ when the floor \f$\tau Z_i\f$ holds (signed maps).
/// A row whose output the guard makes zero (no visible key, or a zero denominator) has none.
template <Real T>
struct RowAdjoints {
  Matrix<T> outputs;           ///< \f$dn\f$, rows x d_v.
  Vector<T> denominators;      ///< \f$dden\f$ where no floor holds, else 0.
  Eigen::VectorXd scale_sums;  ///< \f$\tau\, dden\f$ where the floor holds, else 0.

  /// From \f$dO\f$ and \f$o\f$ of the rows, their denominators and scale sums, as
  /// `write_guarded_rows<NonNegative>` used them.
  template <bool NonNegative, class OutGradient, class Out, class ScaleSums>
  void compute(const OutGradient& out_gradient, const Out& out, const Vector<T>& denominator,
               const ScaleSums& scale_sum, double floor) {
    const Index rows = out_gradient.rows();
    Eigen::VectorXd projections = Eigen::VectorXd::Zero(rows);  // dO_i . o_i, column by column
    for (Index c = 0; c < out.cols(); ++c)
      projections += out_gradient.col(c).template cast<double>().cwiseProduct(
          out.col(c).template cast<double>());
    Vector<T> inverses(rows);
    Eigen::VectorXd divide_by = Eigen::VectorXd::Zero(rows);  // rows whose 1/den leaves T's range
    denominators.resize(rows);
    scale_sums.resize(rows);
    for (Index i = 0; i < rows; ++i) {
      double den = double(denominator(i));
      const bool empty = scale_sum(i) == 0.0 || (NonNegative && den == 0.0);
      bool floored = false;
      if constexpr (!NonNegative) {
        floored = den < floor * scale_sum(i);
        if (floored) den = floor * scale_sum(i);
      }
      const double inverse = empty ? 0.0 : 1.0 / den;
      const double adjoint = -inverse * projections(i);
      inverses(i) = T(inverse);
      if (std::isinf(inverses(i))) {
        inverses(i) = T(0);
        divide_by(i) = den;
      }
      denominators(i) = floored ? T(0) : T(adjoint);
      scale_sums(i) = floored ? floor * adjoint : 0.0;
    }
    outputs = inverses.asDiagonal() * out_gradient;
    for (Index i = 0; i < rows; ++i)
      if (divide_by(i) != 0.0)
        outputs.row(i) =
            (out_gradient.row(i).template cast<double>() / divide_by(i)).template cast<T>();
  }
};

/// The adjoint state \f$dS\f$, \f$dz\f$ and \f$dZ\f$ of the queries summed so far, relative to
/// \f$\rho\f$: \f$dS = \sum_i e^{\rho - r_i} a_i\,dn_i^T\f$ (\f$\rho = +\infty\f$ before any).
template <Real T>
struct AdjointState {
  Matrix<T> weighted_values;  ///< \f$dS\f$, D x d_v.
  Vector<T> feature_sum;      ///< \f$dz\f$, D.
  double scale_sum = 0.0;     ///< \f$dZ\f$.
  double reference = std::numeric_limits<double>::infinity();

  AdjointState(Index features, Index value_dimension)
      : weighted_values(Matrix<T>::Zero(features, value_dimension)),
        feature_sum(Vector<T>::Zero(features)) {}

  /// Adds rows with features `query_features`, adjoints `adjoints` and references `references`;
  /// a row that sees no key (reference \f$-\infty\f$, zero adjoints) adds nothing.
  template <class References>
  void add(const Matrix<T>& query_features, const RowAdjoints<T>& adjoints,
           const References& references) {
    const Index rows = query_features.rows();
    double lowest = reference;
    for (Index i = 0; i < rows; ++i)
      if (references(i) != log_of_zero) lowest = std::min(lowest, references(i));
    if (lowest == std::numeric_limits<double>::infinity()) return;
    if (lowest < reference) {
      const double rescale =
          reference == std::numeric_limits<double>::infinity() ? 0.0 : std::exp(lowest - reference);
      weighted_values *= T(rescale);
      feature_sum *= T(rescale);
      scale_sum *= rescale;
      reference = lowest;
    }
    Vector<T> factors(rows);
    for (Index i = 0; i < rows; ++i) {
      factors(i) = references(i) == log_of_zero ? T(0) : T(std::exp(reference - references(i)));
      scale_sum += double(factors(i)) * adjoints.scale_sums(i);
    }
    const Matrix<T> scaled_outputs = factors.asDiagonal() * adjoints.outputs;
    weighted_values.noalias() += query_features.transpose() * scaled_outputs;
    feature_sum.noalias() +=
        query_features.transpose() * factors.cwiseProduct(adjoints.denominators);
  }
};

/// The scratch of a key block's gradients: \f$\partial\ell/\partial\tilde\varphi(k_j)\f$, the
/// \f$Z\f$ terms of \f$\partial\ell/\partial\ell_j\f$, and the feature map's output.
template <Real T>
struct KeyAdjoints {
  Matrix<T> features;
  Eigen::VectorXd scale_terms;
  Matrix<T> inputs;
  Matrix<T> through_values;  ///< \f$V\,dS^T\f$ of the block
};

/// The scratch of one thread's backward calls, kept from call to call like `LinearScratch` (fresh
/// tiles of 256 x 256 floats would cost page faults every time); under a causal filter it also
/// keeps the states before each chunk.
template <Real T>
struct LinearBackwardScratch {
  RowAdjoints<T> rows;
  KeyAdjoints<T> keys;
  CausalChunk<T> chunk;
  Matrix<T> query_features;
  Matrix<T> feature_adjoints;
  Matrix<T> pair_adjoints;
  Matrix<T> inputs;
  std::vector<LinearState<T>> states;

  [[nodiscard]] static LinearBackwardScratch& of_this_thread() {
    thread_local LinearBackwardScratch scratch;
    return scratch;
  }
};

/// Adds the adjoint state's share to the keys of a block (features \f$\tilde\varphi\f$ and
/// log-scales \f$\ell\f$): \f$\partial\ell/\partial\tilde\varphi_j \mathrel{+}= e^{\ell_j - \rho}
/// (dS\,v_j + dz)\f$, \f$dv_j \mathrel{+}= e^{\ell_j - \rho}\,dS^T\tilde\varphi_j\f$, and
/// \f$e^{\ell_j - \rho}\, dZ\f$ to the \f$Z\f$ terms.
template <Real T, class Values, class ValueGradient>
void add_adjoint_state_to_keys(const AdjointState<T>& adjoint, const Matrix<T>& key_features,
                               const Eigen::VectorXd& log_scales, const Values& values,
                               KeyAdjoints<T>& keys, ValueGradient&& value_gradient) {
  if (adjoint.reference == std::numeric_limits<double>::infinity()) return;
  const Index count = key_features.rows();
  Vector<T> factors(count);
  for (Index j = 0; j < count; ++j) {
    const double factor = exp_difference(log_scales(j), adjoint.reference);
    factors(j) = T(factor);
    keys.scale_terms(j) += factor * adjoint.scale_sum;
  }
  keys.through_values.noalias() = values * adjoint.weighted_values.transpose();
  keys.through_values.rowwise() += adjoint.feature_sum.transpose();
  keys.features.noalias() += factors.asDiagonal() * keys.through_values;
  value_gradient.noalias() += factors.asDiagonal() * (key_features * adjoint.weighted_values);
}

/// Carries the adjoints of a block of keys to dK: \f$\partial\ell/\partial\ell_j =
/// \tilde\varphi_j\cdot\partial\ell/\partial\tilde\varphi_j + (Z\ \text{terms})\f$ is the
/// log-scale adjoint of the feature map and the factor of \f$\nabla\log\mu(k_j)\f$. Keys that
/// `key_valid` rejects get zero rows in dK and dV. With `d_frequencies`, the keys' share of the
/// frequencies' gradient is added to it, the rejected keys (which may hold anything) left out.
template <features::DifferentiableFeatureMap Map, magnitude::DifferentiableMagnitude Magnitude,
          class Keys, class KeyValid, class KeyGradient, class ValueGradient>
void finish_key_gradients(const Map& map, const Magnitude& magnitude, const Keys& keys,
                          Index first_key, const KeyValid& key_valid,
                          const Matrix<typename Map::Scalar>& key_features,
                          KeyAdjoints<typename Map::Scalar>& adjoints, KeyGradient&& key_gradient,
                          ValueGradient&& value_gradient,
                          Matrix<typename Map::Scalar>* d_frequencies = nullptr) {
  using T = typename Map::Scalar;
  const Index count = keys.rows();
  Vector<T> products = Vector<T>::Zero(count);  // phi~_j . d phi~_j, column by column
  for (Index c = 0; c < key_features.cols(); ++c)
    products += key_features.col(c).cwiseProduct(adjoints.features.col(c));
  Eigen::VectorXd log_scale_adjoints = adjoints.scale_terms + products.template cast<double>();
  bool all_valid = true;
  for (Index j = 0; j < count; ++j) all_valid = all_valid && key_valid(first_key + j);
  if (d_frequencies == nullptr || all_valid) {
    features::feature_gradient_of(map, keys, key_features, adjoints.features, log_scale_adjoints,
                                  adjoints.inputs, d_frequencies);
  } else {
    // The rejected keys' rows zeroed, so that nothing they hold reaches the frequencies.
    Matrix<T> valid_keys = keys;
    for (Index j = 0; j < count; ++j)
      if (!key_valid(first_key + j)) {
        valid_keys.row(j).setZero();
        adjoints.features.row(j).setZero();
        log_scale_adjoints(j) = 0.0;
      }
    features::feature_gradient_of(map, valid_keys, key_features, adjoints.features,
                                  log_scale_adjoints, adjoints.inputs, d_frequencies);
  }
  for (Index j = 0; j < count; ++j) {
    if (!key_valid(first_key + j)) {
      adjoints.inputs.row(j).setZero();
      value_gradient.row(j).setZero();
    } else if constexpr (!Magnitude::is_unit) {
      adjoints.inputs.row(j) +=
          (log_scale_adjoints(j) * magnitude.log_magnitude_gradient(keys.row(j)))
              .template cast<T>();
    }
  }
  key_gradient = adjoints.inputs;
}

/// Keys `[begin, end)` that only the adjoint state reaches, `tile` at a time.
template <class Map, class Magnitude, class Keys, class Values, class KeyValid, class KeyGradient,
          class ValueGradient>
void state_key_gradients(const Map& map, const Magnitude& magnitude, const Keys& keys,
                         const Values& values, Index begin, Index end, const KeyValid& key_valid,
                         Index tile, const AdjointState<typename Map::Scalar>& adjoint,
                         LinearScratch<typename Map::Scalar>& scratch,
                         KeyAdjoints<typename Map::Scalar>& adjoints, KeyGradient& key_gradient,
                         ValueGradient& value_gradient,
                         Matrix<typename Map::Scalar>* d_frequencies = nullptr) {
  for (Index first = begin; first < end; first += tile) {
    const Index count = std::min(tile, end - first);
    key_tile_features(map, magnitude, keys.middleRows(first, count), first, key_valid, scratch);
    adjoints.features.setZero(count, scratch.features.cols());
    adjoints.scale_terms.setZero(count);
    auto value_rows = value_gradient.middleRows(first, count);
    value_rows.setZero();
    add_adjoint_state_to_keys(adjoint, scratch.features, scratch.log_scales,
                              values.middleRows(first, count), adjoints, value_rows);
    finish_key_gradients(map, magnitude, keys.middleRows(first, count), first, key_valid,
                         scratch.features, adjoints, key_gradient.middleRows(first, count),
                         value_rows, d_frequencies);
  }
}

/// Sums keys into a state chunk by chunk (`ChunkKeys`), keeping in `states[c]` the state before
/// chunk c's own keys: one D x d_v state per chunk.
template <features::FeatureMap Map, magnitude::Magnitude Magnitude, class Keys, class Values,
          class KeyValid>
void keep_states_before_chunks(const Map& map, const Magnitude& magnitude, const Keys& keys,
                               const Values& values, const std::vector<ChunkKeys>& chunks,
                               const KeyValid& key_valid, Index tile,
                               LinearScratch<typename Map::Scalar>& scratch,
                               std::vector<LinearState<typename Map::Scalar>>& states) {
  using T = typename Map::Scalar;
  LinearState<T> state(map.feature_dimension(), values.cols());
  states.resize(chunks.size(), state);
  for (std::size_t c = 0; c < chunks.size(); ++c) {
    const ChunkKeys& range = chunks[c];
    consume_keys(map, magnitude, keys, values, range.consumed, range.key_begin, key_valid, tile,
                 scratch, state);
    states[c] = state;
    consume_keys(map, magnitude, keys, values, range.key_begin, range.key_end, key_valid, tile,
                 scratch, state);
  }
}

/// The adjoints of a chunk's query features through the state before it, into
/// `feature_adjoints`: \f$da_i = e^{m - r_i}(S\,dn_i + z\,dden_i)\f$.
template <Real T>
void state_feature_adjoints(const LinearState<T>& before, const Eigen::VectorXd& references,
                            const RowAdjoints<T>& rows, Matrix<T>& feature_adjoints) {
  const Index count = references.size();
  Vector<T> state_factors(count);
  for (Index r = 0; r < count; ++r)
    state_factors(r) = T(exp_difference(before.log_reference, references(r)));
  feature_adjoints.noalias() = rows.outputs * before.weighted_values.transpose();
  feature_adjoints.noalias() += rows.denominators * before.feature_sum.transpose();
  feature_adjoints = state_factors.asDiagonal() * feature_adjoints;
}

/// The pairs of a chunk's queries and its keys (features and log-scales in `scratch`, values
/// `chunk_values`): with \f$dp_{ic} = dn_i\cdot v_c + dden_i\f$, the adjoint of
/// \f$a_i\cdot\tilde\varphi_c\f$ is \f$e^{\ell_c - r_i}\,dp_{ic}\f$ for the keys i sees. Adds
/// their share to the queries' `feature_adjoints`; writes the keys' adjoints (features and
/// \f$Z\f$ terms) into `keys` and \f$dv_c = \sum_i p_{ic}\,dn_i\f$ into `value_gradient`.
template <Real T, class Values, class ValueGradient>
void chunk_pair_adjoints(const CausalChunk<T>& chunk, const LinearScratch<T>& scratch,
                         const RowAdjoints<T>& rows, const Values& chunk_values,
                         Matrix<T>& pair_adjoints, Matrix<T>& feature_adjoints,
                         KeyAdjoints<T>& keys, ValueGradient&& value_gradient) {
  const Index count = chunk.query_features.rows();
  const Index chunk_keys = chunk_values.rows();
  keys.features.setZero(chunk_keys, chunk.query_features.cols());
  keys.scale_terms.setZero(chunk_keys);
  if (chunk_keys == 0) return;
  pair_adjoints.noalias() = rows.outputs * chunk_values.transpose();
  for (Index r = 0; r < count; ++r) {
    const Index visible = chunk.visible_keys[std::size_t(r)];
    for (Index k = 0; k < chunk_keys; ++k) {
      const double factor =
          k < visible ? exp_difference(scratch.log_scales(k), chunk.references(r)) : 0.0;
      pair_adjoints(r, k) =
          factor == 0.0 ? T(0) : T(factor) * (pair_adjoints(r, k) + rows.denominators(r));
      keys.scale_terms(k) += factor * rows.scale_sums(r);
    }
  }
  feature_adjoints.noalias() += pair_adjoints * scratch.features;
  keys.features.noalias() += pair_adjoints.transpose() * chunk.query_features;
  value_gradient.noalias() = chunk.weights.transpose() * rows.outputs;
}

/// Requires the data of a backward call of sequence `b`, head `h` to be finite where it counts:
/// every query, output and output gradient, and the keys and values that are not padding
/// (`key_valid`). The message begins with `caller`.
template <class Queries, class Keys, class Values, class Out, class OutGradient, class KeyValid>
void require_finite_backward_inputs(const Queries& queries, const Keys& keys, const Values& values,
                                    const Out& out, const OutGradient& out_gradient,
                                    const KeyValid& key_valid, Index b, Index h,
                                    std::string_view caller = "LinearAttention::backward") {
  const auto fail = [&](std::string_view what) {
    throw InvalidArgument(concat(caller, ": sequence ", b, ", head ", h, ": ", what,
                                 " must be finite (the linear engine's gradients are defined for "
                                 "finite data; padded keys and values may be anything)"));
  };
  if (!queries.allFinite()) fail("Q");
  if (!out.allFinite()) fail("out");
  if (!out_gradient.allFinite()) fail("dOut");
  if (keys.allFinite() && values.allFinite()) return;
  for (Index j = 0; j < keys.rows(); ++j) {
    if (!key_valid(j)) continue;
    if (!keys.row(j).allFinite()) fail(concat("K (key ", j, ")"));
    if (!values.row(j).allFinite()) fail(concat("V (key ", j, ")"));
  }
}

/// The backward pass of one sequence and head under a filter that does not depend on the query:
/// the state over every key, the queries' adjoints tile by tile into dQ and the adjoint state,
/// then the keys.
template <features::DifferentiableFeatureMap Map, magnitude::DifferentiableMagnitude Magnitude,
          class Queries, class Keys, class Values, class Out, class OutGradient, class KeyValid,
          class QueryGradient, class KeyGradient, class ValueGradient>
void attend_backward_noncausal(const Map& map, const Magnitude& magnitude, const Queries& queries,
                               const Keys& keys, const Values& values, const Out& out,
                               const OutGradient& out_gradient, const KeyValid& key_valid,
                               const LinearOptions& options, QueryGradient&& query_gradient,
                               KeyGradient&& key_gradient, ValueGradient&& value_gradient,
                               Matrix<typename Map::Scalar>* d_frequencies = nullptr) {
  using T = typename Map::Scalar;
  const Index nq = queries.rows();
  const Index nk = keys.rows();
  const Index dv = values.cols();
  LinearScratch<T>& scratch = LinearScratch<T>::of_this_thread();
  LinearState<T> state(map.feature_dimension(), dv);
  consume_keys(map, magnitude, keys, values, 0, nk, key_valid, options.key_tile, scratch, state);

  AdjointState<T> adjoint(map.feature_dimension(), dv);
  LinearBackwardScratch<T>& work = LinearBackwardScratch<T>::of_this_thread();
  RowAdjoints<T>& rows_adjoints = work.rows;
  Matrix<T>& query_features = work.query_features;
  Matrix<T>& feature_adjoints = work.feature_adjoints;
  for (Index first = 0; first < nq; first += options.query_tile) {
    const Index rows = std::min(options.query_tile, nq - first);
    const auto tile = queries.middleRows(first, rows);
    Eigen::VectorXd log_scales = Eigen::VectorXd::Zero(rows);
    map.features(tile, query_features, log_scales);
    const Vector<T> denominators = query_features * state.feature_sum;
    rows_adjoints.template compute<Map::non_negative>(
        out_gradient.middleRows(first, rows), out.middleRows(first, rows), denominators,
        Eigen::VectorXd::Constant(rows, state.scale_sum), options.denominator_floor);
    feature_adjoints.noalias() = rows_adjoints.outputs * state.weighted_values.transpose();
    feature_adjoints.noalias() += rows_adjoints.denominators * state.feature_sum.transpose();
    features::feature_gradient_of(map, tile, query_features, feature_adjoints,
                                  Eigen::VectorXd::Zero(rows), work.inputs, d_frequencies);
    query_gradient.middleRows(first, rows) = work.inputs;
    adjoint.add(query_features, rows_adjoints,
                Eigen::VectorXd::Constant(rows, state.log_reference));
  }
  state_key_gradients(map, magnitude, keys, values, 0, nk, key_valid, options.key_tile, adjoint,
                      scratch, work.keys, key_gradient, value_gradient, d_frequencies);
}

/// The backward pass of one causal sequence and head: the forward's chunks (`causal_chunks`) with
/// the state before each kept, then the chunks in reverse. Chunk c's queries take their adjoints
/// through the state before them and their own keys; its keys collect the within-chunk part and
/// the adjoint state of the later chunks; then the chunk's queries join the adjoint state, which
/// reaches the keys the state took in just before the chunk. Keys no query sees get zero
/// gradients. Memory: one state (D x d_v) per chunk.
template <features::DifferentiableFeatureMap Map, magnitude::DifferentiableMagnitude Magnitude,
          class Queries, class Keys, class Values, class Out, class OutGradient, class VisibleCount,
          class KeyValid, class QueryGradient, class KeyGradient, class ValueGradient>
void attend_backward_causal(const Map& map, const Magnitude& magnitude, const Queries& queries,
                            const Keys& keys, const Values& values, const Out& out,
                            const OutGradient& out_gradient, const VisibleCount& visible_count,
                            const KeyValid& key_valid, const LinearOptions& options,
                            QueryGradient&& query_gradient, KeyGradient&& key_gradient,
                            ValueGradient&& value_gradient,
                            Matrix<typename Map::Scalar>* d_frequencies = nullptr) {
  using T = typename Map::Scalar;
  const Index dv = values.cols();
  const Index features = map.feature_dimension();
  LinearScratch<T>& scratch = LinearScratch<T>::of_this_thread();
  const std::vector<ChunkKeys> chunks =
      causal_chunks(queries.rows(), options.causal_chunk, visible_count);
  LinearBackwardScratch<T>& work = LinearBackwardScratch<T>::of_this_thread();
  std::vector<LinearState<T>>& states = work.states;
  keep_states_before_chunks(map, magnitude, keys, values, chunks, key_valid, options.key_tile,
                            scratch, states);
  const Index last_seen = chunks.empty() ? 0 : chunks.back().key_end;
  key_gradient.middleRows(last_seen, keys.rows() - last_seen).setZero();
  value_gradient.middleRows(last_seen, keys.rows() - last_seen).setZero();

  AdjointState<T> adjoint(features, dv);
  RowAdjoints<T>& rows_adjoints = work.rows;
  CausalChunk<T>& chunk = work.chunk;
  KeyAdjoints<T>& key_adjoints = work.keys;
  Matrix<T>& feature_adjoints = work.feature_adjoints;
  for (std::size_t c = chunks.size(); c-- > 0;) {
    const ChunkKeys& range = chunks[c];
    const LinearState<T>& before = states[c];
    evaluate_chunk(map, magnitude, queries, keys, range, visible_count, key_valid, before, scratch,
                   chunk);
    const Index rows = range.rows;
    const Index chunk_keys = range.key_end - range.key_begin;
    rows_adjoints.template compute<Map::non_negative>(
        out_gradient.middleRows(range.first_query, rows), out.middleRows(range.first_query, rows),
        chunk.denominators, chunk.scale_sums, options.denominator_floor);

    state_feature_adjoints(before, chunk.references, rows_adjoints, feature_adjoints);
    const auto chunk_values = values.middleRows(range.key_begin, chunk_keys);
    auto chunk_value_gradient = value_gradient.middleRows(range.key_begin, chunk_keys);
    chunk_pair_adjoints(chunk, scratch, rows_adjoints, chunk_values, work.pair_adjoints,
                        feature_adjoints, key_adjoints, chunk_value_gradient);
    features::feature_gradient_of(map, queries.middleRows(range.first_query, rows),
                                  chunk.query_features, feature_adjoints,
                                  Eigen::VectorXd::Zero(rows), work.inputs, d_frequencies);
    query_gradient.middleRows(range.first_query, rows) = work.inputs;

    // The chunk's keys: the later chunks' share, then dK.
    if (chunk_keys > 0) {
      add_adjoint_state_to_keys(adjoint, scratch.features, scratch.log_scales, chunk_values,
                                key_adjoints, chunk_value_gradient);
      finish_key_gradients(map, magnitude, keys.middleRows(range.key_begin, chunk_keys),
                           range.key_begin, key_valid, scratch.features, key_adjoints,
                           key_gradient.middleRows(range.key_begin, chunk_keys),
                           chunk_value_gradient, d_frequencies);
    }
    adjoint.add(chunk.query_features, rows_adjoints, chunk.references);
    state_key_gradients(map, magnitude, keys, values, range.consumed, range.key_begin, key_valid,
                        options.key_tile, adjoint, scratch, key_adjoints, key_gradient,
                        value_gradient, d_frequencies);
  }
}

}  // namespace kernattn::detail
