// The exact engine's backward pass under typed masks (Causal, Window, KeyPadding and their
// intersection) and in the batch x heads layout, against the naive backward of
// support/gradient_reference.hpp; and hidden keys: poisoning what a row does not see (huge
// numbers, NaN) leaves its gradients' bits alone.
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "backward_checks.hpp"
#include "catch.hpp"
#include "reference.hpp"

namespace test_backward_masks {

namespace {

using backward_checks::Mat;
using kernattn::Attention;
using kernattn::BatchLayout;
namespace mask = kernattn::mask;
using None = kernattn::magnitude::None;

constexpr Index d = 5;

/// Runs `check(attention, kernel model, magnitude model)` for one kernel of each form.
template <class T, class Mask, class Check>
void for_each_form(const Mask& m, Check&& check) {
  using kernattn::magnitude::L2;
  using kernattn::magnitude::Lp;
  const double s = 1 / std::sqrt(double(d));
  const double l = std::sqrt(std::sqrt(double(d)));
  {
    INFO("Exponential");
    check(Attention<kernels::Exponential<T>, None, Mask>({}, {}, m), gref::exponential(s),
          gref::unit_magnitude());
  }
  {
    INFO("Rbf x Lp(3)");
    check(Attention<kernels::Rbf<T>, Lp<T>, Mask>({}, Lp<T>(T(3)), m),
          gref::rbf(std::sqrt(double(d))), gref::lp(3, ref::default_gamma(d), 2));
  }
  {
    INFO("Laplacian");
    check(Attention<kernels::Laplacian<T>, None, Mask>({}, {}, m), gref::matern(1, l),
          gref::unit_magnitude());
  }
  {
    INFO("Polynomial(2) x L2");
    check(Attention<kernels::Polynomial<T>, L2<T>, Mask>(kernels::Polynomial<T>(2), L2<T>(), m),
          gref::polynomial(2, 1, double(T(s))), gref::lp(2, ref::default_gamma(d), 2));
  }
}

/// Rows [first, end) of m replaced by +-huge alternately or by NaN.
template <class T>
Mat<T> poisoned(Mat<T> m, Index first, bool nan) {
  const T huge = std::is_same_v<T, float> ? T(1e15) : T(1e150);
  for (Index i = first; i < m.rows(); ++i)
    for (Index c = 0; c < m.cols(); ++c)
      m(i, c) = nan ? std::numeric_limits<T>::quiet_NaN() : ((i + c) % 2 == 0 ? huge : -huge);
  return m;
}

/// `attention` with other tiles and threads.
template <class Attention>
Attention with_options(const Attention& attention, const kernattn::ExecutionOptions& options) {
  return Attention(attention.kernel(), attention.magnitude(), attention.mask(), options);
}

/// The gradients of `attention` on (Q, K, V) with dOut `dO`, through its own forward.
template <class T, class Attention>
kernattn::AttentionGradients<T> gradients_of(const Attention& attention, const Mat<T>& Q,
                                             const Mat<T>& K, const Mat<T>& V, const Mat<T>& dO,
                                             BatchLayout layout = {}) {
  Mat<T> out(Q.rows(), V.cols());
  Mat<T> statistics;
  attention.compute(Q, K, V, out, statistics, layout);
  return attention.gradients(Q, K, V, out, statistics, dO, layout);
}

}  // namespace

TEMPLATE_TEST_CASE("Exact backward under typed masks against the naive backward",
                   "[backward][masks]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const Index n = 23;
  std::uint32_t seed = 500;
  const auto run = [&](const auto& m, const ref::Visibility& visible) {
    for_each_form<T>(m, [&](const auto& attention, const auto& kernel, const auto& mu) {
      backward_checks::check_backward<T>(attention, kernel, mu, visible, d, seed++);
    });
  };
  {
    INFO("Causal");
    run(mask::Causal{}, ref::causal(n, n));
  }
  {
    INFO("Window(4, 2)");
    run(mask::Window(4, 2), ref::window(n, n, 4, 2));
  }
  {
    INFO("KeyPadding to 17 keys");
    run(mask::KeyPadding::from_lengths({17}), ref::first_keys(n, n, 17));
  }
  {
    INFO("Causal && KeyPadding to 17 keys");
    run(mask::Causal{} && mask::KeyPadding::from_lengths({17}),
        ref::causal(n, n) && ref::first_keys(n, n, 17));
  }
}

TEMPLATE_TEST_CASE("Exact backward in the batch x heads layout: each sequence and head alone",
                   "[backward][batch]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const Index sequences = 2;
  const Index heads = 3;
  const Index n = 11;
  const Index dv = 2;
  const BatchLayout layout{sequences, heads};
  const Mat<T> Q = ref::normal(sequences * n, heads * d, 601).cast<T>();
  const Mat<T> K = ref::normal(sequences * n, heads * d, 602).cast<T>();
  const Mat<T> V = ref::normal(sequences * n, heads * dv, 603).cast<T>();
  const Mat<T> dO = ref::normal(sequences * n, heads * dv, 604).cast<T>();
  for_each_form<T>(mask::Causal{}, [&](const auto& attention, const auto& kernel, const auto& mu) {
    const auto batch = gradients_of<T>(attention, Q, K, V, dO, layout);
    for (Index b = 0; b < sequences; ++b)
      for (Index h = 0; h < heads; ++h) {
        CAPTURE(b, h);
        const auto rows = [&](const Mat<T>& m, Index cols) {
          return ref::MatrixXd(m.block(b * n, h * cols, n, cols).template cast<double>());
        };
        const gref::Backward expected =
            gref::backward(rows(Q, d), rows(K, d), rows(V, dv), rows(dO, dv), kernel, mu,
                           ref::causal(n, n), ref::unit_roundoff<T>);
        backward_checks::require_within(batch.dQ.block(b * n, h * d, n, d), expected.dQ,
                                        expected.dQ_bound, "dQ");
        backward_checks::require_within(batch.dK.block(b * n, h * d, n, d), expected.dK,
                                        expected.dK_bound, "dK");
        backward_checks::require_within(batch.dV.block(b * n, h * dv, n, dv), expected.dV,
                                        expected.dV_bound, "dV");
      }
  });
}

TEMPLATE_TEST_CASE(
    "Exact backward: poisoning every query, key, value and dOut row after p leaves the gradients "
    "of rows 0..p unchanged, bit for bit",
    "[backward][causality]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const Index n = 40;
  const Index dv = 3;
  const Mat<T> Q = ref::normal(n, d, 701, 0.0, 0.5).cast<T>();
  const Mat<T> K = ref::normal(n, d, 702, 0.0, 0.5).cast<T>();
  const Mat<T> V = ref::normal(n, dv, 703).cast<T>();
  const Mat<T> dO = ref::normal(n, dv, 704).cast<T>();
  for (const kernattn::ExecutionOptions& options : backward_checks::backward_tilings) {
    CAPTURE(options.query_tile, options.key_tile);
    for_each_form<T>(mask::Causal{}, [&](const auto& base, const auto& kernel, const auto&) {
      const auto attention = with_options(base, options);
      const auto clean = gradients_of<T>(attention, Q, K, V, dO);
      REQUIRE(clean.dQ.allFinite());
      for (const Index p : {Index(0), Index(6), Index(13), Index(n - 2)})
        for (const bool nan : {false, true}) {
          // A direct kernel's forward refuses the rows whose huge weights overflow
          // (test_causality.cpp); NaN reaches only the rows that see it.
          if (kernel.direct && !nan) continue;
          CAPTURE(p, nan);
          const auto dirty =
              gradients_of<T>(attention, poisoned<T>(Q, p + 1, nan), poisoned<T>(K, p + 1, nan),
                              poisoned<T>(V, p + 1, nan), poisoned<T>(dO, p + 1, nan));
          CHECK(check::identical(dirty.dQ.topRows(p + 1), clean.dQ.topRows(p + 1)));
        }
    });
  }
}

TEMPLATE_TEST_CASE(
    "Exact backward: padded keys hold anything, and every gradient but theirs keeps its bits; "
    "theirs are zero",
    "[backward][padding]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const Index n = 30;
  const Index length = 19;
  const Index dv = 3;
  const Mat<T> Q = ref::normal(n, d, 801, 0.0, 0.5).cast<T>();
  const Mat<T> K = ref::normal(n, d, 802, 0.0, 0.5).cast<T>();
  const Mat<T> V = ref::normal(n, dv, 803).cast<T>();
  const Mat<T> dO = ref::normal(n, dv, 804).cast<T>();
  const auto padding = mask::KeyPadding::from_lengths({length});
  for (const kernattn::ExecutionOptions& options : backward_checks::backward_tilings) {
    CAPTURE(options.query_tile, options.key_tile);
    for_each_form<T>(padding, [&](const auto& base, const auto&, const auto&) {
      const auto attention = with_options(base, options);
      const auto clean = gradients_of<T>(attention, Q, K, V, dO);
      CHECK(clean.dK.bottomRows(n - length).isZero(0));
      CHECK(clean.dV.bottomRows(n - length).isZero(0));
      for (const bool nan : {false, true}) {
        CAPTURE(nan);
        const auto dirty = gradients_of<T>(attention, Q, poisoned<T>(K, length, nan),
                                           poisoned<T>(V, length, nan), dO);
        CHECK(check::identical(dirty.dQ, clean.dQ));
        CHECK(check::identical(dirty.dK.topRows(length), clean.dK.topRows(length)));
        CHECK(check::identical(dirty.dV.topRows(length), clean.dV.topRows(length)));
        CHECK(dirty.dK.bottomRows(n - length).isZero(0));
        CHECK(dirty.dV.bottomRows(n - length).isZero(0));
      }
    });
  }
}

}  // namespace test_backward_masks
