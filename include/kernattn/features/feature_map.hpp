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

/// A differentiable map whose frequencies can be trained (docs/gradients.md, "Feature maps"):
/// `frequencies()` (one frequency per row), `with_frequencies(frequencies)` (the same map with
/// others) and `feature_gradient(x, features, d_features, d_log_scales, dx, &d_frequencies)`,
/// which also adds \f$\partial\ell/\partial\Omega\f$ (the shape of `frequencies()`) to
/// `d_frequencies`.
template <class F>
concept FrequencyFeatureMap = DifferentiableFeatureMap<F> &&
    requires(const F map, const Matrix<typename F::Scalar>& x, const Eigen::VectorXd& d_log_scales,
             Matrix<typename F::Scalar>& dx, Matrix<typename F::Scalar>* d_frequencies) {
  { map.frequencies() } -> std::convertible_to<Matrix<typename F::Scalar>>;
  { map.with_frequencies(x) } -> std::convertible_to<F>;
  map.feature_gradient(x, x, x, d_log_scales, dx, d_frequencies);
};

/// A kernel through a feature map whose frequencies can be trained: its `FeatureMap` (the map of
/// `kernels::RandomFeature` and `kernels::IkaEnergy`) is a `FrequencyFeatureMap`. False, not an
/// error, for a kernel without a `FeatureMap`.
template <class K>
concept FrequencyKernel = requires {
  typename K::FeatureMap;
}
&&FrequencyFeatureMap<typename K::FeatureMap>;

/// `map.feature_gradient(x, features, d_features, d_log_scales, dx)`, adding the frequencies'
/// gradient to `*d_frequencies` when it is not null (a `FrequencyFeatureMap`; null otherwise).
template <DifferentiableFeatureMap Map, class X>
void feature_gradient_of(const Map& map, const X& x, const Matrix<typename Map::Scalar>& features,
                         const Matrix<typename Map::Scalar>& d_features,
                         const Eigen::VectorXd& d_log_scales, Matrix<typename Map::Scalar>& dx,
                         Matrix<typename Map::Scalar>* d_frequencies) {
  if constexpr (FrequencyFeatureMap<Map>)
    map.feature_gradient(x, features, d_features, d_log_scales, dx, d_frequencies);
  else
    map.feature_gradient(x, features, d_features, d_log_scales, dx);
}

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
