#pragma once
/// \file
/// One query against all keys, key tile after key tile: the streaming engine's online softmax
/// with the tile's scores held as one contiguous row, so that the key terms, the mask, the
/// maximum, the exponentials and the sums run vectorised along the keys. A decoding step
/// (`KeyValueCache`) reads each key and value once at memory speed this way; the tile-of-queries
/// loop (`attend_query_tile`) vectorises along the queries, which one query cannot use.

#include <algorithm>
#include <cmath>

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/exact_engine.hpp"
#include "kernattn/engine/key_terms.hpp"
#include "kernattn/engine/key_tiles.hpp"
#include "kernattn/engine/log_weight_range.hpp"
#include "kernattn/engine/masked_product.hpp"
#include "kernattn/engine/prepare_keys.hpp"
#include "kernattn/engine/row_statistics.hpp"
#include "kernattn/engine/score_bias.hpp"
#include "kernattn/engine/scoring.hpp"
#include "kernattn/engine/tile_scratch.hpp"
#include "kernattn/kernels/kernel.hpp"
#include "kernattn/magnitude/magnitude.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn::detail {

/// Attends the query `query` (\f$1 \times d\f$, row `first_query` of a sequence) over all keys
/// and writes its output row and row statistic: the weights, running maximum \f$m\f$, sum
/// \f$\ell\f$ and accumulator \f$a\f$ of `attend_query_tile`, the same range checks and the same
/// rules for hidden and non-finite data (a hidden pair is overwritten before any arithmetic; a
/// partial tile whose values hold a NaN or an infinity takes `accumulate_nonfinite_values`).
/// Per key tile, with \f$x_j\f$ the tile's log-weights (exponential forms, the mask's score bias
/// included):
/// \f$m' = \max(m, \max_j x_j)\f$, \f$\ell \leftarrow e^{m - m'}\ell + \sum_j e^{x_j - m'}\f$,
/// \f$a \leftarrow e^{m - m'} a + \sum_j e^{x_j - m'} v_j\f$; out \f$= a / \ell\f$ (zeros when
/// \f$\ell = 0\f$).
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude, mask::BoundMask BoundMask,
          class Query, class Keys, class Values, class OutRow, class StatisticsTile>
void attend_single_query(const Kernel& kernel, const Query& query, Index first_query,
                         const Keys& keys, const Values& values,
                         const KeyTerms<typename Kernel::Scalar>& terms,
                         const BoundMask& visibility, Index key_tile, OutRow&& out,
                         StatisticsTile&& statistics) {
  using T = typename Kernel::Scalar;
  using Row = Eigen::Array<T, 1, Eigen::Dynamic>;
  constexpr T minus_infinity = ScalarTraits<T>::negative_infinity;
  using Form = Scoring<Kernel>;
  constexpr bool exponential = Form::exponential;
  constexpr bool add_key_bias = has_key_bias<Kernel, Magnitude>();
  const Index key_count = keys.rows();

  TileScratch<T>& scratch = TileScratch<T>::of_this_thread();
  auto scores = TileScratch<T>::matrix_over(scratch.scores, 1, std::min(key_tile, key_count));
  auto accumulated = TileScratch<T>::matrix_over(scratch.accumulated, 1, values.cols());
  accumulated.setZero();
  Form::prepare_tile(kernel, query, scratch);
  const LogWeightRange<T> range = LogWeightRange<T>::of(kernel, query.cols());
  range.norms(query, scratch.query_norms);

  T running_sum = 0;
  T running_max = minus_infinity;
  // As `attend_query_tile`'s: moves the maximum, rescales the sums, returns the reference.
  const auto advance_running_max = [&](T tile_max) {
    const T new_max = std::max(running_max, tile_max);
    const T reference = new_max == minus_infinity ? T(0) : new_max;
    const T rescale = running_max == minus_infinity ? T(0) : std::exp(running_max - reference);
    running_sum *= rescale;
    accumulated *= rescale;
    running_max = new_max;
    return reference;
  };

  for_each_key_tile<T>(
      visibility, first_query, 1, key_count, key_tile, range, scratch.query_norms, terms,
      [&](Index first_key, Index tile_keys, bool partial, const auto& visible) {
        auto tile = scores.leftCols(tile_keys);
        Form::score_tile(kernel, query, scratch, keys.middleRows(first_key, tile_keys), terms,
                         first_key, tile);
        Eigen::Map<Row> weights(tile.data(), tile_keys);
        const auto hide_invisible = [&](T value) {
          for (Index j = 0; j < tile_keys; ++j)
            if (!visible(0, j)) weights(j) = value;
        };
        if constexpr (add_key_bias) {
          const auto bias = terms.key_bias.segment(first_key, tile_keys).transpose().array();
          if constexpr (exponential) {
            weights += bias;
          } else {
            T tile_max = minus_infinity;
            for (Index j = 0; j < tile_keys; ++j)
              if (!partial || visible(0, j)) tile_max = std::max(tile_max, bias(j));
            weights *= (bias - advance_running_max(tile_max)).exp();
          }
        }
        if constexpr (exponential) {
          add_score_bias(visibility, first_query, first_key, weights);
          if (partial) hide_invisible(minus_infinity);
          const T reference = advance_running_max(weights.maxCoeff());
          // Eigen's vectorised exp(-inf) is a tiny positive number: a tile holding a -inf sets
          // those weights to 0 after the exp (only such tiles pay for the select). The probe
          // \f$\sum_j 0 \cdot x_j\f$ is 0 exactly when every \f$x_j\f$ is finite, and it
          // vectorises.
          if ((weights * T(0)).sum() == T(0)) {
            weights = (weights - reference).exp();
          } else {
            auto& minus_infinite = scratch.minus_infinite;
            minus_infinite = (weights == minus_infinity).transpose();
            weights = (weights - reference).exp();
            weights = minus_infinite.transpose().select(T(0), weights);
          }
        } else if (partial) {
          hide_invisible(T(0));
        }
        running_sum += weights.sum();
        const auto value_rows = values.middleRows(first_key, tile_keys);
        if (partial && terms.has_nonfinite_values(first_key, first_key + tile_keys))
          accumulate_nonfinite_values(tile, value_rows, visible, accumulated);
        else
          accumulated.noalias() += tile * value_rows;
      });

  if (running_sum == T(0))
    out.setZero();
  else
    out = accumulated / running_sum;
  require_finite_rows(query, first_query, keys, values, visibility, out);
  if constexpr (!std::is_same_v<std::remove_cvref_t<StatisticsTile>, NoStatistics>)
    write_row_statistics(kernel, query, first_query, scratch, Eigen::Array<T, 1, 1>(running_max),
                         Eigen::Array<T, 1, 1>(running_sum), statistics);
}

}  // namespace kernattn::detail
