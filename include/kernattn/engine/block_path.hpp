#pragma once
/// \file
/// The exact engine's block path (docs/performance.md): a query tile attended block of
/// `BlockShape::rows` queries at a time, so that each block's scores are computed, turned into
/// weights and multiplied into the values while they sit in the L1 cache, by the
/// register-blocked kernels of `block_kernels.hpp` on packed queries, keys and values.

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/block_kernels.hpp"
#include "kernattn/engine/key_terms.hpp"
#include "kernattn/engine/key_tiles.hpp"
#include "kernattn/engine/log_weight_range.hpp"
#include "kernattn/engine/prepare_keys.hpp"
#include "kernattn/engine/row_statistics.hpp"
#include "kernattn/engine/score_bias.hpp"
#include "kernattn/engine/scoring.hpp"
#include "kernattn/engine/tile_scratch.hpp"
#include "kernattn/kernels/kernel.hpp"
#include "kernattn/magnitude/magnitude.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn::detail {

/// `attend_query_tile` for a kernel whose form scores in blocks (`BlockScoring`): the same
/// weights, online softmax and results up to rounding (the products sum their terms in another
/// order than Eigen's GEMM), and the same rules for non-finite data: a pair the mask hides is set
/// to \f$-\infty\f$ before anything is derived from it, a log-weight of \f$-\infty\f$ weighs
/// exactly 0, and a non-finite value reaches exactly the rows that see it.
///
/// The keys and values come packed (`KeyTerms::packed`, once per call). Per key tile the range
/// checks run as in `attend_query_tile`; then per block of R queries: the R x tile scores
/// (`score_block`; in a tile the mask hides in part, only from the first to the last key panel
/// that some query of the block sees: a panel hidden from all of them weighs 0 and is skipped),
/// finished by the form (`finish_block`), the key biases and the mask's score bias
/// (`add_score_bias`); hidden pairs set to \f$-\infty\f$; per row the new running maximum
/// \f$m_i'\f$, the rescale \f$e^{m_i - m_i'}\f$ of the row's sum and accumulator, the weights
/// \f$e^{x_{ij} - m_i'}\f$ (exactly 0 where \f$x_{ij} = -\infty\f$) and their sum; then the block's
/// weights times the values (`accumulate_block`). For a `BlockPrefactors` kernel the scores are
/// the exponents \f$x_{ij}\f$ of log-weights \f$x_{ij} + \log P_{ij}\f$: the reference takes
/// \f$\max_j x_{ij} + \log\max_j P_{ij}\f$ of the block's row and the weights are
/// \f$P_{ij}\,e^{x_{ij} - m_i'}\f$, one logarithm per row instead of one per score (a row whose
/// largest \f$P_{ij}\f$ exceeds \f$2^{24}\f$ takes \f$x_{ij} + \log P_{ij}\f$ instead).
/// `statistics` receives the row statistics as in `attend_query_tile`.
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude, mask::BoundMask BoundMask,
          class QueryTile, class Keys, class OutTile, class StatisticsTile>
void attend_query_tile_in_blocks(const Kernel& kernel, const QueryTile& queries, Index first_query,
                                 const Keys& keys, const KeyTerms<typename Kernel::Scalar>& terms,
                                 const BoundMask& visibility, Index key_tile, OutTile&& out,
                                 StatisticsTile&& statistics) {
  using T = typename Kernel::Scalar;
  using Shape = BlockShape<T>;
  using Form = Scoring<Kernel>;
  using RowArray = Eigen::Array<T, 1, Eigen::Dynamic>;
  using BlockScores = Eigen::Map<RowMajorMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
  constexpr T minus_infinity = ScalarTraits<T>::negative_infinity;
  constexpr bool add_key_bias = has_key_bias<Kernel, Magnitude>();
  constexpr bool prefactored = BlockPrefactors<Kernel>;
  constexpr Index R = Shape::rows;

  const Index rows = queries.rows();
  const Index d = queries.cols();
  const Index key_count = keys.rows();
  const Index blocks = (rows + R - 1) / R;
  const Index width = terms.packed->width;
  const Index stride = Shape::padded_keys(std::min(key_tile, key_count));

  TileScratch<T>& scratch = TileScratch<T>::of_this_thread();
  Form::prepare_tile(kernel, queries, scratch);
  pack_query_blocks(scratch.prepared_queries(rows, d), scratch.packed_queries);
  scratch.accumulated.setZero(blocks * R * width);
  if (scratch.block_scores.size() < R * stride) scratch.block_scores.resize(R * stride);
  T* const block_scores = scratch.block_scores.data();
  if (prefactored && scratch.block_prefactors.size() < R * stride) {
    scratch.block_prefactors.resize(R * stride);
    scratch.largest_prefactors.resize(R);
  }
  T* const block_prefactors = scratch.block_prefactors.data();

  const LogWeightRange<T> range = LogWeightRange<T>::of(kernel, d);
  range.norms(queries, scratch.query_norms);

  Eigen::Array<T, Eigen::Dynamic, 1> running_sum = Eigen::Array<T, Eigen::Dynamic, 1>::Zero(rows);
  Eigen::Array<T, Eigen::Dynamic, 1> running_max =
      Eigen::Array<T, Eigen::Dynamic, 1>::Constant(rows, minus_infinity);

  for_each_key_tile<T>(
      visibility, first_query, rows, key_count, key_tile, range, scratch.query_norms, terms,
      [&](Index first_key, Index tile_keys, bool partial, const auto& visible) {
        const auto key_rows = keys.middleRows(first_key, tile_keys);
        const T* const key_panels = terms.packed->panels_of_tile(first_key / key_tile);
        const T* const packed_values = terms.packed->value_rows(first_key);
        const Index panels = Shape::padded_keys(tile_keys) / Shape::key_panel;
        // A partial tile whose values hold a NaN or an infinity multiplies the values with those
        // entries replaced by 0, then adds each entry to the rows that see it
        // (`accumulate_nonfinite_values`): a row that does not see it keeps its bits.
        const bool nonfinite_values =
            partial && terms.has_nonfinite_values(first_key, first_key + tile_keys);
        const T* value_rows = packed_values;
        if (nonfinite_values) {
          const Eigen::Map<const Vector<T>> values_of_tile(packed_values, tile_keys * width);
          scratch.finite_values = values_of_tile.array().isFinite().select(values_of_tile, T(0));
          value_rows = scratch.finite_values.data();
        }

        for (Index block = 0; block < blocks; ++block) {
          const Index first_row = block * R;
          const Index block_rows = std::min(R, rows - first_row);
          // Keys [skipped, skipped + count) of the tile: in a partial tile, the panels that every
          // row of the block is denied at either end are left out (their weights are 0).
          Index first_panel = 0;
          Index end_panel = panels;
          bool block_partial = partial;
          const mask::Range block_range{first_query + first_row,
                                        first_query + first_row + block_rows};
          if (partial) {
            const auto hidden = [&](Index panel) {
              const Index begin = first_key + panel * Shape::key_panel;
              const Index end = std::min(begin + Shape::key_panel, first_key + tile_keys);
              return visibility.coverage(block_range, {begin, end}) == mask::Coverage::hidden;
            };
            while (first_panel < end_panel && hidden(first_panel)) ++first_panel;
            while (end_panel > first_panel && hidden(end_panel - 1)) --end_panel;
            if (first_panel == end_panel) continue;
          }
          const Index skipped = first_panel * Shape::key_panel;
          const Index count = std::min(end_panel * Shape::key_panel, tile_keys) - skipped;
          if (partial)
            block_partial = visibility.coverage(
                                block_range, {first_key + skipped, first_key + skipped + count}) !=
                            mask::Coverage::full;
          score_block(scratch.packed_queries.data() + block * d * R, 1, R, d,
                      key_panels + first_panel * d * Shape::key_panel, end_panel - first_panel,
                      block_scores, stride);
          BlockScores scores(block_scores, block_rows, count, Eigen::OuterStride<>(stride));
          Form::finish_block(kernel, queries, first_row, scratch,
                             key_rows.middleRows(skipped, count), terms, first_key + skipped,
                             scores);

          for (Index r = 0; r < block_rows; ++r) {
            const Index i = first_row + r;
            auto weights = scores.row(r).array();
            if constexpr (add_key_bias)
              weights += terms.key_bias.segment(first_key + skipped, count).transpose().array();
            add_score_bias(visibility, first_query + i, first_key + skipped, weights);
            if (block_partial)
              for (Index j = 0; j < count; ++j)
                if (!visible(i, skipped + j)) weights(j) = minus_infinity;
            // A log-weight of -inf (a hidden pair, or one that underflows) weighs exactly 0;
            // Eigen's vectorised exp(-inf) is a tiny positive number, so such rows are fixed after
            // the exp.
            const bool has_minus_infinity = block_partial || !((weights * T(0)).sum() == T(0));
            auto& minus_infinite = scratch.minus_infinite;
            if (has_minus_infinity) minus_infinite = (weights == minus_infinity).transpose();
            Eigen::Map<RowArray> prefactors(prefactored ? block_prefactors + r * stride : nullptr,
                                            prefactored ? count : 0);
            bool weigh_prefactors = false;
            T tile_max = 0;
            if constexpr (prefactored) {
              constexpr T largest_weighed_prefactor = T(1 << 24);
              // The log-weights are e + log P (P of a hidden pair counts as 1): max e + log max P
              // bounds them, so that no weight P e^{e - m} exceeds 1; it exceeds the largest by
              // at most log max P, and where that could be more than log 2^24 the row takes the
              // log-weights themselves, so the largest weight stays above 2^-24.
              T largest_prefactor = scratch.largest_prefactors(r);
              if (has_minus_infinity) {
                prefactors = minus_infinite.transpose().select(T(1), prefactors);
                largest_prefactor = prefactors.maxCoeff();
              }
              weigh_prefactors = largest_prefactor <= largest_weighed_prefactor;
              if (weigh_prefactors)
                tile_max = T(std::log(largest_prefactor));
              else
                weights += prefactors.log();
            }
            tile_max += weights.maxCoeff();
            const T new_max = std::max(running_max(i), tile_max);
            const T reference = new_max == minus_infinity ? T(0) : new_max;
            // exp(0) = 1 needs no call: once a row's maximum settles, most tiles leave it.
            const T rescale = running_max(i) == minus_infinity ? T(0)
                              : running_max(i) == reference
                                  ? T(1)
                                  : T(std::exp(running_max(i) - reference));
            running_max(i) = new_max;
            // The exp first, vectorised (Eigen's select is not), then the zeros.
            if (weigh_prefactors)
              weights = prefactors * (weights - reference).exp();
            else
              weights = (weights - reference).exp();
            if (has_minus_infinity) weights = minus_infinite.transpose().select(T(0), weights);
            running_sum(i) = running_sum(i) * rescale + weights.sum();
            if (rescale != T(1))
              Eigen::Map<RowArray>(scratch.accumulated.data() + i * width, width) *= rescale;
          }
          accumulate_block(block_scores, stride, count, value_rows + skipped * width, width,
                           scratch.accumulated.data() + first_row * width);
          if (nonfinite_values)
            for (Index j = 0; j < count; ++j)
              for (Index c = 0; c < width; ++c) {
                const T value = packed_values[(skipped + j) * width + c];
                if (std::isfinite(value)) continue;
                for (Index r = 0; r < block_rows; ++r)
                  if (visible(first_row + r, skipped + j))
                    scratch.accumulated((first_row + r) * width + c) +=
                        block_scores[r * stride + j] * value;
              }
        }
      });

  const Eigen::Map<const RowMajorMatrix<T>> accumulated(scratch.accumulated.data(), blocks * R,
                                                        width);
  const auto empty = running_sum == T(0);
  for (Index c = 0; c < out.cols(); ++c)
    out.col(c).array() = empty.select(T(0), accumulated.col(c).head(rows).array() / running_sum);
  if constexpr (!std::is_same_v<std::remove_cvref_t<StatisticsTile>, NoStatistics>)
    write_row_statistics(kernel, queries, first_query, scratch, running_max, running_sum,
                         statistics);
}

}  // namespace kernattn::detail
