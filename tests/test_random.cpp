// Random numbers: the Philox4x32-10 generator against the published known-answer vectors,
// RandomStream's uniforms (a pure function of (seed, stream, index), strictly inside (0, 1),
// statistically uniform and independent), and draw_uniforms' layout. The inverse-CDF transforms
// of distributions.hpp: test_random_quantiles.cpp (normal, Student-t, Laplace, Cauchy) and
// test_random_gamma.cpp (gamma_p, gamma_q, gamma_quantile, chi-square).
//
// Statistical tests use fixed seeds, so they are deterministic; their bounds are chosen so that a
// correct generator fails them with negligible probability over the choice of seed:
//   - Kolmogorov-Smirnov: the Dvoretzky-Kiefer-Wolfowitz inequality with Massart's constant,
//     P(sup|F_n - F| > t) <= 2 exp(-2 n t^2), holds for every n, so D_crit = sqrt(ln(2/alpha)/(2n))
//     at alpha = 1e-4;
//   - moments and correlations: k = 5 standard errors (a two-sided normal tail of 5.7e-7), the
//     standard error stated next to each check.
#include <cstddef>
#include <cstdint>
#include <iomanip>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "kernattn/random/philox.hpp"
#include "kernattn/spectral/sampler.hpp"
#include "random_checks.hpp"

namespace test_random {

namespace {

using kernattn::random::Philox4x32;
using kernattn::random::RandomStream;
using namespace random_checks;

/// The inverse of the Philox4x32-10 bijection, written from the round definition in philox.hpp:
/// a round maps (c0, c1, c2, c3) to (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1,
/// lo(M0 c0)), and M0, M1 are odd, hence invertible modulo 2^32.
constexpr std::uint32_t inverse_mod_2_32(std::uint32_t m) {
  std::uint32_t x = m;                          // correct to 3 bits for odd m
  for (int i = 0; i < 5; ++i) x *= 2u - m * x;  // Newton: the correct bits double each step
  return x;
}

constexpr Philox4x32::Counter philox_inverse(Philox4x32::Counter out, Philox4x32::Key key) {
  constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
  constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
  for (int round = 9; round >= 0; --round) {
    const std::uint32_t k0 = key[0] + std::uint32_t(round) * w0;
    const std::uint32_t k1 = key[1] + std::uint32_t(round) * w1;
    const std::uint32_t c2 = out[1] * inverse_mod_2_32(m1);
    const std::uint32_t c0 = out[3] * inverse_mod_2_32(m0);
    const auto high1 = std::uint32_t((std::uint64_t(m1) * c2) >> 32);
    const auto high0 = std::uint32_t((std::uint64_t(m0) * c0) >> 32);
    out = {c0, out[0] ^ high1 ^ k0, c2, out[2] ^ high0 ^ k1};
  }
  return out;
}

/// The (stream, index) whose uniform, under seed `seed`, is made from the 64-bit word `bits`
/// (words 0-1 of a block, an even index): found by inverting Philox.
struct Address {
  std::uint64_t stream = 0, index = 0;
};

Address address_of_bits(std::uint64_t seed, std::uint64_t bits) {
  const Philox4x32::Key key{std::uint32_t(seed), std::uint32_t(seed >> 32)};
  for (std::uint32_t free_word = 0;; ++free_word) {
    const Philox4x32::Counter counter =
        philox_inverse({std::uint32_t(bits), std::uint32_t(bits >> 32), free_word, 0u}, key);
    const std::uint64_t pair = (std::uint64_t(counter[1]) << 32) | counter[0];
    if (pair >> 63) continue;  // the index 2 * pair must fit in 64 bits
    return {(std::uint64_t(counter[3]) << 32) | counter[2], 2 * pair};
  }
}

}  // namespace

// === Philox4x32-10 ==============================================================================

// Random123's kat_vectors for philox4x32_R(10): counter, key -> output.
static_assert(Philox4x32::block({0u, 0u, 0u, 0u}, {0u, 0u}) ==
                  Philox4x32::Counter{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u},
              "Philox4x32::block must be usable in constant expressions");
// The uniforms with indices 0 and 1 of seed 0, stream 0 are made from that block's words 0-1
// and 2-3: u = (b + 1/2) 2^-52 with b the top 52 bits of the 64-bit word.
static_assert(RandomStream{}.uniform(0) == (double(0xe169c58d6627e8d5ull >> 12) + 0.5) * 0x1p-52);
static_assert(RandomStream{}.uniform(1) == (double(0x9b00dbd8bc57ac4cull >> 12) + 0.5) * 0x1p-52);

TEST_CASE("Philox4x32-10 matches the Random123 known-answer vectors", "[random][philox]") {
  using Counter = Philox4x32::Counter;
  CHECK(Philox4x32::block({0u, 0u, 0u, 0u}, {0u, 0u}) ==
        Counter{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
  CHECK(Philox4x32::block({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                          {0xffffffffu, 0xffffffffu}) ==
        Counter{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
  CHECK(Philox4x32::block({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                          {0xa4093822u, 0x299f31d0u}) ==
        Counter{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});
}

TEST_CASE("Philox4x32-10 is a bijection of the counter for a fixed key", "[random][philox]") {
  // The inverse written from the round definition undoes block() exactly, on counters that
  // exercise every word and key.
  const RandomStream words{99, 1};
  for (std::uint64_t i = 0; i < 64; ++i) {
    const auto word = [&](std::uint64_t j) {
      return std::uint32_t(words.uniform(8 * i + j) * 0x1p32);
    };
    const Philox4x32::Counter counter{word(0), word(1), word(2), word(3)};
    const Philox4x32::Key key{word(4), word(5)};
    CAPTURE(i);
    CHECK(philox_inverse(Philox4x32::block(counter, key), key) == counter);
  }
}

// === RandomStream ===============================================================================

TEST_CASE("A uniform is a pure function of (seed, stream, index)", "[random][stream]") {
  const RandomStream stream{0x5eedull, 3};
  constexpr std::size_t n = 1 << 14;
  const std::vector<double> forward = uniforms(stream, n);

  SECTION("backward") {
    std::vector<double> backward(n);
    for (std::size_t i = n; i-- > 0;) backward[i] = stream.uniform(i);
    CHECK(backward == forward);
  }
  SECTION("shuffled: i -> 7919 i mod 2^14 is a permutation") {
    std::vector<double> shuffled(n);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t j = (7919 * i) % n;
      shuffled[j] = stream.uniform(j);
    }
    CHECK(shuffled == forward);
  }
  SECTION("from two threads, one descending over the even indices, one ascending over the odd") {
    std::vector<double> threaded(n);
    std::thread even([&] {
      for (std::size_t i = n; i >= 2; i -= 2) threaded[i - 2] = stream.uniform(i - 2);
    });
    std::thread odd([&] {
      for (std::size_t i = 1; i < n; i += 2) threaded[i] = stream.uniform(i);
    });
    even.join();
    odd.join();
    CHECK(threaded == forward);
  }
  SECTION("a copy, a fresh object and with_stream give the same values") {
    const RandomStream copy = stream;
    const RandomStream fresh{0x5eedull, 3};
    const RandomStream via = RandomStream{0x5eedull, 8}.with_stream(3);
    CHECK(via.seed == 0x5eedull);
    CHECK(via.stream == 3);
    CHECK(uniforms(copy, n) == forward);
    CHECK(uniforms(fresh, n) == forward);
    CHECK(uniforms(via, n) == forward);
  }
}

TEST_CASE("A uniform is made from its Philox block as documented", "[random][stream]") {
  // Even index i: words 0-1 of block(counter (i/2 lo, i/2 hi, stream lo, stream hi), key (seed
  // lo, seed hi)); odd: words 2-3. Indices and streams above 2^32 exercise the high words.
  const std::uint64_t big = 0x0123456789abcdefull;
  for (const RandomStream stream : {RandomStream{0, 0}, RandomStream{7, 1ull << 32},
                                    RandomStream{1ull << 32, 5}, RandomStream{big, ~big}}) {
    for (const std::uint64_t index :
         {std::uint64_t(0), std::uint64_t(1), std::uint64_t(2), std::uint64_t(12345),
          (std::uint64_t(1) << 33) + 1, ~std::uint64_t(0) - 1, ~std::uint64_t(0)}) {
      const std::uint64_t pair = index / 2;
      const Philox4x32::Counter words =
          Philox4x32::block({std::uint32_t(pair), std::uint32_t(pair >> 32),
                             std::uint32_t(stream.stream), std::uint32_t(stream.stream >> 32)},
                            {std::uint32_t(stream.seed), std::uint32_t(stream.seed >> 32)});
      const std::size_t low = index % 2 == 0 ? 0 : 2;
      const std::uint64_t bits = (std::uint64_t(words[low + 1]) << 32) | words[low];
      const std::uint64_t b = bits >> 12;
      CAPTURE(stream.seed, stream.stream, index, b);
      const double u = stream.uniform(index);
      // b + 1/2 < 2^52 has 53 significant bits: u is exactly (b + 1/2) 2^-52.
      CHECK(u == (double(b) + 0.5) * 0x1p-52);
    }
  }
}

TEST_CASE("Every uniform lies strictly inside (0, 1) on the 2^-52 grid", "[random][stream]") {
  SECTION("200k samples") {
    const std::vector<double> u = uniforms({2024, 11}, 200000);
    std::size_t outside = 0, off_grid = 0, below_half = 0;
    for (const double v : u) {
      if (!(v > 0.0 && v < 1.0)) ++outside;
      // u 2^52 - 1/2 is computed exactly (u 2^52 < 2^52 has at most 53 significant bits) and
      // must be an integer b < 2^52.
      const double b = v * 0x1p52 - 0.5;
      if (b != std::floor(b) || b < 0.0 || b >= 0x1p52) ++off_grid;
      if (v < 0.5) ++below_half;
    }
    CHECK(outside == 0);
    CHECK(off_grid == 0);
    CHECK(below_half > 90000);  // about half of the 200k
  }
  SECTION("the extreme 52-bit integers, at addresses found by inverting Philox") {
    // b = 0 (all 64 bits clear) gives the smallest uniform, 2^-53.
    const Address lowest = address_of_bits(0, 0);
    CHECK(RandomStream{0, lowest.stream}.uniform(lowest.index) == 0x1p-53);
    // b = 2^51 - 1 gives the largest uniform below 1/2, exactly 1/2 - 2^-53.
    const Address below_half = address_of_bits(0, ((std::uint64_t(1) << 51) - 1) << 12);
    CHECK(RandomStream{0, below_half.stream}.uniform(below_half.index) == 0.5 - 0x1p-53);
    // b = 2^52 - 1 (the top 52 bits set) must give the largest uniform, 1 - 2^-53, strictly
    // below 1. Each draw hits such a word with probability 2^-52, and every word is reached by
    // some (stream, index) under every seed.
    for (const std::uint64_t seed : {std::uint64_t(0), std::uint64_t(2024)}) {
      const Address top = address_of_bits(seed, ~std::uint64_t(0));
      const double u = RandomStream{seed, top.stream}.uniform(top.index);
      INFO("seed " << seed << ", stream " << top.stream << ", index " << top.index
                   << ": u = " << std::setprecision(17) << u);
      CHECK(u == 1.0 - 0x1p-53);
    }
  }
}

TEST_CASE("Different seeds, streams and index ranges give different sequences",
          "[random][stream]") {
  struct Sequence {
    RandomStream stream;
    std::uint64_t first;
  };
  // High 32-bit halves of seed, stream and index each matter on their own.
  const std::vector<Sequence> sequences{{{1, 0}, 0},          {{1, 1}, 0},
                                        {{2, 0}, 0},          {{1 + (1ull << 32), 0}, 0},
                                        {{1, 1ull << 32}, 0}, {{1, 0}, 1ull << 33}};
  constexpr std::size_t n = 4096;
  for (std::size_t a = 0; a < sequences.size(); ++a) {
    for (std::size_t b = a + 1; b < sequences.size(); ++b) {
      const std::vector<double> x = uniforms(sequences[a].stream, n, sequences[a].first);
      const std::vector<double> y = uniforms(sequences[b].stream, n, sequences[b].first);
      std::size_t equal = 0;
      double cross = 0.0;
      for (std::size_t i = 0; i < n; ++i) {
        equal += x[i] == y[i] ? 1 : 0;
        cross += (x[i] - 0.5) * (y[i] - 0.5);
      }
      // Independent sequences: P(any of n equal) = n 2^-53; the correlation
      // 12/n sum (x - 1/2)(y - 1/2) has standard error 1/sqrt(n).
      const double correlation = 12.0 * cross / double(n);
      CAPTURE(a, b, correlation);
      CHECK(equal == 0);
      CHECK(std::abs(correlation) <= k_sigma / std::sqrt(double(n)));
    }
  }
}

TEST_CASE("Uniforms are uniform and uncorrelated", "[random][stream]") {
  constexpr std::size_t n = 200000;
  const std::vector<double> u = uniforms({0xc0ffeeull, 42}, n);
  const double root_n = std::sqrt(double(n));

  SECTION("mean 1/2 and variance 1/12") {
    // Standard errors: sqrt(1/12 / n) for the mean; for the sample variance
    // sqrt((mu_4 - sigma^4) / n) with mu_4 = 1/80, sigma^4 = 1/144, i.e. sqrt(1/180 / n).
    const Moments m = moments(u);
    CHECK(std::abs(m.mean - 0.5) <= k_sigma * std::sqrt(1.0 / 12.0) / root_n);
    CHECK(std::abs(m.variance - 1.0 / 12.0) <= k_sigma * std::sqrt(1.0 / 180.0) / root_n);
  }
  SECTION("Kolmogorov-Smirnov against U(0, 1)") {
    const double d = ks_distance(u, [](double x) { return x; });
    CAPTURE(d, ks_critical(n));
    CHECK(d <= ks_critical(n));
  }
  SECTION("low-order and high-order bits of the 52-bit integer are balanced") {
    // With u = (b + 1/2) 2^-52 exactly, each bit of b < 2^52 is a fair coin: the count of ones
    // among the m samples has standard error sqrt(m)/2. Bits 0-19 come from word 0 or 2, bits
    // 20-51 from word 1 or 3.
    std::vector<std::uint64_t> b;
    for (const double v : u) b.push_back(std::uint64_t(v * 0x1p52 - 0.5));
    const double m = double(b.size());
    for (const int bit : {0, 1, 10, 19, 20, 31, 32, 51}) {
      std::size_t ones = 0;
      for (const std::uint64_t v : b) ones += (v >> bit) & 1u;
      CAPTURE(bit, ones, m);
      CHECK(std::abs(double(ones) - m / 2.0) <= k_sigma * std::sqrt(m) / 2.0);
    }
  }
  SECTION("serial correlation of consecutive values") {
    // With the known mean and variance, r = 12/(n-1) sum (u_i - 1/2)(u_{i+1} - 1/2); the products
    // are uncorrelated with each other under independence, so r has standard error
    // 1/sqrt(n - 1).
    for (const std::size_t lag : {1, 2, 3, 4}) {
      double sum = 0.0;
      for (std::size_t i = 0; i + lag < n; ++i) sum += (u[i] - 0.5) * (u[i + lag] - 0.5);
      const double r = 12.0 * sum / double(n - lag);
      CAPTURE(lag, r);
      CHECK(std::abs(r) <= k_sigma / std::sqrt(double(n - lag)));
    }
  }
  SECTION("the two halves of one Philox block are uncorrelated") {
    // Pairs (u_{2j}, u_{2j+1}) come from words 0-1 and 2-3 of block j: correlation with standard
    // error 1/sqrt(n/2); and the rank statistic P(u_{2j} < u_{2j+1}) = 1/2 with standard error
    // 1/(2 sqrt(n/2)).
    const std::size_t pairs = n / 2;
    double sum = 0.0;
    std::size_t less = 0;
    for (std::size_t j = 0; j < pairs; ++j) {
      sum += (u[2 * j] - 0.5) * (u[2 * j + 1] - 0.5);
      less += u[2 * j] < u[2 * j + 1] ? 1 : 0;
    }
    const double r = 12.0 * sum / double(pairs);
    const double fraction = double(less) / double(pairs);
    CAPTURE(r, fraction);
    CHECK(std::abs(r) <= k_sigma / std::sqrt(double(pairs)));
    CHECK(std::abs(fraction - 0.5) <= k_sigma * 0.5 / std::sqrt(double(pairs)));
  }
}

// === draw_uniforms ==============================================================================

TEST_CASE("draw_uniforms lays a stream out row by row", "[random][spectral]") {
  const RandomStream stream{123, 4};
  const kernattn::Matrix<double> u = kernattn::spectral::draw_uniforms(stream, 6, 5);
  REQUIRE(u.rows() == 6);
  REQUIRE(u.cols() == 5);
  for (kernattn::Index m = 0; m < 6; ++m)
    for (kernattn::Index c = 0; c < 5; ++c) {
      CAPTURE(m, c);
      CHECK(u(m, c) == stream.uniform(std::uint64_t(m * 5 + c)));
    }
  // Fewer rows are a prefix; empty shapes are empty; negative shapes are rejected.
  CHECK((kernattn::spectral::draw_uniforms(stream, 4, 5) == u.topRows(4)));
  CHECK(kernattn::spectral::draw_uniforms(stream, 0, 5).size() == 0);
  CHECK(kernattn::spectral::draw_uniforms(stream, 3, 0).size() == 0);
  REQUIRE_INVALID_ARGUMENT(kernattn::spectral::draw_uniforms(stream, -1, 5), "draw_uniforms");
  REQUIRE_INVALID_ARGUMENT(kernattn::spectral::draw_uniforms(stream, 2, -3), "2x-3");
}

}  // namespace test_random
