// Multi-head attention whose heads' spectral samplers are coupled by a Gaussian copula: each
// head keeps its own kernel (its own spectral density), while its random frequencies are
// correlated with the other heads'.
#include <cmath>
#include <cstdio>
#include <kernattn/kernattn.hpp>
#include <numbers>
#include <tuple>

namespace {

/// Kendall's tau between two equally long samples (O(n^2), fine for a few thousand).
double kendall_tau(const Eigen::MatrixXf& a, const Eigen::MatrixXf& b) {
  const Eigen::Map<const Eigen::VectorXf> x(a.data(), a.size()), y(b.data(), b.size());
  double concordance = 0;
  for (Eigen::Index i = 0; i < x.size(); ++i)
    for (Eigen::Index j = i + 1; j < x.size(); ++j)
      concordance += double((x(i) > x(j)) - (x(i) < x(j))) * double((y(i) > y(j)) - (y(i) < y(j)));
  return concordance / (0.5 * double(x.size()) * double(x.size() - 1));
}

}  // namespace

int main() {
  using namespace kernattn;
  const Index n = 512, d = 16, M = 256;
  using Head = LinearAttention<features::Fourier<float>>;
  const auto make_head = [](Matrix<float> omega) {
    return Head(features::Fourier<float>(std::move(omega)));
  };
  // Four kernels, one per head: RBF, Laplacian (product form), Matern 3/2 and a Cauchy kernel.
  const auto recipes = std::tuple(SampledHead{spectral::Gaussian<float>(2.0f), M, make_head},
                                  SampledHead{spectral::Cauchy<float>(2.0f), M, make_head},
                                  SampledHead{spectral::StudentT<float>(3.0f, 2.0f), M, make_head},
                                  SampledHead{spectral::Laplace<float>(2.0f), M, make_head});
  Matrix<double> R(4, 4);
  R << 1.0, 0.8, 0.5, 0.2,  //
      0.8, 1.0, 0.5, 0.2,   //
      0.5, 0.5, 1.0, 0.2,   //
      0.2, 0.2, 0.2, 1.0;
  using Four = Heads<Head, Head, Head, Head>;
  const random::RandomStream stream{/*seed=*/7, /*stream=*/0};
  const auto coupled = MultiHead<Four, coupling::GaussianCopula>::draw(coupling::GaussianCopula(R),
                                                                       recipes, d, stream);

  // The heads' noise is dependent as R says: Kendall's tau = (2/pi) arcsin(rho) for the coordinates
  // that each sampler makes from one uniform (Gaussian, Cauchy and Laplace heads).
  const auto& heads = coupled.heads();
  const Matrix<float> w0 = std::get<0>(heads).feature_map().frequencies();
  const Matrix<float> w1 = std::get<1>(heads).feature_map().frequencies();
  const Matrix<float> w3 = std::get<3>(heads).feature_map().frequencies();
  const double tau01 = kendall_tau(w0, w1), tau03 = kendall_tau(w0, w3);
  const auto expected = [](double rho) { return 2 / std::numbers::pi * std::asin(rho); };
  std::printf("Kendall's tau between head 0 (RBF) and head 1 (Laplacian): %.3f (copula: %.3f)\n",
              tau01, expected(0.8));
  std::printf("Kendall's tau between head 0 (RBF) and head 3 (Cauchy):    %.3f (copula: %.3f)\n",
              tau03, expected(0.2));

  // Attention with the four heads: Q, K are n x (4 d), V is n x (4 dv).
  const Eigen::MatrixXf Q = 0.5f * Eigen::MatrixXf::Random(n, 4 * d);
  const Eigen::MatrixXf K = 0.5f * Eigen::MatrixXf::Random(n, 4 * d);
  const Eigen::MatrixXf V = Eigen::MatrixXf::Random(n, 4 * 8);
  const Eigen::MatrixXf out = coupled(Q, K, V);
  for (Index h = 0; h < 4; ++h)
    std::printf("head %ld: output norm %.4f\n", long(h), out.middleCols(h * 8, 8).norm());

  // R = I is exactly independent heads.
  const auto identity = MultiHead<Four, coupling::GaussianCopula>::draw(
      coupling::GaussianCopula(Matrix<double>::Identity(4, 4)), recipes, d, stream);
  const auto independent = MultiHead<Four>::draw(coupling::Independent{}, recipes, d, stream);
  const bool same = (identity(Q, K, V).array() == independent(Q, K, V).array()).all();
  std::printf("R = I equals independent heads bit for bit: %s\n", same ? "yes" : "no");
  // With M d = 4096 pairs the standard error of tau is about 0.01.
  const bool ok = same && std::abs(tau01 - expected(0.8)) < 0.05 &&
                  std::abs(tau03 - expected(0.2)) < 0.05 && out.allFinite();
  return ok ? 0 : 1;
}
