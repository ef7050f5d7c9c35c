// Non-finite data reach exactly the outputs that depend on them: a NaN in a query, key or value
// makes NaN only the rows that see it; a padded (invisible) NaN or infinity changes nothing.
// Each check runs one kernel per engine form (dot-product, distance, direct) and tilings that
// put the poisoned key inside a partially visible tile.
#include <cmath>
#include <limits>
#include <vector>

#include "catch.hpp"
#include "reference.hpp"

namespace test_nonfinite {

namespace {

using check::Entries;

constexpr double not_a_number = std::numeric_limits<double>::quiet_NaN();
constexpr double infinity = std::numeric_limits<double>::infinity();

/// The default tiles, and small ones that divide nothing.
const std::vector<kernattn::ExecutionOptions> small_tilings = {
    kernattn::ExecutionOptions{}, {0, 3, 4}, {0, 1, 1}, {0, 5, 7}};

/// For Exponential (dot-product form, no magnitude), Matern 5/2 x Lp(3) (distance form) and
/// Linear x Lp(2) (direct form), all at d = 8 with default parameters, and for every tiling:
/// runs the library with mask `m` on `poisoned` and on `clean`, and calls
/// inspect(poisoned output, clean output, reference for `clean` under `visible`).
template <class T, class Mask, class Check>
void for_each_form(const ref::Problem& clean, const ref::Problem& poisoned, const Mask& m,
                   const ref::Visibility& visible,
                   const std::vector<kernattn::ExecutionOptions>& tilings, const Check& inspect) {
  const auto run_form = [&](const auto& kernel, const auto& mu, const ref::KernelModel& km,
                            const ref::MagnitudeModel& mm) {
    const ref::Reference expected = ref::attention(clean, km, mm, visible, ref::unit_roundoff<T>);
    for (const kernattn::ExecutionOptions& options : tilings) {
      CAPTURE(options.query_tile, options.key_tile);
      inspect(check::run<T>(poisoned, kernel, mu, m, options),
              check::run<T>(clean, kernel, mu, m, options), expected);
    }
  };
  const double gamma = ref::default_gamma(8);
  {
    INFO("Exponential");
    run_form(kernels::Exponential<T>(), magnitude::None{}, ref::exponential(1 / std::sqrt(8.0)),
             ref::unit_magnitude());
  }
  {
    INFO("Matern 5/2 x Lp(3)");
    run_form(kernels::Matern52<T>(), magnitude::Lp<T>(T(3)), ref::matern(5, std::pow(8.0, 0.25)),
             ref::lp(3, gamma, 2));
  }
  {
    INFO("Linear x Lp(2)");
    run_form(kernels::Linear<T>(), magnitude::Lp<T>(T(2)), ref::linear(), ref::lp(2, gamma, 2));
  }
}

/// Whether every entry of row i is NaN.
template <class Derived>
bool nan_row(const Eigen::MatrixBase<Derived>& m, Index i) {
  return m.row(i).array().isNaN().all();
}

template <class T>
using Out = ref::Matrix<T>;

}  // namespace

TEMPLATE_TEST_CASE("A NaN in one query makes only that output row NaN", "[nonfinite]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const ref::Problem clean = ref::random_problem<T>(20, 25, 8, 3, 701, 1.0);
  ref::Problem poisoned = clean;
  poisoned.Q(7, 2) = not_a_number;
  Entries other_rows = Entries::Constant(20, 3, true);
  other_rows.row(7).setConstant(false);
  for_each_form<T>(clean, poisoned, mask::None{}, ref::all_visible(20, 25), small_tilings,
                   [&](const Out<T>& out, const Out<T>&, const ref::Reference& expected) {
                     CHECK(nan_row(out, 7));
                     check::require_matches_at<T>(out, expected, other_rows);
                   });
}

TEMPLATE_TEST_CASE("A NaN in one key under a causal mask reaches exactly the rows that see it",
                   "[nonfinite]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const ref::Problem clean = ref::random_problem<T>(30, 30, 8, 3, 711, 1.0);
  ref::Problem poisoned = clean;
  poisoned.K(11, 4) = not_a_number;
  Entries blind_rows = Entries::Constant(30, 3, false);
  blind_rows.topRows(11).setConstant(true);
  for_each_form<T>(clean, poisoned, mask::Causal{}, ref::causal(30, 30), small_tilings,
                   [&](const Out<T>& out, const Out<T>&, const ref::Reference& expected) {
                     for (Index i = 11; i < 30; ++i) {
                       CAPTURE(i);
                       CHECK(nan_row(out, i));
                     }
                     CHECK(out.topRows(11).allFinite());
                     check::require_matches_at<T>(out, expected, blind_rows);
                   });
}

TEMPLATE_TEST_CASE("A NaN in one value under a causal mask reaches exactly the outputs that see it",
                   "[nonfinite]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const ref::Problem clean = ref::random_problem<T>(30, 30, 8, 3, 721, 1.0);
  ref::Problem poisoned = clean;
  poisoned.V(11, 1) = not_a_number;
  // Rows 11.. see value row 11: their column 1 is NaN, their other columns do not depend on it.
  Entries unaffected = Entries::Constant(30, 3, true);
  unaffected.block(11, 1, 19, 1).setConstant(false);
  for_each_form<T>(clean, poisoned, mask::Causal{}, ref::causal(30, 30), small_tilings,
                   [&](const Out<T>& out, const Out<T>&, const ref::Reference& expected) {
                     CHECK(out.col(1).tail(19).array().isNaN().all());
                     CHECK(out.topRows(11).allFinite());
                     check::require_matches_at<T>(out, expected, unaffected);
                   });
}

TEMPLATE_TEST_CASE("A padded NaN or infinity changes nothing", "[nonfinite][padding]",
                   KERNATTN_TEST_SCALARS) {
  // 20 keys of which 13 are valid: with key tiles of 8, key 14 lies in the partially visible
  // tile [8, 16) and key 18 in the hidden tile [16, 20). The poisoned output must equal (to
  // rounding: the engine may sum in another order around non-finite values) the output with
  // that row replaced by zeros.
  using T = TestType;
  const ref::Problem clean = ref::random_problem<T>(15, 20, 8, 3, 731, 1.0);
  const std::vector<kernattn::ExecutionOptions> tilings = {
      kernattn::ExecutionOptions{}, {0, 4, 8}, {0, 1, 3}};
  for (const Index row : {14, 18}) {
    for (const double poison : {not_a_number, infinity, -infinity}) {
      for (const bool in_key : {false, true}) {
        CAPTURE(row, poison, in_key);
        ref::Problem poisoned = clean, zeroed = clean;
        (in_key ? poisoned.K : poisoned.V).row(row).setConstant(poison);
        (in_key ? zeroed.K : zeroed.V).row(row).setZero();
        for_each_form<T>(
            zeroed, poisoned, mask::KeyPadding::from_lengths({13}), ref::first_keys(15, 20, 13),
            tilings,
            [&](const Out<T>& out, const Out<T>& zeroed_out, const ref::Reference& expected) {
              CHECK(out.allFinite());
              check::require_matches<T>(out, expected);
              check::require_close(out, zeroed_out, 2 * expected.bound);
            });
      }
    }
  }
}

TEMPLATE_TEST_CASE("A key whose log-weight is -inf weighs exactly zero in every tiling",
                   "[nonfinite]", KERNATTN_TEST_SCALARS) {
  // Key 5 is (-inf, 0, 0, 0) and every query is positive, so q.k = -inf: log kappa = -inf for
  // Exponential and Rbf (whose key term is -inf too). Its value is huge, so any weight short of
  // exactly 0 (Eigen's vectorised exp(-inf) is ~1e-39 in float, ~1e-308 in double) would show.
  // Query 0 sees only key 5: all its visible log-weights are -inf, and it outputs zeros like a
  // query that sees no key, whatever the tiles.
  using T = TestType;
  constexpr Index nq = 40, nk = 30, d = 4, hidden = 5;
  ref::Problem p = ref::random_problem<T>(nq, nk, d, 3, 741);
  p.Q = p.Q.cwiseAbs() + ref::MatrixXd::Constant(nq, d, 0.125);
  p.K.row(hidden) << -infinity, 0, 0, 0;
  p.V.row(hidden).setConstant(double(std::numeric_limits<T>::max() / 4));
  p = ref::rounded<T>(p);
  ref::Visibility visible = ref::all_visible(nq, nk);
  visible.row(0).setConstant(false);
  visible(0, hidden) = true;
  ref::Problem without = p;
  without.K.resize(nk - 1, d);
  without.K << p.K.topRows(hidden), p.K.bottomRows(nk - hidden - 1);
  without.V.resize(nk - 1, 3);
  without.V << p.V.topRows(hidden), p.V.bottomRows(nk - hidden - 1);
  ref::Visibility rest(nq, nk - 1);
  rest << visible.leftCols(hidden), visible.rightCols(nk - hidden - 1);
  const std::vector<kernattn::ExecutionOptions> tilings = {
      kernattn::ExecutionOptions{}, {0, 1, 1}, {0, 3, 5}, {0, 16, 3}, {0, 7, 64}, {0, 64, 6}};
  const auto compare = [&](const auto& kernel, const ref::KernelModel& model) {
    const ref::Reference expected =
        ref::attention(without, model, ref::unit_magnitude(), rest, ref::unit_roundoff<T>);
    for (const kernattn::ExecutionOptions& options : tilings) {
      CAPTURE(options.query_tile, options.key_tile);
      const Out<T> out =
          check::run<T>(p, kernel, magnitude::None{}, mask::Boolean(visible), options);
      CHECK(check::zero_row(out, 0));
      check::require_matches<T>(out, expected);
    }
  };
  {
    INFO("Exponential");
    compare(kernels::Exponential<T>(), ref::exponential(1 / std::sqrt(double(d))));
  }
  {
    INFO("Rbf");
    compare(kernels::Rbf<T>(), ref::rbf(std::sqrt(double(d))));
  }
}

}  // namespace test_nonfinite
