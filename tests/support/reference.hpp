// Naive, materialised double-precision references for the kernattn tests, random test data, and
// the comparison helpers built on them.
//
// The reference (namespace ref) never calls kernattn: every kernel, magnitude and mask is written
// out again from its formula (docs/math.md, section 1), the full Nq x Nk matrix of (log-)weights is
// formed in double, masked, normalised (a stable softmax, or directly for the direct kernels) and
// multiplied by V. Only the helpers in namespace check at the end of the file run the library.
//
// Tolerances. Next to each output entry the reference returns a first-order bound on how far a
// correct implementation may be from it (Higham, "Accuracy and Stability of Numerical
// Algorithms", ch. 3: one operation at unit roundoff u errs by at most u times its result, a
// length-n inner product by n u times the sum of the absolute products). Each kernel and
// magnitude model states the error of the library's way of evaluating it; ref::attention
// propagates those through the normalisation and the weighted sum of V. The bound is computed
// for the library's u (float or double) plus the reference's own rounding at u_double, so a
// test compares with a tolerance derived from its own data, never a guessed constant, and
// check::require_matches also requires that bound to be small, so a test cannot pass vacuously.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "catch.hpp"
#include "kernattn/kernattn.hpp"

namespace ref {

using Index = Eigen::Index;
using Eigen::MatrixXd;
using Eigen::VectorXd;
using Row = Eigen::RowVectorXd;
using Visibility = Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic>;
using Flags = Eigen::Array<bool, Eigen::Dynamic, 1>;

template <class T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

/// Higham's unit roundoff u = epsilon / 2: |fl(x op y) - (x op y)| <= u |x op y|.
template <class T>
inline constexpr double unit_roundoff = std::numeric_limits<T>::epsilon() / 2;
inline constexpr double u_double = unit_roundoff<double>;

// ---------------------------------------------------------------------------------------------
// Random data (fixed seeds)

/// A rows x cols matrix of independent N(mean, sd^2) entries.
inline MatrixXd normal(Index rows, Index cols, std::uint32_t seed, double mean = 0.0,
                       double sd = 1.0) {
  std::mt19937 engine(seed);
  std::normal_distribution<double> draw(mean, sd);
  MatrixXd m(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j) m(i, j) = draw(engine);
  return m;
}

/// Rows of Euclidean norm `norm` in independent uniformly random directions.
inline MatrixXd on_sphere(Index rows, Index cols, double norm, std::uint32_t seed) {
  MatrixXd m = normal(rows, cols, seed);
  m.rowwise().normalize();
  return norm * m;
}

/// A rows x cols boolean matrix whose entries are true with probability `p`.
inline Visibility random_visibility(Index rows, Index cols, double p, std::uint32_t seed) {
  std::mt19937 engine(seed);
  std::bernoulli_distribution draw(p);
  Visibility v(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j) v(i, j) = draw(engine);
  return v;
}

/// One attention problem, kept in double but holding values exactly representable in the
/// precision under test, so the library (given m.cast<T>()) and the reference see the same data.
struct Problem {
  MatrixXd Q, K, V;

  template <class T>
  [[nodiscard]] Matrix<T> q() const {
    return Q.cast<T>();
  }
  template <class T>
  [[nodiscard]] Matrix<T> k() const {
    return K.cast<T>();
  }
  template <class T>
  [[nodiscard]] Matrix<T> v() const {
    return V.cast<T>();
  }
};

/// Rounds every entry to T (and back), so that T holds the problem exactly.
template <class T>
[[nodiscard]] Problem rounded(Problem p) {
  p.Q = p.Q.cast<T>().template cast<double>();
  p.K = p.K.cast<T>().template cast<double>();
  p.V = p.V.cast<T>().template cast<double>();
  return p;
}

/// Q (nq x d), K (nk x d) with N(mean, 1) entries and V (nk x dv) with N(0, 1) entries, in T.
template <class T>
[[nodiscard]] Problem random_problem(Index nq, Index nk, Index d, Index dv, std::uint32_t seed,
                                     double mean = 0.0) {
  return rounded<T>(
      {normal(nq, d, seed, mean), normal(nk, d, seed + 1, mean), normal(nk, dv, seed + 2)});
}

// ---------------------------------------------------------------------------------------------
// Kernels, written out from their formulas

/// A kernel written out from its formula, with a first-order bound on the library's error.
struct KernelModel {
  /// Direct kernels (Polynomial, Linear) are normalised directly and `value` is kappa itself;
  /// for all others `value` is log kappa.
  bool direct = false;
  std::function<double(const Row& q, const Row& k)> value;
  /// A bound on |library's evaluation of `value` - exact `value`| at unit roundoff u. It covers
  /// both the engine's evaluation and the kernel's operator() (for log kappa: of its log).
  std::function<double(const Row& q, const Row& k, double u)> error;
};

namespace detail {

/// sum_l |q_l k_l|: what the rounding error of the inner product q.k scales with.
inline double abs_dot(const Row& q, const Row& k) { return (q.array() * k.array()).abs().sum(); }

/// The library forms r^2 = |q|^2 + |k|^2 - 2 q.k (inner products of length d plus two additions,
/// |error| <= (d + 3) u (|q|^2 + |k|^2 + 2 sum|q_l k_l|) <= (d + 3) u (|q| + |k|)^2), keeps it
/// where r^2 >= (|q|^2 + |k|^2) / 4 and recomputes sum_l (q_l - k_l)^2 below that, so every
/// squared distance is also within 8 (d + 2) u r^2 (docs/numerics.md): relatively accurate even
/// where q = k.
inline double squared_distance_error(const Row& q, const Row& k, double u) {
  const double size = q.norm() + k.norm();
  const double d = double(q.size());
  return std::min((d + 3) * u * size * size, 8 * (d + 2) * u * (q - k).squaredNorm());
}

/// The error of r = sqrt(r^2) given an error `dr2` in r^2: dr2 / (2r), and never more than
/// sqrt(dr2) (which bounds it even at r = 0).
inline double distance_error(double r, double dr2) {
  const double near_zero = std::sqrt(dr2);
  return r > 0 ? std::min(dr2 / (2 * r), near_zero) : near_zero;
}

}  // namespace detail

/// Exponential, kappa = exp(s q.k): log kappa = s q.k. The library scales q by s (rounded, like
/// s itself) and takes a length-d inner product: |error| <= (d + 4) u s sum|q_l k_l|.
inline KernelModel exponential(double s) {
  return {false, [s](const Row& q, const Row& k) { return s * q.dot(k); },
          [s](const Row& q, const Row& k, double u) {
            return double(q.size() + 4) * u * s * detail::abs_dot(q, k);
          }};
}

/// Rbf, kappa = exp(-|q-k|^2 / (2 sigma2)). The engine evaluates q.k / sigma2 - |k|^2/(2 sigma2)
/// (the query term cancels), operator() the difference directly; both terms are bounded by
/// (|q| + |k|)^2 / sigma2, so |error| <= (d + 4) u (|q| + |k|)^2 / sigma2.
inline KernelModel rbf(double sigma2) {
  return {false,
          [sigma2](const Row& q, const Row& k) { return -(q - k).squaredNorm() / (2 * sigma2); },
          [sigma2](const Row& q, const Row& k, double u) {
            const double size = q.norm() + k.norm();
            return double(q.size() + 4) * u * size * size / sigma2;
          }};
}

/// Matern with nu = twice_nu / 2, x = sqrt(2 nu) r / l: log kappa is -x (nu = 1/2),
/// log(1 + x) - x (3/2) or log(1 + x + x^2/3) - x (5/2). The slope |d log kappa / dx| is 1 for
/// nu = 1/2 and x/(1+x) <= min(1, x) for 3/2, x(1+x)/(3+3x+x^2) <= min(1, x) for 5/2, so the
/// error is the slope (at most min(1, x + dx)) times that of x (from the squared distance, plus
/// rounding of the rate sqrt(2 nu)/l and of l = d^(1/4)), plus the rounding of log and subtraction.
inline KernelModel matern(int twice_nu, double l) {
  const double c = std::sqrt(double(twice_nu));
  const auto value = [twice_nu, c, l](const Row& q, const Row& k) {
    const double x = c * (q - k).norm() / l;
    if (twice_nu == 1) return -x;
    if (twice_nu == 3) return std::log(1 + x) - x;
    return std::log(1 + x + x * x / 3) - x;
  };
  const auto error = [twice_nu, c, l](const Row& q, const Row& k, double u) {
    const double r = (q - k).norm();
    const double x = c * r / l;
    const double dx =
        c * detail::distance_error(r, detail::squared_distance_error(q, k, u)) / l + 4 * u * x;
    const double slope = twice_nu == 1 ? 1.0 : std::min(1.0, x + dx);
    return slope * dx + 6 * u * (x + 1);
  };
  return {false, value, error};
}

/// Rational quadratic, log kappa = -alpha log1p(r^2 / (2 alpha l^2)), whose derivative in r^2 is
/// at most 1/(2 l^2) in size: |error| <= dr2 / (2 l^2) + rounding of the log1p and the products.
inline KernelModel rational_quadratic(double alpha, double l) {
  const auto value = [alpha, l](const Row& q, const Row& k) {
    return -alpha * std::log1p((q - k).squaredNorm() / (2 * alpha * l * l));
  };
  const auto error = [value, l](const Row& q, const Row& k, double u) {
    return detail::squared_distance_error(q, k, u) / (2 * l * l) +
           6 * u * (std::abs(value(q, k)) + 1);
  };
  return {false, value, error};
}

/// Polynomial, kappa = (a q.k + c)^n (direct). The base b errs by db <= (d + 4) u (a sum|q_l k_l|
/// + c); the power adds n |b|^(n-1) db and its own rounding (at most n roundings).
inline KernelModel polynomial(int n, double c, double a) {
  const auto value = [n, c, a](const Row& q, const Row& k) {
    return std::pow(a * q.dot(k) + c, n);
  };
  const auto error = [n, c, a](const Row& q, const Row& k, double u) {
    const double base = std::abs(a * q.dot(k) + c);
    const double db = double(q.size() + 4) * u * (a * detail::abs_dot(q, k) + c);
    return n * std::pow(base + db, n - 1) * db + 2 * n * u * std::pow(base, n);
  };
  return {true, value, error};
}

/// Linear, kappa = q.k (direct): |error| <= (d + 1) u sum|q_l k_l|.
inline KernelModel linear() {
  return {true, [](const Row& q, const Row& k) { return q.dot(k); },
          [](const Row& q, const Row& k, double u) {
            return double(q.size() + 1) * u * detail::abs_dot(q, k);
          }};
}

// ---------------------------------------------------------------------------------------------
// Magnitudes

/// A magnitude written out from its formula: log mu(k) and a bound on the library's error in it.
struct MagnitudeModel {
  std::function<double(const Row& k)> log_mu;
  std::function<double(const Row& k, double u)> error;
};

/// mu = 1.
inline MagnitudeModel unit_magnitude() {
  return {[](const Row&) { return 0.0; }, [](const Row&, double) { return 0.0; }};
}

/// |k|_p = m (sum_i (|k_i|/m)^p)^(1/p) with m = max_i |k_i|: no power overflows, whatever p.
inline double p_norm(const Row& k, double p) {
  const double m = k.cwiseAbs().maxCoeff();
  if (m == 0 || !std::isfinite(m)) return m;
  double sum = 0;
  for (Index i = 0; i < k.size(); ++i) sum += std::pow(std::abs(k(i)) / m, p);
  return m * std::pow(sum, 1 / p);
}

/// mu = exp(gamma |k|_p^a). The library computes log mu in double (a length-d sum and powers,
/// through logs where p is not 1 or 2, whose absolute error scales with |log|k_i||), then rounds
/// it to the working precision: |error| <= |log mu| ((a (d + 4) (2 + max|log|k_i||) + 3) u_double +
/// u).
inline MagnitudeModel lp(double p, double gamma, double a) {
  const auto log_mu = [p, gamma, a](const Row& k) { return gamma * std::pow(p_norm(k, p), a); };
  const auto error = [log_mu, a](const Row& k, double u) {
    double largest_log = 0;
    for (Index i = 0; i < k.size(); ++i)
      if (k(i) != 0) largest_log = std::max(largest_log, std::abs(std::log(std::abs(k(i)))));
    const double relative = (a * double(k.size() + 4) * (2 + largest_log) + 3) * u_double + u;
    return std::abs(log_mu(k)) * relative;
  };
  return {log_mu, error};
}

/// The default gamma of Lp, 1 / (2 sqrt(d)).
inline double default_gamma(Index d) { return 0.5 / std::sqrt(double(d)); }

// ---------------------------------------------------------------------------------------------
// Masks, as the full Nq x Nk matrix of "query i sees key j"

inline Visibility all_visible(Index nq, Index nk) { return Visibility::Constant(nq, nk, true); }

/// Bottom-right aligned: query i sees key j iff j <= i + nk - nq.
inline Visibility causal(Index nq, Index nk) {
  Visibility v(nq, nk);
  for (Index i = 0; i < nq; ++i)
    for (Index j = 0; j < nk; ++j) v(i, j) = j <= i + nk - nq;
  return v;
}

/// Query i sees key j iff c - before <= j <= c + after, c = i + nk - nq.
inline Visibility window(Index nq, Index nk, Index before, Index after) {
  Visibility v(nq, nk);
  for (Index i = 0; i < nq; ++i)
    for (Index j = 0; j < nk; ++j) {
      const Index c = i + nk - nq;
      v(i, j) = c - before <= j && j <= c + after;
    }
  return v;
}

/// Every query sees exactly the keys whose flag is set.
inline Visibility valid_keys(Index nq, const Flags& valid) {
  Visibility v(nq, valid.size());
  for (Index i = 0; i < nq; ++i) v.row(i) = valid.transpose();
  return v;
}

/// Every query sees keys 0..length-1.
inline Visibility first_keys(Index nq, Index nk, Index length) {
  return valid_keys(nq, (Eigen::ArrayXi::LinSpaced(nk, 0, int(nk) - 1) < int(length)));
}

// ---------------------------------------------------------------------------------------------
// The reference kernel smoother

/// The exact output and, per entry, the bound on |library - out| (see the top of the file).
struct Reference {
  MatrixXd out;
  MatrixXd bound;
};

namespace detail {

/// The weights of one row (relative to a common factor) and the first-order error bound of each.
struct RowWeights {
  VectorXd weight;
  VectorXd error;
};

/// Weights of the visible keys `keys` for query q. Exponential forms: w = exp(x - max x) with
/// x = log kappa + log mu; the library's x errs by e_x, plus the same again for the
/// subtraction of its running maximum, plus 2u for exp: error(w) = w (e_x + max e_x + 2u).
/// Direct forms: w = kappa mu / max mu; error(w) = e_kappa mu/max mu + |w| (e_mu + max e_mu + 2u).
inline RowWeights row_weights(const Row& q, const MatrixXd& K, const std::vector<Index>& keys,
                              const KernelModel& kernel, const MagnitudeModel& magnitude,
                              double u) {
  const auto n = Index(keys.size());
  VectorXd value(n), value_error(n), log_mu(n), log_mu_error(n);
  for (Index t = 0; t < n; ++t) {
    const Row k = K.row(keys[std::size_t(t)]);
    value(t) = kernel.value(q, k);
    value_error(t) = kernel.error(q, k, u);
    log_mu(t) = magnitude.log_mu(k);
    log_mu_error(t) = magnitude.error(k, u);
  }
  RowWeights w;
  if (!kernel.direct) {
    const VectorXd x = value + log_mu;
    const VectorXd x_error = value_error + log_mu_error;
    w.weight = (x.array() - x.maxCoeff()).exp();
    w.error = w.weight.array() * (x_error.array() + x_error.maxCoeff() + 2 * u);
  } else {
    const VectorXd mu = (log_mu.array() - log_mu.maxCoeff()).exp();
    w.weight = value.array() * mu.array();
    w.error = value_error.array() * mu.array() +
              w.weight.array().abs() * (log_mu_error.array() + log_mu_error.maxCoeff() + 2 * u);
  }
  return w;
}

/// One output row and its error bound.
struct RowResult {
  Row out;
  Row bound;
};

/// Propagates the weight errors through out = (w^T V) / sum(w): the sums of n terms add
/// 2 n u of the sum of absolute terms (the library's tiles add one rescaling per key tile at
/// most), and the quotient adds u |out|.
inline RowResult smooth_row(const RowWeights& w, const MatrixXd& values, double u) {
  const double n = double(w.weight.size());
  const double sum = w.weight.sum();
  if (sum == 0) return {Row::Zero(values.cols()), Row::Zero(values.cols())};
  RowResult r;
  r.out = (w.weight.transpose() * values) / sum;
  const VectorXd abs_w = w.weight.cwiseAbs();
  const MatrixXd abs_values = values.cwiseAbs();
  const double sum_error = w.error.sum() + 2 * n * u * abs_w.sum();
  const Row numerator_error =
      w.error.transpose() * abs_values + 2 * (n + 1) * u * abs_w.transpose() * abs_values;
  r.bound = (numerator_error.array() + r.out.array().abs() * sum_error) / std::abs(sum) +
            u * r.out.array().abs();
  return r;
}

}  // namespace detail

/// The kernel smoother out_i = sum_{j visible} w_ij v_j / sum_{j visible} w_ij, in double, with
/// w_ij = kappa(q_i, k_j) mu(k_j); a row that sees no key (or whose weights sum to exactly 0)
/// is zero. `u` is the unit roundoff of the library's precision.
inline Reference attention(const Problem& p, const KernelModel& kernel,
                           const MagnitudeModel& magnitude, const Visibility& visible, double u) {
  const Index nq = p.Q.rows();
  const Index dv = p.V.cols();
  REQUIRE(visible.rows() == nq);
  REQUIRE(visible.cols() == p.K.rows());
  Reference r{MatrixXd::Zero(nq, dv), MatrixXd::Zero(nq, dv)};
  for (Index i = 0; i < nq; ++i) {
    std::vector<Index> keys;
    for (Index j = 0; j < p.K.rows(); ++j)
      if (visible(i, j)) keys.push_back(j);
    if (keys.empty()) continue;
    MatrixXd values(Index(keys.size()), dv);
    for (std::size_t t = 0; t < keys.size(); ++t) values.row(Index(t)) = p.V.row(keys[t]);
    const Row q = p.Q.row(i);
    const auto library =
        detail::smooth_row(detail::row_weights(q, p.K, keys, kernel, magnitude, u), values, u);
    const auto own = detail::smooth_row(
        detail::row_weights(q, p.K, keys, kernel, magnitude, u_double), values, u_double);
    r.out.row(i) = library.out;
    r.bound.row(i) = library.bound + own.bound;
  }
  return r;
}

/// The same for a batch x heads layout: sequence b, head h uses rows [b nq, (b+1) nq) and
/// columns [h d, (h+1) d) (of V: [h dv, (h+1) dv)); `visible(b)` is sequence b's mask.
inline Reference attention(const Problem& p, Index sequences, Index heads,
                           const KernelModel& kernel, const MagnitudeModel& magnitude,
                           const std::function<Visibility(Index)>& visible, double u) {
  const Index nq = p.Q.rows() / sequences, nk = p.K.rows() / sequences;
  const Index d = p.Q.cols() / heads, dv = p.V.cols() / heads;
  Reference r{MatrixXd(p.Q.rows(), p.V.cols()), MatrixXd(p.Q.rows(), p.V.cols())};
  for (Index b = 0; b < sequences; ++b)
    for (Index h = 0; h < heads; ++h) {
      const Problem block{p.Q.block(b * nq, h * d, nq, d), p.K.block(b * nk, h * d, nk, d),
                          p.V.block(b * nk, h * dv, nk, dv)};
      const Reference one = attention(block, kernel, magnitude, visible(b), u);
      r.out.block(b * nq, h * dv, nq, dv) = one.out;
      r.bound.block(b * nq, h * dv, nq, dv) = one.bound;
    }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Random features

/// kappa^(q, k) = (1/M) sum_m cos(omega_m . (q - k)) in double, for Fourier features of the
/// M x d frequencies `omega`, as a direct kernel model. Error of the exact engine in precision u
/// (see test_features.cpp, and NaiveMap::pair_error in linear_reference.hpp): the phase errors
/// (d + 1) u sum|omega_m x| averaged over m, (2M + 24) u for the features, (n + 2M + 4) u for the
/// inner product and the engine's sums (unit-norm features: sum|phi(q)||phi(k)| <= 1), and
/// (2B + 8) u |kappa^| for the key factors exp(log mu - reference), B = max_j |log mu(k_j)|.
inline KernelModel fourier_model(const MatrixXd& omega, Index keys, double B) {
  const auto value = [omega](const Row& q, const Row& k) {
    double sum = 0;
    for (Index m = 0; m < omega.rows(); ++m) sum += std::cos(omega.row(m).dot(q - k));
    return sum / double(omega.rows());
  };
  const auto error = [omega, value, keys, B](const Row& q, const Row& k, double u) {
    const auto M = double(omega.rows());
    const double d = double(omega.cols());
    double phase = 0;
    for (Index m = 0; m < omega.rows(); ++m)
      phase +=
          (d + 1) * u * (detail::abs_dot(omega.row(m), q) + detail::abs_dot(omega.row(m), k)) / M;
    return phase + (2 * M + 24) * u + (double(keys) + 2 * M + 4) * u +
           std::abs(value(q, k)) * (2 * B + 8) * u;
  };
  return {true, value, error};
}

/// The largest |log mu(k_j)| over the keys.
inline double largest_log_magnitude(const MatrixXd& K, const MagnitudeModel& magnitude) {
  double B = 0;
  for (Index j = 0; j < K.rows(); ++j) B = std::max(B, std::abs(magnitude.log_mu(K.row(j))));
  return B;
}

}  // namespace ref

// ---------------------------------------------------------------------------------------------
// Running the library and comparing

namespace check {

using ref::Index;

/// Runs kernattn::Attention on the problem in precision T.
template <class T, class Kernel, class Magnitude = kernattn::magnitude::None,
          class Mask = kernattn::mask::None>
[[nodiscard]] ref::Matrix<T> run(const ref::Problem& p, Kernel kernel, Magnitude magnitude = {},
                                 Mask mask = {}, kernattn::ExecutionOptions options = {},
                                 kernattn::BatchLayout layout = {}) {
  const kernattn::Attention<Kernel, Magnitude, Mask> attention(
      std::move(kernel), std::move(magnitude), std::move(mask), options);
  return attention(p.q<T>(), p.k<T>(), p.v<T>(), layout);
}

/// The largest a derived bound may be, relative to the output's scale, for a comparison to be
/// meaningful. A wrong weight, mask, parameter or normalisation moves outputs of size ~1 by far
/// more than 1e-3 (float: ~1e4 u), and a double path that secretly rounds through float errs by
/// ~6e-8, far above 1e-9. A larger bound means the test's data make the problem ill-conditioned:
/// fix the data, never this limit.
template <class T>
inline constexpr double informative_bound = std::is_same_v<T, float> ? 1e-3 : 1e-9;

/// Which output entries a comparison covers (rows x columns of the output).
using Entries = Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic>;

/// Requires `out` to match the reference within the reference's derived bound at every entry
/// that `checked` selects (a NaN fails), and the bound itself to be informative.
template <class T, class Derived>
void require_matches_at(const Eigen::MatrixBase<Derived>& out, const ref::Reference& expected,
                        const Entries& checked, double informative = informative_bound<T>) {
  REQUIRE(out.rows() == expected.out.rows());
  REQUIRE(out.cols() == expected.out.cols());
  REQUIRE(checked.rows() == out.rows());
  REQUIRE(checked.cols() == out.cols());
  const ref::MatrixXd got = out.template cast<double>();
  const bool empty = expected.out.size() == 0;
  const double scale = empty ? 1.0 : std::max(1.0, expected.out.cwiseAbs().maxCoeff());
  const double largest_bound = empty ? 0.0 : expected.bound.maxCoeff();
  CAPTURE(scale, largest_bound);
  CHECK(largest_bound <= informative * scale);
  Index failures = 0;
  double worst_excess = 0;  // the largest |difference| - bound (a NaN shows in first_failure)
  std::string first_failure;
  for (Index i = 0; i < got.rows(); ++i)
    for (Index c = 0; c < got.cols(); ++c) {
      const double difference = std::abs(got(i, c) - expected.out(i, c));
      if (!checked(i, c) || difference <= expected.bound(i, c))
        continue;  // false for NaN: a NaN fails
      if (failures++ == 0) {
        std::ostringstream text;
        text << "(" << i << ", " << c << "): got " << got(i, c) << ", expected "
             << expected.out(i, c) << " +- " << expected.bound(i, c);
        first_failure = text.str();
      }
      worst_excess = std::max(worst_excess, difference - expected.bound(i, c));
    }
  CAPTURE(first_failure, worst_excess);
  CHECK(failures == 0);
}

/// The same at every entry.
template <class T, class Derived>
void require_matches(const Eigen::MatrixBase<Derived>& out, const ref::Reference& expected,
                     double informative = informative_bound<T>) {
  require_matches_at<T>(out, expected, Entries::Constant(out.rows(), out.cols(), true),
                        informative);
}

/// Requires two library outputs that should agree to rounding to differ by at most `bound` (per
/// entry: each is within the reference's bound of the reference, so within twice of each other).
template <class DerivedA, class DerivedB>
void require_close(const Eigen::MatrixBase<DerivedA>& a, const Eigen::MatrixBase<DerivedB>& b,
                   const ref::MatrixXd& bound) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  const Eigen::ArrayXXd difference =
      (a.template cast<double>() - b.template cast<double>()).array().abs();
  CAPTURE(difference.size() == 0 ? 0.0 : (difference - bound.array()).maxCoeff());
  CHECK((difference <= bound.array()).all());
}

/// Exact equality of every entry (bit-identical for finite values).
template <class DerivedA, class DerivedB>
[[nodiscard]] bool identical(const Eigen::MatrixBase<DerivedA>& a,
                             const Eigen::MatrixBase<DerivedB>& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() && (a.array() == b.array()).all();
}

/// Whether row i of `m` is exactly zero (which NaN never is).
template <class Derived>
[[nodiscard]] bool zero_row(const Eigen::MatrixBase<Derived>& m, Index i) {
  return (m.row(i).array() == 0).all();
}

/// The Lp magnitudes every kernel is tried with: each runtime p path (2 and 1 are exact sums, 3
/// and 0.5 go through logs), default (nullopt: 1/(2 sqrt(d))) and non-default gamma, including a
/// negative one, and exponent a. The keys are scaled by `key_scale` so that log mu stays below
/// ~100: float holds log mu to u |log mu|, every weight inherits that error, and much larger
/// log-magnitudes would make any comparison in float weak.
struct LpCase {
  double p;
  std::optional<double> gamma;
  double exponent;
  double key_scale = 1.0;
};
inline const std::vector<LpCase> lp_cases = {
    {1, std::nullopt, 2}, {2, std::nullopt, 2}, {3, std::nullopt, 2}, {0.5, std::nullopt, 2, 0.15},
    {3, 0.2, 1.5},        {2, -0.1, 1},         {1, 0.05, 3, 0.5},    {0.5, 0.02, 2.5, 0.2}};

/// Default tiles (one key tile for the 70 keys below) and small ones (several query and key
/// tiles, the last ones partial), so that the running maximum is rescaled across key tiles.
inline const std::vector<kernattn::ExecutionOptions> kernel_tilings = {kernattn::ExecutionOptions{},
                                                                       {0, 16, 24}};

/// Requires Attention<Kernel, Magnitude> to match the reference with every kernel tiling.
template <class T, class Kernel, class Magnitude>
void require_all_tilings_match(const ref::Problem& p, const Kernel& kernel, const Magnitude& mu,
                               const ref::Reference& expected) {
  for (const kernattn::ExecutionOptions& options : kernel_tilings) {
    CAPTURE(options.query_tile, options.key_tile);
    require_matches<T>(run<T>(p, kernel, mu, kernattn::mask::None{}, options), expected);
  }
}

/// Compares Attention<Kernel> with no magnitude and with every runtime Lp case against the
/// reference, on a random nq = 45, nk = 70, dv = 5 problem (entries N(mean, 1)).
template <class T, class Kernel>
void kernel_with_magnitudes(const Kernel& kernel, const ref::KernelModel& model, Index d,
                            std::uint32_t seed, double mean = 0.0) {
  const ref::Problem p = ref::random_problem<T>(45, 70, d, 5, seed, mean);
  const ref::Visibility all = ref::all_visible(45, 70);
  constexpr double u = ref::unit_roundoff<T>;
  {
    INFO("no magnitude");
    require_all_tilings_match<T>(p, kernel, kernattn::magnitude::None{},
                                 ref::attention(p, model, ref::unit_magnitude(), all, u));
  }
  for (const LpCase& c : lp_cases) {
    const std::optional<T> gamma_t = c.gamma ? std::optional<T>(T(*c.gamma)) : std::nullopt;
    const kernattn::magnitude::Lp<T> magnitude(T(c.p), gamma_t, T(c.exponent));
    const double gamma = gamma_t ? double(*gamma_t) : ref::default_gamma(d);
    CAPTURE(c.p, gamma, c.exponent, c.key_scale);
    ref::Problem scaled = p;
    scaled.K *= c.key_scale;
    scaled = ref::rounded<T>(scaled);
    require_all_tilings_match<T>(
        scaled, kernel, magnitude,
        ref::attention(scaled, model, ref::lp(c.p, gamma, c.exponent), all, u));
  }
}

/// The same with the compile-time p magnitudes L1 and L2, default and non-default parameters.
template <class T, class Kernel>
void kernel_with_compile_time_p(const Kernel& kernel, const ref::KernelModel& model, Index d,
                                std::uint32_t seed) {
  const ref::Problem p = ref::random_problem<T>(45, 70, d, 5, seed);
  const ref::Visibility all = ref::all_visible(45, 70);
  constexpr double u = ref::unit_roundoff<T>;
  const double gamma = ref::default_gamma(d);
  using kernattn::magnitude::L1;
  using kernattn::magnitude::L2;
  require_all_tilings_match<T>(p, kernel, L1<T>(),
                               ref::attention(p, model, ref::lp(1, gamma, 2), all, u));
  require_all_tilings_match<T>(p, kernel, L1<T>(T(0.25), T(1)),
                               ref::attention(p, model, ref::lp(1, 0.25, 1), all, u));
  require_all_tilings_match<T>(p, kernel, L2<T>(),
                               ref::attention(p, model, ref::lp(2, gamma, 2), all, u));
  require_all_tilings_match<T>(p, kernel, L2<T>(T(-0.125), T(3)),
                               ref::attention(p, model, ref::lp(2, -0.125, 3), all, u));
}

/// Tile sizes that divide nothing, the smallest possible, and the defaults.
inline const std::vector<kernattn::ExecutionOptions> tilings = {kernattn::ExecutionOptions{},
                                                                {0, 1, 1},
                                                                {0, 1, 3},
                                                                {0, 3, 1},
                                                                {0, 5, 7},
                                                                {0, 16, 3},
                                                                {0, 7, 64},
                                                                {0, 64, 256}};

/// Runs Attention<Kernel, None, Mask> with every tiling against the reference for `visible`,
/// requires every tiling to agree with the defaults to rounding (twice the reference bound),
/// and rows that see no key to be exactly zero.
template <class T, class Kernel, class Mask>
void mask_with_tilings(const ref::Problem& p, const Kernel& kernel, const ref::KernelModel& model,
                       const Mask& mask, const ref::Visibility& visible) {
  const ref::Reference expected =
      ref::attention(p, model, ref::unit_magnitude(), visible, ref::unit_roundoff<T>);
  const ref::Matrix<T> defaults = run<T>(p, kernel, kernattn::magnitude::None{}, mask);
  for (const kernattn::ExecutionOptions& options : tilings) {
    CAPTURE(options.query_tile, options.key_tile);
    const ref::Matrix<T> out = run<T>(p, kernel, kernattn::magnitude::None{}, mask, options);
    require_matches<T>(out, expected);
    require_close(out, defaults, 2 * expected.bound);
    for (Index i = 0; i < out.rows(); ++i)
      if (!visible.row(i).any()) {
        CAPTURE(i);
        CHECK(zero_row(out, i));
      }
  }
}

}  // namespace check

// Short names for the library's namespaces, shared by every test file.
using kernattn::Index;
namespace kernels = kernattn::kernels;
namespace magnitude = kernattn::magnitude;
namespace mask = kernattn::mask;
