#pragma once
/// \file
/// The `Kernel` concept: the similarity \f$\kappa(q, k)\f$ of the kernel smoother
/// \f$ out_i = \sum_j w_{ij} v_j / \sum_j w_{ij},\ w_{ij} = \kappa(q_i, k_j)\,\mu(k_j) \f$.
///
/// A kernel declares one of five forms; the engine picks its evaluation from the form:
///  - `DotProductForm`: \f$\log\kappa(q,k) = a\,(q\cdot k) + f(q) + g(k)\f$. Runs as one GEMM plus
///    a per-key bias \f$g(k)\f$ and an online softmax: the cost of softmax attention. The query
///    term \f$f(q)\f$ cancels in the ratio and is never computed.
///  - `DistanceForm`: \f$\log\kappa(q,k) = h(\lVert q-k\rVert^2)\f$. Runs as a GEMM for the
///    squared distances \f$\lVert q\rVert^2 + \lVert k\rVert^2 - 2\,q\cdot k\f$, an element-wise
///    map \f$h\f$, then the same online softmax.
///  - `DirectForm`: \f$\kappa(q,k) = h(a\,(q\cdot k))\f$, a value that may be zero or negative
///    (polynomial, linear). Normalised directly: \f$\sum_j w_{ij} v_j / \sum_j w_{ij}\f$, and a
///    row whose weights sum to exactly zero outputs zeros.
///  - `FeatureForm`: \f$\kappa(q,k) = h(\varphi(q)\cdot\psi(k))\f$ through a feature map
///    (random features). Runs as a GEMM of query features against key features computed once per
///    key, then either the online softmax (\f$h\f$ gives \f$\log\kappa\f$) or direct
///    normalisation (\f$h\f$ gives \f$\kappa\f$).
///  - `ProductForm`: \f$\kappa((f_q,t_q),(f_k,t_k)) = \kappa_F(f_q,f_k)\,\kappa_T(t_q,t_k)\f$ on
///    inputs \f$[f \mid t]\f$ whose last \f$d_t\f$ columns are positions (docs/math.md, section 4,
///    see `Product`). Both factors are dot-product or distance kernels, so \f$\log\kappa =
///    \log\kappa_F
///    + \log\kappa_T\f$: each factor runs as a GEMM on its own columns (one GEMM for two
///    dot-product factors), their key terms add up to one per-key bias, then the same online
///    softmax.
///
/// The smallest user-defined kernel (a dot-product kernel with a temperature):
/// \code
/// struct Tempered {
///   using Scalar = float;
///   using Form = kernattn::kernels::DotProductForm;
///   static constexpr bool has_key_term = false;
///   float temperature = 2.0f;
///   float dot_scale(kernattn::Index) const { return 1.0f / temperature; }
///   template <class Row> double log_key_term(const Row&) const { return 0.0; }
///   template <class Row> float operator()(const Row& q, const Row& k) const {
///     return std::exp(q.dot(k) / temperature);
///   }
/// };
/// \endcode

#include <concepts>
#include <string>
#include <vector>

#include "kernattn/core/scalar_traits.hpp"

namespace kernattn::kernels {

/// \f$\log\kappa(q,k) = a\,(q\cdot k) + f(q) + g(k)\f$.
struct DotProductForm {};
/// \f$\log\kappa(q,k) = h(\lVert q-k\rVert^2)\f$.
struct DistanceForm {};
/// \f$\kappa(q,k) = h(a\,(q\cdot k))\f$, possibly zero or negative.
struct DirectForm {};
/// \f$\kappa(q,k) = h(\varphi(q)\cdot\psi(k))\f$ for a feature map.
struct FeatureForm {};
/// \f$\kappa((f_q,t_q),(f_k,t_k)) = \kappa_F(f_q,f_k)\,\kappa_T(t_q,t_k)\f$, two log-domain
/// factors.
struct ProductForm {};

namespace detail {
template <Real T>
using RowVector = Eigen::Matrix<T, 1, Eigen::Dynamic>;
template <Real T>
using ScoreBlock = Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic>;
}  // namespace detail

/// What every kernel has: a scalar type, a form, and a pairwise value \f$\kappa(q,k)\f$.
template <class K>
concept KernelBase = requires(const K kernel, const detail::RowVector<typename K::Scalar> row) {
  requires Real<typename K::Scalar>;
  typename K::Form;
  { kernel(row, row) } -> std::convertible_to<typename K::Scalar>;
};

/// A kernel with \f$\log\kappa(q,k) = a\,(q\cdot k) + f(q) + g(k)\f$: `dot_scale(d)` is
/// \f$a\f$, `log_key_term(k)` is \f$g(k)\f$ (in double), and `has_key_term` is false when
/// \f$g \equiv 0\f$ so the engine skips it.
template <class K>
concept DotProductKernel = KernelBase<K> && std::same_as<typename K::Form, DotProductForm> &&
    requires(const K kernel, Index d, const detail::RowVector<typename K::Scalar> row) {
  { kernel.dot_scale(d) } -> std::convertible_to<typename K::Scalar>;
  { kernel.log_key_term(row) } -> std::convertible_to<double>;
  { K::has_key_term } -> std::convertible_to<bool>;
};

/// A kernel with \f$\log\kappa(q,k) = h(\lVert q-k\rVert^2)\f$:
/// `log_from_squared_distance(block, d)` replaces every squared distance in the block by
/// \f$h\f$ of it (the block may hold tiny negative values from rounding: treat them as 0).
template <class K>
concept DistanceKernel = KernelBase<K> && std::same_as<typename K::Form, DistanceForm> &&
    requires(const K kernel, Index d, detail::ScoreBlock<typename K::Scalar>& block) {
  kernel.log_from_squared_distance(block, d);
};

/// A distance kernel with \f$\log\kappa = e(r^2) + \log P(r^2)\f$ for a factor \f$1 \le P <
/// \infty\f$: `exponent_and_prefactor(d)` returns a function object `split` such that
/// `split(r2, e, P)` writes \f$e\f$ and \f$P\f$ of the squared distance `r2`, for a scalar and an
/// Eigen packet alike. The exact engine's block path then forms weights as \f$P\,e^{e - m}\f$,
/// with no logarithm per score (the Matérn kernels at \f$\nu = 3/2, 5/2\f$).
template <class K>
concept PrefactoredDistanceKernel = DistanceKernel<K> &&
    requires(const K kernel, Index d, typename K::Scalar value) {
  kernel.exponent_and_prefactor(d)(value, value, value);
};

/// A kernel with \f$\kappa(q,k) = h(a\,(q\cdot k))\f$: `dot_scale(d)` is \f$a\f$ and
/// `from_scaled_dot(block)` replaces every \f$a\,(q\cdot k)\f$ in the block by \f$h\f$ of it.
template <class K>
concept DirectKernel = KernelBase<K> && std::same_as<typename K::Form, DirectForm> &&
    requires(const K kernel, Index d, detail::ScoreBlock<typename K::Scalar>& block) {
  { kernel.dot_scale(d) } -> std::convertible_to<typename K::Scalar>;
  kernel.from_scaled_dot(block);
};

/// A kernel through a feature map: `features(X, out, log_scales)` writes the scaled features
/// \f$\tilde\varphi(x_j)\f$ of the rows of X, with \f$\varphi(x_j) =
/// \tilde\varphi(x_j)\,e^{s_j}\f$, adding \f$s_j\f$ to `log_scales(j)` when `has_log_scale` (see
/// `features::FeatureMap`); `from_feature_dot(block)` replaces each
/// \f$\tilde\varphi(q)\cdot\tilde\varphi(k)\f$ by \f$h\f$ of it: \f$\log\kappa\f$ when
/// `log_domain`, else \f$\kappa\f$. The engine adds \f$s_j\f$ of key j to its log-weight (a key
/// bias) and drops the queries' \f$s_i\f$, which cancel; a log-domain kernel must therefore have no
/// log-scales.
template <class K>
concept FeatureMapKernel = KernelBase<K> && std::same_as<typename K::Form, FeatureForm> &&
    requires(const K kernel, const Matrix<typename K::Scalar>& x, Matrix<typename K::Scalar>& out,
             Eigen::VectorXd& log_scales, detail::ScoreBlock<typename K::Scalar>& block) {
  { K::log_domain } -> std::convertible_to<bool>;
  { K::has_log_scale } -> std::convertible_to<bool>;
  kernel.features(x, out, log_scales);
  kernel.from_feature_dot(block);
};

/// A kernel the exact engine evaluates as \f$\log\kappa\f$ from a GEMM of its inputs themselves:
/// a dot-product or a distance kernel. The factors of a product kernel are of this kind.
template <class K>
concept LogDomainKernel = DotProductKernel<K> || DistanceKernel<K>;

/// A kernel on inputs \f$[f \mid t]\f$ (the last `position_dimension()` columns are t) with
/// \f$\log\kappa = \log\kappa_F(f_q,f_k) + \log\kappa_T(t_q,t_k)\f$ for two log-domain kernels:
/// `feature_kernel()` (\f$\kappa_F\f$, of type `FeatureKernel`), `position_kernel()`
/// (\f$\kappa_T\f$, of type `PositionKernel`); `feature_columns(d)` is \f$d - d_t\f$ for inputs
/// of d columns and throws `InvalidArgument` unless it is at least 1; `log_key_term(k)` is the sum
/// of the dot-product factors' key terms \f$g\f$ on their columns, and `has_key_term` is false
/// when it vanishes.
template <class K>
concept ProductKernel = KernelBase<K> && std::same_as<typename K::Form, ProductForm> &&
    LogDomainKernel<typename K::FeatureKernel> && LogDomainKernel<typename K::PositionKernel> &&
    requires(const K kernel, Index d, const detail::RowVector<typename K::Scalar> row) {
  { kernel.feature_kernel() } -> std::convertible_to<const typename K::FeatureKernel&>;
  { kernel.position_kernel() } -> std::convertible_to<const typename K::PositionKernel&>;
  { kernel.position_dimension() } -> std::convertible_to<Index>;
  { kernel.feature_columns(d) } -> std::convertible_to<Index>;
  { kernel.log_key_term(row) } -> std::convertible_to<double>;
  { K::has_key_term } -> std::convertible_to<bool>;
};

/// Any kernel the engines can evaluate.
template <class K>
concept Kernel = DotProductKernel<K> || DistanceKernel<K> || DirectKernel<K> ||
    FeatureMapKernel<K> || ProductKernel<K>;

namespace detail {
/// A key term the backward passes can differentiate: none, or `log_key_term_gradient(k)`,
/// \f$\nabla g(k)\f$ in double.
template <class K>
concept DifferentiableKeyTerm =
    !K::has_key_term || requires(const K kernel, const RowVector<typename K::Scalar> row) {
  { kernel.log_key_term_gradient(row) } -> std::convertible_to<Eigen::RowVectorXd>;
};

/// A log-domain kernel the backward passes can differentiate.
template <class K>
concept DifferentiableLogDomainKernel =
    (DotProductKernel<K> && DifferentiableKeyTerm<K>) ||
    (DistanceKernel<K> && requires(const K kernel, Index d, ScoreBlock<typename K::Scalar>& block) {
      kernel.log_derivative_from_squared_distance(block, d);
    });
}  // namespace detail

/// A kernel the backward passes can differentiate (docs/gradients.md): a dot-product kernel with
/// \f$\nabla g\f$ (`log_key_term_gradient(k)`) where it has a key term; a distance kernel with
/// `log_derivative_from_squared_distance(block, d)`, which replaces each \f$r^2\f$ by
/// \f$h'(r^2)\f$; a direct kernel with `derivative_from_scaled_dot(block)`, which replaces each
/// \f$x\f$ by \f$h'(x)\f$; a product of two such log-domain kernels; a feature-map kernel with
/// `derivative_from_feature_dot(block)` (each \f$x = \tilde\varphi(q)\cdot\tilde\varphi(k)\f$ by
/// \f$h'(x)\f$), the map's `feature_gradient` and, with log-scales, `log_key_term_gradient(k)`.
template <class K>
concept DifferentiableKernel =
    detail::DifferentiableLogDomainKernel<K> ||
    (FeatureMapKernel<K>&& requires(const K kernel, const Matrix<typename K::Scalar>& x,
                                    const Eigen::VectorXd& log_scales,
                                    Matrix<typename K::Scalar>& dx,
                                    detail::ScoreBlock<typename K::Scalar>& block) {
      kernel.derivative_from_feature_dot(block);
      kernel.feature_gradient(x, x, x, log_scales, dx);
    } &&
     (!K::has_log_scale ||
      requires(const K kernel, const detail::RowVector<typename K::Scalar> row) {
        { kernel.log_key_term_gradient(row) } -> std::convertible_to<Eigen::RowVectorXd>;
      })) ||
    (DirectKernel<K> &&
     requires(const K kernel, detail::ScoreBlock<typename K::Scalar>& block) {
       kernel.derivative_from_scaled_dot(block);
     }) ||
    (ProductKernel<K> && detail::DifferentiableKeyTerm<K> &&
     detail::DifferentiableLogDomainKernel<typename K::FeatureKernel> &&
     detail::DifferentiableLogDomainKernel<typename K::PositionKernel>);

/// A kernel whose parameters the exact engine's backward pass differentiates (docs/gradients.md,
/// "Parameters"): `parameter_names()`, `parameters(d)` and `with_parameters(values)`
/// (include/kernattn/core/parameters.hpp), and the derivatives of its scores:
///  - a dot-product kernel: `dot_scale_parameter_gradient(d)`, \f$\partial a/\partial\theta\f$,
///    and with a key term `log_key_term_parameter_gradient(k)`, \f$\partial g(k)/\partial\theta\f$;
///  - a distance kernel: `add_log_parameter_gradients(r2, G, d, sums)`, which adds
///    \f$\sum G\,\partial h(r^2)/\partial\theta\f$ over a block to `sums`.
template <class K>
concept ParametricKernel = Kernel<K> &&
    requires(const K kernel, Index d, const Eigen::VectorXd values) {
  { kernel.parameter_names() } -> std::convertible_to<std::vector<std::string>>;
  { kernel.parameters(d) } -> std::convertible_to<Eigen::VectorXd>;
  { kernel.with_parameters(values) } -> std::convertible_to<K>;
} &&((DotProductKernel<K> &&
      requires(const K kernel, Index d, const Eigen::RowVectorXd row) {
        { kernel.dot_scale_parameter_gradient(d) } -> std::convertible_to<Eigen::VectorXd>;
      } &&
      (!K::has_key_term ||
       requires(const K kernel, const Eigen::RowVectorXd row) {
         { kernel.log_key_term_parameter_gradient(row) } -> std::convertible_to<Eigen::VectorXd>;
       })) ||
     (DistanceKernel<K> &&
      requires(const K kernel, Index d,
               const Eigen::Array<typename K::Scalar, Eigen::Dynamic, Eigen::Dynamic> block,
               Eigen::VectorXd& sums) {
        kernel.add_log_parameter_gradients(block, block, d, sums);
      }));

}  // namespace kernattn::kernels
