#pragma once
/// \file
/// What the engines compute once per key and never once per pair (see `compute_key_terms`).

#include <vector>

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/block_kernels.hpp"

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
  /// The block path: the keys and values packed for its kernels (null unless it runs).
  const PackedKeys<T>* packed = nullptr;
  /// How many value rows before j hold a non-finite entry (size N_k + 1); empty when none does.
  std::vector<Index> nonfinite_values_before;

  /// Whether a value row in [begin, end) holds a NaN or an infinity.
  [[nodiscard]] bool has_nonfinite_values(Index begin, Index end) const {
    return !nonfinite_values_before.empty() &&
           nonfinite_values_before[std::size_t(end)] != nonfinite_values_before[std::size_t(begin)];
  }
};

}  // namespace kernattn::detail
