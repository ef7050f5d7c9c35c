#pragma once
/// \file
/// Positive random features for the softmax kernel (Performer, FAVOR+).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

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
/// Stabilisers (docs/random_features.md): features are returned as \f$M^{-1/2}\exp(\Omega\tilde x_j
/// - c_j)\f$, \f$c_j = \max_m \omega_m\cdot\tilde x_j\f$, with the log-scale \f$s_j = c_j -
/// \lVert\tilde x_j\rVert^2/2\f$ (`has_log_scale`). For a query that is Performer's per-row
/// maximum (the factor cancels); for keys the engines combine \f$s_j\f$ across keys in the log
/// domain: the role of Performer's one global key maximum, without its overflow or underflow.
///
/// `epsilon` (default 0, the paper): Performer's reference code adds \f$\varepsilon = 10^{-4}\f$
/// (`performer_epsilon`) to its stabilised features, \f$M^{-1/2}(\exp(\Omega\tilde x -
/// \lVert\tilde x\rVert^2/2 - c) + \varepsilon)\f$. With \f$\varepsilon > 0\f$ the map is that
/// feature times \f$e^{c(x)}\f$, \f$c(x) = \max_m \omega_m\cdot\tilde x\f$:
/// \f[ \varphi^+_\varepsilon(x) = M^{-1/2}\big(\exp(\Omega\tilde x - \lVert\tilde
///     x\rVert^2/2) + \varepsilon\, e^{c(x)}\big), \f]
/// the paper's map at \f$\varepsilon = 0\f$ and, for queries, Performer's query feature up to a
/// per-query factor (which cancels). Performer's key features take \f$c\f$ as one
/// maximum over all keys instead, which a map of one row at a time cannot know; see
/// docs/random_features.md for the conventions and the size of the differences. Computed as
/// \f$M^{-1/2}(\exp(\Omega\tilde x - c - t) + \varepsilon e^{n - t})\f$ with the log-scale
/// \f$c - n + t\f$, \f$n = \lVert\tilde x\rVert^2/2\f$ and \f$t = \max(0, n + \log\varepsilon)\f$,
/// so no term overflows.
template <Real T>
class Positive {
 public:
  using Scalar = T;
  static constexpr bool non_negative = true;
  static constexpr bool has_log_scale = true;
  /// The \f$\varepsilon\f$ of Performer's reference code (`softmax_kernel_transformation`).
  static constexpr double performer_epsilon = 1e-4;

  /// From an \f$M \times d\f$ matrix of standard normal frequency rows, the input scale
  /// \f$\lambda\f$ (default \f$d^{-1/4}\f$) and \f$\varepsilon \ge 0\f$ (default 0).
  explicit Positive(Matrix<T> frequencies, std::optional<T> input_scale = std::nullopt,
                    double epsilon = 0.0)
      : frequencies_t_(std::move(frequencies)), epsilon_(epsilon) {
    detail::require_frequencies(frequencies_t_, "Positive", "the frequencies");
    if (input_scale) require_positive_finite(*input_scale, "Positive", "input_scale");
    require_non_negative_finite(epsilon, "Positive", "epsilon");
    input_scale_ =
        input_scale ? *input_scale : T(1) / std::sqrt(std::sqrt(T(frequencies_t_.cols())));
    frequencies_t_.transposeInPlace();
  }

  /// \f$M\f$ standard normal frequencies of dimension \f$d\f$ from `stream`: orthogonal random
  /// features (`Orthogonal<Gaussian>`, lower variance) unless `orthogonal` is false.
  [[nodiscard]] static Positive draw(Index frequencies, Index d, random::RandomStream stream,
                                     bool orthogonal = true,
                                     std::optional<T> input_scale = std::nullopt,
                                     double epsilon = 0.0) {
    const spectral::Gaussian<T> standard(T(1));
    Matrix<T> omega = orthogonal ? spectral::draw_frequencies(
                                       spectral::Orthogonal<spectral::Gaussian<T>>(standard),
                                       frequencies, d, stream)
                                 : spectral::draw_frequencies(standard, frequencies, d, stream);
    return Positive(std::move(omega), input_scale, epsilon);
  }

  [[nodiscard]] Index input_dimension() const { return frequencies_t_.rows(); }
  [[nodiscard]] Index feature_dimension() const { return frequencies_t_.cols(); }
  [[nodiscard]] T input_scale() const { return input_scale_; }
  [[nodiscard]] double epsilon() const { return epsilon_; }
  /// \f$\Omega\f$, \f$M \times d\f$.
  [[nodiscard]] Matrix<T> frequencies() const { return frequencies_t_.transpose(); }
  /// The same map (input scale, \f$\varepsilon\f$) with other frequencies (\f$M \times d\f$).
  [[nodiscard]] Positive with_frequencies(Matrix<T> frequencies) const {
    return Positive(std::move(frequencies), input_scale_, epsilon_);
  }

  /// \f$M^{-1/2}\exp(\Omega\tilde x_j - c_j)\f$, adding \f$c_j - \lVert\tilde x_j\rVert^2/2\f$
  /// to `log_scales(j)`; with \f$\varepsilon > 0\f$ the form above.
  template <class X>
  void features(const Eigen::MatrixBase<X>& x, Matrix<T>& out, Eigen::VectorXd& log_scales) const {
    Vector<T> row_max;
    exponentials(x, out, row_max);
    const double half_square_scale = 0.5 * double(input_scale_) * double(input_scale_);
    const Vector<T> squared_norms = x.rowwise().squaredNorm();  // column-wise: no strided rows
    for (Index j = 0; j < x.rows(); ++j)
      log_scales(j) += double(row_max(j)) - half_square_scale * double(squared_norms(j));
    if (epsilon_ > 0.0) add_epsilon(half_square_scale, squared_norms, out, log_scales);
  }

  /// The derivative of the stabilised form, with \f$\tilde\varphi_m = E_m + F\f$, \f$E_m =
  /// M^{-1/2}\exp(\lambda\omega_m\cdot x - c - t)\f$, \f$F = M^{-1/2}\varepsilon e^{n - t}\f$,
  /// \f$s = c - n + t\f$, \f$c = \lambda\omega_{m^*}\cdot x\f$ (\f$m^*\f$ the largest phase, the
  /// largest \f$E_m\f$), \f$n = \lambda^2\lVert x\rVert^2/2\f$, \f$u = \nabla n = \lambda^2 x\f$
  /// and \f$t' = [n + \log\varepsilon > 0]\f$: \f[ dx = \lambda\,(d\tilde\varphi \circ E)\,\Omega +
  /// \big(ds - \textstyle\sum_m
  ///     d\tilde\varphi_m E_m\big)\lambda\omega_{m^*} - t'\big(\textstyle\sum_m
  ///     d\tilde\varphi_m E_m\big)\,u + (1 - t')\big(F \textstyle\sum_m d\tilde\varphi_m -
  ///     ds\big)\,u. \f]
  ///
  /// The frequencies enter only through the phases \f$\lambda\,\omega_m\cdot x\f$, so with
  /// `d_frequencies` (\f$M \times d\f$, the shape of `frequencies()`) it also adds
  /// \f$\partial\ell/\partial\Omega = \lambda\,A^\top X\f$ to it, A the phases' adjoint (the
  /// matrix that multiplies \f$\lambda\Omega\f$ in dx).
  template <class X>
  void feature_gradient(const Eigen::MatrixBase<X>& x, const Matrix<T>& features,
                        const Matrix<T>& d_features, const Eigen::VectorXd& d_log_scales,
                        Matrix<T>& dx, Matrix<T>* d_frequencies = nullptr) const {
    detail::require_input_columns(x, input_dimension(), "Positive");
    const Index rows = x.rows();
    const Index M = frequencies_t_.cols();
    const T lambda = input_scale_;
    // F and t' per row (both 0 without epsilon).
    Vector<T> floor = Vector<T>::Zero(rows);
    Eigen::Array<bool, Eigen::Dynamic, 1> norm_bound =
        Eigen::Array<bool, Eigen::Dynamic, 1>::Zero(rows);
    if (epsilon_ > 0.0) {
      const double factor = 1.0 / std::sqrt(double(M));
      const double log_epsilon = std::log(epsilon_);
      const Vector<T> squared_norms = x.rowwise().squaredNorm();
      for (Index j = 0; j < rows; ++j) {
        const double n = 0.5 * double(lambda) * double(lambda) * double(squared_norms(j));
        norm_bound(j) = n + log_epsilon > 0.0;
        floor(j) = T(factor * std::exp(n + log_epsilon - std::max(0.0, n + log_epsilon)));
      }
    }
    // Column by column (no strided rows): d phi~ o E, its row sums, the row sums of d phi~ and
    // the largest feature of each row.
    thread_local Matrix<T> scaled_gradient;  // kept: a fresh tile would cost page faults
    scaled_gradient.resize(rows, M);
    Vector<T> through_exponentials = Vector<T>::Zero(rows);
    Vector<T> gradient_sums = Vector<T>::Zero(rows);
    Vector<T> largest_value = features.col(0);
    std::vector<std::int32_t> largest(static_cast<std::size_t>(rows), 0);
    for (Index m = 0; m < M; ++m) {
      scaled_gradient.col(m) = d_features.col(m).cwiseProduct(features.col(m) - floor);
      through_exponentials += scaled_gradient.col(m);
      gradient_sums += d_features.col(m);
      const T* column = features.col(m).data();
      T* best = largest_value.data();
      for (Index j = 0; j < rows; ++j) {  // branch-free, so that it vectorises
        const bool larger = column[j] > best[j];
        best[j] = larger ? column[j] : best[j];
        largest[std::size_t(j)] = larger ? std::int32_t(m) : largest[std::size_t(j)];
      }
    }
    // The direction term joins the product: row j of (d phi~ o E) + w_j e_{m*_j}, times Omega.
    Vector<T> norm_weights(rows);
    for (Index j = 0; j < rows; ++j) {
      scaled_gradient(j, largest[std::size_t(j)]) += T(d_log_scales(j)) - through_exponentials(j);
      norm_weights(j) = norm_bound(j) ? -through_exponentials(j)
                                      : floor(j) * gradient_sums(j) - T(d_log_scales(j));
    }
    dx.noalias() = (lambda * scaled_gradient) * frequencies_t_.transpose();
    dx.noalias() += (lambda * lambda * norm_weights).asDiagonal() * x;
    if (d_frequencies != nullptr)
      d_frequencies->noalias() += lambda * (scaled_gradient.transpose() * x);
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

  /// Turns \f$M^{-1/2}\exp(\Omega\tilde x_j - c_j)\f$ into \f$M^{-1/2}(\exp(\Omega\tilde x_j -
  /// c_j - t_j) + \varepsilon e^{n_j - t_j})\f$ and adds \f$t_j = \max(0, n_j + \log\varepsilon)\f$
  /// to `log_scales(j)`.
  void add_epsilon(double half_square_scale, const Vector<T>& squared_norms, Matrix<T>& out,
                   Eigen::VectorXd& log_scales) const {
    const double factor = 1.0 / std::sqrt(double(out.cols()));
    const double log_epsilon = std::log(epsilon_);
    Vector<T> shrink(out.rows());
    Vector<T> floor(out.rows());
    for (Index j = 0; j < out.rows(); ++j) {
      const double n = half_square_scale * double(squared_norms(j));
      const double t = std::max(0.0, n + log_epsilon);
      shrink(j) = T(std::exp(-t));
      floor(j) = T(factor * std::exp(n + log_epsilon - t));
      log_scales(j) += t;
    }
    for (Index m = 0; m < out.cols(); ++m)  // column by column: no strided rows
      out.col(m) = out.col(m).cwiseProduct(shrink) + floor;
  }

  Matrix<T> frequencies_t_;  ///< \f$\Omega^T\f$, d x M.
  T input_scale_;
  double epsilon_;
};

}  // namespace kernattn::features
