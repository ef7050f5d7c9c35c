#pragma once
/// \file
/// Independent heads: no coupling at all.

#include <vector>

#include "kernattn/coupling/coupling.hpp"

namespace kernattn::coupling {

/// Head h draws its uniforms from its own stream, `head_stream(stream, h)`: the heads are
/// independent, and head h's frequencies are exactly those its sampler draws alone from that
/// stream (`spectral::draw_frequencies`) when every head needs as many uniforms per frequency.
struct Independent {
  [[nodiscard]] std::vector<Matrix<double>> uniforms(random::RandomStream stream, Index heads,
                                                     Index rows, Index cols) const {
    return independent_uniforms(stream, heads, rows, cols);
  }
};

}  // namespace kernattn::coupling
