// The LinearAttention tests' helpers (test_linear_attention*.cpp; docs/math.md, section 5): feature
// maps rewritten in double with a bound on the library's weights, the naive double smoother built
// on them, the maps, problems and tilings the tests run, and check_engines (exact, linear, naive).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <type_traits>
#include <vector>

#include "catch.hpp"
#include "reference.hpp"

namespace linear_ref {

namespace features = kernattn::features;
namespace spectral = kernattn::spectral;
using kernattn::BatchLayout;
using kernattn::LinearAttention;
using kernattn::LinearOptions;
using kernattn::random::RandomStream;
using ref::MatrixXd;
using ref::Row;
using ref::VectorXd;

/// The largest difference allowed between the two engines, relative to the largest output
/// (the tolerances at the top of test_linear_attention.cpp).
template <class T>
inline constexpr double identity_tolerance = std::is_same_v<T, float> ? 1e-4 : 1e-10;

/// Signed maps' naive denominators must be at least this fraction of Z_i = sum_j mu_j, far above
/// the guard tau = 1e-3, so that no comparison can pass through the guard.
inline constexpr double denominator_margin = 0.05;

/// max |a - b| / max |b| (0 when both are exactly zero).
template <class A, class B>
double relative_difference(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  const double difference =
      (a.template cast<double>() - b.template cast<double>()).cwiseAbs().maxCoeff();
  const double scale = b.template cast<double>().cwiseAbs().maxCoeff();
  if (scale == 0) return difference == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return difference / scale;
}

enum class Kind { fourier, yaglom, positive };

/// A feature map rewritten in double from its frequencies, with a first-order bound on how far
/// the library's weight phi(q).phi(k) (relative to mu) may be from the exact one in precision u.
struct NaiveMap {
  Kind kind;
  MatrixXd first;      ///< Omega (Fourier, Positive) or Omega_1 (Yaglom), M x d
  MatrixXd second;     ///< Omega_2 (Yaglom)
  double scale = 1.0;  ///< c (Yaglom, as rounded to T) or lambda (Positive, the map's own)

  [[nodiscard]] Index M() const { return first.rows(); }
  [[nodiscard]] Index d() const { return first.cols(); }
  [[nodiscard]] Index D() const { return kind == Kind::positive ? M() : 2 * M(); }

  /// The features of every row of X, in double.
  [[nodiscard]] MatrixXd phi(const MatrixXd& X) const {
    const Index m = M();
    const double root = std::sqrt(double(m));
    MatrixXd out(X.rows(), D());
    for (Index r = 0; r < X.rows(); ++r) {
      const Row x = X.row(r);
      for (Index f = 0; f < m; ++f) {
        if (kind == Kind::fourier) {
          const double p = first.row(f).dot(x);
          out(r, f) = std::cos(p) / root;
          out(r, m + f) = std::sin(p) / root;
        } else if (kind == Kind::yaglom) {
          const double p1 = scale * first.row(f).dot(x), p2 = scale * second.row(f).dot(x);
          out(r, f) = (std::cos(p1) + std::cos(p2)) / (2 * root);
          out(r, m + f) = (std::sin(p1) + std::sin(p2)) / (2 * root);
        } else {
          out(r, f) =
              std::exp(scale * first.row(f).dot(x) - 0.5 * scale * scale * x.squaredNorm()) / root;
        }
      }
    }
    return out;
  }

  /// max_m omega_m . x (a loop: GCC 12 misreports -Wuse-after-free in Eigen for a reduction of
  /// a matrix-vector product).
  [[nodiscard]] double largest_phase(const Row& x) const {
    double largest = -std::numeric_limits<double>::infinity();
    for (Index m = 0; m < M(); ++m) largest = std::max(largest, first.row(m).dot(x));
    return largest;
  }

  /// The log-scale the library gives a key (Positive: max_m lambda omega_m.k - |lambda k|^2/2).
  [[nodiscard]] double log_scale(const Row& k) const {
    if (kind != Kind::positive) return 0.0;
    return scale * largest_phase(k) - 0.5 * scale * scale * k.squaredNorm();
  }

  /// The part of the pair bound that depends on one token x, in precision u.
  ///  - Fourier: sum_m dp_m(x), dp_m = (d + 1) u sum_i |omega_mi x_i| (a d-term inner product);
  ///  - Yaglom: sum_m (dp_1m + dp_2m), with (d + 2) u for the rounded c Omega;
  ///  - Positive: max_m (dP_m(x) + u |P_m - c|), dP_m = (d + 1) u sum_i |lambda omega_mi x_i|
  ///    (x~ = lambda x rounded, then the GEMM), the subtraction of the row maximum c; plus
  ///    (d + 1) u |x~|^2 / 2 for the norm term of the log-scale (|x|^2 may be summed in T).
  [[nodiscard]] double token_error(const Row& x, double u) const {
    const Index dd = d();
    double total = 0, largest = 0;
    for (Index m = 0; m < M(); ++m) {
      // sum_i |omega_mi x_i| (Yaglom: of both sets).
      double sum_abs = 0;
      for (Index i = 0; i < dd; ++i) {
        sum_abs += std::abs(first(m, i) * x(i));
        if (kind == Kind::yaglom) sum_abs += std::abs(second(m, i) * x(i));
      }
      total += sum_abs;
      if (kind == Kind::positive) {
        const double P = scale * first.row(m).dot(x);
        const double c = scale * largest_phase(x);
        largest = std::max(largest, double(dd + 1) * u * scale * sum_abs + u * std::abs(P - c));
      }
    }
    if (kind == Kind::fourier) return double(dd + 1) * u * total;
    if (kind == Kind::yaglom) return double(dd + 2) * u * scale * total;
    return largest + double(dd + 1) * u * 0.5 * scale * scale * x.squaredNorm();
  }

  /// Bound on |library weight / mu(k) - phi(q).phi(k)| for a pair, in precision u, with n keys
  /// and B = the largest |s_j| + |log mu_j| over the keys (the log-bias of the key terms):
  ///  - trigonometric maps: each cos/sin term moves by its phase errors (Fourier:
  ///    (tq + tk)/M; Yaglom: (tq + tk)/(2M)); feature entries err by 6u M^{-1/2} (Yaglom 8u)
  ///    against entries <= M^{-1/2}: 24u (32u); the engines' sums over the D features and n keys
  ///    add (n + D + 4) u sum|phi(q)||phi(k)| = (n + D + 4) u a; the key factors
  ///    exp(log mu - reference) err by (2B + 8) u relative;
  ///  - Positive: every term is positive, so relative errors add: tq + tk (token_error), 12u
  ///    for exp and the factors, (n + M + 8) u for the sums, u |s_k| + 2 B u for the rounded
  ///    key bias and its exponential.
  [[nodiscard]] double pair_error(double tq, double tk, double value, double abs_products,
                                  double key_log_scale, double u, Index n, double B) const {
    const double D_ = double(D());
    const double sums = (double(n) + D_ + 4) * u * abs_products;
    if (kind == Kind::fourier)
      return (tq + tk) / double(M()) + (2 * double(M()) + 24) * u + sums +
             std::abs(value) * (2 * B + 8) * u;
    if (kind == Kind::yaglom)
      return (tq + tk) / (2 * double(M())) + (2 * double(M()) + 32) * u + sums +
             std::abs(value) * (2 * B + 8) * u;
    return value *
           (tq + tk + 12 * u + (double(n) + D_ + 8) * u + u * std::abs(key_log_scale) + 2 * B * u);
  }
};

/// The naive reference of one problem in a batch x heads layout, and the smallest
/// denominator / Z over the rows that see a key (for the guard precondition).
struct Naive {
  ref::Reference reference;
  double smallest_denominator_ratio = std::numeric_limits<double>::infinity();
};

/// out_i = sum_j w_ij v_j / sum_j w_ij over the visible keys, w_ij = phi(q_i).phi(k_j) mu(k_j), in
/// double with features from `map`; the bound propagates each weight's error e_ij (pair_error
/// times mu_j, plus |w_ij| (e_mu_j + max e_mu + 2u) for the magnitudes, relative to the largest)
/// through the ratio as in ref::detail::smooth_row: sum_j e_ij (|v_j| + |out_i|) / |sum w|, plus
/// 2(n+1) u sum|w||v| and 2 n u |out| sum|w| for the sums, plus u |out|. It is evaluated at
/// u + u_double, covering the reference's own rounding.
inline Naive naive_attention(const NaiveMap& map, const ref::Problem& p, BatchLayout layout,
                             const ref::MagnitudeModel& magnitude,
                             const std::function<ref::Visibility(Index)>& visible,
                             double u_library) {
  const double u = u_library + ref::u_double;
  const Index B = layout.sequences, H = layout.heads;
  const Index nq = p.Q.rows() / B, nk = p.K.rows() / B;
  const Index d = p.Q.cols() / H, dv = p.V.cols() / H;
  Naive result;
  result.reference.out = MatrixXd::Zero(p.Q.rows(), p.V.cols());
  result.reference.bound = MatrixXd::Zero(p.Q.rows(), p.V.cols());
  for (Index b = 0; b < B; ++b) {
    const ref::Visibility seen = visible(b);
    for (Index h = 0; h < H; ++h) {
      const MatrixXd Q = p.Q.block(b * nq, h * d, nq, d), K = p.K.block(b * nk, h * d, nk, d);
      const MatrixXd V = p.V.block(b * nk, h * dv, nk, dv);
      const MatrixXd fq = map.phi(Q), fk = map.phi(K);
      const MatrixXd values = fq.lazyProduct(fk.transpose());
      const MatrixXd abs_products = fq.cwiseAbs().lazyProduct(fk.cwiseAbs().transpose());
      VectorXd tq(nq), tk(nk), log_mu(nk), mu_error(nk), key_log_scale(nk);
      for (Index i = 0; i < nq; ++i) tq(i) = map.token_error(Q.row(i), u);
      double largest_bias = 0;
      for (Index j = 0; j < nk; ++j) {
        tk(j) = map.token_error(K.row(j), u);
        log_mu(j) = magnitude.log_mu(K.row(j));
        mu_error(j) = magnitude.error(K.row(j), u);
        key_log_scale(j) = map.log_scale(K.row(j));
        largest_bias = std::max(largest_bias, std::abs(key_log_scale(j)) + std::abs(log_mu(j)));
      }
      for (Index i = 0; i < nq; ++i) {
        std::vector<Index> keys;
        for (Index j = 0; j < nk; ++j)
          if (seen(i, j)) keys.push_back(j);
        if (keys.empty()) continue;
        const auto n = Index(keys.size());
        double max_log_mu = -std::numeric_limits<double>::infinity(), max_mu_error = 0;
        for (const Index j : keys) {
          max_log_mu = std::max(max_log_mu, log_mu(j));
          max_mu_error = std::max(max_mu_error, mu_error(j));
        }
        VectorXd w(n), e(n);
        MatrixXd v(n, dv);
        double scale_sum = 0;
        for (Index t = 0; t < n; ++t) {
          const Index j = keys[std::size_t(t)];
          const double mu = std::exp(log_mu(j) - max_log_mu);
          w(t) = values(i, j) * mu;
          e(t) = map.pair_error(tq(i), tk(j), values(i, j), abs_products(i, j), key_log_scale(j), u,
                                nk, largest_bias) *
                     mu +
                 std::abs(w(t)) * (mu_error(j) + max_mu_error + 2 * u);
          v.row(t) = V.row(j);
          scale_sum += mu;
        }
        const double sum = w.sum();
        result.smallest_denominator_ratio =
            std::min(result.smallest_denominator_ratio, sum / scale_sum);
        if (sum == 0) continue;
        const Row out = (w.transpose() * v) / sum;
        const Row abs_v_w = w.cwiseAbs().transpose() * v.cwiseAbs();
        const double abs_w = w.cwiseAbs().sum();
        Row bound(dv);
        for (Index c = 0; c < dv; ++c) {
          double propagated = 0;
          for (Index t = 0; t < n; ++t) propagated += e(t) * (std::abs(v(t, c)) + std::abs(out(c)));
          bound(c) = (propagated + 2 * double(n + 1) * u * abs_v_w(c) +
                      2 * double(n) * u * std::abs(out(c)) * abs_w) /
                         std::abs(sum) +
                     u * std::abs(out(c));
        }
        result.reference.out.block(b * nq + i, h * dv, 1, dv) = out;
        result.reference.bound.block(b * nq + i, h * dv, 1, dv) = bound;
      }
    }
  }
  return result;
}

/// The three maps of one precision, with their naive twins. Frequencies for Fourier and Yaglom
/// come from the Gaussian sampler of lengthscale 2: twice the typical |q - k| ~ 0.25 sqrt(2d)
/// ~ 0.9 of the data below, so every estimate is ~ exp(-0.1) ~ 0.9 and no denominator nears the
/// guard.
template <class T>
struct Maps {
  static constexpr Index M = 24;
  features::Fourier<T> fourier;
  features::Yaglom<T> yaglom;
  features::Positive<T> positive;
  NaiveMap naive_fourier, naive_yaglom, naive_positive;

  static Maps make(Index d, std::uint64_t seed) {
    const spectral::Gaussian<T> sampler(T(2));
    const auto fourier = features::Fourier<T>::draw(sampler, M, d, RandomStream{seed, 0});
    const ref::Matrix<T> both =
        spectral::draw_frequencies(sampler, 2 * M, d, RandomStream{seed, 1});
    const features::Yaglom<T> yaglom(both.topRows(M), both.bottomRows(M), T(1.5));
    const ref::Matrix<T> standard = spectral::draw_frequencies(
        spectral::Orthogonal<spectral::Gaussian<T>>(spectral::Gaussian<T>(T(1))), M, d,
        RandomStream{seed, 2});
    const features::Positive<T> positive(standard);
    return {fourier,
            yaglom,
            positive,
            {Kind::fourier, fourier.frequencies().template cast<double>(), {}, 1.0},
            {Kind::yaglom, both.topRows(M).template cast<double>(),
             both.bottomRows(M).template cast<double>(), double(T(1.5))},
            {Kind::positive, standard.template cast<double>(), {}, double(positive.input_scale())}};
  }
};

/// The tilings every comparison runs: the default tile and chunk first, then chunks of 1, 7 and
/// more than N, tiles of 1, 5, 7 and 16. One thread but for one tiling on two: the thread count
/// changes no bit (checked on its own in test_linear_attention.cpp), and a thousand tiny parallel
/// regions cost far more than the work on a busy machine.
inline const std::vector<LinearOptions> linear_tilings = {
    {.threads = 1},
    {.threads = 1, .query_tile = 5, .key_tile = 5, .causal_chunk = 1},
    {.threads = 1, .query_tile = 7, .key_tile = 7, .causal_chunk = 7},
    {.threads = 2, .query_tile = 1, .key_tile = 1},
    {.threads = 1, .query_tile = 16, .key_tile = 16, .causal_chunk = 100}};

/// Runs the exact engine with RandomFeature<Map> and the linear engine with every tiling on one
/// problem and compares them with each other and with the naive reference.
template <class T, class Map, class Magnitude, class Mask>
void check_engines(const ref::Problem& p, BatchLayout layout, const Map& map, const NaiveMap& naive,
                   const Magnitude& mu, const ref::MagnitudeModel& magnitude_model,
                   const Mask& mask, const std::function<ref::Visibility(Index)>& visible) {
  const kernattn::Attention<kernels::RandomFeature<Map>, Magnitude, Mask> exact_attention(
      kernels::RandomFeature<Map>(map), mu, mask, kernattn::ExecutionOptions{1});
  const ref::Matrix<T> exact = exact_attention(p.q<T>(), p.k<T>(), p.v<T>(), layout);
  const Naive expected =
      naive_attention(naive, p, layout, magnitude_model, visible, ref::unit_roundoff<T>);
  if constexpr (!Map::non_negative) {
    // The precondition: every denominator is far from the guard (which would make the linear
    // engine differ from the exact one by design).
    CAPTURE(expected.smallest_denominator_ratio);
    REQUIRE(expected.smallest_denominator_ratio >= denominator_margin);
  }
  {
    INFO("exact engine against the naive reference");
    check::require_matches<T>(exact, expected.reference);
  }
  ref::Matrix<T> defaults;
  for (const LinearOptions& options : linear_tilings) {
    CAPTURE(options.query_tile, options.key_tile, options.causal_chunk);
    const LinearAttention<Map, Magnitude, Mask> linear_attention(map, mu, mask, options);
    const ref::Matrix<T> linear = linear_attention(p.q<T>(), p.k<T>(), p.v<T>(), layout);
    REQUIRE(linear.rows() == exact.rows());
    REQUIRE(linear.cols() == exact.cols());
    CHECK(linear.allFinite());
    CHECK(relative_difference(linear, exact) <= identity_tolerance<T>);
    if (defaults.size() == 0) {
      INFO("linear engine against the naive reference");
      check::require_matches<T>(linear, expected.reference);
      defaults = linear;
    } else {
      CHECK(relative_difference(linear, defaults) <= identity_tolerance<T>);
    }
  }
  // Rows that see no key are exactly zero in both engines.
  const Index B = layout.sequences;
  const Index nq = p.Q.rows() / B;
  for (Index b = 0; b < B; ++b) {
    const ref::Visibility seen = visible(b);
    for (Index i = 0; i < nq; ++i)
      if (!seen.row(i).any()) {
        CAPTURE(b, i);
        CHECK((exact.row(b * nq + i).array() == T(0)).all());
        CHECK((defaults.row(b * nq + i).array() == T(0)).all());
      }
  }
}

/// Q (B nq) x (H d), K (B nk) x (H d) with N(0, 0.25^2) entries, V (B nk) x (H dv) N(0, 1).
template <class T>
ref::Problem batch_problem(Index B, Index H, Index nq, Index nk, Index d, Index dv,
                           std::uint32_t seed) {
  return ref::rounded<T>({ref::normal(B * nq, H * d, seed, 0.0, 0.25),
                          ref::normal(B * nk, H * d, seed + 1, 0.0, 0.25),
                          ref::normal(B * nk, H * dv, seed + 2)});
}

}  // namespace linear_ref
