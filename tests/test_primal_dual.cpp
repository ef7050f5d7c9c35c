// Attention-BN (BatchNormalized) and Attention-SH (ScaledHead, scaled_heads), DESIGN 1.7: against
// the naive reference on inputs normalised and pooled in the test, the identities they must
// keep (r = 1 is plain attention bit for bit, BN's shift invariance), the pooled causal rule,
// both engines, and errors.

#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "kernattn/attention/batch_normalized.hpp"
#include "kernattn/attention/scaled_head.hpp"
#include "kernattn/kernattn.hpp"
#include "reference.hpp"

namespace {

using ref::MatrixXd;

/// Q and K normalised feature by feature with the statistics of `keys` (one sequence, one
/// head), in double, then rounded to T: q' = (q - beta mean) / sqrt(var + eps), the same for k.
template <class T>
ref::Problem batch_normalised(const ref::Problem& p, double beta, double epsilon,
                              const MatrixXd& keys) {
  ref::Problem out = p;
  for (Index c = 0; c < p.K.cols(); ++c) {
    const double mean = keys.col(c).mean();
    const double variance = (keys.col(c).array() - mean).square().mean();
    const double scale = 1 / std::sqrt(variance + epsilon);
    out.Q.col(c) = ((p.Q.col(c).array() - beta * mean) * scale).matrix();
    out.K.col(c) = ((p.K.col(c).array() - beta * mean) * scale).matrix();
  }
  return ref::rounded<T>(out);
}

/// The same with the statistics of all keys of `p`.
template <class T>
ref::Problem batch_normalised(const ref::Problem& p, double beta, double epsilon) {
  return batch_normalised<T>(p, beta, epsilon, p.K);
}

/// The rows of x averaged over windows of r (the last one ragged), summed in double in order and
/// rounded to T.
template <class T>
MatrixXd pooled(const MatrixXd& x, Index r) {
  const Index windows = (x.rows() + r - 1) / r;
  MatrixXd out(windows, x.cols());
  for (Index w = 0; w < windows; ++w) {
    const Index size = std::min(r, x.rows() - w * r);
    for (Index c = 0; c < x.cols(); ++c) {
      double sum = 0;
      for (Index j = w * r; j < w * r + size; ++j) sum += x(j, c);
      out(w, c) = double(T(sum / double(size)));
    }
  }
  return out;
}

/// Query i sees window w only if it sees every token in it.
ref::Visibility pooled_visibility(const ref::Visibility& tokens, Index r) {
  const Index windows = (tokens.cols() + r - 1) / r;
  ref::Visibility out(tokens.rows(), windows);
  for (Index i = 0; i < tokens.rows(); ++i)
    for (Index w = 0; w < windows; ++w) {
      const Index size = std::min(r, tokens.cols() - w * r);
      out(i, w) = tokens.row(i).segment(w * r, size).all();
    }
  return out;
}

template <class T>
ref::Problem pooled_problem(const ref::Problem& p, Index r) {
  return {p.Q, pooled<T>(p.K, r), pooled<T>(p.V, r)};
}

}  // namespace

TEMPLATE_TEST_CASE(
    "BatchNormalized matches the reference on inputs normalised with the keys' "
    "statistics",
    "[batch_norm]", float, double) {
  using T = TestType;
  const Index nq = 30;
  const Index nk = 45;
  const Index d = 6;
  // Keys far from zero mean and unit variance, where the normalisation matters.
  ref::Problem p = ref::random_problem<T>(nq, nk, d, 4, 91, 2.0);
  p.K *= 3;
  p = ref::rounded<T>(p);
  for (const auto& [beta, epsilon] : {std::pair{1.0, 1e-5}, {0.5, 1e-5}, {0.0, 0.1}}) {
    CAPTURE(beta, epsilon);
    const ref::Problem normalised = batch_normalised<T>(p, beta, epsilon);
    SECTION("softmax heads, causal") {
      using Head = kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::Causal>;
      const kernattn::BatchNormalized<Head> attention(Head(), beta, epsilon);
      const ref::Reference expected =
          ref::attention(normalised, ref::exponential(1 / std::sqrt(double(d))),
                         ref::unit_magnitude(), ref::causal(nq, nk), ref::unit_roundoff<T>);
      check::require_matches<T>(attention(p.q<T>(), p.k<T>(), p.v<T>()), expected);
    }
    SECTION("RBF x L3 heads") {
      using Head = kernattn::Attention<kernels::Rbf<T>, magnitude::Lp<T>>;
      const kernattn::BatchNormalized<Head> attention(Head({}, magnitude::Lp<T>(T(3))), beta,
                                                      epsilon);
      const ref::Reference expected = ref::attention(
          normalised, ref::rbf(std::sqrt(double(d))), ref::lp(3, ref::default_gamma(d), 2),
          ref::all_visible(nq, nk), ref::unit_roundoff<T>);
      check::require_matches<T>(attention(p.q<T>(), p.k<T>(), p.v<T>()), expected);
    }
  }
}

TEMPLATE_TEST_CASE(
    "BatchNormalized normalises every sequence and head with its own keys, and "
    "with beta = 1 ignores a common shift of queries and keys",
    "[batch_norm]", float, double) {
  using T = TestType;
  using Head = kernattn::Attention<kernels::Exponential<T>>;
  const kernattn::BatchNormalized<Head> attention{Head()};
  const Index B = 2;
  const Index H = 3;
  const Index n = 25;
  const Index d = 4;
  const ref::Problem p = ref::random_problem<T>(B * n, B * n, H * d, H * 2, 5, 1.0);
  const ref::Matrix<T> out = attention(p.q<T>(), p.k<T>(), p.v<T>(), {B, H});
  for (Index b = 0; b < B; ++b)
    for (Index h = 0; h < H; ++h) {
      const ref::Problem block{p.Q.block(b * n, h * d, n, d), p.K.block(b * n, h * d, n, d),
                               p.V.block(b * n, h * 2, n, 2)};
      const ref::Reference expected =
          ref::attention(batch_normalised<T>(block, 1, 1e-5), ref::exponential(0.5),
                         ref::unit_magnitude(), ref::all_visible(n, n), ref::unit_roundoff<T>);
      check::require_matches<T>(out.block(b * n, h * 2, n, 2), expected);
    }

  // q - mu_K is unchanged by adding the same vector to every query and key; only the rounding
  // of the shifted inputs differs.
  ref::Problem shifted = p;
  shifted.Q.rowwise() += ref::Row::LinSpaced(H * d, -4, 4);
  shifted.K.rowwise() += ref::Row::LinSpaced(H * d, -4, 4);
  shifted = ref::rounded<T>(shifted);
  const ref::Matrix<T> moved = attention(shifted.q<T>(), shifted.k<T>(), shifted.v<T>(), {B, H});
  const double tolerance = std::is_same_v<T, float> ? 1e-4 : 1e-12;
  CHECK((moved - out).cwiseAbs().maxCoeff() <= tolerance);
}

TEMPLATE_TEST_CASE(
    "BatchNormalized takes its statistics over the keys some query sees: padded keys, "
    "whatever they hold, change nothing",
    "[batch_norm][padding]", float, double) {
  using T = TestType;
  const Index B = 2;
  const Index n = 40;
  const Index d = 5;
  const std::vector<Index> lengths = {40, 23};
  const ref::Problem p = ref::random_problem<T>(B * n, B * n, d, 3, 63, 1.5);
  using Head = kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::KeyPadding>;
  const kernattn::BatchNormalized<Head> attention(
      Head(kernels::Exponential<T>(), {}, mask::KeyPadding::from_lengths(lengths)));
  for (const double padding : {1e3, std::numeric_limits<double>::quiet_NaN()}) {
    CAPTURE(padding);
    ref::Problem padded = p;
    padded.K.middleRows(n + lengths[1], n - lengths[1]).setConstant(padding);
    const ref::Matrix<T> out = attention(padded.q<T>(), padded.k<T>(), padded.v<T>(), {B});
    for (Index b = 0; b < B; ++b) {
      const Index length = lengths[std::size_t(b)];
      CAPTURE(b, length);
      const ref::Problem valid{p.Q.middleRows(b * n, n), p.K.middleRows(b * n, length),
                               p.V.middleRows(b * n, length)};
      const ref::Reference expected =
          ref::attention(batch_normalised<T>(valid, 1, 1e-5), ref::exponential(1 / std::sqrt(5.0)),
                         ref::unit_magnitude(), ref::all_visible(n, length), ref::unit_roundoff<T>);
      check::require_matches<T>(out.middleRows(b * n, n), expected);
    }
  }
}

TEMPLATE_TEST_CASE("BatchNormalized under a Boolean mask leaves out the keys no query sees",
                   "[batch_norm]", float, double) {
  using T = TestType;
  const Index nq = 20;
  const Index nk = 30;
  const Index d = 4;
  ref::Problem p = ref::random_problem<T>(nq, nk, d, 2, 77, 0.5);
  ref::Visibility visible = ref::random_visibility(nq, nk, 0.3, 78);
  for (const Index j : {0, 7, 8, 9, 29}) {
    visible.col(j).setConstant(false);
    p.K.row(j).setConstant(-400);
  }
  visible.row(3).setConstant(false);
  using Head = kernattn::Attention<kernels::Rbf<T>, magnitude::None, mask::Boolean>;
  const kernattn::BatchNormalized<Head> attention(Head({}, {}, mask::Boolean(visible)), 0.5);
  // The reference normalises with the statistics of the seen keys alone.
  std::vector<Index> seen;
  for (Index j = 0; j < nk; ++j)
    if (visible.col(j).any()) seen.push_back(j);
  REQUIRE(seen.size() <= std::size_t(nk) - 5);
  MatrixXd seen_keys(Index(seen.size()), d);
  for (std::size_t t = 0; t < seen.size(); ++t) seen_keys.row(Index(t)) = p.K.row(seen[t]);
  const ref::Reference expected =
      ref::attention(batch_normalised<T>(p, 0.5, 1e-5, seen_keys), ref::rbf(std::sqrt(double(d))),
                     ref::unit_magnitude(), visible, ref::unit_roundoff<T>);
  check::require_matches<T>(attention(p.q<T>(), p.k<T>(), p.v<T>()), expected);
}

TEMPLATE_TEST_CASE(
    "ScaledHead matches the reference on pooled keys and values, with the pooled "
    "causal rule and a ragged last window",
    "[scaled_heads]", float, double) {
  using T = TestType;
  const Index d = 5;
  for (const auto& [nq, nk] : {std::pair<Index, Index>{37, 37}, {12, 37}, {40, 23}}) {
    const ref::Problem p = ref::random_problem<T>(nq, nk, d, 3, 17);
    for (const Index r : {1, 2, 3, 5, 8, 64}) {
      CAPTURE(nq, nk, r);
      const ref::Problem pool = pooled_problem<T>(p, r);
      using Head = kernattn::Attention<kernels::Exponential<T>, magnitude::Lp<T>, mask::Causal>;
      const kernattn::ScaledHead<Head> attention(Head({}, magnitude::Lp<T>(T(1))), r);
      const ref::Visibility visible = pooled_visibility(ref::causal(nq, nk), r);
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
      for (Index i = 0; i < nq; ++i)
        if (!visible.row(i).any()) CHECK(check::zero_row(out, i));
    }
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
    const ref::Reference expected =
        ref::attention(pooled_problem<T>(block, r), ref::exponential(0.5), ref::unit_magnitude(),
                       pooled_visibility(ref::first_keys(n, n, 45), r), ref::unit_roundoff<T>);
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
    "ScaledHead over the linear engine with causal filters (a pooled causal filter "
    "is a prefix per query) agrees with the exact engine on the same features",
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
        options.chunk = chunk;
        options.tile = 3;
        compare(mask::Causal{}, p, r, options);
        if (nk >= 31) compare(mask::Causal{} && padding, p, r, options);
      }
    }
  }
}

TEMPLATE_TEST_CASE("BN and SH combine in either order", "[batch_norm][scaled_heads]", float,
                   double) {
  using T = TestType;
  using Head = kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::Causal>;
  const Index n = 41;
  const Index d = 4;
  const Index r = 3;
  ref::Problem p = ref::random_problem<T>(n, n, d, 3, 12, -1.0);
  p.K *= 2;
  p = ref::rounded<T>(p);
  const ref::Visibility visible = pooled_visibility(ref::causal(n, n), r);
  const auto expected_for = [&](const ref::Problem& inputs) {
    return ref::attention(inputs, ref::exponential(0.5), ref::unit_magnitude(), visible,
                          ref::unit_roundoff<T>);
  };
  SECTION("normalise with all keys, then pool") {
    const kernattn::BatchNormalized<kernattn::ScaledHead<Head>> attention(
        kernattn::ScaledHead<Head>(Head(), r));
    const ref::Problem normalised = batch_normalised<T>(p, 1, 1e-5);
    check::require_matches<T>(attention(p.q<T>(), p.k<T>(), p.v<T>()),
                              expected_for(pooled_problem<T>(normalised, r)));
  }
  SECTION("pool, then normalise with the pooled keys") {
    const kernattn::ScaledHead<kernattn::BatchNormalized<Head>> attention(
        kernattn::BatchNormalized<Head>(Head()), r);
    const ref::Problem normalised = batch_normalised<T>(pooled_problem<T>(p, r), 1, 1e-5);
    check::require_matches<T>(attention(p.q<T>(), p.k<T>(), p.v<T>()), expected_for(normalised));
  }
}

TEST_CASE("BatchNormalized and ScaledHead reject bad parameters", "[batch_norm][scaled_heads]") {
  using Head = kernattn::Attention<kernels::Exponential<float>>;
  REQUIRE_INVALID_ARGUMENT(kernattn::BatchNormalized<Head>(Head(), 1.5), "beta must lie in [0, 1]");
  REQUIRE_INVALID_ARGUMENT(kernattn::BatchNormalized<Head>(Head(), 1.0, 0.0), "epsilon");
  REQUIRE_INVALID_ARGUMENT(kernattn::ScaledHead<Head>(Head(), 0), "pooling factor must be >= 1");
  const kernattn::Matrix<float> x = kernattn::Matrix<float>::Ones(6, 4);
  REQUIRE_INVALID_ARGUMENT(kernattn::ScaledHead<Head>(Head(), 2)(x, x.topRows(5), x),
                           "one value per key");
}
