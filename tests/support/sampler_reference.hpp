// The spectral sampler tests' helpers (test_samplers*.cpp): exact distribution functions, the
// Kolmogorov-Smirnov check at alpha = 1e-3 (derived in test_samplers.cpp), random directions, and
// the mixture and MLP layers that several tests draw from.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <numbers>
#include <string>
#include <vector>

#include "catch.hpp"
#include "kernattn/kernattn.hpp"

namespace sampler_ref {

namespace sp = kernattn::spectral;
namespace kr = kernattn::random;
using kernattn::Index;
using kr::RandomStream;
using MatrixXd = kernattn::Matrix<double>;
using VectorXd = kernattn::Vector<double>;
template <class T>
using Mat = kernattn::Matrix<T>;
template <class T>
using Vec = kernattn::Vector<T>;

// ---------------------------------------------------------------------------------------------
// Exact distribution functions

inline double normal_cdf(double x, double mean = 0.0, double sd = 1.0) {
  return 0.5 * std::erfc(-(x - mean) / (sd * std::numbers::sqrt2));
}

/// The Student-t CDF with an integer number of degrees of freedom nu (Abramowitz and Stegun
/// 26.7.3-26.7.4): with theta = atan(t/sqrt(nu)), A = P(|T| < t) is
/// (2/pi)[theta + sin(theta)(cos + 2/3 cos^3 + ... + (2.4...(nu-3))/(1.3...(nu-2)) cos^(nu-2))]
/// for odd nu (2 theta/pi for nu = 1) and sin(theta)[1 + 1/2 cos^2 + ... +
/// (1.3...(nu-3))/(2.4...(nu-2)) cos^(nu-2)] for even nu; F(t) = (1 + A)/2 (A is odd in t).
inline double student_t_cdf(double t, int nu) {
  const double theta = std::atan(t / std::sqrt(double(nu)));
  const double cos2 = std::cos(theta) * std::cos(theta);
  double a;
  if (nu % 2 == 1) {
    double sum = 0.0;
    if (nu > 1) {
      double term = std::cos(theta);
      sum = term;
      for (int k = 3; k <= nu - 2; k += 2) {
        term *= double(k - 1) / k * cos2;
        sum += term;
      }
    }
    a = 2.0 / std::numbers::pi * (theta + std::sin(theta) * sum);
  } else {
    double term = 1.0, sum = 1.0;
    for (int k = 2; k <= nu - 2; k += 2) {
      term *= double(k - 1) / k * cos2;
      sum += term;
    }
    a = std::sin(theta) * sum;
  }
  return 0.5 * (1.0 + a);
}

inline double laplace_cdf(double x, double scale) {
  return x < 0 ? 0.5 * std::exp(x / scale) : 1.0 - 0.5 * std::exp(-x / scale);
}

/// The chi-square CDF for an even number k of degrees of freedom, in closed form:
/// 1 - exp(-x/2) sum_{j < k/2} (x/2)^j / j!.
inline double chi_square_cdf_even(double x, int k) {
  if (x <= 0) return 0.0;
  double term = 1.0, sum = 1.0;
  for (int j = 1; j < k / 2; ++j) {
    term *= 0.5 * x / j;
    sum += term;
  }
  return 1.0 - std::exp(-0.5 * x) * sum;
}

// ---------------------------------------------------------------------------------------------
// Statistical checks

inline constexpr double ks_alpha = 1e-3;

inline double ks_critical(std::size_t n) {
  return std::sqrt(std::log(2.0 / ks_alpha) / 2.0) / std::sqrt(double(n));
}

inline double ks_statistic(std::vector<double> sample, const std::function<double(double)>& cdf) {
  std::sort(sample.begin(), sample.end());
  const double n = double(sample.size());
  double d = 0.0;
  for (std::size_t i = 0; i < sample.size(); ++i) {
    const double f = cdf(sample[i]);
    d = std::max({d, f - double(i) / n, double(i + 1) / n - f});
  }
  return d;
}

/// Checks that the KS statistic of `sample` against `cdf` lies below the critical value.
inline void check_ks(const std::vector<double>& sample, const std::function<double(double)>& cdf,
                     const std::string& what) {
  const double statistic = ks_statistic(sample, cdf);
  INFO(what << ": KS statistic " << statistic << ", critical value " << ks_critical(sample.size())
            << " (n = " << sample.size() << ", alpha = " << ks_alpha << ")");
  CHECK(statistic < ks_critical(sample.size()));
}

/// A unit vector in a direction drawn uniformly from the sphere (fixed by `seed`).
inline VectorXd random_direction(Index d, std::uint64_t seed) {
  const RandomStream stream{seed, 77};
  VectorXd u(d);
  for (Index i = 0; i < d; ++i) u(i) = kr::normal_quantile(stream.uniform(std::uint64_t(i)));
  return u.normalized();
}

/// The frequencies `sampler` draws, in double.
template <class S>
MatrixXd draw(const S& sampler, Index rows, Index d, RandomStream stream) {
  return sp::draw_frequencies(sampler, rows, d, stream).template cast<double>();
}

/// The value T holds for `x` (parameters are given to the samplers in T).
template <class T>
double held(double x) {
  return double(T(x));
}

// ---------------------------------------------------------------------------------------------
// Samplers and networks shared by several tests

/// A mixture with a zero-weight component far away (never to be drawn).
template <class T>
sp::GaussianMixture<T> test_mixture() {
  Vec<T> weights(4);
  weights << T(0.2), T(0), T(0.3), T(0.5);
  Mat<T> means(4, 3), variances(4, 3);
  means << T(1.5), T(-0.5), T(0), T(40), T(40), T(40), T(0), T(2), T(-1), T(0.5), T(0.5), T(3);
  variances << T(0.3), T(1), T(0.5), T(1), T(1), T(1), T(0.2), T(0.4), T(1.5), T(1), T(0.1),
      T(0.25);
  return {weights, means, variances};
}

/// A matrix of values in [-1, 1) from a stream, in T.
template <class T>
Mat<T> uniform_matrix(Index rows, Index cols, std::uint64_t stream) {
  return (2.0 * sp::draw_uniforms({51, stream}, rows, cols).array() - 1.0)
      .matrix()
      .template cast<T>();
}

/// A network in -> hidden -> hidden -> out with weights and biases from uniform_matrix.
template <class T>
std::vector<typename sp::MlpGenerator<T>::Layer> test_layers(Index in, Index hidden, Index out) {
  return {{uniform_matrix<T>(in, hidden, 1), uniform_matrix<T>(hidden, 1, 2)},
          {uniform_matrix<T>(hidden, hidden, 3), uniform_matrix<T>(hidden, 1, 4)},
          {uniform_matrix<T>(hidden, out, 5), uniform_matrix<T>(out, 1, 6)}};
}

}  // namespace sampler_ref
