// The README's usage example: softmax attention, the same attention as RBF kernel x L2
// magnitude, and a causal L^3 variant, on matrices with one token per row.
#include <iostream>
#include <kernattn/kernattn.hpp>

int main() {
  using namespace kernattn;
  const Index n = 128, d = 32;
  const Eigen::MatrixXf Q = Eigen::MatrixXf::Random(n, d);
  const Eigen::MatrixXf K = Eigen::MatrixXf::Random(n, d);
  const Eigen::MatrixXf V = Eigen::MatrixXf::Random(n, d);

  // softmax(Q K^T / sqrt(d)) V, streamed: no n x n matrix is ever formed.
  Attention<kernels::Exponential<float>> softmax;
  const Eigen::MatrixXf reference = softmax(Q, K, V);

  // The same attention as a kernel smoother: RBF kernel (variance sqrt(d)) x exp(|k|^2 / (2 sqrt(d))).
  Attention<kernels::Rbf<float>, magnitude::Lp<float>> rbf_l2{kernels::Rbf<float>{}, magnitude::Lp<float>(2.0f)};
  const float difference = (rbf_l2(Q, K, V) - reference).norm() / reference.norm();

  // Change the magnitude to an L^3 norm and add a causal mask, at the same cost.
  Attention<kernels::Rbf<float>, magnitude::Lp<float>, mask::Causal> causal_l3{kernels::Rbf<float>{},
                                                                              magnitude::Lp<float>(3.0f)};
  Eigen::MatrixXf out(n, d);
  causal_l3.compute(Q, K, V, out);  // writes into the caller's matrix

  std::cout << "RBF x L2 vs softmax, relative difference: " << difference << "\n"
            << "causal RBF x L3, first output row: " << out.row(0).head(4) << " ...\n";
  return difference < 1e-5f ? 0 : 1;
}
