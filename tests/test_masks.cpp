// The causal, window and key-padding set filters against the reference's materialised masks,
// for every tiling (tile sizes that divide nothing, tiles of one query or one key), with an
// exponential-form kernel and a direct one. Rows that see no key must be exactly zero.
#include <cmath>
#include <limits>

#include "catch.hpp"
#include "reference.hpp"

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
