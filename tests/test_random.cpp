// Random numbers: the Philox4x32-10 generator against the published known-answer vectors,
// RandomStream's uniforms (a pure function of (seed, stream, index), strictly inside (0, 1),
// statistically uniform and independent), and the inverse-CDF transforms of distributions.hpp
// against closed forms, identities and goodness-of-fit tests.
//
// Statistical tests use fixed seeds, so they are deterministic; their bounds are chosen so that a
// correct generator fails them with negligible probability over the choice of seed:
//   - Kolmogorov-Smirnov: the Dvoretzky-Kiefer-Wolfowitz inequality with Massart's constant,
//     P(sup|F_n - F| > t) <= 2 exp(-2 n t^2), holds for every n, so D_crit = sqrt(ln(2/alpha)/(2n))
//     at alpha = 1e-4;
//   - moments and correlations: k = 5 standard errors (a two-sided normal tail of 5.7e-7), the
//     standard error stated next to each check.
//
// Accuracy tolerances are derived next to each check from eps = 2^-52 and the conditioning of
// the function at the point tested.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <numbers>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "kernattn/core/errors.hpp"
#include "kernattn/random/distributions.hpp"
#include "kernattn/random/philox.hpp"
#include "kernattn/spectral/sampler.hpp"

namespace {

using kernattn::random::Philox4x32;
using kernattn::random::RandomStream;
namespace rnd = kernattn::random;

constexpr double eps = std::numeric_limits<double>::epsilon();  // 2^-52
constexpr double pi = std::numbers::pi;
constexpr double ks_alpha = 1e-4;  // the false-alarm probability of each KS test
constexpr double k_sigma = 5.0;    // standard errors allowed for moments and correlations

/// The spacing of doubles just above |x|.
double ulp(double x) {
  const double a = std::abs(x);
  return std::nextafter(a, std::numeric_limits<double>::infinity()) - a;
}

/// Uniforms first, ..., first + n - 1 of `stream`.
std::vector<double> uniforms(RandomStream stream, std::size_t n, std::uint64_t first = 0) {
  std::vector<double> u(n);
  for (std::size_t i = 0; i < n; ++i) u[i] = stream.uniform(first + i);
  return u;
}

/// The Kolmogorov-Smirnov distance sup|F_n - F| of `samples` from the CDF `cdf`.
template <class Cdf>
double ks_distance(std::vector<double> samples, Cdf cdf) {
  std::sort(samples.begin(), samples.end());
  const double n = double(samples.size());
  double distance = 0.0;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const double f = cdf(samples[i]);
    distance = std::max({distance, f - double(i) / n, double(i + 1) / n - f});
  }
  return distance;
}

/// The DKW-Massart critical value for n samples at false-alarm probability ks_alpha.
double ks_critical(std::size_t n) {
  return std::sqrt(std::log(2.0 / ks_alpha) / (2.0 * double(n)));
}

struct Moments {
  double mean = 0.0, variance = 0.0;
};

Moments moments(const std::vector<double>& x) {
  double sum = 0.0;
  for (const double v : x) sum += v;
  const double mean = sum / double(x.size());
  double squares = 0.0;
  for (const double v : x) squares += (v - mean) * (v - mean);
  return {mean, squares / double(x.size() - 1)};
}

/// The largest error/tolerance ratio seen, with a description of where; a NaN error sticks, and
/// no point checked leaves the ratio at -1.
class Worst {
 public:
  void update(double error, double tolerance, const std::string& what, double input, double got,
              double expected) {
    const double ratio = error == 0.0 ? 0.0 : error / tolerance;  // 0/0 where both underflow
    if (std::isnan(ratio_)) return;
    if (!(ratio <= ratio_)) {
      ratio_ = ratio;
      std::ostringstream out;
      out << std::setprecision(17) << what << ": input " << input << ", got " << got
          << ", expected " << expected << ", error " << error << ", tolerance " << tolerance;
      where_ = out.str();
    }
  }
  [[nodiscard]] double ratio() const { return ratio_; }
  [[nodiscard]] const std::string& where() const { return where_; }

 private:
  double ratio_ = -1.0;  // below any ratio: the first point is always recorded
  std::string where_ = "no point checked";
};

#define CHECK_WORST(worst)         \
  do {                             \
    INFO((worst).where());         \
    CHECK((worst).ratio() >= 0.0); \
    CHECK((worst).ratio() <= 1.0); \
  } while (false)

/// 10^exponent for exponent = from, from + step, ... <= to.
std::vector<double> log_grid(double from, double to, double step) {
  std::vector<double> grid;
  for (int k = 0;; ++k) {
    const double exponent = from + k * step;
    if (exponent > to) break;
    grid.push_back(std::pow(10.0, exponent));
  }
  return grid;
}

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

// --- Error model of gamma_p and gamma_q ---------------------------------------------------------

/// Relative error bound of the factor exp(a log x - x - lgamma(a)) that gamma_p and gamma_q
/// share, times the series or continued fraction. The exponent's terms are each rounded (log
/// and lgamma faithfully: one ulp; the fma and the subtraction half an ulp), so its absolute
/// error is at most eps times the sum of their magnitudes, and exp turns that absolute error
/// into a relative one. 64 eps more cover exp itself and the series or continued fraction
/// (sums of positive terms, one or two roundings a term, a few hundred terms at most here).
double prefactor_error(double a, double x) {
  return eps * (std::abs(a * std::log(x)) + x + std::abs(std::lgamma(a)) + 64.0);
}

struct GammaTolerance {
  double p = 0.0, q = 0.0;
};

/// Absolute error bounds on P(a, x) = p and Q(a, x) = q: below x = a + 1 the library sums P and
/// takes Q = 1 - P, above it evaluates Q and takes P = 1 - Q; the one computed directly errs by
/// prefactor_error times itself, its complement by that plus the rounding of 1 - (it).
/// Results in the subnormal range are rounded to multiples of 2^-1074, a few of those roundings
/// add 4 * 2^-1074 in absolute terms.
GammaTolerance gamma_tolerance(double a, double x, double p, double q) {
  const double kappa = prefactor_error(a, x);
  const double subnormal = 4.0 * std::numeric_limits<double>::denorm_min();
  if (x < a + 1.0) return {kappa * p + subnormal, kappa * p + eps};
  return {kappa * q + eps, kappa * q + subnormal};
}

/// The relative error bound of gamma_quantile(a, u) = x. Halley stops where the computed P (Q
/// above the median) equals u (1 - u) to within its own noise, and the computed P is within
/// prefactor_error of the true one: 2 prefactor_error in probability. The quantile's relative
/// condition number tail / (x density) turns that into a relative error in x.
double gamma_quantile_tolerance(double a, double x, double u) {
  const double density = std::exp((a - 1.0) * std::log(x) - x - std::lgamma(a));
  const double tail = u <= 0.5 ? u : 1.0 - u;
  return 2.0 * tail / (x * density) * prefactor_error(a, x) + 2.0 * eps;
}

/// The CDF of Student's t with 5 degrees of freedom: with theta = atan(t / sqrt(5)),
/// F(t) = 1/2 + (theta + sin(theta) cos(theta) (1 + 2/3 cos^2(theta))) / pi.
double student_t5_cdf(double t) {
  const double theta = std::atan(t / std::sqrt(5.0));
  const double c = std::cos(theta);
  return 0.5 + (theta + std::sin(theta) * c * (1.0 + 2.0 / 3.0 * c * c)) / pi;
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

// === normal_quantile ============================================================================

TEST_CASE("normal_quantile inverts normal_cdf from 1e-300 to 1 - 1e-12", "[random][normal]") {
  // In the tail d log(Phi)/dx ~ |x|, so no double x can make Phi(x) closer to u than
  // |x| ulp(x)/2 relative, and normal_cdf itself is only as accurate as its argument (it scales
  // x by 1/sqrt(2) before erfc). We allow one ulp of x (a faithfully rounded quantile) on top of
  // 1e-13.
  Worst lower, upper;
  std::vector<double> us, xs;  // the grid in increasing u, for the monotonicity check
  for (const double u : log_grid(-300.0, std::log10(0.5), 0.01)) {
    const double x = rnd::normal_quantile(u);
    const double p = rnd::normal_cdf(x);
    lower.update(std::abs(p / u - 1.0), 1e-13 + std::abs(x) * ulp(x), "Phi(x)/u - 1", u, p, u);
    us.push_back(u);
    xs.push_back(x);
  }
  std::vector<double> tails = log_grid(-12.0, std::log10(0.5), 0.01);
  std::reverse(tails.begin(), tails.end());
  for (const double t : tails) {
    const double u = 1.0 - t;
    const double tail = 1.0 - u;  // exact (Sterbenz)
    const double x = rnd::normal_quantile(u);
    const double q = rnd::normal_cdf(-x);
    upper.update(std::abs(q / tail - 1.0), 1e-13 + std::abs(x) * ulp(x), "Phi(-x)/(1-u) - 1", u, q,
                 tail);
    us.push_back(u);
    xs.push_back(x);
  }
  CHECK_WORST(lower);
  CHECK_WORST(upper);

  // Monotone: adjacent grid points differ by 2.3% in u (or in 1 - u), far more than the
  // quantile's error, so the quantile must strictly increase along the grid.
  std::size_t violations = 0;
  for (std::size_t i = 1; i < xs.size(); ++i) violations += xs[i] > xs[i - 1] ? 0 : 1;
  CHECK(violations == 0);
  CHECK(std::is_sorted(us.begin(), us.end()));
}

TEST_CASE("normal_quantile is exactly antisymmetric", "[random][normal]") {
  // normal_quantile(1 - u) == -normal_quantile(u) wherever 1 - u is exact, u = 1/2 included
  // (where it makes the quantile 0). Candidates: dyadic grids, powers of two, random uniforms.
  std::vector<double> candidates;
  for (int k = 1; k < 1024; ++k) candidates.push_back(k / 1024.0);
  for (int j = 2; j <= 60; ++j) candidates.push_back(std::ldexp(1.0, -j));
  for (const double u : uniforms({5, 5}, 4096)) candidates.push_back(u);
  std::size_t checked = 0;
  for (const double u : candidates) {
    const double complement = 1.0 - u;
    if (1.0 - complement != u) continue;  // 1 - u was rounded (the subtraction back is exact)
    ++checked;
    const double x = rnd::normal_quantile(u);
    const double y = rnd::normal_quantile(complement);
    INFO(std::setprecision(17) << "u = " << u << ": Q(u) = " << x << ", Q(1-u) = " << y);
    CHECK(y == -x);
  }
  // Not vacuous: the 1023 dyadic points, 52 powers of two and the ~2048 random uniforms above
  // 1/2 (those below, odd multiples of 2^-54, never have an exact complement).
  CHECK(checked > 2900);
}

TEST_CASE("normal_quantile of uniforms is standard normal", "[random][normal]") {
  constexpr std::size_t n = 200000;
  std::vector<double> z = uniforms({77, 1}, n);
  for (double& v : z) v = rnd::normal_quantile(v);
  const double root_n = std::sqrt(double(n));

  const double d = ks_distance(z, [](double x) { return rnd::normal_cdf(x); });
  CAPTURE(d, ks_critical(n));
  CHECK(d <= ks_critical(n));

  // Standard errors: mean 1/sqrt(n); variance sqrt((mu_4 - 1)/n) = sqrt(2/n); fourth moment
  // E z^4 = 3 with sqrt((E z^8 - 9)/n) = sqrt(96/n) (E z^8 = 105).
  const Moments m = moments(z);
  double fourth = 0.0;
  for (const double v : z) fourth += v * v * v * v;
  fourth /= double(n);
  CAPTURE(m.mean, m.variance, fourth);
  CHECK(std::abs(m.mean) <= k_sigma / root_n);
  CHECK(std::abs(m.variance - 1.0) <= k_sigma * std::sqrt(2.0) / root_n);
  CHECK(std::abs(fourth - 3.0) <= k_sigma * std::sqrt(96.0) / root_n);
}

// === gamma_p, gamma_q, gamma_quantile ===========================================================

namespace {
const std::vector<double> shapes{0.05, 0.5, 1.0, 1.5, 2.5, 32.0, 500.0};

/// x on a log grid over [1e-6, 2000], plus both sides of the branch point a + 1.
std::vector<double> gamma_arguments(double a) {
  std::vector<double> xs = log_grid(-6.0, std::log10(2000.0), 0.02);
  xs.push_back(a + 1.0);
  xs.push_back(std::nextafter(a + 1.0, 0.0));
  xs.push_back(a);
  return xs;
}
}  // namespace

TEST_CASE("gamma_p + gamma_q == 1", "[random][gamma]") {
  // One of them is 1 minus the other, so the identity holds to a rounding or two (~2 eps);
  // 1e-14 leaves room for evaluating the two independently to the accuracy the other tests ask.
  Worst worst;
  for (const double a : shapes) {
    for (const double x : gamma_arguments(a)) {
      const double p = rnd::gamma_p(a, x), q = rnd::gamma_q(a, x);
      worst.update(std::abs(p + q - 1.0), 1e-14, "P + Q - 1 at a = " + std::to_string(a), x, p + q,
                   1.0);
      CHECK(p >= 0.0);
      CHECK(p <= 1.0);
      CHECK(q >= 0.0);
      CHECK(q <= 1.0);
    }
    CHECK(rnd::gamma_p(a, 0.0) == 0.0);
    CHECK(rnd::gamma_q(a, 0.0) == 1.0);
  }
  CHECK_WORST(worst);
}

TEST_CASE("gamma_p and gamma_q match their closed forms for a = 1 and a = 1/2", "[random][gamma]") {
  Worst p1, q1, p_half, q_half;
  for (const double x : log_grid(-10.0, std::log10(700.0), 0.01)) {
    // a = 1: P = 1 - e^-x, Q = e^-x; the references err by one ulp (x is exact).
    const double e1 = -std::expm1(-x), f1 = std::exp(-x);
    const GammaTolerance t1 = gamma_tolerance(1.0, x, e1, f1);
    p1.update(std::abs(rnd::gamma_p(1.0, x) - e1), t1.p + eps * e1, "P(1, x)", x,
              rnd::gamma_p(1.0, x), e1);
    q1.update(std::abs(rnd::gamma_q(1.0, x) - f1), t1.q + eps * f1, "Q(1, x)", x,
              rnd::gamma_q(1.0, x), f1);

    // a = 1/2: P = erf(sqrt(x)), Q = erfc(sqrt(x)). Rounding sqrt(x) (eps/2 relative) moves erf
    // by at most eps/2 relative (d log erf / d log s <= 1) and erfc by about 2x eps/2 relative
    // (d log erfc / d log s ~ 2 s^2); plus 2 eps for erf and erfc themselves.
    const double s = std::sqrt(x);
    const double e_half = std::erf(s), f_half = std::erfc(s);
    const GammaTolerance t_half = gamma_tolerance(0.5, x, e_half, f_half);
    p_half.update(std::abs(rnd::gamma_p(0.5, x) - e_half), t_half.p + 3.0 * eps * e_half,
                  "P(1/2, x)", x, rnd::gamma_p(0.5, x), e_half);
    q_half.update(std::abs(rnd::gamma_q(0.5, x) - f_half), t_half.q + (x + 3.0) * eps * f_half,
                  "Q(1/2, x)", x, rnd::gamma_q(0.5, x), f_half);
  }
  CHECK_WORST(p1);
  CHECK_WORST(q1);
  CHECK_WORST(p_half);
  CHECK_WORST(q_half);
}

TEST_CASE("gamma_p and gamma_q satisfy the recurrence in a", "[random][gamma]") {
  // P(a+1, x) = P(a, x) - x^a e^-x / Gamma(a+1) and Q(a+1, x) = Q(a, x) + x^a e^-x / Gamma(a+1).
  // The term is evaluated like the prefactor (error prefactor_error(a+1, x)); the two sides
  // differ by at most both functions' bounds, the term's error and one rounding.
  Worst p, q;
  for (const double a : shapes) {
    for (const double x : gamma_arguments(a)) {
      const double term = std::exp(a * std::log(x) - x - std::lgamma(a + 1.0));
      const double pa = rnd::gamma_p(a, x), qa = rnd::gamma_q(a, x);
      const double pb = rnd::gamma_p(a + 1.0, x), qb = rnd::gamma_q(a + 1.0, x);
      const GammaTolerance ta = gamma_tolerance(a, x, pa, qa);
      const GammaTolerance tb = gamma_tolerance(a + 1.0, x, pb, qb);
      const double term_error = prefactor_error(a + 1.0, x) * term;
      const std::string where = "a = " + std::to_string(a) + ", x";
      p.update(std::abs(pb - (pa - term)), ta.p + tb.p + term_error + eps * pa,
               "P(a+1, x) vs P(a, x) - term at " + where, x, pb, pa - term);
      q.update(std::abs(qb - (qa + term)), ta.q + tb.q + term_error + eps * (qa + term),
               "Q(a+1, x) vs Q(a, x) + term at " + where, x, qb, qa + term);
    }
  }
  CHECK_WORST(p);
  CHECK_WORST(q);
}

TEST_CASE("gamma_q for integer shapes matches the Poisson sum", "[random][gamma]") {
  // Q(n, x) = sum_{k<n} x^k e^-x / k!, positive terms each computed like the prefactor: the sum
  // errs by at most the largest term's prefactor_error plus n eps, relative.
  Worst worst;
  for (const int n : {1, 2, 5, 32, 500}) {
    for (const double x : log_grid(-3.0, std::log10(3.0 * n + 50.0), 0.01)) {
      double sum = 0.0, reference_error = 0.0;
      for (int k = 0; k < n; ++k) {
        sum += std::exp(k * std::log(x) - x - std::lgamma(k + 1.0));
        reference_error = std::max(reference_error, prefactor_error(k + 1.0, x));
      }
      reference_error = (reference_error + n * eps) * sum;
      const double got = rnd::gamma_q(n, x);
      const GammaTolerance t = gamma_tolerance(n, x, 1.0 - sum, sum);
      worst.update(std::abs(got - sum), t.q + reference_error,
                   "Q(n, x) vs Poisson sum, n = " + std::to_string(n), x, got, sum);
    }
  }
  CHECK_WORST(worst);
}

TEST_CASE("gamma_quantile inverts gamma_p and gamma_q", "[random][gamma]") {
  // Relative 1e-12 on P (u <= 1/2) or on Q (u > 1/2), from u = 1e-12 to 1 - 1e-12. The round
  // trip's error is the noise of the computed P at the quantile, prefactor_error: a few eps for
  // small shapes, ~1000 eps for a = 500 (a log x and lgamma(a) ~ 2600 cancel in the exponent).
  for (const double a : shapes) {
    Worst lower, upper;
    for (const double t : log_grid(-12.0, std::log10(0.5), 0.05)) {
      const double x = rnd::gamma_quantile(a, t);
      const double p = rnd::gamma_p(a, x);
      lower.update(std::abs(p / t - 1.0), 1e-12, "P(a, Q^-1(u))/u - 1", t, p, t);
      CHECK(x > 0.0);
      const double u = 1.0 - t;
      const double tail = 1.0 - u;  // exact
      const double y = rnd::gamma_quantile(a, u);
      const double q = rnd::gamma_q(a, y);
      upper.update(std::abs(q / tail - 1.0), 1e-12, "Q(a, P^-1(u))/(1-u) - 1", u, q, tail);
      CHECK(std::isfinite(y));
    }
    CAPTURE(a);
    CHECK_WORST(lower);
    CHECK_WORST(upper);
  }
}

TEST_CASE("chi_square_quantile matches its closed forms for 1 and 2 degrees of freedom",
          "[random][gamma]") {
  SECTION("k = 2: -2 log(1 - u)") {
    // The reference -2 log1p(-u) errs by one ulp; the quantile by gamma_quantile_tolerance.
    Worst worst;
    std::vector<double> us = log_grid(-12.0, std::log10(0.5), 0.01);
    for (const double t : log_grid(-12.0, std::log10(0.5), 0.01)) us.push_back(1.0 - t);
    for (const double u : us) {
      const double expected = -2.0 * std::log1p(-u);
      const double got = rnd::chi_square_quantile(2.0, u);
      const double tolerance = gamma_quantile_tolerance(1.0, expected / 2.0, u) + eps;
      worst.update(std::abs(got / expected - 1.0), tolerance, "chi2_2^-1(u)", u, got, expected);
    }
    CHECK_WORST(worst);
  }
  SECTION("k = 1: normal_quantile((1 + u)/2)^2") {
    // u = k/4096, so (1 + u)/2 and its complement (1 - u)/2 are exact. The normal quantile z
    // stops where normal_cdf(z) equals the tail t = (1 - u)/2 to within normal_cdf's error,
    // (z^2 + 4) eps t (its argument's rounding, amplified by ~z^2, and erfc's own), on both
    // Halley's last residual and the truth: |dz| <= 2 (z^2 + 4) eps t / phi(z) + ulp(z)/2, and
    // z^2 errs by 2|z| dz plus its rounding.
    Worst worst;
    for (int k = 1; k < 4096; ++k) {
      const double u = k / 4096.0;
      const double z = rnd::normal_quantile((1.0 + u) / 2.0);
      const double tail = (1.0 - u) / 2.0;
      const double phi = std::exp(-0.5 * z * z) / std::sqrt(2.0 * pi);
      const double dz = 2.0 * (z * z + 4.0) * eps * tail / phi + ulp(z) / 2.0;
      const double expected = z * z;
      const double got = rnd::chi_square_quantile(1.0, u);
      const double tolerance = 2.0 * std::abs(z) * dz + eps * expected +
                               gamma_quantile_tolerance(0.5, expected / 2.0, u) * expected;
      worst.update(std::abs(got - expected), tolerance, "chi2_1^-1(u)", u, got, expected);
    }
    CHECK_WORST(worst);
  }
  SECTION("chi_quantile is the square root") {
    for (const double u : {1e-9, 0.01, 0.3, 0.5, 0.77, 0.999}) {
      for (const double k : {1.0, 3.0, 64.0}) {
        CAPTURE(u, k);
        CHECK(rnd::chi_quantile(k, u) == std::sqrt(rnd::chi_square_quantile(k, u)));
      }
    }
  }
}

TEST_CASE("Gamma samples have mean a and variance a", "[random][gamma]") {
  // Gamma(a, 1): mean a, variance a, central fourth moment 3a^2 + 6a. Standard errors:
  // sqrt(a/n) for the mean, sqrt((3a^2 + 6a - a^2)/n) = sqrt((2a^2 + 6a)/n) for the variance.
  constexpr std::size_t n = 20000;
  std::uint64_t stream = 100;
  for (const double a : {0.5, 2.5, 32.0}) {
    std::vector<double> x = uniforms({31337, stream++}, n);
    for (double& v : x) v = rnd::gamma_quantile(a, v);
    const Moments m = moments(x);
    CAPTURE(a, m.mean, m.variance);
    CHECK(std::abs(m.mean - a) <= k_sigma * std::sqrt(a / double(n)));
    CHECK(std::abs(m.variance - a) <= k_sigma * std::sqrt((2.0 * a * a + 6.0 * a) / double(n)));
  }
}

// === Student-t ==================================================================================

TEST_CASE("student_t_from_uniforms gives Student's t", "[random][student]") {
  SECTION("1 degree of freedom: Cauchy, CDF 1/2 + atan(x)/pi") {
    constexpr std::size_t n = 50000;
    const std::vector<double> u = uniforms({8, 1}, 2 * n);
    std::vector<double> t(n);
    for (std::size_t i = 0; i < n; ++i)
      t[i] = rnd::student_t_from_uniforms(1.0, u[2 * i], u[2 * i + 1]);
    const double d = ks_distance(t, [](double x) { return 0.5 + std::atan(x) / pi; });
    CAPTURE(d, ks_critical(n));
    CHECK(d <= ks_critical(n));
  }
  SECTION("5 degrees of freedom: mean 0, variance 5/3, the t_5 CDF") {
    constexpr std::size_t n = 100000;
    const double nu = 5.0;
    const std::vector<double> u = uniforms({8, 5}, 2 * n);
    std::vector<double> t(n);
    for (std::size_t i = 0; i < n; ++i)
      t[i] = rnd::student_t_from_uniforms(nu, u[2 * i], u[2 * i + 1]);
    // Var t = nu/(nu-2) = 5/3 and E t^4 = 3 nu^2/((nu-2)(nu-4)) = 25: standard errors
    // sqrt((5/3)/n) for the mean and sqrt((25 - 25/9)/n) for the variance. Moments of order
    // >= 5 are infinite (E|t^2|^3 among them, so no Berry-Esseen bound), and the sample variance
    // approaches its normal limit slowly, with a heavy right tail: we allow k = 6 for it.
    const Moments m = moments(t);
    CAPTURE(m.mean, m.variance);
    CHECK(std::abs(m.mean) <= k_sigma * std::sqrt(nu / (nu - 2.0) / double(n)));
    CHECK(std::abs(m.variance - nu / (nu - 2.0)) <=
          6.0 * std::sqrt((25.0 - 25.0 / 9.0) / double(n)));
    const double d = ks_distance(t, student_t5_cdf);
    CAPTURE(d, ks_critical(n));
    CHECK(d <= ks_critical(n));
  }
}

// === Laplace and Cauchy =========================================================================

namespace {
/// u on a log grid from 1e-300 to 1/2, then 1 - t for t from 1/2 down to 1e-16.
std::vector<double> unit_grid() {
  std::vector<double> us = log_grid(-300.0, std::log10(0.5), 0.01);
  std::vector<double> tails = log_grid(-16.0, std::log10(0.5), 0.01);
  for (auto t = tails.rbegin(); t != tails.rend(); ++t) us.push_back(1.0 - *t);
  return us;
}
}  // namespace

TEST_CASE("laplace_quantile inverts the Laplace CDF", "[random][laplace]") {
  // Below 1/2, F(x) = e^x / 2 = u; above, 1 - F(x) = e^-x / 2 = 1 - u (exact). x = log(2u) is
  // faithful, an absolute error of up to |x| eps, which exp turns into a relative one; exp
  // adds one ulp and the halving none: (|x| + 2) eps relative.
  Worst worst;
  for (const double u : unit_grid()) {
    const double x = rnd::laplace_quantile(u);
    const double tail = u < 0.5 ? u : 1.0 - u;
    const double f = 0.5 * std::exp(-std::abs(x));
    worst.update(std::abs(f / tail - 1.0), (std::abs(x) + 2.0) * eps, "Laplace tail", u, f, tail);
    CHECK((u < 0.5 ? x < 0.0 : x >= 0.0));
  }
  CHECK_WORST(worst);
  CHECK(rnd::laplace_quantile(0.5) == 0.0);
  CHECK(rnd::laplace_quantile(0.25) == std::log(0.5));
  CHECK(rnd::laplace_quantile(0.75) == -std::log(0.5));
}

TEST_CASE("cauchy_quantile inverts the Cauchy CDF", "[random][cauchy]") {
  // F(x) = 1/2 + atan(x)/pi. In the tails we compare the equivalent atan(1/|x|)/pi with
  // min(u, 1 - u), free of cancellation: the quantile rounds pi u (eps/2, pi's own rounding
  // eps/4), tan (one ulp, its condition <= pi/2 below 1/4 and undone by atan above) and the
  // reciprocal (eps/2), the reference 1/|x|, atan and the division (2 eps): 8 eps relative.
  // The direct form 1/2 + atan(x)/pi must equal u to 4 eps absolute.
  Worst tails, direct;
  for (const double u : unit_grid()) {
    const double x = rnd::cauchy_quantile(u);
    const double tail = u < 0.5 ? u : 1.0 - u;
    const double f = std::atan(1.0 / std::abs(x)) / pi;
    tails.update(std::abs(f / tail - 1.0), 8.0 * eps, "Cauchy tail", u, f, tail);
    const double cdf = 0.5 + std::atan(x) / pi;
    direct.update(std::abs(cdf - u), 4.0 * eps, "Cauchy CDF", u, cdf, u);
    CHECK((u < 0.5 ? x < 0.0 : x > 0.0));
  }
  CHECK_WORST(tails);
  CHECK_WORST(direct);
  CHECK(rnd::cauchy_quantile(0.5) == 0.0);
  CHECK(rnd::cauchy_quantile(0.25) == Approx(-1.0).epsilon(4 * eps));
}

TEST_CASE("laplace_quantile and cauchy_quantile are exactly antisymmetric",
          "[random][laplace][cauchy]") {
  std::size_t checked = 0;
  std::vector<double> candidates = uniforms({6, 6}, 4096);
  for (int k = 1; k < 1024; ++k) candidates.push_back(k / 1024.0);
  for (const double u : candidates) {
    const double complement = 1.0 - u;
    if (1.0 - complement != u) continue;  // 1 - u was rounded
    ++checked;
    CAPTURE(u);
    CHECK(rnd::laplace_quantile(complement) == -rnd::laplace_quantile(u));
    CHECK(rnd::cauchy_quantile(complement) == -rnd::cauchy_quantile(u));
  }
  // The 1023 dyadic points and the ~2048 random uniforms above 1/2.
  CHECK(checked > 2900);
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

// === Bad input ==================================================================================

TEST_CASE("Transforms reject uniforms outside (0, 1) and bad shapes", "[random][errors]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double infinity = std::numeric_limits<double>::infinity();
  for (const double u : {0.0, 1.0, nan, -0.1, 1.5, infinity, -0.0}) {
    CAPTURE(u);
    REQUIRE_INVALID_ARGUMENT(rnd::normal_quantile(u), "normal_quantile");
    REQUIRE_INVALID_ARGUMENT(rnd::normal_quantile(u), "strictly inside (0, 1)");
    REQUIRE_INVALID_ARGUMENT(rnd::gamma_quantile(1.0, u), "gamma_quantile");
    REQUIRE_INVALID_ARGUMENT(rnd::laplace_quantile(u), "laplace_quantile");
    REQUIRE_INVALID_ARGUMENT(rnd::cauchy_quantile(u), "cauchy_quantile");
  }
  for (const double shape : {0.0, -1.0, nan, infinity}) {
    CAPTURE(shape);
    REQUIRE_INVALID_ARGUMENT(rnd::gamma_quantile(shape, 0.5), "gamma_quantile");
    REQUIRE_INVALID_ARGUMENT(rnd::gamma_quantile(shape, 0.5), "shape");
  }
  REQUIRE_INVALID_ARGUMENT(rnd::gamma_quantile(1.0, 1.0), "gamma_quantile");
  REQUIRE_INVALID_ARGUMENT(rnd::laplace_quantile(0.0), "got 0");
  REQUIRE_INVALID_ARGUMENT(rnd::cauchy_quantile(1.0), "got 1");
  // The composite transforms reject through the transform they call.
  REQUIRE_THROWS_AS(rnd::chi_square_quantile(0.0, 0.5), kernattn::InvalidArgument);
  REQUIRE_THROWS_AS(rnd::chi_quantile(3.0, 1.0), kernattn::InvalidArgument);
  REQUIRE_THROWS_AS(rnd::student_t_from_uniforms(5.0, 0.0, 0.5), kernattn::InvalidArgument);
  REQUIRE_THROWS_AS(rnd::student_t_from_uniforms(5.0, 0.5, 1.0), kernattn::InvalidArgument);
}

// === Extreme inputs ==============================================================================

TEST_CASE("normal_quantile handles subnormal uniforms", "[random]") {
  // Phi^-1(u) for the subnormal u >= 2^-1074 lies in [-38.5, -37.5]; the quantile must be
  // finite and invert normal_cdf (to one ulp of x, as above, plus the subnormal u's own
  // relative spacing 2^-1074/u).
  for (const double u :
       {1e-310, 5e-311, 1e-315, 1e-320, std::numeric_limits<double>::denorm_min()}) {
    const double x = rnd::normal_quantile(u);
    INFO(std::setprecision(17) << "u = " << u << ", x = " << x);
    REQUIRE(std::isfinite(x));
    CHECK(std::abs(rnd::normal_cdf(x) / u - 1.0) <=
          1e-13 + std::abs(x) * ulp(x) + std::numeric_limits<double>::denorm_min() / u);
  }
}

TEST_CASE("gamma_p is accurate for large shapes", "[random]") {
  // References P(a, a) computed with mpmath 1.3 at 40 digits (gammainc(a, 0, a, regularized)),
  // consistent with the asymptotic 1/2 + 1/(3 sqrt(2 pi a)). Tolerance: 2 prefactor_error.
  const std::array<std::array<double, 2>, 2> cases{
      {{32000.0, 0.5007433851774478896513007}, {100000.0, 0.5004205221103651766933126}}};
  for (const auto& [a, expected] : cases) {
    const double got = rnd::gamma_p(a, a);
    INFO(std::setprecision(17) << "P(" << a << ", " << a << ") = " << got << ", expected "
                               << expected);
    CHECK(std::abs(got / expected - 1.0) <= 2.0 * prefactor_error(a, a));
  }
}
