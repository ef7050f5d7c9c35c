// The key/value cache of exact attention (attention/key_value_cache.hpp): decoding token by token
// and in chunks gives the rows of the causal (or windowed) call over the whole sequence, and after
// the last token the non-causal call (float rounding bound), with its row statistics, for
// exponential, direct and feature forms, with and without a magnitude; a naive double softmax
// agrees; a cache longer than one part (merged parts) is bit-identical on 1 and 2 threads; keys a
// window hides never reach an output; truncate forgets exactly the dropped tokens; wrong shapes
// are rejected and leave the cache unchanged. The cache of several heads decodes as
// GroupedQuery over the whole sequence, each query head with its own ALiBi slope.
#include <cmath>
#include <limits>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "reference.hpp"

namespace test_key_value_cache {

namespace {

using kernattn::Attention;
using kernattn::ExecutionOptions;
using kernattn::KeyValueCache;
using kernattn::Matrix;
namespace kernels = kernattn::kernels;
namespace magnitude = kernattn::magnitude;
namespace mask = kernattn::mask;

constexpr Index n = 150, d = 6, dv = 4;

template <class T>
double rounding() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

template <class T>
struct Sequence {
  Matrix<T> Q, K, V;
};

template <class T>
Sequence<T> sequence(std::uint32_t seed) {
  const ref::Problem p = ref::random_problem<T>(n, n, d, dv, seed, 0.3);
  return {p.Q.template cast<T>(), p.K.template cast<T>(), p.V.template cast<T>()};
}

/// Largest |a - b| relative to the largest |b| (at least 1).
template <class A, class B>
double relative_difference(const A& a, const B& b) {
  const double scale = std::max(1.0, double(b.cwiseAbs().maxCoeff()));
  return double((a - b).template cast<double>().cwiseAbs().maxCoeff()) / scale;
}

/// Appends `chunk` tokens at a time and asks their queries: each step's outputs and statistics
/// are rows of the call over the whole sequence (whose mask must hide every later key).
template <class T, class AttentionT>
void check_decoding(const AttentionT& attention, std::uint32_t seed, Index chunk) {
  const Sequence<T> s = sequence<T>(seed);
  Matrix<T> expected(n, dv), expected_statistics;
  attention.compute(s.Q, s.K, s.V, expected, expected_statistics);
  KeyValueCache cache(attention, d, dv);
  for (Index t = 0; t < n; t += chunk) {
    const Index rows = std::min(chunk, n - t);
    cache.append(s.K.middleRows(t, rows), s.V.middleRows(t, rows));
    Matrix<T> statistics;
    const Matrix<T> out = cache.attend(s.Q.middleRows(t, rows), statistics);
    CAPTURE(t, chunk);
    CHECK(relative_difference(out, expected.middleRows(t, rows)) <= rounding<T>());
    CHECK(relative_difference(statistics, expected_statistics.middleRows(t, rows)) <=
          rounding<T>());
  }
  CHECK(cache.length() == n);
}

}  // namespace

TEMPLATE_TEST_CASE("KeyValueCache decodes as the causal call over the whole sequence",
                   "[decoding][cache]", float, double) {
  using T = TestType;
  // key_tile 8: parts of 128 keys, so the longest steps merge two parts.
  const ExecutionOptions small_tiles{.key_tile = 8};
  SECTION("softmax, token by token and in chunks of 7") {
    const Attention<kernels::Exponential<T>, magnitude::None, mask::Causal> softmax({}, {}, {},
                                                                                    small_tiles);
    STATIC_REQUIRE(
        KeyValueCache<kernels::Exponential<T>, magnitude::None, mask::Causal>::row_statistic ==
        kernattn::RowStatistic::log_normaliser);
    check_decoding<T>(softmax, 701, 1);
    check_decoding<T>(softmax, 701, 7);
  }
  SECTION("RBF x L^3 and Matern 3/2 x L^2, default tiles") {
    check_decoding<T>(
        Attention<kernels::Rbf<T>, magnitude::Lp<T>, mask::Causal>({}, magnitude::Lp<T>(T(3))), 702,
        5);
    check_decoding<T>(Attention<kernels::Matern32<T>, magnitude::Lp<T>, mask::Causal>(
                          {}, magnitude::Lp<T>(T(2)), {}, small_tiles),
                      703, 3);
  }
  SECTION("polynomial (a direct form) in a window of 20 keys") {
    check_decoding<T>(Attention<kernels::Polynomial<T>, magnitude::None, mask::Window>(
                          {}, {}, mask::Window(19, 0), small_tiles),
                      704, 4);
  }
  SECTION("random Fourier features of the RBF kernel (the feature form)") {
    using Fourier = kernattn::features::Fourier<T>;
    using Kernel = kernels::RandomFeature<Fourier>;
    const Kernel kernel(Fourier::draw(kernattn::spectral::Gaussian<T>(T(1.5)), 64, d,
                                      kernattn::random::RandomStream{43, 1}));
    check_decoding<T>(Attention<Kernel, magnitude::None, mask::Causal>(kernel, {}, {}, small_tiles),
                      705, 6);
  }
}

TEST_CASE("KeyValueCache: softmax decoding against a naive double reference", "[decoding][cache]") {
  const Sequence<double> s = sequence<double>(711);
  KeyValueCache cache(Attention<kernels::Exponential<double>>(), d, dv);
  for (Index t = 0; t < n; ++t) {
    cache.append(s.K.row(t), s.V.row(t));
    const Matrix<double> out = cache.attend(s.Q.row(t));
    Eigen::VectorXd weights(t + 1);
    for (Index j = 0; j <= t; ++j) weights(j) = s.Q.row(t).dot(s.K.row(j)) / std::sqrt(double(d));
    weights = (weights.array() - weights.maxCoeff()).exp();
    const Eigen::RowVectorXd expected = weights.transpose() * s.V.topRows(t + 1) / weights.sum();
    CAPTURE(t);
    CHECK((out - expected).cwiseAbs().maxCoeff() <= 1e-13);
  }
}

TEMPLATE_TEST_CASE(
    "KeyValueCache: a block of queries after the whole sequence is the non-causal "
    "call; merged parts are bit-identical on 1 and 2 threads",
    "[decoding][cache]", float, double) {
  using T = TestType;
  const Sequence<T> s = sequence<T>(721);
  using Softmax = Attention<kernels::Exponential<T>>;
  const Softmax one_thread({}, {}, {}, ExecutionOptions{.threads = 1, .key_tile = 4});
  const Softmax two_threads({}, {}, {}, ExecutionOptions{.threads = 2, .key_tile = 4});
  KeyValueCache first(one_thread, d, dv);
  KeyValueCache second(two_threads, d, dv);
  for (Index t = 0; t < n; t += 40) {
    const Index rows = std::min<Index>(40, n - t);
    first.append(s.K.middleRows(t, rows), s.V.middleRows(t, rows));
    second.append(s.K.middleRows(t, rows), s.V.middleRows(t, rows));
  }
  Matrix<T> statistics, second_statistics;
  const Matrix<T> out = first.attend(s.Q, statistics);
  CHECK(relative_difference(out, one_thread(s.Q, s.K, s.V)) <= rounding<T>());
  CHECK(second.attend(s.Q, second_statistics) == out);
  CHECK(second_statistics == statistics);
  CHECK(relative_difference(first.attend(s.Q.row(3)), out.row(3)) <= rounding<T>());
}

TEMPLATE_TEST_CASE("KeyValueCache: keys a window hides never reach an output", "[decoding][cache]",
                   float, double) {
  using T = TestType;
  const Sequence<T> s = sequence<T>(731);
  const Attention<kernels::Rbf<T>, magnitude::Lp<T>, mask::Window> windowed(
      {}, magnitude::Lp<T>(T(3)), mask::Window(5, 0), ExecutionOptions{.key_tile = 2});
  KeyValueCache clean(windowed, d, dv);
  KeyValueCache poisoned(windowed, d, dv);
  Matrix<T> K = s.K, V = s.V;
  K.row(2).setConstant(std::numeric_limits<T>::quiet_NaN());
  V.row(3).setConstant(std::numeric_limits<T>::infinity());
  K.row(4) *= T(1e4);
  for (Index t = 0; t < 40; ++t) {
    clean.append(s.K.row(t), s.V.row(t));
    poisoned.append(K.row(t), V.row(t));
    CAPTURE(t);
    if (t >= 10) CHECK(poisoned.attend(s.Q.row(t)) == clean.attend(s.Q.row(t)));
  }
}

TEMPLATE_TEST_CASE("MultiHeadKeyValueCache decodes as GroupedQuery over the whole sequence",
                   "[decoding][cache][grouped-query]", float, double) {
  // H_q = 4 query heads over H_kv = 2 (grouped) and 1 (multi-query) key/value heads, causal
  // softmax with a slope per query head; chunks of 1 (one query at a time) and 13 tokens.
  using T = TestType;
  const Index Hq = 4;
  const auto biased = mask::Causal{} && kernattn::bias::Alibi::standard(Hq);
  using Biased = std::remove_cvref_t<decltype(biased)>;
  const Attention<kernels::Exponential<T>, magnitude::None, Biased> attention(
      {}, {}, biased, ExecutionOptions{.key_tile = 8});
  const Matrix<T> Q = ref::normal(n, Hq * d, 770, 0.3).cast<T>();
  for (const Index Hkv : {Index(2), Index(1)}) {
    const Matrix<T> K = ref::normal(n, Hkv * d, 771, 0.3).cast<T>();
    const Matrix<T> V = ref::normal(n, Hkv * dv, 772).cast<T>();
    const Matrix<T> expected = kernattn::GroupedQuery(attention, Hq, Hkv)(Q, K, V);
    for (const Index chunk : {Index(1), Index(13)}) {
      CAPTURE(Hkv, chunk);
      kernattn::MultiHeadKeyValueCache cache(attention, Hq, Hkv, d, dv);
      CHECK(cache.group_size() == Hq / Hkv);
      for (Index t = 0; t < n; t += chunk) {
        const Index rows = std::min(chunk, n - t);
        cache.append(K.middleRows(t, rows), V.middleRows(t, rows));
        Matrix<T> statistics;
        const Matrix<T> out = cache.attend(Q.middleRows(t, rows), statistics);
        CAPTURE(t);
        CHECK(statistics.rows() == rows);
        CHECK(statistics.cols() == Hq);
        CHECK(relative_difference(out, expected.middleRows(t, rows)) <= rounding<T>());
      }
      CHECK(cache.length() == n);
    }
  }
}

TEST_CASE("MultiHeadKeyValueCache: bad input names the argument and leaves the cache as it was",
          "[decoding][cache][errors]") {
  using Softmax = Attention<kernels::Exponential<float>, magnitude::None, mask::Causal>;
  const Sequence<float> s = sequence<float>(780);
  REQUIRE_INVALID_ARGUMENT(
      kernattn::MultiHeadKeyValueCache(Softmax(), 6, 4, d, dv),
      "query heads (6) must be a positive multiple of the key/value heads (4)");
  kernattn::MultiHeadKeyValueCache cache(Softmax(), 2, 1, d, dv);
  cache.append(s.K.topRows(5), s.V.topRows(5));
  const Matrix<float> queries = ref::normal(1, 2 * d, 781).cast<float>();
  const Matrix<float> before = cache.attend(queries);
  REQUIRE_INVALID_ARGUMENT(cache.append(Matrix<float>::Zero(1, 2 * d), s.V.topRows(1)),
                           "keys are 1x12 and values 1x4 but the cache takes n x 6 keys with n x "
                           "4 values (1 key/value heads)");
  REQUIRE_INVALID_ARGUMENT(cache.attend(s.Q.topRows(1)),
                           "queries are 1x6 but the cache takes n x 12 (2 query heads x d = 6)");
  REQUIRE_INVALID_ARGUMENT(cache.truncate(6), "truncate: tokens must be in [0, 5]");
  REQUIRE_INVALID_ARGUMENT(cache.head(1), "1 is not one of 1 key/value head(s)");
  CHECK(cache.length() == 5);
  CHECK(cache.attend(queries) == before);
}

TEST_CASE("KeyValueCache: truncate, reserve and bad input", "[decoding][cache][errors]") {
  const Sequence<float> s = sequence<float>(741);
  using Softmax = Attention<kernels::Exponential<float>, magnitude::None, mask::Causal>;
  KeyValueCache cache(Softmax({}, {}, {}, ExecutionOptions{.key_tile = 4}), d, dv);
  cache.reserve(20);
  cache.append(s.K.topRows(30), s.V.topRows(30));
  KeyValueCache prefix(Softmax({}, {}, {}, ExecutionOptions{.key_tile = 4}), d, dv);
  prefix.append(s.K.topRows(12), s.V.topRows(12));

  SECTION("truncate forgets the dropped tokens, and appending continues after them") {
    cache.truncate(12);
    CHECK(cache.length() == 12);
    CHECK(cache.attend(s.Q.middleRows(8, 4)) == prefix.attend(s.Q.middleRows(8, 4)));
    cache.append(s.K.middleRows(12, 3), s.V.middleRows(12, 3));
    prefix.append(s.K.middleRows(12, 3), s.V.middleRows(12, 3));
    CHECK(cache.attend(s.Q.row(14)) == prefix.attend(s.Q.row(14)));
    CHECK(cache.keys() == s.K.topRows(15));
    CHECK(cache.values() == s.V.topRows(15));
  }
  SECTION("an empty cache answers zeros with statistic -inf") {
    KeyValueCache empty(Softmax(), d, dv);
    Matrix<float> statistics;
    CHECK(empty.attend(s.Q.topRows(2), statistics).isZero());
    CHECK(statistics.rows() == 2);
    CHECK(statistics(1, 0) == -std::numeric_limits<float>::infinity());
  }
  SECTION("wrong shapes name the argument and leave the cache as it was") {
    const Matrix<float> before = cache.attend(s.Q.row(29));
    const Matrix<float> wide = Matrix<float>::Zero(1, d + 1);
    REQUIRE_INVALID_ARGUMENT(cache.append(wide, s.V.topRows(1)), "keys are 1x7");
    REQUIRE_INVALID_ARGUMENT(cache.append(s.K.topRows(2), s.V.topRows(1)), "values 1x4");
    REQUIRE_INVALID_ARGUMENT(cache.attend(wide), "queries are 1x7");
    REQUIRE_INVALID_ARGUMENT(cache.truncate(31), "truncate: tokens must be in [0, 30]");
    REQUIRE_INVALID_ARGUMENT(cache.reserve(-1), "reserve: tokens must be >= 0");
    REQUIRE_INVALID_ARGUMENT(KeyValueCache(Softmax(), 0, dv), "key_dimension");
    CHECK(cache.length() == 30);
    CHECK(cache.attend(s.Q.row(29)) == before);
  }
}

}  // namespace test_key_value_cache
