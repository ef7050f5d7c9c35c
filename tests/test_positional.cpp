// Positional attention (docs/math.md, section 4): the product kernel kappa_F(f_q, f_k) kappa_T(t_q,
// t_k) with a magnitude of the key features, against the naive double kernel smoother of
// tests/support/reference.hpp (tests/support/positional_reference.hpp writes out the product);
// constant positions, batch x heads, thread counts and bad input. The sinusoidal encoding:
// test_positional_sinusoidal.cpp.
#include <cmath>
#include <optional>
#include <type_traits>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "kernattn/attention/positional.hpp"
#include "kernattn/attention/sinusoidal.hpp"
#include "positional_reference.hpp"
#include "reference.hpp"

namespace test_positional {

namespace {

using namespace positional_ref;
using ref::MatrixXd;
using ref::Row;

/// The Lp magnitudes tried with every pair: p = 2 with the default gamma 1/(2 sqrt(d)) (of the
/// feature dimension d), p = 1 and p = 3 with other gammas and exponents.
struct LpCase {
  double p;
  std::optional<double> gamma;
  double exponent;
};
const std::vector<LpCase> lp_cases = {{2, std::nullopt, 2}, {1, 0.3, 2}, {3, -0.2, 1.5}};

/// Compares PositionalAttention<KF, KT> with no magnitude and with each Lp case, without a mask
/// and causal, in every kernel tiling, with the reference of the product of `feature` and
/// `position`.
template <class T, class KF, class KT>
void check_pair(const Positional& p, const KF& kf, const KT& kt, const ref::KernelModel& feature,
                const ref::KernelModel& position) {
  constexpr double u = ref::unit_roundoff<T>;
  const auto with_mask = [&](const auto& visibility, const ref::Visibility& visible) {
    const ref::Reference unit =
        expected_output(p, feature, position, ref::unit_magnitude(), visible, u);
    for (const kernattn::ExecutionOptions& options : check::kernel_tilings) {
      CAPTURE(options.query_tile, options.key_tile);
      check::require_matches<T>(run<T>(p, kf, kt, magnitude::None{}, visibility, options), unit);
    }
    for (const LpCase& c : lp_cases) {
      CAPTURE(c.p, c.exponent);
      const std::optional<T> gamma_t = c.gamma ? std::optional<T>(T(*c.gamma)) : std::nullopt;
      const double gamma = gamma_t ? double(*gamma_t) : ref::default_gamma(D);
      const ref::Reference expected =
          expected_output(p, feature, position, ref::lp(c.p, gamma, c.exponent), visible, u);
      const magnitude::Lp<T> mu(T(c.p), gamma_t, T(c.exponent));
      for (const kernattn::ExecutionOptions& options : check::kernel_tilings) {
        CAPTURE(options.query_tile, options.key_tile);
        check::require_matches<T>(run<T>(p, kf, kt, mu, visibility, options), expected);
      }
    }
  };
  {
    INFO("no mask");
    with_mask(mask::None{}, ref::all_visible(Nq, Nk));
  }
  {
    INFO("causal");
    with_mask(mask::Causal{}, ref::causal(Nq, Nk));
  }
}

/// The default lengthscale n^(1/4) for dimension n.
double default_lengthscale(Index n) { return std::pow(double(n), 0.25); }

}  // namespace

TEMPLATE_TEST_CASE(
    "Positional attention weighs by the element-wise product of the two kernels' weights",
    "[positional]", float, double) {
  using T = TestType;
  SECTION("Exponential x Rbf, defaults: scale 1/sqrt(d), variance sqrt(dt)") {
    check_pair<T>(problem<T>(1101), kernels::Exponential<T>(), kernels::Rbf<T>(),
                  ref::exponential(default_scale(D)), ref::rbf(default_variance(Dt)));
  }
  SECTION("Rbf x Rbf with different variances, N(0, 0.25) positions") {
    check_pair<T>(problem<T>(1102, false), kernels::Rbf<T>(T(2.5)), kernels::Rbf<T>(T(0.75)),
                  ref::rbf(double(T(2.5))), ref::rbf(0.75));
  }
  SECTION("Matern32 (default lengthscale d^(1/4)) x Rbf") {
    check_pair<T>(problem<T>(1103), kernels::Matern32<T>(), kernels::Rbf<T>(T(1.3)),
                  ref::matern(3, default_lengthscale(D)), ref::rbf(double(T(1.3))));
  }
  SECTION("Laplacian x Exponential (default scale 1/sqrt(dt)), N(0, 0.25) positions") {
    check_pair<T>(problem<T>(1104, false), kernels::Laplacian<T>(T(1.5)), kernels::Exponential<T>(),
                  ref::matern(1, 1.5), ref::exponential(default_scale(Dt)));
  }
  SECTION("Exponential x Matern52 (default lengthscale dt^(1/4)): a distance position kernel") {
    check_pair<T>(problem<T>(1105), kernels::Exponential<T>(T(0.4)), kernels::Matern52<T>(),
                  ref::exponential(double(T(0.4))), ref::matern(5, default_lengthscale(Dt)));
  }
  SECTION("Matern32 x RationalQuadratic: two distance kernels") {
    check_pair<T>(problem<T>(1106), kernels::Matern32<T>(T(1.25)),
                  kernels::RationalQuadratic<T>(T(2)), ref::matern(3, 1.25),
                  ref::rational_quadratic(2, default_lengthscale(Dt)));
  }
}

TEMPLATE_TEST_CASE("Distance position kernels are accurate for non-integer positions far from 0",
                   "[positional][distance]", float, double) {
  // Positions t = 1000.3 + 0.37 j, one column (as for ALiBi-like distances): every |t_q - t_k| is
  // small next to |t|, where t_q^2 + t_k^2 - 2 t_q t_k cancels, and the queries are the last Nq
  // tokens, so each meets its own position (r = 0). The engine recomputes those squared distances
  // directly: the reference's bound holds, with the usual informative limit.
  using T = TestType;
  Positional p = problem<T>(1181);
  p.Tk = MatrixXd(Nk, 1);
  for (Index j = 0; j < Nk; ++j) p.Tk(j, 0) = 1000.3 + 0.37 * double(j);
  p.Tk = in<T>(p.Tk);
  p.Tq = p.Tk.bottomRows(Nq);
  SECTION("Exponential x Laplacian, lengthscale 2") {
    check_pair<T>(p, kernels::Exponential<T>(), kernels::Laplacian<T>(T(2)),
                  ref::exponential(default_scale(D)), ref::matern(1, 2.0));
  }
  SECTION("Matern32 x RationalQuadratic, lengthscale 3") {
    check_pair<T>(p, kernels::Matern32<T>(), kernels::RationalQuadratic<T>(T(1), T(3)),
                  ref::matern(3, default_lengthscale(D)), ref::rational_quadratic(1, 3.0));
  }
}

TEMPLATE_TEST_CASE("The product kernel's value is the product of the two kernels' values",
                   "[positional]", float, double) {
  using T = TestType;
  constexpr double u = ref::unit_roundoff<T>;
  const ref::Problem joined = problem<T>(1151).joined();
  const auto compare = [&](const auto& kernel, const ref::KernelModel& feature,
                           const ref::KernelModel& position) {
    Index failures = 0;
    for (Index i = 0; i < Nq; ++i)
      for (Index j = 0; j < Nk; ++j) {
        const Row q = joined.Q.row(i), k = joined.K.row(j);
        const Row fq = q.head(D), fk = k.head(D), tq = q.tail(Dt), tk = k.tail(Dt);
        const double exact = std::exp(feature.value(fq, fk)) * std::exp(position.value(tq, tk));
        // Each factor's log errs by its model's bound, then exp and the product add 3u.
        const double bound = exact * (feature.error(fq, fk, u) + position.error(tq, tk, u) + 3 * u);
        const double got = kernel(joined.Q.row(i).cast<T>(), joined.K.row(j).cast<T>());
        if (!(std::abs(got - exact) <= bound)) ++failures;
      }
    CHECK(failures == 0);
  };
  compare(kernels::Product<kernels::Exponential<T>, kernels::Rbf<T>>({}, {}, Dt),
          ref::exponential(default_scale(D)), ref::rbf(default_variance(Dt)));
  compare(kernels::Product<kernels::Matern32<T>, kernels::RationalQuadratic<T>>(
              {}, kernels::RationalQuadratic<T>(T(2)), Dt),
          ref::matern(3, default_lengthscale(D)),
          ref::rational_quadratic(2, default_lengthscale(Dt)));
}

TEMPLATE_TEST_CASE("A constant position kernel leaves feature attention unchanged", "[positional]",
                   float, double) {
  // kappa_T(t, t) is the same for every pair, so it cancels in the normalisation.
  using T = TestType;
  constexpr double u = ref::unit_roundoff<T>;
  Positional p = problem<T>(1201);
  p.Tq = sinusoidal<T>(1, 7).replicate(Nq, 1);
  p.Tk = sinusoidal<T>(1, 7).replicate(Nk, 1);
  const ref::Problem features{p.Fq, p.Fk, p.V};
  const ref::Visibility visible = ref::causal(Nq, Nk);
  const double gamma = ref::default_gamma(D);
  const ref::MagnitudeModel mu = ref::lp(3, gamma, 2);
  const auto compare = [&](const auto& kf, const auto& kt, const ref::KernelModel& feature,
                           const ref::KernelModel& position) {
    const kernattn::ExecutionOptions options{0, 16, 24};
    const ref::Matrix<T> positional =
        run<T>(p, kf, kt, magnitude::Lp<T>(T(3)), mask::Causal{}, options);
    const kernattn::Attention<std::remove_cvref_t<decltype(kf)>, magnitude::Lp<T>, mask::Causal>
        plain(kf, magnitude::Lp<T>(T(3)), {}, options);
    const ref::Matrix<T> alone = plain(p.Fq.cast<T>(), p.Fk.cast<T>(), p.V.cast<T>());
    const ref::Reference with_positions = expected_output(p, feature, position, mu, visible, u);
    const ref::Reference without = ref::attention(features, feature, mu, visible, u);
    check::require_matches<T>(positional, with_positions);
    check::require_matches<T>(alone, without);
    // Both references are the same exact output; each result lies within its own bound of it.
    check::require_close(positional, alone, with_positions.bound + without.bound);
  };
  SECTION("Exponential x Rbf") {
    compare(kernels::Exponential<T>(), kernels::Rbf<T>(), ref::exponential(default_scale(D)),
            ref::rbf(default_variance(Dt)));
  }
  SECTION("Laplacian x Matern32") {
    compare(kernels::Laplacian<T>(), kernels::Matern32<T>(), ref::matern(1, default_lengthscale(D)),
            ref::matern(3, default_lengthscale(Dt)));
  }
}

TEMPLATE_TEST_CASE("Positional batch x heads equals attending each sequence and head separately",
                   "[positional][batch]", float, double) {
  using T = TestType;
  constexpr Index B = 2, H = 3;
  constexpr double u = ref::unit_roundoff<T>;
  // Sequence b: rows [b N, (b+1) N) of every argument, its positions included; head h: feature
  // columns [h D, (h+1) D) and value columns [h Dv, (h+1) Dv); the positions are every head's.
  Positional p{in<T>(ref::normal(B * Nq, H * D, 1301)), MatrixXd(B * Nq, Dt),
               in<T>(ref::normal(B * Nk, H * D, 1302)), MatrixXd(B * Nk, Dt),
               in<T>(ref::normal(B * Nk, H * Dv, 1303))};
  for (Index b = 0; b < B; ++b) {
    p.Tq.middleRows(b * Nq, Nq) = sinusoidal<T>(Nq, Nk - Nq + 3 * b);
    p.Tk.middleRows(b * Nk, Nk) = sinusoidal<T>(Nk, 3 * b);
  }
  const kernels::Matern32<T> kf;
  const kernels::Rbf<T> kt;
  const magnitude::Lp<T> mu(T(2));
  const kernattn::ExecutionOptions options{0, 5, 7};
  const ref::Matrix<T> batched = run<T>(p, kf, kt, mu, mask::Causal{}, options, {B, H});

  const ref::KernelModel feature = ref::matern(3, default_lengthscale(D));
  const ref::KernelModel position = ref::rbf(default_variance(Dt));
  const ref::MagnitudeModel mu_model = ref::lp(2, ref::default_gamma(D), 2);
  ref::Reference expected{MatrixXd(B * Nq, H * Dv), MatrixXd(B * Nq, H * Dv)};
  ref::Matrix<T> blockwise(B * Nq, H * Dv);
  for (Index b = 0; b < B; ++b)
    for (Index h = 0; h < H; ++h) {
      const Positional one{p.Fq.block(b * Nq, h * D, Nq, D), p.Tq.middleRows(b * Nq, Nq),
                           p.Fk.block(b * Nk, h * D, Nk, D), p.Tk.middleRows(b * Nk, Nk),
                           p.V.block(b * Nk, h * Dv, Nk, Dv)};
      const ref::Reference r =
          expected_output(one, feature, position, mu_model, ref::causal(Nq, Nk), u);
      expected.out.block(b * Nq, h * Dv, Nq, Dv) = r.out;
      expected.bound.block(b * Nq, h * Dv, Nq, Dv) = r.bound;
      blockwise.block(b * Nq, h * Dv, Nq, Dv) = run<T>(one, kf, kt, mu, mask::Causal{}, options);
    }
  check::require_matches<T>(batched, expected);
  check::require_close(batched, blockwise, 2 * expected.bound);

  SECTION("Attention<Product, FeaturePart> on the inputs [F_h | T] is the same computation") {
    ref::Matrix<T> Q(B * Nq, H * (D + Dt)), K(B * Nk, H * (D + Dt));
    for (Index h = 0; h < H; ++h) {
      Q.middleCols(h * (D + Dt), D) = p.Fq.middleCols(h * D, D).cast<T>();
      Q.middleCols(h * (D + Dt) + D, Dt) = p.Tq.cast<T>();
      K.middleCols(h * (D + Dt), D) = p.Fk.middleCols(h * D, D).cast<T>();
      K.middleCols(h * (D + Dt) + D, Dt) = p.Tk.cast<T>();
    }
    const kernattn::Attention<kernels::Product<kernels::Matern32<T>, kernels::Rbf<T>>,
                              magnitude::FeaturePart<magnitude::Lp<T>>, mask::Causal>
        direct({kf, kt, Dt}, {mu, Dt}, {}, options);
    CHECK(check::identical(direct(Q, K, p.V.cast<T>(), {B, H}), batched));
  }
}

TEMPLATE_TEST_CASE("Positional attention is bit-identical for every thread count",
                   "[positional][threads]", float, double) {
  // 2 sequences x 3 heads x 5 query tiles, causal: uneven work for the threads.
  using T = TestType;
  const ref::Matrix<T> Fq = ref::normal(2 * 70, 3 * 8, 1401).cast<T>();
  const ref::Matrix<T> Fk = ref::normal(2 * 70, 3 * 8, 1402).cast<T>();
  const ref::Matrix<T> V = ref::normal(2 * 70, 3 * 4, 1403).cast<T>();
  const ref::Matrix<T> positions = kernattn::sinusoidal_positions<T>(70, 4).replicate(2, 1);
  const auto outputs_for = [&](const auto& kf, const auto& kt) {
    std::vector<ref::Matrix<T>> outputs;
    for (const int threads : {1, 2, 3, 0}) {
      kernattn::PositionalAttention attention(kf, kt, magnitude::Lp<T>(T(3)), mask::Causal{},
                                              kernattn::ExecutionOptions{threads, 16, 32});
      outputs.push_back(attention(Fq, positions, Fk, positions, V, {2, 3}));
      CHECK(attention.options().threads == threads);
    }
    return outputs;
  };
  SECTION("Exponential x Rbf") {
    const auto outputs = outputs_for(kernels::Exponential<T>(), kernels::Rbf<T>());
    for (const auto& out : outputs) CHECK(check::identical(out, outputs.front()));
    CHECK(outputs.front().allFinite());
  }
  SECTION("Matern52 x Laplacian") {
    const auto outputs = outputs_for(kernels::Matern52<T>(), kernels::Laplacian<T>());
    for (const auto& out : outputs) CHECK(check::identical(out, outputs.front()));
    CHECK(outputs.front().allFinite());
  }
  SECTION("set_threads") {
    kernattn::PositionalAttention<kernels::Exponential<T>, kernels::Rbf<T>> attention(
        {}, {}, {}, {}, kernattn::ExecutionOptions{1, 16, 32});
    const ref::Matrix<T> one = attention(Fq, positions, Fk, positions, V, {2, 3});
    const ref::Matrix<T> two = attention.set_threads(2)(Fq, positions, Fk, positions, V, {2, 3});
    CHECK(attention.options().threads == 2);
    CHECK(check::identical(one, two));
  }
}

TEST_CASE("Positional attention rejects bad input with the argument and shapes named",
          "[positional][errors]") {
  using Matrix = ref::Matrix<float>;
  const auto random = [](Index rows, Index cols) {
    return Matrix(ref::normal(rows, cols, 1601).cast<float>());
  };
  const kernattn::PositionalAttention<kernels::Exponential<float>, kernels::Rbf<float>> attention;
  const Matrix Fq = random(5, 8), Tq = random(5, 3), Fk = random(7, 8), Tk = random(7, 3),
               V = random(7, 4);
  REQUIRE(attention(Fq, Tq, Fk, Tk, V).allFinite());
  SECTION("positions") {
    REQUIRE_INVALID_ARGUMENT(
        attention(Fq, random(4, 3), Fk, Tk, V),
        "Tq has 4 rows but Fq has 5 (one position per query): Fq is 5x8, Tq is 4x3");
    REQUIRE_INVALID_ARGUMENT(
        attention(Fq, Tq, Fk, random(6, 3), V),
        "Tk has 6 rows but Fk has 7 (one position per key): Fk is 7x8, Tk is 6x3");
    REQUIRE_INVALID_ARGUMENT(attention(Fq, Tq, Fk, random(7, 2), V),
                             "Tk has 2 columns but Tq has 3");
    REQUIRE_INVALID_ARGUMENT(attention(Fq, Tq, Fk, random(7, 2), V), "Tq is 5x3, Tk is 7x2");
    REQUIRE_INVALID_ARGUMENT(attention(Fq, random(5, 0), Fk, random(7, 0), V),
                             "Tq is 5x0: the position dimension must be at least 1");
  }
  SECTION("features, values and out") {
    REQUIRE_INVALID_ARGUMENT(attention(Fq, Tq, random(7, 6), Tk, V),
                             "Fk has 6 columns but Fq has 8");
    REQUIRE_INVALID_ARGUMENT(attention(Fq, Tq, Fk, Tk, random(6, 4)),
                             "V has 6 rows but Fk has 7 (one value per key): Fk is 7x8, V is 6x4");
    REQUIRE_INVALID_ARGUMENT(attention(random(5, 0), Tq, random(7, 0), Tk, V),
                             "the head dimension d must be at least 1");
    REQUIRE_INVALID_ARGUMENT(attention(Fq, Tq, Fk, Tk, V, {1, 3}),
                             "must have a multiple of 3 columns for 3 heads");
    REQUIRE_INVALID_ARGUMENT(attention(Fq, Tq, Fk, Tk, V, {2, 1}),
                             "must have a multiple of 2 rows for 2 sequences");
    REQUIRE_INVALID_ARGUMENT(attention(Fq, Tq, Fk, Tk, V, {0, 1}),
                             "BatchLayout: sequences and heads must be >= 1");
    Matrix out(5, 3);
    REQUIRE_INVALID_ARGUMENT(attention.compute(Fq, Tq, Fk, Tk, V, out),
                             "out is 5x3 but the attention output is 5x4");
  }
  SECTION("the product kernel and the feature magnitude on inputs without a feature column") {
    REQUIRE_INVALID_ARGUMENT(
        (kernels::Product<kernels::Rbf<float>, kernels::Rbf<float>>({}, {}, 0)),
        "Product: the position dimension must be >= 1, got 0");
    REQUIRE_INVALID_ARGUMENT((magnitude::FeaturePart<magnitude::None>({}, 0)),
                             "FeaturePart: the position dimension must be >= 1, got 0");
    const kernattn::Attention<kernels::Product<kernels::Exponential<float>, kernels::Rbf<float>>>
        direct({{}, {}, 3});
    REQUIRE_INVALID_ARGUMENT(direct(Tq, Tk, V),
                             "Product: inputs have 3 columns but the last 3 are positions");
    const magnitude::FeaturePart<magnitude::Lp<float>> mu(magnitude::Lp<float>(2.0f), 3);
    REQUIRE_INVALID_ARGUMENT(mu.log_magnitude(Eigen::RowVector3d(1, 2, 3)),
                             "FeaturePart: a key has 3 columns but the last 3 are positions");
  }
  SECTION("sinusoidal positions") {
    REQUIRE_INVALID_ARGUMENT(kernattn::sinusoidal_positions<float>(4, 0),
                             "sinusoidal_positions: dimension must be >= 1, got 0");
    REQUIRE_INVALID_ARGUMENT(kernattn::sinusoidal_positions<float>(-1, 4),
                             "sinusoidal_positions: tokens must be >= 0, got -1");
    REQUIRE_INVALID_ARGUMENT(kernattn::sinusoidal_positions<float>(4, 4, 0.0),
                             "sinusoidal_positions: base must be a finite number > 0");
    REQUIRE_INVALID_ARGUMENT(kernattn::sinusoidal_positions<float>(4, 4, std::nan("")),
                             "sinusoidal_positions: base must be a finite number > 0");
  }
}

}  // namespace test_positional
