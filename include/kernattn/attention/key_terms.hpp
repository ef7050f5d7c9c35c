#pragma once
/// \file
/// The per-key work of the exact engine, done once per key and never once per pair.

#include <vector>

#include "kernattn/kernels/kernel.hpp"
#include "kernattn/magnitude/magnitude.hpp"

namespace kernattn::detail {

/// What the streaming loop needs to know about the keys and values of one sequence and head.
template <Real T>
struct KeyTerms {
  /// \f$g(k_j) + \log\mu(k_j)\f$: the kernel's key term (dot-product kernels) plus the
  /// log-magnitude of key j. Empty when both vanish.
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

/// Whether a per-key log term \f$g(k) + \log\mu(k)\f$ exists for this kernel and magnitude.
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude>
constexpr bool has_key_bias() {
  if constexpr (kernels::DotProductKernel<Kernel>)
    return Kernel::has_key_term || !Magnitude::is_unit;
  return !Magnitude::is_unit;
}

template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude, class KeysBlock,
          class ValuesBlock>
[[nodiscard]] KeyTerms<typename Kernel::Scalar> compute_key_terms(const Kernel& kernel,
                                                                  const Magnitude& magnitude,
                                                                  const KeysBlock& keys,
                                                                  const ValuesBlock& values) {
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
    terms.key_bias = log_terms.cast<T>();
  }
  if constexpr (kernels::DistanceKernel<Kernel>) terms.squared_norms = keys.rowwise().squaredNorm();
  if (!values.allFinite()) {
    terms.nonfinite_values_before.assign(std::size_t(count) + 1, 0);
    for (Index j = 0; j < count; ++j)
      terms.nonfinite_values_before[std::size_t(j) + 1] =
          terms.nonfinite_values_before[std::size_t(j)] + (values.row(j).allFinite() ? 0 : 1);
  }
  return terms;
}

}  // namespace kernattn::detail
