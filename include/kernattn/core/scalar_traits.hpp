#pragma once
/// \file
/// The scalar types kernattn computes in and the Eigen types it uses for them.

#include <Eigen/Core>
#include <concepts>
#include <limits>
#include <string_view>

namespace kernattn {

using Index = Eigen::Index;

/// The floating-point types every kernel, magnitude and engine is instantiated for.
template <class T>
concept Real = std::same_as<T, float> || std::same_as<T, double>;

/// A column-major dynamic matrix: one token per row, one feature per column.
template <Real T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

/// A row-major dynamic matrix: the layout of rows the engines read one at a time (a graph
/// engine's keys and values, the close pairs of a distance tile).
template <Real T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <Real T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

/// Facts about a scalar type that the engines and error messages need.
template <Real T>
struct ScalarTraits {
  static constexpr T negative_infinity = -std::numeric_limits<T>::infinity();
  static constexpr std::string_view name = std::same_as<T, float> ? "float" : "double";
};

}  // namespace kernattn
