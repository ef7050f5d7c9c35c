#pragma once
/// \file
/// Kernel parameters whose default depends on the head dimension d: either a validated value
/// fixed at construction, or a rule applied to d when the kernel meets its inputs.

#include <cmath>
#include <string_view>

#include "kernattn/core/errors.hpp"

namespace kernattn::kernels {

/// \f$s = 1/\sqrt{d}\f$, the softmax scale.
struct SoftmaxScale {
  template <Real U>
  [[nodiscard]] static U at(Index d) {
    return U(1) / std::sqrt(U(d));
  }
};

/// \f$\sigma^2 = \sqrt{d} = 1/s\f$, the variance of the RBF kernel inside softmax attention.
struct SoftmaxVariance {
  template <Real U>
  [[nodiscard]] static U at(Index d) {
    return std::sqrt(U(d));
  }
};

/// \f$\ell = d^{1/4} = \sigma\f$, the lengthscale of that RBF kernel; the default lengthscale
/// of every distance kernel.
struct SoftmaxLengthscale {
  template <Real U>
  [[nodiscard]] static U at(Index d) {
    return std::sqrt(std::sqrt(U(d)));
  }
};

/// A parameter > 0 that is either fixed or given by `Rule::at<U>(d)`.
template <Real T, class Rule>
class DimensionDefault {
 public:
  DimensionDefault() = default;
  /// A fixed value; must be finite and > 0, else InvalidArgument naming `owner` and `name`.
  DimensionDefault(T value, std::string_view owner, std::string_view name) : value_(value) {
    require_positive_finite(value, owner, name);
  }
  /// Whether the value is fixed (not the rule's).
  [[nodiscard]] bool is_fixed() const { return value_ > T(0); }
  /// The value for head dimension `d`, in precision U (per-key terms resolve it in double).
  template <Real U = T>
  [[nodiscard]] U resolve(Index d) const {
    return is_fixed() ? U(value_) : Rule::template at<U>(d);
  }

 private:
  /// The fixed value, or 0 for the rule (a fixed value is > 0).
  T value_ = T(0);
};

}  // namespace kernattn::kernels
