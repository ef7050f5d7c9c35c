#pragma once
/// \file
/// The weighted sum of values of a block of queries over a block of keys when some of the values
/// are not finite and some pairs are hidden: non-finite data must reach exactly the rows that see
/// them, and the other rows must keep the bits they would have with finite values.

#include <cmath>

#include "kernattn/core/scalar_traits.hpp"

namespace kernattn::detail {

/// \f$a_i \mathrel{+}= \sum_j w_{ij} v_j\f$ for weights `weights` that are exactly 0 at every pair
/// (i, j) that `sees` rejects, and values `values` holding a NaN or an infinity, which a plain
/// product would multiply by those zeros (\f$0 \cdot \infty\f$ is NaN). The product is taken with
/// the non-finite entries replaced by 0, which at a rejected pair is the same arithmetic as for
/// any finite value there (the weight is 0): a row that sees none of them gets the same bits as
/// if the values had been finite. Each row that sees a non-finite entry then adds its weight
/// times it, and becomes non-finite as the plain product would make it.
template <class Weights, class Values, class Sees, class Accumulated>
void accumulate_nonfinite_values(const Weights& weights, const Values& values, const Sees& sees,
                                 Accumulated&& accumulated) {
  using T = typename Values::Scalar;
  const typename Values::PlainObject finite_values = values.array().isFinite().select(values, T(0));
  accumulated.noalias() += weights * finite_values;
  for (Index j = 0; j < values.rows(); ++j) {
    if (values.row(j).allFinite()) continue;
    for (Index c = 0; c < values.cols(); ++c) {
      if (std::isfinite(values(j, c))) continue;
      for (Index i = 0; i < weights.rows(); ++i)
        if (sees(i, j)) accumulated(i, c) += weights(i, j) * values(j, c);
    }
  }
}

}  // namespace kernattn::detail
