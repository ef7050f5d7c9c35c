// The backward pass of PositionalAttention: the exact engine's backward on the inputs [f | t]
// (test_backward_exact.cpp tests that engine), split into the features' and the positions'
// gradients, the positions' summed over the heads that share them; checked bit for bit against
// that split done here, and against central finite differences in double in all five inputs.
#include <cstdint>

#include "backward_checks.hpp"
#include "catch.hpp"
#include "invalid_argument.hpp"
#include "reference.hpp"

namespace test_backward_positional {

namespace {

using backward_checks::Mat;
using kernattn::BatchLayout;
namespace mask = kernattn::mask;
namespace magnitude = kernattn::magnitude;

constexpr Index B = 2;
constexpr Index H = 2;
constexpr Index d = 3;
constexpr Index dt = 2;
constexpr Index dv = 2;
constexpr Index n = 5;

template <class T>
using Positional = kernattn::PositionalAttention<kernels::Rbf<T>, kernels::Matern32<T>,
                                                 magnitude::Lp<T>, mask::Causal>;

/// [f | t] of every head, as the documentation of PositionalAttention lays it out.
template <class T>
Mat<T> joined(const Mat<T>& F, const Mat<T>& positions) {
  Mat<T> inputs(F.rows(), H * (d + dt));
  for (Index h = 0; h < H; ++h) {
    inputs.middleCols(h * (d + dt), d) = F.middleCols(h * d, d);
    inputs.middleCols(h * (d + dt) + d, dt) = positions;
  }
  return inputs;
}

}  // namespace

TEMPLATE_TEST_CASE("PositionalAttention::backward is the engine's backward on [f | t], split",
                   "[backward][positional]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const Positional<T> attention({}, {}, magnitude::Lp<T>(T(3)));
  const BatchLayout layout{B, H};
  const Mat<T> Fq = ref::normal(B * n, H * d, 1001).cast<T>();
  const Mat<T> Fk = ref::normal(B * n, H * d, 1002).cast<T>();
  const Mat<T> Tq = ref::normal(B * n, dt, 1003).cast<T>();
  const Mat<T> Tk = ref::normal(B * n, dt, 1004).cast<T>();
  const Mat<T> V = ref::normal(B * n, H * dv, 1005).cast<T>();
  const Mat<T> dO = ref::normal(B * n, H * dv, 1006).cast<T>();
  Mat<T> out(B * n, H * dv);
  Mat<T> statistics;
  attention.compute(Fq, Tq, Fk, Tk, V, out, statistics, layout);
  CHECK(check::identical(out, attention(Fq, Tq, Fk, Tk, V, layout)));
  const kernattn::PositionalGradients<T> g =
      attention.gradients(Fq, Tq, Fk, Tk, V, out, statistics, dO, layout);

  using Engine = typename Positional<T>::Engine;
  const Engine engine(typename Positional<T>::Kernel({}, {}, dt),
                      magnitude::FeaturePart<magnitude::Lp<T>>(magnitude::Lp<T>(T(3)), dt));
  const Mat<T> Q = joined<T>(Fq, Tq);
  const Mat<T> K = joined<T>(Fk, Tk);
  Mat<T> engine_out(B * n, H * dv);
  Mat<T> engine_statistics;
  engine.compute(Q, K, V, engine_out, engine_statistics, layout);
  CHECK(check::identical(engine_statistics, statistics));
  const auto joint = engine.gradients(Q, K, V, out, statistics, dO, layout);
  for (Index h = 0; h < H; ++h) {
    CHECK(check::identical(g.dFq.middleCols(h * d, d), joint.dQ.middleCols(h * (d + dt), d)));
    CHECK(check::identical(g.dFk.middleCols(h * d, d), joint.dK.middleCols(h * (d + dt), d)));
  }
  const Mat<T> dTq = joint.dQ.middleCols(d, dt) + joint.dQ.middleCols(d + dt + d, dt);
  const Mat<T> dTk = joint.dK.middleCols(d, dt) + joint.dK.middleCols(d + dt + d, dt);
  CHECK(check::identical(g.dTq, dTq));
  CHECK(check::identical(g.dTk, dTk));
  CHECK(check::identical(g.dV, joint.dV));

  SECTION("a gradient of the wrong shape is named") {
    Mat<T> wrong(1, 1);
    Mat<T> a = g.dFq, b = g.dFk, c = g.dTk, e = g.dV;
    REQUIRE_THROWS_WITH(
        attention.backward(Fq, Tq, Fk, Tk, V, out, statistics, dO, a, wrong, b, c, e, layout),
        Catch::Contains("dTq is 1x1"));
  }
}

TEST_CASE("PositionalAttention::backward matches central finite differences (double)",
          "[backward][positional][finite_differences]") {
  using T = double;
  const Positional<T> attention({}, {}, magnitude::Lp<T>(T(3)));
  const BatchLayout layout{B, H};
  Mat<T> Fq = ref::normal(B * n, H * d, 1011, 0.0, 0.5);
  Mat<T> Tq = ref::normal(B * n, dt, 1012);
  Mat<T> Fk = ref::normal(B * n, H * d, 1013, 0.0, 0.5);
  Mat<T> Tk = ref::normal(B * n, dt, 1014);
  Mat<T> V = ref::normal(B * n, H * dv, 1015);
  const Mat<T> weights = ref::normal(B * n, H * dv, 1016);
  const auto loss = [&] {
    return (attention(Fq, Tq, Fk, Tk, V, layout).array() * weights.array()).sum();
  };
  Mat<T> out(B * n, H * dv);
  Mat<T> statistics;
  attention.compute(Fq, Tq, Fk, Tk, V, out, statistics, layout);
  const kernattn::PositionalGradients<T> g =
      attention.gradients(Fq, Tq, Fk, Tk, V, out, statistics, weights, layout);
  backward_checks::check_difference_quotients(Fq, g.dFq, "dFq", loss);
  backward_checks::check_difference_quotients(Tq, g.dTq, "dTq", loss);
  backward_checks::check_difference_quotients(Fk, g.dFk, "dFk", loss);
  backward_checks::check_difference_quotients(Tk, g.dTk, "dTk", loss);
  backward_checks::check_difference_quotients(V, g.dV, "dV", loss);
}

}  // namespace test_backward_positional
