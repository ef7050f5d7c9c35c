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
/// Column layout: every sampler here makes the noise of coordinate \f$i < d\f$ from uniform
/// column \f$i\f$ and puts what a frequency needs beyond that (a shared chi-square, a mixture
/// component, a radius) in the columns from \f$d\f$ on. A copula couples heads column by
/// column, so coordinate i of one head is always coupled with coordinate i of another (see
/// docs/random_features.md for what that coupling guarantees).
///
/// Ranges: a sampler's constructor checks that the frequencies of every uniform in
/// \f$[2^{-53}, 1 - 2^{-53}]\f$ (all that `RandomStream` and the couplings produce) are finite
/// in its scalar type, and `frequencies_from_uniforms` checks its result, so a parameter too
/// extreme for the type is reported with the sampler, the parameter and its range.
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

#include <cmath>
#include <concepts>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/parameters.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/random/distributions.hpp"
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

/// The smallest uniform that `RandomStream` and the couplings produce, \f$2^{-53}\f$; the largest
/// is \f$1 - 2^{-53}\f$.
inline constexpr double smallest_uniform = 0x1p-53;

/// \f$\Phi^{-1}(1 - 2^{-53}) \approx 8.21\f$: the largest standard normal made from those
/// uniforms.
[[nodiscard]] inline double largest_normal() { return -random::normal_quantile(smallest_uniform); }

/// Whether a frequency of magnitude `largest` (computed in double, possibly infinite) is finite
/// in T.
template <Real T>
[[nodiscard]] bool representable(double largest) {
  return largest <= double(std::numeric_limits<T>::max());
}

/// `bound` rounded up to three significant digits, for a range in a message that the printed
/// value itself satisfies.
[[nodiscard]] inline double round_up_for_message(double bound) {
  if (!(bound > 0.0) || !std::isfinite(bound)) return bound;
  const double unit = std::pow(10.0, std::floor(std::log10(bound)) - 2.0);
  return std::ceil(bound / unit) * unit;
}

/// Requires a fixed lengthscale \f$\ell\f$ with \f$q_{\max}/\ell\f$ finite in T, where
/// \f$q_{\max}\f$ = `largest_standard` is the largest standard variate (`variate`, e.g. "normal
/// quantile") the sampler makes from the uniforms in \f$[2^{-53}, 1 - 2^{-53}]\f$: the range is
/// \f$\ell \ge q_{\max}/\max_T\f$.
template <Real T>
void require_lengthscale_range(T lengthscale, double largest_standard, std::string_view owner,
                               std::string_view variate) {
  const double largest = largest_standard / double(lengthscale);
  require(representable<T>(largest), owner, ": lengthscale = ", lengthscale,
          " makes frequencies up to ", largest, " (the ", variate, " ", largest_standard,
          " of the extreme uniform 2^-53 over the lengthscale), beyond the largest ",
          ScalarTraits<T>::name, " ", std::numeric_limits<T>::max(),
          "; the lengthscale must be >= ",
          round_up_for_message(largest_standard / double(std::numeric_limits<T>::max())));
}

/// What `require_finite_frequencies` says by default: the constructors check the parameters
/// for the uniforms of the streams and couplings.
inline constexpr std::string_view beyond_checked_uniforms =
    "the parameters are checked for uniforms in [2^-53, 1 - 2^-53] (all that the streams and "
    "couplings produce), and these uniforms lie closer to 0 or 1";

/// Requires every frequency to be finite; names the sampler, the first bad entry and `reason`.
template <class Frequencies>
void require_finite_frequencies(const Frequencies& frequencies, std::string_view owner,
                                std::string_view reason = beyond_checked_uniforms) {
  if (frequencies.allFinite()) return;
  Index row = 0;
  Index col = 0;
  while (std::isfinite(frequencies(row, col)))
    if (++col == frequencies.cols()) {
      col = 0;
      ++row;
    }
  throw InvalidArgument(detail::concat(
      owner, ": frequency (", row, ", ", col, ") is ", frequencies(row, col), ", not a finite ",
      ScalarTraits<typename Frequencies::Scalar>::name, "; ", reason));
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

/// A sampler whose parameters can be trained through its frequencies (docs/gradients.md,
/// "Spectral samplers"), the frequencies being \f$\Omega = g(U; \theta)\f$ of fixed uniforms U
/// (the noise held fixed): `parameter_names()`, `parameters(d)`, `with_parameters(values)`
/// (include/kernattn/core/parameters.hpp) and `parameter_gradient(U, d, dOmega)`, the vector-
/// Jacobian product \f$\sum_{m,i} dOmega_{mi}\,\partial\Omega_{mi}/\partial\theta\f$ in double.
template <class S>
concept DifferentiableSampler = SpectralSampler<S> &&
    requires(const S sampler, Index d, const Eigen::VectorXd values, const Matrix<double>& uniforms,
             const Matrix<typename S::Scalar>& d_frequencies) {
  { sampler.parameter_names() } -> std::convertible_to<std::vector<std::string>>;
  { sampler.parameters(d) } -> std::convertible_to<Eigen::VectorXd>;
  { sampler.with_parameters(values) } -> std::convertible_to<S>;
  {
    sampler.parameter_gradient(uniforms, d, d_frequencies)
    } -> std::convertible_to<Eigen::VectorXd>;
};

/// A sampler whose frequency coordinate c comes from uniform c alone (d uniforms per frequency),
/// with `uniform_derivative(uniforms, d)`: \f$\partial\omega_{mc}/\partial u_{mc}\f$ entry by
/// entry. A copula's correlation gets its gradient through such samplers
/// (`coupling::coupled_factor_gradient`).
template <class S>
concept CoordinateSampler = SpectralSampler<S> &&
    requires(const S sampler, const Matrix<double>& uniforms, Index d) {
  { sampler.uniform_derivative(uniforms, d) } -> std::convertible_to<Matrix<double>>;
};

/// The gradient of a sampler's parameters from that of the M frequencies `draw_frequencies(
/// sampler, M, d, stream)` made (the same uniforms, drawn again).
template <DifferentiableSampler S>
[[nodiscard]] Eigen::VectorXd frequency_parameter_gradient(
    const S& sampler, Index d, random::RandomStream stream,
    const Matrix<typename S::Scalar>& d_frequencies) {
  require_frequency_shape(d_frequencies.rows(), d, "frequency_parameter_gradient");
  require(d_frequencies.cols() == d, "frequency_parameter_gradient: dOmega is ",
          detail::shape_of(d_frequencies), " but the frequencies have d = ", d, " columns");
  const Matrix<double> uniforms =
      draw_uniforms(stream, d_frequencies.rows(), sampler.uniforms_per_frequency(d));
  return sampler.parameter_gradient(uniforms, d, d_frequencies);
}

/// \f$\partial\ell/\partial\ell_s\f$ of a scale family \f$\Omega = \Omega_1/\ell_s\f$ (the
/// frequencies of lengthscale 1 over the lengthscale): \f$-\sum dOmega \circ \Omega/\ell_s\f$.
template <Real T>
[[nodiscard]] Eigen::VectorXd lengthscale_gradient(const Matrix<T>& frequencies,
                                                   const Matrix<T>& d_frequencies,
                                                   double lengthscale) {
  require(frequencies.rows() == d_frequencies.rows() && frequencies.cols() == d_frequencies.cols(),
          "parameter_gradient: dOmega is ", detail::shape_of(d_frequencies),
          " but the frequencies are ", detail::shape_of(frequencies));
  const double sum =
      (frequencies.template cast<double>().array() * d_frequencies.template cast<double>().array())
          .sum();
  return Eigen::VectorXd::Constant(1, -sum / lengthscale);
}

}  // namespace kernattn::spectral
