#pragma once
/// \file
/// Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3",
/// SC 2011): a counter-based generator. A block of four 32-bit words is a pure function of a
/// 128-bit counter and a 64-bit key, so any sample can be computed on its own, in any order,
/// on any thread, with integer arithmetic only: the same bits on every compiler and standard
/// library.

#include <array>
#include <cstdint>

namespace kernattn::random {

/// The Philox4x32 bijection with 10 rounds.
///
/// Each round multiplies two counter words by the constants \f$M_0, M_1\f$ into 64-bit
/// products \f$(hi_0, lo_0), (hi_1, lo_1)\f$ and sets
/// \f$c \leftarrow (hi_1 \oplus c_1 \oplus k_0,\ lo_1,\ hi_0 \oplus c_3 \oplus k_1,\ lo_0)\f$;
/// between rounds the key advances by the Weyl constants \f$(W_0, W_1)\f$.
class Philox4x32 {
 public:
  using Counter = std::array<std::uint32_t, 4>;
  using Key = std::array<std::uint32_t, 2>;

  [[nodiscard]] static constexpr Counter block(Counter counter, Key key) {
    for (int round = 0; round < rounds; ++round) {
      if (round > 0) {
        key[0] += weyl_0;
        key[1] += weyl_1;
      }
      const std::uint64_t product_0 = std::uint64_t(multiplier_0) * counter[0];
      const std::uint64_t product_1 = std::uint64_t(multiplier_1) * counter[2];
      counter = {high(product_1) ^ counter[1] ^ key[0], low(product_1),
                 high(product_0) ^ counter[3] ^ key[1], low(product_0)};
    }
    return counter;
  }

 private:
  static constexpr int rounds = 10;
  static constexpr std::uint32_t multiplier_0 = 0xD2511F53u;
  static constexpr std::uint32_t multiplier_1 = 0xCD9E8D57u;
  static constexpr std::uint32_t weyl_0 = 0x9E3779B9u;
  static constexpr std::uint32_t weyl_1 = 0xBB67AE85u;

  static constexpr std::uint32_t high(std::uint64_t x) { return std::uint32_t(x >> 32); }
  static constexpr std::uint32_t low(std::uint64_t x) { return std::uint32_t(x); }
};

/// A seed and a stream: the address of an infinite sequence of independent uniforms.
///
/// The uniform with index \f$i\f$ is a function of \f$(seed, stream, i)\f$ alone: Philox block
/// \f$\lfloor i/2 \rfloor\f$ with counter \f$(\lfloor i/2\rfloor_{lo}, \lfloor i/2\rfloor_{hi},
/// stream_{lo}, stream_{hi})\f$ and key \f$(seed_{lo}, seed_{hi})\f$; its words 0-1 (even
/// \f$i\f$) or 2-3 (odd \f$i\f$) form a 64-bit integer whose top 52 bits \f$b\f$ give
/// \f$u = (b + 1/2)\,2^{-52}\f$: exactly representable (53 significant bits at most), never
/// 0 or 1, symmetric about 1/2. Different streams of one seed are
/// independent sequences (e.g. one per head or per layer).
struct RandomStream {
  std::uint64_t seed = 0;
  std::uint64_t stream = 0;

  /// The uniform in (0, 1) with index `index`.
  [[nodiscard]] constexpr double uniform(std::uint64_t index) const {
    const std::uint64_t pair = index >> 1;
    const Philox4x32::Counter words =
        Philox4x32::block({std::uint32_t(pair), std::uint32_t(pair >> 32), std::uint32_t(stream),
                           std::uint32_t(stream >> 32)},
                          {std::uint32_t(seed), std::uint32_t(seed >> 32)});
    const std::size_t first = (index & 1u) * 2;
    const std::uint64_t bits = (std::uint64_t(words[first + 1]) << 32) | words[first];
    return (double(bits >> 12) + 0.5) * 0x1p-52;
  }

  /// The same seed with another stream.
  [[nodiscard]] constexpr RandomStream with_stream(std::uint64_t other) const {
    return {seed, other};
  }
};

}  // namespace kernattn::random
