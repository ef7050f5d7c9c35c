#pragma once
/// \file
/// Merging the results of attention over disjoint sets of keys (docs/gradients.md, "Merging
/// partial results"): keys sharded across threads, processes or a key/value cache in blocks.

#include <cmath>
#include <limits>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"

namespace kernattn {

/// What a forward call's row statistics are (`Attention::row_statistic`,
/// `LinearAttention::row_statistic`).
enum class RowStatistic {
  /// \f$L_i = \log\sum_{j\in M(i)} w_{ij}\f$, \f$-\infty\f$ for a row that sees no key (the
  /// exponential forms).
  log_normaliser,
  /// \f$Z_i = \sum_{j\in M(i)} w_{ij}\f$, 0 for a row that sees no key (the direct forms, linear
  /// attention).
  denominator
};

/// Merges the output and row statistics of one attention call over a set of keys
/// (`part_out`, `part_statistics`) into those of the same queries over a disjoint set of keys
/// (`out`, `statistics`, updated in place), so that they become those of one call over both
/// sets, up to rounding. Shapes as the calls write them: out is \f$(B N_q) \times (H d_v)\f$ and
/// statistics \f$(B N_q) \times H\f$, head h's values in columns \f$[h d_v, (h+1) d_v)\f$. Per row
/// and head, in double:
///  - `log_normaliser`: \f$L = \log(e^{L_a} + e^{L_b})\f$ (evaluated from the larger) and
///    \f$o = e^{L_a - L} o_a + e^{L_b - L} o_b\f$; a part whose row saw no key (\f$-\infty\f$)
///    contributes nothing, and a row neither part saw stays \f$-\infty\f$ with output 0;
///  - `denominator`: \f$Z = Z_a + Z_b\f$ and \f$o = (Z_a o_a + Z_b o_b) / Z\f$; a row with
///    \f$Z = 0\f$ gets output 0, as the engines give it.
/// A NaN in a part's statistic or output makes the merged row NaN. The linear engine's floored
/// denominators of signed maps (`LinearOptions::denominator_floor`) do not merge exactly.
/// Mismatched shapes throw `InvalidArgument` naming the argument.
template <Real T>
void merge_partial_result(Matrix<T>& out, Matrix<T>& statistics, const Matrix<T>& part_out,
                          const Matrix<T>& part_statistics, RowStatistic kind) {
  require(part_out.rows() == out.rows() && part_out.cols() == out.cols(),
          "merge_partial_result: part_out is ", detail::shape_of(part_out), " but out is ",
          detail::shape_of(out));
  require(statistics.rows() == out.rows() && statistics.cols() >= 1 &&
              out.cols() % statistics.cols() == 0,
          "merge_partial_result: statistics is ", detail::shape_of(statistics), " but out is ",
          detail::shape_of(out),
          " (statistics must have out's rows and one column per head, H dividing out's columns)");
  require(
      part_statistics.rows() == statistics.rows() && part_statistics.cols() == statistics.cols(),
      "merge_partial_result: part_statistics is ", detail::shape_of(part_statistics),
      " but statistics is ", detail::shape_of(statistics));
  const Index heads = statistics.cols();
  const Index dv = out.cols() / heads;
  constexpr double minus_infinity = -std::numeric_limits<double>::infinity();
  for (Index h = 0; h < heads; ++h)
    for (Index i = 0; i < out.rows(); ++i) {
      const double a = double(statistics(i, h));
      const double b = double(part_statistics(i, h));
      double merged;
      double weight_a;
      double weight_b;
      if (kind == RowStatistic::log_normaliser) {
        if (a == minus_infinity && b == minus_infinity) {
          merged = minus_infinity;
          weight_a = weight_b = 0.0;
        } else {
          const double larger = a > b ? a : b;
          merged = larger + std::log(std::exp(a - larger) + std::exp(b - larger));
          weight_a = std::exp(a - merged);
          weight_b = std::exp(b - merged);
        }
      } else {
        merged = a + b;
        weight_a = merged == 0.0 ? 0.0 : a / merged;
        weight_b = merged == 0.0 ? 0.0 : b / merged;
      }
      statistics(i, h) = T(merged);
      for (Index c = h * dv; c < (h + 1) * dv; ++c)
        out(i, c) = T(weight_a * double(out(i, c)) + weight_b * double(part_out(i, c)));
    }
}

}  // namespace kernattn
