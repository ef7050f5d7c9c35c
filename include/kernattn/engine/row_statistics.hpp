#pragma once
/// \file
/// The row statistics of the exact and graph engines' forward passes (docs/gradients.md), written
/// from each row's reference and sum of weights: the log-normaliser of the exponential forms, the
/// signed denominator of the direct forms.

#include <cmath>

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/scoring.hpp"
#include "kernattn/engine/statistics_out.hpp"
#include "kernattn/engine/tile_scratch.hpp"

namespace kernattn::detail {

/// Writes the statistics of a tile of queries from the engine's per-row reference \f$m_i\f$
/// (`running_max`, \f$-\infty\f$ for a row that saw no key) and the sum \f$\ell_i\f$ of its weights
/// relative to it (`running_sum`), in double before the rounding to T:
///  - exponential forms: \f$L_i = m_i + \log\ell_i + f(q_i)\f$, where \f$f(q_i)\f$ is the query's
///    own term that the scores drop (`Scoring::add_query_log_terms`); \f$-\infty\f$ when
///    \f$\ell_i = 0\f$;
///  - direct forms: \f$\ell_i\,e^{m_i}\f$ (\f$\ell_i\f$ without a magnitude), which must be finite
///    in T: otherwise InvalidArgument names the row.
template <kernels::Kernel Kernel, class Queries, class RunningArray, class Segment>
void write_row_statistics(const Kernel& kernel, const Queries& queries, Index first_query,
                          const TileScratch<typename Kernel::Scalar>& scratch,
                          const RunningArray& running_max, const RunningArray& running_sum,
                          Segment&& statistics) {
  using T = typename Kernel::Scalar;
  using Form = Scoring<Kernel>;
  constexpr T minus_infinity = ScalarTraits<T>::negative_infinity;
  const Index rows = queries.rows();
  Eigen::ArrayXd log_terms = Eigen::ArrayXd::Zero(rows);
  if constexpr (Form::exponential) Form::add_query_log_terms(kernel, queries, scratch, log_terms);
  for (Index i = 0; i < rows; ++i) {
    const double reference = running_max(i) == minus_infinity ? 0.0 : double(running_max(i));
    const double sum = double(running_sum(i));
    if constexpr (Form::exponential) {
      statistics(i) = sum == 0.0 ? minus_infinity : T(reference + std::log(sum) + log_terms(i));
    } else {
      statistics(i) = checked_denominator<T>("Attention", sum, reference, first_query + i);
    }
  }
}

}  // namespace kernattn::detail
