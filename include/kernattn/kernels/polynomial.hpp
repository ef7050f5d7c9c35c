#pragma once
/// \file
/// The polynomial kernel, a direct (not positive-exponential) kernel.

#include <cmath>

#include "kernattn/kernels/kernel.hpp"
#include "kernattn/kernels/parameter.hpp"

namespace kernattn::kernels {

/// \f$\kappa(q,k) = (a\, q\cdot k + c)^n\f$: scale \f$a\f$ (default \f$1/\sqrt{d}\f$), offset
/// \f$c \ge 0\f$ (default 1), integer degree \f$n \ge 1\f$ (default 2).
/// Odd degrees give negative weights; the engine normalises directly (see `DirectForm`).
template <Real T>
class Polynomial {
 public:
  using Scalar = T;
  using Form = DirectForm;

  Polynomial() = default;
  /// Degree \f$n \ge 1\f$ and offset \f$c \ge 0\f$, default scale.
  explicit Polynomial(int degree, T offset = T(1))
      : degree_(checked_degree(degree)), offset_(offset) {
    require_non_negative_finite(offset, "Polynomial", "offset");
  }
  /// Degree, offset and a fixed scale \f$a > 0\f$.
  Polynomial(int degree, T offset, T scale) : Polynomial(degree, offset) {
    scale_ = DimensionDefault<T, SoftmaxScale>(scale, "Polynomial", "scale");
  }

  [[nodiscard]] int degree() const { return degree_; }
  [[nodiscard]] T offset() const { return offset_; }
  [[nodiscard]] T dot_scale(Index d) const { return scale_.resolve(d); }

  /// Replaces each \f$x = a\,q\cdot k\f$ by \f$(x + c)^n\f$, by binary powering:
  /// \f$y^n = y \prod_{i:\ \mathrm{bit}_i(n-1) = 1} y^{2^i}\f$ (a general pow is ten times slower).
  template <class Block>
  void from_scaled_dot(Block&& block) const {
    block += offset_;
    if (degree_ == 1) return;
    Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic> power = block;  // y^(2^i)
    for (int remaining = degree_ - 1; remaining > 0; remaining >>= 1) {
      if (remaining & 1) block *= power;
      if (remaining > 1) power = power.square();
    }
  }

  template <class Q, class K>
  [[nodiscard]] T operator()(const Eigen::MatrixBase<Q>& q, const Eigen::MatrixBase<K>& k) const {
    return std::pow(dot_scale(q.size()) * q.dot(k) + offset_, T(degree_));
  }

 private:
  static int checked_degree(int degree) {
    require(degree >= 1, "Polynomial: degree must be an integer >= 1, got ", degree);
    return degree;
  }

  int degree_ = 2;
  T offset_ = T(1);
  DimensionDefault<T, SoftmaxScale> scale_;
};

}  // namespace kernattn::kernels
