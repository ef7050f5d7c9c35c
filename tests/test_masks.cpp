// The causal (both alignments), window and key-padding set filters against the reference's
// materialised masks, for every tiling (tile sizes that divide nothing, tiles of one query or one
// key), with an exponential-form kernel and a direct one. Rows that see no key must be exactly
// zero.
#include <cmath>
#include <limits>
#include <vector>

#include "catch.hpp"
#include "kernattn/mask/pooled.hpp"
#include "kernattn/mask/seen_keys.hpp"
#include "reference.hpp"

namespace test_masks {

namespace {

/// Checks `m` against `visible` with Exponential (online softmax; hidden pairs weigh exp(-inf))
/// and Polynomial of degree 2 (direct; hidden pairs weigh 0, visible ones >= 0 so every row sum
/// is well conditioned), on data with mean 0.5, d = 8, dv = 4.
template <class T, class Mask>
void check_mask(const Mask& m, const ref::Visibility& visible, std::uint32_t seed) {
  const ref::Problem p = ref::random_problem<T>(visible.rows(), visible.cols(), 8, 4, seed, 0.5);
  const double s = 1 / std::sqrt(8.0);
  {
    INFO("Exponential");
    check::mask_with_tilings<T>(p, kernels::Exponential<T>(), ref::exponential(s), m, visible);
  }
  {
    INFO("Polynomial, degree 2");
    check::mask_with_tilings<T>(p, kernels::Polynomial<T>(), ref::polynomial(2, 1, s), m, visible);
  }
}

constexpr Index huge = std::numeric_limits<Index>::max();

/// Key j is seen when some query sees it, asked pair by pair of the bound mask.
template <class Mask>
ref::Flags seen_pair_by_pair(const Mask& m, const mask::Shape& shape) {
  const auto bound = m.bind(shape);
  ref::Flags seen = ref::Flags::Constant(shape.keys, false);
  for (Index j = 0; j < shape.keys; ++j)
    for (Index i = 0; i < shape.queries; ++i) seen(j) = seen(j) || bool(bound.visible(i, j));
  return seen;
}

template <class Mask>
void check_seen_keys(const Mask& m, const mask::Shape& shape) {
  CAPTURE(shape.queries, shape.keys, shape.sequence);
  const ref::Flags seen = mask::seen_keys(m.bind(shape), shape.queries, shape.keys);
  REQUIRE(seen.size() == shape.keys);
  CHECK((seen == seen_pair_by_pair(m, shape)).all());
}

}  // namespace

TEMPLATE_TEST_CASE("Causal mask, aligned to the last key", "[masks][causal]", float, double) {
  using T = TestType;
  SECTION("Nq = Nk") { check_mask<T>(mask::Causal{}, ref::causal(37, 37), 301); }
  SECTION("Nq < Nk: query i sees keys 0..i + Nk - Nq") {
    check_mask<T>(mask::Causal{}, ref::causal(13, 37), 302);
  }
  SECTION("Nq > Nk: the first Nq - Nk queries see no key and are zero") {
    const ref::Visibility visible = ref::causal(37, 13);
    REQUIRE_FALSE(visible.topRows(24).any());
    REQUIRE(visible.bottomRows(13).rowwise().any().all());
    check_mask<T>(mask::Causal{}, visible, 303);
  }
  SECTION("one query sees every key") {
    const ref::Visibility visible = ref::causal(1, 20);
    REQUIRE(visible.all());
    check_mask<T>(mask::Causal{}, visible, 304);
  }
}

/// PyTorch's `is_causal=True`: `torch.ones(Nq, Nk).tril()`, query i sees keys j <= i.
ref::Visibility tril(Index nq, Index nk) {
  ref::Visibility v(nq, nk);
  for (Index i = 0; i < nq; ++i)
    for (Index j = 0; j < nk; ++j) v(i, j) = j <= i;
  return v;
}

TEMPLATE_TEST_CASE("Causal mask aligned to the first key (top-left, PyTorch's is_causal)",
                   "[masks][causal]", float, double) {
  using T = TestType;
  SECTION("Nq = Nk: the same as bottom-right") {
    REQUIRE((tril(29, 29) == ref::causal(29, 29)).all());
    check_mask<T>(mask::CausalTopLeft{}, tril(29, 29), 331);
  }
  SECTION("Nq < Nk: the keys after Nq - 1 are seen by no query") {
    check_mask<T>(mask::CausalTopLeft{}, tril(13, 37), 332);
  }
  SECTION("Nq > Nk: the last Nq - Nk queries see every key") {
    check_mask<T>(mask::CausalTopLeft{}, tril(37, 13), 333);
  }
  SECTION("with padding") {
    const ref::Flags valid = ref::random_visibility(31, 1, 0.7, 334).col(0);
    check_mask<T>(mask::CausalTopLeft{} && mask::KeyPadding::from_flags(valid),
                  tril(19, 31).array() && ref::valid_keys(19, valid).array(), 335);
  }
  SECTION("a top-left window (3, 1)") {
    ref::Visibility visible(17, 30);
    for (Index i = 0; i < 17; ++i)
      for (Index j = 0; j < 30; ++j) visible(i, j) = i - 3 <= j && j <= i + 1;
    check_mask<T>(mask::Window(3, 1, mask::Alignment::top_left), visible, 336);
  }
}

TEMPLATE_TEST_CASE("Window mask", "[masks][window]", float, double) {
  using T = TestType;
  SECTION("symmetric (3, 3)") { check_mask<T>(mask::Window(3, 3), ref::window(37, 37, 3, 3), 311); }
  SECTION("causal window (5, 0)") {
    check_mask<T>(mask::Window(5, 0), ref::window(37, 37, 5, 0), 312);
  }
  SECTION("(0, 0): each query sees only its aligned key") {
    check_mask<T>(mask::Window(0, 0), ref::window(23, 23, 0, 0), 313);
  }
  SECTION("(0, 2) with Nq < Nk") {
    check_mask<T>(mask::Window(0, 2), ref::window(20, 33, 0, 2), 314);
  }
  SECTION("(4, 1) with Nq > Nk: early queries see nothing") {
    const ref::Visibility visible = ref::window(33, 20, 4, 1);
    REQUIRE_FALSE(visible.row(0).any());
    check_mask<T>(mask::Window(4, 1), visible, 315);
  }
  SECTION("extents far beyond the lengths behave like the lengths") {
    check_mask<T>(mask::Window(huge, huge), ref::all_visible(19, 26), 316);
    check_mask<T>(mask::Window(huge, 0), ref::causal(19, 26), 317);
    check_mask<T>(mask::Window(0, huge), ref::window(19, 26, 0, 26), 318);
  }
}

TEMPLATE_TEST_CASE("Key padding mask", "[masks][padding]", float, double) {
  using T = TestType;
  SECTION("from flags") {
    const ref::Flags valid = ref::random_visibility(37, 1, 0.7, 321).col(0);
    check_mask<T>(mask::KeyPadding::from_flags(valid), ref::valid_keys(29, valid), 322);
  }
  SECTION("from flags, all keys padding: every row is zero") {
    const ref::Flags none = ref::Flags::Constant(37, false);
    check_mask<T>(mask::KeyPadding::from_flags(none), ref::valid_keys(29, none), 323);
  }
  SECTION("from lengths") {
    for (const Index length : {0, 1, 7, 23, 36, 37}) {
      CAPTURE(length);
      check_mask<T>(mask::KeyPadding::from_lengths({length}), ref::first_keys(29, 37, length), 324);
    }
  }
}

TEST_CASE("seen_keys is the union of the keys the queries see", "[masks][seen_keys]") {
  // Shapes across the 256-wide tiles of queries and keys, and the degenerate ones.
  const std::vector<mask::Shape> shapes = {{600, 530}, {530, 600}, {37, 37}, {1, 300},
                                           {300, 1},   {0, 12},    {12, 0}};
  for (const mask::Shape& shape : shapes) {
    check_seen_keys(mask::None{}, shape);
    check_seen_keys(mask::Causal{}, shape);
    check_seen_keys(mask::Window(3, 1), shape);
    check_seen_keys(mask::Window(0, 0), shape);
    check_seen_keys(mask::KeyPadding::from_lengths({shape.keys / 3}), shape);
    check_seen_keys(mask::Window(20, 0) && mask::KeyPadding::from_lengths({shape.keys / 2}), shape);
    check_seen_keys(mask::Boolean(ref::random_visibility(shape.queries, shape.keys, 0.002, 41)),
                    shape);
  }
  SECTION("some keys seen by no query, per-sequence flags and pooled windows") {
    const mask::Shape second{300, 280, 1, 2};
    ref::Flags valid = ref::random_visibility(2 * 280, 1, 0.5, 42).col(0);
    check_seen_keys(mask::KeyPadding::from_flags(valid), second);
    check_seen_keys(mask::Pooled<mask::Causal>{mask::Causal{}, 3, 840}, mask::Shape{700, 280});
    const ref::Flags seen = mask::seen_keys(mask::Window(2, 2).bind({600, 530}), 600, 530);
    CHECK(seen.count() == 530);
    const ref::Flags late = mask::seen_keys(mask::Causal{}.bind({5, 600}), 5, 600);
    CHECK(late.all());
  }
}

TEMPLATE_TEST_CASE(
    "Attention weights on request: the softmax of the masked scores, the PyTorch "
    "way",
    "[masks][weights]", float, double) {
  // softmax(q_i k_j / sqrt(d) + mask) with -inf where torch.tril hides (top-left) or the
  // bottom-right alignment hides, per sequence and head of a B x H layout; rows sum to 1, and to
  // 0 for a query that sees no key.
  using T = TestType;
  constexpr Index B = 2, H = 2, d = 4, nq = 7, nk = 5;
  using Matrix = kernattn::Matrix<T>;
  const Matrix Q = ref::normal(B * nq, H * d, 341).cast<T>();
  const Matrix K = ref::normal(B * nk, H * d, 342).cast<T>();
  const auto check = [&](const auto& attention, const ref::Visibility& visible) {
    const Matrix weights = attention.weights(Q, K, kernattn::BatchLayout{B, H});
    REQUIRE(weights.rows() == B * nq);
    REQUIRE(weights.cols() == H * nk);
    for (Index b = 0; b < B; ++b)
      for (Index h = 0; h < H; ++h)
        for (Index i = 0; i < nq; ++i) {
          Eigen::ArrayXd expected = Eigen::ArrayXd::Zero(nk);
          for (Index j = 0; j < nk; ++j)
            if (visible(i, j))
              expected(j) = std::exp(
                  double(Q.row(b * nq + i)
                             .segment(h * d, d)
                             .template cast<double>()
                             .dot(K.row(b * nk + j).segment(h * d, d).template cast<double>())) /
                  std::sqrt(double(d)));
          if (expected.sum() > 0) expected /= expected.sum();
          const Eigen::ArrayXd actual =
              weights.row(b * nq + i).segment(h * nk, nk).template cast<double>().transpose();
          CHECK((actual - expected).abs().maxCoeff() <= (std::is_same_v<T, float> ? 1e-6 : 1e-14));
        }
  };
  SECTION("top-left causal") {
    ref::Visibility visible(nq, nk);
    for (Index i = 0; i < nq; ++i)
      for (Index j = 0; j < nk; ++j) visible(i, j) = j <= i;
    check(kernattn::Attention<kernels::Exponential<T>, kernattn::magnitude::None,
                              mask::CausalTopLeft>(),
          visible);
  }
  SECTION("bottom-right causal: the first Nq - Nk rows are zero") {
    check(kernattn::Attention<kernels::Exponential<T>, kernattn::magnitude::None, mask::Causal>(),
          ref::causal(nq, nk));
  }
  SECTION("too many keys for a small problem") {
    const kernattn::Attention<kernels::Exponential<T>> softmax;
    CHECK_THROWS_WITH(softmax.weights(Matrix::Zero(1, d), Matrix::Zero(20000, d)),
                      Catch::Contains("too large"));
  }
}

}  // namespace test_masks
