// The spectral samplers (kernattn/spectral/) under bad input: wrong shapes, uniforms outside
// (0, 1) and bad parameters are rejected with messages that name the sampler, the argument and
// the valid range.
#include <limits>
#include <string>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "kernattn/kernattn.hpp"
#include "sampler_reference.hpp"

namespace test_samplers_errors {

namespace {

using namespace sampler_ref;  // its aliases (sp, kr, Index, Mat, ...) and helpers

/// Wrong M, d, uniforms' columns and uniforms outside (0, 1) for any sampler.
template <class S>
void check_bad_uniforms(const S& sampler, Index d, const std::string& name) {
  const RandomStream stream{61, 0};
  REQUIRE_INVALID_ARGUMENT(sp::draw_frequencies(sampler, 0, d, stream),
                           "draw_frequencies: M (the number of frequencies) must be >= 1, got 0");
  REQUIRE_INVALID_ARGUMENT(sp::draw_frequencies(sampler, 4, 0, stream),
                           "the dimension d must be >= 1, got 0");
  const Index columns = sampler.uniforms_per_frequency(d);
  const MatrixXd good = sp::draw_uniforms(stream, 4, columns);
  CHECK_NOTHROW(sampler.frequencies_from_uniforms(good, d));
  REQUIRE_INVALID_ARGUMENT(sampler.frequencies_from_uniforms(MatrixXd(0, columns), d),
                           name + ": M (the number of frequencies) must be >= 1, got 0");
  REQUIRE_INVALID_ARGUMENT(sampler.frequencies_from_uniforms(good.leftCols(columns - 1), d),
                           name + ": the uniforms are 4x" + std::to_string(columns - 1) + " but " +
                               std::to_string(columns) + " uniforms per frequency are needed");
  for (const double bad : {0.0, 1.0, -0.5, std::numeric_limits<double>::quiet_NaN()}) {
    MatrixXd uniforms = good;
    uniforms(2, columns - 1) = bad;
    INFO("uniform " << bad);
    REQUIRE_INVALID_ARGUMENT(sampler.frequencies_from_uniforms(uniforms, d),
                             name + ": every uniform must lie strictly inside (0, 1)");
  }
}

}  // namespace

TEST_CASE("Samplers reject bad shapes and uniforms", "[sampler][errors]") {
  check_bad_uniforms(sp::StudentT<float>(3.0f), 4, "StudentT");
  check_bad_uniforms(sp::Cauchy<float>(), 4, "Cauchy");
  check_bad_uniforms(sp::Laplace<double>(), 4, "Laplace");
  check_bad_uniforms(sp::GammaScaleMixture<float>(), 4, "GammaScaleMixture");
  check_bad_uniforms(test_mixture<double>(), 3, "GaussianMixture");
  check_bad_uniforms(sp::Orthogonal<sp::Gaussian<float>>(), 4, "Orthogonal");
  Vec<float> ones = Vec<float>::Ones(4);
  check_bad_uniforms(sp::MirroredGaussian<float>(ones, ones), 4, "MirroredGaussian");
  const sp::MlpGenerator<float> generator(test_layers<float>(2, 3, 4));
  check_bad_uniforms(sp::Implicit<sp::MlpGenerator<float>>(generator), 4, "Implicit");
}

TEST_CASE("Samplers reject bad parameters", "[sampler][errors]") {
  constexpr float nan = std::numeric_limits<float>::quiet_NaN();
  constexpr float inf = std::numeric_limits<float>::infinity();
  SECTION("lengthscales") {
    REQUIRE_INVALID_ARGUMENT(sp::StudentT<float>(3.0f, 0.0f),
                             "StudentT: lengthscale must be a finite number > 0, got 0");
    REQUIRE_INVALID_ARGUMENT(sp::Cauchy<float>(-1.0f),
                             "Cauchy: lengthscale must be a finite number > 0, got -1");
    REQUIRE_INVALID_ARGUMENT(sp::Laplace<double>(double(inf)),
                             "Laplace: lengthscale must be a finite number > 0, got inf");
    REQUIRE_INVALID_ARGUMENT(sp::GammaScaleMixture<float>(1.0f, nan),
                             "GammaScaleMixture: lengthscale must be a finite number > 0, got nan");
  }
  SECTION("StudentT degrees of freedom") {
    REQUIRE_INVALID_ARGUMENT(sp::StudentT<float>(-1.0f),
                             "StudentT: degrees_of_freedom must be a finite number > 0, got -1");
    REQUIRE_INVALID_ARGUMENT(sp::StudentT<double>(0.0, 1.0),
                             "StudentT: degrees_of_freedom must be a finite number > 0, got 0");
    REQUIRE_INVALID_ARGUMENT(sp::StudentT<float>(nan), "degrees_of_freedom must be a finite");
    const VectorXd r = VectorXd::Constant(3, 0.5);
    REQUIRE_INVALID_ARGUMENT(sp::StudentT<float>(2.0f).kernel_at(r),
                             "StudentT: kernel_at has no closed form for degrees_of_freedom 2");
    REQUIRE_INVALID_ARGUMENT(sp::StudentT<double>(2.5).kernel_at(r),
                             "no closed form for degrees_of_freedom 2.5");
    REQUIRE_INVALID_ARGUMENT(sp::StudentT<double>(3000001.0).kernel_at(r),
                             "closed form for degrees_of_freedom up to 1000001, got 3000001");
  }
  SECTION("GammaScaleMixture alpha") {
    REQUIRE_INVALID_ARGUMENT(sp::GammaScaleMixture<float>(0.0f),
                             "GammaScaleMixture: alpha must be a finite number > 0, got 0");
    REQUIRE_INVALID_ARGUMENT(sp::GammaScaleMixture<double>(-2.0, 1.0),
                             "GammaScaleMixture: alpha must be a finite number > 0, got -2");
  }
  SECTION("GaussianMixture") {
    using GM = sp::GaussianMixture<double>;
    const VectorXd w = (VectorXd(2) << 0.4, 0.6).finished();
    const MatrixXd mu = MatrixXd::Zero(2, 3), var = MatrixXd::Ones(2, 3);
    CHECK_NOTHROW(GM(w, mu, var));
    REQUIRE_INVALID_ARGUMENT(GM(VectorXd(0), MatrixXd(0, 3), MatrixXd(0, 3)),
                             "GaussianMixture: at least one component is needed");
    REQUIRE_INVALID_ARGUMENT(GM((VectorXd(2) << 0.4, 0.5).finished(), mu, var),
                             "GaussianMixture: weights must sum to 1, got 0.9");
    REQUIRE_INVALID_ARGUMENT(GM((VectorXd(2) << -0.4, 1.4).finished(), mu, var),
                             "GaussianMixture: weight 0 must be a finite number >= 0, got -0.4");
    REQUIRE_INVALID_ARGUMENT(GM((VectorXd(3) << 0.2, 0.2, 0.6).finished(), mu, var),
                             "GaussianMixture: means are 2x3 but there are 3 weights");
    REQUIRE_INVALID_ARGUMENT(GM(w, mu, MatrixXd::Ones(2, 2)),
                             "GaussianMixture: variances are 2x2 but means are 2x3");
    MatrixXd negative = var;
    negative(1, 2) = -1;
    REQUIRE_INVALID_ARGUMENT(
        GM(w, mu, negative),
        "GaussianMixture: variance (1, 2) must be a finite number > 0, got -1");
    MatrixXd bad_mean = mu;
    bad_mean(0, 1) = std::numeric_limits<double>::infinity();
    REQUIRE_INVALID_ARGUMENT(GM(w, bad_mean, var), "GaussianMixture: every mean must be finite");
    const GM mixture(w, mu, var);
    REQUIRE_INVALID_ARGUMENT(sp::draw_frequencies(mixture, 5, 4, {62, 0}),
                             "GaussianMixture: the dimension d = 4 differs from the means' "
                             "dimension 3 (means are 2x3)");
    REQUIRE_INVALID_ARGUMENT(mixture.kernel_at(VectorXd::Zero(2)),
                             "GaussianMixture: the dimension d = 2 differs");
  }
  SECTION("MirroredGaussian") {
    using MG = sp::MirroredGaussian<float>;
    const Vec<float> ones = Vec<float>::Ones(3);
    REQUIRE_INVALID_ARGUMENT(MG(ones, Vec<float>::Ones(2)),
                             "MirroredGaussian: the scale has 2 entries but the mean has 3");
    REQUIRE_INVALID_ARGUMENT(MG(Vec<float>(0), Vec<float>(0)), "at least one entry");
    REQUIRE_INVALID_ARGUMENT(MG(ones, (Vec<float>(3) << 1.0f, 0.0f, 1.0f).finished()),
                             "MirroredGaussian: scale entry 1 must be a finite number > 0, got 0");
    REQUIRE_INVALID_ARGUMENT(MG((Vec<float>(3) << 1.0f, 1.0f, nan).finished(), ones),
                             "MirroredGaussian: mean entry 2 must be finite, got nan");
    REQUIRE_INVALID_ARGUMENT(
        sp::draw_frequencies(MG(ones, ones), 4, 2, {62, 0}),
        "MirroredGaussian: the dimension d = 2 differs from the mean's size 3");
  }
  SECTION("MlpGenerator") {
    using Mlp = sp::MlpGenerator<float>;
    const auto layer = [](Index in, Index out) {
      return Mlp::Layer{Mat<float>::Ones(in, out), Vec<float>::Zero(out)};
    };
    REQUIRE_INVALID_ARGUMENT(Mlp({}), "MlpGenerator: at least one layer is needed");
    REQUIRE_INVALID_ARGUMENT(
        Mlp({layer(8, 64), layer(32, 16)}),
        "MlpGenerator: layer 2 weights are 32x16 but layer 1 outputs 64 values");
    REQUIRE_INVALID_ARGUMENT(Mlp({{Mat<float>::Ones(8, 64), Vec<float>::Zero(5)}}),
                             "MlpGenerator: layer 1 bias has 5 entries but its weights are 8x64 "
                             "(64 outputs)");
    REQUIRE_INVALID_ARGUMENT(Mlp({layer(0, 4)}), "MlpGenerator: layer 1 weights are 0x4");
    auto bad_weights = layer(4, 4);
    bad_weights.weights(1, 1) = nan;
    REQUIRE_INVALID_ARGUMENT(Mlp({layer(2, 4), bad_weights}),
                             "MlpGenerator: layer 2 weights must be finite");
    auto bad_bias = layer(4, 4);
    bad_bias.bias(0) = inf;
    REQUIRE_INVALID_ARGUMENT(Mlp({bad_bias}), "MlpGenerator: layer 1 bias must be finite");
    REQUIRE_INVALID_ARGUMENT(Mlp({layer(4, 4)}, sp::MlpForm::plain, nan),
                             "MlpGenerator: negative_slope must be finite");
    REQUIRE_INVALID_ARGUMENT(Mlp({layer(8, 6), layer(6, 4)}, sp::MlpForm::sign_symmetric),
                             "the sign-symmetric form needs as many outputs as inputs, got 8 "
                             "inputs and 4 outputs");
    REQUIRE_INVALID_ARGUMENT(Mlp({layer(8, 4)})(Mat<float>::Zero(5, 3)),
                             "MlpGenerator: the noise is 5x3 but the network takes 8 inputs");
    const sp::Implicit<Mlp> sampler(Mlp({layer(2, 3)}));
    REQUIRE_INVALID_ARGUMENT(sp::draw_frequencies(sampler, 4, 5, {62, 0}),
                             "Implicit: the dimension d = 5 differs from the generator's output "
                             "dimension 3");
  }
}

}  // namespace test_samplers_errors
