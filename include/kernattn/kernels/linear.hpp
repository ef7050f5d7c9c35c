#pragma once
/// \file
/// The linear kernel, a direct (not positive-exponential) kernel.

#include "kernattn/kernels/kernel.hpp"

namespace kernattn::kernels {

/// \f$\kappa(q,k) = q\cdot k\f$. Weights can be negative and their sum can be zero: the engine
/// normalises directly (see `DirectForm`); a scale would cancel in the ratio, so there is none.
template <Real T>
class Linear {
 public:
  using Scalar = T;
  using Form = DirectForm;

  [[nodiscard]] T dot_scale(Index /*d*/) const { return T(1); }

  template <class Block>
  void from_scaled_dot(Block&& /*block*/) const {}

  /// \f$h'(x) = 1\f$.
  template <class Block>
  void derivative_from_scaled_dot(Block&& block) const {
    block.setConstant(T(1));
  }

  template <class Q, class K>
  [[nodiscard]] T operator()(const Eigen::MatrixBase<Q>& q, const Eigen::MatrixBase<K>& k) const {
    return q.dot(k);
  }
};

}  // namespace kernattn::kernels
