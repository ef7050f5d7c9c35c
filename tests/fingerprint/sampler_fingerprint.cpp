/// \file
/// Prints every random draw of the library on fixed seeds, bit for bit (as hexadecimal float
/// literals), one line each: the uniforms and normals of the counter-based generator, the
/// frequencies of every spectral sampler, the uniforms of the couplings, and the random feature
/// maps. Two builds that print the same text draw the same bits; the test suite compares a GCC
/// build with a Clang build this way (docs/portability.md).

#include <cstdio>
#include <kernattn/kernattn.hpp>
#include <string>

namespace {

using namespace kernattn;

template <class Derived>
void print(const std::string& name, const Eigen::DenseBase<Derived>& values) {
  std::printf("%s %ldx%ld", name.c_str(), long(values.rows()), long(values.cols()));
  for (Index r = 0; r < values.rows(); ++r)
    for (Index c = 0; c < values.cols(); ++c) std::printf(" %a", double(values(r, c)));
  std::printf("\n");
}

template <class Sampler>
void print_sampler(const std::string& name, const Sampler& sampler) {
  const random::RandomStream stream{20261201, 3};
  for (const Index d : {1, 3, 8})
    print(name + " d=" + std::to_string(d), spectral::draw_frequencies(sampler, 5, d, stream));
}

template <class T>
void print_samplers(const std::string& type) {
  print_sampler("Gaussian<" + type + ">", spectral::Gaussian<T>(T(1.5)));
  print_sampler("StudentT<" + type + ">", spectral::StudentT<T>(T(3), T(0.5)));
  print_sampler("Cauchy<" + type + ">", spectral::Cauchy<T>(T(2)));
  print_sampler("Laplace<" + type + ">", spectral::Laplace<T>(T(2)));
  print_sampler("GammaScaleMixture<" + type + ">", spectral::GammaScaleMixture<T>(T(0.7)));
  print_sampler("Orthogonal<Gaussian<" + type + ">>",
                spectral::Orthogonal<spectral::Gaussian<T>>(spectral::Gaussian<T>(T(1))));
  const spectral::MirroredGaussian<T> mirrored(Vector<T>::Constant(3, T(1)),
                                               Vector<T>::Constant(3, T(0.5)));
  print("MirroredGaussian<" + type + "> d=3",
        spectral::draw_frequencies(mirrored, 5, 3, random::RandomStream{20261201, 3}));
}

void print_generator() {
  const random::RandomStream stream{7, 11};
  Eigen::Matrix<double, 1, 8> uniforms, normals;
  for (Index i = 0; i < 8; ++i) {
    uniforms(i) = stream.uniform(std::uint64_t(i));
    normals(i) = random::normal_quantile(uniforms(i));
  }
  print("uniform", uniforms);
  print("normal_quantile", normals);
}

void print_couplings() {
  Matrix<double> correlation(3, 3);
  correlation << 1.0, 0.6, -0.3, 0.6, 1.0, 0.2, -0.3, 0.2, 1.0;
  const random::RandomStream stream{99, 0};
  const auto gaussian = coupling::GaussianCopula(correlation).uniforms(stream, 3, 4, 2);
  const auto student = coupling::StudentTCopula(correlation, 4.0).uniforms(stream, 3, 4, 2);
  for (std::size_t h = 0; h < 3; ++h) {
    print("GaussianCopula head " + std::to_string(h), gaussian[h]);
    print("StudentTCopula head " + std::to_string(h), student[h]);
  }
}

void print_feature_maps() {
  const random::RandomStream stream{5, 1};
  Matrix<float> x(3, 4);
  x << 0.5f, -1.0f, 0.25f, 2.0f, -0.75f, 0.0f, 1.5f, -0.5f, 1.0f, 1.0f, -2.0f, 0.125f;
  const auto positive = features::Positive<float>::draw(6, 4, stream);
  const auto fourier =
      features::Fourier<float>::draw(spectral::Gaussian<float>(1.0f), 6, 4, stream);
  Matrix<float> out;
  Eigen::VectorXd log_scales = Eigen::VectorXd::Zero(3);
  positive.features(x, out, log_scales);
  print("Positive features", out);
  print("Positive log-scales", log_scales);
  log_scales.setZero();
  fourier.features(x, out, log_scales);
  print("Fourier features", out);
}

}  // namespace

int main() {
  print_generator();
  print_samplers<float>("float");
  print_samplers<double>("double");
  print_couplings();
  print_feature_maps();
  return 0;
}
