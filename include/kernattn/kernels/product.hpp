#pragma once
/// \file
/// The product kernel of positional attention (Tsai et al. 2019; docs/math.md, section 4): a
/// feature kernel times a position kernel, on inputs that carry both.

#include <type_traits>
#include <utility>

#include "kernattn/core/errors.hpp"
#include "kernattn/kernels/kernel.hpp"

namespace kernattn::kernels {

namespace detail {
/// Whether a log-domain kernel has a key term \f$g(k)\f$ (only dot-product kernels can).
template <class K>
constexpr bool has_own_key_term() {
  if constexpr (DotProductKernel<K>) return K::has_key_term;
  return false;
}
}  // namespace detail

/// \f$\kappa((f_q,t_q),(f_k,t_k)) = \kappa_F(f_q,f_k)\,\kappa_T(t_q,t_k)\f$ on inputs
/// \f$x = [f \mid t]\f$: the first \f$d = d_x - d_t\f$ columns are the features f, the last
/// \f$d_t\f$ (`position_dimension()`) the positions t. Each factor sees only its own columns, so
/// its dimension-dependent defaults use its own dimension: an `Exponential` feature kernel scales
/// by \f$1/\sqrt d\f$, an `Rbf` position kernel has variance \f$\sqrt{d_t}\f$.
///
/// Both factors must be log-domain kernels (`DotProductForm`: Exponential, Rbf;
/// `DistanceForm`: Laplacian, Matern, RationalQuadratic). Then \f$\log\kappa = \log\kappa_F +
/// \log\kappa_T\f$ and the exact engine evaluates a tile of it with one GEMM per factor on the
/// factor's columns (one GEMM in all for two dot-product factors, whose product is a dot-product
/// kernel with a scale per column block), the factors' key terms as one per-key bias, and the
/// online softmax; a distance factor's squared distances are as accurate as the distance form's
/// (docs/numerics.md). A direct factor (Polynomial, Linear) is rejected at compile time: its values
/// can be zero or negative, so the product has no logarithm, and evaluating the product outside
/// the log domain would multiply it by an exponential factor that can overflow.
///
/// A magnitude \f$\mu(f_k)\f$ of the features alone goes through `magnitude::FeaturePart`;
/// `PositionalAttention` sets \f$d_t\f$ for every call and hands the engine the inputs
/// \f$[f \mid t]\f$ as views of the features and positions (`detail::JoinedColumns`), whose
/// factors' columns the engine reads one side at a time.
template <Kernel KernelF, Kernel KernelT>
class Product {
  static_assert(LogDomainKernel<KernelF>,
                "Product: the feature kernel must be a dot-product or distance kernel; a direct "
                "kernel (Polynomial, Linear) can be zero or negative, so the product has no "
                "logarithm, and outside the log domain the other factor could overflow");
  static_assert(LogDomainKernel<KernelT>,
                "Product: the position kernel must be a dot-product or distance kernel; a direct "
                "kernel (Polynomial, Linear) can be zero or negative, so the product has no "
                "logarithm, and outside the log domain the other factor could overflow");
  static_assert(std::is_same_v<typename KernelF::Scalar, typename KernelT::Scalar>,
                "Product: both kernels must have the same scalar type");

 public:
  using Scalar = typename KernelF::Scalar;
  using Form = ProductForm;
  using FeatureKernel = KernelF;
  using PositionKernel = KernelT;
  static constexpr bool has_key_term =
      detail::has_own_key_term<KernelF>() || detail::has_own_key_term<KernelT>();

  /// Default factors, one position column.
  Product() = default;
  /// The two factors and the number \f$d_t \ge 1\f$ of position columns.
  Product(KernelF feature_kernel, KernelT position_kernel, Index position_dimension)
      : feature_(std::move(feature_kernel)),
        position_(std::move(position_kernel)),
        position_dimension_(position_dimension) {
    require(position_dimension >= 1, "Product: the position dimension must be >= 1, got ",
            position_dimension);
  }

  [[nodiscard]] const KernelF& feature_kernel() const { return feature_; }
  [[nodiscard]] const KernelT& position_kernel() const { return position_; }
  [[nodiscard]] Index position_dimension() const { return position_dimension_; }

  /// \f$d = d_x - d_t\f$ for inputs of \f$d_x\f$ columns; throws InvalidArgument unless d >= 1.
  [[nodiscard]] Index feature_columns(Index input_columns) const {
    require(input_columns > position_dimension_, "Product: inputs have ", input_columns,
            " columns but the last ", position_dimension_,
            " are positions: at least one feature column is needed");
    return input_columns - position_dimension_;
  }

  /// \f$g(k) = g_F(f_k) + g_T(t_k)\f$, the key terms of the dot-product factors (in double).
  template <class Row>
  [[nodiscard]] double log_key_term(const Row& k) const {
    const Index d = feature_columns(k.size());
    double term = 0.0;
    if constexpr (detail::has_own_key_term<KernelF>()) term += feature_.log_key_term(k.head(d));
    if constexpr (detail::has_own_key_term<KernelT>())
      term += position_.log_key_term(k.tail(k.size() - d));
    return term;
  }

  /// \f$\nabla g(k) = [\nabla g_F(f_k) \mid \nabla g_T(t_k)]\f$, zero on a factor without a key
  /// term (in double).
  template <class Row>
  [[nodiscard]] Eigen::RowVectorXd log_key_term_gradient(const Row& k) const {
    const Index d = feature_columns(k.size());
    Eigen::RowVectorXd gradient = Eigen::RowVectorXd::Zero(k.size());
    if constexpr (detail::has_own_key_term<KernelF>())
      gradient.head(d) = feature_.log_key_term_gradient(k.head(d));
    if constexpr (detail::has_own_key_term<KernelT>())
      gradient.tail(k.size() - d) = position_.log_key_term_gradient(k.tail(k.size() - d));
    return gradient;
  }

  template <class Q, class K>
  [[nodiscard]] Scalar operator()(const Eigen::MatrixBase<Q>& q,
                                  const Eigen::MatrixBase<K>& k) const {
    const Index d = feature_columns(q.size());
    return feature_(q.head(d), k.head(d)) *
           position_(q.tail(position_dimension_), k.tail(position_dimension_));
  }

 private:
  KernelF feature_{};
  KernelT position_{};
  Index position_dimension_ = 1;
};

}  // namespace kernattn::kernels
