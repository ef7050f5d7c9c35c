#pragma once
/// \file
/// Heads coupled by a Gaussian copula.

#include <utility>
#include <vector>

#include "kernattn/coupling/correlation.hpp"
#include "kernattn/coupling/coupling.hpp"
#include "kernattn/random/distributions.hpp"

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

 private:
  explicit GaussianCopula(CorrelationFactor factor) : factor_(std::move(factor)) {}

  CorrelationFactor factor_;
};

}  // namespace kernattn::coupling
