#pragma once
/// \file
/// Heads coupled by a Gaussian copula.

#include <cmath>
#include <numbers>
#include <string>
#include <utility>
#include <vector>

#include "kernattn/coupling/correlation.hpp"
#include "kernattn/coupling/coupling.hpp"
#include "kernattn/random/distributions.hpp"
#include "kernattn/spectral/sampler.hpp"

namespace kernattn::coupling {

/// For every index \f$(m, c)\f$: \f$\varepsilon_h = \Phi^{-1}(u_h)\f$ from head h's own uniform
/// \f$u_h\f$ (`head_stream(stream, h)`), \f$z = L\varepsilon \sim N(0, R)\f$, and head h gets
/// \f$\Phi(z_h)\f$. Each head's uniforms stay uniform (so its sampler keeps its marginal law),
/// and Kendall's \f$\tau\f$ between heads g and h is \f$(2/\pi)\arcsin R_{gh}\f$ for any
/// monotone transform of them (docs/random_features.md).
///
/// A head whose row of \f$L\f$ is \f$e_h\f$ (independent of the heads before it) gets its own
/// uniforms unchanged, the exact value of \f$\Phi(\Phi^{-1}(u_h))\f$: with \f$R = I\f$ every
/// head draws exactly what `Independent` draws.
class GaussianCopula {
 public:
  /// From the correlation matrix \f$R\f$ (symmetric, unit diagonal, positive definite; checked).
  explicit GaussianCopula(const Matrix<double>& correlation)
      : factor_(correlation, "GaussianCopula") {}

  /// From a lower-triangular factor \f$L\f$, normalised to the correlation
  /// \f$D^{-1/2} L L^T D^{-1/2}\f$ (see `CorrelationFactor::from_factor`).
  [[nodiscard]] static GaussianCopula from_factor(const Matrix<double>& factor) {
    return GaussianCopula(CorrelationFactor::from_factor(factor, "GaussianCopula"));
  }

  [[nodiscard]] Index heads() const { return factor_.size(); }
  [[nodiscard]] Matrix<double> correlation() const { return factor_.correlation(); }

  [[nodiscard]] std::vector<Matrix<double>> uniforms(random::RandomStream stream, Index heads,
                                                     Index rows, Index cols) const {
    require(heads == factor_.size(), "GaussianCopula: R is ",
            detail::shape_of(factor_.size(), factor_.size()), " but ", heads, " heads are drawn");
    std::vector<Matrix<double>> uniforms = independent_uniforms(stream, heads, rows, cols);
    if (factor_.is_identity()) return uniforms;
    std::vector<double> normals(static_cast<std::size_t>(heads));
    for (Index c = 0; c < cols; ++c)
      for (Index m = 0; m < rows; ++m) {
        for (Index h = 0; h < heads; ++h)
          normals[std::size_t(h)] = random::normal_quantile(uniforms[std::size_t(h)](m, c));
        for (Index h = 0; h < heads; ++h)
          if (!factor_.is_unit_row(h))
            uniforms[std::size_t(h)](m, c) =
                inside_unit_interval(random::normal_cdf(factor_.correlated(h, normals)));
      }
    return uniforms;
  }

  /// The trainable parameters (docs/gradients.md, "Coupled heads"): the entries of the factor
  /// \f$L\f$ (lower triangular, rows of unit norm) below and on the diagonal, row by row:
  /// \f$L_{00}, L_{10}, L_{11}, L_{20}, \dots\f$, \f$H(H+1)/2\f$ values.
  [[nodiscard]] static std::vector<std::string> parameter_names() { return {"factor"}; }
  [[nodiscard]] Eigen::VectorXd parameters() const {
    const Index h = heads();
    Eigen::VectorXd values(h * (h + 1) / 2);
    for (Index row = 0, at = 0; row < h; ++row)
      for (Index col = 0; col <= row; ++col) values(at++) = factor_.factor()(row, col);
    return values;
  }
  /// The copula of the factor with these entries, normalised (`from_factor`): any values with a
  /// non-zero diagonal give a correlation matrix, so a gradient step is projected back onto
  /// them; a zero diagonal entry or a non-finite value throws `InvalidArgument`.
  [[nodiscard]] GaussianCopula with_parameters(const Eigen::VectorXd& values) const {
    const Index h = heads();
    require(values.size() == h * (h + 1) / 2, "GaussianCopula: with_parameters takes ",
            h * (h + 1) / 2, " values (the factor's lower triangle, row by row, for ", h,
            " heads) but got ", values.size());
    Matrix<double> lower = Matrix<double>::Zero(h, h);
    for (Index row = 0, at = 0; row < h; ++row)
      for (Index col = 0; col <= row; ++col) lower(row, col) = values(at++);
    return from_factor(lower);
  }

  /// \f$\partial\ell/\partial\theta\f$ of `parameters()` from \f$dU_h = \partial\ell/\partial
  /// U_h\f$, the gradients of the uniforms that `uniforms(stream, heads, rows, cols)` returns (one
  /// rows \f$\times\f$ cols matrix per head). With \f$U_h = \Phi(z_h)\f$, \f$z_h = \tilde L_h
  /// \cdot\varepsilon\f$ and \f$\tilde L_h = L_h/\lVert L_h\rVert\f$: \f$dz_h =
  /// \varphi(z_h)\,dU_h\f$ (zero where \f$\Phi(z_h)\f$ was clamped into (0, 1)), \f$d\tilde L_{hk}
  /// = \sum dz_h \varepsilon_k\f$ over the entries, and at the unit-norm rows of `parameters()`
  /// \f$dL_h = d\tilde L_h - \tilde L_h(\tilde L_h\cdot d\tilde L_h)\f$.
  [[nodiscard]] Eigen::VectorXd parameter_gradient(
      random::RandomStream stream, Index rows, Index cols,
      const std::vector<Matrix<double>>& d_uniforms) const {
    const Index h_count = heads();
    require(Index(d_uniforms.size()) == h_count,
            "GaussianCopula: parameter_gradient takes one dU per head (", h_count, ") but got ",
            d_uniforms.size());
    for (std::size_t h = 0; h < d_uniforms.size(); ++h)
      require(d_uniforms[h].rows() == rows && d_uniforms[h].cols() == cols,
              "GaussianCopula: dU of head ", h, " is ", detail::shape_of(d_uniforms[h]),
              " but the uniforms are ", detail::shape_of(rows, cols));
    const std::vector<Matrix<double>> independent =
        independent_uniforms(stream, h_count, rows, cols);
    const Matrix<double>& factor = factor_.factor();
    Matrix<double> d_factor = Matrix<double>::Zero(h_count, h_count);
    std::vector<double> normals(static_cast<std::size_t>(h_count));
    for (Index c = 0; c < cols; ++c)
      for (Index m = 0; m < rows; ++m) {
        for (Index h = 0; h < h_count; ++h)
          normals[std::size_t(h)] = random::normal_quantile(independent[std::size_t(h)](m, c));
        for (Index h = 0; h < h_count; ++h) {
          const double z = factor_.correlated(h, normals);
          const double probability = random::normal_cdf(z);
          if (probability != inside_unit_interval(probability)) continue;
          const double dz = d_uniforms[std::size_t(h)](m, c) * std::exp(-0.5 * z * z) /
                            std::sqrt(2.0 * std::numbers::pi);
          for (Index k = 0; k <= h; ++k) d_factor(h, k) += dz * normals[std::size_t(k)];
        }
      }
    Eigen::VectorXd gradient(h_count * (h_count + 1) / 2);
    for (Index row = 0, at = 0; row < h_count; ++row) {
      const double radial = factor.row(row).head(row + 1).dot(d_factor.row(row).head(row + 1));
      for (Index col = 0; col <= row; ++col)
        gradient(at++) = d_factor(row, col) - factor(row, col) * radial;
    }
    return gradient;
  }

 private:
  explicit GaussianCopula(CorrelationFactor factor) : factor_(std::move(factor)) {}

  CorrelationFactor factor_;
};

}  // namespace kernattn::coupling

namespace kernattn::coupling {

/// \f$\partial\ell/\partial\theta\f$ of a Gaussian copula's factor (`GaussianCopula::parameters()`)
/// for heads whose frequencies \f$\Omega_h\f$ (M \f$\times\f$ d) sampler h made from head h's
/// uniforms of `copula.uniforms(stream, H, M, d)`, as `MultiHead::draw` does, given
/// \f$d\Omega_h\f$: through each sampler's \f$\partial\omega/\partial u\f$
/// (`spectral::CoordinateSampler`), \f$dU_h = d\Omega_h \circ \partial\Omega_h/\partial U_h\f$,
/// then `copula.parameter_gradient`. The noise (the stream) is held fixed.
template <spectral::CoordinateSampler Sampler>
[[nodiscard]] Eigen::VectorXd coupled_factor_gradient(
    const GaussianCopula& copula, const std::vector<Sampler>& samplers, Index d,
    random::RandomStream stream,
    const std::vector<Matrix<typename Sampler::Scalar>>& d_frequencies) {
  require(samplers.size() == d_frequencies.size() && Index(samplers.size()) == copula.heads(),
          "coupled_factor_gradient: the copula couples ", copula.heads(), " heads but got ",
          samplers.size(), " samplers and ", d_frequencies.size(), " dOmega");
  const Index rows = d_frequencies.front().rows();
  for (std::size_t h = 0; h < samplers.size(); ++h) {
    require(samplers[h].uniforms_per_frequency(d) == d, "coupled_factor_gradient: sampler ", h,
            " takes ", samplers[h].uniforms_per_frequency(d),
            " uniforms per frequency; only samplers with one uniform per coordinate (d = ", d,
            ") are supported");
    require(d_frequencies[h].rows() == rows && d_frequencies[h].cols() == d,
            "coupled_factor_gradient: dOmega of head ", h, " is ",
            detail::shape_of(d_frequencies[h]), " but head 0's is ", detail::shape_of(rows, d),
            " (M x d, d = ", d, ")");
  }
  const std::vector<Matrix<double>> uniforms = copula.uniforms(stream, copula.heads(), rows, d);
  std::vector<Matrix<double>> d_uniforms;
  d_uniforms.reserve(samplers.size());
  for (std::size_t h = 0; h < samplers.size(); ++h)
    d_uniforms.push_back(d_frequencies[h].template cast<double>().cwiseProduct(
        samplers[h].uniform_derivative(uniforms[h], d)));
  return copula.parameter_gradient(stream, rows, d, d_uniforms);
}

}  // namespace kernattn::coupling
