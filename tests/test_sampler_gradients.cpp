// The spectral samplers' parameter gradients (spectral::DifferentiableSampler): the lengthscales
// of Gaussian, Cauchy, Laplace and Student-t, the Gaussian mixture's means and variances, the
// MirroredGaussian's mean and scale, and an implicit sampler's generator weights and biases
// (MlpGenerator, plain and sign-symmetric, over a Gaussian and a MirroredGaussian base) against
// central differences of the frequencies they draw from the same stream (double, relative error <=
// 1e-6); float against double; and the parameter vectors' names, sizes and checks.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "catch.hpp"
#include "central_difference.hpp"
#include "invalid_argument.hpp"
#include "sampler_reference.hpp"

namespace test_sampler_gradients {

namespace {

using sampler_ref::Mat;
using sampler_ref::test_layers;
namespace sp = kernattn::spectral;
using kernattn::Index;
using kernattn::random::RandomStream;

constexpr Index M = 9;
constexpr Index d = 3;
const RandomStream stream{77, 5};

/// The loss sum(W o Omega) of the frequencies `sampler` draws, against its gradient.
template <class Sampler>
void check_sampler(const Sampler& sampler, Index dimension) {
  const Mat<double> W = sampler_ref::uniform_matrix<double>(M, dimension, 9);
  const Eigen::VectorXd gradient = sp::frequency_parameter_gradient(sampler, dimension, stream, W);
  const Eigen::VectorXd theta = sampler.parameters(dimension);
  REQUIRE(gradient.size() == theta.size());
  std::vector<Index> sizes = kernattn::parameter_sizes_of(sampler);
  Index total = 0;
  for (const Index size : sizes) total += size;
  CHECK(total == theta.size());
  const auto loss = [&](const Eigen::VectorXd& values) {
    return (sp::draw_frequencies(sampler.with_parameters(values), M, dimension, stream).array() *
            W.array())
        .sum();
  };
  for (Index p = 0; p < theta.size(); ++p) {
    CAPTURE(p, theta(p));
    const double difference =
        central_difference(loss, theta, p, 1e-6 * std::max(1.0, std::abs(theta(p))));
    CHECK(std::abs(gradient(p) - difference) <= 1e-6 * std::abs(difference) + 1e-8);
  }
  CHECK(gradient.cwiseAbs().maxCoeff() > 1e-3);  // the checks are informative
}

}  // namespace

TEST_CASE("Sampler parameter gradients match central differences", "[samplers][parameters]") {
  SECTION("Gaussian") { check_sampler(sp::Gaussian<double>(1.3), d); }
  SECTION("Cauchy") { check_sampler(sp::Cauchy<double>(0.7), d); }
  SECTION("Laplace") { check_sampler(sp::Laplace<double>(2.0), d); }
  SECTION("Student-t") { check_sampler(sp::StudentT<double>(3.0, 1.1), d); }
  SECTION("GaussianMixture (means and variances)") {
    Eigen::Vector2d weights(0.3, 0.7);
    Eigen::Matrix<double, 2, 3> means, variances;
    means << 1.0, -0.5, 2.0, 0.2, 0.8, -1.5;
    variances << 0.5, 1.2, 0.3, 2.0, 0.4, 0.9;
    check_sampler(sp::GaussianMixture<double>(weights, means, variances), d);
  }
  SECTION("MirroredGaussian") {
    check_sampler(sp::MirroredGaussian<double>(Eigen::Vector3d(0.5, -0.2, 1.0),
                                               Eigen::Vector3d(0.3, 0.8, 0.5)),
                  d);
  }
  SECTION("Implicit MlpGenerator over a Gaussian") {
    check_sampler(sp::Implicit<sp::MlpGenerator<double>>(
                      sp::MlpGenerator<double>(test_layers<double>(2, 5, d))),
                  d);
  }
  SECTION("Implicit sign-symmetric MlpGenerator over a MirroredGaussian (the official IKA form)") {
    const sp::MirroredGaussian<double> base(Eigen::Vector3d(0.4, 0.1, -0.3),
                                            Eigen::Vector3d(0.6, 0.5, 0.9));
    check_sampler(
        sp::Implicit<sp::MlpGenerator<double>, sp::MirroredGaussian<double>>(
            sp::MlpGenerator<double>(test_layers<double>(d, 4, d), sp::MlpForm::sign_symmetric),
            base),
        d);
  }
}

TEST_CASE("Sampler parameter gradients: float agrees with double, names and sizes, checks",
          "[samplers][parameters]") {
  const sp::Implicit<sp::MlpGenerator<float>, sp::MirroredGaussian<float>> single(
      sp::MlpGenerator<float>(test_layers<float>(d, 4, d), sp::MlpForm::sign_symmetric),
      sp::MirroredGaussian<float>(Eigen::Vector3f(0.4f, 0.1f, -0.3f),
                                  Eigen::Vector3f(0.6f, 0.5f, 0.9f)));
  const sp::Implicit<sp::MlpGenerator<double>, sp::MirroredGaussian<double>> twin(
      sp::MlpGenerator<double>(test_layers<double>(d, 4, d), sp::MlpForm::sign_symmetric),
      sp::MirroredGaussian<double>(Eigen::Vector3d(0.4, 0.1, -0.3),
                                   Eigen::Vector3d(0.6, 0.5, 0.9)));
  const Mat<double> W = sampler_ref::uniform_matrix<double>(M, d, 9);
  const Eigen::VectorXd expected = sp::frequency_parameter_gradient(twin, d, stream, W);
  const Eigen::VectorXd actual =
      sp::frequency_parameter_gradient(single, d, stream, Mat<float>(W.cast<float>()));
  // Every gradient is a sum of some M x 4 products of float-rounded terms of size ~1.
  CHECK((actual - expected).cwiseAbs().maxCoeff() <= 1e-4 * expected.cwiseAbs().maxCoeff());

  CHECK(twin.parameter_names() ==
        std::vector<std::string>{"generator.layer1.weights", "generator.layer1.bias",
                                 "generator.layer2.weights", "generator.layer2.bias",
                                 "generator.layer3.weights", "generator.layer3.bias", "base.mean",
                                 "base.scale"});
  CHECK(twin.parameter_sizes() == std::vector<Index>{d * 4, 4, 16, 4, 4 * d, d, d, d});
  CHECK(twin.with_parameters(twin.parameters()).parameters() == twin.parameters());
  REQUIRE_INVALID_ARGUMENT(twin.with_parameters(Eigen::VectorXd::Ones(3)), "takes");
  Eigen::VectorXd negative_scale = twin.parameters();
  negative_scale(negative_scale.size() - 1) = -1.0;
  REQUIRE_INVALID_ARGUMENT(twin.with_parameters(negative_scale), "MirroredGaussian");
  const sp::GaussianMixture<double> mixture(Eigen::VectorXd::Ones(1), Mat<double>::Zero(1, d),
                                            Mat<double>::Ones(1, d));
  CHECK(mixture.parameter_names() == std::vector<std::string>{"means", "variances"});
  CHECK(mixture.parameter_sizes() == std::vector<Index>{d, d});
  REQUIRE_INVALID_ARGUMENT(mixture.with_parameters(-Eigen::VectorXd::Ones(2 * d)),
                           "GaussianMixture: variance (0, 0) must be a finite number > 0");
  REQUIRE_INVALID_ARGUMENT(mixture.with_parameters(Eigen::VectorXd::Ones(d)), "takes 6 values");
  REQUIRE_INVALID_ARGUMENT(sp::Gaussian<double>(1.0).with_parameters(Eigen::VectorXd::Zero(1)),
                           "Gaussian: lengthscale must be a finite number > 0");
  REQUIRE_INVALID_ARGUMENT(
      sp::frequency_parameter_gradient(sp::Gaussian<double>(1.0), d, stream, Mat<double>(M, d + 1)),
      "dOmega is");
}

namespace {

/// The loss sum_h sum(W_h o Omega_h) of the frequencies that coupled heads draw, as
/// `MultiHead::draw` makes them, against `coupled_factor_gradient`.
template <class Sampler>
void check_copula(const std::vector<Sampler>& samplers) {
  Mat<double> correlation(3, 3);
  correlation << 1.0, 0.5, 0.2, 0.5, 1.0, -0.3, 0.2, -0.3, 1.0;
  const kernattn::coupling::GaussianCopula copula(correlation);
  std::vector<Mat<double>> W;
  for (std::uint32_t h = 0; h < 3; ++h)
    W.push_back(sampler_ref::uniform_matrix<double>(M, d, 20 + h));
  const auto loss = [&](const Eigen::VectorXd& values) {
    const auto uniforms = copula.with_parameters(values).uniforms(stream, 3, M, d);
    double sum = 0.0;
    for (std::size_t h = 0; h < 3; ++h)
      sum += (samplers[h].frequencies_from_uniforms(uniforms[h], d).array() * W[h].array()).sum();
    return sum;
  };
  const Eigen::VectorXd gradient =
      kernattn::coupling::coupled_factor_gradient(copula, samplers, d, stream, W);
  const Eigen::VectorXd theta = copula.parameters();
  REQUIRE(gradient.size() == 6);
  for (Index p = 0; p < theta.size(); ++p) {
    CAPTURE(p, theta(p));
    const double difference = central_difference(loss, theta, p, 1e-6);
    CHECK(std::abs(gradient(p) - difference) <= 1e-6 * std::abs(difference) + 1e-7);
  }
  CHECK(gradient.cwiseAbs().maxCoeff() > 1e-2);
}

}  // namespace

TEST_CASE(
    "Gaussian copula: the factor's gradient through the heads' samplers matches central "
    "differences",
    "[samplers][coupling][parameters]") {
  SECTION("Gaussian heads") {
    check_copula(std::vector{sp::Gaussian<double>(0.8), sp::Gaussian<double>(1.3),
                             sp::Gaussian<double>(2.0)});
  }
  SECTION("Laplace heads") {
    check_copula(
        std::vector{sp::Laplace<double>(0.8), sp::Laplace<double>(1.3), sp::Laplace<double>(2.0)});
  }
  SECTION("Cauchy heads") {
    check_copula(
        std::vector{sp::Cauchy<double>(0.8), sp::Cauchy<double>(1.3), sp::Cauchy<double>(2.0)});
  }
  SECTION("Names, the projection onto correlations, and what is rejected") {
    Mat<double> correlation(2, 2);
    correlation << 1.0, 0.6, 0.6, 1.0;
    const kernattn::coupling::GaussianCopula copula(correlation);
    CHECK(copula.parameter_names() == std::vector<std::string>{"factor"});
    const Eigen::VectorXd theta = copula.parameters();
    CHECK(theta.size() == 3);
    CHECK((copula.with_parameters(theta).correlation() - correlation).cwiseAbs().maxCoeff() <=
          1e-15);
    // A step off the unit-norm rows is projected back onto a correlation matrix.
    const Mat<double> stepped =
        copula.with_parameters(theta + Eigen::Vector3d(0.3, -2.0, 0.7)).correlation();
    CHECK(stepped.diagonal().isApproxToConstant(1.0, 1e-15));
    CHECK(std::abs(stepped(0, 1)) < 1.0);
    REQUIRE_INVALID_ARGUMENT(copula.with_parameters(Eigen::Vector3d(1.0, 0.5, 0.0)),
                             "GaussianCopula: the factor L (2x2) has L(1,1) = 0");
    REQUIRE_INVALID_ARGUMENT(copula.with_parameters(Eigen::Vector2d(1.0, 0.5)), "takes 3 values");
    REQUIRE_INVALID_ARGUMENT(kernattn::coupling::coupled_factor_gradient(
                                 copula, std::vector{sp::Gaussian<double>(1.0)}, d, stream,
                                 std::vector<Mat<double>>{Mat<double>::Zero(M, d)}),
                             "couples 2 heads but got 1 samplers");
  }
}

}  // namespace test_sampler_gradients
