#pragma once
/// \file
/// Positive random features for the softmax kernel (Performer, FAVOR+).

#include <cmath>
#include <optional>
#include <utility>

#include "kernattn/features/feature_map.hpp"
#include "kernattn/spectral/gaussian.hpp"
#include "kernattn/spectral/orthogonal.hpp"

namespace kernattn::features {

/// \f$\varphi^+(x) = M^{-1/2}\exp(\Omega\tilde x - \lVert\tilde x\rVert^2/2)\f$,
/// \f$\tilde x = \lambda x\f$, with standard normal frequency rows \f$\omega_m \sim N(0, I_d)\f$
/// and input scale \f$\lambda\f$ (default \f$d^{-1/4}\f$). Since
/// \f$E[\exp(\omega\cdot(\tilde q+\tilde k))] = \exp(\lVert\tilde q+\tilde k\rVert^2/2)\f$,
/// \f$\varphi^+(q)\cdot\varphi^+(k) \to \exp(\lambda^2\, q\cdot k)\f$: the softmax kernel
/// \f$\exp(q\cdot k/\sqrt d)\f$ by default, estimated with non-negative features
/// (Choromanski et al. 2021).
///
/// Stabilisers (DESIGN 1.4): features are returned as \f$M^{-1/2}\exp(\Omega\tilde x_j - c_j)\f$,
/// \f$c_j = \max_m \omega_m\cdot\tilde x_j\f$, with the log-scale \f$s_j = c_j -
/// \lVert\tilde x_j\rVert^2/2\f$ (`has_log_scale`). For a query that is Performer's per-row
/// maximum (the factor cancels); for keys the engines combine \f$s_j\f$ across keys in the log
/// domain: the role of Performer's one global key maximum, without its overflow or underflow.
template <Real T>
class Positive {
 public:
  using Scalar = T;
  static constexpr bool non_negative = true;
  static constexpr bool has_log_scale = true;

  /// From an \f$M \times d\f$ matrix of standard normal frequency rows and the input scale
  /// \f$\lambda\f$ (default \f$d^{-1/4}\f$).
  explicit Positive(Matrix<T> frequencies, std::optional<T> input_scale = std::nullopt)
      : frequencies_t_(std::move(frequencies)) {
    detail::require_frequencies(frequencies_t_, "Positive", "the frequencies");
    if (input_scale) require_positive_finite(*input_scale, "Positive", "input_scale");
    input_scale_ =
        input_scale ? *input_scale : T(1) / std::sqrt(std::sqrt(T(frequencies_t_.cols())));
    frequencies_t_.transposeInPlace();
  }

  /// \f$M\f$ standard normal frequencies of dimension \f$d\f$ from `stream`: orthogonal random
  /// features (`Orthogonal<Gaussian>`, lower variance) unless `orthogonal` is false.
  [[nodiscard]] static Positive draw(Index frequencies, Index d, random::RandomStream stream,
                                     bool orthogonal = true,
                                     std::optional<T> input_scale = std::nullopt) {
    const spectral::Gaussian<T> standard(T(1));
    Matrix<T> omega = orthogonal ? spectral::draw_frequencies(
                                       spectral::Orthogonal<spectral::Gaussian<T>>(standard),
                                       frequencies, d, stream)
                                 : spectral::draw_frequencies(standard, frequencies, d, stream);
    return Positive(std::move(omega), input_scale);
  }

  [[nodiscard]] Index input_dimension() const { return frequencies_t_.rows(); }
  [[nodiscard]] Index feature_dimension() const { return frequencies_t_.cols(); }
  [[nodiscard]] T input_scale() const { return input_scale_; }

  /// \f$M^{-1/2}\exp(\Omega\tilde x_j - c_j)\f$, adding \f$c_j - \lVert\tilde x_j\rVert^2/2\f$
  /// to `log_scales(j)`.
  template <class X>
  void features(const Eigen::MatrixBase<X>& x, Matrix<T>& out, Eigen::VectorXd& log_scales) const {
    Vector<T> row_max;
    exponentials(x, out, row_max);
    const double half_square_scale = 0.5 * double(input_scale_) * double(input_scale_);
    const Vector<T> squared_norms = x.rowwise().squaredNorm();  // column-wise: no strided rows
    for (Index j = 0; j < x.rows(); ++j)
      log_scales(j) += double(row_max(j)) - half_square_scale * double(squared_norms(j));
  }

 private:
  /// out = \f$M^{-1/2}\exp(P - c)\f$ with \f$P = \tilde x\,\Omega^T\f$ and row maxima \f$c\f$.
  template <class X>
  void exponentials(const Eigen::MatrixBase<X>& x, Matrix<T>& out, Vector<T>& row_max) const {
    detail::require_input_columns(x, input_dimension(), "Positive");
    out.noalias() = (input_scale_ * x) * frequencies_t_;
    row_max = out.rowwise().maxCoeff();
    const T factor = T(1) / std::sqrt(T(frequencies_t_.cols()));
    for (Index m = 0; m < out.cols(); ++m)
      out.col(m).array() = factor * (out.col(m) - row_max).array().exp();
  }

  Matrix<T> frequencies_t_;  ///< \f$\Omega^T\f$, d x M.
  T input_scale_;
};

}  // namespace kernattn::features
