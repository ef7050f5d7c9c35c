// Attention-SH (ScaledHead, scaled_heads) (docs/primal_dual.md): against the naive reference on
// inputs pooled in the test (tests/support/pooling.hpp), r = 1 as plain attention bit for bit,
// the pooled causal rule with partial windows and a ragged last window in both engines, thread
// counts and batch layouts (Attention-BN: test_primal_dual.cpp; hostile pooling factors, empty
// inputs and errors: test_primal_dual_hostile.cpp).

#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "kernattn/heads/scaled_head.hpp"
#include "kernattn/kernattn.hpp"
#include "pooling.hpp"
#include "reference.hpp"

namespace test_primal_dual_scaled_heads {

namespace {

using ref::MatrixXd;

/// Keys 0..length-1 are valid, under the causal mask.
ref::Visibility causal_first_keys(Index nq, Index nk, Index length) {
  return ref::causal(nq, nk) && ref::first_keys(nq, nk, length);
}

}  // namespace

TEMPLATE_TEST_CASE(
    "ScaledHead under a causal mask matches the reference on pooled windows and each query's "
    "partial window, with a ragged last window",
    "[scaled_heads][causal]", float, double) {
  using T = TestType;
  const Index d = 5;
  // The last two shapes run the exact head in several groups of 64 queries.
  for (const auto& [nq, nk] :
       {std::pair<Index, Index>{37, 37}, {12, 37}, {40, 23}, {150, 150}, {130, 200}}) {
    const ref::Problem p = ref::random_problem<T>(nq, nk, d, 3, 17);
    for (const Index r : {1, 2, 3, 5, 8, 64}) {
      CAPTURE(nq, nk, r);
      const auto [pool, visible] = ref::pooled_causal<T>(p, r, ref::causal(nq, nk));
      using Head = kernattn::Attention<kernels::Exponential<T>, magnitude::Lp<T>, mask::Causal>;
      const kernattn::ScaledHead<Head> attention(Head({}, magnitude::Lp<T>(T(1))), r);
      const ref::Reference expected =
          ref::attention(pool, ref::exponential(1 / std::sqrt(double(d))),
                         ref::lp(1, ref::default_gamma(d), 2), visible, ref::unit_roundoff<T>);
      const ref::Matrix<T> out = attention(p.q<T>(), p.k<T>(), p.v<T>());
      check::require_matches<T>(out, expected);
      // Row-major keys and values are pooled to the same bits (with r = 1 they reach the
      // engine unpooled, whose products may round differently for another storage order).
      if (r > 1) {
        using RowMajor = kernattn::RowMajorMatrix<T>;
        CHECK(check::identical(attention(p.q<T>(), RowMajor(p.k<T>()), RowMajor(p.v<T>())), out));
      }
      // A query that may see a token attends over what it has seen; the others output zeros.
      for (Index i = 0; i < nq; ++i) {
        CAPTURE(i);
        CHECK(visible.row(i).any() == (ref::causal_limit(i, nq, nk) > 0));
        if (!visible.row(i).any()) CHECK(check::zero_row(out, i));
      }
    }
  }
}

TEMPLATE_TEST_CASE(
    "ScaledHead under a causal mask is bit-identical for every thread count and batch layout",
    "[scaled_heads][causal][threads]", float, double) {
  using T = TestType;
  const Index B = 2;
  const Index n = 150;
  const ref::Problem p = ref::random_problem<T>(B * n, B * n, 2 * 4, 2 * 3, 29);
  using Head = kernattn::Attention<kernels::Rbf<T>, magnitude::Lp<T>, mask::Causal>;
  auto heads = kernattn::scaled_heads(Head({}, magnitude::Lp<T>(T(3))), {3, 8});
  heads.set_threads(1);
  const ref::Matrix<T> one = heads(p.q<T>(), p.k<T>(), p.v<T>(), {B});
  for (const int threads : {2, 3, 4}) {
    CAPTURE(threads);
    heads.set_threads(threads);
    CHECK(check::identical(heads(p.q<T>(), p.k<T>(), p.v<T>(), {B}), one));
  }
  // Each sequence alone gives the same bits as the batch.
  for (Index b = 0; b < B; ++b) {
    CAPTURE(b);
    const ref::Matrix<T> alone = heads(p.q<T>().middleRows(b * n, n), p.k<T>().middleRows(b * n, n),
                                       p.v<T>().middleRows(b * n, n));
    CHECK(check::identical(alone, one.middleRows(b * n, n)));
  }
}

TEMPLATE_TEST_CASE(
    "ScaledHead's partial window: query i < r attends over the mean of tokens 0..i, and at the "
    "end of a window the partial window is the window, bit for bit",
    "[scaled_heads][causal]", float, double) {
  using T = TestType;
  const Index n = 12;
  const Index r = 4;
  const ref::Problem p = ref::random_problem<T>(n, n, 3, 2, 23);
  using Head = kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::Causal>;
  const ref::Matrix<T> out = kernattn::ScaledHead<Head>(Head(), r)(p.q<T>(), p.k<T>(), p.v<T>());
  // With one visible key the output is that key's value: queries 0, 1, 2 see only their partial
  // window, the mean of the values of tokens 0..i; query 3 sees window 0, the same mean.
  for (Index i = 0; i < r; ++i) {
    CAPTURE(i);
    CHECK(check::identical(out.row(i), ref::mean_of<T>(p.V, 0, i + 1).template cast<T>()));
  }
}

TEMPLATE_TEST_CASE("Scaled heads with every r_h = 1 are plain multi-head attention, bit for bit",
                   "[scaled_heads]", float, double) {
  using T = TestType;
  const Index B = 2;
  const Index H = 4;
  const ref::Problem p = ref::random_problem<T>(B * 50, B * 60, H * 8, H * 3, 3);
  {
    using Head = kernattn::Attention<kernels::Rbf<T>, magnitude::Lp<T>, mask::Causal>;
    const Head head({}, magnitude::Lp<T>(T(3)));
    const ref::Matrix<T> plain = head(p.q<T>(), p.k<T>(), p.v<T>(), {B, H});
    const auto scaled = kernattn::scaled_heads(head, std::vector<Index>(H, 1));
    CHECK(check::identical(scaled(p.q<T>(), p.k<T>(), p.v<T>(), {B}), plain));
  }
  {
    using Head = kernattn::LinearAttention<kernattn::features::Positive<T>>;
    const Head head(kernattn::features::Positive<T>::draw(16, 8, {2, 0}));
    const ref::Matrix<T> plain = head(p.q<T>(), p.k<T>(), p.v<T>(), {B, H});
    const auto scaled = kernattn::scaled_heads(head, std::vector<Index>(H, 1));
    CHECK(check::identical(scaled(p.q<T>(), p.k<T>(), p.v<T>(), {B}), plain));
  }
}

TEMPLATE_TEST_CASE(
    "Scaled heads with r_h in {1, 2, 4, 8}: each head against the reference; the "
    "linear engine with pooled padding",
    "[scaled_heads]", float, double) {
  using T = TestType;
  const std::vector<Index> factors = {1, 2, 4, 8};
  const Index H = 4;
  const Index n = 53;
  const Index d = 4;
  const ref::Problem p = ref::random_problem<T>(n, n, H * d, H * 2, 44);
  using Head = kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::KeyPadding>;
  const Head head(kernels::Exponential<T>(), {}, mask::KeyPadding::from_lengths({45}));
  const ref::Matrix<T> out = kernattn::scaled_heads(head, factors)(p.q<T>(), p.k<T>(), p.v<T>());
  for (Index h = 0; h < H; ++h) {
    const Index r = factors[std::size_t(h)];
    CAPTURE(r);
    const ref::Problem block{p.Q.middleCols(h * d, d), p.K.middleCols(h * d, d),
                             p.V.middleCols(h * 2, 2)};
    const ref::Reference expected = ref::attention(
        ref::pooled_problem<T>(block, r), ref::exponential(0.5), ref::unit_magnitude(),
        ref::pooled_visibility(ref::first_keys(n, n, 45), r), ref::unit_roundoff<T>);
    check::require_matches<T>(out.middleCols(h * 2, 2), expected);
  }

  // The linear engine with padding: a window that holds a padded token is dropped, as in the
  // exact engine with the same features.
  using Map = kernattn::features::Positive<T>;
  const Map map = Map::draw(64, d, {8, 1});
  const mask::KeyPadding padding = mask::KeyPadding::from_lengths({45});
  using Linear = kernattn::LinearAttention<Map, magnitude::None, mask::KeyPadding>;
  using Quadratic =
      kernattn::Attention<kernels::RandomFeature<Map>, magnitude::None, mask::KeyPadding>;
  const kernattn::ScaledHead<Linear> linear(Linear(map, {}, padding), 4);
  const kernattn::ScaledHead<Quadratic> quadratic(
      Quadratic(kernels::RandomFeature<Map>(map), {}, padding), 4);
  const auto columns = [&](const ref::Matrix<T>& m) { return ref::Matrix<T>(m.leftCols(d)); };
  const ref::Matrix<T> fast = linear(columns(p.q<T>()), columns(p.k<T>()), p.v<T>().leftCols(2));
  const ref::Matrix<T> exact =
      quadratic(columns(p.q<T>()), columns(p.k<T>()), p.v<T>().leftCols(2));
  const double tolerance = std::is_same_v<T, float> ? 1e-4 : 1e-12;
  CHECK((fast - exact).cwiseAbs().maxCoeff() <= tolerance * exact.cwiseAbs().maxCoeff());
}

TEMPLATE_TEST_CASE(
    "ScaledHead over the linear engine with causal filters (windows as a prefix per query, "
    "partial windows added directly) agrees with the exact engine on the same features",
    "[scaled_heads][causal]", float, double) {
  using T = TestType;
  const Index d = 4;
  using Map = kernattn::features::Positive<T>;
  const Map map = Map::draw(64, d, {9, 2});
  const auto padding = mask::KeyPadding::from_lengths({31});
  const auto compare = [&](const auto& causal_filter, const ref::Problem& p, Index r,
                           kernattn::LinearOptions options) {
    using Filter = std::remove_cvref_t<decltype(causal_filter)>;
    using Linear = kernattn::LinearAttention<Map, magnitude::None, Filter>;
    using Quadratic = kernattn::Attention<kernels::RandomFeature<Map>, magnitude::None, Filter>;
    const kernattn::ScaledHead<Linear> linear(Linear(map, {}, causal_filter, options), r);
    const kernattn::ScaledHead<Quadratic> quadratic(
        Quadratic(kernels::RandomFeature<Map>(map), {}, causal_filter), r);
    const ref::Matrix<T> fast = linear(p.q<T>(), p.k<T>(), p.v<T>());
    const ref::Matrix<T> exact = quadratic(p.q<T>(), p.k<T>(), p.v<T>());
    const double tolerance = std::is_same_v<T, float> ? 1e-4 : 1e-12;
    CHECK((fast - exact).cwiseAbs().maxCoeff() <= tolerance * exact.cwiseAbs().maxCoeff());
    // Rows that see no pooled key are zero in both.
    for (Index i = 0; i < exact.rows(); ++i)
      if (exact.row(i).isZero(0)) CHECK(fast.row(i).isZero(0));
  };
  for (const auto& [nq, nk] : {std::pair<Index, Index>{37, 37}, {12, 37}, {45, 33}}) {
    const ref::Problem p = ref::random_problem<T>(nq, nk, d, 3, 81);
    for (const Index r : {1, 2, 3, 5, 8, 40}) {
      // Chunks of 1 and 4 queries put whole windows' jumps inside and between chunks.
      for (const Index chunk : {1, 4, 64}) {
        CAPTURE(nq, nk, r, chunk);
        kernattn::LinearOptions options;
        options.causal_chunk = chunk;
        options.key_tile = 3;
        compare(mask::Causal{}, p, r, options);
        if (nk >= 31) compare(mask::Causal{} && padding, p, r, options);
      }
    }
  }
}

TEMPLATE_TEST_CASE(
    "ScaledHead over LinearAttention with Fourier features under causal filters matches the "
    "naive reference with partial windows",
    "[scaled_heads][causal]", float, double) {
  using T = TestType;
  const Index d = 4;
  constexpr Index M = 32;
  using Map = kernattn::features::Fourier<T>;
  // As in test_ika.cpp: lengthscale 2 and small data keep every estimate near 0.9, so no
  // directly normalised row sum nears the denominator guard.
  const Map map =
      Map::draw(kernattn::spectral::Gaussian<T>(T(2)), M, d, kernattn::random::RandomStream{5, 1});
  const MatrixXd omega = map.frequencies().template cast<double>();
  const auto padding = mask::KeyPadding::from_lengths({29});
  for (const auto& [nq, nk] : {std::pair<Index, Index>{37, 37}, {12, 37}, {45, 33}}) {
    const ref::Problem p =
        ref::rounded<T>({ref::normal(nq, d, 410, 0.0, 0.25), ref::normal(nk, d, 411, 0.0, 0.25),
                         ref::normal(nk, 3, 412)});
    for (const Index r : {2, 3, 5, 8, 40}) {
      for (const Index chunk : {1, 5, 64}) {
        CAPTURE(nq, nk, r, chunk);
        kernattn::LinearOptions options;
        options.causal_chunk = chunk;
        options.key_tile = 4;
        {
          INFO("Causal");
          const auto [pool, visible] = ref::pooled_causal<T>(p, r, ref::causal(nq, nk));
          using Linear = kernattn::LinearAttention<Map, magnitude::None, mask::Causal>;
          const kernattn::ScaledHead<Linear> attention(Linear(map, {}, {}, options), r);
          check::require_matches<T>(
              attention(p.q<T>(), p.k<T>(), p.v<T>()),
              ref::attention(pool, ref::fourier_model(omega, pool.K.rows(), 0.0),
                             ref::unit_magnitude(), visible, ref::unit_roundoff<T>));
        }
        {
          INFO(
              "Causal && KeyPadding (29 valid tokens): windows and partial windows holding a "
              "padded token are dropped");
          const auto [pool, visible] = ref::pooled_causal<T>(p, r, causal_first_keys(nq, nk, 29));
          using Filter = mask::Intersection<mask::Causal, mask::KeyPadding>;
          using Linear = kernattn::LinearAttention<Map, magnitude::None, Filter>;
          const kernattn::ScaledHead<Linear> attention(
              Linear(map, {}, mask::Causal{} && padding, options), r);
          check::require_matches<T>(
              attention(p.q<T>(), p.k<T>(), p.v<T>()),
              ref::attention(pool, ref::fourier_model(omega, pool.K.rows(), 0.0),
                             ref::unit_magnitude(), visible, ref::unit_roundoff<T>));
        }
      }
    }
  }
}

}  // namespace test_primal_dual_scaled_heads
