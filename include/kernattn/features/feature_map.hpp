#pragma once
/// \file
/// The `FeatureMap` concept: a finite-dimensional map \f$\varphi: \mathbb{R}^d \to
/// \mathbb{R}^D\f$ whose inner products estimate a kernel, \f$\varphi(q)\cdot\varphi(k) \approx
/// \kappa(q, k)\f$ (docs/random_features.md). Feature maps drive both the quadratic random-feature
/// kernels
/// (`kernels::FeatureMapKernel`) and the linear-time engine (`LinearAttention`).
///
/// Rows are tokens: `features(X, out, log_scales)` maps an \f$N \times d\f$ block to the
/// \f$N \times D\f$ matrix `out` of scaled features \f$\tilde\varphi(x_j)\f$, with
/// \f$\varphi(x_j) = \tilde\varphi(x_j)\,e^{s_j}\f$; a map with `has_log_scale` adds \f$s_j\f$
/// to `log_scales(j)` (a vector of N entries, which it leaves alone otherwise). A factor far
/// beyond the float range so stays exact: the engines combine a key's \f$s_j\f$ with its
/// \f$\log\mu(k_j)\f$ in the log domain, and drop a query's, which cancels between the
/// numerator and the denominator of attention.
///  - `non_negative` says every feature is \f$\ge 0\f$: then every estimated weight is, too, and
///    the linear engine needs no denominator guard.
///
/// The smallest user-defined map (the identity, whose kernel is the linear kernel \f$q\cdot k\f$):
/// \code
/// struct Identity {
///   using Scalar = float;
///   static constexpr bool non_negative = false;
///   static constexpr bool has_log_scale = false;
///   kernattn::Index d = 64;
///   kernattn::Index input_dimension() const { return d; }
///   kernattn::Index feature_dimension() const { return d; }
///   template <class X> void features(const Eigen::MatrixBase<X>& x,
///                                    kernattn::Matrix<float>& out, Eigen::VectorXd&) const {
///     out = x;
///   }
/// };
/// \endcode

#include <cmath>
#include <concepts>
#include <string_view>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"

namespace kernattn::features {

template <class F>
concept FeatureMap = requires(const F map, const Matrix<typename F::Scalar>& x,
                              Matrix<typename F::Scalar>& out, Eigen::VectorXd& log_scales) {
  requires Real<typename F::Scalar>;
  { F::non_negative } -> std::convertible_to<bool>;
  { F::has_log_scale } -> std::convertible_to<bool>;
  { map.input_dimension() } -> std::convertible_to<Index>;
  { map.feature_dimension() } -> std::convertible_to<Index>;
  map.features(x, out, log_scales);
};

/// A feature map with a vector-Jacobian product, for the backward passes (docs/gradients.md):
/// `feature_gradient(x, features, d_features, d_log_scales, dx)` writes, row by row,
/// \f$dx_j = J_{\tilde\varphi}(x_j)^T\, d\tilde\varphi_j + \nabla s(x_j)\, ds_j\f$, where
/// `features` holds \f$\tilde\varphi(x)\f$ as `features` wrote it and `dx` is resized to x's shape.
/// Row j of dx depends on row j of the arguments alone.
template <class F>
concept DifferentiableFeatureMap = FeatureMap<F> &&
    requires(const F map, const Matrix<typename F::Scalar>& x,
             const Matrix<typename F::Scalar>& features,
             const Matrix<typename F::Scalar>& d_features, const Eigen::VectorXd& d_log_scales,
             Matrix<typename F::Scalar>& dx) {
  map.feature_gradient(x, features, d_features, d_log_scales, dx);
};

namespace detail {

/// Requires a frequency matrix with at least one row and column and finite entries.
template <class Frequencies>
void require_frequencies(const Frequencies& frequencies, std::string_view owner,
                         std::string_view name) {
  require(frequencies.rows() >= 1, owner, ": ", name,
          " must have at least one row (M, the number of frequencies, must be >= 1); it is ",
          kernattn::detail::shape_of(frequencies));
  require(frequencies.cols() >= 1, owner, ": ", name,
          " must have at least one column (the dimension d); it is ",
          kernattn::detail::shape_of(frequencies));
  require(frequencies.allFinite(), owner, ": ", name, " must be finite");
}

/// Requires tokens of the map's input dimension.
template <class X>
void require_input_columns(const X& x, Index d, std::string_view owner) {
  require(x.cols() == d, owner, ": the input is ", kernattn::detail::shape_of(x),
          " but the map takes ", d, " columns (its frequencies are d = ", d, " wide)");
}

}  // namespace detail
}  // namespace kernattn::features
