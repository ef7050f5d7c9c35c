#pragma once
/// \file
/// The `Magnitude` concept: the per-key factor \f$\mu(k) > 0\f$ of the kernel smoother
/// \f$w_{ij} = \kappa(q_i,k_j)\,\mu(k_j)\f$. A magnitude gives \f$\log\mu(k)\f$ (in double), so a
/// magnitude far beyond the largest float is still exact: the engine only ever uses differences
/// of log-weights. It is evaluated once per key, never once per query-key pair.
///
/// The smallest user-defined magnitude:
/// \code
/// struct FirstFeature {
///   static constexpr bool is_unit = false;
///   template <class Row> double log_magnitude(const Row& k) const { return double(k(0)); }
/// };
/// \endcode

#include <concepts>
#include <string>
#include <vector>

#include "kernattn/core/scalar_traits.hpp"

namespace kernattn::magnitude {

/// `log_magnitude(k)` is \f$\log\mu(k)\f$ for one key row; `is_unit` is true when
/// \f$\mu \equiv 1\f$, so the engine skips it.
template <class M>
concept Magnitude = requires(const M magnitude,
                             const Eigen::Matrix<double, 1, Eigen::Dynamic> row) {
  { M::is_unit } -> std::convertible_to<bool>;
  { magnitude.log_magnitude(row) } -> std::convertible_to<double>;
};

/// A magnitude the backward passes can differentiate: `log_magnitude_gradient(k)` is
/// \f$\nabla_k\log\mu(k)\f$ (in double) unless \f$\mu \equiv 1\f$.
template <class M>
concept DifferentiableMagnitude = Magnitude<M> &&
    (M::is_unit || requires(const M magnitude, const Eigen::Matrix<double, 1, Eigen::Dynamic> row) {
      { magnitude.log_magnitude_gradient(row) } -> std::convertible_to<Eigen::RowVectorXd>;
    });

/// A magnitude whose parameters the backward passes differentiate (docs/gradients.md,
/// "Parameters"): none when \f$\mu \equiv 1\f$; otherwise `parameter_names()`, `parameters(d)`,
/// `with_parameters(values)` (include/kernattn/core/parameters.hpp) and
/// `log_magnitude_parameter_gradient(k)`, \f$\partial\log\mu(k)/\partial\theta\f$ in double.
template <class M>
concept ParametricMagnitude = DifferentiableMagnitude<M> &&
    (M::is_unit || requires(const M magnitude, Index d, const Eigen::VectorXd values,
                            const Eigen::Matrix<double, 1, Eigen::Dynamic> row) {
      { magnitude.parameter_names() } -> std::convertible_to<std::vector<std::string>>;
      { magnitude.parameters(d) } -> std::convertible_to<Eigen::VectorXd>;
      { magnitude.with_parameters(values) } -> std::convertible_to<M>;
      { magnitude.log_magnitude_parameter_gradient(row) } -> std::convertible_to<Eigen::VectorXd>;
    });

/// Adds \f$\log\mu(k_j)\f$ of every row j of `keys` to `log_terms(j)`: the magnitude's own
/// `add_log_magnitudes(keys, log_terms)` where it has one (a pass over all the keys, equal to
/// `log_magnitude` row by row), else `log_magnitude` row by row.
template <Magnitude M, class Keys, class LogTerms>
void add_log_magnitudes(const M& magnitude, const Keys& keys, LogTerms& log_terms) {
  if constexpr (requires { magnitude.add_log_magnitudes(keys, log_terms); })
    magnitude.add_log_magnitudes(keys, log_terms);
  else
    for (Index j = 0; j < keys.rows(); ++j) log_terms(j) += magnitude.log_magnitude(keys.row(j));
}

/// Adds \f$\nabla\log\mu(k_j)\f$ of every row j of `keys` to row j of `gradients`: the
/// magnitude's own `add_log_magnitude_gradients(keys, gradients)` where it has one, else
/// `log_magnitude_gradient` row by row.
template <DifferentiableMagnitude M, class Keys, class Gradients>
void add_log_magnitude_gradients(const M& magnitude, const Keys& keys, Gradients& gradients) {
  if constexpr (requires { magnitude.add_log_magnitude_gradients(keys, gradients); })
    magnitude.add_log_magnitude_gradients(keys, gradients);
  else
    for (Index j = 0; j < keys.rows(); ++j)
      gradients.row(j) += magnitude.log_magnitude_gradient(keys.row(j));
}

}  // namespace kernattn::magnitude
