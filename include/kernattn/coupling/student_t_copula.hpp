#pragma once
/// \file
/// Heads coupled by a Student-t copula: the Gaussian copula's dependence plus tail dependence.

#include <cmath>
#include <utility>
#include <vector>

#include "kernattn/coupling/correlation.hpp"
#include "kernattn/coupling/coupling.hpp"
#include "kernattn/random/distributions.hpp"

namespace kernattn::coupling {

/// For every index \f$(m, c)\f$: \f$z = L\varepsilon \sim N(0, R)\f$ as in `GaussianCopula`,
/// one shared \f$w = \chi^{2\,-1}_\nu(u_w)/\nu\f$ (from stream `head_stream(stream, H)`, the
/// stream after the heads'), \f$t = z/\sqrt w\f$ (multivariate t with \f$\nu\f$ degrees of
/// freedom and correlation \f$R\f$), and head h gets \f$T_\nu(t_h)\f$. The marginals stay
/// uniform; Kendall's \f$\tau\f$ is again \f$(2/\pi)\arcsin R_{gh}\f$, but large values occur
/// together: the upper tail dependence \f$\lambda = 2\,T_{\nu+1}\big(-\sqrt{(\nu+1)(1-\rho)/
/// (1+\rho)}\big)\f$ is positive even at \f$\rho = 0\f$, where the Gaussian copula's is 0.
/// The shared \f$w\f$ couples every head, so \f$R = I\f$ does not give independent heads.
class StudentTCopula {
 public:
  /// The smallest degrees of freedom: below \f$\nu = 0.1033\f$ the shared
  /// \f$w = \chi^{2\,-1}_\nu(2^{-53})/\nu\f$ of the extreme uniform leaves the normal doubles
  /// (\f$\log w \approx -73.5/\nu\f$), and \f$t = z/\sqrt w\f$ loses its digits or becomes
  /// infinite. Any larger finite \f$\nu\f$ works (`random::student_t_cdf` has a large-\f$\nu\f$
  /// form); as \f$\nu \to \infty\f$ the copula tends to `GaussianCopula`.
  static constexpr double min_degrees_of_freedom = 0.104;

  /// From the correlation matrix \f$R\f$ (checked like `GaussianCopula`'s) and the degrees of
  /// freedom \f$\nu\f$, finite and at least `min_degrees_of_freedom`.
  StudentTCopula(const Matrix<double>& correlation, double degrees_of_freedom)
      : factor_(correlation, "StudentTCopula"), degrees_of_freedom_(degrees_of_freedom) {
    require_degrees_of_freedom();
  }

  /// From a lower-triangular factor, normalised as in `GaussianCopula::from_factor`.
  [[nodiscard]] static StudentTCopula from_factor(const Matrix<double>& factor,
                                                  double degrees_of_freedom) {
    return StudentTCopula(CorrelationFactor::from_factor(factor, "StudentTCopula"),
                          degrees_of_freedom);
  }

  [[nodiscard]] Index heads() const { return factor_.size(); }
  [[nodiscard]] Matrix<double> correlation() const { return factor_.correlation(); }
  [[nodiscard]] double degrees_of_freedom() const { return degrees_of_freedom_; }

  [[nodiscard]] std::vector<Matrix<double>> uniforms(random::RandomStream stream, Index heads,
                                                     Index rows, Index cols) const {
    require(heads == factor_.size(), "StudentTCopula: R is ",
            detail::shape_of(factor_.size(), factor_.size()), " but ", heads, " heads are drawn");
    std::vector<Matrix<double>> uniforms = independent_uniforms(stream, heads, rows, cols);
    const Matrix<double> mixing = spectral::draw_uniforms(head_stream(stream, heads), rows, cols);
    const double nu = degrees_of_freedom_;
    std::vector<double> normals(static_cast<std::size_t>(heads));
    for (Index c = 0; c < cols; ++c)
      for (Index m = 0; m < rows; ++m) {
        for (Index h = 0; h < heads; ++h)
          normals[std::size_t(h)] = random::normal_quantile(uniforms[std::size_t(h)](m, c));
        // w / nu as Gamma^-1(nu/2) / (nu/2): chi-square / nu without overflow for huge nu.
        const double scale =
            1.0 / std::sqrt(random::gamma_quantile(0.5 * nu, mixing(m, c)) / (0.5 * nu));
        for (Index h = 0; h < heads; ++h)
          uniforms[std::size_t(h)](m, c) = inside_unit_interval(
              random::student_t_cdf(nu, factor_.correlated(h, normals) * scale));
      }
    return uniforms;
  }

 private:
  StudentTCopula(CorrelationFactor factor, double degrees_of_freedom)
      : factor_(std::move(factor)), degrees_of_freedom_(degrees_of_freedom) {
    require_degrees_of_freedom();
  }

  void require_degrees_of_freedom() const {
    require(
        std::isfinite(degrees_of_freedom_) && degrees_of_freedom_ >= min_degrees_of_freedom,
        "StudentTCopula: degrees_of_freedom must be a finite number >= ", min_degrees_of_freedom,
        " (below it the chi-square of the extreme uniform 2^-53 underflows), got ",
        degrees_of_freedom_);
  }

  CorrelationFactor factor_;
  double degrees_of_freedom_;
};

}  // namespace kernattn::coupling
