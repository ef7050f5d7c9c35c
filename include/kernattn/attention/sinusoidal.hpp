#pragma once
/// \file
/// The sinusoidal position encoding of Vaswani et al. (2017), as input to a position kernel.

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"

namespace kernattn {

/// The `tokens` x `dimension` matrix whose row r encodes position \f$p = \f$ `first` + r:
/// \f$PE(p, 2i) = \sin(p / b^{2i/d_t})\f$ and \f$PE(p, 2i+1) = \cos(p / b^{2i/d_t})\f$ for
/// \f$d_t\f$ = `dimension` and base \f$b\f$ (default 10000), evaluated in double and rounded to T.
///
/// With an even \f$d_t\f$ the squared distance of two encodings, \f$\sum_i 2 - 2\cos((p -
/// p')/b^{2i/d_t})\f$, depends only on \f$|p - p'|\f$, so any kernel of the distance (Rbf, Matern,
/// ...) on these positions is stationary in the token offset. An odd \f$d_t \ge 1\f$ is allowed:
/// its last column is the sine of frequency index \f$(d_t - 1)/2\f$ without its cosine, which
/// breaks that stationarity.
///
/// Throws InvalidArgument unless tokens >= 0, dimension >= 1 and the base is finite and > 0, with
/// every angle \f$p / b^{2i/d_t}\f$ finite: a base below 1 makes the frequencies grow, up to
/// \f$b^{-e}\f$ with \f$e = 2\lfloor (d_t - 1)/2\rfloor / d_t\f$, so it must be at least
/// \f$(\max_{\text{double}}/\max(|p|, 1))^{-1/e}\f$.
template <Real T>
[[nodiscard]] Matrix<T> sinusoidal_positions(Index tokens, Index dimension, double base = 10000.0,
                                             Index first = 0) {
  require(tokens >= 0, "sinusoidal_positions: tokens must be >= 0, got ", tokens);
  require(dimension >= 1, "sinusoidal_positions: dimension must be >= 1, got ", dimension);
  require_positive_finite(base, "sinusoidal_positions", "base");
  const double exponent = double(2 * ((dimension - 1) / 2)) / double(dimension);
  const double largest_position = std::max(
      {1.0, std::abs(double(first)), std::abs(double(first + std::max<Index>(tokens, 1) - 1))});
  const double largest_angle = largest_position * std::pow(base, -exponent);
  if (!std::isfinite(largest_angle)) {
    const double log_limit = std::log(std::numeric_limits<double>::max() / largest_position);
    const double bound = std::exp(-log_limit / exponent);
    const double unit = std::pow(10.0, std::floor(std::log10(bound)) - 2.0);  // 3 digits, up
    throw InvalidArgument(
        detail::concat("sinusoidal_positions: base = ", base, " makes the largest frequency base^-",
                       exponent, " times the position ", largest_position,
                       " overflow; with dimension ", dimension, " and positions up to ",
                       largest_position, " the base must be >= ", std::ceil(bound / unit) * unit));
  }
  Matrix<T> positions(tokens, dimension);
  for (Index c = 0; c < dimension; ++c) {
    const double frequency = std::pow(base, -double(c - c % 2) / double(dimension));
    for (Index r = 0; r < tokens; ++r) {
      const double angle = double(first + r) * frequency;
      positions(r, c) = T(c % 2 == 0 ? std::sin(angle) : std::cos(angle));
    }
  }
  return positions;
}

}  // namespace kernattn
