// Parameter gradients of the exact engine (Attention::backward with a parameter gradient): the
// dot-product scale, the RBF variance, the Matérn and rational-quadratic lengthscales and alpha,
// and the Lp magnitude's p, gamma and exponent, against central finite differences of the
// library's own forward in double (relative error <= 1e-6), under every kind of mask, in the
// batch x heads layout with tiles that split the keys into stripes; bit for bit across thread
// counts; blind to what a mask hides; float against double; and the parameter vector's checks.
#include <cmath>
#include <cstdint>
#include <limits>

#include "backward_checks.hpp"
#include "catch.hpp"
#include "central_difference.hpp"
#include "invalid_argument.hpp"
#include "reference.hpp"

namespace test_backward_parameters {

namespace {

using backward_checks::Mat;
using kernattn::Attention;
using kernattn::BatchLayout;
using kernattn::ExecutionOptions;
namespace mask = kernattn::mask;
namespace magnitude = kernattn::magnitude;

constexpr Index d = 4;
constexpr Index dv = 3;
constexpr BatchLayout layout{2, 2};
const ExecutionOptions small_tiles{.threads = 2, .query_tile = 5, .key_tile = 7};

/// The loss sum(out o W) and its gradients, parameters included, through the forward's
/// statistics.
template <class T, class AttentionT>
Eigen::VectorXd parameter_gradient_of(const AttentionT& attention, const Mat<T>& Q, const Mat<T>& K,
                                      const Mat<T>& V, const Mat<T>& W,
                                      kernattn::AttentionGradients<T>* gradients = nullptr) {
  Mat<T> out(Q.rows(), V.cols());
  Mat<T> statistics;
  attention.compute(Q, K, V, out, statistics, layout);
  kernattn::AttentionGradients<T> own{Mat<T>(Q.rows(), Q.cols()), Mat<T>(K.rows(), K.cols()),
                                      Mat<T>(V.rows(), V.cols())};
  Eigen::VectorXd parameter_gradient;
  attention.backward(Q, K, V, out, statistics, W, own.dQ, own.dK, own.dV, parameter_gradient,
                     layout);
  if (gradients != nullptr) *gradients = own;
  return parameter_gradient;
}

/// Every parameter's gradient against its central difference, h = 1e-5 |theta|: the
/// difference's error, h^2 |f'''| / 6 + u |f| / h, is near 1e-10 of the O(1) gradients. Also:
/// the gradients of Q, K and V are those of the plain backward, bit for bit, and so are the
/// parameter gradients on 1 and 3 threads.
template <class AttentionT>
void check_parameters(const AttentionT& attention, Index nq, Index nk, std::uint32_t seed) {
  const Mat<double> Q = ref::normal(layout.sequences * nq, layout.heads * d, seed, 0.2, 0.8);
  const Mat<double> K = ref::normal(layout.sequences * nk, layout.heads * d, seed + 1, -0.1, 0.8);
  const Mat<double> V = ref::normal(layout.sequences * nk, layout.heads * dv, seed + 2);
  const Mat<double> W = ref::normal(layout.sequences * nq, layout.heads * dv, seed + 3);
  kernattn::AttentionGradients<double> with_parameters;
  const Eigen::VectorXd gradient =
      parameter_gradient_of<double>(attention, Q, K, V, W, &with_parameters);
  const std::vector<std::string> names = attention.parameter_names();
  const Eigen::VectorXd theta = attention.parameters(d);
  REQUIRE(gradient.size() == Index(names.size()));
  REQUIRE(theta.size() == gradient.size());
  const auto loss = [&](const Eigen::VectorXd& values) {
    return (attention.with_parameters(values)(Q, K, V, layout).array() * W.array()).sum();
  };
  for (Index p = 0; p < theta.size(); ++p) {
    CAPTURE(names[std::size_t(p)], theta(p));
    const double difference =
        central_difference(loss, theta, p, 1e-5 * std::max(1.0, std::abs(theta(p))));
    CHECK(std::abs(gradient(p) - difference) <= 1e-6 * std::abs(difference) + 1e-9);
    CHECK(std::abs(gradient(p)) > 1e-6);  // the check is informative
  }
  Mat<double> out(Q.rows(), V.cols());
  Mat<double> statistics;
  attention.compute(Q, K, V, out, statistics, layout);
  const auto plain = attention.gradients(Q, K, V, out, statistics, W, layout);
  CHECK(check::identical(plain.dQ, with_parameters.dQ));
  CHECK(check::identical(plain.dK, with_parameters.dK));
  CHECK(check::identical(plain.dV, with_parameters.dV));
  for (const int threads : {1, 3}) {
    AttentionT other = attention;
    other.set_threads(threads);
    const Eigen::VectorXd again = parameter_gradient_of<double>(other, Q, K, V, W);
    CHECK(check::identical(again, gradient));
  }
}

}  // namespace

TEST_CASE("Parameter gradients of the exact engine match central finite differences",
          "[backward][parameters]") {
  using T = double;
  const auto padding = mask::KeyPadding::from_lengths({9, 12});
  SECTION("softmax: the scale") {
    check_parameters(Attention<kernels::Exponential<T>>({}, {}, {}, small_tiles), 11, 13, 10);
  }
  SECTION("RBF x Lp(p = 3) under a causal filter: the variance, p, gamma and the exponent") {
    check_parameters(Attention<kernels::Rbf<T>, magnitude::Lp<T>, mask::Causal>(
                         kernels::Rbf<T>(1.7), magnitude::Lp<T>(3.0, 0.3, 1.5), {}, small_tiles),
                     11, 13, 20);
  }
  SECTION("Laplacian under padding: the lengthscale") {
    check_parameters(Attention<kernels::Laplacian<T>, magnitude::None, mask::KeyPadding>(
                         {}, {}, padding, small_tiles),
                     11, 13, 30);
  }
  SECTION("Matern 3/2 x L2 under a window: the lengthscale, gamma and the exponent") {
    check_parameters(
        Attention<kernels::Matern32<T>, magnitude::L2<T>, mask::Window>(
            kernels::Matern32<T>(1.3), magnitude::L2<T>(0.4, 2.5), mask::Window(4, 2), small_tiles),
        11, 13, 40);
  }
  SECTION("Matern 5/2 under a Boolean mask with an empty row") {
    ref::Visibility visible = ref::random_visibility(11, 13, 0.6, 51);
    visible.row(2).setConstant(false);
    check_parameters(Attention<kernels::Matern52<T>, magnitude::None, mask::Boolean>(
                         {}, {}, mask::Boolean(visible), small_tiles),
                     11, 13, 50);
  }
  SECTION(
      "rational quadratic x Lp(1.5) under causal && padding: alpha, the lengthscale, p, "
      "gamma and the exponent") {
    using Filter = mask::Intersection<mask::Causal, mask::KeyPadding>;
    check_parameters(Attention<kernels::RationalQuadratic<T>, magnitude::Lp<T>, Filter>(
                         kernels::RationalQuadratic<T>(1.5, 1.2), magnitude::Lp<T>(1.5, 0.2),
                         mask::Causal{} && padding, small_tiles),
                     11, 13, 60);
  }
}

TEMPLATE_TEST_CASE("Parameter gradients ignore what a mask hides, and float agrees with double",
                   "[backward][parameters]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  using Head = Attention<kernels::Rbf<T>, magnitude::Lp<T>, mask::KeyPadding>;
  const Head attention(kernels::Rbf<T>(T(1.5)), magnitude::Lp<T>(T(3), T(0.3)),
                       mask::KeyPadding::from_lengths({7, 10}), small_tiles);
  const Mat<double> Q = ref::normal(2 * 8, 2 * d, 71), K = ref::normal(2 * 10, 2 * d, 72);
  const Mat<double> V = ref::normal(2 * 10, 2 * dv, 73), W = ref::normal(2 * 8, 2 * dv, 74);
  const Eigen::VectorXd gradient =
      parameter_gradient_of<T>(attention, Q.cast<T>(), K.cast<T>(), V.cast<T>(), W.cast<T>());
  Mat<T> hidden_keys = K.cast<T>();
  hidden_keys.middleRows(7, 3).setConstant(std::numeric_limits<T>::quiet_NaN());
  CHECK(check::identical(
      parameter_gradient_of<T>(attention, Q.cast<T>(), hidden_keys, V.cast<T>(), W.cast<T>()),
      gradient));
  using Double = Attention<kernels::Rbf<double>, magnitude::Lp<double>, mask::KeyPadding>;
  const Double exact(kernels::Rbf<double>(1.5), magnitude::Lp<double>(3.0, 0.3),
                     mask::KeyPadding::from_lengths({7, 10}), small_tiles);
  const Eigen::VectorXd expected = parameter_gradient_of<double>(exact, Q, K, V, W);
  // Each gradient sums some 10^2 products of float-rounded terms.
  const double tolerance = std::is_same_v<T, float> ? 1e-4 : 1e-12;
  CHECK((gradient - expected).cwiseAbs().maxCoeff() <= tolerance * expected.cwiseAbs().maxCoeff());
}

TEST_CASE("Parameter vectors are checked", "[backward][parameters][errors]") {
  const Attention<kernels::Rbf<double>, magnitude::Lp<double>> attention;
  CHECK(attention.parameter_names() == std::vector<std::string>{"kernel.variance", "magnitude.p",
                                                                "magnitude.gamma",
                                                                "magnitude.exponent"});
  const Eigen::VectorXd defaults = attention.parameters(16);
  CHECK(defaults(0) == 4.0);    // sqrt(d)
  CHECK(defaults(2) == 0.125);  // 1 / (2 sqrt(d))
  REQUIRE_INVALID_ARGUMENT(attention.with_parameters(Eigen::VectorXd::Ones(3)), "takes 4 value(s)");
  REQUIRE_INVALID_ARGUMENT(attention.with_parameters(Eigen::Vector4d(-1, 2, 0.1, 2)),
                           "Rbf: variance must be a finite number > 0, got -1");
  REQUIRE_INVALID_ARGUMENT(attention.with_parameters(Eigen::Vector4d(1, 0, 0.1, 2)),
                           "Lp: p must be a finite number > 0, got 0");
  const auto changed = attention.with_parameters(Eigen::Vector4d(2, 3, 0.5, 1.5));
  CHECK(changed.parameters(16) == Eigen::Vector4d(2, 3, 0.5, 1.5));
}

TEST_CASE("MultiHead: every head's parameters as one flat vector, with their gradient",
          "[backward][parameters][multi-head]") {
  // Two heads of one type (a vector) and two of different types (a tuple) in the B x H layout:
  // the names are the heads' own behind "head<h>.", and the gradient of the whole vector matches
  // central differences of the multi-head's forward; 1 and 2 threads give the same bits.
  using Head = Attention<kernattn::kernels::Rbf<double>, magnitude::Lp<double>, mask::Causal>;
  const kernattn::MultiHead<Head> same(
      {Head(kernattn::kernels::Rbf<double>(1.5), magnitude::Lp<double>(3.0)),
       Head(kernattn::kernels::Rbf<double>(0.8), magnitude::Lp<double>(1.5, 0.7))});
  using Softmax = Attention<kernattn::kernels::Exponential<double>>;
  using Matern = Attention<kernattn::kernels::Matern<double, 3>, magnitude::None, mask::Causal>;
  const kernattn::MultiHead<kernattn::Heads<Softmax, Matern>> listed(
      {Softmax(kernattn::kernels::Exponential<double>(0.6)),
       Matern(kernattn::kernels::Matern<double, 3>(1.3))});
  CHECK(same.parameter_names() ==
        std::vector<std::string>{"head0.kernel.variance", "head0.magnitude.p",
                                 "head0.magnitude.gamma", "head0.magnitude.exponent",
                                 "head1.kernel.variance", "head1.magnitude.p",
                                 "head1.magnitude.gamma", "head1.magnitude.exponent"});
  CHECK(listed.parameter_names() ==
        std::vector<std::string>{"head0.kernel.scale", "head1.kernel.lengthscale"});

  const auto check = [](const auto& multi_head, std::uint32_t seed) {
    constexpr Index n = 9;
    const Mat<double> Q = ref::normal(layout.sequences * n, layout.heads * d, seed, 0.2, 0.8);
    const Mat<double> K = ref::normal(layout.sequences * n, layout.heads * d, seed + 1, 0.0, 0.8);
    const Mat<double> V = ref::normal(layout.sequences * n, layout.heads * dv, seed + 2);
    const Mat<double> W = ref::normal(layout.sequences * n, layout.heads * dv, seed + 3);
    const Mat<double> out = multi_head(Q, K, V, layout);
    Mat<double> dQ(Q.rows(), Q.cols()), dK(K.rows(), K.cols()), dV(V.rows(), V.cols());
    Eigen::VectorXd gradient;
    multi_head.backward(Q, K, V, out, W, dQ, dK, dV, gradient, layout);
    const Eigen::VectorXd theta = multi_head.parameters(d);
    REQUIRE(gradient.size() == theta.size());
    REQUIRE(theta.size() == Index(multi_head.parameter_names().size()));
    const kernattn::AttentionGradients<double> plain =
        multi_head.gradients(Q, K, V, out, W, layout);
    CHECK(dQ == plain.dQ);
    CHECK(dK == plain.dK);
    CHECK(dV == plain.dV);
    const auto loss = [&](const Eigen::VectorXd& values) {
      return (multi_head.with_parameters(values)(Q, K, V, layout).array() * W.array()).sum();
    };
    for (Index p = 0; p < theta.size(); ++p) {
      CAPTURE(multi_head.parameter_names()[std::size_t(p)], theta(p));
      const double difference =
          central_difference(loss, theta, p, 1e-5 * std::max(1.0, std::abs(theta(p))));
      CHECK(std::abs(gradient(p) - difference) <= 1e-6 * std::abs(difference) + 1e-9);
      CHECK(std::abs(gradient(p)) > 1e-6);
    }
    auto threaded = multi_head;
    threaded.set_threads(1);
    Eigen::VectorXd one;
    threaded.backward(Q, K, V, out, W, dQ, dK, dV, one, layout);
    threaded.set_threads(2);
    Eigen::VectorXd two;
    threaded.backward(Q, K, V, out, W, dQ, dK, dV, two, layout);
    CHECK(one == gradient);
    CHECK(two == gradient);
  };
  SECTION("one head type") { check(same, 71); }
  SECTION("listed head types") { check(listed, 81); }
  SECTION("a vector of the wrong size") {
    REQUIRE_INVALID_ARGUMENT(same.with_parameters(Eigen::VectorXd::Ones(3)),
                             "MultiHead::with_parameters takes 8 values");
    Eigen::VectorXd bad = same.parameters(d);
    bad(0) = -1.0;
    REQUIRE_INVALID_ARGUMENT(same.with_parameters(bad), "variance");
  }
}

}  // namespace test_backward_parameters
