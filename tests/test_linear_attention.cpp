// LinearAttention (docs/math.md, section 5): the linear-time engine computes the same weights
// w_ij = phi(q_i).phi(k_j) mu(k_j) as the exact engine with kernels::RandomFeature of the same
// map, so the two agree to rounding for every map, magnitude, mask and tiling; both agree with a
// naive double-precision kernel smoother written out here from the maps' frequencies; FAVOR+
// approaches softmax attention as M grows; magnitudes beyond the float range, the denominator
// guard, rows that see no key, non-finite padding, determinism and bad input.
//
// Tolerances.
//  - Engine against engine: <= 1e-4 (float) and <= 1e-10 (double) of the largest output. Both
//    engines form the same weights and differ only in the order of their sums: the exact engine
//    sums w_ij v_j over keys, the linear one phi(q)^T (sum_j psi(k_j) v_j^T), an (N_k + 2M)-term
//    computation whose worst-case error (N_k + 2M) u sum_j mu_j |v_j| / den_i is ~5e-4 of the
//    output in float at the sizes used here (den_i >= 0.05 Z_i is asserted below); rounding errors
//    add up as a random walk, ~sqrt(N_k + 2M) u ~ 1e-6, so the limits leave a factor ~100 in float
//    and ~1e4 in double (u = 1.1e-16).
//  - Against the naive reference: a first-order bound derived per output entry from the data (see
//    NaiveMap::pair_error and naive_attention), required to be informative (check::
//    require_matches: <= 1e-3 of the output scale in float, 1e-9 in double).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <thread>
#include <type_traits>
#include <vector>

#include "catch.hpp"
#include "reference.hpp"

namespace features = kernattn::features;
namespace spectral = kernattn::spectral;
using kernattn::BatchLayout;
using kernattn::LinearAttention;
using kernattn::LinearOptions;
using kernattn::random::RandomStream;

namespace {

using ref::MatrixXd;
using ref::Row;
using ref::VectorXd;

template <class T>
constexpr double identity_tolerance = std::is_same_v<T, float> ? 1e-4 : 1e-10;

/// Signed maps' naive denominators must be at least this fraction of Z_i = sum_j mu_j, far above
/// the guard tau = 1e-3, so that no comparison can pass through the guard.
constexpr double denominator_margin = 0.05;

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
Naive naive_attention(const NaiveMap& map, const ref::Problem& p, BatchLayout layout,
                      const ref::MagnitudeModel& magnitude,
                      const std::function<ref::Visibility(Index)>& visible, double u_library) {
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

/// Calls f(map, naive) for each of the three maps.
template <class T, class F>
void for_each_map(const Maps<T>& maps, F&& f) {
  {
    INFO("Fourier");
    f(maps.fourier, maps.naive_fourier);
  }
  {
    INFO("Yaglom");
    f(maps.yaglom, maps.naive_yaglom);
  }
  {
    INFO("Positive");
    f(maps.positive, maps.naive_positive);
  }
}

/// The tilings every comparison runs: the default tile and chunk first, then chunks of 1, 7 and
/// more than N, tiles of 1, 5, 7 and 16. One thread but for one tiling on two: the thread count
/// changes no bit (checked on its own below), and a thousand tiny parallel regions cost far more
/// than the work on a busy machine.
const std::vector<LinearOptions> linear_tilings = {
    {1, 256, 64, 1e-3}, {1, 5, 1, 1e-3}, {1, 7, 7, 1e-3}, {2, 1, 64, 1e-3}, {1, 16, 100, 1e-3}};

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
    CAPTURE(options.tile, options.chunk);
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

/// check_engines with no magnitude and Lp at p = 1.5, 2 and 3 (default gamma).
template <class T, class Map, class Mask>
void check_magnitudes(const ref::Problem& p, BatchLayout layout, const Map& map,
                      const NaiveMap& naive, const Mask& mask,
                      const std::function<ref::Visibility(Index)>& visible) {
  {
    INFO("no magnitude");
    check_engines<T>(p, layout, map, naive, magnitude::None{}, ref::unit_magnitude(), mask,
                     visible);
  }
  const Index d = p.Q.cols() / layout.heads;
  for (const double power : {1.5, 2.0, 3.0}) {
    CAPTURE(power);
    const magnitude::Lp<T> mu{T(power)};
    check_engines<T>(p, layout, map, naive, mu, ref::lp(power, ref::default_gamma(d), 2), mask,
                     visible);
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

}  // namespace

TEMPLATE_TEST_CASE("LinearAttention equals the exact engine with RandomFeature of the same map",
                   "[linear]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index B = 3, H = 2, d = 6, dv = 3, nk = 37;
  const Maps<T> maps = Maps<T>::make(d, 2001);
  const auto all = [](Index nq) { return [nq](Index) { return ref::all_visible(nq, nk); }; };
  SECTION("no mask") {
    const ref::Problem p = batch_problem<T>(B, H, 23, nk, d, dv, 2002);
    for_each_map(maps, [&](const auto& map, const NaiveMap& naive) {
      check_magnitudes<T>(p, {B, H}, map, naive, mask::None{}, all(23));
    });
  }
  SECTION("causal: Nq = Nk, Nq < Nk, Nq > Nk") {
    for (const Index nq : {nk, Index(23), Index(45)}) {
      CAPTURE(nq);
      const ref::Problem p = batch_problem<T>(B, H, nq, nk, d, dv, 2003);
      for_each_map(maps, [&](const auto& map, const NaiveMap& naive) {
        check_magnitudes<T>(p, {B, H}, map, naive, mask::Causal{},
                            [nq](Index) { return ref::causal(nq, nk); });
      });
    }
  }
  SECTION("key padding: one length per sequence (all, some, none)") {
    const std::vector<Index> lengths = {nk, 11, 0};
    const ref::Problem p = batch_problem<T>(B, H, 29, nk, d, dv, 2004);
    for_each_map(maps, [&](const auto& map, const NaiveMap& naive) {
      check_magnitudes<T>(
          p, {B, H}, map, naive, mask::KeyPadding::from_lengths(lengths),
          [&](Index b) { return ref::first_keys(29, nk, lengths[std::size_t(b)]); });
    });
  }
  SECTION("key padding: B x Nk flags") {
    ref::Flags flags = ref::random_visibility(B * nk, 1, 0.6, 2005).col(0);
    const ref::Problem p = batch_problem<T>(B, H, 29, nk, d, dv, 2006);
    for_each_map(maps, [&](const auto& map, const NaiveMap& naive) {
      check_magnitudes<T>(p, {B, H}, map, naive, mask::KeyPadding::from_flags(flags),
                          [&](Index b) { return ref::valid_keys(29, flags.segment(b * nk, nk)); });
    });
  }
  SECTION("causal && key padding (flags), and key padding (lengths) && causal") {
    ref::Flags flags = ref::random_visibility(B * nk, 1, 0.7, 2007).col(0);
    const std::vector<Index> lengths = {30, nk, 4};
    for (const Index nq : {nk, Index(20)}) {
      CAPTURE(nq);
      const ref::Problem p = batch_problem<T>(B, H, nq, nk, d, dv, 2008);
      for_each_map(maps, [&](const auto& map, const NaiveMap& naive) {
        check_magnitudes<T>(
            p, {B, H}, map, naive, mask::Causal{} && mask::KeyPadding::from_flags(flags),
            [&](Index b) {
              return ref::Visibility(ref::causal(nq, nk) &&
                                     ref::valid_keys(nq, flags.segment(b * nk, nk)));
            });
        check_magnitudes<T>(
            p, {B, H}, map, naive, mask::KeyPadding::from_lengths(lengths) && mask::Causal{},
            [&](Index b) {
              return ref::Visibility(ref::causal(nq, nk) &&
                                     ref::first_keys(nq, nk, lengths[std::size_t(b)]));
            });
      });
    }
  }
}

TEST_CASE("FAVOR+ linear attention approaches softmax attention as M grows", "[linear]") {
  // Positive features estimate exp(q.k / sqrt d) with relative error ~ M^{-1/2}, and the output
  // error follows: the mean absolute error over the outputs should fall by sqrt(4096 / 64) = 8
  // from M = 64 to M = 4096 (required: >= 4, and a decrease at every step), averaged over 4
  // seeds.
  constexpr Index d = 16, N = 48, dv = 4;
  constexpr int seeds = 4;
  const ref::Problem p{ref::normal(N, d, 2101, 0.0, 0.5), ref::normal(N, d, 2102, 0.0, 0.5),
                       ref::normal(N, dv, 2103)};
  const auto errors_for = [&](const auto& mask) {
    using Mask = std::remove_cvref_t<decltype(mask)>;
    const kernattn::Attention<kernels::Exponential<double>, magnitude::None, Mask> softmax(
        kernels::Exponential<double>(), {}, mask);
    const MatrixXd exact = softmax(p.Q, p.K, p.V);
    std::vector<double> errors;
    for (const Index M : {64, 256, 1024, 4096}) {
      double error = 0;
      for (int s = 0; s < seeds; ++s) {
        const LinearAttention<features::Positive<double>, magnitude::None, Mask> linear(
            features::Positive<double>::draw(M, d, RandomStream{2104, std::uint64_t(s)}), {}, mask);
        const MatrixXd out = linear(p.Q, p.K, p.V);
        REQUIRE(out.allFinite());
        error += (out - exact).cwiseAbs().mean();
      }
      errors.push_back(error / seeds);
    }
    return errors;
  };
  for (const bool causal : {false, true}) {
    CAPTURE(causal);
    const std::vector<double> errors =
        causal ? errors_for(mask::Causal{}) : errors_for(mask::None{});
    CAPTURE(errors[0], errors[1], errors[2], errors[3]);
    CHECK(errors[0] > errors[1]);
    CHECK(errors[1] > errors[2]);
    CHECK(errors[2] > errors[3]);
    CHECK(errors[0] / errors[3] >= 4.0);
  }
}

TEMPLATE_TEST_CASE("Magnitudes far beyond the float range stay exact in the linear engine",
                   "[linear]", KERNATTN_TEST_SCALARS) {
  // Lp(2) with gamma = 200 and keys of norm 1 +- 2%: log mu = 200 |k|^2 in [192, 208], mu itself
  // beyond the largest float (e^88.7) and the weights spread over e^16. Float holds log mu to
  // u * 208 ~ 1.2e-5 relative, which each weight inherits: within the 1e-4 identity tolerance.
  using T = TestType;
  constexpr Index d = 6, dv = 3, nq = 30, nk = 40;
  CHECK_FALSE(std::isfinite(std::exp(float(192))));
  const Maps<T> maps = Maps<T>::make(d, 2201);
  ref::Problem p = batch_problem<T>(1, 1, nq, nk, d, dv, 2202);
  for (Index j = 0; j < nk; ++j)
    p.K.row(j) = ref::on_sphere(1, d, 1.0 + 0.02 * std::sin(double(j)), 2203 + std::uint32_t(j));
  p = ref::rounded<T>(p);
  const magnitude::Lp<T> mu(T(2), T(200));
  const ref::MagnitudeModel model = ref::lp(2, 200, 2);
  // |q - k| <~ 1.6 against the lengthscale 2: the Fourier denominators stay positive (asserted
  // in check_engines).
  for (const bool causal : {false, true}) {
    CAPTURE(causal);
    const auto visible = [&](Index) {
      return causal ? ref::causal(nq, nk) : ref::all_visible(nq, nk);
    };
    const auto run = [&](const auto& map, const NaiveMap& naive, const auto& magnitude,
                         const ref::MagnitudeModel& magnitude_model, const ref::Problem& problem) {
      if (causal)
        check_engines<T>(problem, {}, map, naive, magnitude, magnitude_model, mask::Causal{},
                         visible);
      else
        check_engines<T>(problem, {}, map, naive, magnitude, magnitude_model, mask::None{},
                         visible);
    };
    {
      INFO("Fourier, gamma = 200");
      run(maps.fourier, maps.naive_fourier, mu, model, p);
    }
    {
      INFO("Positive, gamma = 200");
      run(maps.positive, maps.naive_positive, mu, model, p);
    }
    {
      // Softmax through FAVOR+ and the L2 magnitude: keys of norm 34 +- 3%, mu =
      // exp(|k|^2 / (2 sqrt d)) ~ e^236 while the features' own log-scales are ~ -236; the two
      // meet in the log domain only.
      INFO("Positive, default Lp(2), keys of norm 34");
      ref::Problem far = p;
      far.K *= 34.0;
      far = ref::rounded<T>(far);
      CHECK_FALSE(std::isfinite(std::exp(float(0.97 * 0.97 * 34 * 34 / (2 * std::sqrt(6.0))))));
      run(maps.positive, maps.naive_positive, magnitude::L2<T>(),
          ref::lp(2, ref::default_gamma(d), 2), far);
    }
  }
}

TEMPLATE_TEST_CASE("The denominator guard of signed feature maps", "[linear]",
                   KERNATTN_TEST_SCALARS) {
  // Two Fourier frequencies and data spread over [-4, 4]^2: kappa^(q, k) = (cos(omega_1.(q-k)) +
  // cos(omega_2.(q-k))) / 2 takes both signs, so some denominators den_i = sum_j kappa^ mu_j are
  // <= 0. Documented: out_i = num_i / max(den_i, tau Z_i), Z_i = sum_{visible j} mu(k_j).
  using T = TestType;
  constexpr Index d = 2, nq = 40, nk = 12, dv = 3;
  ref::Matrix<T> omega(2, d);
  omega << T(2.5), T(0.3), T(-0.4), T(2.2);
  const features::Fourier<T> map(omega);
  const MatrixXd Om = omega.template cast<double>();
  const ref::Problem p =
      ref::rounded<T>({ref::normal(nq, d, 2301, 0.0, 2.0), ref::normal(nk, d, 2302, 0.0, 2.0),
                       ref::normal(nk, dv, 2303)});
  const magnitude::Lp<T> mu(T(2), T(0.05));
  const ref::MagnitudeModel mu_model = ref::lp(2, 0.05, 2);
  constexpr double u = ref::unit_roundoff<T>;

  const auto check_guard = [&](double tau, bool causal) {
    CAPTURE(tau, causal);
    const ref::Visibility seen = causal ? ref::causal(nq, nk) : ref::all_visible(nq, nk);
    const LinearOptions options{0, 5, 7, tau};
    const ref::Matrix<T> out =
        causal ? LinearAttention<features::Fourier<T>, magnitude::Lp<T>, mask::Causal>(
                     map, mu, {}, options)(p.q<T>(), p.k<T>(), p.v<T>())
               : LinearAttention<features::Fourier<T>, magnitude::Lp<T>>(map, mu, {}, options)(
                     p.q<T>(), p.k<T>(), p.v<T>());
    CHECK(out.allFinite());
    Index guarded = 0, unguarded = 0;
    for (Index i = 0; i < nq; ++i) {
      CAPTURE(i);
      Row num = Row::Zero(dv), num_error = Row::Zero(dv);
      double den = 0, Z = 0, den_error = 0;
      for (Index j = 0; j < nk; ++j) {
        if (!seen(i, j)) continue;
        const Row q = p.Q.row(i), k = p.K.row(j);
        double kappa = 0, phase = 0;
        for (Index m = 0; m < 2; ++m) {
          kappa += std::cos(Om.row(m).dot(q - k)) / 2;
          phase += double(d + 1) * u *
                   ((Om.row(m).cwiseAbs().array() * (q.cwiseAbs().array() + k.cwiseAbs().array()))
                        .sum());
        }
        const double m_j = std::exp(mu_model.log_mu(k));
        // kappa^ errs by the phase errors / M plus (2M + 24) u and the engine's sums
        // (nk + 2M + 4) u (pair_error of NaiveMap); mu_j by its model's error (relative).
        const double e_kappa = phase / 2 + (4.0 + 24) * u + (double(nk) + 8) * u;
        const double e_mu = mu_model.error(k, u) + 2 * u;
        num += kappa * m_j * p.V.row(j);
        num_error += (e_kappa + std::abs(kappa) * e_mu) * m_j * p.V.row(j).cwiseAbs();
        den += kappa * m_j;
        Z += m_j;
        den_error += (e_kappa + std::abs(kappa) * e_mu) * m_j;
      }
      if (Z == 0) {
        CHECK((out.row(i).array() == T(0)).all());
        continue;
      }
      // No row sits at the switch between den and tau Z within the error of either (here to
      // 10 times their bounds): the precondition for comparing each row with one branch of the
      // documented formula.
      REQUIRE(std::abs(den - tau * Z) >= 10 * (den_error + tau * Z * (double(nk) + 4) * u));
      const bool is_guarded = den < tau * Z;
      (is_guarded ? guarded : unguarded) += 1;
      const double divisor = is_guarded ? tau * Z : den;
      const double divisor_error = is_guarded ? tau * Z * (double(nk) + 4) * u : den_error;
      const Row expected = num / divisor;
      const Row bound = (num_error.array() + expected.array().abs() * divisor_error) / divisor +
                        2 * u * expected.array().abs();
      CAPTURE(is_guarded, den / Z);
      // Informative: a wrong branch, tau or Z moves the row by far more.
      CHECK(bound.maxCoeff() <=
            check::informative_bound<T> * std::max(1.0, expected.cwiseAbs().maxCoeff()));
      for (Index c = 0; c < dv; ++c) {
        CAPTURE(c, expected(c), bound(c));
        CHECK(std::abs(double(out(i, c)) - expected(c)) <= bound(c));
      }
    }
    return std::pair{guarded, unguarded};
  };
  for (const bool causal : {false, true}) {
    // The default tau = 1e-3: rows with den <= 0 are guarded, the others are not.
    const auto [guarded, unguarded] = check_guard(1e-3, causal);
    CHECK(guarded >= 2);
    CHECK(unguarded >= 2);
    // A large tau guards more rows.
    const auto [guarded_more, unguarded_fewer] = check_guard(0.3, causal);
    CHECK(guarded_more > guarded);
    CHECK(unguarded_fewer >= 1);
  }
}

TEMPLATE_TEST_CASE("Queries that see no key output zeros, never NaN", "[linear]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index d = 6, dv = 3, nk = 10;
  const Maps<T> maps = Maps<T>::make(d, 2401);
  const auto check_zeros = [&](const auto& map) {
    using Map = std::remove_cvref_t<decltype(map)>;
    {
      INFO("a fully padded sequence in a batch");
      const ref::Problem p = batch_problem<T>(2, 1, 8, nk, d, dv, 2402);
      const LinearAttention<Map, magnitude::Lp<T>, mask::KeyPadding> linear(
          map, magnitude::Lp<T>(T(3)), mask::KeyPadding::from_lengths({nk, 0}));
      const ref::Matrix<T> out = linear(p.q<T>(), p.k<T>(), p.v<T>(), {2, 1});
      CHECK(out.allFinite());
      CHECK((out.bottomRows(8).array() == T(0)).all());
      CHECK((out.topRows(8).array() != T(0)).any());
    }
    {
      INFO("causal with Nq > Nk: the first Nq - Nk queries see nothing");
      const ref::Problem p = batch_problem<T>(1, 1, 16, nk, d, dv, 2403);
      const LinearAttention<Map, magnitude::None, mask::Causal> linear(map, {}, {},
                                                                       LinearOptions{0, 3, 4});
      const ref::Matrix<T> out = linear(p.q<T>(), p.k<T>(), p.v<T>());
      CHECK(out.allFinite());
      CHECK((out.topRows(16 - nk).array() == T(0)).all());
      CHECK((out.bottomRows(nk).rowwise().squaredNorm().array() > T(0)).all());
    }
    {
      INFO("causal && key padding of length 0");
      const ref::Problem p = batch_problem<T>(1, 1, nk, nk, d, dv, 2404);
      const LinearAttention<Map, magnitude::None,
                            mask::Intersection<mask::Causal, mask::KeyPadding>>
          linear(map, {}, mask::Causal{} && mask::KeyPadding::from_lengths({0}));
      const ref::Matrix<T> out = linear(p.q<T>(), p.k<T>(), p.v<T>());
      CHECK((out.array() == T(0)).all());
    }
    {
      INFO("no keys at all");
      const ref::Problem p = batch_problem<T>(1, 1, 6, 0, d, dv, 2405);
      const ref::Matrix<T> none = LinearAttention<Map>(map)(p.q<T>(), p.k<T>(), p.v<T>());
      const ref::Matrix<T> causal =
          LinearAttention<Map, magnitude::None, mask::Causal>(map)(p.q<T>(), p.k<T>(), p.v<T>());
      REQUIRE(none.rows() == 6);
      REQUIRE(none.cols() == dv);
      CHECK((none.array() == T(0)).all());
      CHECK((causal.array() == T(0)).all());
    }
  };
  {
    INFO("Positive (non-negative)");
    check_zeros(maps.positive);
  }
  {
    INFO("Fourier (signed)");
    check_zeros(maps.fourier);
  }
}

TEMPLATE_TEST_CASE("Positive features: a query whose features barely meet the keys' stays finite",
                   "[linear]", KERNATTN_TEST_SCALARS) {
  // A query of norm t/lambda along omega_0 and keys of about the same norm in the opposite
  // direction: phi~(q) peaks where phi~(k) is smallest, so phi~(q).z~ = exp(-t (max_m a_m -
  // min_m a_m)) (a_m = omega_m . omega_0 / |omega_0|) relative to the stabilisers, below the
  // normal range of T once t * range > -log(min<T>). Every weight is >= 0, so the output is a
  // convex combination of the values: finite and inside [min_j v_jc, max_j v_jc] up to rounding,
  // 2 (nk + 4) u max|v|. (Far enough out every weight underflows to 0, which is documented to
  // output zeros; f below stays short of that: f * range * t_0 <= 1.15 (-log min<T>).)
  using T = TestType;
  constexpr Index d = 6, M = 24, nk = 3;
  const ref::Matrix<T> omega = spectral::draw_frequencies(
      spectral::Orthogonal<spectral::Gaussian<T>>(spectral::Gaussian<T>(T(1))), M, d,
      RandomStream{2451, 0});
  const features::Positive<T> map(omega);
  const Row direction = omega.row(0).template cast<double>().normalized();
  const VectorXd a = omega.template cast<double>() * direction.transpose();
  const double range = a.maxCoeff() - a.minCoeff();
  const double lambda = double(map.input_scale());
  ref::Matrix<T> V(nk, 2);
  V << T(1), T(2), T(3), T(4), T(5), T(6);
  const double slack = 2 * (nk + 4) * ref::unit_roundoff<T> * 6;
  for (const double f : {0.5, 0.9, 1.05, 1.15}) {
    const double t = f * -std::log(double(std::numeric_limits<T>::min())) / range;
    CAPTURE(f, t);
    MatrixXd Q(2, d), K(nk, d);
    Q.row(0) = (t / lambda) * direction;
    Q.row(1) = 0.1 * direction;
    K.row(0) = -(t / lambda) * direction;
    K.row(1) = -1.01 * (t / lambda) * direction;
    K.row(2) = -0.99 * (t / lambda) * direction;
    for (const bool causal : {false, true}) {
      CAPTURE(causal);
      const ref::Matrix<T> out =
          causal ? LinearAttention<features::Positive<T>, magnitude::None, mask::Causal>(map)(
                       Q.cast<T>(), K.cast<T>(), V)
                 : LinearAttention<features::Positive<T>>(map)(Q.cast<T>(), K.cast<T>(), V);
      CAPTURE(out(0, 0), out(0, 1));
      CHECK(out.allFinite());
      // f = 1.15 puts the weights deep in the subnormal range, where they keep no relative
      // precision (documented): only finiteness is promised there.
      if (f > 1.1) continue;
      // (causal: query 0 sees keys 0 and 1 only)
      const Index seen = causal ? 2 : 3;
      for (Index c = 0; c < 2; ++c) {
        CHECK(double(out(0, c)) >= double(V.col(c).head(seen).minCoeff()) - slack);
        CHECK(double(out(0, c)) <= double(V.col(c).head(seen).maxCoeff()) + slack);
      }
    }
  }
}

TEMPLATE_TEST_CASE("Non-finite padded keys change nothing; a visible NaN value propagates",
                   "[linear]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index d = 6, dv = 3, nq = 20, nk = 20;
  constexpr T nan = std::numeric_limits<T>::quiet_NaN();
  constexpr T inf = std::numeric_limits<T>::infinity();
  const Maps<T> maps = Maps<T>::make(d, 2501);
  const ref::Problem p = batch_problem<T>(1, 1, nq, nk, d, dv, 2502);
  ref::Flags valid = ref::Flags::Constant(nk, true);
  for (const Index j : {2, 9, 10, 17}) valid(j) = false;
  ref::Matrix<T> bad_K = p.k<T>(), bad_V = p.v<T>();
  bad_K.row(2).setConstant(nan);
  bad_K(9, 1) = inf;
  bad_V(10, 0) = nan;
  bad_V.row(17).setConstant(-inf);
  bad_V(2, 2) = inf;

  const auto check_padding = [&](const auto& map, const auto& mask, bool causal) {
    using Map = std::remove_cvref_t<decltype(map)>;
    using Mask = std::remove_cvref_t<decltype(mask)>;
    for (const LinearOptions& options : linear_tilings) {
      CAPTURE(options.tile, options.chunk);
      const LinearAttention<Map, magnitude::Lp<T>, Mask> linear(map, magnitude::Lp<T>(T(1.5)), mask,
                                                                options);
      const ref::Matrix<T> finite = linear(p.q<T>(), p.k<T>(), p.v<T>());
      const ref::Matrix<T> with_bad = linear(p.q<T>(), bad_K, bad_V);
      REQUIRE(finite.allFinite());
      CHECK(with_bad.allFinite());
      // The padded rows are excluded before any arithmetic; the causal engine evaluates a chunk
      // holding non-finite values pair by pair instead of as one product, so its result may
      // differ by rounding, never more.
      CHECK(relative_difference(with_bad, finite) <= identity_tolerance<T>);
      if (!causal) CHECK(check::identical(with_bad, finite));
    }
  };
  const auto check_nan_value = [&](const auto& map, const auto& mask, Index row, Index column) {
    using Map = std::remove_cvref_t<decltype(map)>;
    using Mask = std::remove_cvref_t<decltype(mask)>;
    ref::Matrix<T> V = p.v<T>();
    V(row, column) = nan;
    const kernattn::Attention<kernels::RandomFeature<Map>, magnitude::None, Mask> exact(
        kernels::RandomFeature<Map>(map), {}, mask);
    const ref::Matrix<T> expected = exact(p.q<T>(), p.k<T>(), V);
    REQUIRE(expected.array().isNaN().any());
    for (const LinearOptions& options : linear_tilings) {
      CAPTURE(options.tile, options.chunk);
      const ref::Matrix<T> out = LinearAttention<Map, magnitude::None, Mask>(
          map, {}, mask, options)(p.q<T>(), p.k<T>(), V);
      CHECK((out.array().isNaN() == expected.array().isNaN()).all());
      // Elsewhere the engines agree as usual.
      const ref::Matrix<T> a = out.array().isNaN().select(T(0), out);
      const ref::Matrix<T> b = expected.array().isNaN().select(T(0), expected);
      CHECK(relative_difference(a, b) <= identity_tolerance<T>);
    }
  };
  const auto both = [&](const auto& map) {
    {
      INFO("key padding");
      check_padding(map, mask::KeyPadding::from_flags(valid), false);
    }
    {
      INFO("causal && key padding");
      check_padding(map, mask::Causal{} && mask::KeyPadding::from_flags(valid), true);
    }
    {
      INFO("NaN in a visible value: no mask");
      check_nan_value(map, mask::None{}, 5, 1);
    }
    {
      INFO("NaN in a visible value: causal, only the queries that see it");
      check_nan_value(map, mask::Causal{}, 11, 2);
    }
    {
      INFO("NaN in a visible value next to padding");
      check_nan_value(map, mask::KeyPadding::from_flags(valid), 4, 0);
    }
  };
  {
    INFO("Fourier");
    both(maps.fourier);
  }
  {
    INFO("Positive");
    both(maps.positive);
  }
}

TEMPLATE_TEST_CASE("A NaN or an infinity in a key or a query reaches exactly the rows that see it",
                   "[linear][nonfinite]", KERNATTN_TEST_SCALARS) {
  // One entry of key j (first, middle, last) or of query 7 is NaN, +inf or -inf. Every query that
  // sees key j, and query 7 itself, must output a whole row of NaN in both engines (the weight is
  // NaN: phi of a non-finite token, or log mu = NaN or +inf); every other row must come out
  // exactly as without the poison, so no other key of the poisoned key's tile or chunk is lost.
  // Key 10 starts a tile for tiles of 1 and 5 and lies inside a chunk of 7; key 0 starts every
  // tile and chunk, key 19 ends them.
  using T = TestType;
  constexpr Index d = 6, dv = 3, n = 20, poisoned_query = 7;
  const Maps<T> maps = Maps<T>::make(d, 2551);
  const ref::Problem p = batch_problem<T>(1, 1, n, n, d, dv, 2552);
  const auto check_poison = [&](const auto& map, const auto& mu, const auto& mask, bool causal) {
    using Map = std::remove_cvref_t<decltype(map)>;
    using Magnitude = std::remove_cvref_t<decltype(mu)>;
    using Mask = std::remove_cvref_t<decltype(mask)>;
    const kernattn::Attention<kernels::RandomFeature<Map>, Magnitude, Mask> exact(
        kernels::RandomFeature<Map>(map), mu, mask, kernattn::ExecutionOptions{1});
    for (const double poison :
         {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
          -std::numeric_limits<double>::infinity()}) {
      for (const Index key : {Index(-1), Index(0), Index(10), Index(19)}) {
        // key = -1: the poison is in query 7.
        CAPTURE(poison, key);
        ref::Matrix<T> Q = p.q<T>(), K = p.k<T>();
        if (key < 0)
          Q(poisoned_query, 1) = T(poison);
        else
          K(key, 2) = T(poison);
        ref::Flags nan_rows = ref::Flags::Constant(n, false);
        for (Index i = 0; i < n; ++i)
          nan_rows(i) = key < 0 ? i == poisoned_query : !causal || i >= key;
        const ref::Matrix<T> expected = exact(Q, K, p.v<T>());
        for (Index i = 0; i < n; ++i) {
          CAPTURE(i);
          REQUIRE(expected.row(i).array().isNaN().all() == bool(nan_rows(i)));
          REQUIRE(expected.row(i).allFinite() == !nan_rows(i));
        }
        for (const LinearOptions& options : linear_tilings) {
          CAPTURE(options.tile, options.chunk);
          const LinearAttention<Map, Magnitude, Mask> linear(map, mu, mask, options);
          const ref::Matrix<T> clean = linear(p.q<T>(), p.k<T>(), p.v<T>());
          const ref::Matrix<T> out = linear(Q, K, p.v<T>());
          REQUIRE(clean.allFinite());
          CHECK((out.array().isNaN() == expected.array().isNaN()).all());
          for (Index i = 0; i < n; ++i) {
            if (nan_rows(i)) continue;
            CAPTURE(i);
            CHECK(check::identical(out.row(i), clean.row(i)));
          }
          const ref::Matrix<T> a = out.array().isNaN().select(T(0), out);
          const ref::Matrix<T> b = expected.array().isNaN().select(T(0), expected);
          CHECK(relative_difference(a, b) <= identity_tolerance<T>);
        }
      }
    }
  };
  const auto both_masks = [&](const auto& map, const auto& mu) {
    {
      INFO("no mask");
      check_poison(map, mu, mask::None{}, false);
    }
    {
      INFO("causal");
      check_poison(map, mu, mask::Causal{}, true);
    }
  };
  {
    INFO("Positive");
    both_masks(maps.positive, magnitude::None{});
  }
  {
    INFO("Fourier x Lp(1.5)");
    both_masks(maps.fourier, magnitude::Lp<T>(T(1.5)));
  }
}

TEMPLATE_TEST_CASE("LinearAttention is deterministic across threads, calls and layouts", "[linear]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index B = 3, H = 2, d = 6, dv = 3, nq = 33, nk = 33;
  const Maps<T> maps = Maps<T>::make(d, 2601);
  const ref::Problem p = batch_problem<T>(B, H, nq, nk, d, dv, 2602);
  const std::vector<Index> lengths = {nk, 17, 5};
  const auto check_layouts = [&](const auto& map, const auto& mask, const auto& mask_of) {
    using Map = std::remove_cvref_t<decltype(map)>;
    using Mask = std::remove_cvref_t<decltype(mask)>;
    LinearAttention<Map, magnitude::Lp<T>, Mask> linear(map, magnitude::Lp<T>(T(3)), mask,
                                                        LinearOptions{1, 8, 5});
    const ref::Matrix<T> one = linear(p.q<T>(), p.k<T>(), p.v<T>(), {B, H});
    const ref::Matrix<T> again = linear(p.q<T>(), p.k<T>(), p.v<T>(), {B, H});
    linear.set_threads(2);
    CHECK(linear.options().threads == 2);
    const ref::Matrix<T> two = linear(p.q<T>(), p.k<T>(), p.v<T>(), {B, H});
    CHECK(one.allFinite());
    CHECK(check::identical(one, again));
    CHECK(check::identical(one, two));
    // Nor does what the thread computed before change a bit: the same call on a fresh thread,
    // and on a fresh thread after a call of another shape (no assertions on those threads:
    // Catch2's are not thread-safe).
    linear.set_threads(1);
    const ref::Problem other = batch_problem<T>(1, 1, 31, 45, d, 5, 2603);
    ref::Matrix<T> fresh, other_out, after_other;
    std::thread([&] { fresh = linear(p.q<T>(), p.k<T>(), p.v<T>(), {B, H}); }).join();
    std::thread([&] {
      other_out = LinearAttention<Map, magnitude::Lp<T>, mask::None>(
          map, magnitude::Lp<T>(T(3)), {}, LinearOptions{1, 300, 77})(other.q<T>(), other.k<T>(),
                                                                      other.v<T>());
      after_other = linear(p.q<T>(), p.k<T>(), p.v<T>(), {B, H});
    }).join();
    CHECK(other_out.allFinite());
    CHECK(check::identical(fresh, one));
    CHECK(check::identical(after_other, one));
    for (Index b = 0; b < B; ++b)
      for (Index h = 0; h < H; ++h) {
        CAPTURE(b, h);
        const ref::Matrix<T> Q = p.q<T>().block(b * nq, h * d, nq, d);
        const ref::Matrix<T> K = p.k<T>().block(b * nk, h * d, nk, d);
        const ref::Matrix<T> V = p.v<T>().block(b * nk, h * dv, nk, dv);
        const LinearAttention<Map, magnitude::Lp<T>, decltype(mask_of(b))> single(
            map, magnitude::Lp<T>(T(3)), mask_of(b), LinearOptions{1, 8, 5});
        CHECK(check::identical(single(Q, K, V), one.block(b * nq, h * dv, nq, dv)));
      }
  };
  const auto for_masks = [&](const auto& map) {
    {
      INFO("key padding");
      check_layouts(map, mask::KeyPadding::from_lengths(lengths), [&](Index b) {
        return mask::KeyPadding::from_lengths({lengths[std::size_t(b)]});
      });
    }
    {
      INFO("causal && key padding");
      check_layouts(map, mask::Causal{} && mask::KeyPadding::from_lengths(lengths), [&](Index b) {
        return mask::Causal{} && mask::KeyPadding::from_lengths({lengths[std::size_t(b)]});
      });
    }
  };
  {
    INFO("Fourier");
    for_masks(maps.fourier);
  }
  {
    INFO("Positive");
    for_masks(maps.positive);
  }
}

TEST_CASE("LinearAttention rejects bad options, dimensions and shapes", "[linear]") {
  using Map = features::Fourier<float>;
  const Map map = Map::draw(spectral::Gaussian<float>(), 8, 4, RandomStream{1, 0});
  using Linear = LinearAttention<Map>;
  const auto rejects = [&](LinearOptions options, const std::string& fragment) {
    REQUIRE_THROWS_AS(Linear(map, {}, {}, options), kernattn::InvalidArgument);
    REQUIRE_THROWS_AS(Linear(map, {}, {}, options), std::invalid_argument);
    REQUIRE_THROWS_WITH(Linear(map, {}, {}, options), message_contains(fragment));
  };
  rejects({0, 0, 64, 1e-3}, "tile must be >= 1, got 0");
  rejects({0, 256, 0, 1e-3}, "chunk must be >= 1, got 0");
  rejects({0, 256, 64, 0.0}, "denominator_floor must lie in (0, 1], got 0");
  rejects({0, 256, 64, 1.5}, "denominator_floor must lie in (0, 1], got 1.5");
  rejects({0, 256, 64, -1e-3}, "denominator_floor must lie in (0, 1]");
  rejects({0, 256, 64, std::numeric_limits<double>::quiet_NaN()}, "denominator_floor");
  rejects({-1, 256, 64, 1e-3}, "threads must be >= 0");
  Linear linear(map);
  REQUIRE_THROWS_WITH(linear.set_threads(-2), message_contains("threads must be >= 0"));
  CHECK(linear.options().threads == 0);  // unchanged by the failed call

  const ref::Matrix<float> Q = ref::normal(5, 4, 2701).cast<float>();
  const ref::Matrix<float> K = ref::normal(7, 4, 2702).cast<float>();
  const ref::Matrix<float> V = ref::normal(7, 3, 2703).cast<float>();
  CHECK(linear(Q, K, V).allFinite());
  SECTION("head dimension != the map's input dimension") {
    const ref::Matrix<float> Q6 = ref::normal(5, 6, 2704).cast<float>();
    const ref::Matrix<float> K6 = ref::normal(7, 6, 2705).cast<float>();
    REQUIRE_THROWS_AS(linear(Q6, K6, V), kernattn::InvalidArgument);
    REQUIRE_THROWS_WITH(linear(Q6, K6, V), message_contains("the head dimension is 6"));
    REQUIRE_THROWS_WITH(linear(Q6, K6, V), message_contains("takes d = 4"));
    // Two heads of 4 in 8 columns are right; two heads of 3 in 6 are not.
    const ref::Matrix<float> Q8 = ref::normal(5, 8, 2706).cast<float>();
    const ref::Matrix<float> K8 = ref::normal(7, 8, 2707).cast<float>();
    const ref::Matrix<float> V6 = ref::normal(7, 6, 2708).cast<float>();
    CHECK(linear(Q8, K8, V6, {1, 2}).allFinite());
    REQUIRE_THROWS_WITH(linear(Q6, K6, V6, {1, 2}), message_contains("the head dimension is 3"));
  }
  SECTION("shape mismatches") {
    REQUIRE_THROWS_AS(linear(Q, ref::Matrix<float>(ref::normal(7, 5, 1).cast<float>()), V),
                      kernattn::InvalidArgument);
    REQUIRE_THROWS_WITH(linear(Q, ref::Matrix<float>(ref::normal(7, 5, 1).cast<float>()), V),
                        message_contains("K has 5 columns but Q has 4"));
    REQUIRE_THROWS_WITH(linear(Q, K, ref::Matrix<float>(ref::normal(6, 3, 1).cast<float>())),
                        message_contains("V has 6 rows but K has 7"));
    REQUIRE_THROWS_WITH(linear(Q, K, V, {2, 1}), message_contains("multiple of 2 rows"));
    REQUIRE_THROWS_WITH(linear(Q, K, V, {0, 1}),
                        message_contains("sequences and heads must be >= 1"));
    ref::Matrix<float> out(4, 3);
    REQUIRE_THROWS_WITH(linear.compute(Q, K, V, out), message_contains("out is 4x3"));
  }
  SECTION("masks bound to a wrong shape") {
    const LinearAttention<Map, magnitude::None, mask::KeyPadding> padded(
        map, {}, mask::KeyPadding::from_lengths({8}));
    REQUIRE_THROWS_WITH(padded(Q, K, V), message_contains("valid length 8 exceeds the 7 keys"));
    const LinearAttention<Map, magnitude::None, mask::KeyPadding> flagged(
        map, {}, mask::KeyPadding::from_flags(ref::Flags::Constant(6, true)));
    REQUIRE_THROWS_WITH(flagged(Q, K, V), message_contains("6 valid flags"));
  }
}
