#pragma once
/// \file
/// The polynomial kernel, a direct (not positive-exponential) kernel.

#include <cmath>
#include <limits>
#include <string>

#include "kernattn/core/parameter.hpp"
#include "kernattn/kernels/kernel.hpp"

namespace kernattn::kernels {

/// \f$\kappa(q,k) = (a\, q\cdot k + c)^n\f$: scale \f$a\f$ (default \f$1/\sqrt{d}\f$), offset
/// \f$c \ge 0\f$ (default 1), integer degree \f$n \ge 1\f$ (default 2).
/// Odd degrees give negative weights; the engine normalises directly (see `DirectForm`).
///
/// Range: the direct form holds every weight and its row sum in T, without rescaling, so the
/// degree and the offset must leave room for ordinary inputs: \f$(c + 7)^n\f$, the weight of a
/// pair seven standard deviations out (\f$|a\,q\cdot k| = 7\f$ for unit-variance entries at the
/// default scale, which a billion pairs reach with probability below \f$10^{-2}\f$), summed over
/// \f$2^{32}\f$ keys, must stay below the largest T: \f$n\log_2(c + 7) + 32 < \log_2\max_T\f$
/// (just below 128 in float, 1024 in double), so \f$n \le 31\f$ in float and \f$n \le 330\f$ in
/// double at \f$c = 1\f$ (checked). Larger \f$|a\,q\cdot k|\f$ can still overflow: scale such
/// inputs down, or use a log-domain kernel.
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
    require_range();
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

  /// Replaces each \f$x = a\,q\cdot k\f$ by \f$h'(x) = n\,(x + c)^{n-1}\f$.
  template <class Block>
  void derivative_from_scaled_dot(Block&& block) const {
    if (degree_ == 1) {
      block.setConstant(T(1));
      return;
    }
    const Polynomial lower(degree_ - 1, offset_);
    lower.from_scaled_dot(block);
    block *= T(degree_);
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

  /// Requires \f$n\log_2(c + 7) + 32 < \log_2\max_T\f$ (see the class comment), naming the
  /// largest degree for this offset and the bound on the offset for this degree.
  void require_range() const {
    const double bits = std::log2(double(std::numeric_limits<T>::max()));
    const double per_degree = std::log2(double(offset_) + 7.0);
    if (degree_ * per_degree + 32.0 < bits) return;
    const int largest_degree = int(std::ceil((bits - 32.0) / per_degree)) - 1;
    const double offset_bound = std::exp2((bits - 32.0) / degree_) - 7.0;
    throw InvalidArgument(kernattn::detail::concat(
        "Polynomial: degree ", degree_, " with offset ", offset_, " overflows ",
        ScalarTraits<T>::name, ": weights (a q.k + c)^n reach (c + 7)^n = 2^", degree_ * per_degree,
        " at |a q.k| = 7, and a row of up to 2^32 keys must sum below the largest ",
        ScalarTraits<T>::name, " (2^", bits, "); ",
        largest_degree >= 1
            ? kernattn::detail::concat("with this offset the degree must be <= ", largest_degree)
            : std::string("no degree allows this offset"),
        offset_bound > 0.0
            ? kernattn::detail::concat(", with this degree the offset < ", offset_bound)
            : std::string(", and no offset allows this degree")));
  }

  int degree_ = 2;
  T offset_ = T(1);
  DimensionDefault<T, SoftmaxScale> scale_;
};

}  // namespace kernattn::kernels
