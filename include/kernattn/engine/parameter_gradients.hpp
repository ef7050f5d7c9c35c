#pragma once
/// \file
/// The gradients of a loss with respect to the kernel's and the magnitude's parameters
/// (docs/gradients.md, "Parameters"), from what the exact engine's backward pass collects: the
/// gradient of each key's bias and, for distance kernels, the score sums of every task.

#include <string>
#include <vector>

#include "kernattn/core/parameters.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/exact_backward.hpp"
#include "kernattn/features/feature_map.hpp"
#include "kernattn/kernels/kernel.hpp"
#include "kernattn/magnitude/magnitude.hpp"

namespace kernattn::detail {

/// The parameter names of a kernel and a magnitude, "kernel." and "magnitude." before each.
template <kernels::ParametricKernel Kernel, magnitude::ParametricMagnitude Magnitude>
[[nodiscard]] std::vector<std::string> parameter_names_of(const Kernel& kernel,
                                                          const Magnitude& magnitude) {
  std::vector<std::string> names = prefixed("kernel", kernel.parameter_names());
  if constexpr (!Magnitude::is_unit)
    for (std::string& name : prefixed("magnitude", magnitude.parameter_names()))
      names.push_back(std::move(name));
  return names;
}

/// Their values for head dimension d, in the same order.
template <kernels::ParametricKernel Kernel, magnitude::ParametricMagnitude Magnitude>
[[nodiscard]] Eigen::VectorXd parameters_of(const Kernel& kernel, const Magnitude& magnitude,
                                            Index d) {
  const Eigen::VectorXd own = kernel.parameters(d);
  if constexpr (Magnitude::is_unit) {
    return own;
  } else {
    const Eigen::VectorXd theirs = magnitude.parameters(d);
    Eigen::VectorXd values(own.size() + theirs.size());
    values << own, theirs;
    return values;
  }
}

/// \f$\partial\ell/\partial\theta\f$ for `parameter_names_of(kernel, magnitude)`, summed over the
/// sequences and heads of `call` (a `BackwardCall` whose gradients are written) in order, in
/// double:
///  - a dot-product kernel, \f$s_{ij} = a\,q_i\cdot k_j + g(k_j)\f$: the score part is
///    \f$\frac{\partial a/\partial\theta}{a}\sum_i q_i\cdot dq_i\f$ (as \f$dq_i = a\sum_j G_{ij}
///    k_j\f$), the key term's \f$\sum_j \partial\ell/\partial b_j\;\partial
///    g(k_j)/\partial\theta\f$;
///  - a distance kernel: the tasks' score sums \f$\sum G\,\partial h/\partial\theta\f$, in task
///    order;
///  - the magnitude: \f$\sum_j \partial\ell/\partial b_j\;\partial\log\mu(k_j)/\partial\theta\f$.
/// Rows with \f$dq_i = 0\f$ and keys with \f$\partial\ell/\partial b_j = 0\f$ (hidden, or seen by
/// no row that moves the loss) are skipped, so what a mask hides never enters.
template <kernels::ParametricKernel Kernel, magnitude::ParametricMagnitude Magnitude, class Call>
[[nodiscard]] Eigen::VectorXd exact_parameter_gradient(
    const Kernel& kernel, const Magnitude& magnitude, const Call& call,
    const ParameterPartials<typename Kernel::Scalar>& partials) {
  const Index kernel_count = Index(kernel.parameter_names().size());
  const Index d = call.d();
  Eigen::VectorXd gradient = Eigen::VectorXd::Zero(parameters_of(kernel, magnitude, d).size());
  if (partials.key_bias_gradients.empty()) return gradient;  // nothing was differentiated
  const Index heads = call.layout.heads;
  const Index queries = call.queries();
  const Index keys = call.keys();
  for (Index b = 0; b < call.layout.sequences; ++b)
    for (Index h = 0; h < heads; ++h) {
      const auto& bias = partials.key_bias_gradients[std::size_t(b * heads + h)];
      const auto key_rows = call.block_of(call.K, b, h, keys, d);
      if constexpr (kernels::DotProductKernel<Kernel>) {
        const auto query_rows = call.block_of(call.Q, b, h, queries, d);
        const auto query_gradients = call.block_of(call.dQ, b, h, queries, d);
        double dot = 0.0;
        for (Index i = 0; i < queries; ++i)
          if (!query_gradients.row(i).isZero(0))
            dot += query_rows.row(i).template cast<double>().dot(
                query_gradients.row(i).template cast<double>());
        gradient.head(kernel_count) +=
            kernel.dot_scale_parameter_gradient(d) * (dot / double(kernel.dot_scale(d)));
        if constexpr (Kernel::has_key_term)
          for (Index j = 0; j < keys; ++j)
            if (bias(j) != 0)
              gradient.head(kernel_count) +=
                  double(bias(j)) * kernel.log_key_term_parameter_gradient(key_rows.row(j));
      }
      if constexpr (!Magnitude::is_unit)
        for (Index j = 0; j < keys; ++j)
          if (bias(j) != 0)
            gradient.tail(gradient.size() - kernel_count) +=
                double(bias(j)) * magnitude.log_magnitude_parameter_gradient(key_rows.row(j));
    }
  if constexpr (kernels::DistanceKernel<Kernel>)
    for (const Eigen::VectorXd& sums : partials.score_sums)
      if (sums.size() != 0) gradient.head(kernel_count) += sums;
  return gradient;
}

/// \f$\partial\ell/\partial\Omega\f$ of a feature kernel's map (a `features::FrequencyFeatureMap`)
/// for `call`: the tasks' shares through the scores, in task order, then, for a map with
/// log-scales, each key's share through its log-scale \f$s_j\f$, which joins the key's bias:
/// the map's product with \f$\partial\ell/\partial s_j = \partial\ell/\partial b_j\f$, sequence
/// and head after sequence and head. Keys with \f$\partial\ell/\partial b_j = 0\f$ are left out.
template <kernels::FeatureMapKernel Kernel, class Call>
[[nodiscard]] Matrix<typename Kernel::Scalar> exact_frequency_gradient(
    const Kernel& kernel, const Call& call,
    const ParameterPartials<typename Kernel::Scalar>& partials) {
  using T = typename Kernel::Scalar;
  const auto& map = kernel.feature_map();
  const Index d = call.d();
  Matrix<T> gradient = Matrix<T>::Zero(map.frequencies().rows(), d);
  for (const Matrix<T>& share : partials.frequency_gradients)
    if (share.size() != 0) gradient += share;
  if constexpr (Kernel::has_log_scale) {
    const Index heads = call.layout.heads;
    const Index keys = call.keys();
    for (std::size_t pair = 0; pair < partials.key_bias_gradients.size(); ++pair) {
      const Vector<T>& bias = partials.key_bias_gradients[pair];
      const auto key_rows =
          call.block_of(call.K, Index(pair) / heads, Index(pair) % heads, keys, d);
      std::vector<Index> moving;
      for (Index j = 0; j < keys; ++j)
        if (bias(j) != T(0)) moving.push_back(j);
      if (moving.empty()) continue;
      const auto count = Index(moving.size());
      Matrix<T> rows(count, d);
      Eigen::VectorXd adjoints(count);
      for (Index t = 0; t < count; ++t) {
        rows.row(t) = key_rows.row(moving[std::size_t(t)]);
        adjoints(t) = double(bias(moving[std::size_t(t)]));
      }
      Matrix<T> features;
      Eigen::VectorXd log_scales = Eigen::VectorXd::Zero(count);
      map.features(rows, features, log_scales);
      Matrix<T> unused;
      map.feature_gradient(rows, features, Matrix<T>::Zero(count, features.cols()), adjoints,
                           unused, &gradient);
    }
  }
  return gradient;
}

}  // namespace kernattn::detail
