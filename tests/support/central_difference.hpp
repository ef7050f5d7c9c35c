#pragma once
// The central difference of a loss over a flat parameter vector, for the parameter-gradient
// checks.
#include <Eigen/Core>

/// \f$(\ell(\theta + h e_p) - \ell(\theta - h e_p)) / 2h\f$.
template <class Loss>
[[nodiscard]] double central_difference(const Loss& loss, const Eigen::VectorXd& theta,
                                        Eigen::Index p, double h) {
  Eigen::VectorXd up = theta;
  Eigen::VectorXd down = theta;
  up(p) += h;
  down(p) -= h;
  return (loss(up) - loss(down)) / (2 * h);
}
