// docs/math.md, section 1: exp(s q.k) = exp(-s|q-k|^2/2) exp(s|q|^2/2) exp(s|k|^2/2), so attention
// with the RBF kernel of variance sqrt(d) = 1/s and the magnitude Lp(p = 2) (mu = exp(s|k|^2/2)) is
// softmax attention, also where mu alone is far beyond the largest float or double.
#include <cmath>
#include <limits>

#include "catch.hpp"
#include "reference.hpp"

namespace test_decomposition {

namespace {

/// The identity's tolerance, relative to the largest output: 1e-5 in float, 1e-12 in double.
/// Both sides compute s q.k plus a per-key term that is exactly 0 in exact arithmetic; the
/// extra term's rounding (log mu and g(k) are each held to u_double |s|k|^2/2| before their sum
/// is rounded to the working precision) is far below these limits for |k| <= 100.
template <class T>
constexpr double identity_tolerance = std::is_same_v<T, float> ? 1e-5 : 1e-12;

/// Runs both sides of the identity on `p` (default d-dependent parameters) and compares them
/// with each other, with the stable double reference of softmax attention, and for finiteness.
template <class T>
void check_identity(const ref::Problem& p) {
  const Index d = p.Q.cols();
  const ref::Matrix<T> softmax = check::run<T>(p, kernels::Exponential<T>());
  const ref::Matrix<T> runtime_p = check::run<T>(p, kernels::Rbf<T>(), magnitude::Lp<T>(T(2)));
  const ref::Matrix<T> compile_time_p = check::run<T>(p, kernels::Rbf<T>(), magnitude::L2<T>());
  CHECK(softmax.allFinite());
  CHECK(runtime_p.allFinite());
  CHECK(compile_time_p.allFinite());

  const double scale = softmax.cwiseAbs().maxCoeff();
  const double tolerance = identity_tolerance<T> * scale;
  CHECK((runtime_p - softmax).cwiseAbs().maxCoeff() <= tolerance);
  CHECK((compile_time_p - softmax).cwiseAbs().maxCoeff() <= tolerance);

  const ref::Visibility all = ref::all_visible(p.Q.rows(), p.K.rows());
  constexpr double u = ref::unit_roundoff<T>;
  const double s = 1 / std::sqrt(double(d));
  const ref::Reference exact_softmax =
      ref::attention(p, ref::exponential(s), ref::unit_magnitude(), all, u);
  // Rbf x Lp(2) is held to softmax's own error bound: the library sums the key terms
  // -s|k|^2/2 + s|k|^2/2 in double before rounding (scalar_traits.hpp), so they cancel exactly
  // and only s q.k is rounded, as in softmax. (A model bounding the two terms separately would
  // allow an error ~ u s|k|^2/2, which is what this identity is about avoiding.)
  check::require_matches<T>(softmax, exact_softmax);
  check::require_matches<T>(runtime_p, exact_softmax);
  check::require_matches<T>(compile_time_p, exact_softmax);
}

/// Random queries with N(0, 1) entries, keys of norm `key_norm` in random directions.
template <class T>
ref::Problem large_key_problem(Index nq, Index nk, Index d, double key_norm, std::uint32_t seed) {
  return ref::rounded<T>({ref::normal(nq, d, seed), ref::on_sphere(nk, d, key_norm, seed + 1),
                          ref::normal(nk, 6, seed + 2)});
}

}  // namespace

TEMPLATE_TEST_CASE("Rbf x Lp(2) with default parameters is softmax attention", "[decomposition]",
                   float, double) {
  using T = TestType;
  SECTION("random inputs, d = 8") { check_identity<T>(ref::random_problem<T>(60, 80, 8, 6, 201)); }
  SECTION("random inputs, d = 32") {
    check_identity<T>(ref::random_problem<T>(40, 50, 32, 6, 202));
  }
  SECTION("keys of norm 30 at d = 16: mu = exp(s|k|^2/2) = exp(112.5) overflows float") {
    CHECK_FALSE(std::isfinite(std::exp(float(30.0 * 30.0 / (2 * std::sqrt(16.0))))));
    check_identity<T>(large_key_problem<T>(50, 60, 16, 30, 203));
  }
  SECTION("mixed key norms up to 30 at d = 16") {
    ref::Problem p = ref::random_problem<T>(50, 60, 16, 6, 204);
    p.K.topRows(20) = ref::on_sphere(20, 16, 30, 205);
    p.K.middleRows(20, 20) = ref::on_sphere(20, 16, 12, 206);
    check_identity<T>(ref::rounded<T>(p));
  }
  SECTION("keys of norm 100 at d = 4: mu = exp(2500) overflows even double") {
    CHECK_FALSE(std::isfinite(std::exp(100.0 * 100.0 / (2 * std::sqrt(4.0)))));
    check_identity<T>(large_key_problem<T>(50, 60, 4, 100, 207));
  }
}

}  // namespace test_decomposition
