#pragma once
/// \file
/// The symmetric Gaussian mixture sampler: the spectral density of the spectral mixture kernel
/// (Wilson and Adams, "Gaussian process kernels for pattern discovery and extrapolation", 2013).

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "kernattn/random/distributions.hpp"
#include "kernattn/spectral/sampler.hpp"

namespace kernattn::spectral {

/// A mixture of \f$Q\f$ Gaussians with weights \f$w_q\f$, each placed at \f$\pm\mu_q\f$ with equal
/// probability and diagonal covariance \f$\mathrm{diag}(v_q)\f$:
/// \f[ p(\omega) = \sum_q \frac{w_q}{2}\left[N(\omega; \mu_q, \mathrm{diag}\,v_q)
///     + N(\omega; -\mu_q, \mathrm{diag}\,v_q)\right], \f]
/// the spectral density of the spectral mixture kernel
/// \f[ \kappa(r) = \sum_q w_q \exp\!\Big(-\tfrac12\sum_i v_{qi} r_i^2\Big)\cos(\mu_q\cdot r). \f]
/// Parameters: `weights` (\f$Q\f$, \f$\ge 0\f$, summing to 1 within \f$10^{-6}\f$; they are
/// divided by their sum), `means` (\f$Q \times d\f$), `variances` (\f$Q \times d\f$, \f$> 0\f$).
/// The dimension \f$d\f$ is that of the means.
///
/// Uniforms: \f$d + 1\f$ per frequency, \f$\omega_i = s\mu_{qi} + \sqrt{v_{qi}}\,\Phi^{-1}(u_i)\f$
/// from the first \f$d\f$ (coordinate i from column i, as in every sampler, so that a copula
/// couples like with like) and the signed component from the last, \f$u_d\f$: the component
/// \f$q\f$ whose sub-interval \f$[W_{q-1}, W_q)\f$ of the cumulative weights holds it, and the
/// sign \f$s = +1\f$ in the lower half of that sub-interval, \f$-1\f$ in the upper half (so
/// \f$u_d\f$ is uniform on the \f$2Q\f$ signed components). Not isotropic.
///
/// Every frequency is finite: \f$\sqrt{v_{qi}} \le \sqrt{\max_T}\f$, far below the rounding of
/// \f$\mu_{qi}\f$ wherever \f$\mu_{qi}\f$ is near the largest T.
template <Real T>
class GaussianMixture {
 public:
  using Scalar = T;

  /// Weights (\f$Q\f$), means (\f$Q \times d\f$) and diagonal variances (\f$Q \times d\f$).
  GaussianMixture(Vector<T> weights, Matrix<T> means, Matrix<T> variances)
      : weights_(std::move(weights)), means_(std::move(means)), variances_(std::move(variances)) {
    const Index components = weights_.size();
    require(components >= 1, "GaussianMixture: at least one component is needed, got 0 weights");
    require(means_.rows() == components && means_.cols() >= 1, "GaussianMixture: means are ",
            detail::shape_of(means_), " but there are ", components,
            " weights (means must be Q x d with Q the number of weights and d >= 1)");
    require(variances_.rows() == means_.rows() && variances_.cols() == means_.cols(),
            "GaussianMixture: variances are ", detail::shape_of(variances_), " but means are ",
            detail::shape_of(means_));
    double total = 0.0;
    for (Index q = 0; q < components; ++q) {
      require(std::isfinite(weights_(q)) && weights_(q) >= T(0), "GaussianMixture: weight ", q,
              " must be a finite number >= 0, got ", weights_(q));
      total += double(weights_(q));
    }
    require(std::abs(total - 1.0) <= 1e-6, "GaussianMixture: weights must sum to 1, got ", total);
    require(means_.allFinite(), "GaussianMixture: every mean must be finite");
    for (Index q = 0; q < components; ++q)
      for (Index i = 0; i < means_.cols(); ++i)
        require(std::isfinite(variances_(q, i)) && variances_(q, i) > T(0),
                "GaussianMixture: variance (", q, ", ", i, ") must be a finite number > 0, got ",
                variances_(q, i));

    normalised_weights_ = weights_.template cast<double>() / total;
    cumulative_weights_.resize(components);
    double running = 0.0;
    for (Index q = 0; q < components; ++q) {
      running += normalised_weights_(q);
      cumulative_weights_(q) = running;
    }
    cumulative_weights_(components - 1) = 1.0;
  }

  [[nodiscard]] const Vector<T>& weights() const { return weights_; }
  [[nodiscard]] const Matrix<T>& means() const { return means_; }
  [[nodiscard]] const Matrix<T>& variances() const { return variances_; }
  [[nodiscard]] Index components() const { return weights_.size(); }
  /// \f$d\f$, the number of columns of the means.
  [[nodiscard]] Index dimension() const { return means_.cols(); }

  [[nodiscard]] Index uniforms_per_frequency(Index d) const { return d + 1; }

  [[nodiscard]] Matrix<T> frequencies_from_uniforms(const Matrix<double>& uniforms, Index d) const {
    require_frequency_shape(uniforms.rows(), d, "GaussianMixture");
    require_dimension(d);
    require_uniforms(uniforms, d + 1, "GaussianMixture");
    Matrix<T> frequencies(uniforms.rows(), d);
    for (Index m = 0; m < uniforms.rows(); ++m) {
      const auto [q, sign] = signed_component(uniforms(m, d));
      for (Index i = 0; i < d; ++i)
        frequencies(m, i) =
            T(std::fma(std::sqrt(double(variances_(q, i))), random::normal_quantile(uniforms(m, i)),
                       sign * double(means_(q, i))));
    }
    return frequencies;
  }

  /// The trainable parameters (docs/gradients.md, "Spectral samplers"): the means, then the
  /// variances, each \f$Q \times d\f$ column-major. The weights pick a component for each
  /// frequency (a discrete choice, no reparameterisation gradient) and stay fixed.
  [[nodiscard]] static std::vector<std::string> parameter_names() { return {"means", "variances"}; }
  [[nodiscard]] std::vector<Index> parameter_sizes() const {
    return {means_.size(), variances_.size()};
  }
  [[nodiscard]] Eigen::VectorXd parameters(Index = 0) const {
    Eigen::VectorXd values(2 * means_.size());
    values << means_.reshaped().template cast<double>(),
        variances_.reshaped().template cast<double>();
    return values;
  }
  /// The same weights with other means and variances (checked as in the constructor).
  [[nodiscard]] GaussianMixture with_parameters(const Eigen::VectorXd& values) const {
    require(values.size() == 2 * means_.size(), "GaussianMixture: with_parameters takes ",
            2 * means_.size(), " values (the means, then the variances, each ",
            detail::shape_of(means_), ") but got ", values.size());
    Matrix<T> means(means_.rows(), means_.cols()), variances(means_.rows(), means_.cols());
    means.reshaped() = values.head(means_.size()).template cast<T>();
    variances.reshaped() = values.tail(means_.size()).template cast<T>();
    return GaussianMixture(weights_, std::move(means), std::move(variances));
  }
  /// With \f$\omega_{mi} = s_m\mu_{q_m i} + \sqrt{v_{q_m i}}\,\Phi^{-1}(u_{mi})\f$:
  /// \f$\partial\ell/\partial\mu_{qi} = \sum_{m: q_m = q} s_m\,d\omega_{mi}\f$ and
  /// \f$\partial\ell/\partial v_{qi} = \sum_{m: q_m = q} \Phi^{-1}(u_{mi})\,d\omega_{mi} /
  /// (2\sqrt{v_{qi}})\f$.
  [[nodiscard]] Eigen::VectorXd parameter_gradient(const Matrix<double>& uniforms, Index d,
                                                   const Matrix<T>& d_frequencies) const {
    require_frequency_shape(uniforms.rows(), d, "GaussianMixture");
    require_dimension(d);
    require_uniforms(uniforms, d + 1, "GaussianMixture");
    require(d_frequencies.rows() == uniforms.rows() && d_frequencies.cols() == d,
            "GaussianMixture: dOmega is ", detail::shape_of(d_frequencies),
            " but the frequencies are ", detail::shape_of(uniforms.rows(), d));
    Matrix<double> d_means = Matrix<double>::Zero(means_.rows(), d);
    Matrix<double> d_variances = Matrix<double>::Zero(means_.rows(), d);
    for (Index m = 0; m < uniforms.rows(); ++m) {
      const auto [q, sign] = signed_component(uniforms(m, d));
      for (Index i = 0; i < d; ++i) {
        const double adjoint = double(d_frequencies(m, i));
        d_means(q, i) += sign * adjoint;
        d_variances(q, i) += random::normal_quantile(uniforms(m, i)) * adjoint /
                             (2.0 * std::sqrt(double(variances_(q, i))));
      }
    }
    Eigen::VectorXd gradient(2 * means_.size());
    gradient << d_means.reshaped(), d_variances.reshaped();
    return gradient;
  }

  /// \f$\sum_q w_q \exp(-\tfrac12\sum_i v_{qi} r_i^2)\cos(\mu_q\cdot r)\f$ (normalised weights).
  [[nodiscard]] double kernel_at(const Vector<double>& r) const {
    require_dimension(r.size());
    double kernel = 0.0;
    for (Index q = 0; q < components(); ++q) {
      const auto variances = variances_.row(q).template cast<double>();
      const auto means = means_.row(q).template cast<double>();
      const double decay = -0.5 * (variances.transpose().array() * r.array().square()).sum();
      kernel += normalised_weights_(q) * std::exp(decay) * std::cos(means.dot(r.transpose()));
    }
    return kernel;
  }

 private:
  /// The signed component that the last uniform u of a frequency picks: the first component
  /// whose cumulative weight exceeds u (empty sub-intervals of zero weights are never chosen;
  /// u < 1 = the last cumulative weight, so one exists), + in the lower half of its
  /// sub-interval, - in the upper half.
  [[nodiscard]] std::pair<Index, double> signed_component(double u) const {
    const double* cumulative_begin = cumulative_weights_.data();
    const double* cumulative_end = cumulative_begin + cumulative_weights_.size();
    const Index q = std::min<Index>(
        Index(std::upper_bound(cumulative_begin, cumulative_end, u) - cumulative_begin),
        components() - 1);
    const double lower = q == 0 ? 0.0 : cumulative_weights_(q - 1);
    return {q, u < 0.5 * (lower + cumulative_weights_(q)) ? 1.0 : -1.0};
  }

  void require_dimension(Index d) const {
    require(d == dimension(), "GaussianMixture: the dimension d = ", d,
            " differs from the means' dimension ", dimension(), " (means are ",
            detail::shape_of(means_), ")");
  }

  Vector<T> weights_;
  Matrix<T> means_;
  Matrix<T> variances_;
  Vector<double> normalised_weights_;
  Vector<double> cumulative_weights_;
};

}  // namespace kernattn::spectral
