#pragma once
/// \file
/// The sliding-window set filter.

#include <algorithm>

#include "kernattn/core/errors.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn::mask {

/// \f$M(i) = \{ j : c_i - \mathrm{before} \le j \le c_i + \mathrm{after} \}\f$ with
/// \f$c_i\f$ the key aligned with query i: \f$i + N_k - N_q\f$ by default (aligned bottom-right,
/// as `Causal` is), \f$i\f$ with `Alignment::top_left` (as `CausalTopLeft` is).
/// `Window(w, 0)` is causal attention over the last w + 1 keys; `Window(w, w)` is a symmetric
/// local window.
class Window {
 public:
  Window(Index before, Index after, Alignment alignment = Alignment::bottom_right)
      : before_(before), after_(after), alignment_(alignment) {
    require(before >= 0 && after >= 0,
            "Window: before and after must be >= 0, got before = ", before, ", after = ", after);
  }

  struct Bound {
    Index offset;
    Index before;
    Index after;

    [[nodiscard]] Coverage coverage(Range rows, Range cols) const {
      const auto first = [this](Index i) { return i + offset - before; };
      const auto last = [this](Index i) { return i + offset + after; };
      return banded_coverage(rows, cols, first, last);
    }
    [[nodiscard]] bool visible(Index i, Index j) const {
      const Index centre = i + offset;
      return j >= centre - before && j <= centre + after;
    }
  };
  /// Extents beyond the sequence lengths behave like the lengths (and cannot overflow).
  [[nodiscard]] Bound bind(const Shape& shape) const {
    const Index reach = shape.keys + shape.queries;
    return {alignment_offset(alignment_, shape), std::min(before_, reach), std::min(after_, reach)};
  }

 private:
  Index before_;
  Index after_;
  Alignment alignment_;
};

}  // namespace kernattn::mask
