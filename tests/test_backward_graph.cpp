// The graph engine's backward pass (GraphAttention::compute with statistics, ::backward): for a
// kernel of every form the engine scores (dot-product, distance, direct, feature; with and
// without a magnitude), statistics and gradients against the naive backward of
// support/gradient_reference.hpp over the graph's edges, bit for bit across thread counts and
// query blocks; against central finite differences in double, with and without self-loops; in
// the batch x heads layout; non-finite data reaching exactly the pairs that see it; bad shapes.
#include <cmath>
#include <cstdint>
#include <limits>

#include "backward_checks.hpp"
#include "catch.hpp"
#include "feature_gradient_reference.hpp"
#include "graph_reference.hpp"
#include "invalid_argument.hpp"
#include "kernattn/attention/graph_attention.hpp"
#include "linear_reference.hpp"
#include "reference.hpp"

namespace test_backward_graph {

namespace {

using backward_checks::Mat;
using graph_ref::Graph;
using kernattn::BatchLayout;
using kernattn::GraphAttention;
using kernattn::GraphOptions;
using kernattn::magnitude::L2;
using kernattn::magnitude::Lp;
using None = kernattn::magnitude::None;

constexpr Index d = 5;
constexpr Index dv = 3;

/// Runs `check(graph attention, kernel model, magnitude model)` for one kernel of each form the
/// graph engine scores.
template <class T, class Check>
void for_each_form(const GraphOptions& options, Check&& check) {
  using kernattn::features::Positive;
  using kernattn::features::Yaglom;
  using kernattn::kernels::IkaEnergy;
  using kernattn::kernels::RandomFeature;
  const double s = 1 / std::sqrt(double(d));
  const double l = std::sqrt(std::sqrt(double(d)));
  const double gamma = ref::default_gamma(d);
  {
    INFO("Exponential");
    check(GraphAttention<kernels::Exponential<T>, None>({}, {}, options), gref::exponential(s),
          gref::unit_magnitude());
  }
  {
    INFO("Rbf x Lp(3)");
    check(GraphAttention<kernels::Rbf<T>, Lp<T>>({}, Lp<T>(T(3)), options),
          gref::rbf(std::sqrt(double(d))), gref::lp(3, gamma, 2));
  }
  {
    INFO("Laplacian");
    check(GraphAttention<kernels::Laplacian<T>, None>({}, {}, options), gref::matern(1, l),
          gref::unit_magnitude());
  }
  {
    INFO("Polynomial(2) x L2");
    check(
        GraphAttention<kernels::Polynomial<T>, L2<T>>(kernels::Polynomial<T>(2), L2<T>(), options),
        gref::polynomial(2, 1, double(T(s))), gref::lp(2, gamma, 2));
  }
  const auto maps = linear_ref::Maps<T>::make(d, 31);
  {
    INFO("RandomFeature<Positive> x Lp(3)");
    check(GraphAttention<RandomFeature<Positive<T>>, Lp<T>>(
              RandomFeature<Positive<T>>(maps.positive), Lp<T>(T(3)), options),
          feature_gradient_ref::feature_pair(maps.naive_positive, true), gref::lp(3, gamma, 2));
  }
  {
    INFO("IkaEnergy<Yaglom>");
    check(
        GraphAttention<IkaEnergy<Yaglom<T>>, None>(IkaEnergy<Yaglom<T>>(maps.yaglom), {}, options),
        feature_gradient_ref::ika_energy_pair(maps.naive_yaglom), gref::unit_magnitude());
  }
}

/// `graph` with other options.
template <class Graph>
Graph with_options(const Graph& graph, const GraphOptions& options) {
  return Graph(graph.kernel(), graph.magnitude(), options);
}

/// The gradients of `graph` on (Q, K, V) with dOut `dO`, through its own forward.
template <class T, class GraphAttentionT, class Adjacency>
kernattn::AttentionGradients<T> gradients_of(const GraphAttentionT& graph,
                                             const Adjacency& adjacency, const Mat<T>& Q,
                                             const Mat<T>& K, const Mat<T>& V, const Mat<T>& dO,
                                             BatchLayout layout = {}) {
  Mat<T> out(Q.rows(), V.cols());
  Mat<T> statistics;
  graph.compute(adjacency, Q, K, V, out, statistics, layout);
  return graph.gradients(adjacency, Q, K, V, out, statistics, dO, layout);
}

void require_identical(const auto& a, const auto& b) {
  CHECK(check::identical(a.dQ, b.dQ));
  CHECK(check::identical(a.dK, b.dK));
  CHECK(check::identical(a.dV, b.dV));
}

}  // namespace

TEMPLATE_TEST_CASE("Graph backward against the naive backward over the edges", "[backward][graph]",
                   KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const bool self_loops = GENERATE(false, true);
  CAPTURE(self_loops);
  const Graph base = graph_ref::random_graph(11, 11, 0.35, 2, 71);
  // The isolated rows keep a self-loop when the option adds them.
  const Graph g = self_loops ? base.with_self_loops() : base;
  const auto adjacency = base.template adjacency<T>();
  const ref::Problem p = ref::random_problem<T>(g.queries(), g.keys, d, dv, 72);
  const ref::MatrixXd dOut = ref::normal(g.queries(), dv, 73).cast<T>().template cast<double>();
  const Mat<T> Q = p.Q.cast<T>(), K = p.K.cast<T>(), V = p.V.cast<T>(), dO = dOut.cast<T>();
  for_each_form<T>(
      GraphOptions{.add_self_loops = self_loops},
      [&](const auto& graph, const gref::PairModel& km, const gref::MagnitudeModel& mm) {
        const gref::Backward expected =
            gref::backward(p.Q, p.K, p.V, dOut, km, mm, g.visibility(), ref::unit_roundoff<T>);
        Mat<T> out(g.queries(), dv);
        Mat<T> statistics;
        graph.compute(adjacency, Q, K, V, out, statistics);
        CHECK(check::identical(out, graph(adjacency, Q, K, V)));
        const kernattn::AttentionGradients<T> gradients =
            graph.gradients(adjacency, Q, K, V, out, statistics, dO);
        backward_checks::require_within(statistics, expected.statistics, expected.statistics_bound,
                                        "statistics");
        backward_checks::require_within(gradients.dQ, expected.dQ, expected.dQ_bound, "dQ");
        backward_checks::require_within(gradients.dK, expected.dK, expected.dK_bound, "dK");
        backward_checks::require_within(gradients.dV, expected.dV, expected.dV_bound, "dV");
        for (Index i = 0; i < g.queries(); ++i)
          if (base.isolated(i) && !self_loops) {
            CAPTURE(i);
            CHECK(double(statistics(i, 0)) == expected.statistics(i, 0));
            CHECK(check::zero_row(gradients.dQ, i));
          }
        // Other query blocks (feature forms batch their queries' features by block, so those bits
        // may change with it: each block size is checked on its own) and thread counts.
        for (const Index query_tile : {Index(3), Index(1)}) {
          CAPTURE(query_tile);
          const auto with_tile = [&](int threads) {
            return with_options(graph, GraphOptions{.threads = threads,
                                                    .query_tile = query_tile,
                                                    .add_self_loops = self_loops});
          };
          const kernattn::AttentionGradients<T> one =
              gradients_of(with_tile(1), adjacency, Q, K, V, dO);
          backward_checks::require_within(one.dQ, expected.dQ, expected.dQ_bound, "dQ");
          backward_checks::require_within(one.dK, expected.dK, expected.dK_bound, "dK");
          backward_checks::require_within(one.dV, expected.dV, expected.dV_bound, "dV");
          for (const int threads : {2, 3}) {
            CAPTURE(threads);
            require_identical(gradients_of(with_tile(threads), adjacency, Q, K, V, dO), one);
          }
        }
      });
}

TEMPLATE_TEST_CASE("Graph backward of the direct forms: a node whose weights sum to 0",
                   "[backward][graph]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  // Linear kernel: node 0 sees keys 0 and 1 with q.k = +1 and -1, so its denominator is 0 and
  // its output is 0; its gradients must be 0 too, and the other node's untouched by it.
  Mat<T> Q(2, 2), K(2, 2), V(2, 1);
  Q << 1, 0, 0, 1;
  K << 1, 1, -1, 1;
  V << 2, 3;
  Eigen::SparseMatrix<T, Eigen::RowMajor> adjacency(2, 2);
  adjacency.insert(0, 0) = 1;
  adjacency.insert(0, 1) = 1;
  adjacency.insert(1, 0) = 1;
  const GraphAttention<kernels::Linear<T>, None> graph;
  Mat<T> out(2, 1);
  Mat<T> statistics;
  graph.compute(adjacency, Q, K, V, out, statistics);
  CHECK(statistics(0, 0) == T(0));
  const Mat<T> dO = Mat<T>::Ones(2, 1);
  const kernattn::AttentionGradients<T> gradients =
      graph.gradients(adjacency, Q, K, V, out, statistics, dO);
  CHECK(check::zero_row(gradients.dQ, 0));
  CHECK(gradients.dQ.allFinite());
  CHECK(gradients.dK.allFinite());
  // Node 1 alone sees key 0 with weight 1: dv_0 = dO_1 = 1, and the output v_0 does not move
  // with q or k, so dq_1 = dk_0 = 0 (E = dO.v - D = 0).
  CHECK(gradients.dV(0, 0) == T(1));
  CHECK(gradients.dV(1, 0) == T(0));
  CHECK(check::zero_row(gradients.dQ, 1));
  CHECK(check::zero_row(gradients.dK, 0));
}

TEST_CASE("Graph backward against central finite differences", "[backward][graph]") {
  const Graph base = graph_ref::random_graph(7, 7, 0.4, 1, 81);
  const auto adjacency = base.adjacency<double>();
  const ref::Problem p = ref::random_problem<double>(7, 7, 4, 2, 82);
  const Mat<double> weights = ref::normal(7, 2, 83);
  for (const bool self_loops : {false, true}) {
    CAPTURE(self_loops);
    const auto check_differences = [&](const auto& graph) {
      Mat<double> Q = p.Q, K = p.K, V = p.V;
      const auto loss = [&] { return (graph(adjacency, Q, K, V).array() * weights.array()).sum(); };
      backward_checks::check_finite_differences(
          Q, K, V, gradients_of<double>(graph, adjacency, Q, K, V, weights), loss);
    };
    const GraphOptions options{.add_self_loops = self_loops};
    {
      INFO("Rbf x Lp(3)");
      check_differences(
          GraphAttention<kernels::Rbf<double>, Lp<double>>({}, Lp<double>(3), options));
    }
    {
      INFO("Matern 5/2 x Lp(0.5)");
      check_differences(
          GraphAttention<kernels::Matern52<double>, Lp<double>>({}, Lp<double>(0.5), options));
    }
    {
      INFO("Polynomial(3) x L2");
      check_differences(GraphAttention<kernels::Polynomial<double>, L2<double>>(
          kernels::Polynomial<double>(3), L2<double>(), options));
    }
  }
}

TEMPLATE_TEST_CASE("Graph backward in the batch x heads layout: each sequence and head alone",
                   "[backward][graph][batch]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index n = 9, sequences = 2, heads = 3;
  const Graph g = graph_ref::random_graph(n, n, 0.4, 1, 91);
  const auto adjacency = g.template adjacency<T>();
  const ref::Problem p =
      ref::random_problem<T>(sequences * n, sequences * n, heads * d, heads * dv, 92);
  const Mat<T> Q = p.Q.cast<T>(), K = p.K.cast<T>(), V = p.V.cast<T>();
  const Mat<T> dO = ref::normal(sequences * n, heads * dv, 93).cast<T>();
  const GraphAttention<kernels::Rbf<T>, Lp<T>> graph({}, Lp<T>(T(3)),
                                                     GraphOptions{.query_tile = 4});
  const kernattn::AttentionGradients<T> batch =
      gradients_of(graph, adjacency, Q, K, V, dO, BatchLayout{sequences, heads});
  for (Index b = 0; b < sequences; ++b)
    for (Index h = 0; h < heads; ++h) {
      CAPTURE(b, h);
      const Mat<T> q = Q.block(b * n, h * d, n, d), k = K.block(b * n, h * d, n, d);
      const Mat<T> v = V.block(b * n, h * dv, n, dv), o = dO.block(b * n, h * dv, n, dv);
      const kernattn::AttentionGradients<T> alone = gradients_of(graph, adjacency, q, k, v, o);
      CHECK(check::identical(Mat<T>(batch.dQ.block(b * n, h * d, n, d)), alone.dQ));
      CHECK(check::identical(Mat<T>(batch.dK.block(b * n, h * d, n, d)), alone.dK));
      CHECK(check::identical(Mat<T>(batch.dV.block(b * n, h * dv, n, dv)), alone.dV));
    }
}

TEMPLATE_TEST_CASE("Graph backward: a NaN key reaches exactly the pairs that see it",
                   "[backward][graph][nonfinite]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index n = 12, poisoned = 5;
  const Graph g = graph_ref::random_graph(n, n, 0.25, 0, 101);
  const auto adjacency = g.template adjacency<T>();
  const ref::Problem p = ref::random_problem<T>(n, n, d, dv, 102);
  const Mat<T> Q = p.Q.cast<T>(), V = p.V.cast<T>();
  const Mat<T> K = p.K.cast<T>();
  Mat<T> poisoned_keys = K;
  poisoned_keys.row(poisoned).setConstant(std::numeric_limits<T>::quiet_NaN());
  const Mat<T> dO = ref::normal(n, dv, 103).cast<T>();
  const GraphAttention<kernels::Rbf<T>, Lp<T>> graph({}, Lp<T>(T(3)));
  const kernattn::AttentionGradients<T> clean = gradients_of(graph, adjacency, Q, K, V, dO);
  const kernattn::AttentionGradients<T> dirty =
      gradients_of(graph, adjacency, Q, poisoned_keys, V, dO);
  const ref::Visibility sees = g.visibility();
  for (Index i = 0; i < n; ++i) {
    CAPTURE(i);
    if (sees(i, poisoned))
      CHECK(dirty.dQ.row(i).hasNaN());
    else
      CHECK(check::identical(Mat<T>(dirty.dQ.row(i)), Mat<T>(clean.dQ.row(i))));
  }
  // Key j is reached through the rows that attend to it: through a row that also sees the
  // poisoned key, its gradients are NaN; otherwise they keep their bits.
  for (Index j = 0; j < n; ++j) {
    if (j == poisoned) continue;
    CAPTURE(j);
    bool shares_a_row = false;
    for (Index i = 0; i < n; ++i) shares_a_row = shares_a_row || (sees(i, j) && sees(i, poisoned));
    if (shares_a_row) {
      CHECK(dirty.dK.row(j).hasNaN());
    } else {
      CHECK(check::identical(Mat<T>(dirty.dK.row(j)), Mat<T>(clean.dK.row(j))));
      CHECK(check::identical(Mat<T>(dirty.dV.row(j)), Mat<T>(clean.dV.row(j))));
    }
  }
}

TEST_CASE("Graph backward names a wrongly shaped argument", "[backward][graph][errors]") {
  const Graph g = graph_ref::random_graph(4, 6, 0.5, 0, 111);
  const auto adjacency = g.adjacency<double>();
  const ref::Problem p = ref::random_problem<double>(4, 6, d, dv, 112);
  const GraphAttention<kernels::Exponential<double>, None> graph;
  Mat<double> out(4, dv);
  Mat<double> statistics;
  graph.compute(adjacency, p.Q, p.K, p.V, out, statistics);
  REQUIRE(statistics.rows() == 4);
  REQUIRE(statistics.cols() == 1);
  Mat<double> dQ(4, d), dK(6, d), dV(6, dv), wrong(3, 3);
  const Mat<double> dO = Mat<double>::Ones(4, dv);
  REQUIRE_INVALID_ARGUMENT(
      graph.backward(adjacency, p.Q, p.K, p.V, out, statistics, dO, wrong, dK, dV), "dQ is 3x3");
  REQUIRE_INVALID_ARGUMENT(
      graph.backward(adjacency, p.Q, p.K, p.V, out, statistics, dO, dQ, wrong, dV), "dK is 3x3");
  REQUIRE_INVALID_ARGUMENT(graph.backward(adjacency, p.Q, p.K, p.V, out, wrong, dO, dQ, dK, dV),
                           "statistics is 3x3");
  REQUIRE_INVALID_ARGUMENT(
      graph.backward(adjacency, p.Q, p.K, p.V, out, statistics, wrong, dQ, dK, dV), "dOut is 3x3");
  const Eigen::SparseMatrix<double> transposed = adjacency.transpose();
  REQUIRE_INVALID_ARGUMENT(
      graph.backward(transposed, p.Q, p.K, p.V, out, statistics, dO, dQ, dK, dV), "adjacency is");
}

}  // namespace test_backward_graph
