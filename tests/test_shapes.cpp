// Shapes and memory layouts: one token, one feature, Nq != Nk, empty inputs, and inputs and
// outputs given as Maps over caller memory (either storage order), blocks, expressions,
// row-major matrices and Refs.
#include <cmath>
#include <limits>
#include <vector>

#include "catch.hpp"
#include "reference.hpp"

namespace test_shapes {

namespace {

template <class T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Exponential attention (default scale), causal, against the reference.
template <class T>
void check_causal_softmax(const ref::Problem& p) {
  const ref::Reference expected =
      ref::attention(p, ref::exponential(1 / std::sqrt(double(p.Q.cols()))), ref::unit_magnitude(),
                     ref::causal(p.Q.rows(), p.K.rows()), ref::unit_roundoff<T>);
  check::require_matches<T>(
      check::run<T>(p, kernels::Exponential<T>(), magnitude::None{}, mask::Causal{}), expected);
}

}  // namespace

TEMPLATE_TEST_CASE("Unusual but valid shapes", "[shapes]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  SECTION("one query, one key") {
    check_causal_softmax<T>(ref::random_problem<T>(1, 1, 8, 4, 501));
  }
  SECTION("one feature, d = 1") {
    check_causal_softmax<T>(ref::random_problem<T>(30, 40, 1, 3, 502));
  }
  SECTION("Nq != Nk and dv != d") {
    check_causal_softmax<T>(ref::random_problem<T>(7, 50, 5, 9, 503));
  }
  SECTION("one value column") {
    check_causal_softmax<T>(ref::random_problem<T>(20, 20, 6, 1, 504));
  }
  SECTION("d = 1 with a distance kernel and a magnitude") {
    const ref::Problem p = ref::random_problem<T>(25, 31, 1, 3, 505);
    const ref::Reference expected =
        ref::attention(p, ref::matern(5, 1.0), ref::lp(3, ref::default_gamma(1), 2),
                       ref::all_visible(25, 31), ref::unit_roundoff<T>);
    check::require_matches<T>(check::run<T>(p, kernels::Matern52<T>(), magnitude::Lp<T>(3)),
                              expected);
  }
}

TEMPLATE_TEST_CASE("Tiles larger than the problem, up to the largest Index, act as one tile",
                   "[shapes][tiles]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index largest = std::numeric_limits<Index>::max();
  const ref::Problem p = ref::random_problem<T>(23, 31, 6, 5, 506);
  const ref::Reference expected =
      ref::attention(p, ref::exponential(1 / std::sqrt(6.0)), ref::unit_magnitude(),
                     ref::causal(23, 31), ref::unit_roundoff<T>);
  for (const kernattn::ExecutionOptions options : {kernattn::ExecutionOptions{0, 1000, 1000},
                                                   {0, largest, 256},
                                                   {0, 64, largest},
                                                   {0, largest, largest}}) {
    CAPTURE(options.query_tile, options.key_tile);
    check::require_matches<T>(
        check::run<T>(p, kernels::Exponential<T>(), magnitude::None{}, mask::Causal{}, options),
        expected);
  }
}

TEMPLATE_TEST_CASE("Empty inputs", "[shapes][empty]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  using Matrix = ref::Matrix<T>;
  const kernattn::Attention<kernels::Exponential<T>> softmax;
  const kernattn::Attention<kernels::Polynomial<T>, magnitude::Lp<T>, mask::Causal> direct(
      kernels::Polynomial<T>(), magnitude::Lp<T>(T(3)), mask::Causal{});
  const Matrix Q = ref::normal(6, 4, 511).cast<T>();
  const Matrix K = ref::normal(9, 4, 512).cast<T>();
  const Matrix V = ref::normal(9, 3, 513).cast<T>();
  SECTION("Nq = 0 gives a 0 x dv output") {
    const Matrix out = softmax(Matrix(0, 4), K, V);
    CHECK(out.rows() == 0);
    CHECK(out.cols() == 3);
    CHECK(direct(Matrix(0, 4), K, V).cols() == 3);
    CHECK(softmax(Matrix(0, 8), Matrix(18, 8), Matrix(18, 6), {2, 2}).cols() == 6);
  }
  SECTION("Nk = 0 gives zeros: no query sees a key") {
    for (const Matrix& out :
         {softmax(Q, Matrix(0, 4), Matrix(0, 3)), direct(Q, Matrix(0, 4), Matrix(0, 3))}) {
      CHECK(out.rows() == 6);
      CHECK(out.cols() == 3);
      CHECK((out.array() == 0).all());
    }
  }
  SECTION("dv = 0 gives an Nq x 0 output") {
    CHECK(softmax(Q, K, Matrix(9, 0)).rows() == 6);
    CHECK(softmax(Q, K, Matrix(9, 0)).cols() == 0);
    CHECK(direct(Q, K, Matrix(9, 0)).rows() == 6);
  }
}

namespace {

/// What every layout must reproduce: the plain-matrix result and the reference for a causal
/// softmax problem.
template <class T>
struct Baseline {
  ref::Problem p;
  ref::Reference expected;
  ref::Matrix<T> plain;
};

template <class T>
Baseline<T> causal_baseline(const ref::Problem& p) {
  const ref::Reference expected =
      ref::attention(p, ref::exponential(1 / std::sqrt(double(p.Q.cols()))), ref::unit_magnitude(),
                     ref::causal(p.Q.rows(), p.K.rows()), ref::unit_roundoff<T>);
  return {p, expected,
          check::run<T>(p, kernels::Exponential<T>(), magnitude::None{}, mask::Causal{})};
}

/// Both the returned output and compute() into a fresh matrix match the baseline.
template <class T, class DQ, class DK, class DV>
void check_inputs(const Baseline<T>& base, const Eigen::MatrixBase<DQ>& Q,
                  const Eigen::MatrixBase<DK>& K, const Eigen::MatrixBase<DV>& V) {
  const kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::Causal> attention;
  const ref::Matrix<T> out = attention(Q, K, V);
  check::require_matches<T>(out, base.expected);
  check::require_close(out, base.plain, 2 * base.expected.bound);
}

/// Copies m into `buffer` in the given storage order and returns the buffer.
template <class T, int Order>
std::vector<T> stored(const ref::Matrix<T>& m) {
  std::vector<T> buffer(std::size_t(m.size()));
  Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Order>>(buffer.data(), m.rows(),
                                                                      m.cols()) = m;
  return buffer;
}

}  // namespace

TEMPLATE_TEST_CASE("Inputs as Maps, blocks, expressions, row-major matrices and Refs",
                   "[shapes][layout]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  using Matrix = ref::Matrix<T>;
  const Baseline<T> base = causal_baseline<T>(ref::random_problem<T>(23, 31, 6, 5, 521));
  const Matrix Q = base.p.template q<T>(), K = base.p.template k<T>(), V = base.p.template v<T>();
  SECTION("Maps over column-major caller memory") {
    const std::vector<T> q = stored<T, Eigen::ColMajor>(Q), k = stored<T, Eigen::ColMajor>(K),
                         v = stored<T, Eigen::ColMajor>(V);
    using Map = Eigen::Map<const Matrix>;
    check_inputs(base, Map(q.data(), 23, 6), Map(k.data(), 31, 6), Map(v.data(), 31, 5));
  }
  SECTION("Maps over row-major caller memory") {
    const std::vector<T> q = stored<T, Eigen::RowMajor>(Q), k = stored<T, Eigen::RowMajor>(K),
                         v = stored<T, Eigen::RowMajor>(V);
    using Map = Eigen::Map<const RowMajor<T>>;
    check_inputs(base, Map(q.data(), 23, 6), Map(k.data(), 31, 6), Map(v.data(), 31, 5));
  }
  SECTION("Maps with a non-unit inner stride (every other element)") {
    std::vector<T> q(2 * std::size_t(Q.size()));
    using Strided = Eigen::Map<Matrix, 0, Eigen::Stride<Eigen::Dynamic, 2>>;
    Strided(q.data(), 23, 6, Eigen::Stride<Eigen::Dynamic, 2>(46, 2)) = Q;
    check_inputs(base, Strided(q.data(), 23, 6, Eigen::Stride<Eigen::Dynamic, 2>(46, 2)), K, V);
  }
  SECTION("blocks of wider and taller matrices") {
    Matrix wide_q = Matrix::Constant(23, 10, T(7)), wide_k = Matrix::Constant(31, 9, T(-3));
    Matrix tall_v = Matrix::Constant(40, 8, T(5));
    wide_q.middleCols(2, 6) = Q;
    wide_k.middleCols(3, 6) = K;
    tall_v.block(4, 1, 31, 5) = V;
    check_inputs(base, wide_q.middleCols(2, 6), wide_k.middleCols(3, 6), tall_v.block(4, 1, 31, 5));
  }
  SECTION("row-major matrices") {
    check_inputs(base, RowMajor<T>(Q), RowMajor<T>(K), RowMajor<T>(V));
  }
  SECTION("Refs and a transposed (row-major) view") {
    const Matrix k_transposed = K.transpose();
    check_inputs(base, Eigen::Ref<const Matrix>(Q), k_transposed.transpose(),
                 Eigen::Ref<const Matrix>(V));
  }
  SECTION("an expression: Q * 2 equals the evaluated matrix") {
    const Baseline<T> doubled = causal_baseline<T>({2 * base.p.Q, base.p.K, base.p.V});
    check_inputs(doubled, Q * T(2), K, V);
    check_inputs(doubled, (Q.array() * T(2)).matrix(), K, V);
  }
}

TEMPLATE_TEST_CASE("compute() writes into Maps and blocks of caller memory", "[shapes][layout]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  using Matrix = ref::Matrix<T>;
  const Baseline<T> base = causal_baseline<T>(ref::random_problem<T>(23, 31, 6, 5, 531));
  const Matrix Q = base.p.template q<T>(), K = base.p.template k<T>(), V = base.p.template v<T>();
  const kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::Causal> attention;
  const auto matches = [&](const auto& out) {
    check::require_matches<T>(out, base.expected);
    check::require_close(out, base.plain, 2 * base.expected.bound);
  };
  SECTION("a column-major Map") {
    std::vector<T> buffer(23 * 5, T(9));
    attention.compute(Q, K, V, Eigen::Map<Matrix>(buffer.data(), 23, 5));
    matches(Eigen::Map<const Matrix>(buffer.data(), 23, 5));
  }
  SECTION("a row-major Map") {
    std::vector<T> buffer(23 * 5, T(9));
    attention.compute(Q, K, V, Eigen::Map<RowMajor<T>>(buffer.data(), 23, 5));
    matches(Eigen::Map<const RowMajor<T>>(buffer.data(), 23, 5));
  }
  SECTION("a block of a larger matrix; the rest is untouched") {
    Matrix big = Matrix::Constant(30, 9, T(9));
    attention.compute(Q, K, V, big.block(3, 2, 23, 5));
    matches(big.block(3, 2, 23, 5));
    big.block(3, 2, 23, 5).setConstant(T(9));
    CHECK((big.array() == T(9)).all());
  }
  SECTION("middleCols of a wider matrix and a row-major matrix") {
    Matrix wide = Matrix::Constant(23, 8, T(9));
    attention.compute(Q, K, V, wide.middleCols(1, 5));
    matches(wide.middleCols(1, 5));
    CHECK((wide.col(0).array() == T(9)).all());
    CHECK((wide.rightCols(2).array() == T(9)).all());
    RowMajor<T> row_major(23, 5);
    attention.compute(Q, K, V, row_major);
    matches(row_major);
  }
}

TEMPLATE_TEST_CASE("compute() may write over one of its inputs", "[shapes][layout]",
                   KERNATTN_TEST_SCALARS) {
  // Nq = Nk and dv = d, so that out has the shape of Q, K and V alike.
  using T = TestType;
  using Matrix = ref::Matrix<T>;
  const Baseline<T> base = causal_baseline<T>(ref::random_problem<T>(19, 19, 5, 5, 541));
  const Matrix Q = base.p.template q<T>(), K = base.p.template k<T>(), V = base.p.template v<T>();
  const kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::Causal> attention;
  const auto matches = [&](const Matrix& out) {
    check::require_matches<T>(out, base.expected);
    check::require_close(out, base.plain, 2 * base.expected.bound);
  };
  SECTION("out is V") {
    Matrix v = V;
    attention.compute(Q, K, v, v);
    matches(v);
  }
  SECTION("out is Q") {
    Matrix q = Q;
    attention.compute(q, K, V, q);
    matches(q);
  }
  SECTION("out is K, given as a block of a larger matrix") {
    Matrix big = Matrix::Zero(25, 7);
    big.block(2, 1, 19, 5) = K;
    attention.compute(Q, big.block(2, 1, 19, 5), V, big.block(2, 1, 19, 5));
    matches(big.block(2, 1, 19, 5));
  }
}

TEST_CASE("The automatic query tile depends on the number of queries only", "[options]") {
  const kernattn::ExecutionOptions automatic;
  CHECK(automatic.query_tile == 0);
  CHECK(automatic.query_tile_for(1) == 64);
  CHECK(automatic.query_tile_for(256) == 64);  // four tiles: two threads both get work
  CHECK(automatic.query_tile_for(300) == 80);  // a quarter (75), rounded up to 16
  CHECK(automatic.query_tile_for(1024) == 256);
  CHECK(automatic.query_tile_for(1 << 20) == 256);
  kernattn::ExecutionOptions fixed;
  fixed.query_tile = 7;
  CHECK(fixed.query_tile_for(1024) == 7);
}

}  // namespace test_shapes
