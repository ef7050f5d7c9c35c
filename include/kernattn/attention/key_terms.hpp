#pragma once
/// \file
/// The per-key work of the exact engine, done once per key and never once per pair.

#include <cmath>
#include <limits>
#include <vector>

#include "kernattn/attention/log_weight_range.hpp"
#include "kernattn/kernels/kernel.hpp"
#include "kernattn/magnitude/magnitude.hpp"

namespace kernattn::detail {

/// What the streaming loop needs to know about the keys and values of one sequence and head.
template <Real T>
struct KeyTerms {
  /// \f$g(k_j) + \log\mu(k_j)\f$: the kernel's key term (dot-product kernels, and the
  /// dot-product factors of a product kernel) plus the log-magnitude of key j. Empty when both
  /// vanish.
  Vector<T> key_bias;
  /// Distance form: \f$\lVert k_j\rVert^2\f$. Product form: \f$\lVert f_j\rVert^2\f$ of the
  /// feature columns when the feature kernel is a distance kernel.
  Vector<T> squared_norms;
  /// Product form: \f$\lVert t_j\rVert^2\f$ of the position columns when the position kernel is a
  /// distance kernel.
  Vector<T> position_squared_norms;
  /// Feature form: the scaled key features \f$\tilde\varphi(k_j)\f$, one row per key (their
  /// log-scales \f$s_j\f$ are in `key_bias`).
  Matrix<T> features;
  /// The range checks (`LogWeightRange`): the norms of key j on each log-domain factor's columns
  /// (N_k x factors, in double), -1 for a key with a non-finite entry.
  Eigen::ArrayXXd range_norms;
  /// \f$|g(k_j) + \log\mu(k_j)|\f$ in double (infinite if it is NaN), 0 for a key with a
  /// non-finite entry; empty when `key_bias` is.
  Eigen::ArrayXd range_key_terms;
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
  if constexpr (kernels::DotProductKernel<Kernel> || kernels::ProductKernel<Kernel>)
    return Kernel::has_key_term || !Magnitude::is_unit;
  if constexpr (kernels::FeatureKernel<Kernel>) return Kernel::has_log_scale || !Magnitude::is_unit;
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
  if constexpr (kernels::ProductKernel<Kernel>) {
    const Index d = kernel.feature_dimension(keys.cols());  // throws unless d >= 1
    if constexpr (kernels::DistanceKernel<typename Kernel::FeatureKernel>)
      terms.squared_norms = keys.leftCols(d).rowwise().squaredNorm();
    if constexpr (kernels::DistanceKernel<typename Kernel::PositionKernel>)
      terms.position_squared_norms = keys.rightCols(keys.cols() - d).rowwise().squaredNorm();
  }
  Eigen::VectorXd log_terms = Eigen::VectorXd::Zero(count);
  if constexpr (kernels::FeatureKernel<Kernel>) kernel.features(keys, terms.features, log_terms);
  LogWeightRange<T>::of(kernel, keys.cols()).norms(keys, terms.range_norms);
  if constexpr (has_key_bias<Kernel, Magnitude>()) {
    terms.range_key_terms.resize(count);
    const Eigen::Array<bool, Eigen::Dynamic, 1> finite = finite_rows(keys);
    for (Index j = 0; j < count; ++j) {
      if constexpr (!Magnitude::is_unit) log_terms(j) += magnitude.log_magnitude(keys.row(j));
      if constexpr (kernels::DotProductKernel<Kernel> || kernels::ProductKernel<Kernel>)
        log_terms(j) += kernel.log_key_term(keys.row(j));
      // A NaN from finite data must fail the range check: it counts as infinitely large.
      terms.range_key_terms(j) = !finite(j) ? 0.0
                                 : std::isnan(log_terms(j))
                                     ? std::numeric_limits<double>::infinity()
                                     : std::abs(log_terms(j));
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
