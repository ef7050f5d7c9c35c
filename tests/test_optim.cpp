// The optimiser (optim/adam.hpp): Adam's update against the recurrence written out in the test,
// its first step in closed form, gradient clipping and the warm-up cosine schedule by their
// formulas, a quadratic minimised, and bad input (sizes, non-finite gradients or parameters,
// settings) rejected without changing anything; and a short training run of an implicit sampler's
// generator through linear attention.
#include <cmath>
#include <limits>
#include <numbers>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "kernattn/attention/linear_attention.hpp"
#include "kernattn/features/fourier.hpp"
#include "kernattn/optim/adam.hpp"
#include "kernattn/spectral/gaussian.hpp"
#include "kernattn/spectral/implicit.hpp"
#include "kernattn/spectral/mlp_generator.hpp"
#include "reference.hpp"

namespace test_optim {

namespace {

using kernattn::Index;
using kernattn::optim::Adam;
using kernattn::optim::AdamOptions;
using kernattn::optim::WarmupCosine;

}  // namespace

TEST_CASE("Adam follows its recurrence", "[optim]") {
  const AdamOptions options{.learning_rate = 0.1, .beta1 = 0.8, .beta2 = 0.95, .epsilon = 1e-3};
  Adam adam(3, options);
  Eigen::VectorXd theta(3);
  theta << 1.0, -2.0, 0.5;
  // The naive recurrence, in long double.
  long double m[3] = {0, 0, 0}, v[3] = {0, 0, 0}, p[3] = {1.0L, -2.0L, 0.5L};
  for (int t = 1; t <= 5; ++t) {
    Eigen::VectorXd g(3);
    g << std::sin(double(t)), 0.5 * double(t), -1.0 / double(t);
    CHECK(adam.step(theta, g) == 0.1);
    for (int i = 0; i < 3; ++i) {
      m[i] = 0.8L * m[i] + 0.2L * g(i);
      v[i] = 0.95L * v[i] + 0.05L * g(i) * g(i);
      const long double m_hat = m[i] / (1 - std::pow(0.8L, t));
      const long double v_hat = v[i] / (1 - std::pow(0.95L, t));
      p[i] -= 0.1L * m_hat / (std::sqrt(v_hat) + 1e-3L);
      CHECK(theta(i) == Approx(double(p[i])).epsilon(1e-14));
    }
  }
  CHECK(adam.steps() == 5);
}

TEST_CASE("Adam's first step, clipping and the schedule by their formulas", "[optim]") {
  SECTION("the first step is lr g / (|g| + eps)") {
    Adam adam(2, {.learning_rate = 0.01, .epsilon = 0.5});
    Eigen::VectorXd theta = Eigen::VectorXd::Zero(2);
    adam.step(theta, Eigen::Vector2d(2.0, -0.1));
    CHECK(theta(0) == Approx(-0.01 * 2.0 / 2.5).epsilon(1e-14));
    CHECK(theta(1) == Approx(0.01 * 0.1 / 0.6).epsilon(1e-14));
  }
  SECTION("a gradient beyond clip_norm is scaled by clip_norm / (norm + 1e-6)") {
    Adam adam(2, {.learning_rate = 1.0, .epsilon = 1.0, .clip_norm = 1.0});
    Eigen::VectorXd theta = Eigen::VectorXd::Zero(2);
    adam.step(theta, Eigen::Vector2d(6.0, 8.0));  // norm 10
    const double factor = 1.0 / (10.0 + 1e-6);
    CHECK(theta(0) == Approx(-6.0 * factor / (6.0 * factor + 1.0)).epsilon(1e-14));
    CHECK(theta(1) == Approx(-8.0 * factor / (8.0 * factor + 1.0)).epsilon(1e-14));
    Eigen::VectorXd small = Eigen::VectorXd::Zero(2);
    Adam unclipped(2, {.learning_rate = 1.0, .epsilon = 1.0, .clip_norm = 1.0});
    unclipped.step(small, Eigen::Vector2d(0.3, 0.4));  // norm 0.5: unchanged
    CHECK(small(0) == Approx(-0.3 / 1.3).epsilon(1e-14));
  }
  SECTION("warm-up then cosine decay") {
    const WarmupCosine schedule{.peak = 0.2, .warmup = 10, .total = 110, .floor = 0.02};
    CHECK(schedule(1) == Approx(0.02));
    CHECK(schedule(10) == Approx(0.2));
    CHECK(schedule(60) == Approx(0.02 + 0.18 * 0.5));
    CHECK(schedule(110) == 0.02);
    CHECK(schedule(500) == 0.02);
    Adam adam(1, {.schedule = schedule});
    Eigen::VectorXd theta = Eigen::VectorXd::Zero(1);
    CHECK(adam.step(theta, Eigen::VectorXd::Ones(1)) == Approx(0.02));
    CHECK(adam.step(theta, Eigen::VectorXd::Ones(1)) == Approx(0.04));
  }
}

TEST_CASE("Adam minimises an ill-conditioned quadratic", "[optim]") {
  // f = sum a_i (theta_i - c_i)^2 with curvatures over four decades.
  const Eigen::Vector4d a(100.0, 1.0, 0.1, 0.01);
  const Eigen::Vector4d c(1.0, -2.0, 3.0, 0.5);
  Adam adam(4, {.learning_rate = 0.05, .schedule = WarmupCosine{0.05, 20, 3000, 1e-4}});
  Eigen::VectorXd theta = Eigen::VectorXd::Zero(4);
  for (int t = 0; t < 3000; ++t) adam.step(theta, (2.0 * a.array() * (theta - c).array()).matrix());
  CHECK((theta - c).cwiseAbs().maxCoeff() < 1e-3);
}

TEST_CASE("Adam rejects bad input without changing anything", "[optim][errors]") {
  Adam adam(2);
  Eigen::VectorXd theta = Eigen::Vector2d(1.0, 2.0);
  REQUIRE_INVALID_ARGUMENT(adam.step(theta, Eigen::VectorXd::Ones(3)),
                           "holds 2 parameters, got 2 parameters and a gradient of 3");
  REQUIRE_INVALID_ARGUMENT(
      adam.step(theta, Eigen::Vector2d(1.0, std::numeric_limits<double>::quiet_NaN())),
      "gradient entry 1 is nan; the step is not taken");
  Eigen::VectorXd infinite = Eigen::Vector2d(std::numeric_limits<double>::infinity(), 2.0);
  REQUIRE_INVALID_ARGUMENT(adam.step(infinite, Eigen::Vector2d(1.0, 1.0)),
                           "parameter 0 is inf; the step is not taken");
  CHECK(theta == Eigen::Vector2d(1.0, 2.0));
  CHECK(adam.steps() == 0);
  REQUIRE_INVALID_ARGUMENT(Adam(2, {.beta2 = 1.0}), "beta2 must lie in [0, 1)");
  REQUIRE_INVALID_ARGUMENT(Adam(2, {.epsilon = 0.0}), "epsilon must be a finite number > 0");
  REQUIRE_INVALID_ARGUMENT(Adam(2, {.clip_norm = -1.0}), "clip_norm");
  Adam broken(1, {.schedule = [](Index) { return std::numeric_limits<double>::infinity(); }});
  Eigen::VectorXd one = Eigen::VectorXd::Zero(1);
  REQUIRE_INVALID_ARGUMENT(broken.step(one, Eigen::VectorXd::Ones(1)), "the schedule gave");
  CHECK(one(0) == 0.0);
}

TEMPLATE_TEST_CASE(
    "Training an implicit sampler's generator through linear attention lowers the "
    "loss fivefold",
    "[optim][training]", float, double) {
  // A student, Fourier features of omega = g(epsilon) (g: 2 -> 16 -> 2, M = 64, the noise fixed),
  // learns to reproduce a teacher's output: Fourier features of the RBF kernel of lengthscale 0.4
  // (M = 512). The loss 0.5 |out - target|^2 / N must fall by 5x in 150 Adam steps from the
  // fixed seeds, in float and in double; every step's gradient is finite.
  using T = TestType;
  using Generator = kernattn::spectral::MlpGenerator<T>;
  using Sampler = kernattn::spectral::Implicit<Generator>;
  using Features = kernattn::features::Fourier<T>;
  using MatrixT = kernattn::Matrix<T>;
  constexpr Index n = 48, d = 2, M = 64;
  const MatrixT Q = ref::normal(n, d, 301).cast<T>(), K = ref::normal(n, d, 302).cast<T>(),
                V = ref::normal(n, 1, 303).cast<T>();
  const kernattn::LinearAttention<Features> teacher(
      Features::draw(kernattn::spectral::Gaussian<T>(T(0.4)), 512, d, {31, 1}));
  const MatrixT target = teacher(Q, K, V);
  const auto layer = [](Index in, Index out, std::uint32_t seed) {
    return typename Generator::Layer{(0.5 * ref::normal(in, out, seed)).cast<T>(),
                                     kernattn::Vector<T>::Zero(out)};
  };
  const Sampler initial(Generator({layer(d, 16, 304), layer(16, d, 305)}));
  const kernattn::random::RandomStream noise{31, 2};
  const auto attention_of = [&](const Eigen::VectorXd& theta) {
    return kernattn::LinearAttention<Features>(
        Features::draw(initial.with_parameters(theta), M, d, noise));
  };
  const auto loss_of = [&](const MatrixT& out) {
    return 0.5 * (out - target).template cast<double>().squaredNorm() / double(n);
  };

  Eigen::VectorXd theta = initial.parameters();
  kernattn::optim::Adam adam(theta.size(),
                             {.clip_norm = 10.0, .schedule = WarmupCosine{3e-2, 10, 150, 1e-3}});
  const double first = loss_of(attention_of(theta)(Q, K, V));
  for (int step = 0; step < 150; ++step) {
    const auto attention = attention_of(theta);
    const MatrixT out = attention(Q, K, V);
    const MatrixT d_out = (out - target) / T(n);
    MatrixT dQ(n, d), dK(n, d), dV(n, 1), d_frequencies;
    attention.backward(Q, K, V, out, d_out, dQ, dK, dV, d_frequencies);
    const Eigen::VectorXd gradient = kernattn::spectral::frequency_parameter_gradient(
        initial.with_parameters(theta), d, noise, d_frequencies);
    REQUIRE(gradient.allFinite());
    adam.step(theta, gradient);
  }
  const double last = loss_of(attention_of(theta)(Q, K, V));
  INFO("loss " << first << " -> " << last);
  CHECK(first > 1e-3);
  CHECK(last < 0.2 * first);  // 9.3x on x86-64 with GCC 12
}

}  // namespace test_optim
