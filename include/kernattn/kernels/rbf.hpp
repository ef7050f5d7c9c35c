#pragma once
/// \file
/// The RBF (Gaussian) kernel, evaluated at the cost of softmax attention.

#include <cmath>

#include "kernattn/core/parameter.hpp"
#include "kernattn/core/parameters.hpp"
#include "kernattn/core/row_groups.hpp"
#include "kernattn/kernels/kernel.hpp"

namespace kernattn::kernels {

/// \f$\kappa(q,k) = \exp\!\big(-\lVert q-k\rVert^2 / (2\sigma^2)\big)\f$, default
/// \f$\sigma^2 = \sqrt{d}\f$.
///
/// Expanding the square, \f$\log\kappa = q\cdot k/\sigma^2 - \lVert q\rVert^2/(2\sigma^2)
/// - \lVert k\rVert^2/(2\sigma^2)\f$: a dot-product kernel with scale \f$1/\sigma^2\f$ and key term
/// \f$g(k) = -\lVert k\rVert^2/(2\sigma^2)\f$; the query term cancels. With the magnitude
/// \f$\mu(k) = \exp(\lVert k\rVert^2/(2\sqrt{d}))\f$ (`magnitude::Lp` at p = 2) and the default
/// variance this is exactly softmax attention (docs/math.md, section 1).
template <Real T>
class Rbf {
 public:
  using Scalar = T;
  using Form = DotProductForm;
  static constexpr bool has_key_term = true;

  /// \f$\sigma^2 = \sqrt{d}\f$.
  Rbf() = default;
  /// A fixed variance \f$\sigma^2 > 0\f$.
  explicit Rbf(T variance) : variance_(variance, "Rbf", "variance") {}

  [[nodiscard]] T variance(Index d) const { return variance_.resolve(d); }
  [[nodiscard]] T dot_scale(Index d) const { return T(1) / variance(d); }

  /// The trainable parameter (include/kernattn/core/parameters.hpp): the variance \f$\sigma^2\f$.
  [[nodiscard]] static std::vector<std::string> parameter_names() { return {"variance"}; }
  [[nodiscard]] Eigen::VectorXd parameters(Index d) const {
    return Eigen::VectorXd::Constant(1, double(variance(d)));
  }
  [[nodiscard]] Rbf with_parameters(const Eigen::VectorXd& values) const {
    require_parameter_count(values, parameter_names(), "Rbf");
    return Rbf(T(values(0)));
  }
  /// \f$\partial a/\partial\sigma^2 = -1/\sigma^4\f$.
  [[nodiscard]] Eigen::VectorXd dot_scale_parameter_gradient(Index d) const {
    const double variance = variance_.template resolve<double>(d);
    return Eigen::VectorXd::Constant(1, -1.0 / (variance * variance));
  }
  /// \f$\partial g(k)/\partial\sigma^2 = \lVert k\rVert^2 / (2\sigma^4)\f$, in double.
  template <class Row>
  [[nodiscard]] Eigen::VectorXd log_key_term_parameter_gradient(const Row& k) const {
    const double variance = variance_.template resolve<double>(k.size());
    return Eigen::VectorXd::Constant(
        1, k.template cast<double>().squaredNorm() * (0.5 / (variance * variance)));
  }

  /// \f$g(k) = -\lVert k\rVert^2 / (2\sigma^2)\f$, in double.
  /// \f$\lVert k\rVert^2\f$ sums its columns in order (`kernattn::detail::row_squared_norm`), as
  /// `magnitude::Lp` at p = 2 does, so that the two cancel exactly.
  template <class Row>
  [[nodiscard]] double log_key_term(const Row& k) const {
    return -kernattn::detail::row_squared_norm(k) *
           (0.5 / variance_.template resolve<double>(k.size()));
  }

  /// Adds \f$g(k_j)\f$ of every row j of `keys` to `log_terms(j)`, equal to `log_key_term` row
  /// by row, `kernattn::detail::row_group` keys at a time.
  template <class Keys, class LogTerms>
  void add_log_key_terms(const Keys& keys, LogTerms& log_terms) const {
    const double scale = 0.5 / variance_.template resolve<double>(keys.cols());
    kernattn::detail::for_each_row_group(keys.rows(), [&](Index first, Index count) {
      const kernattn::detail::GroupLanes norms =
          kernattn::detail::group_squared_norms(keys, first, count);
      for (Index r = 0; r < count; ++r) log_terms(first + r) += -norms(r) * scale;
    });
  }

  /// \f$\nabla g(k) = -k / \sigma^2\f$, in double.
  template <class Row>
  [[nodiscard]] Eigen::RowVectorXd log_key_term_gradient(const Row& k) const {
    return -k.template cast<double>() / variance_.template resolve<double>(k.size());
  }

  /// Adds \f$\nabla g(k_j)\f$ of every row j of `keys` to row j of `gradients`, equal to
  /// `log_key_term_gradient` row by row.
  template <class Keys, class Gradients>
  void add_log_key_term_gradients(const Keys& keys, Gradients& gradients) const {
    gradients -= keys.template cast<double>() / variance_.template resolve<double>(keys.cols());
  }

  template <class Q, class K>
  [[nodiscard]] T operator()(const Eigen::MatrixBase<Q>& q, const Eigen::MatrixBase<K>& k) const {
    return std::exp(-(q - k).squaredNorm() / (T(2) * variance(q.size())));
  }

 private:
  DimensionDefault<T, SoftmaxVariance> variance_;
};

}  // namespace kernattn::kernels
