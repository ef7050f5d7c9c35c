#pragma once
/// \file
/// The unit magnitude.

#include "kernattn/magnitude/magnitude.hpp"

namespace kernattn::magnitude {

/// \f$\mu(k) = 1\f$: the weights are the kernel values alone.
struct None {
  static constexpr bool is_unit = true;

  template <class Row>
  [[nodiscard]] double log_magnitude(const Row& /*k*/) const {
    return 0.0;
  }

  template <class Row>
  [[nodiscard]] Eigen::RowVectorXd log_magnitude_gradient(const Row& k) const {
    return Eigen::RowVectorXd::Zero(k.size());
  }
};

}  // namespace kernattn::magnitude
