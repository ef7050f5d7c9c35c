// The random-number tests' helpers (test_random*.cpp): their statistical checks (KS at alpha =
// 1e-4, moments, k = 5 standard errors; explained in test_random.cpp), a stream's uniforms, ulp,
// log grids, and Worst with CHECK_WORST, the largest error/tolerance ratio over a grid.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <numbers>
#include <sstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "kernattn/random/philox.hpp"

namespace random_checks {

using kernattn::random::RandomStream;

inline constexpr double eps = std::numeric_limits<double>::epsilon();  // 2^-52
inline constexpr double pi = std::numbers::pi;
inline constexpr double ks_alpha = 1e-4;  // the false-alarm probability of each KS test
inline constexpr double k_sigma = 5.0;    // standard errors allowed for moments and correlations

/// The spacing of doubles just above |x|.
inline double ulp(double x) {
  const double a = std::abs(x);
  return std::nextafter(a, std::numeric_limits<double>::infinity()) - a;
}

/// Uniforms first, ..., first + n - 1 of `stream`.
inline std::vector<double> uniforms(RandomStream stream, std::size_t n, std::uint64_t first = 0) {
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
inline double ks_critical(std::size_t n) {
  return std::sqrt(std::log(2.0 / ks_alpha) / (2.0 * double(n)));
}

struct Moments {
  double mean = 0.0, variance = 0.0;
};

/// The sample mean and the unbiased sample variance of `x`.
inline Moments moments(const std::vector<double>& x) {
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
inline std::vector<double> log_grid(double from, double to, double step) {
  std::vector<double> grid;
  for (int k = 0;; ++k) {
    const double exponent = from + k * step;
    if (exponent > to) break;
    grid.push_back(std::pow(10.0, exponent));
  }
  return grid;
}

}  // namespace random_checks
