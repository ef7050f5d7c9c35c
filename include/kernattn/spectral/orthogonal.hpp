#pragma once
/// \file
/// Orthogonal random features (Yu, Suresh, Choromanski, Holtmann-Rice and Kumar, "Orthogonal
/// random features", NeurIPS 2016) for any isotropic sampler.

#include <algorithm>
#include <cmath>
#include <utility>

#include "kernattn/random/distributions.hpp"
#include "kernattn/spectral/sampler.hpp"

namespace kernattn::spectral {

/// An isotropic sampler whose directions are made exactly orthogonal in blocks of \f$d\f$
/// frequencies: `Orthogonal<Gaussian<T>>` is orthogonal random features.
///
/// Rows are taken in blocks of \f$d\f$ consecutive frequencies (the last block may hold
/// \f$r < d\f$). Each row's first \f$d\f$ uniforms give a standard normal vector
/// \f$g_m = \Phi^{-1}(u_{m,0..d-1})\f$; a block's vectors are orthonormalised in order by
/// Gram-Schmidt with reorthogonalisation (each projection done twice), in double:
/// \f$q_j = P_j g_j / \lVert P_j g_j\rVert\f$, \f$P_j\f$ the projection away from
/// \f$q_0 \dots q_{j-1}\f$. That is the \f$Q\f$ of \f$G = QR\f$ with a positive diagonal
/// \f$R\f$, so the frame is Haar-distributed (uniform on the Stiefel manifold). Row \f$b+j\f$ is
/// then
/// \f[ \omega_{b+j} = \rho_{b+j}\, q_j, \f]
/// with the base sampler's radius \f$\rho\f$ made from the row's remaining
/// `base.radial_uniforms(d)` uniforms. Each \f$\omega_m\f$ alone has the base's law, so the
/// kernel estimate stays unbiased, while the orthogonality within a block lowers its variance.
///
/// Uniforms: \f$d\f$ + `base.radial_uniforms(d)` per frequency. Frequencies of different blocks
/// are independent, and \f$q_j\f$ depends only on \f$g_0 \dots g_j\f$, so a larger \f$M\f$
/// extends a smaller one bit for bit. Every sum runs in one fixed order with `std::fma`, so the
/// frequencies are the same on every machine and compiler (given the same math library).
template <IsotropicSampler Base>
class Orthogonal {
 public:
  using Scalar = typename Base::Scalar;

  explicit Orthogonal(Base base = {}) : base_(std::move(base)) {}

  [[nodiscard]] const Base& base() const { return base_; }

  [[nodiscard]] Index uniforms_per_frequency(Index d) const { return d + base_.radial_uniforms(d); }

  [[nodiscard]] Matrix<Scalar> frequencies_from_uniforms(const Matrix<double>& uniforms,
                                                         Index d) const {
    require_frequency_shape(uniforms.rows(), d, "Orthogonal");
    require_uniforms(uniforms, uniforms_per_frequency(d), "Orthogonal");
    const Index frequencies = uniforms.rows();
    const Index radial = base_.radial_uniforms(d);
    Matrix<Scalar> omega(frequencies, d);
    Matrix<double> frame(d, d);
    Vector<double> radial_row(radial);
    for (Index begin = 0; begin < frequencies; begin += d) {
      const Index rows = std::min(d, frequencies - begin);
      for (Index j = 0; j < rows; ++j) {
        auto q = frame.col(j);
        for (Index i = 0; i < d; ++i) q(i) = random::normal_quantile(uniforms(begin + j, i));
        for (int pass = 0; pass < 2; ++pass)
          for (Index k = 0; k < j; ++k) {
            const double projection = ordered_dot(frame.col(k), q);
            for (Index i = 0; i < d; ++i) q(i) = std::fma(-projection, frame(i, k), q(i));
          }
        q /= std::sqrt(ordered_dot(q, q));
        for (Index c = 0; c < radial; ++c) radial_row(c) = uniforms(begin + j, d + c);
        const double radius = base_.radius_from_uniforms(radial_row.data(), d);
        for (Index i = 0; i < d; ++i) omega(begin + j, i) = Scalar(radius * q(i));
      }
    }
    require_finite_frequencies(omega, "Orthogonal",
                               "the base's radius, which grows like sqrt(d), overflowed (a "
                               "lengthscale checked at d = 1 can be too small for this d)");
    return omega;
  }

  /// The base's kernel: each frequency has the base's distribution. Only for a
  /// `ClosedFormSampler` base (a template, so that an explicit instantiation of `Orthogonal`
  /// over any other base compiles).
  template <class B = Base>
  requires ClosedFormSampler<B>
  [[nodiscard]] double kernel_at(const Vector<double>& r) const { return base_.kernel_at(r); }

 private:
  /// \f$a\cdot b\f$ summed in index order with `std::fma`.
  template <class A, class B>
  [[nodiscard]] static double ordered_dot(const A& a, const B& b) {
    double sum = 0.0;
    for (Index i = 0; i < a.size(); ++i) sum = std::fma(a(i), b(i), sum);
    return sum;
  }
  Base base_;
};

}  // namespace kernattn::spectral
