// Attention-SH (ScaledHead) and Attention-BN (BatchNormalized) under hostile input: pooling factors
// up to the largest Index in time linear in the tokens, empty inputs in every layout, the pooled
// causal filter's pairs and tile coverage for any factor, and bad parameters. Built by the
// sanitizer preset as well (docs/portability.md).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "kernattn/heads/batch_normalized.hpp"
#include "kernattn/heads/scaled_head.hpp"
#include "kernattn/kernattn.hpp"
#include "pooling.hpp"
#include "reference.hpp"

namespace test_primal_dual_hostile {

TEMPLATE_TEST_CASE(
    "ScaledHead takes any pooling factor up to the largest Index, in time linear in the tokens",
    "[scaled_heads][hostile]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const Index n = 6;
  const Index d = 3;
  const ref::Problem p = ref::random_problem<T>(n, n, d, 2, 501);
  using RowMajor = kernattn::RowMajorMatrix<T>;
  const RowMajor q_rows = p.q<T>();
  const RowMajor k_rows = p.k<T>();
  const RowMajor v_rows = p.v<T>();
  using Map = kernattn::features::Positive<T>;
  const Map map = Map::draw(16, d, {21, 0});
  using Causal = kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::Causal>;
  using Padded = kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::KeyPadding>;
  using Linear = kernattn::LinearAttention<Map, magnitude::None, mask::Causal>;
  using Quadratic = kernattn::Attention<kernels::RandomFeature<Map>, magnitude::None, mask::Causal>;
  const Index largest = std::numeric_limits<Index>::max();
  const auto start = std::chrono::steady_clock::now();
  for (const Index r :
       {Index(7), Index(1'000'000'000), Index(1) << 40, Index(1) << 62, largest - 1, largest}) {
    CAPTURE(r);
    // Every factor from N on pools the whole sequence into one window: query i < N - 1 sees its
    // partial window, the mean of tokens 0..i, and the last query the window.
    const auto [pool, visible] = ref::pooled_causal<T>(p, r, ref::causal(n, n));
    REQUIRE(pool.K.rows() == 1 + n);
    const kernattn::ScaledHead<Causal> causal(Causal(), r);
    const ref::Matrix<T> out = causal(p.q<T>(), p.k<T>(), p.v<T>());
    check::require_matches<T>(
        out, ref::attention(pool, ref::exponential(1 / std::sqrt(double(d))), ref::unit_magnitude(),
                            visible, ref::unit_roundoff<T>));
    CHECK(check::identical(causal(q_rows, k_rows, v_rows), out));
    // Padding: the one window holds a padded token, so no query sees a key.
    const kernattn::ScaledHead<Padded> padded(
        Padded(kernels::Exponential<T>(), {}, mask::KeyPadding::from_lengths({4})), r);
    CHECK(padded(q_rows, k_rows, v_rows).isZero(0));
    // No mask: one window, the mean of every token; with one visible key the output is its value.
    const kernattn::ScaledHead<kernattn::Attention<kernels::Exponential<T>>> plain({}, r);
    const ref::Matrix<T> everything = plain(q_rows, k_rows, v_rows);
    for (Index i = 0; i < n; ++i)
      CHECK(check::identical(everything.row(i), ref::mean_of<T>(p.V, 0, n).template cast<T>()));
    // The linear engine agrees with the exact engine on the same features.
    const ref::Matrix<T> fast =
        kernattn::ScaledHead<Linear>(Linear(map), r)(q_rows, k_rows, v_rows);
    const ref::Matrix<T> exact = kernattn::ScaledHead<Quadratic>(
        Quadratic(kernels::RandomFeature<Map>(map)), r)(q_rows, k_rows, v_rows);
    const double tolerance = std::is_same_v<T, float> ? 1e-5 : 1e-13;
    CHECK((fast - exact).cwiseAbs().maxCoeff() <= tolerance * exact.cwiseAbs().maxCoeff());
  }
  // Pooling by r used to loop r times: 2^40 took minutes. Linear in N, all of the above takes
  // milliseconds; the bound leaves a factor of 1000 for slow (sanitised) builds.
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(seconds < 10.0);
}

TEMPLATE_TEST_CASE(
    "ScaledHead with zero keys outputs zeros and with zero queries or value columns an empty "
    "output, for every head and layout",
    "[scaled_heads][empty]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  using RowMajor = kernattn::RowMajorMatrix<T>;
  using Map = kernattn::features::Positive<T>;
  const Map map = Map::draw(8, 8, {22, 0});
  using Causal = kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::Causal>;
  using Padded = kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::KeyPadding>;
  using Linear = kernattn::LinearAttention<Map, magnitude::None, mask::Causal>;
  using Normalised = kernattn::BatchNormalized<kernattn::Attention<kernels::Exponential<T>>>;
  const auto each_head = [&](const auto& check_head) {
    for (const Index r : {Index(2), Index(5), std::numeric_limits<Index>::max()}) {
      CAPTURE(r);
      check_head(kernattn::ScaledHead<Causal>(Causal(), r));
      check_head(kernattn::ScaledHead<Padded>(
          Padded(kernels::Exponential<T>(), {}, mask::KeyPadding::from_lengths({0})), r));
      check_head(kernattn::ScaledHead<Linear>(Linear(map), r));
      check_head(kernattn::ScaledHead<Normalised>(
          Normalised(kernattn::Attention<kernels::Exponential<T>>()), r));
      check_head(kernattn::scaled_heads(Causal(), {r, r}));
    }
  };
  for (const Index B : {1, 3}) {
    CAPTURE(B);
    const ref::Matrix<T> q = ref::Matrix<T>::Ones(B * 5, 8);
    const kernattn::BatchLayout layout{B, 1};
    each_head([&](const auto& attention) {
      const ref::Matrix<T> no_keys =
          attention(q, ref::Matrix<T>(0, 8), ref::Matrix<T>(0, 6), layout);
      CHECK((no_keys.rows() == B * 5 && no_keys.cols() == 6 && no_keys.isZero(0)));
      const ref::Matrix<T> no_keys_rows =
          attention(RowMajor(q), RowMajor(0, 8), RowMajor(0, 6), layout);
      CHECK((no_keys_rows.rows() == B * 5 && no_keys_rows.isZero(0)));
      const ref::Matrix<T> keys = ref::Matrix<T>::Ones(B * 7, 8);
      const ref::Matrix<T> no_queries = attention(ref::Matrix<T>(0, 8), keys, keys, layout);
      CHECK((no_queries.rows() == 0 && no_queries.cols() == 8));
      const ref::Matrix<T> no_values = attention(q, keys, ref::Matrix<T>(B * 7, 0), layout);
      CHECK((no_values.rows() == B * 5 && no_values.cols() == 0));
    });
  }
}

TEST_CASE(
    "mask::PooledCausal: the pairs follow the rule and every tile's coverage agrees with its "
    "pairs, for any factor",
    "[scaled_heads][masks]") {
  const Index largest = std::numeric_limits<Index>::max();
  const auto check_filter = [](const auto& filter, Index nq, Index nk, Index r,
                               const ref::Visibility& tokens) {
    const Index windows = ref::window_count(nk, r);
    const auto bound = filter.bind(mask::Shape{nq, windows + nq});
    const ref::Problem shape_only{ref::MatrixXd::Zero(nq, 1), ref::MatrixXd::Zero(nk, 1),
                                  ref::MatrixXd::Zero(nk, 1)};
    const ref::Visibility visible = ref::pooled_causal<double>(shape_only, r, tokens).second;
    Index mismatches = 0;
    for (Index i = 0; i < nq; ++i)
      for (Index j = 0; j < windows + nq; ++j) mismatches += bound.visible(i, j) != visible(i, j);
    CHECK(mismatches == 0);
    Index wrong_tiles = 0;
    for (const auto& [rows, cols] : {std::pair<Index, Index>{1, 1}, {3, 4}, {5, 2}, {64, 64}})
      for (Index i = 0; i < nq; i += rows)
        for (Index j = 0; j < windows + nq; j += cols) {
          const mask::Range tile_rows{i, std::min(i + rows, nq)};
          const mask::Range tile_cols{j, std::min(j + cols, windows + nq)};
          const auto block =
              visible.block(tile_rows.begin, tile_cols.begin, tile_rows.end - tile_rows.begin,
                            tile_cols.end - tile_cols.begin);
          switch (bound.coverage(tile_rows, tile_cols)) {
            case mask::Coverage::full:
              wrong_tiles += !block.all();
              break;
            case mask::Coverage::hidden:
              wrong_tiles += block.any();
              break;
            case mask::Coverage::partial:
              break;
          }
        }
    CHECK(wrong_tiles == 0);
  };
  for (const auto& [nq, nk] :
       {std::pair<Index, Index>{37, 37}, {12, 37}, {45, 33}, {1, 9}, {9, 1}}) {
    const ref::Flags valid = ref::random_visibility(nk, 1, 0.8, 93).col(0);
    for (const Index r : {Index(1), Index(2), Index(3), Index(8), Index(40), Index(1) << 40,
                          largest - 1, largest}) {
      CAPTURE(nq, nk, r);
      check_filter(mask::PooledCausal<mask::Causal>{mask::Causal{}, r, nk}, nq, nk, r,
                   ref::causal(nq, nk));
      check_filter(
          mask::PooledCausal<mask::Intersection<mask::Causal, mask::KeyPadding>>{
              mask::Causal{} && mask::KeyPadding::from_flags(valid), r, nk},
          nq, nk, r, ref::causal(nq, nk) && ref::valid_keys(nq, valid));
      check_filter(
          mask::PooledCausal<mask::Intersection<mask::Window, mask::Causal>>{
              mask::Window(4, 0) && mask::Causal{}, r, nk},
          nq, nk, r, ref::window(nq, nk, 4, 0));
    }
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
  using Map = kernattn::features::Positive<float>;
  using Linear = kernattn::LinearAttention<Map, magnitude::None, mask::Causal>;
  REQUIRE_INVALID_ARGUMENT(
      kernattn::ScaledHead<Linear>(Linear(Map::draw(8, 3, {1, 0})), 2)(x, x, x),
      "ScaledHead: the head dimension is 4");
  REQUIRE_INVALID_ARGUMENT((mask::PooledCausal<mask::Causal>{mask::Causal{}, 3, 10}.bind({5, 8})),
                           "10 tokens pooled by 3 give 4 windows and 5 partial windows, 9 keys");
  REQUIRE_INVALID_ARGUMENT((mask::Pooled<mask::Causal>{mask::Causal{}, 0, 10}.bind({5, 8})),
                           "pooling factor must be >= 1");
}

}  // namespace test_primal_dual_hostile
