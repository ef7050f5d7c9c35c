// LinearAttention under hostile input (docs/math.md, section 5; docs/robustness.md): magnitudes
// far beyond the float range, queries that see no key, Positive features that barely meet the
// keys', non-finite keys, values and queries (padded or visible, in every tiling), and bad
// options, dimensions and shapes. Built by the sanitizer preset as well (docs/portability.md).
//
// Tolerances.
//  - Engine against engine: <= 1e-4 (float) and <= 1e-10 (double) of the largest output. Both
//    engines form the same weights and differ only in the order of their sums: the exact engine
//    sums w_ij v_j over keys, the linear one phi(q)^T (sum_j psi(k_j) v_j^T), an (N_k + 2M)-term
//    computation whose worst-case error (N_k + 2M) u sum_j mu_j |v_j| / den_i is ~5e-4 of the
//    output in float at the sizes used here (den_i >= 0.05 Z_i is asserted in check_engines);
//    rounding errors add up as a random walk, ~sqrt(N_k + 2M) u ~ 1e-6, so the limits leave a
//    factor ~100 in float and ~1e4 in double (u = 1.1e-16).
//  - Against the naive reference: a first-order bound derived per output entry from the data (see
//    NaiveMap::pair_error and naive_attention in tests/support/linear_reference.hpp), required to
//    be informative (check::require_matches: <= 1e-3 of the output scale in float, 1e-9 in
//    double).
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "catch.hpp"
#include "linear_reference.hpp"
#include "reference.hpp"

namespace test_linear_attention_hostile {

namespace features = kernattn::features;
namespace spectral = kernattn::spectral;
using kernattn::LinearAttention;
using kernattn::LinearOptions;
using kernattn::random::RandomStream;

namespace {

using namespace linear_ref;
using ref::MatrixXd;
using ref::Row;
using ref::VectorXd;

}  // namespace

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
      const LinearAttention<Map, magnitude::None, mask::Causal> linear(
          map, {}, {}, LinearOptions{.query_tile = 3, .key_tile = 3, .causal_chunk = 4});
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
      CAPTURE(options.query_tile, options.key_tile, options.causal_chunk);
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
      CAPTURE(options.query_tile, options.key_tile, options.causal_chunk);
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
          CAPTURE(options.query_tile, options.key_tile, options.causal_chunk);
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

TEST_CASE("LinearAttention rejects bad options, dimensions and shapes", "[linear]") {
  using Map = features::Fourier<float>;
  const Map map = Map::draw(spectral::Gaussian<float>(), 8, 4, RandomStream{1, 0});
  using Linear = LinearAttention<Map>;
  const auto rejects = [&](LinearOptions options, const std::string& fragment) {
    REQUIRE_THROWS_AS(Linear(map, {}, {}, options), kernattn::InvalidArgument);
    REQUIRE_THROWS_AS(Linear(map, {}, {}, options), std::invalid_argument);
    REQUIRE_THROWS_WITH(Linear(map, {}, {}, options), message_contains(fragment));
  };
  rejects({.query_tile = 0}, "LinearOptions: query_tile must be >= 1, got 0");
  rejects({.key_tile = 0}, "LinearOptions: key_tile must be >= 1, got 0");
  rejects({.causal_chunk = 0}, "LinearOptions: causal_chunk must be >= 1, got 0");
  rejects({.denominator_floor = 0.0}, "denominator_floor must lie in (0, 1], got 0");
  rejects({.denominator_floor = 1.5}, "denominator_floor must lie in (0, 1], got 1.5");
  rejects({.denominator_floor = -1e-3}, "denominator_floor must lie in (0, 1]");
  rejects({.denominator_floor = std::numeric_limits<double>::quiet_NaN()}, "denominator_floor");
  rejects({.threads = -1}, "LinearOptions: threads must be >= 0");
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

}  // namespace test_linear_attention_hostile
