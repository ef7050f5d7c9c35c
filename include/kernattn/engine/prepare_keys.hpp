#pragma once
/// \file
/// The per-key work of the engines, done once per key and never once per pair.

#include <cmath>
#include <limits>
#include <vector>

#include "kernattn/engine/key_terms.hpp"
#include "kernattn/engine/log_weight_range.hpp"
#include "kernattn/engine/scoring.hpp"
#include "kernattn/kernels/kernel.hpp"
#include "kernattn/magnitude/magnitude.hpp"

namespace kernattn::detail {

/// Whether a per-key log term \f$g(k) + \log\mu(k)\f$ exists for this kernel and magnitude.
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude>
constexpr bool has_key_bias() {
  return Scoring<Kernel>::has_key_term || !Magnitude::is_unit;
}

/// The `KeyTerms` of one sequence and head: the form's own (`Scoring::key_terms`), the key
/// bias \f$g(k_j) + \log\mu(k_j)\f$ with the sizes the range checks need, and which value rows
/// are non-finite. The key bias is summed in double, once per key, then rounded to T: the
/// cancellation in RBF x L2 = softmax then holds in float too (docs/math.md, section 1).
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude, class KeysBlock,
          class ValuesBlock>
[[nodiscard]] KeyTerms<typename Kernel::Scalar> compute_key_terms(const Kernel& kernel,
                                                                  const Magnitude& magnitude,
                                                                  const KeysBlock& keys,
                                                                  const ValuesBlock& values) {
  using T = typename Kernel::Scalar;
  const Index count = keys.rows();
  KeyTerms<T> terms;
  Eigen::VectorXd log_terms = Eigen::VectorXd::Zero(count);
  Scoring<Kernel>::key_terms(kernel, keys, terms, log_terms);
  LogWeightRange<T>::of(kernel, keys.cols()).norms(keys, terms.range_norms);
  if constexpr (has_key_bias<Kernel, Magnitude>()) {
    terms.range_key_terms.resize(count);
    const Eigen::Array<bool, Eigen::Dynamic, 1> finite = finite_rows(keys);
    if constexpr (!Magnitude::is_unit) magnitude::add_log_magnitudes(magnitude, keys, log_terms);
    Scoring<Kernel>::add_key_terms(kernel, keys, log_terms);
    for (Index j = 0; j < count; ++j) {
      // A NaN from finite data must fail the range check: it counts as infinitely large.
      terms.range_key_terms(j) = !finite(j) ? 0.0
                                 : std::isnan(log_terms(j))
                                     ? std::numeric_limits<double>::infinity()
                                     : std::abs(log_terms(j));
    }
    terms.key_bias = log_terms.cast<T>();
  }
  if (!values.allFinite()) {
    terms.nonfinite_values_before.assign(std::size_t(count) + 1, 0);
    for (Index j = 0; j < count; ++j)
      terms.nonfinite_values_before[std::size_t(j) + 1] =
          terms.nonfinite_values_before[std::size_t(j)] + (values.row(j).allFinite() ? 0 : 1);
  }
  return terms;
}

}  // namespace kernattn::detail
