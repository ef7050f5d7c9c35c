// Runs one softmax attention through the installed kernattn and checks it against a
// straightforward double loop. Returns non-zero when the two disagree.
#include <Eigen/Dense>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <kernattn/kernattn.hpp>

namespace {

// out_i = sum_j softmax_j(q_i . k_j / sqrt(d)) v_j
Eigen::MatrixXd reference_softmax_attention(const Eigen::MatrixXd& Q, const Eigen::MatrixXd& K,
                                            const Eigen::MatrixXd& V) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(Q.cols()));
  Eigen::MatrixXd out = Eigen::MatrixXd::Zero(Q.rows(), V.cols());
  for (Eigen::Index i = 0; i < Q.rows(); ++i) {
    Eigen::VectorXd scores(K.rows());
    for (Eigen::Index j = 0; j < K.rows(); ++j) {
      double dot = 0.0;
      for (Eigen::Index c = 0; c < Q.cols(); ++c) dot += Q(i, c) * K(j, c);
      scores(j) = dot * scale;
    }
    const double max_score = scores.maxCoeff();
    double normaliser = 0.0;
    for (Eigen::Index j = 0; j < K.rows(); ++j) {
      const double weight = std::exp(scores(j) - max_score);
      normaliser += weight;
      for (Eigen::Index c = 0; c < V.cols(); ++c) out(i, c) += weight * V(j, c);
    }
    out.row(i) /= normaliser;
  }
  return out;
}

}  // namespace

int main() {
  std::srand(1);
  const Eigen::MatrixXd Q = Eigen::MatrixXd::Random(5, 8);
  const Eigen::MatrixXd K = Eigen::MatrixXd::Random(7, 8);
  const Eigen::MatrixXd V = Eigen::MatrixXd::Random(7, 3);

  kernattn::Attention<kernattn::kernels::Exponential<double>> attention;
  const Eigen::MatrixXd out = attention(Q, K, V);
  const Eigen::MatrixXd expected = reference_softmax_attention(Q, K, V);

  if (out.rows() != expected.rows() || out.cols() != expected.cols()) {
    std::printf("consumer: wrong output shape %ldx%ld, expected %ldx%ld\n",
                static_cast<long>(out.rows()), static_cast<long>(out.cols()),
                static_cast<long>(expected.rows()), static_cast<long>(expected.cols()));
    return EXIT_FAILURE;
  }
  const double max_abs_diff = (out - expected).cwiseAbs().maxCoeff();
  std::printf("consumer: max |kernattn - reference| = %.3e\n", max_abs_diff);
  return max_abs_diff <= 1e-12 ? EXIT_SUCCESS : EXIT_FAILURE;
}
