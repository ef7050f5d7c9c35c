// Boolean masks, intersections of masks, and masks combined with magnitudes: a key a query
// cannot see must not change that query's output, whatever its magnitude.
#include <cmath>

#include "catch.hpp"
#include "reference.hpp"

namespace test_masks_combined {

namespace {

/// A random boolean matrix (each pair visible with probability 0.4) with one row that sees
/// nothing and one that sees everything.
ref::Visibility boolean_visibility(Index nq, Index nk, std::uint32_t seed) {
  ref::Visibility allowed = ref::random_visibility(nq, nk, 0.4, seed);
  allowed.row(3).setConstant(false);
  allowed.row(5).setConstant(true);
  return allowed;
}

}  // namespace

TEMPLATE_TEST_CASE("Boolean mask", "[masks][boolean]", float, double) {
  using T = TestType;
  const ref::Visibility allowed = boolean_visibility(29, 37, 401);
  const ref::Problem p = ref::random_problem<T>(29, 37, 8, 4, 402, 0.5);
  const double s = 1 / std::sqrt(8.0);
  SECTION("Exponential") {
    check::mask_with_tilings<T>(p, kernels::Exponential<T>(), ref::exponential(s),
                                mask::Boolean(allowed), allowed);
  }
  SECTION("Polynomial, degree 2") {
    check::mask_with_tilings<T>(p, kernels::Polynomial<T>(), ref::polynomial(2, 1, s),
                                mask::Boolean(allowed), allowed);
  }
}

TEMPLATE_TEST_CASE("Intersection of causal and key padding masks", "[masks][intersection]", float,
                   double) {
  using T = TestType;
  const ref::Problem p = ref::random_problem<T>(37, 37, 8, 4, 411, 0.5);
  const double s = 1 / std::sqrt(8.0);
  const auto both = mask::Causal{} && mask::KeyPadding::from_lengths({20});
  CHECK(std::is_same_v<std::remove_const_t<decltype(both)>,
                       mask::Intersection<mask::Causal, mask::KeyPadding>>);
  const ref::Visibility visible = ref::causal(37, 37) && ref::first_keys(37, 37, 20);
  SECTION("Exponential") {
    check::mask_with_tilings<T>(p, kernels::Exponential<T>(), ref::exponential(s), both, visible);
  }
  SECTION("Polynomial, degree 2") {
    check::mask_with_tilings<T>(p, kernels::Polynomial<T>(), ref::polynomial(2, 1, s), both,
                                visible);
  }
  SECTION("with flags: queries 0..3 see only padding") {
    ref::Flags valid = ref::Flags::Constant(37, true);
    valid.head(4).setConstant(false);
    valid.segment(17, 6).setConstant(false);
    check::mask_with_tilings<T>(p, kernels::Exponential<T>(), ref::exponential(s),
                                mask::Causal{} && mask::KeyPadding::from_flags(valid),
                                ref::causal(37, 37) && ref::valid_keys(37, valid));
  }
}

namespace {

/// Keys with N(1, 1) entries (d = 16) except the last, of norm `big_norm`: under Lp(2) its
/// log-magnitude s|k|^2/2 exceeds the others' by more than the exponent range of T, so every
/// other key's mu, divided by the largest, underflows to 0 in T.
template <class T>
ref::Problem one_huge_key(double big_norm) {
  ref::Problem p = ref::random_problem<T>(20, 20, 16, 3, 421, 1.0);
  p.K.row(19) = ref::on_sphere(1, 16, big_norm, 422);
  return ref::rounded<T>(p);
}

/// A norm whose log-magnitude gap to N(1, 1) keys (|k|^2 ~ 32) exceeds T's exponent range.
template <class T>
constexpr double big_norm = std::is_same_v<T, float> ? 30.0 : 110.0;

}  // namespace

TEMPLATE_TEST_CASE("A hidden key's magnitude does not change the queries that cannot see it",
                   "[masks][magnitude]", float, double) {
  // out_i depends only on the keys query i sees (docs/math.md, section 1), however large the
  // magnitude of a key it cannot see: weights must be taken relative to the largest visible one.
  using T = TestType;
  const ref::Problem p = one_huge_key<T>(big_norm<T>);
  const double gamma = ref::default_gamma(16);
  REQUIRE(std::exp(T(gamma * (big_norm<T> * big_norm<T> - 4 * 16 * 2))) ==
          std::numeric_limits<T>::infinity());
  const auto lp2 = ref::lp(2, gamma, 2);
  const double s = 1 / std::sqrt(16.0);
  const auto check_all = [&](const auto& m, const ref::Visibility& visible) {
    const auto check_form = [&](const auto& kernel, const ref::KernelModel& model) {
      const ref::Reference expected = ref::attention(p, model, lp2, visible, ref::unit_roundoff<T>);
      for (const kernattn::ExecutionOptions& options : check::tilings) {
        CAPTURE(options.query_tile, options.key_tile);
        check::require_matches<T>(check::run<T>(p, kernel, magnitude::Lp<T>(2), m, options),
                                  expected);
      }
    };
    check_form(kernels::Linear<T>(), ref::linear());
    check_form(kernels::Polynomial<T>(), ref::polynomial(2, 1, s));
    check_form(kernels::Exponential<T>(), ref::exponential(s));
  };
  SECTION("causal: every query but the last cannot see the last key") {
    check_all(mask::Causal{}, ref::causal(20, 20));
  }
  SECTION("key padding: the huge key is padding") {
    check_all(mask::KeyPadding::from_lengths({19}), ref::first_keys(20, 20, 19));
  }
}

}  // namespace test_masks_combined
