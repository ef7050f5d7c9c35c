#pragma once
/// \file
/// The causal set filters, aligned to the last key (`Causal`) or to the first (`CausalTopLeft`).

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
  [[nodiscard]] Bound bind(const Shape& shape) const {
    return {alignment_offset(Alignment::bottom_right, shape)};
  }
};

/// `Causal` by the name of its alignment.
using CausalBottomRight = Causal;

/// \f$M(i) = \{ j : j \le i \}\f$: the causal filter aligned to the first key ("top-left"),
/// PyTorch's `is_causal=True`. With \f$N_q > N_k\f$ the last \f$N_q - N_k\f$ queries see every
/// key; with \f$N_q < N_k\f$ the keys after \f$N_q - 1\f$ are seen by no query.
struct CausalTopLeft {
  [[nodiscard]] Causal::Bound bind(const Shape& shape) const {
    return {alignment_offset(Alignment::top_left, shape)};
  }
};

}  // namespace kernattn::mask
