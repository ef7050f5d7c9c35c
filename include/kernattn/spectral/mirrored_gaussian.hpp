#pragma once
/// \file
/// The mirrored Gaussian: the base noise of the official Implicit Kernel Attention sampler
/// (docs/conventions.md).

#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "kernattn/random/distributions.hpp"
#include "kernattn/spectral/sampler.hpp"

namespace kernattn::spectral {

/// The noise \f$z\f$ of the official IKA implicit sampler: of \f$M\f$ rows, the first
/// \f$\lceil M/2\rceil\f$ are drawn from \f$N(\mu, \mathrm{diag}\,\sigma^2)\f$ and the rest from
/// \f$N(-\mu, \mathrm{diag}\,\sigma^2)\f$ (the official code concatenates a positive and a
/// negative half), so the sample is symmetric about 0:
/// \f[ z_{m,i} = s_m \mu_i + \sigma_i \Phi^{-1}(u_{m,i}), \qquad
///     s_m = +1 \text{ for } m < \lceil M/2\rceil,\ -1 \text{ otherwise}. \f]
/// Mean \f$\mu \in \mathbb{R}^d\f$ (finite), scale \f$\sigma \in \mathbb{R}^d\f$ (\f$> 0\f$), with
/// \f$|\mu_i| + \sigma_i\Phi^{-1}(1 - 2^{-53}) \le \max_T\f$ so that the noise is finite in T;
/// the dimension \f$d\f$ is theirs.
///
/// Uniforms: \f$d\f$ per frequency. No closed-form kernel; usually the base of an `Implicit`
/// sampler with a sign-symmetric `MlpGenerator`. Since the sign of a row depends on \f$M\f$, a
/// larger \f$M\f$ does not extend a smaller one.
template <Real T>
class MirroredGaussian {
 public:
  using Scalar = T;

  MirroredGaussian(Vector<T> mean, Vector<T> scale)
      : mean_(std::move(mean)), scale_(std::move(scale)) {
    require(mean_.size() >= 1, "MirroredGaussian: the mean must have at least one entry, got 0");
    require(scale_.size() == mean_.size(), "MirroredGaussian: the scale has ", scale_.size(),
            " entries but the mean has ", mean_.size());
    for (Index i = 0; i < mean_.size(); ++i) {
      require(std::isfinite(mean_(i)), "MirroredGaussian: mean entry ", i, " must be finite, got ",
              mean_(i));
      require(std::isfinite(scale_(i)) && scale_(i) > T(0), "MirroredGaussian: scale entry ", i,
              " must be a finite number > 0, got ", scale_(i));
      const double largest = std::abs(double(mean_(i))) + double(scale_(i)) * largest_normal();
      require(representable<T>(largest), "MirroredGaussian: mean entry ", i, " = ", mean_(i),
              " and scale ", scale_(i), " make noise up to ", largest,
              " (|mean| + scale times the normal quantile ", largest_normal(),
              " of the extreme uniform 2^-53), beyond the largest ", ScalarTraits<T>::name, " ",
              std::numeric_limits<T>::max());
    }
  }

  [[nodiscard]] const Vector<T>& mean() const { return mean_; }
  [[nodiscard]] const Vector<T>& scale() const { return scale_; }
  /// \f$d\f$, the size of the mean.
  [[nodiscard]] Index dimension() const { return mean_.size(); }

  [[nodiscard]] Index uniforms_per_frequency(Index d) const { return d; }

  [[nodiscard]] Matrix<T> frequencies_from_uniforms(const Matrix<double>& uniforms, Index d) const {
    require_frequency_shape(uniforms.rows(), d, "MirroredGaussian");
    require(d == dimension(), "MirroredGaussian: the dimension d = ", d,
            " differs from the mean's size ", dimension());
    require_uniforms(uniforms, d, "MirroredGaussian");
    const Index frequencies = uniforms.rows();
    const Index positive = (frequencies + 1) / 2;
    Matrix<T> noise(frequencies, d);
    for (Index i = 0; i < d; ++i) {
      const double mean = double(mean_(i));
      const double scale = double(scale_(i));
      for (Index m = 0; m < frequencies; ++m)
        noise(m, i) = T(
            std::fma(scale, random::normal_quantile(uniforms(m, i)), m < positive ? mean : -mean));
    }
    require_finite_frequencies(noise, "MirroredGaussian");
    return noise;
  }

  /// The trainable parameters (`DifferentiableSampler`): the mean \f$\mu\f$ (d values), then the
  /// scale \f$\sigma\f$ (d values).
  [[nodiscard]] static std::vector<std::string> parameter_names() { return {"mean", "scale"}; }
  [[nodiscard]] std::vector<Index> parameter_sizes() const { return {dimension(), dimension()}; }
  /// \f$[\mu; \sigma]\f$, 2d values (d is the mean's size).
  [[nodiscard]] Eigen::VectorXd parameters(Index = 0) const {
    Eigen::VectorXd values(2 * dimension());
    values << mean_.template cast<double>(), scale_.template cast<double>();
    return values;
  }
  [[nodiscard]] MirroredGaussian with_parameters(const Eigen::VectorXd& values) const {
    require(values.size() == 2 * dimension(), "MirroredGaussian: with_parameters takes ",
            2 * dimension(), " values (the mean, then the scale) but got ", values.size());
    return MirroredGaussian(values.head(dimension()).template cast<T>(),
                            values.tail(dimension()).template cast<T>());
  }
  /// \f$\partial\ell/\partial\mu_i = \sum_m s_m\,dz_{mi}\f$ and \f$\partial\ell/\partial\sigma_i =
  /// \sum_m \Phi^{-1}(u_{mi})\,dz_{mi}\f$.
  [[nodiscard]] Eigen::VectorXd parameter_gradient(const Matrix<double>& uniforms, Index d,
                                                   const Matrix<T>& d_noise) const {
    require_frequency_shape(uniforms.rows(), d, "MirroredGaussian");
    require_uniforms(uniforms, dimension(), "MirroredGaussian");
    require(d_noise.rows() == uniforms.rows() && d_noise.cols() == dimension(),
            "MirroredGaussian: the noise's gradient is ", detail::shape_of(d_noise),
            " but the noise is ", detail::shape_of(uniforms.rows(), dimension()));
    const Index positive = (uniforms.rows() + 1) / 2;
    Eigen::VectorXd gradient = Eigen::VectorXd::Zero(2 * dimension());
    for (Index i = 0; i < dimension(); ++i)
      for (Index m = 0; m < uniforms.rows(); ++m) {
        const double adjoint = double(d_noise(m, i));
        gradient(i) += m < positive ? adjoint : -adjoint;
        gradient(dimension() + i) += random::normal_quantile(uniforms(m, i)) * adjoint;
      }
    return gradient;
  }

 private:
  Vector<T> mean_;
  Vector<T> scale_;
};

}  // namespace kernattn::spectral
