// Inputs at the edges of the engines' numerics (docs/numerics.md):
//  - distance kernels where the expansion |q|^2 + |k|^2 - 2 q.k cancels (self-attention with
//    keys = queries, near-duplicate keys, data far from the origin), against the naive double
//    reference with its usual bound (ref::detail::squared_distance_error);
//  - the numeric range of log-weights: just inside it the answer is right (the weight goes to the
//    best key), beyond it the call throws InvalidArgument naming the pair, and a key no query sees
//    is never checked;
//  - rows whose visible log-weights are all -inf output zeros in every tiling.
#include <cmath>
#include <limits>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "kernattn/attention/graph_attention.hpp"
#include "kernattn/attention/linear_attention.hpp"
#include "kernattn/attention/positional.hpp"
#include "kernattn/features/positive.hpp"
#include "kernattn/heads/batch_normalized.hpp"
#include "reference.hpp"

namespace test_extreme_inputs {

namespace {

using ref::MatrixXd;

double default_lengthscale(Index d) { return std::pow(double(d), 0.25); }

/// Default tiles, small tiles that divide nothing, and single rows and keys.
const std::vector<kernattn::ExecutionOptions> tilings = {
    kernattn::ExecutionOptions{}, {0, 16, 24}, {0, 5, 7}, {0, 1, 1}};

/// Requires Attention<Kernel> (no magnitude) to match the reference in every tiling.
template <class T, class Kernel>
void require_every_tiling(const ref::Problem& p, const Kernel& kernel,
                          const ref::KernelModel& model) {
  const ref::Reference expected =
      ref::attention(p, model, ref::unit_magnitude(), ref::all_visible(p.Q.rows(), p.K.rows()),
                     ref::unit_roundoff<T>);
  for (const kernattn::ExecutionOptions& options : tilings) {
    CAPTURE(options.query_tile, options.key_tile);
    check::require_matches<T>(check::run<T>(p, kernel, magnitude::None{}, mask::None{}, options),
                              expected);
  }
}

/// The four distance kernels with default parameters, for head dimension d.
template <class T, class Check>
void for_each_distance_kernel(Index d, const Check& check) {
  const double l = default_lengthscale(d);
  {
    INFO("Laplacian (Matern 1/2)");
    check(kernels::Laplacian<T>(), ref::matern(1, l));
  }
  {
    INFO("Matern 3/2");
    check(kernels::Matern32<T>(), ref::matern(3, l));
  }
  {
    INFO("Matern 5/2");
    check(kernels::Matern52<T>(), ref::matern(5, l));
  }
  {
    INFO("RationalQuadratic");
    check(kernels::RationalQuadratic<T>(), ref::rational_quadratic(1, l));
  }
}

/// The row index of the largest entry of `scores` in each row.
Eigen::VectorXi best_per_row(const MatrixXd& scores) {
  Eigen::VectorXi best(scores.rows());
  for (Index i = 0; i < scores.rows(); ++i) scores.row(i).maxCoeff(&best(i));
  return best;
}

/// Requires row i of `out` to equal row best(i) of V exactly: all the weight on one key.
template <class T>
void require_one_hot(const ref::Matrix<T>& out, const ref::Matrix<T>& V,
                     const Eigen::VectorXi& best) {
  Index failures = 0;
  for (Index i = 0; i < out.rows(); ++i)
    if (!check::identical(out.row(i), V.row(best(i)))) ++failures;
  CHECK(failures == 0);
}

/// A factor that brings the entries of N(0, 1) data of dimension 8 to the given fraction of the
/// range limit L = max / 8 in |q| |k| (and (|q| + |k|)^2): (fraction L / (4 * 8))^(1/2).
template <class T>
double scale_for(double fraction) {
  return std::sqrt(fraction * double(std::numeric_limits<T>::max()) / 8 / 32);
}

}  // namespace

TEMPLATE_TEST_CASE("Self-attention with a distance kernel is accurate where q = k",
                   "[extreme][distance]", KERNATTN_TEST_SCALARS) {
  // Keys = queries: every diagonal pair has r = 0, where the expansion cancels completely; the
  // engine recomputes those pairs directly. d = 64 makes the GEMM and the norms sum in different
  // orders, so the expansion does not cancel to exactly 0 by luck.
  using T = TestType;
  for (const Index d : {Index(8), Index(64)}) {
    CAPTURE(d);
    ref::Problem p = ref::random_problem<T>(90, 90, d, 4, 3101);
    p.K = p.Q;
    for_each_distance_kernel<T>(d, [&](const auto& kernel, const ref::KernelModel& model) {
      require_every_tiling<T>(p, kernel, model);
    });
  }
  SECTION("with an Lp magnitude and a causal mask") {
    ref::Problem p = ref::random_problem<T>(70, 70, 16, 3, 3102);
    p.K = p.Q;
    const ref::Reference expected =
        ref::attention(p, ref::matern(1, default_lengthscale(16)), ref::lp(3, double(T(0.1)), 2),
                       ref::causal(70, 70), ref::unit_roundoff<T>);
    for (const kernattn::ExecutionOptions& options : tilings) {
      CAPTURE(options.query_tile, options.key_tile);
      check::require_matches<T>(
          check::run<T>(p, kernels::Laplacian<T>(), magnitude::Lp<T>(T(3), T(0.1)), mask::Causal{},
                        options),
          expected);
    }
  }
}

TEMPLATE_TEST_CASE("Distance kernels are accurate for near-duplicate keys and far from the origin",
                   "[extreme][distance]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index n = 60, d = 16;
  SECTION("keys = queries + 1e-3 noise: r ~ 1e-3 |q|") {
    ref::Problem p = ref::random_problem<T>(n, n, d, 4, 3201);
    p.K = p.Q + 1e-3 * ref::normal(n, d, 3202);
    p = ref::rounded<T>(p);
    for_each_distance_kernel<T>(d, [&](const auto& kernel, const ref::KernelModel& model) {
      require_every_tiling<T>(p, kernel, model);
    });
  }
  SECTION("a common offset of 50 in every coordinate: |q|^2 ~ 1000 r^2") {
    // Every pair is far below the threshold: whole columns are recomputed.
    const ref::Problem p = ref::random_problem<T>(n, n + 9, d, 4, 3211, 50.0);
    for_each_distance_kernel<T>(d, [&](const auto& kernel, const ref::KernelModel& model) {
      require_every_tiling<T>(p, kernel, model);
    });
  }
  SECTION("a third of the tokens at an offset, the rest near the origin") {
    // The pairs of two far tokens fall below the threshold by the dozen in each column, those of
    // a far and a near token do not: whole columns and single pairs are recomputed.
    // (The Matern kernels only: the reference bounds RationalQuadratic's log by its slope at
    // r = 0, which for pairs 320 apart in float is far from informative.)
    ref::Problem p = ref::random_problem<T>(n, n + 9, d, 4, 3231);
    p.Q.bottomRows(n / 3).array() += 80.0;
    p.K.bottomRows(n / 3).array() += 80.0;
    p = ref::rounded<T>(p);
    const double l = default_lengthscale(d);
    require_every_tiling<T>(p, kernels::Laplacian<T>(), ref::matern(1, l));
    require_every_tiling<T>(p, kernels::Matern32<T>(), ref::matern(3, l));
    require_every_tiling<T>(p, kernels::Matern52<T>(), ref::matern(5, l));
  }
  SECTION("a common offset and keys = queries") {
    ref::Problem p = ref::random_problem<T>(n, n, d, 4, 3221, -300.0);
    p.K = p.Q;
    for_each_distance_kernel<T>(d, [&](const auto& kernel, const ref::KernelModel& model) {
      require_every_tiling<T>(p, kernel, model);
    });
  }
}

TEMPLATE_TEST_CASE("Just inside the numeric range the weight goes to the best key",
                   "[extreme][range]", KERNATTN_TEST_SCALARS) {
  // Entries of size ~1e17 in float (~1e152 in double) keep every term within L = max / 8, and make
  // log-weights differ by far more than log(max): each output row is exactly one value row.
  using T = TestType;
  constexpr Index nq = 30, nk = 40, d = 8;
  const double scale = scale_for<T>(0.25);
  const ref::Problem unit = ref::random_problem<T>(nq, nk, d, 3, 3301);
  const ref::Problem big = ref::rounded<T>({scale * unit.Q, scale * unit.K, unit.V});
  const ref::Matrix<T> V = big.v<T>();
  SECTION("softmax: the largest q.k") {
    require_one_hot<T>(check::run<T>(big, kernels::Exponential<T>()), V,
                       best_per_row(big.Q * big.K.transpose()));
  }
  SECTION("Rbf: the nearest key") {
    MatrixXd minus_distance(nq, nk);
    for (Index i = 0; i < nq; ++i)
      for (Index j = 0; j < nk; ++j)
        minus_distance(i, j) = -(big.Q.row(i) - big.K.row(j)).squaredNorm();
    require_one_hot<T>(check::run<T>(big, kernels::Rbf<T>()), V, best_per_row(minus_distance));
    SECTION("and Matern 5/2 too, also when only the keys are far from the origin") {
      require_one_hot<T>(check::run<T>(big, kernels::Matern52<T>()), V,
                         best_per_row(minus_distance));
      const ref::Problem far_keys{unit.Q, big.K, unit.V};
      for (Index i = 0; i < nq; ++i)
        for (Index j = 0; j < nk; ++j)
          minus_distance(i, j) = -(far_keys.Q.row(i) - far_keys.K.row(j)).squaredNorm();
      require_one_hot<T>(check::run<T>(far_keys, kernels::Matern52<T>()), V,
                         best_per_row(minus_distance));
    }
  }
  SECTION("Exponential x L2: the largest |k| dominates every row") {
    const ref::Problem keys_only = ref::rounded<T>({unit.Q, std::sqrt(scale) * unit.K, unit.V});
    Eigen::VectorXd log_mu(nk);
    for (Index j = 0; j < nk; ++j) log_mu(j) = keys_only.K.row(j).squaredNorm();
    Index largest = 0;
    log_mu.maxCoeff(&largest);
    require_one_hot<T>(check::run<T>(keys_only, kernels::Exponential<T>(), magnitude::L2<T>()), V,
                       Eigen::VectorXi::Constant(nq, int(largest)));
  }
}

TEMPLATE_TEST_CASE("Beyond the numeric range a call throws, naming the pair", "[extreme][range]",
                   KERNATTN_TEST_SCALARS) {
  // The cases that once gave all-NaN outputs (or the weight on the wrong key) in float: keys
  // x 1e30 with Exponential x L2, queries and keys x 1e20 with softmax, Rbf and Matern 5/2, keys
  // x 1e30 with Matern 5/2; in double the same at 1e160.
  using T = TestType;
  constexpr bool in_float = std::is_same_v<T, float>;
  const double big = in_float ? 1e20 : 1e160;
  const double huge = in_float ? 1e30 : 1e160;
  const ref::Problem unit = ref::random_problem<T>(12, 15, 8, 3, 3401);
  const ref::Problem both_big = ref::rounded<T>({big * unit.Q, big * unit.K, unit.V});
  const ref::Problem keys_huge = ref::rounded<T>({unit.Q, huge * unit.K, unit.V});
  const std::string type = in_float ? "float" : "double";
  SECTION("huge keys: the key term") {
    // In double, Lp saturates log mu at the largest double / 16 (keys that saturate weigh the
    // same), inside the range: Rbf's key term -|k|^2 / (2 sigma^2) = -inf is not.
    const auto run = [&] {
      if constexpr (in_float)
        return check::run<T>(keys_huge, kernels::Exponential<T>(), magnitude::L2<T>());
      else
        return check::run<T>(keys_huge, kernels::Rbf<T>());
    };
    REQUIRE_INVALID_ARGUMENT(run(), "Attention: key 0 has a key term g(k) + log mu(k) of size ");
    REQUIRE_INVALID_ARGUMENT(run(), "(the largest " + type + " / 8), the range of log-weights");
  }
  SECTION("softmax and Rbf, large queries and keys: the dot product") {
    const std::string fragment =
        "of Q and K are too large for the dot-product kernel in " + type + ": |a| |q| |k| = ";
    REQUIRE_INVALID_ARGUMENT(check::run<T>(both_big, kernels::Exponential<T>()), fragment);
    // Rbf's key term -|k|^2 / (2 sigma^2) is out of range first.
    REQUIRE_INVALID_ARGUMENT(check::run<T>(both_big, kernels::Rbf<T>()),
                             "Attention: key 0 has a key term g(k) + log mu(k) of size ");
    REQUIRE_INVALID_ARGUMENT(check::run<T>(both_big, kernels::Exponential<T>()),
                             "Attention: query 0 (norm ");
  }
  SECTION("Matern 5/2, large queries and keys or huge keys: the squared distance") {
    const std::string fragment =
        "of Q and K are too large for the distance kernel in " + type + ": (|q| + |k|)^2 = ";
    REQUIRE_INVALID_ARGUMENT(check::run<T>(both_big, kernels::Matern52<T>()), fragment);
    REQUIRE_INVALID_ARGUMENT(check::run<T>(keys_huge, kernels::Matern52<T>()), fragment);
  }
  SECTION("graph attention checks the edges the same way") {
    Eigen::SparseMatrix<T, Eigen::RowMajor> adjacency(12, 15);
    adjacency.insert(4, 7) = 1;
    REQUIRE_INVALID_ARGUMENT(kernattn::GraphAttention(kernels::Matern52<T>())(
                                 adjacency, both_big.q<T>(), both_big.k<T>(), both_big.v<T>()),
                             "GraphAttention: query 4 (norm ");
    REQUIRE_INVALID_ARGUMENT(kernattn::GraphAttention(kernels::Rbf<T>())(
                                 adjacency, keys_huge.q<T>(), keys_huge.k<T>(), keys_huge.v<T>()),
                             "GraphAttention: key 7 has a key term g(k) + log mu(k) of size ");
  }
  SECTION("positional attention names the factor's columns") {
    const kernattn::PositionalAttention<kernels::Exponential<T>, kernels::Exponential<T>> attention;
    const ref::Matrix<T> Tq = ref::Matrix<T>::Constant(12, 1, T(big));
    const ref::Matrix<T> Tk = ref::Matrix<T>::Constant(15, 1, T(big));
    REQUIRE_INVALID_ARGUMENT(attention(unit.q<T>(), Tq, unit.k<T>(), Tk, unit.v<T>()),
                             "too large for the dot-product kernel on columns [8, 9) in " + type);
  }
}

TEMPLATE_TEST_CASE("A key that no query sees is never range-checked", "[extreme][range]",
                   KERNATTN_TEST_SCALARS) {
  // Padded keys may hold anything, huge finite values included: they change nothing.
  using T = TestType;
  const double huge = std::is_same_v<T, float> ? 1e30 : 1e160;
  const ref::Problem clean = ref::random_problem<T>(20, 24, 8, 3, 3501);
  ref::Problem padded = clean, zeroed = clean;
  padded.K.bottomRows(7).setConstant(huge);
  zeroed.K.bottomRows(7).setZero();
  const auto valid = mask::KeyPadding::from_lengths({17});
  for (const kernattn::ExecutionOptions& options : tilings) {
    CAPTURE(options.query_tile, options.key_tile);
    const auto compare = [&](const auto& kernel, const auto& mu) {
      const ref::Matrix<T> out = check::run<T>(padded, kernel, mu, valid, options);
      CHECK(out.allFinite());
      CHECK(check::identical(out, check::run<T>(zeroed, kernel, mu, valid, options)));
    };
    compare(kernels::Exponential<T>(), magnitude::L2<T>());
    compare(kernels::Matern52<T>(), magnitude::None{});
  }
  SECTION("and a key without an edge neither") {
    Eigen::SparseMatrix<T, Eigen::RowMajor> adjacency(20, 24);
    for (Index i = 0; i < 20; ++i) adjacency.insert(i, (3 * i) % 17) = 1;
    const kernattn::GraphAttention graph{kernels::Rbf<T>(), magnitude::L2<T>()};
    CHECK(check::identical(graph(adjacency, padded.q<T>(), padded.k<T>(), padded.v<T>()),
                           graph(adjacency, zeroed.q<T>(), zeroed.k<T>(), zeroed.v<T>())));
  }
}

TEMPLATE_TEST_CASE("Rows whose visible log-weights are all -inf output zeros in every tiling",
                   "[extreme][nonfinite]", KERNATTN_TEST_SCALARS) {
  // A Laplacian kernel of lengthscale l = 1e4 / max: log kappa = -r / l is finite for r ~ 1 but
  // -inf for r ~ 1e9, a distance well inside the numeric range. Queries 0..9 are keys 0..9
  // themselves (weight 1 on that key, exp(-r / l) underflows for all others); the other queries lie
  // ~1e9 away from every key, so all their log-weights are -inf: they output zeros, like a query
  // that sees no key, whatever the tile sizes (before, Eigen's vectorised exp(-inf) made some tiles
  // output a plain mean).
  using T = TestType;
  constexpr Index nq = 37, nk = 29, d = 4, dv = 3;
  const ref::Problem data = ref::random_problem<T>(nq, nk, d, dv, 3601);
  ref::Problem p = data;
  p.Q.topRows(10) = p.K.topRows(10);
  p.Q.bottomRows(nq - 10).array() += 1e9;
  p = ref::rounded<T>(p);
  const kernels::Laplacian<T> kernel(T(1e4 / double(std::numeric_limits<T>::max())));
  const ref::Matrix<T> V = p.v<T>();
  const std::vector<kernattn::ExecutionOptions> many = {kernattn::ExecutionOptions{},
                                                        {0, 1, 1},
                                                        {0, 3, 5},
                                                        {0, 16, 3},
                                                        {0, 7, 64},
                                                        {0, 64, 256},
                                                        {0, 17, 29}};
  for (const kernattn::ExecutionOptions& options : many) {
    CAPTURE(options.query_tile, options.key_tile);
    const ref::Matrix<T> out = check::run<T>(p, kernel, magnitude::None{}, mask::None{}, options);
    for (Index i = 0; i < nq; ++i) {
      CAPTURE(i);
      if (i < 10)
        CHECK(check::identical(out.row(i), V.row(i)));
      else
        CHECK(check::zero_row(out, i));
    }
  }
  SECTION("graph attention defines them the same way") {
    Eigen::SparseMatrix<T, Eigen::RowMajor> adjacency(nq, nk);
    for (Index i = 0; i < nq; ++i)
      for (Index j = 0; j < nk; j += 3) adjacency.insert(i, j) = 1;
    const ref::Matrix<T> out = kernattn::GraphAttention(kernel)(adjacency, p.q<T>(), p.k<T>(), V);
    for (Index i = 10; i < nq; ++i) CHECK(check::zero_row(out, i));
  }
}

// Found by the fuzz target (fuzz/corpus/attention_fuzz/regression-*): finite inputs whose weights
// or weighted sums overflow throw, naming the query, rather than return NaN; arrays without
// columns never form row blocks (the sanitizer build checks it).
TEMPLATE_TEST_CASE("Finite inputs whose weights or sums overflow throw instead of returning NaN",
                   "[extreme][fuzz]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  using Mat = ref::Matrix<T>;
  const T big = T(std::sqrt(double(std::numeric_limits<T>::max())));
  const Mat Q = Mat::Ones(6, 4);
  const Mat V = ref::normal(5, 2, 42).cast<T>();
  {
    INFO("a polynomial of degree 2 at a q.k = 2 sqrt(max T) overflows");
    const Mat K = Mat::Constant(5, 4, big);
    const kernattn::Attention<kernels::Polynomial<T>> polynomial(kernels::Polynomial<T>(2));
    REQUIRE_INVALID_ARGUMENT(polynomial(Q, K, V), "weighted sum of values overflow");
  }
  {
    INFO("softmax over values of +-max T: the weighted sum overflows");
    const Mat K = Mat::Zero(5, 4);
    const Mat values = Mat::Constant(5, 2, std::numeric_limits<T>::max());
    const kernattn::Attention<kernels::Exponential<T>> softmax;
    REQUIRE_INVALID_ARGUMENT(softmax(Q, K, values), "overflow");
  }
  {
    INFO("a direct kernel with a key term beyond the range, under a Boolean mask");
    const Mat K = (ref::normal(5, 4, 44) * double(big)).cast<T>();
    Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic> allowed(6, 5);
    allowed.setConstant(true);
    allowed(0, 0) = false;
    const kernattn::Attention<kernels::Polynomial<T>, magnitude::L2<T>, mask::Boolean> attention(
        kernels::Polynomial<T>(2), magnitude::L2<T>(), mask::Boolean(allowed));
    REQUIRE_THROWS_AS(attention(Q, K, V), kernattn::InvalidArgument);
  }
}

TEMPLATE_TEST_CASE("Attention-BN throws where a normalised entry overflows", "[extreme][fuzz]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  using Mat = ref::Matrix<T>;
  using Softmax = kernattn::Attention<kernels::Exponential<T>>;
  const T far = std::numeric_limits<T>::max() / 4;
  // Keys that do not vary, far from the queries: (q - mu_K) / sqrt(epsilon) overflows.
  const Mat Q = ref::normal(3, 2, 45).cast<T>();
  const Mat K = Mat::Constant(4, 2, far);
  const Mat V = ref::normal(4, 2, 46).cast<T>();
  const kernattn::BatchNormalized<Softmax> bn(Softmax{}, 1.0, 1e-300);
  REQUIRE_INVALID_ARGUMENT(bn(Q, K, V), "BatchNormalized: feature 0 of sequence 0");
  const kernattn::BatchNormalized<Softmax> calm(Softmax{}, 1.0, double(far));
  REQUIRE(calm(Q, K, V).allFinite());
}

TEMPLATE_TEST_CASE("Causal linear attention without value columns", "[extreme][fuzz]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  using Mat = ref::Matrix<T>;
  const auto map = kernattn::features::Positive<T>::draw(8, 3, {47, 0});
  const kernattn::LinearAttention<kernattn::features::Positive<T>, magnitude::None, mask::Causal>
      attention(map, {}, {});
  const Mat Q = ref::normal(7, 3, 48).cast<T>();
  const Mat K = ref::normal(7, 3, 49).cast<T>();
  const Mat out = attention(Q, K, Mat(7, 0));
  REQUIRE(out.rows() == 7);
  REQUIRE(out.cols() == 0);
}

}  // namespace test_extreme_inputs
