#pragma once
/// \file
/// Whether two Eigen objects may share memory, judged from the address ranges they span.

#include <cstdint>
#include <utility>

#include "kernattn/core/scalar_traits.hpp"

namespace kernattn::detail {

/// True when the first and last elements of `a` and `b` span overlapping address ranges, and
/// always true when either has no direct memory access (then nothing can be proven). Two
/// interleaved blocks of one row-major matrix may be reported as sharing memory: callers use
/// the answer to choose a safe path, never to reject an argument.
template <class A, class B>
[[nodiscard]] bool may_share_memory(const Eigen::DenseBase<A>& a, const Eigen::DenseBase<B>& b) {
  constexpr bool direct = (int(Eigen::internal::traits<A>::Flags) & Eigen::DirectAccessBit) &&
                          (int(Eigen::internal::traits<B>::Flags) & Eigen::DirectAccessBit);
  if constexpr (!direct) {
    return true;
  } else {
    if (a.size() == 0 || b.size() == 0) return false;
    const auto span = [](const auto& m) {
      const auto first = reinterpret_cast<std::uintptr_t>(m.data());
      const auto last_offset =
          (m.outerSize() - 1) * m.outerStride() + (m.innerSize() - 1) * m.innerStride();
      return std::pair{first, first + std::uintptr_t(last_offset + 1) * sizeof(*m.data())};
    };
    const auto [a_begin, a_end] = span(a.derived());
    const auto [b_begin, b_end] = span(b.derived());
    return a_begin < b_end && b_begin < a_end;
  }
}

/// Whether `a` may share memory with any of `others` (`may_share_memory`).
template <class A, class... Others>
[[nodiscard]] bool may_share_memory_with_any(const Eigen::DenseBase<A>& a,
                                             const Others&... others) {
  return (may_share_memory(a, others) || ...);
}

}  // namespace kernattn::detail
