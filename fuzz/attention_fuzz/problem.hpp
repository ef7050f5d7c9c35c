/// \file
/// What every part of the attention fuzz target shares: how bytes become values, shapes and
/// parameters, the decoded problem, and the check of an output against the library's promises.
#pragma once

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <kernattn/kernattn.hpp>
#include <limits>
#include <optional>

namespace attention_fuzz {

using namespace kernattn;
using Real = float;
using Mat = Matrix<Real>;

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "attention_fuzz: invariant violated: %s\n", what);
  std::abort();
}

/// One entry: mostly ordinary values at a chosen scale, sometimes a special value.
inline Real decode_value(FuzzedDataProvider& data, Real scale, bool specials) {
  if (specials) {
    switch (data.ConsumeIntegralInRange<int>(0, 15)) {
      case 0:
        return std::numeric_limits<Real>::quiet_NaN();
      case 1:
        return std::numeric_limits<Real>::infinity();
      case 2:
        return -std::numeric_limits<Real>::infinity();
      case 3:
        return std::numeric_limits<Real>::denorm_min();
      case 4:
        return std::numeric_limits<Real>::max();
      case 5:
        return -std::numeric_limits<Real>::max();
      default:
        break;
    }
  }
  return scale * Real(data.ConsumeIntegralInRange<int>(-64, 64)) / Real(16);
}

inline Mat decode_matrix(FuzzedDataProvider& data, Index rows, Index cols) {
  static constexpr Real scales[] = {Real(1e-30), Real(1e-3), Real(1),    Real(4),
                                    Real(30),    Real(1e4),  Real(1e15), Real(1e30)};
  const Real scale = scales[data.ConsumeIntegralInRange<int>(0, 7)];
  const bool specials = data.ConsumeIntegralInRange<int>(0, 7) == 0;
  Mat m(rows, cols);
  for (Index c = 0; c < cols; ++c)
    for (Index r = 0; r < rows; ++r) m(r, c) = decode_value(data, scale, specials);
  return m;
}

struct Problem {
  Index sequences = 1, heads = 1, nq = 0, nk = 0, d = 1, dv = 1;
  Mat Q, K, V;
  [[nodiscard]] bool finite() const { return Q.allFinite() && K.allFinite() && V.allFinite(); }
  [[nodiscard]] BatchLayout layout() const { return {sequences, heads}; }
};

/// Checks the output of a composition whose set filter, bound per sequence, is `visibility_of(b)`
/// (nullptr-like `std::nullopt` when the checker cannot know it). With `zero_rows_allowed`, a
/// row of a head may be all zeros, which is its definition when its weights all vanish: every
/// visible log-weight -inf in the exact engine, an estimated denominator of exactly 0 in linear
/// attention (no feature, or every product underflows).
template <class VisibilityOf>
void check_output(const Problem& p, const Mat& out, bool nonnegative_weights,
                  VisibilityOf visibility_of, bool zero_rows_allowed = false) {
  if (out.rows() != p.nq * p.sequences || out.cols() != p.dv * p.heads) fail("output shape");
  if (!p.finite()) return;
  if (!out.allFinite()) fail("finite inputs gave a non-finite output");
  if (!nonnegative_weights) return;
  for (Index b = 0; b < p.sequences; ++b) {
    const auto visibility = visibility_of(b);
    for (Index h = 0; h < p.heads; ++h)
      for (Index i = 0; i < p.nq; ++i) {
        if (zero_rows_allowed && p.dv > 0 &&
            out.row(b * p.nq + i).segment(h * p.dv, p.dv).isZero(0))
          continue;
        for (Index c = 0; c < p.dv; ++c) {
          Real low = std::numeric_limits<Real>::infinity();
          Real high = -low;
          for (Index j = 0; j < p.nk; ++j) {
            if (visibility && !visibility->visible(i, j)) continue;
            const Real v = p.V(b * p.nk + j, h * p.dv + c);
            low = std::min(low, v);
            high = std::max(high, v);
          }
          const Real o = out(b * p.nq + i, h * p.dv + c);
          if (low > high) {
            if (visibility && o != Real(0)) fail("a row that sees no key is not zero");
            continue;
          }
          const Real margin = Real(1e-3) * std::max(std::abs(low), std::abs(high)) +
                              std::numeric_limits<Real>::min();
          if (o < low - margin || o > high + margin) fail("output outside the visible values");
        }
      }
  }
}

inline Real decode_parameter(FuzzedDataProvider& data) {
  static constexpr Real values[] = {Real(1e-30), Real(1e-3), Real(0.05), Real(0.5), Real(1),
                                    Real(2),     Real(3),    Real(7.5),  Real(1e3), Real(1e30)};
  return values[data.ConsumeIntegralInRange<int>(0, 9)];
}

}  // namespace attention_fuzz
