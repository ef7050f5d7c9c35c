// Random features: a spectral sampler, a feature map, and attention in linear time.
#include <cmath>
#include <iostream>
#include <kernattn/kernattn.hpp>

int main() {
  using namespace kernattn;
  const Index n = 2048, d = 64, M = 256;
  const Eigen::MatrixXf Q = 0.5f * Eigen::MatrixXf::Random(n, d);
  const Eigen::MatrixXf K = 0.5f * Eigen::MatrixXf::Random(n, d);
  const Eigen::MatrixXf V = Eigen::MatrixXf::Random(n, d);
  const random::RandomStream stream{/*seed=*/2024, /*stream=*/0};

  // FAVOR+: positive orthogonal random features of the softmax kernel, causal, O(n M d).
  const auto favor = features::Positive<float>::draw(M, d, stream);
  LinearAttention<features::Positive<float>, magnitude::None, mask::Causal> linear_softmax(favor);
  Attention<kernels::Exponential<float>, magnitude::None, mask::Causal> exact_softmax;
  const Eigen::MatrixXf softmax_out = exact_softmax(Q, K, V);
  const float favor_error = (linear_softmax(Q, K, V) - softmax_out).norm() / softmax_out.norm();

  // Any stationary kernel from its spectral density: Matern 3/2 (Student-t, 3 degrees of
  // freedom) with lengthscale 4, times an L^3 magnitude, in linear time.
  const auto matern = features::Fourier<float>::draw(spectral::StudentT<float>(3.0f, 4.0f), M, d,
                                                     stream.with_stream(1));
  LinearAttention<features::Fourier<float>, magnitude::Lp<float>> linear_matern(
      matern, magnitude::Lp<float>(3.0f));
  Attention<kernels::Matern32<float>, magnitude::Lp<float>> exact_matern(
      kernels::Matern32<float>(4.0f), magnitude::Lp<float>(3.0f));
  const Eigen::MatrixXf matern_out = exact_matern(Q, K, V);
  const float matern_error = (linear_matern(Q, K, V) - matern_out).norm() / matern_out.norm();

  std::cout << "FAVOR+ (M = " << M << ") vs softmax, causal: relative difference " << favor_error
            << "\nMatern 3/2 random features (M = " << M
            << ") vs exact, with L^3 magnitude: relative difference " << matern_error << "\n";
  // Random-feature estimates err by O(1/sqrt(M)): fail loudly if an estimator is broken.
  const float bound = 3.0f / std::sqrt(float(M));
  return favor_error < bound && matern_error < bound ? 0 : 1;
}
