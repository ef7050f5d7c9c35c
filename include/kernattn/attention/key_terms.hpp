#pragma once
/// \file
/// The per-key work of the exact engine, done once per key and never once per pair.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernattn/kernels/kernel.hpp"
#include "kernattn/magnitude/magnitude.hpp"

namespace kernattn::detail {

/// What the streaming loop needs to know about the keys and values of one sequence and head.
template <Real T>
struct KeyTerms {
  /// Exponential forms: \f$g(k_j) + \log\mu(k_j)\f$, added to every log-score of key j.
  /// Direct form: \f$\mu(k_j) / \max_l \mu(k_l)\f$, multiplying every weight of key j (a factor
  /// common to all keys cancels in the ratio). Empty when there is nothing to add.
  Vector<T> key_bias;
  /// Distance form: \f$\lVert k_j\rVert^2\f$.
  Vector<T> squared_norms;
  /// How many value rows before j hold a non-finite entry (size N_k + 1); empty when none does.
  std::vector<Index> nonfinite_values_before;

  /// Whether a value row in [begin, end) holds a NaN or an infinity.
  [[nodiscard]] bool has_nonfinite_values(Index begin, Index end) const {
    return !nonfinite_values_before.empty() &&
           nonfinite_values_before[std::size_t(end)] != nonfinite_values_before[std::size_t(begin)];
  }
};

/// Whether the engine adds or multiplies a per-key term for this kernel and magnitude.
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude>
constexpr bool has_key_bias() {
  if constexpr (kernels::DotProductKernel<Kernel>) return Kernel::has_key_term || !Magnitude::is_unit;
  return !Magnitude::is_unit;
}

template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude, class KeysBlock, class ValuesBlock>
[[nodiscard]] KeyTerms<typename Kernel::Scalar> compute_key_terms(const Kernel& kernel, const Magnitude& magnitude,
                                                                  const KeysBlock& keys, const ValuesBlock& values) {
  using T = typename Kernel::Scalar;
  const Index count = keys.rows();
  KeyTerms<T> terms;
  if constexpr (has_key_bias<Kernel, Magnitude>()) {
    Eigen::VectorXd log_terms(count);
    for (Index j = 0; j < count; ++j) {
      double term = magnitude.log_magnitude(keys.row(j));
      if constexpr (kernels::DotProductKernel<Kernel>) term += kernel.log_key_term(keys.row(j));
      log_terms(j) = term;
    }
    if constexpr (kernels::DirectKernel<Kernel>) {
      double largest = -std::numeric_limits<double>::infinity();
      for (Index j = 0; j < count; ++j)
        if (std::isfinite(log_terms(j))) largest = std::max(largest, log_terms(j));
      if (std::isfinite(largest)) log_terms = (log_terms.array() - largest).exp();
      else log_terms = log_terms.array().exp();
    }
    terms.key_bias = log_terms.cast<T>();
  }
  if constexpr (kernels::DistanceKernel<Kernel>) terms.squared_norms = keys.rowwise().squaredNorm();
  for (Index j = 0; j < count; ++j) {
    if (values.row(j).allFinite()) continue;
    terms.nonfinite_values_before.assign(std::size_t(count) + 1, 0);
    for (Index l = 0; l < count; ++l)
      terms.nonfinite_values_before[std::size_t(l) + 1] =
          terms.nonfinite_values_before[std::size_t(l)] + (values.row(l).allFinite() ? 0 : 1);
    break;
  }
  return terms;
}

}  // namespace kernattn::detail
