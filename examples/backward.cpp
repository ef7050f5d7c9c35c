// The backward pass (docs/gradients.md): gradient descent on Q, K and V of a small causal
// RBF x L^3 attention, towards the output of a teacher with other inputs. Each step runs the
// forward with its row statistics, then the backward from dOut = out - target of the loss
// 0.5 |out - target|^2; the loss goes down.
#include <cstdio>
#include <kernattn/kernattn.hpp>

int main() {
  using namespace kernattn;
  using Matrix = Eigen::MatrixXd;
  const Index n = 48, d = 8, dv = 4;
  const Attention<kernels::Rbf<double>, magnitude::Lp<double>, mask::Causal> attention(
      kernels::Rbf<double>{}, magnitude::Lp<double>(3.0));

  std::srand(7);
  const Matrix target =
      attention(Matrix::Random(n, d), Matrix::Random(n, d), Matrix::Random(n, dv));
  Matrix Q = Matrix::Random(n, d), K = Matrix::Random(n, d), V = Matrix::Random(n, dv);

  Matrix out(n, dv), statistics;
  const auto loss = [&] { return 0.5 * (out - target).squaredNorm(); };
  attention.compute(Q, K, V, out, statistics);
  const double first = loss();
  const double rate = 0.5;
  for (int step = 1; step <= 200; ++step) {
    const AttentionGradients<double> g =
        attention.gradients(Q, K, V, out, statistics, out - target);
    Q -= rate * g.dQ;
    K -= rate * g.dK;
    V -= rate * g.dV;
    attention.compute(Q, K, V, out, statistics);
    if (step % 40 == 0) std::printf("step %3d  loss %.6f\n", step, loss());
  }
  std::printf("loss %.6f -> %.6f\n", first, loss());
  return loss() < 0.25 * first ? 0 : 1;
}
