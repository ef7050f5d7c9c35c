#pragma once
/// \file
/// Where a forward pass writes its row statistics, for its backward pass and for merging partial
/// results (docs/gradients.md): per query row and head, the log-normaliser
/// \f$L_i = \log\sum_{j\in M(i)} w_{ij}\f$ of the exponential forms, or the signed denominator
/// \f$\sum_{j\in M(i)} w_{ij}\f$ of the direct forms (and of the linear engine).

#include <cmath>
#include <limits>
#include <string_view>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"

namespace kernattn::detail {

/// Where a call writes its row statistics: a \f$(B N_q) \times H\f$ matrix (row \f$b N_q + i\f$,
/// column h), or nowhere.
template <Real T>
struct StatisticsOut {
  Matrix<T>* matrix = nullptr;
  /// Queries per sequence.
  Index queries = 0;

  [[nodiscard]] explicit operator bool() const { return matrix != nullptr; }
  /// Rows [first, first + rows) of sequence b, head h.
  [[nodiscard]] auto rows(Index b, Index h, Index first, Index rows) const {
    return matrix->col(h).segment(b * queries + first, rows);
  }
};

/// The statistics argument of a tile whose call writes none.
struct NoStatistics {};

/// Calls `body` with rows [first, first + rows) of sequence b, head h of `statistics`, or with
/// `NoStatistics` when the call writes none.
template <Real T, class Body>
void with_statistics_rows(const StatisticsOut<T>& statistics, Index b, Index h, Index first,
                          Index rows, Body&& body) {
  if (statistics)
    body(statistics.rows(b, h, first, rows));
  else
    body(NoStatistics{});
}

/// A direct form's denominator \f$\ell\,e^{r}\f$ from the sum \f$\ell\f$ of its weights relative
/// to \f$e^{r}\f$, computed in double and rounded to T. It must be finite in T (a NaN sum, from
/// non-finite data, stays NaN): otherwise InvalidArgument names `owner` and the query.
template <Real T>
[[nodiscard]] T checked_denominator(std::string_view owner, double sum, double reference,
                                    Index query) {
  // Checked in double: a double beyond the largest T has no conversion to T.
  const double denominator = sum * std::exp(reference);
  require(std::abs(denominator) <= double(std::numeric_limits<T>::max()) || !std::isfinite(sum),
          owner, ": the denominator of query ", query, " (", sum, " x e^", reference,
          ") overflows ", ScalarTraits<T>::name,
          ", so the row statistics cannot hold it: scale the magnitude down");
  return T(denominator);
}

}  // namespace kernattn::detail
