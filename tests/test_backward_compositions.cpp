// The backward pass of the compositions: `MultiHead` over heads of different engines (exact
// softmax, linear FAVOR+ under a causal mask, exact random-feature under a causal mask) is each
// head's own backward on its columns, bit for bit, for every thread count; it matches central
// finite differences in double; a head's failure names the head.
#include <cstdint>
#include <limits>

#include "backward_checks.hpp"
#include "catch.hpp"
#include "invalid_argument.hpp"
#include "linear_reference.hpp"
#include "reference.hpp"

namespace test_backward_compositions {

namespace {

using backward_checks::Mat;
using kernattn::Attention;
using kernattn::BatchLayout;
using kernattn::Heads;
using kernattn::LinearAttention;
using kernattn::MultiHead;
namespace mask = kernattn::mask;
namespace magnitude = kernattn::magnitude;

constexpr Index d = 4;
constexpr Index dv = 3;

template <class T>
using Softmax = Attention<kernels::Exponential<T>>;
template <class T>
using CausalFavor = LinearAttention<kernattn::features::Positive<T>, magnitude::None, mask::Causal>;
template <class T>
using CausalFourier = Attention<kernels::RandomFeature<kernattn::features::Fourier<T>>,
                                magnitude::Lp<T>, mask::Causal>;
template <class T>
using Mixed = MultiHead<Heads<Softmax<T>, CausalFavor<T>, CausalFourier<T>>>;

template <class T>
Mixed<T> mixed_heads() {
  const auto maps = linear_ref::Maps<T>::make(d, 51);
  return Mixed<T>(
      {Softmax<T>(), CausalFavor<T>(maps.positive),
       CausalFourier<T>(kernels::RandomFeature<kernattn::features::Fourier<T>>(maps.fourier),
                        magnitude::Lp<T>(T(3)))});
}

}  // namespace

TEMPLATE_TEST_CASE("MultiHead::backward is each head's backward on its columns",
                   "[backward][multi_head]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const Index B = 2;
  const Index H = 3;
  const Index nq = 7;
  const Index nk = 9;
  const Mixed<T> heads = mixed_heads<T>();
  const Mat<T> Q = ref::normal(B * nq, H * d, 801).cast<T>();
  const Mat<T> K = ref::normal(B * nk, H * d, 802).cast<T>();
  const Mat<T> V = ref::normal(B * nk, H * dv, 803).cast<T>();
  const Mat<T> dO = ref::normal(B * nq, H * dv, 804).cast<T>();
  const Mat<T> out = heads(Q, K, V, BatchLayout{B, H});
  const kernattn::AttentionGradients<T> g = heads.gradients(Q, K, V, out, dO, BatchLayout{B, H});

  const auto columns = [](const Mat<T>& m, Index h, Index width) -> Mat<T> {
    return m.middleCols(h * width, width);
  };
  const auto check_head = [&](const auto& head, Index h) {
    CAPTURE(h);
    Mat<T> statistics;
    Mat<T> own_out(B * nq, dv);
    kernattn::AttentionGradients<T> own;
    if constexpr (requires { head.gradients(Q, K, V, own_out, dO, BatchLayout{}); }) {
      own = head.gradients(columns(Q, h, d), columns(K, h, d), columns(V, h, dv),
                           columns(out, h, dv), columns(dO, h, dv), BatchLayout{B, 1});
    } else {
      head.compute(columns(Q, h, d), columns(K, h, d), columns(V, h, dv), own_out, statistics,
                   BatchLayout{B, 1});
      own = head.gradients(columns(Q, h, d), columns(K, h, d), columns(V, h, dv),
                           columns(out, h, dv), statistics, columns(dO, h, dv), BatchLayout{B, 1});
    }
    CHECK(check::identical(columns(g.dQ, h, d), own.dQ));
    CHECK(check::identical(columns(g.dK, h, d), own.dK));
    CHECK(check::identical(columns(g.dV, h, dv), own.dV));
  };
  check_head(std::get<0>(heads.heads()), 0);
  check_head(std::get<1>(heads.heads()), 1);
  check_head(std::get<2>(heads.heads()), 2);

  SECTION("every thread count gives the same bits (3 runs the heads in parallel)") {
    for (const int threads : {1, 2, 3}) {
      Mixed<T> other = heads;
      other.set_threads(threads);
      const auto again = other.gradients(Q, K, V, out, dO, BatchLayout{B, H});
      CHECK(check::identical(again.dQ, g.dQ));
      CHECK(check::identical(again.dK, g.dK));
      CHECK(check::identical(again.dV, g.dV));
    }
  }
  SECTION("gradients written over the inputs go through temporaries") {
    Mat<T> q = Q;
    Mat<T> k = K;
    Mat<T> v = V;
    heads.backward(q, k, v, out, dO, q, k, v, BatchLayout{B, H});
    CHECK(check::identical(q, g.dQ));
    CHECK(check::identical(k, g.dK));
    CHECK(check::identical(v, g.dV));
  }
  SECTION("a head's failure names the head and its columns") {
    Mat<T> bad_dO = dO;
    bad_dO(0, dv) = std::numeric_limits<T>::quiet_NaN();  // head 1 (linear) rejects it
    REQUIRE_THROWS_WITH(heads.gradients(Q, K, V, out, bad_dO, BatchLayout{B, H}),
                        Catch::Contains("MultiHead: head 1 of 3") && Catch::Contains("dOut"));
    Mat<T> wrong(2, 2);
    REQUIRE_THROWS_WITH(heads.gradients(Q, K, V, out, wrong, BatchLayout{B, H}),
                        Catch::Contains("dOut is 2x2"));
  }
}

TEST_CASE("MultiHead::backward matches central finite differences (double)",
          "[backward][multi_head][finite_differences]") {
  using T = double;
  const Mixed<T> heads = mixed_heads<T>();
  const BatchLayout layout{1, 3};
  Mat<T> Q = ref::normal(6, 3 * d, 811, 0.0, 0.5);
  Mat<T> K = ref::normal(6, 3 * d, 812, 0.0, 0.5);
  Mat<T> V = ref::normal(6, 3 * dv, 813);
  const Mat<T> weights = ref::normal(6, 3 * dv, 814);
  const auto loss = [&] { return (heads(Q, K, V, layout).array() * weights.array()).sum(); };
  const kernattn::AttentionGradients<T> g =
      heads.gradients(Q, K, V, heads(Q, K, V, layout), weights, layout);
  backward_checks::check_finite_differences(Q, K, V, g, loss);
}

}  // namespace test_backward_compositions
