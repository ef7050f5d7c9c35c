#pragma once
/// \file
/// The correlation matrix of a Gaussian or Student-t copula, held as its Cholesky factor.

#include <Eigen/Cholesky>
#include <algorithm>
#include <cmath>
#include <string_view>
#include <vector>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"

namespace kernattn::coupling {

/// A validated \f$H \times H\f$ correlation matrix \f$R = L L^T\f$, stored as its lower-triangular
/// Cholesky factor \f$L\f$ with unit-norm rows (so that \f$\operatorname{diag} R = 1\f$).
class CorrelationFactor {
 public:
  /// From a correlation matrix \f$R\f$: finite, symmetric and with unit diagonal to within
  /// \f$10^{-12}\f$, and positive definite. Otherwise `InvalidArgument` naming the property that
  /// fails and, for the first two, the entry.
  CorrelationFactor(const Matrix<double>& correlation, std::string_view owner) {
    require_square(correlation, owner, "R");
    const Index size = correlation.rows();
    for (Index i = 0; i < size; ++i) {
      require(std::abs(correlation(i, i) - 1.0) <= tolerance, owner,
              ": R is not a correlation matrix: its diagonal must be 1, but R(", i, ",", i,
              ") = ", correlation(i, i));
      for (Index j = 0; j < i; ++j)
        require(std::abs(correlation(i, j) - correlation(j, i)) <= tolerance, owner,
                ": R is not symmetric: R(", i, ",", j, ") = ", correlation(i, j), " but R(", j, ",",
                i, ") = ", correlation(j, i));
    }
    const Matrix<double> symmetric = 0.5 * (correlation + correlation.transpose());
    const Eigen::LLT<Matrix<double>> cholesky(symmetric);
    require(cholesky.info() == Eigen::Success, owner, ": R (", detail::shape_of(correlation),
            ") is not positive definite");
    set_factor(cholesky.matrixL());
  }

  /// From a lower-triangular factor \f$L\f$ with a non-zero diagonal: \f$R\f$ is \f$L L^T\f$
  /// rescaled to unit diagonal, \f$D^{-1/2} L L^T D^{-1/2}\f$ with \f$D = \operatorname{diag}(L
  /// L^T)\f$, i.e. each row of \f$L\f$ divided by its norm.
  [[nodiscard]] static CorrelationFactor from_factor(const Matrix<double>& factor,
                                                     std::string_view owner) {
    require_square(factor, owner, "the factor L");
    for (Index i = 0; i < factor.rows(); ++i) {
      require(factor(i, i) != 0.0, owner, ": the factor L (", detail::shape_of(factor), ") has L(",
              i, ",", i, ") = 0, so L L^T is not positive definite");
      for (Index j = i + 1; j < factor.cols(); ++j)
        require(factor(i, j) == 0.0, owner, ": the factor L must be lower triangular, but L(", i,
                ",", j, ") = ", factor(i, j));
    }
    return CorrelationFactor(factor);
  }

  [[nodiscard]] Index size() const { return factor_.rows(); }
  /// \f$L\f$, lower triangular with unit-norm rows.
  [[nodiscard]] const Matrix<double>& factor() const { return factor_; }
  /// \f$R = L L^T\f$.
  [[nodiscard]] Matrix<double> correlation() const { return factor_ * factor_.transpose(); }
  /// Whether row h of \f$L\f$ is the unit vector \f$e_h\f$: head h is then independent of the
  /// heads before it and \f$z_h = \varepsilon_h\f$ exactly.
  [[nodiscard]] bool is_unit_row(Index h) const { return unit_rows_[std::size_t(h)]; }

  /// Whether \f$L = I\f$ (independent heads).
  [[nodiscard]] bool is_identity() const {
    return std::find(unit_rows_.begin(), unit_rows_.end(), false) == unit_rows_.end();
  }

  /// \f$z_h = \sum_{k \le h} L_{hk}\,\varepsilon_k\f$, summed in order of k with fused
  /// multiply-adds.
  [[nodiscard]] double correlated(Index h, const std::vector<double>& independent) const {
    double sum = 0.0;
    for (Index k = 0; k <= h; ++k) sum = std::fma(factor_(h, k), independent[std::size_t(k)], sum);
    return sum;
  }

 private:
  static constexpr double tolerance = 1e-12;

  explicit CorrelationFactor(const Matrix<double>& lower) { set_factor(lower); }

  static void require_square(const Matrix<double>& matrix, std::string_view owner,
                             std::string_view name) {
    require(matrix.rows() >= 1 && matrix.rows() == matrix.cols(), owner, ": ", name,
            " must be a non-empty square matrix (one row per head), got ",
            detail::shape_of(matrix));
    require(matrix.allFinite(), owner, ": ", name, " (", detail::shape_of(matrix),
            ") has a non-finite entry");
  }

  /// \f$L\f$ with each row divided by its norm, after an exact scaling by the power of 2 that
  /// brings its largest magnitude into [1, 2): then neither the squares of huge entries overflow
  /// nor those of tiny ones underflow (a row scaled by \f$10^{\pm200}\f$ normalises to the same
  /// row), and a row that needed no scaling gives the same bits as without it.
  void set_factor(const Matrix<double>& lower) {
    factor_ = lower.triangularView<Eigen::Lower>();
    unit_rows_.assign(std::size_t(factor_.rows()), false);
    for (Index h = 0; h < factor_.rows(); ++h) {
      const int exponent = std::ilogb(factor_.row(h).cwiseAbs().maxCoeff());
      factor_.row(h) =
          factor_.row(h).unaryExpr([exponent](double v) { return std::ldexp(v, -exponent); });
      factor_.row(h) /= factor_.row(h).norm();
      unit_rows_[std::size_t(h)] =
          factor_(h, h) == 1.0 && (h == 0 || factor_.row(h).head(h).cwiseAbs().maxCoeff() == 0.0);
    }
  }

  Matrix<double> factor_;
  std::vector<bool> unit_rows_;
};

}  // namespace kernattn::coupling
