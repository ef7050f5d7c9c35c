#pragma once
/// \file
/// The `Coupling` concept: how the spectral samplers of H heads share their randomness
/// (docs/random_features.md).
///
/// Every sampler turns an \f$M \times n_u\f$ matrix of uniforms into its frequencies
/// (`spectral::SpectralSampler`). A coupling draws those uniforms for all heads at once: for
/// every index \f$(m, c)\f$ the H uniforms \f$(U_1(m,c), \dots, U_H(m,c))\f$ are one draw from a
/// copula, a distribution on \f$(0,1)^H\f$ with uniform marginals, and different indices are
/// independent. Each head then makes its own noise from its own uniforms, so every head keeps
/// the marginal law of its sampler while the heads are dependent.
///
/// The smallest user-defined coupling (every head gets the same uniforms: comonotone heads):
/// \code
/// struct Comonotone {
///   std::vector<kernattn::Matrix<double>> uniforms(kernattn::random::RandomStream stream,
///                                                  kernattn::Index heads, kernattn::Index rows,
///                                                  kernattn::Index cols) const {
///     return std::vector(std::size_t(heads),
///                        kernattn::spectral::draw_uniforms(stream, rows, cols));
///   }
/// };
/// \endcode

#include <algorithm>
#include <concepts>
#include <vector>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/random/philox.hpp"
#include "kernattn/spectral/sampler.hpp"

namespace kernattn::coupling {

/// `uniforms(stream, heads, rows, cols)` returns `heads` matrices of `rows` x `cols` uniforms
/// strictly inside (0, 1), coupled across heads entry by entry and a function of `stream` alone.
template <class C>
concept Coupling = requires(const C coupling, random::RandomStream stream, Index count) {
  { coupling.uniforms(stream, count, count, count) } -> std::same_as<std::vector<Matrix<double>>>;
};

/// The stream of head h's own uniforms: the caller's stream advanced by h, so that independent
/// head h draws exactly what a lone sampler draws from `stream.stream + h`. (Give layers streams
/// at least H apart.)
[[nodiscard]] constexpr random::RandomStream head_stream(random::RandomStream stream, Index head) {
  return stream.with_stream(stream.stream + std::uint64_t(head));
}

/// The uniforms of each head drawn independently from `head_stream(stream, h)`.
[[nodiscard]] inline std::vector<Matrix<double>> independent_uniforms(random::RandomStream stream,
                                                                      Index heads, Index rows,
                                                                      Index cols) {
  require(heads >= 1, "coupling: the number of heads must be >= 1, got ", heads);
  std::vector<Matrix<double>> uniforms;
  uniforms.reserve(std::size_t(heads));
  for (Index h = 0; h < heads; ++h)
    uniforms.push_back(spectral::draw_uniforms(head_stream(stream, h), rows, cols));
  return uniforms;
}

/// A probability computed from a coupled draw, kept strictly inside (0, 1): clamped to
/// [2^-53, 1 - 2^-53], the extreme uniforms `RandomStream` itself produces, so that no inverse
/// CDF downstream sees 0 or 1 (a CDF of a variate beyond about 8.3 standard deviations rounds to
/// 1 in double).
[[nodiscard]] inline double inside_unit_interval(double probability) {
  return std::clamp(probability, 0x1p-53, 1.0 - 0x1p-53);
}

}  // namespace kernattn::coupling
