// The checks the backward tests share: one exact attention's statistics and gradients against
// the naive backward of gradient_reference.hpp, across tilings and thread counts, and the
// compositions they run on (every kernel form, every magnitude).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "catch.hpp"
#include "gradient_reference.hpp"
#include "reference.hpp"

namespace backward_checks {

using ref::Index;
namespace kernels = kernattn::kernels;
namespace magnitude = kernattn::magnitude;

template <class T>
using Mat = ref::Matrix<T>;

/// Every entry of `actual` within `bound` of `expected` (NaN fails).
template <class Derived>
void require_within(const Eigen::MatrixBase<Derived>& actual, const ref::MatrixXd& expected,
                    const ref::MatrixXd& bound, const char* name) {
  REQUIRE(actual.rows() == expected.rows());
  REQUIRE(actual.cols() == expected.cols());
  Index failures = 0;
  double worst = 0;
  for (Index i = 0; i < expected.rows(); ++i)
    for (Index c = 0; c < expected.cols(); ++c) {
      if (std::isinf(expected(i, c))) {
        failures += double(actual(i, c)) == expected(i, c) ? 0 : 1;
        continue;
      }
      const double error = std::abs(double(actual(i, c)) - expected(i, c));
      worst = std::max(worst, error / std::max(bound(i, c), 1e-300));
      if (!(error <= bound(i, c))) ++failures;
    }
  INFO(name << ": worst error / bound = " << worst);
#ifdef GRAD_DEBUG
  WARN(name << " worst " << worst << " bound/max "
            << bound.maxCoeff() / std::max(1e-300, expected.cwiseAbs().maxCoeff()));
#endif
  CHECK(failures == 0);
}

/// The tilings every case runs with: the defaults, and small tiles that split the keys into
/// several stripes and leave partial tiles everywhere.
inline const std::vector<kernattn::ExecutionOptions> backward_tilings = {
    kernattn::ExecutionOptions{.threads = 1},
    kernattn::ExecutionOptions{.threads = 2, .query_tile = 5, .key_tile = 7},
};

/// Statistics and gradients of `attention` on a random problem against the naive backward, for
/// every tiling; for each tiling 1, 2 and 3 threads give the same bits; and writing the
/// statistics leaves the output's bits alone.
template <class T, class Attention>
void check_backward(const Attention& attention, const gref::PairModel& kernel,
                    const gref::MagnitudeModel& mu, const ref::Visibility& visible, Index d,
                    std::uint32_t seed) {
  const Index nq = visible.rows();
  const Index nk = visible.cols();
  const Index dv = 3;
  const ref::Problem p = ref::random_problem<T>(nq, nk, d, dv, seed);
  const ref::MatrixXd dOut = ref::normal(nq, dv, seed + 7).cast<T>().template cast<double>();
  const gref::Backward expected =
      gref::backward(p.Q, p.K, p.V, dOut, kernel, mu, visible, ref::unit_roundoff<T>);
  const Mat<T> Q = p.Q.cast<T>();
  const Mat<T> K = p.K.cast<T>();
  const Mat<T> V = p.V.cast<T>();
  const Mat<T> dO = dOut.cast<T>();
  for (const kernattn::ExecutionOptions& options : backward_tilings) {
    CAPTURE(options.query_tile, options.key_tile);
    const Attention reconfigured(attention.kernel(), attention.magnitude(), attention.mask(),
                                 options);
    Mat<T> out(nq, dv);
    Mat<T> statistics;
    reconfigured.compute(Q, K, V, out, statistics);
    CHECK(check::identical(out, reconfigured(Q, K, V)));
    const kernattn::AttentionGradients<T> gradients =
        reconfigured.gradients(Q, K, V, out, statistics, dO);
    require_within(statistics, expected.statistics, expected.statistics_bound, "statistics");
    require_within(gradients.dQ, expected.dQ, expected.dQ_bound, "dQ");
    require_within(gradients.dK, expected.dK, expected.dK_bound, "dK");
    require_within(gradients.dV, expected.dV, expected.dV_bound, "dV");
    for (const int threads : {1, 3}) {
      Attention other = reconfigured;
      other.set_threads(threads);
      const kernattn::AttentionGradients<T> again = other.gradients(Q, K, V, out, statistics, dO);
      CHECK(check::identical(again.dQ, gradients.dQ));
      CHECK(check::identical(again.dK, gradients.dK));
      CHECK(check::identical(again.dV, gradients.dV));
    }
  }
}

/// `gradient` of `loss()` against its central differences in every entry of `x` (double;
/// `loss` reads x): with step h = 1e-5 a difference errs by h^2 |f'''| / 6 plus u |f| / h, both
/// near 1e-10 for the O(1) losses of the tests.
template <class Loss>
void check_difference_quotients(Mat<double>& x, const Mat<double>& gradient, const char* name,
                                const Loss& loss) {
  INFO(name);
  const double h = 1e-5;
  for (Index i = 0; i < x.rows(); ++i)
    for (Index c = 0; c < x.cols(); ++c) {
      const double saved = x(i, c);
      x(i, c) = saved + h;
      const double up = loss();
      x(i, c) = saved - h;
      const double down = loss();
      x(i, c) = saved;
      CAPTURE(i, c);
      CHECK(gradient(i, c) == Approx((up - down) / (2 * h)).margin(1e-7));
    }
}

/// `check_difference_quotients` for Q, K and V.
template <class Loss>
void check_finite_differences(Mat<double>& Q, Mat<double>& K, Mat<double>& V,
                              const kernattn::AttentionGradients<double>& g, const Loss& loss) {
  check_difference_quotients(Q, g.dQ, "dQ", loss);
  check_difference_quotients(K, g.dK, "dK", loss);
  check_difference_quotients(V, g.dV, "dV", loss);
}

/// An exact attention's gradients, from its own forward's statistics, against the central
/// differences of the loss sum(out o weights), whose dOut is `weights` (double).
template <class Attention>
void check_exact_finite_differences(const Attention& attention, Mat<double> Q, Mat<double> K,
                                    Mat<double> V, const Mat<double>& weights) {
  const auto loss = [&] { return (attention(Q, K, V).array() * weights.array()).sum(); };
  Mat<double> out(Q.rows(), V.cols());
  Mat<double> statistics;
  attention.compute(Q, K, V, out, statistics);
  const kernattn::AttentionGradients<double> gradients =
      attention.gradients(Q, K, V, out, statistics, weights);
  check_finite_differences(Q, K, V, gradients, loss);
}

}  // namespace backward_checks
