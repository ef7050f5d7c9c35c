// Merging partial results (engine/merge_partial.hpp): attention over the keys split into
// disjoint blocks, each call with its row statistics, merged with merge_partial_result, equals
// one call over all keys and its statistics, up to rounding: exponential forms (softmax, RBF x
// L^3) through the log-normaliser, a direct form (polynomial) and linear attention (with and
// without a magnitude) through the denominator; blocks in any order; rows that one block or every
// block hides; NaN kept; bad shapes rejected.
#include <cmath>
#include <limits>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "reference.hpp"

namespace test_merge_partial {

namespace {

using kernattn::BatchLayout;
using kernattn::Matrix;
using kernattn::RowStatistic;

constexpr Index B = 2, H = 2, d = 5, dv = 3, nq = 11, nk = 29;
constexpr BatchLayout layout{B, H};

/// Rows [first, first + count) of every sequence's keys (or values).
template <class T>
Matrix<T> key_block(const Matrix<T>& all, Index first, Index count) {
  Matrix<T> block(B * count, all.cols());
  for (Index b = 0; b < B; ++b)
    block.middleRows(b * count, count) = all.middleRows(b * nk + first, count);
  return block;
}

/// The call over all keys against the blocks [0, 9), [9, 20), [20, 29) merged in the order
/// `order`: outputs and statistics agree to `tolerance` relative to their largest magnitude.
template <class T, class AttentionT>
void check_merge(const AttentionT& attention, std::uint32_t seed, double tolerance,
                 const std::vector<int>& order = {0, 1, 2}) {
  const ref::Problem p = ref::random_problem<T>(B * nq, B * nk, H * d, H * dv, seed, 0.3);
  const Matrix<T> Q = p.Q.template cast<T>(), K = p.K.template cast<T>(),
                  V = p.V.template cast<T>();
  Matrix<T> whole(Q.rows(), V.cols()), whole_statistics;
  attention.compute(Q, K, V, whole, whole_statistics, layout);
  const Index starts[] = {0, 9, 20}, counts[] = {9, 11, 9};
  Matrix<T> merged, merged_statistics;
  for (const int block : order) {
    Matrix<T> out(Q.rows(), V.cols()), statistics;
    attention.compute(Q, key_block(K, starts[block], counts[block]),
                      key_block(V, starts[block], counts[block]), out, statistics, layout);
    if (merged.size() == 0) {
      merged = out;
      merged_statistics = statistics;
    } else {
      kernattn::merge_partial_result(merged, merged_statistics, out, statistics,
                                     AttentionT::row_statistic);
    }
  }
  const double scale = whole.cwiseAbs().maxCoeff();
  CHECK((merged - whole).template cast<double>().cwiseAbs().maxCoeff() <= tolerance * scale);
  const double statistic_scale = std::max(1.0, double(whole_statistics.cwiseAbs().maxCoeff()));
  CHECK((merged_statistics - whole_statistics).template cast<double>().cwiseAbs().maxCoeff() <=
        tolerance * statistic_scale);
}

template <class T>
double rounding() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

}  // namespace

TEMPLATE_TEST_CASE("Merged partial results equal one call over all keys", "[merge]", float,
                   double) {
  using T = TestType;
  using kernattn::Attention;
  namespace kernels = kernattn::kernels;
  namespace magnitude = kernattn::magnitude;
  SECTION("softmax, blocks in order and reversed") {
    const Attention<kernels::Exponential<T>> softmax;
    STATIC_REQUIRE(decltype(softmax)::row_statistic == RowStatistic::log_normaliser);
    check_merge<T>(softmax, 601, rounding<T>());
    check_merge<T>(softmax, 601, rounding<T>(), {2, 0, 1});
  }
  SECTION("RBF x L^3") {
    check_merge<T>(Attention<kernels::Rbf<T>, magnitude::Lp<T>>({}, magnitude::Lp<T>(T(3))), 602,
                   rounding<T>());
  }
  SECTION("polynomial (a direct form: the denominators add)") {
    const Attention<kernels::Polynomial<T>> polynomial;
    STATIC_REQUIRE(decltype(polynomial)::row_statistic == RowStatistic::denominator);
    check_merge<T>(polynomial, 603, rounding<T>());
  }
  SECTION("linear attention with positive features") {
    using Positive = kernattn::features::Positive<T>;
    const kernattn::LinearAttention<Positive> linear(
        Positive::draw(64, d, kernattn::random::RandomStream{7, 1}));
    check_merge<T>(linear, 604, rounding<T>());
    const kernattn::LinearAttention<Positive, magnitude::Lp<T>> with_magnitude(
        Positive::draw(64, d, kernattn::random::RandomStream{7, 1}), magnitude::Lp<T>(T(3)));
    check_merge<T>(with_magnitude, 605, rounding<T>());
  }
}

TEST_CASE("Merging: rows a block hides, NaN, and bad shapes", "[merge][errors]") {
  using M = Matrix<double>;
  const double minus_infinity = -std::numeric_limits<double>::infinity();
  M out(2, 2), statistics(2, 1), part(2, 2), part_statistics(2, 1);
  out << 1.0, 2.0, 0.0, 0.0;
  statistics << 0.5, minus_infinity;
  part << 0.0, 0.0, 3.0, 4.0;
  part_statistics << minus_infinity, minus_infinity;
  SECTION("a block that saw no key changes nothing; a row no block saw stays zero") {
    kernattn::merge_partial_result(out, statistics, part, part_statistics,
                                   RowStatistic::log_normaliser);
    CHECK(out(0, 0) == 1.0);
    CHECK(out(0, 1) == 2.0);
    CHECK(statistics(0, 0) == 0.5);
    CHECK(out.row(1).isZero());
    CHECK(statistics(1, 0) == minus_infinity);
  }
  SECTION("equal log-normalisers average; a NaN statistic makes the row NaN") {
    part_statistics << 0.5, std::nan("");
    kernattn::merge_partial_result(out, statistics, part, part_statistics,
                                   RowStatistic::log_normaliser);
    CHECK(out(0, 0) == Approx(0.5));
    CHECK(statistics(0, 0) == Approx(0.5 + std::log(2.0)));
    CHECK(std::isnan(out(1, 0)));
    CHECK(std::isnan(statistics(1, 0)));
  }
  SECTION("denominators that cancel give zero, as the engines do") {
    statistics << 2.0, 1.0;
    part_statistics << -2.0, 3.0;
    kernattn::merge_partial_result(out, statistics, part, part_statistics,
                                   RowStatistic::denominator);
    CHECK(out.row(0).isZero());
    CHECK(out(1, 0) == Approx(2.25));
    CHECK(statistics(1, 0) == 4.0);
  }
  SECTION("bad shapes name the argument") {
    M wide(2, 3);
    REQUIRE_INVALID_ARGUMENT(kernattn::merge_partial_result(out, statistics, wide, part_statistics,
                                                            RowStatistic::denominator),
                             "part_out is 2x3 but out is 2x2");
    M three(2, 3);
    REQUIRE_INVALID_ARGUMENT(kernattn::merge_partial_result(out, three, part, part_statistics,
                                                            RowStatistic::denominator),
                             "statistics is 2x3");
    M short_statistics(1, 1);
    REQUIRE_INVALID_ARGUMENT(kernattn::merge_partial_result(out, statistics, part, short_statistics,
                                                            RowStatistic::denominator),
                             "part_statistics is 1x1");
  }
}

}  // namespace test_merge_partial
