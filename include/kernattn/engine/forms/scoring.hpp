#pragma once
/// \file
/// The primary template of the score seam, `Scoring<Kernel>`, which each header of this folder
/// specialises for one kernel form; see `kernattn/engine/scoring.hpp` for what a specialisation
/// provides.

#include "kernattn/kernels/kernel.hpp"

namespace kernattn::detail {

/// How the engines score a kernel of the form its concept names.
template <class Kernel>
struct Scoring;

}  // namespace kernattn::detail
