#pragma once
/// \file
/// The causal set filter, aligned to the last key.

#include "kernattn/mask/mask.hpp"

namespace kernattn::mask {

/// \f$M(i) = \{ j : j \le i + N_k - N_q \}\f$.
///
/// Alignment: the last query is aligned with the last key ("bottom-right"), which is what
/// decoding with a key/value cache needs: with \f$N_q = 1\f$ the one query sees every key; with
/// \f$N_q = N_k\f$ query i sees keys 0..i. When \f$N_q > N_k\f$ the first \f$N_q - N_k\f$ queries
/// see no key and output zeros.
struct Causal {
  struct Bound {
    Index offset;  ///< \f$N_k - N_q\f$

    [[nodiscard]] Coverage coverage(Range rows, Range cols) const {
      const auto first = [](Index) { return Index(0); };
      const auto last = [this](Index i) { return i + offset; };
      return banded_coverage(rows, cols, first, last);
    }
    [[nodiscard]] bool visible(Index i, Index j) const { return j <= i + offset; }
  };
  [[nodiscard]] Bound bind(const Shape& shape) const { return {shape.keys - shape.queries}; }
};

}  // namespace kernattn::mask
