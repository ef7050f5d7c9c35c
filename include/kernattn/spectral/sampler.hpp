#pragma once
/// \file
/// The `SpectralSampler` concept: a stationary kernel given by its spectral density
/// \f$p(\omega)\f$ (Bochner: \f$\kappa(r) = E_{\omega\sim p}[\cos(\omega\cdot r)]\f$), sampled as
/// an \f$M \times d\f$ matrix of frequencies, one per row.
///
/// A sampler is a deterministic map from uniforms to frequencies: frequency row \f$m\f$ is made
/// from row \f$m\f$ of an \f$M \times n_u\f$ matrix of independent uniforms in (0, 1), with
/// \f$n_u\f$ = `uniforms_per_frequency(d)`. Drawing the uniforms from a `RandomStream` gives
/// samples that depend only on (seed, stream); feeding it correlated uniforms (a copula) couples
/// several samplers while each keeps its own marginal law.
///
/// The smallest user-defined sampler (iid uniform frequencies on \f$[-a, a]^d\f$, whose kernel
/// is \f$\prod_i \sin(a r_i)/(a r_i)\f$):
/// \code
/// struct Box {
///   using Scalar = double;
///   double half_width = 1.0;
///   kernattn::Index uniforms_per_frequency(kernattn::Index d) const { return d; }
///   kernattn::Matrix<double> frequencies_from_uniforms(const kernattn::Matrix<double>& u,
///                                                      kernattn::Index) const {
///     return (half_width * (2.0 * u.array() - 1.0)).matrix();
///   }
/// };
/// \endcode

#include <concepts>
#include <string_view>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/random/philox.hpp"

namespace kernattn::spectral {

/// What every sampler provides: `uniforms_per_frequency(d)` and
/// `frequencies_from_uniforms(U, d)`, which maps an \f$M \times n_u\f$ matrix of uniforms in
/// (0, 1) to the \f$M \times d\f$ frequency matrix \f$\Omega\f$.
template <class S>
concept SpectralSampler = requires(const S sampler, Index d, const Matrix<double>& uniforms) {
  requires Real<typename S::Scalar>;
  { sampler.uniforms_per_frequency(d) } -> std::convertible_to<Index>;
  {
    sampler.frequencies_from_uniforms(uniforms, d)
    } -> std::convertible_to<Matrix<typename S::Scalar>>;
};

/// A sampler that knows the kernel it estimates in closed form: `kernel_at(r)` is
/// \f$\kappa(r) = E[\cos(\omega\cdot r)]\f$ at the difference \f$r = q - k\f$.
template <class S>
concept ClosedFormSampler = SpectralSampler<S> &&
    requires(const S sampler, const Vector<double>& r) {
  { sampler.kernel_at(r) } -> std::convertible_to<double>;
};

/// An isotropic sampler, \f$\omega = \rho\,\theta\f$ with \f$\theta\f$ uniform on the sphere and
/// an independent radius \f$\rho\f$ made from `radial_uniforms(d)` uniforms by
/// `radius_from_uniforms(u, d)` (u points at them). `Orthogonal` replaces its directions by
/// orthogonal ones.
template <class S>
concept IsotropicSampler = SpectralSampler<S> &&
    requires(const S sampler, Index d, const double* uniforms) {
  { sampler.radial_uniforms(d) } -> std::convertible_to<Index>;
  { sampler.radius_from_uniforms(uniforms, d) } -> std::convertible_to<double>;
};

/// The \f$rows \times cols\f$ matrix of uniforms \f$U_{mc}\f$ = `stream.uniform(m * cols + c)`.
[[nodiscard]] inline Matrix<double> draw_uniforms(random::RandomStream stream, Index rows,
                                                  Index cols) {
  require(rows >= 0 && cols >= 0, "draw_uniforms: the shape must be non-negative, got ",
          detail::shape_of(rows, cols));
  Matrix<double> uniforms(rows, cols);
  for (Index m = 0; m < rows; ++m)
    for (Index c = 0; c < cols; ++c)
      uniforms(m, c) = stream.uniform(std::uint64_t(m) * std::uint64_t(cols) + std::uint64_t(c));
  return uniforms;
}

/// Requires \f$M \ge 1\f$ frequencies of dimension \f$d \ge 1\f$.
inline void require_frequency_shape(Index frequencies, Index d, std::string_view owner) {
  require(frequencies >= 1, owner, ": M (the number of frequencies) must be >= 1, got ",
          frequencies);
  require(d >= 1, owner, ": the dimension d must be >= 1, got ", d);
}

/// Requires `uniforms` to have `expected_cols` columns, at least one row, and every entry
/// strictly inside (0, 1).
inline void require_uniforms(const Matrix<double>& uniforms, Index expected_cols,
                             std::string_view owner) {
  require(uniforms.rows() >= 1, owner,
          ": M (the number of frequencies, the rows of the uniforms) must be >= 1, got ",
          uniforms.rows());
  require(uniforms.cols() == expected_cols, owner, ": the uniforms are ",
          detail::shape_of(uniforms), " but ", expected_cols, " uniforms per frequency are needed");
  require((uniforms.array() > 0.0).all() && (uniforms.array() < 1.0).all(), owner,
          ": every uniform must lie strictly inside (0, 1)");
}

/// \f$M\f$ frequencies of dimension \f$d\f$ from `sampler`, a function of (seed, stream) alone:
/// `frequencies_from_uniforms(draw_uniforms(stream, M, n_u), d)`. Row \f$m\f$ depends only on
/// uniforms \f$m n_u, \dots, (m+1) n_u - 1\f$ (for `Orthogonal`, on the rows before it in its
/// block too), so a larger M extends a smaller one.
template <SpectralSampler S>
[[nodiscard]] Matrix<typename S::Scalar> draw_frequencies(const S& sampler, Index frequencies,
                                                          Index d, random::RandomStream stream) {
  require_frequency_shape(frequencies, d, "draw_frequencies");
  const Index per_frequency = sampler.uniforms_per_frequency(d);
  return sampler.frequencies_from_uniforms(draw_uniforms(stream, frequencies, per_frequency), d);
}

}  // namespace kernattn::spectral
