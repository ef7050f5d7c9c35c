// MultiHead: per-head parameters against the naive reference, lists of different head types,
// batches, both engines, thread-count bit identity and errors.

#include <cmath>
#include <tuple>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "kernattn/heads/multi_head.hpp"
#include "kernattn/kernattn.hpp"
#include "reference.hpp"

namespace test_multi_head {

namespace {

using ref::MatrixXd;

/// The block of sequence b, head h (head dimension d, value dimension dv) of a problem.
ref::Problem head_block(const ref::Problem& p, Index sequences, Index heads, Index b, Index h) {
  const Index nq = p.Q.rows() / sequences;
  const Index nk = p.K.rows() / sequences;
  const Index d = p.Q.cols() / heads;
  const Index dv = p.V.cols() / heads;
  return {p.Q.block(b * nq, h * d, nq, d), p.K.block(b * nk, h * d, nk, d),
          p.V.block(b * nk, h * dv, nk, dv)};
}

}  // namespace

TEMPLATE_TEST_CASE(
    "MultiHead with per-head kernels and magnitudes matches the naive reference "
    "head by head",
    "[multi_head]", float, double) {
  using T = TestType;
  using Head = kernattn::Attention<kernels::Rbf<T>, magnitude::Lp<T>, mask::Causal>;
  const Index B = 2;
  const Index H = 3;
  const Index nq = 33;
  const Index nk = 41;
  const Index d = 8;
  const Index dv = 5;
  const std::vector<double> variances = {1.5, 3.0, 6.0};
  const std::vector<double> powers = {1.0, 2.0, 3.0};
  std::vector<Head> heads;
  for (Index h = 0; h < H; ++h)
    heads.emplace_back(kernels::Rbf<T>(T(variances[std::size_t(h)])),
                       magnitude::Lp<T>(T(powers[std::size_t(h)])));
  const kernattn::MultiHead<Head> multi_head(heads);
  CHECK(multi_head.head_count() == H);

  const ref::Problem p = ref::random_problem<T>(B * nq, B * nk, H * d, H * dv, 314);
  const ref::Matrix<T> out = multi_head(p.q<T>(), p.k<T>(), p.v<T>(), kernattn::BatchLayout{B});
  const ref::Matrix<T> same = multi_head(p.q<T>(), p.k<T>(), p.v<T>(), kernattn::BatchLayout{B, H});
  CHECK(check::identical(out, same));

  for (Index b = 0; b < B; ++b)
    for (Index h = 0; h < H; ++h) {
      CAPTURE(b, h);
      const ref::Problem block = head_block(p, B, H, b, h);
      const double variance = double(T(variances[std::size_t(h)]));
      const ref::Reference expected = ref::attention(
          block, ref::rbf(variance), ref::lp(powers[std::size_t(h)], ref::default_gamma(d), 2),
          ref::causal(nq, nk), ref::unit_roundoff<T>);
      const auto part = out.block(b * nq, h * dv, nq, dv);
      check::require_matches<T>(part, expected);
      // Bit for bit what the head gives on its own columns.
      const ref::Matrix<T> alone = heads[std::size_t(h)](block.q<T>(), block.k<T>(), block.v<T>());
      CHECK(check::identical(part, alone));
    }
}

TEMPLATE_TEST_CASE(
    "MultiHead over a list of different head types: exact softmax, linear "
    "FAVOR+, exact random features, each equal to its own call",
    "[multi_head]", float, double) {
  using T = TestType;
  using Softmax =
      kernattn::Attention<kernels::Exponential<T>, kernattn::magnitude::None, mask::KeyPadding>;
  using Performer = kernattn::LinearAttention<kernattn::features::Positive<T>>;
  using Fourier =
      kernattn::Attention<kernels::RandomFeature<kernattn::features::Fourier<T>>, magnitude::Lp<T>>;
  const Index B = 3;
  const Index nq = 20;
  const Index nk = 26;
  const Index d = 6;
  const Index dv = 4;
  const mask::KeyPadding padding = mask::KeyPadding::from_lengths({26, 10, 1});
  const Softmax softmax(kernels::Exponential<T>(), {}, padding);
  const Performer performer(kernattn::features::Positive<T>::draw(32, d, {1, 2}));
  const Fourier fourier(
      kernels::RandomFeature<kernattn::features::Fourier<T>>(kernattn::features::Fourier<T>::draw(
          kernattn::spectral::Gaussian<T>(T(2)), 64, d, {3, 4})),
      magnitude::Lp<T>(T(3)));
  const kernattn::MultiHead<kernattn::Heads<Softmax, Performer, Fourier>> multi_head(
      std::tuple(softmax, performer, fourier));
  CHECK(multi_head.head_count() == 3);

  const ref::Problem p = ref::random_problem<T>(B * nq, B * nk, 3 * d, 3 * dv, 27);
  const ref::Matrix<T> out = multi_head(p.q<T>(), p.k<T>(), p.v<T>(), kernattn::BatchLayout{B});
  const auto column = [&](const ref::Matrix<T>& m, Index h, Index width) {
    return ref::Matrix<T>(m.middleCols(h * width, width));
  };
  const kernattn::BatchLayout layout{B};
  CHECK(check::identical(column(out, 0, dv), softmax(column(p.q<T>(), 0, d), column(p.k<T>(), 0, d),
                                                     column(p.v<T>(), 0, dv), layout)));
  CHECK(check::identical(
      column(out, 1, dv),
      performer(column(p.q<T>(), 1, d), column(p.k<T>(), 1, d), column(p.v<T>(), 1, dv), layout)));
  CHECK(check::identical(column(out, 2, dv), fourier(column(p.q<T>(), 2, d), column(p.k<T>(), 2, d),
                                                     column(p.v<T>(), 2, dv), layout)));
  // The softmax head still matches the reference, padding and all.
  for (Index b = 0; b < B; ++b) {
    const ref::Reference expected =
        ref::attention(head_block(p, B, 3, b, 0), ref::exponential(1 / std::sqrt(double(d))),
                       ref::unit_magnitude(), ref::first_keys(nq, nk, std::vector{26, 10, 1}[b]),
                       ref::unit_roundoff<T>);
    check::require_matches<T>(out.block(b * nq, 0, nq, dv), expected);
  }
}

TEST_CASE("MultiHead results are bit-identical for every thread count", "[multi_head][threads]") {
  using Head =
      kernattn::LinearAttention<kernattn::features::Fourier<float>, magnitude::None, mask::Causal>;
  using Recipe =
      kernattn::SampledHead<kernattn::spectral::Gaussian<float>, Head (*)(kernattn::Matrix<float>)>;
  const auto build = +[](kernattn::Matrix<float> omega) {
    return Head(kernattn::features::Fourier<float>(std::move(omega)));
  };
  // 5 heads run one after another on 2 or 3 threads, 6 heads in parallel.
  for (const int H : {5, 6}) {
    std::vector<Recipe> recipes;
    for (int h = 0; h < H; ++h)
      recipes.push_back({kernattn::spectral::Gaussian<float>(1.0f + float(h)), 16 + 8 * h, build});
    MatrixXd correlation = MatrixXd::Constant(H, H, 0.3);
    correlation.diagonal().setOnes();
    auto multi_head = kernattn::MultiHead<Head, kernattn::coupling::GaussianCopula>::draw(
        kernattn::coupling::GaussianCopula(correlation), recipes, 8, {11, 0});
    const ref::Problem p = ref::random_problem<float>(2 * 150, 2 * 150, H * 8, H * 3, 8);
    const ref::Matrix<float> one =
        multi_head.set_threads(1)(p.q<float>(), p.k<float>(), p.v<float>(), {2});
    for (const int threads : {2, 3, 0}) {
      CAPTURE(H, threads);
      const ref::Matrix<float> many =
          multi_head.set_threads(threads)(p.q<float>(), p.k<float>(), p.v<float>(), {2});
      CHECK(check::identical(one, many));
    }
    CHECK(one.allFinite());
  }
}

namespace {
/// The user-defined head of the AttentionHead documentation.
struct MeanOfValues {
  using Scalar = float;
  template <class Q, class K, class V, class Out>
  void compute(const Q& q, const K&, const V& v, Out&& out, kernattn::BatchLayout layout) const {
    const kernattn::Index nq = q.rows() / layout.sequences, nk = v.rows() / layout.sequences;
    for (kernattn::Index b = 0; b < layout.sequences; ++b)
      out.middleRows(b * nq, nq).rowwise() = v.middleRows(b * nk, nk).colwise().mean();
  }
};
}  // namespace

TEST_CASE("A user-defined head next to a library head", "[multi_head][extension]") {
  using Softmax = kernattn::Attention<kernels::Exponential<float>>;
  static_assert(kernattn::AttentionHead<MeanOfValues>);
  const kernattn::MultiHead<kernattn::Heads<Softmax, MeanOfValues>> multi_head(
      std::tuple<Softmax, MeanOfValues>{});
  const ref::Problem p = ref::random_problem<float>(2 * 9, 2 * 7, 2 * 3, 2 * 2, 60);
  const ref::Matrix<float> out = multi_head(p.q<float>(), p.k<float>(), p.v<float>(), {2});
  for (Index b = 0; b < 2; ++b) {
    const ref::Matrix<float> mean = p.v<float>().block(b * 7, 2, 7, 2).colwise().mean();
    for (Index i = 0; i < 9; ++i) CHECK(check::identical(out.block(b * 9 + i, 2, 1, 2), mean));
  }
  const ref::Matrix<float> softmax =
      Softmax()(p.q<float>().leftCols(3), p.k<float>().leftCols(3), p.v<float>().leftCols(2), {2});
  CHECK(check::identical(out.leftCols(2), softmax));
}

TEST_CASE("MultiHead rejects bad input with messages that name it", "[multi_head][errors]") {
  using Head = kernattn::Attention<kernels::Exponential<float>>;
  REQUIRE_INVALID_ARGUMENT(kernattn::MultiHead<Head>(std::vector<Head>{}), "at least one head");
  REQUIRE_INVALID_ARGUMENT(kernattn::MultiHead<Head>(std::vector<Head>(2), {-1}),
                           "threads must be >= 0");
  const kernattn::MultiHead<Head> multi_head(std::vector<Head>(4));
  const kernattn::Matrix<float> Q = kernattn::Matrix<float>::Ones(10, 16);
  const kernattn::Matrix<float> V = kernattn::Matrix<float>::Ones(10, 8);
  REQUIRE_INVALID_ARGUMENT(multi_head(Q, Q, V, kernattn::BatchLayout{1, 3}),
                           "the layout has 3 heads but the MultiHead has 4");
  REQUIRE_INVALID_ARGUMENT(multi_head(Q.leftCols(14), Q.leftCols(14), V), "multiple of 4 columns");
  REQUIRE_INVALID_ARGUMENT(multi_head(Q, Q.topRows(9), V), "one value per key");

  using Linear = kernattn::LinearAttention<kernattn::features::Positive<float>>;
  const kernattn::MultiHead<Linear> linear(
      std::vector(2, Linear(kernattn::features::Positive<float>::draw(8, 3, {0, 0}))));
  // A head's own check names its slice; the multi-head names the caller's Q, K and V first.
  REQUIRE_INVALID_ARGUMENT(
      linear(Q.leftCols(8), Q.leftCols(8), V),
      "MultiHead: head 0 of 2 (columns [0, 4) of Q 10x8 and K 10x8, columns [0, 4) of V 10x8, 1 "
      "sequence(s)): LinearAttention: the head dimension is 4 (Q is 10x4 for 1 head(s)) but the "
      "feature map takes d = 3");
  REQUIRE_INVALID_ARGUMENT(linear(Q, Q, V, {2}),
                           "MultiHead: head 0 of 2 (columns [0, 8) of Q 10x16 and K 10x16, "
                           "columns [0, 4) of V 10x8, 2 sequence(s)): LinearAttention: the head "
                           "dimension is 8");

  // The failing head is named, and with several failures the first one, for any thread count.
  using Padded =
      kernattn::Attention<kernels::Exponential<float>, magnitude::None, mask::KeyPadding>;
  using Mixed = kernattn::MultiHead<kernattn::Heads<Head, Padded, Padded>>;
  const Padded fits(kernels::Exponential<float>(), {}, mask::KeyPadding::from_lengths({10}));
  const Padded too_long(kernels::Exponential<float>(), {}, mask::KeyPadding::from_lengths({11}));
  for (const int threads : {1, 2, 3}) {
    CAPTURE(threads);
    const Mixed second_fails({Head(), too_long, fits}, {threads});
    REQUIRE_INVALID_ARGUMENT(second_fails(Q.leftCols(12), Q.leftCols(12), V.leftCols(6)),
                             "MultiHead: head 1 of 3 (columns [4, 8) of Q 10x12 and K 10x12, "
                             "columns [2, 4) of V 10x6, 1 sequence(s)): KeyPadding: valid length "
                             "11 exceeds the 10 keys of sequence 0");
    const Mixed both_fail({Head(), too_long, too_long}, {threads});
    REQUIRE_INVALID_ARGUMENT(both_fail(Q.leftCols(12), Q.leftCols(12), V.leftCols(6)),
                             "MultiHead: head 1 of 3");
    CHECK(Mixed({Head(), fits, fits}, {threads})(Q.leftCols(12), Q.leftCols(12), V.leftCols(6))
              .allFinite());
  }

  const auto recipe = kernattn::SampledHead{
      kernattn::spectral::Gaussian<float>(1.0f), 0, [](kernattn::Matrix<float> omega) {
        return Linear(kernattn::features::Positive<float>(omega));
      }};
  REQUIRE_INVALID_ARGUMENT(kernattn::MultiHead<Linear>::draw({}, std::vector(2, recipe), 4, {0, 0}),
                           "M (the number of frequencies) must be >= 1");
}

TEMPLATE_TEST_CASE("GroupedQuery equals attention over K and V repeated per query head",
                   "[multi-head][grouped-query]", float, double) {
  // The PyTorch way: K and V repeat_interleave'd from H_kv to H_q heads, then H_q independent
  // heads; grouped-query attention must give the same bits without the copies. H_kv = 2 of
  // H_q = 6 (g = 3), and multi-query (H_kv = 1), causal RBF x L^3, B = 2 sequences.
  using T = TestType;
  using Matrix = kernattn::Matrix<T>;
  using Head = kernattn::Attention<kernattn::kernels::Rbf<T>, kernattn::magnitude::Lp<T>,
                                   kernattn::mask::Causal>;
  const Head head({}, kernattn::magnitude::Lp<T>(T(3)));
  constexpr Index B = 2, nq = 13, nk = 17, d = 4, dv = 3, Hq = 6;
  const Matrix Q = ref::normal(B * nq, Hq * d, 351).cast<T>();
  for (const Index Hkv : {Index(2), Index(1)}) {
    CAPTURE(Hkv);
    const Matrix K = ref::normal(B * nk, Hkv * d, 352).cast<T>();
    const Matrix V = ref::normal(B * nk, Hkv * dv, 353).cast<T>();
    Matrix repeated_K(B * nk, Hq * d), repeated_V(B * nk, Hq * dv);
    const Index g = Hq / Hkv;
    for (Index h = 0; h < Hq; ++h) {
      repeated_K.middleCols(h * d, d) = K.middleCols((h / g) * d, d);
      repeated_V.middleCols(h * dv, dv) = V.middleCols((h / g) * dv, dv);
    }
    const Matrix expected = head(Q, repeated_K, repeated_V, kernattn::BatchLayout{B, Hq});
    const kernattn::GroupedQuery grouped(head, Hq, Hkv);
    CHECK(grouped.group_size() == g);
    CHECK(grouped(Q, K, V, B) == expected);
  }
  const Matrix K = ref::normal(B * nk, 2 * d, 354).cast<T>();
  const Matrix V = ref::normal(B * nk, 2 * dv, 355).cast<T>();
  REQUIRE_INVALID_ARGUMENT(
      kernattn::GroupedQuery(head, 6, 4),
      "query heads (6) must be a positive multiple of the key/value heads (4)");
  const kernattn::GroupedQuery grouped(head, Hq, 2);
  REQUIRE_INVALID_ARGUMENT(grouped(Q, Matrix(B * nk, 3 * d), V, B),
                           "must have 2 key heads x d = 4 columns");
  REQUIRE_INVALID_ARGUMENT(grouped(Q, K, Matrix(B * nk + 1, 2 * dv), B), "V is");
  Matrix too_narrow(B * nq, 5);
  REQUIRE_INVALID_ARGUMENT(grouped.compute(Q, K, V, too_narrow, B), "out is");
  REQUIRE_INVALID_ARGUMENT(grouped(Q, K, V, 3), "GroupedQuery: query head 0 of 6");
}

}  // namespace test_multi_head
