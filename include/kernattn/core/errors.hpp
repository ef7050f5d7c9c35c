#pragma once
/// \file
/// The exception every kernattn function throws on bad input, and the checks that build its
/// messages. Messages name the argument and, for shapes, both shapes involved.

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

#include "kernattn/core/scalar_traits.hpp"

namespace kernattn {

/// Thrown for any invalid argument: wrong shapes, out-of-range or non-finite parameters.
/// Derives from std::invalid_argument so callers can catch either.
class InvalidArgument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {

/// Concatenates the streamable parts of a message.
template <class... Parts>
[[nodiscard]] std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

/// The shape of a matrix as messages print it, "5x64" (rows x columns). It formats only when
/// streamed, so that a `require` on a hot path builds no string unless it throws.
struct MatrixShape {
  Index rows;
  Index cols;

  friend std::ostream& operator<<(std::ostream& out, const MatrixShape& shape) {
    return out << shape.rows << 'x' << shape.cols;
  }
};

[[nodiscard]] inline MatrixShape shape_of(Index rows, Index cols) { return {rows, cols}; }

template <class Derived>
[[nodiscard]] MatrixShape shape_of(const Eigen::EigenBase<Derived>& m) {
  return {m.rows(), m.cols()};
}

}  // namespace detail

/// Throws InvalidArgument with the concatenated message parts unless `condition` holds.
template <class... Parts>
void require(bool condition, const Parts&... parts) {
  if (!condition) throw InvalidArgument(detail::concat(parts...));
}

/// Requires a finite parameter > 0; `owner` and `name` identify it, e.g. ("Rbf", "variance").
template <Real T>
void require_positive_finite(T value, std::string_view owner, std::string_view name) {
  require(std::isfinite(value) && value > T(0), owner, ": ", name,
          " must be a finite number > 0, got ", value);
}

/// Requires a finite parameter >= 0.
template <Real T>
void require_non_negative_finite(T value, std::string_view owner, std::string_view name) {
  require(std::isfinite(value) && value >= T(0), owner, ": ", name,
          " must be a finite number >= 0, got ", value);
}

/// Requires a finite parameter of any sign.
template <Real T>
void require_finite(T value, std::string_view owner, std::string_view name) {
  require(std::isfinite(value), owner, ": ", name, " must be finite, got ", value);
}

}  // namespace kernattn
