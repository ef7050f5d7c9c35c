// Feature maps (docs/random_features.md, docs/conventions.md): random Fourier features, the
// two-frequency (Yaglom) features of the official implicit kernel attention code, and positive
// random features (FAVOR+), each against a naive double-precision re-derivation from its
// frequencies; the positive features' convergence to the softmax kernel and the variance advantage
// of orthogonal frequencies.
//
// Rounding model (Higham, ch. 3; u = eps / 2 of the precision under test): a phase
// p = omega . x formed in T as a length-d inner product errs by at most (d + 1) u sum_i |omega_i
// x_i| (each extra rounded scale factor adds u to the coefficient); Eigen's cos/sin/exp are taken
// to be within 2 ulp, i.e. 4u relative (absolute for cos and sin, whose size is <= 1), for the
// phases used here (|p| < 60); a length-n inner product errs by n u times the sum of the absolute
// products.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <vector>

#include "catch.hpp"
#include "reference.hpp"

namespace test_features {

namespace features = kernattn::features;
namespace spectral = kernattn::spectral;
using kernattn::random::RandomStream;

namespace {

using ref::MatrixXd;
using ref::Row;
using ref::VectorXd;

template <class T>
constexpr double u_of = ref::unit_roundoff<T>;

/// sum_i |a_i b_i|.
double abs_dot(const Row& a, const Row& b) { return (a.array() * b.array()).abs().sum(); }

/// (1/M) sum_m cos(omega_m . (q - k)) in double: the Fourier estimate written out.
double naive_fourier_dot(const MatrixXd& omega, const Row& q, const Row& k) {
  double sum = 0;
  for (Index m = 0; m < omega.rows(); ++m) sum += std::cos(omega.row(m).dot(q - k));
  return sum / double(omega.rows());
}

/// The official unnormalised sum over m of (cos a1 + cos a2)(cos b1 + cos b2) + (sin a1 + sin
/// a2)(sin b1 + sin b2), a = 2 pi W^T q, b = 2 pi W^T k, for W1, W2 in the official d x M layout.
double naive_official_sum(const MatrixXd& w1, const MatrixXd& w2, const Row& q, const Row& k) {
  const double c = 2 * std::numbers::pi;
  double sum = 0;
  for (Index m = 0; m < w1.cols(); ++m) {
    const double a1 = c * q.dot(w1.col(m).transpose()), a2 = c * q.dot(w2.col(m).transpose());
    const double b1 = c * k.dot(w1.col(m).transpose()), b2 = c * k.dot(w2.col(m).transpose());
    sum += (std::cos(a1) + std::cos(a2)) * (std::cos(b1) + std::cos(b2)) +
           (std::sin(a1) + std::sin(a2)) * (std::sin(b1) + std::sin(b2));
  }
  return sum;
}

/// The positive estimates phi+(q_i) . phi+(k_j) for every pair, from the library's scaled
/// features and log-scales.
MatrixXd positive_estimates(const features::Positive<double>& map, const MatrixXd& Q,
                            const MatrixXd& K) {
  MatrixXd fq, fk;
  VectorXd sq = VectorXd::Zero(Q.rows()), sk = VectorXd::Zero(K.rows());
  map.features(Q, fq, sq);
  map.features(K, fk, sk);
  MatrixXd estimates(Q.rows(), K.rows());
  for (Index i = 0; i < Q.rows(); ++i)
    for (Index j = 0; j < K.rows(); ++j)
      estimates(i, j) = fq.row(i).dot(fk.row(j)) * std::exp(sq(i) + sk(j));
  return estimates;
}

/// f(s) for s = 0..count-1, in order. The calls run inside the library's parallel loop on one
/// thread: in an OpenMP build Eigen parallelises a large GEMM called outside a parallel region
/// (the features' x Omega^T here), which on a busy machine costs far more than it saves.
template <class F>
std::vector<double> per_seed(int count, F&& f) {
  std::vector<double> results(std::size_t(count), 0.0);
  kernattn::parallel_for(count, 1, [&](Index s) { results[std::size_t(s)] = f(std::uint64_t(s)); });
  return results;
}

}  // namespace

TEMPLATE_TEST_CASE("Fourier features have unit norm", "[features]", float, double) {
  using T = TestType;
  constexpr Index M = 37, d = 5, N = 20;
  const auto map =
      features::Fourier<T>::draw(spectral::Gaussian<T>(T(1.5)), M, d, RandomStream{11, 0});
  CHECK(map.input_dimension() == d);
  CHECK(map.feature_dimension() == 2 * M);
  const ref::Matrix<T> X = ref::normal(N, d, 1101).cast<T>();
  const ref::Matrix<T> phi = map(X);
  REQUIRE(phi.rows() == N);
  REQUIRE(phi.cols() == 2 * M);
  // |phi|^2 = (1/M) sum_m (cos^2 + sin^2) of one rounded phase, exactly 1 but for rounding: each
  // entry M^{-1/2} cos(p) errs by at most (4u + 2u) M^{-1/2} (cos/sin, the factor and the
  // product), so each of the 2M squares by 2 * 6u / M; summing 2M squares adds 2M u.
  const double tolerance = (2.0 * M + 24) * u_of<T>;
  for (Index i = 0; i < N; ++i) {
    CAPTURE(i);
    CHECK(std::abs(phi.row(i).template cast<double>().squaredNorm() - 1.0) <= tolerance);
  }
}

TEMPLATE_TEST_CASE("Fourier inner products are the mean of cos(omega . (q - k))", "[features]",
                   float, double) {
  using T = TestType;
  constexpr Index M = 48, d = 6, N = 12;
  const auto map =
      features::Fourier<T>::draw(spectral::Gaussian<T>(T(1)), M, d, RandomStream{12, 3});
  const MatrixXd omega = map.frequencies().template cast<double>();
  REQUIRE(omega.rows() == M);
  REQUIRE(omega.cols() == d);
  const MatrixXd Q = ref::normal(N, d, 1201).cast<T>().template cast<double>();
  const MatrixXd K = ref::normal(N, d, 1202).cast<T>().template cast<double>();
  const MatrixXd fq = map(Q.cast<T>()).template cast<double>();
  const MatrixXd fk = map(K.cast<T>()).template cast<double>();
  constexpr double u = u_of<T>;
  for (Index i = 0; i < N; ++i)
    for (Index j = 0; j < N; ++j) {
      const Row q = Q.row(i), k = K.row(j);
      // The library evaluates cos(p_q - p_k) / M through its rounded phases p + dp, |dp| <=
      // (d + 1) u sum|omega x|, so each term moves by at most |dp_q| + |dp_k|; the feature
      // entries err by 6u M^{-1/2} each (4 per term, 24u in all), the 2M-term inner product of
      // unit vectors adds 2M u.
      double phase = 0;
      for (Index m = 0; m < M; ++m)
        phase += double(d + 1) * u * (abs_dot(omega.row(m), q) + abs_dot(omega.row(m), k));
      const double tolerance = phase / M + (2.0 * M + 24) * u;
      CAPTURE(i, j, tolerance);
      CHECK(std::abs(fq.row(i).dot(fk.row(j)) - naive_fourier_dot(omega, q, k)) <= tolerance);
    }
}

TEMPLATE_TEST_CASE("Yaglom with equal frequency sets is Fourier of the scaled frequencies",
                   "[features]", float, double) {
  using T = TestType;
  constexpr Index M = 20, d = 4, N = 15;
  const T c = T(2.5);
  const ref::Matrix<T> omega =
      spectral::draw_frequencies(spectral::Gaussian<T>(T(2)), M, d, RandomStream{13, 0});
  const features::Yaglom<T> yaglom(omega, omega, c);
  const features::Fourier<T> fourier(ref::Matrix<T>(c * omega));  // the same rounded c omega
  CHECK(yaglom.input_dimension() == d);
  CHECK(yaglom.feature_dimension() == 2 * M);
  const ref::Matrix<T> X = ref::normal(N, d, 1301).cast<T>();
  const MatrixXd y = yaglom(X).template cast<double>();
  const MatrixXd f = fourier(X).template cast<double>();
  REQUIRE(y.rows() == N);
  REQUIRE(y.cols() == 2 * M);
  // Both maps multiply X by the same rounded c omega; (cos p + cos p) / (2 sqrt M) equals
  // cos(p) / sqrt(M) exactly (doubling and halving are exact), so the entries differ only by
  // the two GEMMs' phase roundings, 2 (d + 1) u sum|c omega x|, times M^{-1/2}.
  const MatrixXd scaled = (c * omega).template cast<double>();
  const MatrixXd Xd = X.template cast<double>();
  for (Index i = 0; i < N; ++i)
    for (Index m = 0; m < M; ++m) {
      const double tolerance =
          2.0 * double(d + 1) * u_of<T> * abs_dot(scaled.row(m), Xd.row(i)) / std::sqrt(double(M));
      CAPTURE(i, m, tolerance);
      CHECK(std::abs(y(i, m) - f(i, m)) <= tolerance);
      CHECK(std::abs(y(i, M + m) - f(i, M + m)) <= tolerance);
    }
}

TEMPLATE_TEST_CASE("Yaglom::from_official gives the official sum divided by 4M", "[features]",
                   float, double) {
  using T = TestType;
  constexpr Index M = 16, d = 6, N = 10;
  // Official layout: W1, W2 are d x M, one frequency per column (the generator's outputs).
  const ref::Matrix<T> w1 = ref::normal(d, M, 1401, 0.0, 0.3).cast<T>();
  const ref::Matrix<T> w2 = ref::normal(d, M, 1402, 0.0, 0.3).cast<T>();
  const auto map = features::Yaglom<T>::from_official(w1, w2);
  CHECK(map.input_dimension() == d);
  CHECK(map.feature_dimension() == 2 * M);
  const MatrixXd W1 = w1.template cast<double>(), W2 = w2.template cast<double>();
  const MatrixXd Q = ref::normal(N, d, 1403).cast<T>().template cast<double>();
  const MatrixXd K = ref::normal(N, d, 1404).cast<T>().template cast<double>();
  const MatrixXd fq = map(Q.cast<T>()).template cast<double>();
  const MatrixXd fk = map(K.cast<T>()).template cast<double>();
  constexpr double u = u_of<T>;
  const double c = 2 * std::numbers::pi;
  for (Index i = 0; i < N; ++i)
    for (Index j = 0; j < N; ++j) {
      const Row q = Q.row(i), k = K.row(j);
      // phi(q).phi(k) = (1/4M) sum_m sum_{a,b} cos(p_a(q) - p_b(k)). The library's phases
      // fl(fl(2 pi) W) x err by (d + 3) u sum|2 pi W x| (two more rounded factors); each of the
      // four cosines moves by the errors of its two phases, so the total by
      // (1/2M) sum_m (dp1(q) + dp2(q) + dp1(k) + dp2(k)). Feature entries err by 8u M^{-1/2} and
      // have size <= M^{-1/2} (32u in all); the 2M-term inner product adds 2M u.
      double phase = 0;
      for (Index m = 0; m < M; ++m)
        phase += double(d + 3) * u * c *
                 (abs_dot(W1.col(m).transpose(), q) + abs_dot(W2.col(m).transpose(), q) +
                  abs_dot(W1.col(m).transpose(), k) + abs_dot(W2.col(m).transpose(), k));
      const double tolerance = phase / (2.0 * M) + (2.0 * M + 32) * u;
      const double expected = naive_official_sum(W1, W2, q, k) / (4.0 * M);
      CAPTURE(i, j, expected, tolerance);
      CHECK(std::abs(fq.row(i).dot(fk.row(j)) - expected) <= tolerance);
    }
  // W1 != W2 matters: the plain Fourier estimate of either set alone is a different kernel.
  const MatrixXd f1 = features::Fourier<T>(ref::Matrix<T>(T(c) * w1.transpose()))(Q.cast<T>())
                          .template cast<double>();
  CHECK((fq - f1).cwiseAbs().maxCoeff() > 0.1);
}

TEMPLATE_TEST_CASE("Positive features are non-negative and exact in the log domain", "[features]",
                   float, double) {
  using T = TestType;
  constexpr Index M = 40, d = 16, N = 12;
  // Orthogonal standard normal frequencies, as Positive::draw makes them.
  const ref::Matrix<T> frequencies = spectral::draw_frequencies(
      spectral::Orthogonal<spectral::Gaussian<T>>(spectral::Gaussian<T>(T(1))), M, d,
      RandomStream{15, 1});
  const features::Positive<T> map(frequencies);
  const MatrixXd omega = frequencies.template cast<double>();
  CHECK(map.input_dimension() == d);
  CHECK(map.feature_dimension() == M);
  // The default input scale is d^{-1/4}, computed in T: within 3 roundings (two square roots
  // and a division) of the exact value.
  const double lambda = 1 / std::sqrt(std::sqrt(double(d)));
  const double lambda_error = std::abs(double(map.input_scale()) - lambda) / lambda;
  CHECK(lambda_error <= 3 * u_of<T>);

  // Ordinary rows, plus a row along omega_0 so large that exp(max_m omega_m . x~) overflows T:
  // the plain formula exp(Omega x~) exp(-|x~|^2/2) gives inf * 0 there; its exact value
  // (tiny) is only representable in the log domain.
  MatrixXd X(N + 1, d);
  X.topRows(N) = ref::normal(N, d, 1501, 0.0, 0.5);
  const double log_max = std::log(double(std::numeric_limits<T>::max()));
  const double t = 1.25 * log_max / omega.row(0).norm();  // |x~| = t
  X.row(N) = (t / lambda) * omega.row(0) / omega.row(0).norm();
  X = X.cast<T>().template cast<double>();
  const double large_phase = lambda * omega.row(0).dot(X.row(N));
  CHECK(std::isinf(std::exp(T(large_phase))));  // the plain formula overflows T

  ref::Matrix<T> out;
  VectorXd log_scales = VectorXd::Constant(N + 1, 0.5);  // features() adds to what is there
  map.features(X.cast<T>(), out, log_scales);
  log_scales.array() -= 0.5;
  REQUIRE(out.rows() == N + 1);
  REQUIRE(out.cols() == M);
  CHECK((out.array() >= T(0)).all());
  CHECK(out.allFinite());
  CHECK(log_scales.allFinite());

  constexpr double u = u_of<T>;
  const double log_min = std::log(double(std::numeric_limits<T>::min()));
  const double log_factor = -0.5 * std::log(double(M));
  for (Index j = 0; j <= N; ++j) {
    const Row x_tilde = lambda * X.row(j);
    const VectorXd phase = omega * x_tilde.transpose();
    const double half_norm = 0.5 * x_tilde.squaredNorm();
    for (Index m = 0; m < M; ++m) {
      const double naive_log = log_factor + phase(m) - half_norm;
      // Library: log(fl(M^{-1/2} exp(fl(P_m - c)))) + (c - |lambda_T x|^2 / 2) with its own
      // c = max_m P_m, which cancels. P_m errs by (d + 1) u sum|omega x~| (x~ rounded, a
      // d-term GEMM) plus lambda_error |P_m|; the subtraction by u |P_m - c|; exp, the factor
      // and the product by 6u; the norm term |x~|^2 / 2 by 2 lambda_error of it, plus (d + 1) u
      // of it if |x|^2 is summed in T, plus 8 u_double of it for the double arithmetic.
      const double sum_abs = abs_dot(omega.row(m), x_tilde);
      const double relative_to_max = phase(m) - phase.maxCoeff();
      const double tolerance =
          (double(d + 1) * u + lambda_error) * sum_abs + u * (std::abs(relative_to_max) + sum_abs) +
          6 * u + (2 * lambda_error + double(d + 1) * u + 8 * ref::u_double) * half_norm;
      CAPTURE(j, m, naive_log, tolerance);
      if (relative_to_max - tolerance > log_min + 1) {
        REQUIRE(out(j, m) > T(0));
        CHECK(std::abs(std::log(double(out(j, m))) + log_scales(j) - naive_log) <= tolerance);
      } else {
        // Below the normal range of T in the scaled features. Eigen's vectorised exp clamps its
        // argument near log(min normal), so such an entry comes out as about the smallest
        // normal T rather than as 0 or a subnormal: an absolute error below 2 min<T>, against a
        // largest entry M^{-1/2} in the row.
        CHECK(double(out(j, m)) <= std::max(std::exp(relative_to_max + tolerance),
                                            2 * double(std::numeric_limits<T>::min())));
      }
    }
  }
  // The large row's features themselves are below the smallest T: only the log domain holds them.
  CHECK(log_scales(N) + log_factor < log_min);
}

TEMPLATE_TEST_CASE("Positive with epsilon is Performer's feature times e^c, in the log domain",
                   "[features]", float, double) {
  // Performer's reference code: M^{-1/2} (exp(P - n - c) + eps) with P = Omega x~, n = |x~|^2 / 2
  // and the row's c = max_m P_m; the map is that times e^c (so eps = 0 is the paper). Written out
  // in double as log phi_m = c - log(M)/2 + log(exp(P_m - n - c) + eps).
  using T = TestType;
  constexpr Index M = 40, d = 16, N = 12;
  const double epsilon = features::Positive<T>::performer_epsilon;
  const ref::Matrix<T> frequencies = spectral::draw_frequencies(
      spectral::Orthogonal<spectral::Gaussian<T>>(spectral::Gaussian<T>(T(1))), M, d,
      RandomStream{16, 1});
  const features::Positive<T> plain(frequencies);
  const features::Positive<T> map(frequencies, std::nullopt, epsilon);
  CHECK(map.epsilon() == epsilon);
  const MatrixXd omega = frequencies.template cast<double>();
  const double lambda = double(map.input_scale());

  // Ordinary rows (eps e^n < 1, t = 0), rows where eps e^n > 1 (t = n + log eps > 0) and one with
  // n = 300, whose e^n and e^-n overflow and underflow every T.
  MatrixXd X(N + 2, d);
  X.topRows(N) = ref::normal(N, d, 1511, 0.0, 0.5);
  X.row(N) = ref::normal(1, d, 1512, 0.0, 2.5);
  X.row(N + 1) = ref::normal(1, d, 1513);
  X.row(N + 1) *= std::sqrt(600.0) / (lambda * X.row(N + 1).norm());
  X = X.cast<T>().template cast<double>();

  ref::Matrix<T> out, out_plain;
  VectorXd log_scales = VectorXd::Zero(N + 2), log_scales_plain = VectorXd::Zero(N + 2);
  map.features(X.cast<T>(), out, log_scales);
  plain.features(X.cast<T>(), out_plain, log_scales_plain);
  CHECK(out.allFinite());
  CHECK(log_scales.allFinite());
  CHECK((out.array() > T(0)).all());

  constexpr double u = u_of<T>;
  for (Index j = 0; j < X.rows(); ++j) {
    const Row x_tilde = lambda * X.row(j);
    const VectorXd phase = omega * x_tilde.transpose();
    const double c = phase.maxCoeff();
    const double half_norm = 0.5 * x_tilde.squaredNorm();
    for (Index m = 0; m < M; ++m) {
      const double naive_log =
          c - 0.5 * std::log(double(M)) + std::log(std::exp(phase(m) - half_norm - c) + epsilon);
      // As in the test above (the phases, the subtraction of c, the norm term, with lambda exact
      // here), plus 4u for the shrink factor, the floor and their sum: log(a + eps) moves by at
      // most the relative error of a.
      const double sum_abs = abs_dot(omega.row(m), x_tilde);
      const double tolerance = double(d + 1) * u * sum_abs +
                               u * (std::abs(phase(m) - c) + sum_abs) + 10 * u +
                               (double(d + 1) * u + 8 * ref::u_double) * half_norm;
      CAPTURE(j, m, naive_log, tolerance, half_norm);
      CHECK(std::abs(std::log(double(out(j, m))) + log_scales(j) - naive_log) <= tolerance);
    }
  }
  // epsilon = 0 is the paper's map, bit for bit.
  const features::Positive<T> zero(frequencies, std::nullopt, 0.0);
  ref::Matrix<T> out_zero;
  VectorXd log_scales_zero = VectorXd::Zero(N + 2);
  zero.features(X.cast<T>(), out_zero, log_scales_zero);
  CHECK((out_zero.array() == out_plain.array()).all());
  CHECK((log_scales_zero.array() == log_scales_plain.array()).all());

  REQUIRE_THROWS_WITH(features::Positive<T>(frequencies, std::nullopt, -1e-4),
                      message_contains("Positive: epsilon must be a finite number >= 0"));
  REQUIRE_THROWS_WITH(features::Positive<T>::draw(8, 4, {1, 0}, true, std::nullopt, INFINITY),
                      message_contains("epsilon"));
}

TEST_CASE("Linear attention with Performer's epsilon matches the naive computation", "[features]") {
  // out_i = sum_j w_ij v_j / sum_j w_ij, w_ij = phi(q_i).phi(k_j), with the naive phi_eps of the
  // test above in double; entries N(0, 1) at d = 16, where eps moves the result by far more than
  // the tolerance. Each weight is exact to (d + M) u relative (phases, exponentials, a length-M
  // dot product), every weight is positive, so the output errs by at most twice that times
  // max |v|; 8 times more covers the engine's and the reference's own sums.
  constexpr Index M = 64, d = 16;
  const ref::Problem p = ref::random_problem<double>(20, 50, d, 3, 1521);
  const MatrixXd omega = spectral::draw_frequencies(
      spectral::Orthogonal<spectral::Gaussian<double>>(spectral::Gaussian<double>(1.0)), M, d,
      RandomStream{17, 0});
  const double epsilon = features::Positive<double>::performer_epsilon;
  const MatrixXd out = kernattn::LinearAttention<features::Positive<double>>(
      features::Positive<double>(omega, std::nullopt, epsilon))(p.Q, p.K, p.V);
  const MatrixXd paper = kernattn::LinearAttention<features::Positive<double>>(
      features::Positive<double>(omega))(p.Q, p.K, p.V);

  const double lambda = 1 / std::sqrt(std::sqrt(double(d)));
  const auto phi = [&](const Row& x) {
    const VectorXd phase = omega * (lambda * x).transpose();
    const double c = phase.maxCoeff();
    const double half_norm = 0.5 * lambda * lambda * x.squaredNorm();
    return VectorXd(((phase.array() - half_norm).exp() + epsilon * std::exp(c)) /
                    std::sqrt(double(M)));
  };
  MatrixXd expected(p.Q.rows(), p.V.cols());
  for (Index i = 0; i < p.Q.rows(); ++i) {
    const VectorXd fq = phi(p.Q.row(i));
    VectorXd numerator = VectorXd::Zero(p.V.cols());
    double denominator = 0;
    for (Index j = 0; j < p.K.rows(); ++j) {
      const double w = fq.dot(phi(p.K.row(j)));
      numerator += w * p.V.row(j).transpose();
      denominator += w;
    }
    expected.row(i) = numerator.transpose() / denominator;
  }
  const double tolerance = 16 * double(d + M) * ref::u_double * p.V.cwiseAbs().maxCoeff();
  CAPTURE(tolerance, (out - expected).cwiseAbs().maxCoeff(),
          (paper - expected).cwiseAbs().maxCoeff());
  CHECK((out - expected).cwiseAbs().maxCoeff() <= tolerance);
  CHECK((paper - expected).cwiseAbs().maxCoeff() > 1e6 * tolerance);
}

TEST_CASE("Positive features estimate exp(q.k / sqrt d) with error ~ M^{-1/2}", "[features]") {
  // Relative error of one positive estimate: variance (exp(|q~ + k~|^2) - 1) / M. With entries
  // N(0, 0.35^2) at d = 16, |q~ + k~|^2 ~ 1, so the estimate is near-Gaussian from M = 64 and
  // E|error| ~ sqrt(2/pi) sigma / sqrt(M): the ratio of mean absolute errors from M = 64 to
  // M = 4096 is sqrt(64) = 8 in expectation. 16 seeds x 32 x 32 pairs; over other data seeds it
  // ranged 7.1-8.9 (the M = 64 error's slightly light tail pulls it a little below 8), so the
  // band [6, 10.5] is about 3 standard deviations of that spread either side.
  constexpr Index d = 16, N = 32;
  constexpr int seeds = 16;
  const MatrixXd Q = ref::normal(N, d, 1601, 0.0, 0.35);
  const MatrixXd K = ref::normal(N, d, 1602, 0.0, 0.35);
  const MatrixXd exact = (Q * K.transpose() / std::sqrt(double(d))).array().exp();
  std::vector<double> errors;
  for (const Index M : {64, 256, 1024, 4096}) {
    const std::vector<double> by_seed = per_seed(seeds, [&](std::uint64_t s) {
      const auto map = features::Positive<double>::draw(M, d, RandomStream{1603, s});
      return ((positive_estimates(map, Q, K).array() / exact.array()) - 1).abs().mean();
    });
    double sum = 0;
    for (const double e : by_seed) sum += e;
    errors.push_back(sum / seeds);
  }
  CAPTURE(errors[0], errors[1], errors[2], errors[3]);
  CHECK(errors[0] > errors[1]);
  CHECK(errors[1] > errors[2]);
  CHECK(errors[2] > errors[3]);
  const double ratio = errors[0] / errors[3];
  CAPTURE(ratio);
  CHECK(ratio >= 6.0);
  CHECK(ratio <= 10.5);
}

TEST_CASE("Orthogonal positive features have lower variance than iid ones", "[features]") {
  // One block of M = d = 16 orthogonal frequencies against 16 iid ones, over 200 seeds. For
  // z = q~ + k~ the per-frequency relative variance is v ~ |z|^2 and orthogonality makes each
  // pair's covariance about -|z|^4 / (2 (d + 2)) (the fourth moment of chi^2_{2d} vs 2 chi^2_d),
  // so MSE_orth / MSE_iid ~ 1 - (M - 1) |z|^2 / (2 (d + 2)) ~ 0.6 at |z|^2 ~ 1; measured 0.71-0.86
  // over other data seeds. It must be below 0.95.
  constexpr Index d = 16, M = 16, N = 8;
  constexpr int seeds = 200;
  const MatrixXd Q = ref::normal(N, d, 1701, 0.0, 0.35);
  const MatrixXd K = ref::normal(N, d, 1702, 0.0, 0.35);
  const MatrixXd exact = (Q * K.transpose() / std::sqrt(double(d))).array().exp();
  double mse[2] = {0, 0};
  for (const bool orthogonal : {true, false}) {
    const std::vector<double> by_seed = per_seed(seeds, [&](std::uint64_t s) {
      const auto map = features::Positive<double>::draw(M, d, RandomStream{1703, s}, orthogonal);
      return ((positive_estimates(map, Q, K).array() / exact.array()) - 1).square().sum();
    });
    for (const double e : by_seed) mse[orthogonal ? 0 : 1] += e;
  }
  CAPTURE(mse[0], mse[1], mse[0] / mse[1]);
  CHECK(mse[0] < 0.95 * mse[1]);
}

TEST_CASE("Feature maps reject inputs of the wrong width and bad frequencies", "[features]") {
  const auto fourier = features::Fourier<float>::draw(spectral::Gaussian<float>(), 8, 4, {1, 0});
  const ref::Matrix<float> wrong = ref::Matrix<float>::Zero(3, 5);
  REQUIRE_THROWS_AS(fourier(wrong), kernattn::InvalidArgument);
  REQUIRE_THROWS_WITH(fourier(wrong), message_contains("the input is 3x5"));
  REQUIRE_THROWS_WITH(fourier(wrong), message_contains("takes 4 columns"));
  ref::Matrix<float> nan_frequencies = ref::Matrix<float>::Ones(4, 3);
  nan_frequencies(1, 1) = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_WITH(features::Fourier<float>(nan_frequencies), message_contains("finite"));
  REQUIRE_THROWS_WITH(
      features::Yaglom<float>(ref::Matrix<float>::Ones(4, 3), ref::Matrix<float>::Ones(5, 3)),
      message_contains("same shape"));
  REQUIRE_THROWS_WITH(features::Positive<float>(ref::Matrix<float>::Ones(4, 3), 0.0f),
                      message_contains("input_scale"));
}

}  // namespace test_features
