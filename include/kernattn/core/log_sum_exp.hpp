#pragma once
/// \file
/// Numerically stable log-sum-exp.

#include <cmath>
#include <limits>

#include "kernattn/core/scalar_traits.hpp"

namespace kernattn {

/// \f$ \mathrm{LSE}(x) = m + \log \sum_i e^{x_i - m},\ m = \max_i x_i \f$.
///
/// Never overflows for finite input. Edge cases: an empty input or one whose entries are all
/// \f$-\infty\f$ gives \f$-\infty\f$; any \f$+\infty\f$ gives \f$+\infty\f$; any NaN gives NaN.
template <class Derived>
[[nodiscard]] typename Derived::Scalar log_sum_exp(const Eigen::DenseBase<Derived>& x) {
  using T = typename Derived::Scalar;
  static_assert(Real<T>, "log_sum_exp needs float or double entries");
  const auto& values = x.derived().array();
  if (values.size() == 0) return -std::numeric_limits<T>::infinity();
  if (values.isNaN().any()) return std::numeric_limits<T>::quiet_NaN();
  const T largest = values.maxCoeff();
  if (!std::isfinite(largest)) return largest;
  return largest + std::log((values - largest).exp().sum());
}

}  // namespace kernattn
