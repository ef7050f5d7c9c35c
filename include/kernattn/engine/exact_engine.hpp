#pragma once
/// \file
/// The streaming exact engine: one query tile against all keys, key tile after key tile, with an
/// online softmax (running maximum and sum). No \f$N_q \times N_k\f$ matrix exists anywhere: the
/// scratch memory is one query tile x key tile of scores plus the tile's accumulators. How a
/// tile is scored is the kernel form's (`Scoring`).

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/block_path.hpp"
#include "kernattn/engine/front_end.hpp"
#include "kernattn/engine/key_terms.hpp"
#include "kernattn/engine/key_tiles.hpp"
#include "kernattn/engine/log_weight_range.hpp"
#include "kernattn/engine/masked_product.hpp"
#include "kernattn/engine/options.hpp"
#include "kernattn/engine/prepare_keys.hpp"
#include "kernattn/engine/row_statistics.hpp"
#include "kernattn/engine/score_bias.hpp"
#include "kernattn/engine/scoring.hpp"
#include "kernattn/engine/tile_scratch.hpp"
#include "kernattn/kernels/kernel.hpp"
#include "kernattn/magnitude/magnitude.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn::detail {

/// Requires every output row of a tile of queries (rows [first_query, first_query +
/// queries.rows()) of a sequence) to be finite when the query and every key and value it sees
/// are. The range checks keep log-weights finite, but a direct kernel holds its weights and their
/// sums in T without rescaling (`kernels::DirectForm`), and any kernel's weighted sums of values
/// near the largest T can overflow: such a row throws rather than return a silent NaN or
/// infinity. One pass over the tile's output; the keys are read only for a row that fails it.
template <class Queries, class Keys, class Values, mask::BoundMask BoundMask, class OutTile>
void require_finite_rows(const Queries& queries, Index first_query, const Keys& keys,
                         const Values& values, const BoundMask& visibility, const OutTile& out) {
  using T = typename Queries::Scalar;
  if (out.allFinite()) return;
  for (Index i = 0; i < out.rows(); ++i) {
    if (out.row(i).allFinite() || !queries.row(i).allFinite()) continue;
    bool sees_nonfinite = false;
    for (Index j = 0; j < keys.rows() && !sees_nonfinite; ++j)
      sees_nonfinite = visibility.visible(first_query + i, j) &&
                       !(keys.row(j).allFinite() && values.row(j).allFinite());
    require(sees_nonfinite, "Attention: query ", first_query + i,
            " and every key and value it sees are finite, but its weights or weighted sum of "
            "values overflow ",
            ScalarTraits<T>::name,
            " (a direct kernel holds its weights without rescaling; docs/numerics.md): scale Q "
            "and K or V down",
            std::is_same_v<T, float> ? ", compute in double" : "", ", or use a log-domain kernel");
  }
}

/// Attends one tile of queries (rows [first_query, first_query + queries.rows()) of a sequence)
/// over all keys and writes the tile's output rows.
///
/// Every weight is kept relative to a running per-row maximum \f$m_i\f$ of its log-scale:
///  - exponential forms: \f$w_{ij} = e^{x_{ij}}\f$ with \f$x_{ij} = \log\kappa(q_i,k_j) + g(k_j) +
///    \log\mu(k_j) + b(i, j)\f$ (b the mask's score bias, if it has one: `add_score_bias`),
///    stored as \f$e^{x_{ij} - m_i}\f$ with \f$m_i = \max_j x_{ij}\f$;
///  - direct form: \f$w_{ij} = \kappa(q_i,k_j)\,e^{\log\mu(k_j)}\f$, stored as
///    \f$\kappa(q_i,k_j)\,e^{\log\mu(k_j) - m_i}\f$ with \f$m_i = \max_j \log\mu(k_j)\f$ (no
///    maximum without a magnitude).
/// The maxima run over the keys query i sees, so a hidden key can never underflow a visible
/// one. Per key tile: \f$m_i' = \max(m_i, \text{tile maximum})\f$, then
/// \f$\ell_i \leftarrow e^{m_i - m_i'}\ell_i + \sum_j \tilde w_{ij}\f$ and
/// \f$a_i \leftarrow e^{m_i - m_i'} a_i + \sum_j \tilde w_{ij} v_j\f$; finally
/// \f$out_i = a_i / \ell_i\f$, and a row with \f$\ell_i = 0\f$ outputs zeros: it sees no key, or
/// (exponential forms) every log-weight it sees is \f$-\infty\f$, each of which weighs exactly 0.
///
/// Before any arithmetic on a key tile, the pairs it holds that the queries see are checked
/// against the numeric range of log-weights (`LogWeightRange`, docs/numerics.md); distance
/// kernels' squared distances are accurate to \f$8(d + 2)\,u\,r^2\f$ however close a query and a
/// key are (`complete_squared_distances`).
///
/// Non-finite data reaches exactly the rows that see it, and the rows that do not see it keep
/// their bits: hidden pairs are overwritten before any arithmetic, and a partially hidden tile
/// whose values hold a NaN or an infinity takes its product with the values by
/// `accumulate_nonfinite_values`.
///
/// `statistics` receives the tile's row statistics (`write_row_statistics`) unless it is
/// `NoStatistics`.
///
/// `attend_exact` calls it for the forms that do not score in blocks; the others take
/// `attend_query_tile_in_blocks`: the same weights, kept in the L1 cache block by block.
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude, mask::BoundMask BoundMask,
          class QueryTile, class Keys, class Values, class OutTile, class StatisticsTile>
void attend_query_tile(const Kernel& kernel, const QueryTile& queries, Index first_query,
                       const Keys& keys, const Values& values,
                       const KeyTerms<typename Kernel::Scalar>& terms, const BoundMask& visibility,
                       Index key_tile, OutTile&& out, StatisticsTile&& statistics) {
  using T = typename Kernel::Scalar;
  using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
  constexpr T minus_infinity = ScalarTraits<T>::negative_infinity;
  using Form = Scoring<Kernel>;
  constexpr bool exponential = Form::exponential;
  constexpr bool add_key_bias = has_key_bias<Kernel, Magnitude>();
  constexpr bool track_maximum = exponential || add_key_bias;

  const Index rows = queries.rows();
  const Index d = queries.cols();
  const Index key_count = keys.rows();

  TileScratch<T>& scratch = TileScratch<T>::of_this_thread();
  auto scores = TileScratch<T>::matrix_over(scratch.scores, rows, std::min(key_tile, key_count));
  auto accumulated = TileScratch<T>::matrix_over(scratch.accumulated, rows, values.cols());
  accumulated.setZero();

  // The queries, prepared once per tile for the GEMMs with the keys.
  Form::prepare_tile(kernel, queries, scratch);

  // The range checks (docs/numerics.md): the queries' norms once per tile, then each key tile's
  // maxima against them before any arithmetic.
  const LogWeightRange<T> range = LogWeightRange<T>::of(kernel, d);
  range.norms(queries, scratch.query_norms);

  Array running_sum = Array::Zero(rows);
  Array running_max = Array::Constant(rows, minus_infinity);

  // Moves the running maximum to include `tile_max`, rescales the sums to it, and returns the
  // reference each row's weights are taken relative to (0 for a row that has seen no key).
  // Eigen's vectorised exp clamps its argument, so exp(-inf) is a tiny positive number: the
  // factor of a row without a visible key so far is set to 0 explicitly.
  const auto advance_running_max = [&](const Array& tile_max) {
    const Array new_max = running_max.max(tile_max);
    const Array reference = (new_max == minus_infinity).select(T(0), new_max);
    const Array rescale =
        (running_max == minus_infinity).select(T(0), (running_max - reference).exp());
    running_sum *= rescale;
    accumulated.array().colwise() *= rescale;
    running_max = new_max;
    return reference;
  };

  for_each_key_tile<T>(
      visibility, first_query, rows, key_count, key_tile, range, scratch.query_norms, terms,
      [&](Index first_key, Index tile_keys, bool partial, const auto& visible) {
        const auto bias = [&](Index j) { return terms.key_bias(first_key + j); };

        auto tile = scores.leftCols(tile_keys);
        const auto hide_invisible = [&](T value) {
          for (Index j = 0; j < tile_keys; ++j)
            for (Index i = 0; i < rows; ++i)
              if (!visible(i, j)) tile(i, j) = value;
        };

        Form::score_tile(kernel, queries, scratch, keys.middleRows(first_key, tile_keys), terms,
                         first_key, tile);
        if constexpr (exponential) add_score_bias(visibility, first_query, first_key, tile);

        // Weights relative to the running maximum; in a fully visible tile the row sums are taken
        // in the same pass, in a partial one after the hidden weights are zeroed.
        if constexpr (exponential) {
          Array tile_max = Array::Constant(rows, minus_infinity);
          // 0 x the log-weights, summed per row (hidden pairs of a partial tile included): NaN
          // exactly where a row of the tile holds a non-finite log-weight, such as -inf.
          Array nonfinite_probe = Array::Zero(rows);
          for (Index j = 0; j < tile_keys; ++j) {
            if constexpr (add_key_bias) tile.col(j).array() += bias(j);
            nonfinite_probe += tile.col(j).array() * T(0);
            if (!partial) tile_max = tile_max.max(tile.col(j).array());
          }
          const bool all_finite = (nonfinite_probe == T(0)).all();
          if (partial) {
            hide_invisible(minus_infinity);
            for (Index j = 0; j < tile_keys; ++j) tile_max = tile_max.max(tile.col(j).array());
          }
          // A log-weight of -inf weighs exactly 0, so a row whose visible log-weights are all -inf
          // sums to 0 and outputs zeros whatever the tiles. Eigen's vectorised exp(-inf) is a tiny
          // positive number, so a tile that holds a non-finite log-weight sets the weights of its
          // -inf ones to 0 after the exp (the select is not vectorised: only such tiles pay for
          // it).
          const Array reference = advance_running_max(tile_max);
          for (Index j = 0; j < tile_keys; ++j) {
            auto weights = tile.col(j).array();
            if (!all_finite) {
              auto& minus_infinite = scratch.minus_infinite;
              minus_infinite = weights == minus_infinity;
              weights = (weights - reference).exp();
              weights = minus_infinite.select(T(0), weights);
            } else {
              weights = (weights - reference).exp();
            }
            if (!partial) running_sum += weights;
          }
        } else if constexpr (track_maximum) {
          Array tile_max = Array::Constant(
              rows,
              partial ? minus_infinity : terms.key_bias.segment(first_key, tile_keys).maxCoeff());
          if (partial)
            for (Index j = 0; j < tile_keys; ++j)
              for (Index i = 0; i < rows; ++i)
                if (visible(i, j)) tile_max(i) = std::max(tile_max(i), bias(j));
          const Array reference = advance_running_max(tile_max);
          for (Index j = 0; j < tile_keys; ++j) {
            auto weights = tile.col(j).array();
            weights *= (bias(j) - reference).exp();
            if (!partial) running_sum += weights;
          }
        } else if (!partial) {
          for (Index j = 0; j < tile_keys; ++j) running_sum += tile.col(j).array();
        }
        if (partial) {
          hide_invisible(T(0));
          for (Index j = 0; j < tile_keys; ++j) running_sum += tile.col(j).array();
        }

        const auto value_rows = values.middleRows(first_key, tile_keys);
        if (partial && terms.has_nonfinite_values(first_key, first_key + tile_keys))
          accumulate_nonfinite_values(tile, value_rows, visible, accumulated);
        else
          accumulated.noalias() += tile * value_rows;
      });

  // Column by column: rows of a column-major output are strided, and at power-of-two strides
  // a row-wise store thrashes the cache.
  const auto empty = running_sum == T(0);
  for (Index c = 0; c < out.cols(); ++c)
    out.col(c).array() = empty.select(T(0), accumulated.col(c).array() / running_sum);
  require_finite_rows(queries, first_query, keys, values, visibility, out);
  if constexpr (!std::is_same_v<std::remove_cvref_t<StatisticsTile>, NoStatistics>)
    write_row_statistics(kernel, queries, first_query, scratch, running_max, running_sum,
                         statistics);
}

/// Exact attention of every sequence and head of a call (`call`, see `CallBlocks`): the key terms
/// once per sequence and key/value head, then every query tile, in parallel (`attend_query_tile`).
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude, mask::Mask Mask, class Blocks>
void attend_exact(const Kernel& kernel, const Magnitude& magnitude, const Mask& mask,
                  const ExecutionOptions& options, const Blocks& call,
                  StatisticsOut<typename Kernel::Scalar> statistics = {}) {
  using T = typename Kernel::Scalar;
  const int threads = resolve_thread_count(options.threads);
  if (finish_empty_call(mask, call.queries, call.keys, call.sequences, call.out(), call.heads)) {
    // Only a call without keys: the front end gives a call with statistics value columns.
    if (statistics)
      statistics.matrix->setConstant(
          Scoring<Kernel>::exponential ? ScalarTraits<T>::negative_infinity : T(0));
    return;
  }
  // Bound per sequence and head when the mask biases the scores (a bias may differ between
  // heads), per sequence otherwise.
  const Index bound_heads = mask::ScoreBias<Mask> ? call.heads : 1;
  const auto bound_masks = bind_masks(mask, call.queries, call.keys, call.sequences, bound_heads);

  // Once per key/value head (which the query heads of a group share).
  std::vector<KeyTerms<T>> key_terms(std::size_t(call.sequences * call.key_heads));
  std::vector<PackedKeys<T>>* packed = nullptr;
  if constexpr (BlockScoring<Kernel>) packed = &packed_keys_of_this_thread<T>(key_terms.size());
  call.for_each_key_head(threads, [&](Index b, Index kv) {
    const std::size_t index = call.key_head_index(b, kv * call.group);
    const auto keys = call.keys_of(b, kv * call.group);
    const auto values = call.values_of(b, kv * call.group);
    KeyTerms<T>& terms = key_terms[index];
    terms = compute_key_terms(kernel, magnitude, keys, values);
    if constexpr (BlockScoring<Kernel>) {
      (*packed)[index].pack(keys, values, options.key_tile);
      terms.packed = &(*packed)[index];
    }
  });

  call.for_each_query_block(
      options.query_tile_for(call.queries), threads,
      [&](Index b, Index h, Index first, Index rows) {
        const auto queries = call.query_rows(b, h, first, rows);
        auto out = call.out_rows(b, h, first, rows);
        const KeyTerms<T>& terms = key_terms[call.key_head_index(b, h)];
        const auto& visibility = bound_masks[std::size_t(b * bound_heads + h % bound_heads)];
        const auto attend = [&](auto&& statistics_tile) {
          // The path is the kernel type's alone: a block form always takes the block path.
          if constexpr (BlockScoring<Kernel>) {
            attend_query_tile_in_blocks<Kernel, Magnitude>(kernel, queries, first,
                                                           call.keys_of(b, h), terms, visibility,
                                                           options.key_tile, out, statistics_tile);
            require_finite_rows(queries, first, call.keys_of(b, h), call.values_of(b, h),
                                visibility, out);
          } else {
            attend_query_tile<Kernel, Magnitude>(kernel, queries, first, call.keys_of(b, h),
                                                 call.values_of(b, h), terms, visibility,
                                                 options.key_tile, out, statistics_tile);
          }
        };
        if (statistics)
          attend(statistics.rows(b, h, first, rows));
        else
          attend(NoStatistics{});
      });
}

}  // namespace kernattn::detail
