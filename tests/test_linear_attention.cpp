// LinearAttention (docs/math.md, section 5): the linear-time engine computes the same weights
// w_ij = phi(q_i).phi(k_j) mu(k_j) as the exact engine with kernels::RandomFeature of the same
// map, so the two agree to rounding for every map, magnitude, mask and tiling; both agree with a
// naive double-precision kernel smoother written out from the maps' frequencies
// (tests/support/linear_reference.hpp); FAVOR+ approaches softmax attention as M grows; the
// denominator guard; determinism. Hostile input (magnitudes beyond the float range, rows that see
// no key, features that barely meet, non-finite data, bad options and shapes):
// test_linear_attention_hostile.cpp.
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
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "linear_reference.hpp"
#include "reference.hpp"

namespace test_linear_attention {

namespace features = kernattn::features;
using kernattn::BatchLayout;
using kernattn::LinearAttention;
using kernattn::LinearOptions;
using kernattn::random::RandomStream;

namespace {

using namespace linear_ref;
using ref::MatrixXd;
using ref::Row;

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
  SECTION("top-left causal (PyTorch's is_causal) && key padding: Nq < Nk and Nq > Nk") {
    ref::Flags flags = ref::random_visibility(B * nk, 1, 0.7, 2009).col(0);
    for (const Index nq : {Index(20), Index(45)}) {
      CAPTURE(nq);
      const ref::Problem p = batch_problem<T>(B, H, nq, nk, d, dv, 2010);
      for_each_map(maps, [&](const auto& map, const NaiveMap& naive) {
        check_magnitudes<T>(
            p, {B, H}, map, naive, mask::CausalTopLeft{} && mask::KeyPadding::from_flags(flags),
            [&](Index b) {
              ref::Visibility visible = ref::valid_keys(nq, flags.segment(b * nk, nk));
              for (Index i = 0; i < nq; ++i)
                for (Index j = i + 1; j < nk; ++j) visible(i, j) = false;
              return visible;
            });
      });
    }
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
    const LinearOptions options{
        .query_tile = 5, .key_tile = 5, .causal_chunk = 7, .denominator_floor = tau};
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
    LinearAttention<Map, magnitude::Lp<T>, Mask> linear(
        map, magnitude::Lp<T>(T(3)), mask,
        LinearOptions{.threads = 1, .query_tile = 8, .key_tile = 8, .causal_chunk = 5});
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
          map, magnitude::Lp<T>(T(3)), {},
          LinearOptions{.threads = 1, .query_tile = 300, .key_tile = 300, .causal_chunk = 77})(
          other.q<T>(), other.k<T>(), other.v<T>());
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
            map, magnitude::Lp<T>(T(3)), mask_of(b),
            LinearOptions{.threads = 1, .query_tile = 8, .key_tile = 8, .causal_chunk = 5});
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

}  // namespace test_linear_attention
