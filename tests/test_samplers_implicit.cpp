// The MLP generator and implicit samplers (kernattn/spectral/): MlpGenerator against a naive
// double forward pass with a first-order error bound, Implicit as the generator applied to the
// base sampler's frequencies, and the smallest user-defined generator.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "kernattn/kernattn.hpp"
#include "sampler_reference.hpp"

namespace test_samplers_implicit {

namespace {

using namespace sampler_ref;  // its aliases (sp, kr, Index, Mat, ...) and helpers

/// The network's output for one input row, in double, one multiply-add at a time, with a
/// first-order bound on the error of an evaluation in precision T (unit roundoff u): per layer
/// |e_out| <= |W|^T |e_in| + (n + 2) u (|W|^T |x| + |b|) for an inner product of length n plus
/// the bias, and LeakyReLU adds at most u |y| (its slope is at most 1, so errors do not grow).
struct ForwardResult {
  VectorXd value, error;
};

template <class T>
ForwardResult naive_forward(const sp::MlpGenerator<T>& generator, VectorXd x, double u) {
  VectorXd error = VectorXd::Zero(x.size());
  const auto& layers = generator.layers();
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const MatrixXd w = layers[l].weights.template cast<double>();
    const VectorXd b = layers[l].bias.template cast<double>();
    VectorXd y(w.cols()), e(w.cols());
    for (Index o = 0; o < w.cols(); ++o) {
      double sum = b(o), size = std::abs(b(o)), propagated = 0;
      for (Index i = 0; i < w.rows(); ++i) {
        sum += w(i, o) * x(i);
        size += std::abs(w(i, o) * x(i));
        propagated += std::abs(w(i, o)) * error(i);
      }
      y(o) = sum;
      e(o) = propagated + double(w.rows() + 2) * u * size;
    }
    if (l + 1 < layers.size()) {
      const double slope = double(generator.negative_slope());
      for (Index o = 0; o < y.size(); ++o) {
        if (y(o) <= 0) y(o) *= slope;
        e(o) += u * std::abs(y(o));
      }
    }
    x = y;
    error = e;
  }
  return {x, error};
}

}  // namespace

TEMPLATE_TEST_CASE("MlpGenerator matches a naive double forward pass", "[sampler][mlp]", float,
                   double) {
  using T = TestType;
  const double u = std::numeric_limits<T>::epsilon() / 2;
  const Index in = 4, hidden = 6, rows = 9;
  Mat<T> noise = uniform_matrix<T>(rows, in, 7) * T(3);
  noise(0, 1) = T(0);
  for (const auto form : {sp::MlpForm::plain, sp::MlpForm::sign_symmetric}) {
    for (const T slope : {T(0.2), T(0.05)}) {
      const sp::MlpGenerator<T> generator(test_layers<T>(in, hidden, in), form, slope);
      CHECK(generator.input_dimension() == in);
      CHECK(generator.output_dimension() == in);
      CHECK(generator.form() == form);
      const Mat<T> out = generator(noise);
      REQUIRE(out.rows() == rows);
      REQUIRE(out.cols() == in);
      const bool symmetric = form == sp::MlpForm::sign_symmetric;
      for (Index m = 0; m < rows; ++m) {
        const VectorXd z = noise.row(m).transpose().template cast<double>();
        const ForwardResult h = naive_forward(generator, symmetric ? VectorXd(z.cwiseAbs()) : z, u);
        for (Index i = 0; i < in; ++i) {
          const double sign = symmetric ? (z(i) > 0 ? 1.0 : z(i) < 0 ? -1.0 : 0.0) : 1.0;
          INFO("form " << int(form) << ", slope " << slope << ", row " << m << ", output " << i
                       << ": bound " << h.error(i));
          // The bound is small enough to mean something (0.1% for float).
          CHECK(h.error(i) < 2e4 * u * (1 + std::abs(h.value(i))));
          CHECK(std::abs(double(out(m, i)) - sign * h.value(i)) <= h.error(i));
        }
      }
      if (symmetric) {
        // Odd in every coordinate, bit for bit.
        CHECK(generator(Mat<T>(-noise)) == Mat<T>(-out));
        CHECK(out(0, 1) == T(0));
      }
    }
  }
}

namespace {

/// The smallest user-defined generator, as documented in spectral/implicit.hpp.
struct Doubling {
  using Scalar = float;
  kernattn::Index input_dimension() const { return 4; }
  kernattn::Index output_dimension() const { return 4; }
  kernattn::Matrix<float> operator()(const kernattn::Matrix<float>& noise) const {
    return 2.0f * noise;
  }
};

/// A generator that breaks its contract (returns one row too few).
struct Truncating {
  using Scalar = double;
  kernattn::Index input_dimension() const { return 2; }
  kernattn::Index output_dimension() const { return 2; }
  kernattn::Matrix<double> operator()(const kernattn::Matrix<double>& noise) const {
    return noise.topRows(noise.rows() - 1);
  }
};

static_assert(sp::FrequencyGenerator<Doubling>);
static_assert(sp::FrequencyGenerator<sp::MlpGenerator<float>>);
static_assert(!sp::FrequencyGenerator<sp::Gaussian<float>>);
static_assert(sp::SpectralSampler<sp::Implicit<Doubling>>);
static_assert(!sp::ClosedFormSampler<sp::Implicit<Doubling>>);
static_assert(!sp::ClosedFormSampler<sp::MirroredGaussian<float>>);
static_assert(sp::ClosedFormSampler<sp::Orthogonal<sp::Gaussian<double>>>);
static_assert(sp::IsotropicSampler<sp::StudentT<float>> &&
              sp::IsotropicSampler<sp::GammaScaleMixture<float>>);
static_assert(!sp::IsotropicSampler<sp::Cauchy<float>> &&
              !sp::IsotropicSampler<sp::Laplace<float>> &&
              !sp::IsotropicSampler<sp::GaussianMixture<float>>);

}  // namespace

TEMPLATE_TEST_CASE("Implicit: the generator applied to the base sampler's frequencies",
                   "[sampler][implicit]", float, double) {
  using T = TestType;
  const Index in = 3, hidden = 5, out = 4, rows = 33;
  const RandomStream stream{52, 1};
  SECTION("default base: standard normal noise") {
    const sp::MlpGenerator<T> generator(test_layers<T>(in, hidden, out));
    const sp::Implicit<sp::MlpGenerator<T>> sampler(generator);
    CHECK(sampler.base().lengthscale(in) == T(1));
    CHECK(sampler.uniforms_per_frequency(out) == in);
    const MatrixXd uniforms = sp::draw_uniforms(stream, rows, in);
    const Mat<T> expected =
        generator(sp::Gaussian<T>(T(1)).frequencies_from_uniforms(uniforms, in));
    CHECK(sampler.frequencies_from_uniforms(uniforms, out) == expected);
    CHECK(sp::draw_frequencies(sampler, rows, out, stream) == expected);
  }
  SECTION("the official IKA form: mirrored noise, sign-symmetric network") {
    Vec<T> mean(in), scale(in);
    mean << T(0.5), T(-1), T(2);
    scale << T(1), T(0.3), T(0.7);
    const sp::MirroredGaussian<T> noise(mean, scale);
    const sp::MlpGenerator<T> generator(test_layers<T>(in, hidden, in),
                                        sp::MlpForm::sign_symmetric);
    const sp::Implicit<sp::MlpGenerator<T>, sp::MirroredGaussian<T>> sampler(generator, noise);
    const MatrixXd uniforms = sp::draw_uniforms(stream, rows, in);
    CHECK(sampler.frequencies_from_uniforms(uniforms, in) ==
          generator(noise.frequencies_from_uniforms(uniforms, in)));
  }
}

TEST_CASE("Implicit with the smallest user-defined generator", "[sampler][implicit]") {
  // 2 * float(z) is float(2 z) exactly, so Doubling over N(0, 1) is Gaussian(1/2) bit for bit.
  const sp::Implicit<Doubling> sampler(Doubling{});
  CHECK(sp::draw_frequencies(sampler, 17, 4, {53, 0}) ==
        sp::draw_frequencies(sp::Gaussian<float>(0.5f), 17, 4, {53, 0}));
  REQUIRE_INVALID_ARGUMENT(
      sp::draw_frequencies(sp::Implicit<Truncating>(Truncating{}), 6, 2, {53, 0}),
      "Implicit: the generator returned 5x2 for noise of 6x2, expected 6x2");
}

}  // namespace test_samplers_implicit
