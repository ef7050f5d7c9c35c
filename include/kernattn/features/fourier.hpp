#pragma once
/// \file
/// Random Fourier features (Rahimi and Recht 2007) from any spectral sampler.

#include <cmath>
#include <utility>

#include "kernattn/features/feature_map.hpp"
#include "kernattn/spectral/sampler.hpp"

namespace kernattn::features {

/// \f$\varphi(x) = M^{-1/2}\,[\cos(\Omega x);\ \sin(\Omega x)] \in \mathbb{R}^{2M}\f$, so that
/// \f$\varphi(q)\cdot\varphi(k) = \frac1M\sum_m \cos(\omega_m\cdot(q-k)) \to \kappa(q-k)\f$ for
/// \f$\omega_m\f$ drawn from the kernel's spectral density (error \f$O(M^{-1/2})\f$).
/// Every feature vector has unit norm, so \f$|\varphi(q)\cdot\varphi(k)| \le 1\f$.
template <Real T>
class Fourier {
 public:
  using Scalar = T;
  static constexpr bool non_negative = false;
  static constexpr bool has_log_scale = false;

  /// From an \f$M \times d\f$ frequency matrix \f$\Omega\f$ (one frequency per row).
  explicit Fourier(Matrix<T> frequencies) : frequencies_t_(std::move(frequencies)) {
    detail::require_frequencies(frequencies_t_, "Fourier", "the frequencies");
    frequencies_t_.transposeInPlace();
  }

  /// \f$M\f$ frequencies of dimension \f$d\f$ drawn from `sampler` with `stream`.
  template <spectral::SpectralSampler Sampler>
  [[nodiscard]] static Fourier draw(const Sampler& sampler, Index frequencies, Index d,
                                    random::RandomStream stream) {
    return Fourier(spectral::draw_frequencies(sampler, frequencies, d, stream).template cast<T>());
  }

  [[nodiscard]] Index input_dimension() const { return frequencies_t_.rows(); }
  [[nodiscard]] Index feature_dimension() const { return 2 * frequencies_t_.cols(); }
  /// \f$\Omega\f$, \f$M \times d\f$.
  [[nodiscard]] Matrix<T> frequencies() const { return frequencies_t_.transpose(); }

  template <class X>
  void features(const Eigen::MatrixBase<X>& x, Matrix<T>& out, Eigen::VectorXd&) const {
    compute(x, out);
  }
  /// \f$\varphi\f$ of every row of `x`.
  template <class X>
  [[nodiscard]] Matrix<T> operator()(const Eigen::MatrixBase<X>& x) const {
    Matrix<T> out;
    compute(x, out);
    return out;
  }

  /// The same map with other frequencies (\f$M \times d\f$, checked as the constructor does).
  [[nodiscard]] Fourier with_frequencies(Matrix<T> frequencies) const {
    return Fourier(std::move(frequencies));
  }

  /// \f$dx_j = \sum_m (\tilde\varphi^{\cos}_{jm}\, d\tilde\varphi^{\sin}_{jm} -
  /// \tilde\varphi^{\sin}_{jm}\, d\tilde\varphi^{\cos}_{jm})\,\omega_m\f$: the derivative of
  /// \f$M^{-1/2}\cos(\omega_m\cdot x)\f$ is \f$-M^{-1/2}\sin(\omega_m\cdot x)\,\omega_m\f$ (no
  /// log-scale). With `d_frequencies` (\f$M \times d\f$, the shape of `frequencies()`), also
  /// adds \f$\partial\ell/\partial\omega_m = \sum_j (\text{the same factor})_{jm}\,x_j\f$ to it.
  template <class X>
  void feature_gradient(const Eigen::MatrixBase<X>& x, const Matrix<T>& features,
                        const Matrix<T>& d_features, const Eigen::VectorXd&, Matrix<T>& dx,
                        Matrix<T>* d_frequencies = nullptr) const {
    detail::require_input_columns(x, input_dimension(), "Fourier");
    const Index M = frequencies_t_.cols();
    thread_local Matrix<T> phase_gradient;  // kept: a fresh tile would cost page faults
    phase_gradient = d_features.rightCols(M).cwiseProduct(features.leftCols(M)) -
                     d_features.leftCols(M).cwiseProduct(features.rightCols(M));
    dx.noalias() = phase_gradient * frequencies_t_.transpose();
    if (d_frequencies != nullptr) d_frequencies->noalias() += phase_gradient.transpose() * x;
  }

 private:
  template <class X>
  void compute(const Eigen::MatrixBase<X>& x, Matrix<T>& out) const {
    detail::require_input_columns(x, input_dimension(), "Fourier");
    const Index M = frequencies_t_.cols();
    const T factor = T(1) / std::sqrt(T(M));
    out.resize(x.rows(), 2 * M);
    out.leftCols(M).noalias() = x * frequencies_t_;  // the phases, column m = Omega_m x
    for (Index m = 0; m < M; ++m) {
      out.col(M + m).array() = factor * out.col(m).array().sin();
      out.col(m).array() = factor * out.col(m).array().cos();
    }
  }

  Matrix<T> frequencies_t_;  ///< \f$\Omega^T\f$, d x M: the GEMM operand.
};

}  // namespace kernattn::features
