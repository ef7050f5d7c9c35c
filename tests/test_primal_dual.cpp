// Attention-BN (BatchNormalized) (docs/primal_dual.md): against the naive reference on inputs
// normalised in the test, its shift invariance, statistics over the keys some query sees (padded
// keys, whatever they hold, change nothing), its refusal of masks whose queries see different
// keys, and Attention-BN and Attention-SH combined in either order (Attention-SH alone:
// test_primal_dual_scaled_heads.cpp; hostile pooling factors, empty inputs and errors:
// test_primal_dual_hostile.cpp).

#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "kernattn/heads/batch_normalized.hpp"
#include "kernattn/heads/scaled_head.hpp"
#include "kernattn/kernattn.hpp"
#include "pooling.hpp"
#include "reference.hpp"

namespace test_primal_dual {

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
    SECTION("softmax heads") {
      using Head = kernattn::Attention<kernels::Exponential<T>>;
      const kernattn::BatchNormalized<Head> attention(Head(), beta, epsilon);
      const ref::Reference expected =
          ref::attention(normalised, ref::exponential(1 / std::sqrt(double(d))),
                         ref::unit_magnitude(), ref::all_visible(nq, nk), ref::unit_roundoff<T>);
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

TEMPLATE_TEST_CASE(
    "BatchNormalized under a Boolean mask whose non-empty rows agree leaves out the keys no "
    "query sees",
    "[batch_norm]", float, double) {
  using T = TestType;
  const Index nq = 20;
  const Index nk = 30;
  const Index d = 4;
  ref::Problem p = ref::random_problem<T>(nq, nk, d, 2, 77, 0.5);
  // Every query sees the same random half of the keys, except queries 3 and 11, which see none.
  const ref::Flags shared = ref::random_visibility(nk, 1, 0.5, 78).col(0);
  ref::Visibility visible = ref::valid_keys(nq, shared);
  visible.row(3).setConstant(false);
  visible.row(11).setConstant(false);
  for (Index j = 0; j < nk; ++j)
    if (!shared(j)) p.K.row(j).setConstant(-400);
  using Head = kernattn::Attention<kernels::Rbf<T>, magnitude::None, mask::Boolean>;
  const kernattn::BatchNormalized<Head> attention(Head({}, {}, mask::Boolean(visible)), 0.5);
  // The reference normalises with the statistics of the seen keys alone.
  std::vector<Index> seen;
  for (Index j = 0; j < nk; ++j)
    if (shared(j)) seen.push_back(j);
  REQUIRE(seen.size() >= 5);
  REQUIRE(seen.size() <= std::size_t(nk) - 5);
  MatrixXd seen_keys(Index(seen.size()), d);
  for (std::size_t t = 0; t < seen.size(); ++t) seen_keys.row(Index(t)) = p.K.row(seen[t]);
  const ref::Reference expected =
      ref::attention(batch_normalised<T>(p, 0.5, 1e-5, seen_keys), ref::rbf(std::sqrt(double(d))),
                     ref::unit_magnitude(), visible, ref::unit_roundoff<T>);
  const ref::Matrix<T> out = attention(p.q<T>(), p.k<T>(), p.v<T>());
  check::require_matches<T>(out, expected);
  CHECK(check::zero_row(out, 3));
  CHECK(check::zero_row(out, 11));
}

TEMPLATE_TEST_CASE(
    "BatchNormalized refuses masks under which queries see different keys, and accepts those "
    "under which they do not",
    "[batch_norm][causal]", float, double) {
  using T = TestType;
  const Index n = 24;
  const Index d = 4;
  const ref::Problem p = ref::random_problem<T>(n, n, d, 3, 402, 1.0);
  const auto q = p.q<T>();
  const auto k = p.k<T>();
  const auto v = p.v<T>();
  const char* const refusal = "BatchNormalized: the key statistics are shared by every query";
  using Kernel = kernels::Exponential<T>;
  SECTION("causal: query 0 does not see key 1, which query 1 sees") {
    using Head = kernattn::Attention<Kernel, magnitude::None, mask::Causal>;
    const kernattn::BatchNormalized<Head> attention{Head()};
    REQUIRE_INVALID_ARGUMENT(attention(q, k, v), refusal);
    REQUIRE_INVALID_ARGUMENT(attention(q, k, v),
                             "query 0 of sequence 0 (24 queries x 24 keys) "
                             "does not see key 1");
    // More queries than keys, and a batch of two sequences.
    REQUIRE_INVALID_ARGUMENT(attention(q, k.topRows(10), v.topRows(10)), refusal);
    REQUIRE_INVALID_ARGUMENT(attention(q, k, v, {2}), refusal);
  }
  SECTION("causal with padding, windows, pooled causal filters and differing boolean rows") {
    using Padded = kernattn::Attention<Kernel, magnitude::None,
                                       mask::Intersection<mask::Causal, mask::KeyPadding>>;
    REQUIRE_INVALID_ARGUMENT(
        kernattn::BatchNormalized<Padded>(
            Padded(Kernel(), {}, mask::Causal{} && mask::KeyPadding::from_lengths({20})))(q, k, v),
        refusal);
    using Windowed = kernattn::Attention<Kernel, magnitude::None, mask::Window>;
    REQUIRE_INVALID_ARGUMENT(
        kernattn::BatchNormalized<Windowed>(Windowed(Kernel(), {}, mask::Window(3, 3)))(q, k, v),
        refusal);
    using Pooled = kernattn::Attention<Kernel, magnitude::None, mask::Pooled<mask::Causal>>;
    REQUIRE_INVALID_ARGUMENT(kernattn::BatchNormalized<Pooled>(
                                 Pooled(Kernel(), {}, {mask::Causal{}, 3, 3 * n}))(q, k, v),
                             refusal);
    ref::Visibility rows = ref::all_visible(n, n);
    rows(17, 5) = false;
    using Masked = kernattn::Attention<Kernel, magnitude::None, mask::Boolean>;
    REQUIRE_INVALID_ARGUMENT(
        kernattn::BatchNormalized<Masked>(Masked(Kernel(), {}, mask::Boolean(rows)))(q, k, v),
        "query 17 of sequence 0 (24 queries x 24 keys) does not see key 5");
  }
  SECTION("Attention-SH around or inside Attention-BN under a causal mask") {
    using Head = kernattn::Attention<Kernel, magnitude::None, mask::Causal>;
    const kernattn::ScaledHead<kernattn::BatchNormalized<Head>> inside(
        kernattn::BatchNormalized<Head>(Head()), 3);
    REQUIRE_INVALID_ARGUMENT(inside(q, k, v), refusal);
    const kernattn::BatchNormalized<kernattn::ScaledHead<Head>> around(
        kernattn::ScaledHead<Head>(Head(), 3));
    REQUIRE_INVALID_ARGUMENT(around(q, k, v), refusal);
  }
  SECTION("one query under a causal mask sees every key: the statistics of all of them") {
    using Head = kernattn::Attention<Kernel, magnitude::None, mask::Causal>;
    const kernattn::BatchNormalized<Head> attention{Head()};
    const ref::Problem last{p.Q.bottomRows(1), p.K, p.V};
    const ref::Reference expected =
        ref::attention(batch_normalised<T>(last, 1, 1e-5), ref::exponential(0.5),
                       ref::unit_magnitude(), ref::all_visible(1, n), ref::unit_roundoff<T>);
    check::require_matches<T>(attention(last.q<T>(), k, v), expected);
  }
  SECTION("a window as wide as the sequence is no mask, bit for bit") {
    using Windowed = kernattn::Attention<Kernel, magnitude::None, mask::Window>;
    const Index huge = std::numeric_limits<Index>::max();
    const kernattn::BatchNormalized<Windowed> wide(
        Windowed(Kernel(), {}, mask::Window(huge, huge)));
    const kernattn::BatchNormalized<kernattn::Attention<Kernel>> plain{
        kernattn::Attention<Kernel>()};
    CHECK(check::identical(wide(q, k, v), plain(q, k, v)));
  }
}

TEMPLATE_TEST_CASE("BN and SH combine in either order", "[batch_norm][scaled_heads]", float,
                   double) {
  using T = TestType;
  using Head = kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::KeyPadding>;
  const Index n = 41;
  const Index d = 4;
  const Index r = 3;
  const Index length = 35;  // window 11 holds tokens 33, 34 and the padded 35
  const Head head(kernels::Exponential<T>(), {}, mask::KeyPadding::from_lengths({length}));
  ref::Problem p = ref::random_problem<T>(n, n, d, 3, 12, -1.0);
  p.K *= 2;
  p = ref::rounded<T>(p);
  const ref::Visibility visible = ref::pooled_visibility(ref::first_keys(n, n, length), r);
  const Index valid_windows = length / r;
  REQUIRE(visible.row(0).head(valid_windows).all());
  REQUIRE_FALSE(visible.row(0).tail(visible.cols() - valid_windows).any());
  const auto expected_for = [&](const ref::Problem& inputs) {
    return ref::attention(inputs, ref::exponential(0.5), ref::unit_magnitude(), visible,
                          ref::unit_roundoff<T>);
  };
  SECTION("normalise with the valid tokens, then pool") {
    const kernattn::BatchNormalized<kernattn::ScaledHead<Head>> attention(
        kernattn::ScaledHead<Head>(head, r));
    const ref::Problem normalised = batch_normalised<T>(p, 1, 1e-5, MatrixXd(p.K.topRows(length)));
    check::require_matches<T>(attention(p.q<T>(), p.k<T>(), p.v<T>()),
                              expected_for(ref::pooled_problem<T>(normalised, r)));
  }
  SECTION("pool, then normalise with the valid windows") {
    const kernattn::ScaledHead<kernattn::BatchNormalized<Head>> attention(
        kernattn::BatchNormalized<Head>(head), r);
    const ref::Problem pool = ref::pooled_problem<T>(p, r);
    const ref::Problem normalised =
        batch_normalised<T>(pool, 1, 1e-5, MatrixXd(pool.K.topRows(valid_windows)));
    check::require_matches<T>(attention(p.q<T>(), p.k<T>(), p.v<T>()), expected_for(normalised));
  }
}

}  // namespace test_primal_dual
