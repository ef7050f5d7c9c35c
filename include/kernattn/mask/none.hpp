#pragma once
/// \file
/// No set filter: every query sees every key.

#include "kernattn/mask/mask.hpp"

namespace kernattn::mask {

/// \f$M(i) = \{0, \dots, N_k - 1\}\f$.
struct None {
  struct Bound {
    [[nodiscard]] Coverage coverage(Range, Range) const { return Coverage::full; }
    [[nodiscard]] bool visible(Index, Index) const { return true; }
  };
  [[nodiscard]] Bound bind(const Shape&) const { return {}; }
};

}  // namespace kernattn::mask
