// Graph attention under hostile input (docs/math.md, section 4; docs/robustness.md): nodes without
// neighbours (an adjacency without entries, no keys or queries, weights that all vanish), bad
// shapes and options, adjacencies with an index outside their shape or a broken structure (read
// without going out of bounds), edges stored more than once, a NaN or infinity in a key or value,
// and neighbours whose log-weight is -inf. Built by the sanitizer preset as well
// (docs/portability.md).
//
// Tolerances come from the reference's derived first-order bounds (tests/support/reference.hpp),
// which check::require_matches also requires to be informative.
#include <Eigen/SparseCore>
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "catch.hpp"
#include "graph_reference.hpp"
#include "invalid_argument.hpp"
#include "kernattn/attention/graph_attention.hpp"
#include "reference.hpp"

namespace test_graph_attention_hostile {

using kernattn::GraphAttention;
using kernattn::GraphOptions;

namespace {

using namespace graph_ref;
using ref::MatrixXd;

}  // namespace

TEMPLATE_TEST_CASE("Nodes without neighbours output exact zeros", "[graph]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index n = 30, d = 4, dv = 3;
  const ref::Problem p = ref::random_problem<T>(n, n, d, dv, 4301);
  const ref::Matrix<T> Q = p.q<T>(), K = p.k<T>(), V = p.v<T>();
  SECTION("an adjacency without entries") {
    for_each_form<T>(d, [&](const auto& kernel, const auto& mu) {
      const Eigen::SparseMatrix<T> empty(n, n);
      const ref::Matrix<T> out = GraphAttention(kernel, mu)(empty, Q, K, V);
      CHECK(out.rows() == n);
      CHECK(out.cols() == dv);
      CHECK((out.array() == 0).all());
    });
  }
  SECTION("no keys, no queries") {
    const GraphAttention graph(kernels::Rbf<T>(), magnitude::Lp<T>(T(3)));
    const ref::Matrix<T> no_keys =
        graph(Eigen::SparseMatrix<T>(n, 0), Q, K.topRows(0), V.topRows(0));
    CHECK(no_keys.rows() == n);
    CHECK((no_keys.array() == 0).all());
    const ref::Matrix<T> no_queries = graph(Eigen::SparseMatrix<T>(0, n), Q.topRows(0), K, V);
    CHECK(no_queries.rows() == 0);
    CHECK(no_queries.cols() == dv);
  }
  SECTION("a direct kernel whose weights all vanish") {
    // Linear: kappa(q, k) = q.k = 0 for q = 0, so the row's weights sum to exactly 0.
    ref::Matrix<T> zero_query = Q;
    zero_query.row(7).setZero();
    const Graph g = random_graph(n, n, 0.3, 0, 4302);
    REQUIRE_FALSE(g.isolated(7));
    const ref::Matrix<T> out = GraphAttention(kernels::Linear<T>(), magnitude::Lp<T>(T(2)))(
        g.adjacency<T>(), zero_query, K, V);
    CHECK(check::zero_row(out, 7));
    CHECK(out.allFinite());
  }
}

TEST_CASE("Graph attention rejects bad input, naming the argument", "[graph][errors]") {
  using Matrix = ref::Matrix<float>;
  const GraphAttention<kernels::Exponential<float>> graph;
  const Matrix Q = ref::normal(5, 64, 4701).cast<float>(),
               K = ref::normal(7, 64, 4702).cast<float>(),
               V = ref::normal(7, 3, 4703).cast<float>();
  const Eigen::SparseMatrix<float> adjacency(5, 7);
  SECTION("adjacency rows != N_q") {
    REQUIRE_INVALID_ARGUMENT(graph(Eigen::SparseMatrix<float>(6, 7), Q, K, V),
                             "adjacency is 6x7 but must be N_q x N_k = 5x7");
  }
  SECTION("adjacency columns != N_k") {
    REQUIRE_INVALID_ARGUMENT(graph(Eigen::SparseMatrix<bool>(5, 8), Q, K, V),
                             "adjacency is 5x8 but must be N_q x N_k = 5x7");
    REQUIRE_INVALID_ARGUMENT(graph(Eigen::SparseMatrix<bool>(5, 8), Q, K, V),
                             "Q is 5x64, K is 7x64");
  }
  SECTION("an adjacency for the whole batch instead of one sequence") {
    const Matrix Q2 = ref::normal(10, 64, 4704).cast<float>(),
                 K2 = ref::normal(14, 64, 4705).cast<float>(),
                 V2 = ref::normal(14, 3, 4706).cast<float>();
    REQUIRE_INVALID_ARGUMENT(graph(Eigen::SparseMatrix<float>(10, 14), Q2, K2, V2, {2, 1}),
                             "adjacency is 10x14 but must be N_q x N_k = 5x7");
  }
  SECTION("K, V and out of the wrong shape") {
    REQUIRE_INVALID_ARGUMENT(graph(adjacency, Q, Matrix(7, 63), V),
                             "K has 63 columns but Q has 64");
    REQUIRE_INVALID_ARGUMENT(graph(adjacency, Q, K, Matrix(6, 3)), "V has 6 rows but K has 7");
    Matrix wrong(4, 3);
    REQUIRE_INVALID_ARGUMENT(graph.compute(adjacency, Q, K, V, wrong),
                             "out is 4x3 but the attention output is 5x3");
  }
  SECTION("a layout that does not divide the columns") {
    REQUIRE_INVALID_ARGUMENT(graph(adjacency, Q, K, V, {1, 3}),
                             "must have a multiple of 3 columns for 3 heads");
  }
  SECTION("a negative thread count") {
    REQUIRE_INVALID_ARGUMENT((GraphAttention<kernels::Exponential<float>>(
                                 kernels::Exponential<float>(), {}, GraphOptions{.threads = -1})),
                             "GraphOptions: threads must be >= 0");
  }
  SECTION("an empty query tile") {
    REQUIRE_INVALID_ARGUMENT((GraphAttention<kernels::Exponential<float>>(
                                 kernels::Exponential<float>(), {}, GraphOptions{.query_tile = 0})),
                             "GraphOptions: query_tile must be >= 1, got 0");
  }
}

TEMPLATE_TEST_CASE("A NaN or infinity reaches only the nodes that have it as a neighbour",
                   "[graph][nonfinite]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index n = 80;
  constexpr Index poisoned_key = 11, poisoned_value = 42;
  const Graph g = random_graph(n, n, 0.08, 3, 4801);
  const ref::Problem clean = ref::random_problem<T>(n, n, 6, 3, 4802);
  ref::Problem poisoned = clean;
  poisoned.K(poisoned_key, 2) = std::numeric_limits<double>::quiet_NaN();
  poisoned.V.row(poisoned_value).setConstant(std::numeric_limits<double>::infinity());
  const auto adjacency = g.adjacency<T>();
  const ref::Visibility sees = g.visibility();
  REQUIRE(sees.col(poisoned_key).any());
  REQUIRE(sees.col(poisoned_value).any());
  REQUIRE_FALSE((sees.col(poisoned_key) || sees.col(poisoned_value)).all());
  for_each_form<T>(6, [&](const auto& kernel, const auto& mu) {
    const GraphAttention graph(kernel, mu);
    const ref::Matrix<T> out = graph(adjacency, poisoned.q<T>(), poisoned.k<T>(), poisoned.v<T>());
    const ref::Matrix<T> reference = graph(adjacency, clean.q<T>(), clean.k<T>(), clean.v<T>());
    for (Index i = 0; i < n; ++i) {
      CAPTURE(i);
      if (sees(i, poisoned_key) || sees(i, poisoned_value))
        CHECK_FALSE(out.row(i).allFinite());
      else
        CHECK(check::identical(out.row(i), reference.row(i)));
    }
  });
}

TEMPLATE_TEST_CASE("A neighbour whose log-weight is -inf weighs exactly zero", "[graph][nonfinite]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index n = 40, d = 4, hidden = 5;
  // Key 5 is (-inf, 0, 0, 0) and every query is positive, so q.k = -inf: log kappa = -inf for
  // Exponential and Rbf (whose key term is -inf too). Its value is huge, so
  // that any weight short of exactly 0 (Eigen's vectorised exp(-inf) is ~1e-39 in float, ~1e-308
  // in double) would show; node 0 has no other neighbour and must output zeros.
  ref::Problem p = ref::random_problem<T>(n, n, d, 3, 5001);
  p.Q = p.Q.cwiseAbs() + MatrixXd::Constant(n, d, 0.125);
  p.K.row(hidden) << -std::numeric_limits<double>::infinity(), 0, 0, 0;
  p.V.row(hidden).setConstant(double(std::numeric_limits<T>::max() / 4));
  p = ref::rounded<T>(p);
  Graph g = random_graph(n, n, 0.2, 0, 5002);
  g.neighbours[0] = {hidden};
  Graph without = g;
  Index edges_to_hidden = 0;
  for (auto& row : without.neighbours) edges_to_hidden += Index(std::erase(row, hidden));
  REQUIRE(edges_to_hidden > 3);
  const auto adjacency = g.adjacency<T>();
  const auto expect = [&](const ref::KernelModel& model) {
    return edge_reference(p, without, model, ref::unit_magnitude(), ref::unit_roundoff<T>);
  };
  {
    INFO("Exponential");
    const ref::Matrix<T> out =
        GraphAttention(kernels::Exponential<T>())(adjacency, p.q<T>(), p.k<T>(), p.v<T>());
    check::require_matches<T>(out, expect(ref::exponential(1 / std::sqrt(double(d)))));
    CHECK(check::zero_row(out, 0));
  }
  {
    INFO("Rbf");
    const ref::Matrix<T> out =
        GraphAttention(kernels::Rbf<T>())(adjacency, p.q<T>(), p.k<T>(), p.v<T>());
    check::require_matches<T>(out, expect(ref::rbf(std::sqrt(double(d)))));
    CHECK(check::zero_row(out, 0));
  }
}

TEMPLATE_TEST_CASE("An edge stored more than once is one edge", "[graph][duplicates]",
                   KERNATTN_TEST_SCALARS) {
  // N(i) is a set, as in the dense mask: an uncompressed matrix with a repeated insert, a summed
  // entry, and a Map over CSR arrays that repeat (and disorder) column indices all give the
  // output of the graph without repeats, bit for bit.
  using T = TestType;
  constexpr Index n = 50, d = 6, dv = 3;
  const Graph g = random_graph(n, n, 0.12, 3, 5101);
  const ref::Problem p = ref::random_problem<T>(n, n, d, dv, 5102);
  const ref::Matrix<T> Q = p.q<T>(), K = p.k<T>(), V = p.v<T>();
  // Every third edge of each row stored twice, the repeat right after it or at the row's end.
  auto stored = std::vector<std::vector<Index>>(std::size_t(n));
  for (Index i = 0; i < n; ++i) {
    const auto& row = g.neighbours[std::size_t(i)];
    auto& out = stored[std::size_t(i)];
    for (std::size_t t = 0; t < row.size(); ++t) {
      out.push_back(row[t]);
      if (t % 3 == 0) out.push_back(row[t]);
    }
    if (!row.empty()) out.push_back(row.front());
  }
  Eigen::SparseMatrix<T, Eigen::RowMajor> uncompressed(n, n);
  Eigen::VectorXi sizes(n);
  for (Index i = 0; i < n; ++i) sizes(i) = int(stored[std::size_t(i)].size()) + 2;
  uncompressed.reserve(sizes);
  for (Index i = 0; i < n; ++i)
    for (const Index j : stored[std::size_t(i)]) uncompressed.insertBackUncompressed(i, j) = T(1);
  REQUIRE_FALSE(uncompressed.isCompressed());
  std::vector<int> starts{0}, columns;
  std::vector<T> values;
  for (Index i = 0; i < n; ++i) {
    auto row = stored[std::size_t(i)];
    std::reverse(row.begin(), row.end());
    for (const Index j : row) columns.push_back(int(j));
    values.resize(columns.size(), T(1));
    starts.push_back(int(columns.size()));
  }
  const Eigen::Map<const Eigen::SparseMatrix<T, Eigen::RowMajor>> map(
      n, n, Index(columns.size()), starts.data(), columns.data(), values.data());
  std::vector<Eigen::Triplet<T>> triplets;
  for (Index i = 0; i < n; ++i)
    for (const Index j : g.neighbours[std::size_t(i)]) {
      triplets.emplace_back(i, j, T(1));
      triplets.emplace_back(i, j, T(-1));  // summed to a stored 0: still one edge
    }
  Eigen::SparseMatrix<T, Eigen::RowMajor> summed(n, n);
  summed.setFromTriplets(triplets.begin(), triplets.end());
  for_each_form<T>(d, [&](const auto& kernel, const auto& mu) {
    const GraphAttention graph(kernel, mu);
    const ref::Matrix<T> expected = graph(g.adjacency<T>(), Q, K, V);
    CHECK(check::identical(graph(uncompressed, Q, K, V), expected));
    CHECK(check::identical(graph(map, Q, K, V), expected));
    CHECK(check::identical(graph(summed, Q, K, V), expected));
    {
      INFO("converted from column-major storage with the repeats");
      const Eigen::SparseMatrix<T, Eigen::ColMajor> column_major = map;
      CHECK(check::identical(graph(column_major, Q, K, V), expected));
    }
    {
      INFO("with self-loops, some stored twice already");
      const GraphAttention looped(kernel, mu, GraphOptions{.add_self_loops = true});
      CHECK(check::identical(looped(uncompressed, Q, K, V), looped(g.adjacency<T>(), Q, K, V)));
    }
  });
  {
    INFO("against the dense engine with the same boolean mask");
    const GraphAttention graph(kernels::Matern32<T>(), magnitude::Lp<T>(T(3)));
    const ref::Reference expected =
        edge_reference(p, g, ref::matern(3, std::pow(double(d), 0.25)),
                       ref::lp(3, ref::default_gamma(d), 2), ref::unit_roundoff<T>);
    const ref::Matrix<T> out = graph(uncompressed, Q, K, V);
    check::require_matches<T>(out, expected);
    check::require_close(out,
                         check::run<T>(p, kernels::Matern32<T>(), magnitude::Lp<T>(T(3)),
                                       mask::Boolean(g.visibility())),
                         2 * expected.bound);
  }
}

TEST_CASE("An adjacency with an index outside its shape or a broken structure is rejected",
          "[graph][errors]") {
  // Maps over the caller's CSR (or CSC) arrays: nothing is read out of bounds (the ASan build
  // checks that), and the message names the adjacency, the index and the shape.
  using Matrix = ref::Matrix<float>;
  using RowMap = Eigen::Map<const Eigen::SparseMatrix<float, Eigen::RowMajor>>;
  using ColumnMap = Eigen::Map<const Eigen::SparseMatrix<float, Eigen::ColMajor>>;
  const GraphAttention<kernels::Exponential<float>> graph;
  const Matrix Q = ref::normal(5, 4, 5201).cast<float>(), K = ref::normal(7, 4, 5202).cast<float>(),
               V = ref::normal(7, 3, 5203).cast<float>();
  const std::vector<float> values(8, 1.0f);
  SECTION("a column index past the last key") {
    const std::vector<int> starts{0, 2, 3, 5, 6, 8}, columns{0, 3, 6, 1, 7, 2, 4, 5};
    REQUIRE_INVALID_ARGUMENT(
        graph(RowMap(5, 7, 8, starts.data(), columns.data(), values.data()), Q, K, V),
        "adjacency: row 2 stores column index 7, outside [0, 7) (adjacency is 5x7)");
  }
  SECTION("a negative column index") {
    const std::vector<int> starts{0, 2, 3, 5, 6, 8}, columns{0, 3, 6, 1, 4, 2, -1, 5};
    REQUIRE_INVALID_ARGUMENT(
        graph(RowMap(5, 7, 8, starts.data(), columns.data(), values.data()), Q, K, V),
        "adjacency: row 4 stores column index -1, outside [0, 7) (adjacency is 5x7)");
  }
  SECTION("a row index past the last query, in column-major storage") {
    const std::vector<int> starts{0, 1, 2, 3, 4, 5, 6, 8}, rows{0, 1, 2, 3, 4, 0, 1, 9};
    REQUIRE_INVALID_ARGUMENT(
        graph(ColumnMap(5, 7, 8, starts.data(), rows.data(), values.data()), Q, K, V),
        "adjacency: column 6 stores row index 9, outside [0, 5) (adjacency is 5x7)");
  }
  SECTION("an outer index array that decreases or overruns the entries") {
    const std::vector<int> columns{0, 3, 6, 1, 4, 2, 4, 5};
    const std::vector<int> decreasing{0, 4, 3, 5, 6, 8};
    REQUIRE_INVALID_ARGUMENT(
        graph(RowMap(5, 7, 8, decreasing.data(), columns.data(), values.data()), Q, K, V),
        "adjacency: its outer index array must be non-decreasing, but row 1 starts at entry 4 "
        "and row 2 at entry 3 (adjacency is 5x7)");
    const std::vector<int> overrun{0, 2, 3, 5, 6, 9};
    REQUIRE_INVALID_ARGUMENT(
        graph(RowMap(5, 7, 8, overrun.data(), columns.data(), values.data()), Q, K, V),
        "adjacency: its outer index array ends at entry 9 but it declares 8 stored entries");
    const std::vector<int> negative{-1, 2, 3, 5, 6, 7};
    REQUIRE_INVALID_ARGUMENT(
        graph(RowMap(5, 7, 8, negative.data(), columns.data(), values.data()), Q, K, V),
        "adjacency: its outer index array starts at -1, below 0");
  }
  SECTION("an uncompressed row that holds more entries than its space") {
    const std::vector<int> starts{0, 2, 3, 5, 6, 8}, columns{0, 3, 6, 1, 4, 2, 4, 5},
        counts{2, 1, 3, 1, 2};
    REQUIRE_INVALID_ARGUMENT(
        graph(RowMap(5, 7, 8, starts.data(), columns.data(), values.data(), counts.data()), Q, K,
              V),
        "adjacency: row 2 holds 3 entries from entry 3, but the next row "
        "starts at entry 5 (adjacency is 5x7)");
  }
  SECTION("a valid Map is read as it is") {
    const std::vector<int> starts{0, 2, 3, 5, 6, 8}, columns{0, 3, 6, 1, 4, 2, 4, 5};
    const Matrix out =
        graph(RowMap(5, 7, 8, starts.data(), columns.data(), values.data()), Q, K, V);
    CHECK(out.allFinite());
  }
}

}  // namespace test_graph_attention_hostile
