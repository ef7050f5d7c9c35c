#pragma once
/// \file
/// The two-frequency (Yaglom) random features of the official implicit kernel attention code.

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <utility>

#include "kernattn/features/feature_map.hpp"
#include "kernattn/spectral/sampler.hpp"

namespace kernattn::features {

/// \f$\varphi(x) = \frac{1}{2\sqrt M}\,[\cos(c\,\Omega_1 x) + \cos(c\,\Omega_2 x);
/// \sin(c\,\Omega_1 x) + \sin(c\,\Omega_2 x)] \in \mathbb{R}^{2M}\f$ (docs/conventions.md), with
/// two \f$M \times d\f$ frequency sets and a frequency scale \f$0 < c \le 1/\epsilon_T\f$ (beyond
/// it even a unit frequency and input give a phase that T does not resolve to a radian) such that
/// every \f$c\,\omega\f$ is finite in T (both checked).
///
/// Then \f$\varphi(q)\cdot\varphi(k) = \frac{1}{4M}\sum_m \sum_{a,b\in\{1,2\}}
/// \cos(c\,(\omega_{a,m}\cdot q - \omega_{b,m}\cdot k))\f$: a non-stationary (Yaglom-type)
/// kernel estimate in \f$[-1, 1]\f$; with \f$\Omega_1 = \Omega_2\f$ it is `Fourier` of
/// \f$c\,\Omega\f$. The official code computes the same sum unnormalised and divides the inner
/// product by \f$4M\f$; here the \f$1/(2\sqrt M)\f$ is in the features.
template <Real T>
class Yaglom {
 public:
  using Scalar = T;
  static constexpr bool non_negative = false;
  static constexpr bool has_log_scale = false;

  /// From two \f$M \times d\f$ frequency sets (one frequency per row) and the scale \f$c\f$.
  Yaglom(Matrix<T> first, Matrix<T> second, T frequency_scale = T(1)) {
    detail::require_frequencies(first, "Yaglom", "the first frequency set");
    detail::require_frequencies(second, "Yaglom", "the second frequency set");
    require(first.rows() == second.rows() && first.cols() == second.cols(),
            "Yaglom: the two frequency sets must have the same shape, got ",
            kernattn::detail::shape_of(first), " and ", kernattn::detail::shape_of(second));
    require_positive_finite(frequency_scale, "Yaglom", "frequency_scale");
    const double largest_scale = 1.0 / double(std::numeric_limits<T>::epsilon());
    require(double(frequency_scale) <= largest_scale, "Yaglom: frequency_scale c must lie in (0, ",
            largest_scale, "] (1/epsilon of ", ScalarTraits<T>::name,
            ": beyond it the phase c omega.x of a unit frequency and input is not resolved to a "
            "radian, and the phases of ordinary inputs overflow), got ",
            frequency_scale);
    const double largest = std::max(first.cwiseAbs().maxCoeff(), second.cwiseAbs().maxCoeff());
    const double limit = double(std::numeric_limits<T>::max());
    require(double(frequency_scale) * largest <= limit,
            "Yaglom: frequency_scale c = ", frequency_scale, " times the largest |frequency| ",
            largest, " is beyond the largest ", ScalarTraits<T>::name, " ", limit,
            "; for these frequencies c must be <= ", limit / largest);
    const Index M = first.rows();
    frequency_scale_ = frequency_scale;
    scaled_t_.resize(first.cols(), 2 * M);
    scaled_t_.leftCols(M) = frequency_scale * first.transpose();
    scaled_t_.rightCols(M) = frequency_scale * second.transpose();
  }

  /// The official layout: \f$W_1, W_2 \in \mathbb{R}^{d \times M}\f$ (one frequency per column)
  /// with the official frequency scale \f$c = 2\pi\f$.
  [[nodiscard]] static Yaglom from_official(const Matrix<T>& w1, const Matrix<T>& w2) {
    return Yaglom(w1.transpose(), w2.transpose(), std::numbers::pi_v<T> * T(2));
  }

  /// Both sets drawn from `sampler` with `stream`: \f$2M\f$ frequencies, the first \f$M\f$ rows
  /// are \f$\Omega_1\f$, the last \f$M\f$ rows \f$\Omega_2\f$.
  template <spectral::SpectralSampler Sampler>
  [[nodiscard]] static Yaglom draw(const Sampler& sampler, Index frequencies, Index d,
                                   random::RandomStream stream, T frequency_scale = T(1)) {
    spectral::require_frequency_shape(frequencies, d, "Yaglom::draw");
    const Matrix<T> both =
        spectral::draw_frequencies(sampler, 2 * frequencies, d, stream).template cast<T>();
    return Yaglom(both.topRows(frequencies), both.bottomRows(frequencies), frequency_scale);
  }

  [[nodiscard]] Index input_dimension() const { return scaled_t_.rows(); }
  [[nodiscard]] Index feature_dimension() const { return scaled_t_.cols(); }

  template <class X>
  void features(const Eigen::MatrixBase<X>& x, Matrix<T>& out, Eigen::VectorXd&) const {
    compute(x, out);
  }
  template <class X>
  [[nodiscard]] Matrix<T> operator()(const Eigen::MatrixBase<X>& x) const {
    Matrix<T> out;
    compute(x, out);
    return out;
  }

  [[nodiscard]] T frequency_scale() const { return frequency_scale_; }
  /// \f$[\Omega_1; \Omega_2]\f$, \f$2M \times d\f$ (the scale c left out).
  [[nodiscard]] Matrix<T> frequencies() const {
    return (scaled_t_.transpose() / frequency_scale_).eval();
  }
  /// The same map with other frequencies \f$[\Omega_1; \Omega_2]\f$ (\f$2M \times d\f$) and the
  /// same scale c.
  [[nodiscard]] Yaglom with_frequencies(const Matrix<T>& frequencies) const {
    require(frequencies.rows() % 2 == 0, "Yaglom::with_frequencies: the frequencies stack two ",
            "sets of M rows, but there are ", frequencies.rows(), " rows");
    const Index M = frequencies.rows() / 2;
    return Yaglom(frequencies.topRows(M), frequencies.bottomRows(M), frequency_scale_);
  }

  /// With the phases \f$a = c\,\Omega_1 x\f$, \f$b = c\,\Omega_2 x\f$ (recomputed) and
  /// \f$f = 1/(2\sqrt M)\f$: \f$dx_j = \sum_m f(\cos a_m\, d\tilde\varphi^{\sin}_m - \sin a_m\,
  /// d\tilde\varphi^{\cos}_m)\,c\,\omega_{1,m} + (\text{the same in } b)\,c\,\omega_{2,m}\f$.
  /// With `d_frequencies` (\f$2M \times d\f$, the shape of `frequencies()`), also adds
  /// \f$\partial\ell/\partial\omega_{a,m} = c\sum_j (\text{the factor of } \omega_{a,m})_j\,
  /// x_j\f$ to it.
  template <class X>
  void feature_gradient(const Eigen::MatrixBase<X>& x, const Matrix<T>&,
                        const Matrix<T>& d_features, const Eigen::VectorXd&, Matrix<T>& dx,
                        Matrix<T>* d_frequencies = nullptr) const {
    detail::require_input_columns(x, input_dimension(), "Yaglom");
    const Index M = scaled_t_.cols() / 2;
    const T factor = T(1) / (T(2) * std::sqrt(T(M)));
    thread_local Matrix<T> phase_gradient;     // kept: a fresh tile would cost page faults
    phase_gradient.noalias() = x * scaled_t_;  // the phases [a, b], then their adjoints
    for (Index m = 0; m < 2 * M; ++m) {
      const auto d_cos = d_features.col(m % M).array();
      const auto d_sin = d_features.col(M + m % M).array();
      auto phase = phase_gradient.col(m).array();
      phase = factor * (phase.cos() * d_sin - phase.sin() * d_cos);
    }
    dx.noalias() = phase_gradient * scaled_t_.transpose();
    if (d_frequencies != nullptr)
      d_frequencies->noalias() += frequency_scale_ * (phase_gradient.transpose() * x);
  }

 private:
  template <class X>
  void compute(const Eigen::MatrixBase<X>& x, Matrix<T>& out) const {
    detail::require_input_columns(x, input_dimension(), "Yaglom");
    const Index M = scaled_t_.cols() / 2;
    const T factor = T(1) / (T(2) * std::sqrt(T(M)));
    out.noalias() = x * scaled_t_;  // the phases [c Omega_1 x, c Omega_2 x]
    Eigen::Array<T, Eigen::Dynamic, 1> cosines(x.rows());
    for (Index m = 0; m < M; ++m) {
      auto a = out.col(m).array();
      auto b = out.col(M + m).array();
      cosines.head(x.rows()) = factor * (a.cos() + b.cos());
      b = factor * (a.sin() + b.sin());
      a = cosines;
    }
  }

  Matrix<T> scaled_t_;  ///< \f$[c\,\Omega_1^T,\ c\,\Omega_2^T]\f$, d x 2M.
  T frequency_scale_ = T(1);
};

}  // namespace kernattn::features
