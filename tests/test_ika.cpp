// Implicit kernel attention (docs/math.md, section 2): make_ika_reference against the official
// formula re-derived naively in double; the exact engine with RandomFeature<Fourier> against a
// naive kernel smoother for every magnitude and mask; random Fourier features of the Gaussian
// sampler converging to RBF attention; an implicit (MLP) sampler end to end; determinism of seeds
// and streams.
//
// Every comparison with a naive reference goes through ref::attention (tests/support/
// reference.hpp) with a kernel model whose error function bounds, per pair, how far the
// library's log-weight (or weight) may be from the exact one in precision u; the bounds are
// derived next to each model and required to be informative by check::require_matches.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <thread>
#include <type_traits>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "reference.hpp"

namespace test_ika {

namespace features = kernattn::features;
namespace spectral = kernattn::spectral;
using kernattn::ExecutionOptions;
using kernattn::random::RandomStream;

namespace {

using ref::MatrixXd;
using ref::Row;
using ref::VectorXd;

/// sum_i |a_i b_i|.
double abs_dot(const Row& a, const Row& b) { return (a.array() * b.array()).abs().sum(); }

/// The official IKA energy of one head (docs/math.md, section 2), written out in double:
/// energy(q, k) = log((phi1 . phi2 / (4M))^2 + 1e-5) + (|q|_p^2 + |k|_p^2) / (2 sqrt(sqrt d)),
/// phi(x) = [cos(2 pi W1^T x) + cos(2 pi W2^T x) ; sin(2 pi W1^T x) + sin(2 pi W2^T x)],
/// with W1, W2 of the official d x M layout.
///
/// Error of the library's evaluation in precision u, per pair:
///  - kappa^ = phi(q).phi(k) / 4M: each of the four cosines of frequency m moves by the errors of
///    its two phases fl(fl(2 pi) W) x, (d + 3) u sum|2 pi W x| each, so kappa^ by
///    (1/2M) sum_m (dp1(q) + dp2(q) + dp1(k) + dp2(k)); the features err by 8u M^{-1/2} and
///    the 2M-term inner product by 2M u: (2M + 32) u in all (see test_features.cpp);
///  - log(kappa^2 + eps) has slope 2|kappa| / (kappa^2 + eps) (at most 1/sqrt(eps) = 316), and
///    the square, the sum and the log add 2u + 4u |log(kappa^2 + eps)|;
///  - the key's log-magnitude gamma |k|_p^2 is computed in double and rounded (ref::lp's error
///    model); adding it to the energy and subtracting the running maximum add
///    2u (|log(kappa^2 + eps)| + |gamma |k|_p^2| + 1).
/// The query's term cancels in the softmax: the library never computes it.
struct OfficialEnergy {
  MatrixXd w1, w2;  // d x M
  double p;

  [[nodiscard]] double gamma() const { return 0.5 / std::sqrt(std::sqrt(double(w1.rows()))); }

  [[nodiscard]] double kappa(const Row& q, const Row& k) const {
    const double c = 2 * std::numbers::pi;
    double sum = 0;
    for (Index m = 0; m < w1.cols(); ++m) {
      const double a1 = c * q.dot(w1.col(m).transpose()), a2 = c * q.dot(w2.col(m).transpose());
      const double b1 = c * k.dot(w1.col(m).transpose()), b2 = c * k.dot(w2.col(m).transpose());
      sum += (std::cos(a1) + std::cos(a2)) * (std::cos(b1) + std::cos(b2)) +
             (std::sin(a1) + std::sin(a2)) * (std::sin(b1) + std::sin(b2));
    }
    return sum / (4.0 * double(w1.cols()));
  }

  [[nodiscard]] double value(const Row& q, const Row& k) const {
    const double kq = kappa(q, k);
    const double np_q = ref::p_norm(q, p), np_k = ref::p_norm(k, p);
    return std::log(kq * kq + 1e-5) + (np_q * np_q + np_k * np_k) * gamma();
  }

  /// The bound on the library's kappa^ (first item above).
  [[nodiscard]] double kappa_error(const Row& q, const Row& k, double u) const {
    const Index M = w1.cols(), d = w1.rows();
    const double c = 2 * std::numbers::pi;
    double phase = 0;
    for (Index m = 0; m < M; ++m)
      phase += double(d + 3) * u * c *
               (abs_dot(w1.col(m).transpose(), q) + abs_dot(w2.col(m).transpose(), q) +
                abs_dot(w1.col(m).transpose(), k) + abs_dot(w2.col(m).transpose(), k));
    return phase / (2.0 * double(M)) + (2.0 * double(M) + 32) * u;
  }

  [[nodiscard]] double error(const Row& q, const Row& k, double u) const {
    const double e_kappa = kappa_error(q, k, u);
    const double kq = kappa(q, k);
    const double log_score = std::abs(std::log(kq * kq + 1e-5));
    const double np_k = ref::p_norm(k, p);
    const double log_mu = gamma() * np_k * np_k;
    return 2 * (std::abs(kq) + e_kappa) / (kq * kq + 1e-5) * e_kappa + 2 * u + 4 * u * log_score +
           ref::lp(p, gamma(), 2).error(k, u) + 2 * u * (log_score + log_mu + 1);
  }

  [[nodiscard]] ref::KernelModel model() const {
    const OfficialEnergy self = *this;
    return {false, [self](const Row& q, const Row& k) { return self.value(q, k); },
            [self](const Row& q, const Row& k, double u) { return self.error(q, k, u); }};
  }
};

/// max |a - b| / max |a|: how much an output changed.
template <class A, class B>
double relative_change(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  return (a.template cast<double>() - b.template cast<double>()).cwiseAbs().maxCoeff() /
         a.template cast<double>().cwiseAbs().maxCoeff();
}

}  // namespace

TEMPLATE_TEST_CASE("make_ika_reference is the official IKA attention", "[ika]", float, double) {
  using T = TestType;
  constexpr Index d = 8, M = 16, nq = 24, nk = 32, dv = 4;
  // Official parameters: W1, W2 d x M. In double, N(0, 0.3^2): phases 2 pi W x of size ~5, so
  // kappa^ spreads over [-1, 1], near 0 too, where eps = 1e-5 matters. In float the slope
  // 2|kappa| / (kappa^2 + eps) of the log (up to 316) would multiply kappa^'s error of ~4e-6 past
  // what an informative comparison allows; N(0, 0.04^2) keeps kappa^ away from 0 there.
  const double w_sd = std::is_same_v<T, float> ? 0.04 : 0.3;
  const ref::Matrix<T> w1 = ref::normal(d, M, 3001, 0.0, w_sd).cast<T>();
  const ref::Matrix<T> w2 = ref::normal(d, M, 3002, 0.0, w_sd).cast<T>();
  const ref::Problem problem = ref::random_problem<T>(nq, nk, d, dv, 3003);
  constexpr double u = ref::unit_roundoff<T>;
  for (const double p : {1.0, 1.5, 2.0, 3.0}) {
    CAPTURE(p);
    const OfficialEnergy energy{w1.template cast<double>(), w2.template cast<double>(), p};
    {
      INFO("no mask");
      const auto attention = kernattn::make_ika_reference(w1, w2, T(p));
      const ref::Matrix<T> out = attention(problem.q<T>(), problem.k<T>(), problem.v<T>());
      check::require_matches<T>(out, ref::attention(problem, energy.model(), ref::unit_magnitude(),
                                                    ref::all_visible(nq, nk), u));
    }
    {
      INFO("causal");
      const auto attention =
          kernattn::make_ika_reference(w1, w2, T(p), mask::Causal{}, ExecutionOptions{0, 7, 5});
      const ref::Matrix<T> out = attention(problem.q<T>(), problem.k<T>(), problem.v<T>());
      check::require_matches<T>(out, ref::attention(problem, energy.model(), ref::unit_magnitude(),
                                                    ref::causal(nq, nk), u));
    }
  }
  // The kernel's pairwise value is the score (phi1.phi2 / 4M)^2 + 1e-5 (whose log the engine
  // uses): |error| <= 2 (|kappa| + e) e for kappa^'s error e, plus 4u of the score (the
  // kernel rounds its double result to T).
  {
    const OfficialEnergy energy{w1.template cast<double>(), w2.template cast<double>(), 2.0};
    const auto attention = kernattn::make_ika_reference(w1, w2, T(2));
    for (Index i = 0; i < 5; ++i)
      for (Index j = 0; j < 5; ++j) {
        const Row q = problem.Q.row(i), k = problem.K.row(j);
        const double kq = energy.kappa(q, k);
        const double e = energy.kappa_error(q, k, u + ref::u_double);
        const double score = kq * kq + 1e-5;
        const double got = double(attention.kernel()(problem.q<T>().row(i), problem.k<T>().row(j)));
        CAPTURE(i, j, score, got);
        CHECK(std::abs(got - score) <= 2 * (std::abs(kq) + e) * e + 4 * u * score);
      }
  }
  // The magnitude is the official one: gamma = 1 / (2 d^{1/4}), exponent 2.
  const magnitude::Lp<T> official = kernattn::ika_reference_magnitude(T(1.5), d);
  CHECK(official.p() == T(1.5));
  CHECK(official.exponent() == T(2));
  CHECK(std::abs(official.gamma(d) - 0.5 / std::sqrt(std::sqrt(double(d)))) <=
        4 * u * official.gamma(d));
  REQUIRE_THROWS_AS(kernattn::ika_reference_magnitude(T(2), 0), kernattn::InvalidArgument);
}

TEST_CASE("make_ika_reference names W1 and W2 as given when their shape is wrong",
          "[ika][errors]") {
  // The official layout is d x M, one frequency per column; messages name that shape, never the
  // transposed one the features are stored in.
  const ref::Matrix<float> w = ref::normal(4, 3, 3011).cast<float>();
  REQUIRE_INVALID_ARGUMENT(
      kernattn::make_ika_reference(ref::Matrix<float>(4, 0), ref::Matrix<float>(4, 0), 2.0f),
      "make_ika_reference: W1 is 4x0 but must be d x M with d >= 1 (the head "
      "dimension, rows) and M >= 1 (the number of frequencies, one per "
      "column)");
  REQUIRE_INVALID_ARGUMENT(
      kernattn::make_ika_reference(ref::Matrix<float>(0, 3), ref::Matrix<float>(0, 3), 2.0f),
      "make_ika_reference: W1 is 0x3 but must be d x M");
  REQUIRE_INVALID_ARGUMENT(kernattn::make_ika_reference(w, ref::Matrix<float>(4, 0), 2.0f),
                           "make_ika_reference: W2 is 4x0 but must have the shape of W1, 4x3");
  REQUIRE_INVALID_ARGUMENT(kernattn::make_ika_reference(w, ref::Matrix<float>(w.transpose()), 2.0f),
                           "make_ika_reference: W2 is 3x4 but must have the shape of W1, 4x3");
  CHECK(kernattn::make_ika_reference(w, w, 2.0f).kernel().feature_map().feature_dimension() == 6);
}

TEMPLATE_TEST_CASE("RandomFeature<Fourier> in the exact engine is the naive kernel smoother",
                   "[ika]", float, double) {
  using T = TestType;
  constexpr Index d = 6, M = 32, nq = 30, nk = 40, dv = 4;
  // Lengthscale 2, twice |q - k| ~ 0.25 sqrt(2d) ~ 0.9: every estimate is ~0.9, so no row's
  // directly normalised sum nears 0 (which would make the bound uninformative and fail).
  const auto map =
      features::Fourier<T>::draw(spectral::Gaussian<T>(T(2)), M, d, RandomStream{3101, 0});
  const MatrixXd omega = map.frequencies().template cast<double>();
  const kernels::RandomFeature<features::Fourier<T>> kernel(map);
  const ref::Problem p =
      ref::rounded<T>({ref::normal(nq, d, 3102, 0.0, 0.25), ref::normal(nk, d, 3103, 0.0, 0.25),
                       ref::normal(nk, dv, 3104)});
  constexpr double u = ref::unit_roundoff<T>;
  const auto check_all_masks = [&](const auto& mu, const ref::MagnitudeModel& magnitude_model) {
    const ref::KernelModel model =
        ref::fourier_model(omega, nk, ref::largest_log_magnitude(p.K, magnitude_model));
    const auto expect = [&](const ref::Visibility& visible) {
      return ref::attention(p, model, magnitude_model, visible, u);
    };
    const ExecutionOptions tiles{1, 8, 16};
    {
      INFO("no mask");
      check::require_matches<T>(check::run<T>(p, kernel, mu), expect(ref::all_visible(nq, nk)));
      check::require_matches<T>(check::run<T>(p, kernel, mu, mask::None{}, tiles),
                                expect(ref::all_visible(nq, nk)));
    }
    {
      INFO("causal");
      check::require_matches<T>(check::run<T>(p, kernel, mu, mask::Causal{}, tiles),
                                expect(ref::causal(nq, nk)));
    }
    {
      INFO("key padding");
      check::require_matches<T>(
          check::run<T>(p, kernel, mu, mask::KeyPadding::from_lengths({23}), tiles),
          expect(ref::first_keys(nq, nk, 23)));
    }
    {
      INFO("window");
      check::require_matches<T>(check::run<T>(p, kernel, mu, mask::Window(6, 2), tiles),
                                expect(ref::window(nq, nk, 6, 2)));
    }
    {
      INFO("boolean");
      ref::Visibility visible = ref::random_visibility(nq, nk, 0.4, 3105);
      visible(3, 0) = true;
      visible.row(5).setConstant(false);  // a row that sees nothing: zeros
      check::require_matches<T>(check::run<T>(p, kernel, mu, mask::Boolean(visible), tiles),
                                expect(visible));
    }
  };
  {
    INFO("no magnitude");
    check_all_masks(magnitude::None{}, ref::unit_magnitude());
  }
  for (const double power : {1.0, 1.5, 2.0, 3.0}) {
    CAPTURE(power);
    check_all_masks(magnitude::Lp<T>(T(power)), ref::lp(power, ref::default_gamma(d), 2));
  }
  {
    INFO("Lp(3), gamma = 0.4, exponent 1.5");
    check_all_masks(magnitude::Lp<T>(T(3), T(0.4), T(1.5)), ref::lp(3, double(T(0.4)), 1.5));
  }
  {
    INFO("compile-time L2");
    check_all_masks(magnitude::L2<T>(), ref::lp(2, ref::default_gamma(d), 2));
  }
}

TEST_CASE("RandomFeature<Fourier<Gaussian(l)>> converges to RBF attention of variance l^2",
          "[ika]") {
  // Random Fourier features of the Gaussian sampler estimate the RBF kernel with error
  // ~ M^{-1/2} (docs/math.md, section 2); the attention output's mean absolute error then falls by
  // sqrt(4096 / 256) = 4 from M = 256 to M = 4096. Averaged over 8 seeds; over other data seeds
  // the ratio ranged 3.8-4.5, so the band is [3, 5.5].
  constexpr Index d = 8, N = 48, dv = 4;
  constexpr double l = 1.5;
  constexpr int seeds = 8;
  const ref::Problem p{ref::normal(N, d, 3201, 0.0, 0.5), ref::normal(N, d, 3202, 0.0, 0.5),
                       ref::normal(N, dv, 3203)};
  const MatrixXd exact = check::run<double>(p, kernels::Rbf<double>(l * l));
  std::vector<double> errors;
  for (const Index M : {256, 1024, 4096}) {
    double error = 0;
    for (int s = 0; s < seeds; ++s) {
      const auto map = features::Fourier<double>::draw(spectral::Gaussian<double>(l), M, d,
                                                       RandomStream{3204, std::uint64_t(s)});
      const MatrixXd out =
          check::run<double>(p, kernels::RandomFeature<features::Fourier<double>>(map));
      REQUIRE(out.allFinite());
      error += (out - exact).cwiseAbs().mean();
    }
    errors.push_back(error / seeds);
  }
  CAPTURE(errors[0], errors[1], errors[2]);
  CHECK(errors[0] > errors[1]);
  CHECK(errors[1] > errors[2]);
  const double ratio = errors[0] / errors[2];
  CAPTURE(ratio);
  CHECK(ratio >= 3.0);
  CHECK(ratio <= 5.5);
}

TEMPLATE_TEST_CASE("An implicit MLP sampler end to end in Fourier features and attention", "[ika]",
                   float, double) {
  using T = TestType;
  constexpr Index d = 4, hidden = 8, M = 40, nq = 20, nk = 25, dv = 3;
  using Generator = spectral::MlpGenerator<T>;
  std::vector<typename Generator::Layer> layers;
  const Index widths[] = {d, hidden, hidden, d};
  for (int l = 0; l < 3; ++l)
    layers.push_back(
        {ref::normal(widths[l], widths[l + 1], 3301 + 2 * std::uint32_t(l), 0.0, 0.4).cast<T>(),
         ref::normal(widths[l + 1], 1, 3302 + 2 * std::uint32_t(l), 0.0, 0.1).col(0).cast<T>()});
  const Generator generator(layers, spectral::MlpForm::sign_symmetric);
  const ref::Matrix<T> mean_scale = ref::normal(d, 2, 3310, 0.5, 0.1).cast<T>();
  const spectral::MirroredGaussian<T> base(mean_scale.col(0), mean_scale.col(1).cwiseAbs());
  const spectral::Implicit<Generator, spectral::MirroredGaussian<T>> sampler(generator, base);
  const auto map = features::Fourier<T>::draw(sampler, M, d, RandomStream{3311, 4});
  REQUIRE(map.input_dimension() == d);
  REQUIRE(map.feature_dimension() == 2 * M);
  constexpr double u = ref::unit_roundoff<T>;

  // The frequencies are the network applied to the mirrored noise of the same stream:
  // omega = sign(z) h(|z|), h written out in double with the same (T-rounded) weights. Each
  // layer y = x W + b in T errs by (n_in + 1) u (|x| |W| + |b|) plus |W|^T of the input's error
  // (LeakyReLU is 1-Lipschitz; its slope adds u |y|), evaluated at u + u_double to cover the
  // re-derivation's own rounding.
  const MatrixXd noise =
      spectral::draw_frequencies(base, M, d, RandomStream{3311, 4}).template cast<double>();
  const MatrixXd omega = map.frequencies().template cast<double>();
  const double ue = u + ref::u_double;
  for (Index m = 0; m < M; ++m) {
    Row x = noise.row(m).cwiseAbs(), error = Row::Zero(d);
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const MatrixXd W = layers[l].weights.template cast<double>();
      const Row b = layers[l].bias.transpose().template cast<double>();
      Row y = x * W + b;
      error = error * W.cwiseAbs() +
              double(W.rows() + 1) * ue * (x.cwiseAbs() * W.cwiseAbs() + b.cwiseAbs());
      if (l + 1 < layers.size()) {
        for (Index c = 0; c < y.size(); ++c)
          if (y(c) <= 0) y(c) *= double(T(0.2));
        error += ue * y.cwiseAbs();
      }
      x = y;
    }
    const Row expected = x.array() * noise.row(m).array().sign();
    CAPTURE(m);
    CHECK(((omega.row(m) - expected).cwiseAbs().array() <= error.array()).all());
  }

  // Attention with those frequencies equals the naive smoother with the same frequencies.
  const ref::Problem p =
      ref::rounded<T>({ref::normal(nq, d, 3312, 0.0, 0.1), ref::normal(nk, d, 3313, 0.0, 0.1),
                       ref::normal(nk, dv, 3314)});
  const kernels::RandomFeature<features::Fourier<T>> kernel(map);
  const ref::MagnitudeModel magnitude_model = ref::lp(1.5, ref::default_gamma(d), 2);
  const ref::KernelModel model =
      ref::fourier_model(omega, nk, ref::largest_log_magnitude(p.K, magnitude_model));
  check::require_matches<T>(check::run<T>(p, kernel, magnitude::Lp<T>(T(1.5)), mask::Causal{}),
                            ref::attention(p, model, magnitude_model, ref::causal(nq, nk), u));
  check::require_matches<T>(
      check::run<T>(p, kernel),
      ref::attention(p, model, ref::unit_magnitude(), ref::all_visible(nq, nk), u));
}

TEMPLATE_TEST_CASE("IKA outputs are a function of the seed and stream alone", "[ika]", float,
                   double) {
  using T = TestType;
  constexpr Index B = 2, H = 2, d = 6, M = 12, N = 40, dv = 3;
  const ref::Problem p =
      ref::rounded<T>({ref::normal(B * N, H * d, 3401), ref::normal(B * N, H * d, 3402),
                       ref::normal(B * N, H * dv, 3403)});
  const spectral::Gaussian<T> sampler(T(4));
  // Official layout d x M from (seed, stream).
  const auto official = [&](std::uint64_t stream) {
    return ref::Matrix<T>(
        spectral::draw_frequencies(sampler, M, d, RandomStream{3404, stream}).transpose());
  };
  const auto ika_output = [&](std::uint64_t stream, int threads) {
    auto attention = kernattn::make_ika_reference(official(stream), official(stream + 100), T(1.5),
                                                  mask::Causal{}, ExecutionOptions{1, 16, 8});
    attention.set_threads(threads);
    return ref::Matrix<T>(attention(p.q<T>(), p.k<T>(), p.v<T>(), {B, H}));
  };
  const ref::Matrix<T> one = ika_output(0, 1);
  CHECK(one.allFinite());
  CHECK(check::identical(one, ika_output(0, 1)));
  CHECK(check::identical(one, ika_output(0, 2)));
  CHECK_FALSE(check::identical(one, ika_output(1, 1)));
  CHECK(relative_change(one, ika_output(1, 2)) > 1e-3);

  // "Bit-identical for every thread count" needs a result that does not depend on what the
  // thread computed before (each thread keeps its own engine buffers): the same call on a fresh
  // thread, and on a fresh thread after a call of another shape (31 queries, 5 value columns,
  // default tiles).
  // (No assertion runs on the helper threads: Catch2's are not thread-safe.)
  const ref::Problem other = ref::rounded<T>(
      {ref::normal(31, d, 3406), ref::normal(40, d, 3407), ref::normal(40, 5, 3408)});
  const auto other_attention = kernattn::make_ika_reference(official(0), official(100), T(1.5),
                                                            mask::None{}, ExecutionOptions{1});
  ref::Matrix<T> fresh, other_out, after_other;
  std::thread([&] { fresh = ika_output(0, 1); }).join();
  std::thread([&] {
    other_out = other_attention(other.q<T>(), other.k<T>(), other.v<T>());
    after_other = ika_output(0, 1);
  }).join();
  CHECK(other_out.allFinite());
  CHECK(check::identical(after_other, fresh));

  const auto fourier_output = [&](std::uint64_t stream, int threads) {
    const auto map = features::Fourier<T>::draw(sampler, M, d, RandomStream{3405, stream});
    kernattn::Attention<kernels::RandomFeature<features::Fourier<T>>, magnitude::Lp<T>> attention(
        kernels::RandomFeature<features::Fourier<T>>(map), magnitude::Lp<T>(T(3)), {},
        ExecutionOptions{threads, 16, 8});
    return ref::Matrix<T>(attention(p.q<T>(), p.k<T>(), p.v<T>(), {B, H}));
  };
  const ref::Matrix<T> first = fourier_output(7, 1);
  CHECK(first.allFinite());
  CHECK(check::identical(first, fourier_output(7, 2)));
  CHECK(check::identical(first, fourier_output(7, 1)));
  CHECK(relative_change(first, fourier_output(8, 1)) > 1e-3);
}

}  // namespace test_ika
