// A naive, materialised double-precision backward pass for the kernattn gradient tests. Like
// reference.hpp it never calls kernattn: every kernel's value and gradient is written out from its
// formula in the weight domain (kappa itself, not log kappa), the full Nq x Nk matrix of weights
// w_ij = kappa(q_i, k_j) mu(k_j) is formed, and the chain rule is applied to
// out_i = sum_j w_ij v_j / s_i, s_i = sum_j w_ij (visible j only):
//   dl/dw_ij = dO_i . (v_j - out_i) / s_i,
//   dV_j    += (w_ij / s_i) dO_i,
//   dQ_i    += dl/dw_ij mu_j grad_q kappa_ij,
//   dK_j    += dl/dw_ij (mu_j grad_k kappa_ij + kappa_ij mu_j grad log mu_j).
//
// Tolerances. Each entry of a gradient comes with the sum of the absolute values of the terms it
// is made of (`scale`), and the bound is (2 d + d_v + 2 N_k + 24 + 2 max|x| + 2 max|L|) u times
// that scale: a term's normalised weight carries the error of its log-weight x (an inner product
// of length d and a few roundings, relative to |x|) and of the log-normaliser L (a sum of N_k
// terms), its error factor dO . v - D that of two inner products of length d_v, and the sums over
// keys or queries N_k more roundings (Higham, ch. 3). Direct kernels, whose weights can cancel in
// s_i, multiply the scale by the row's condition sum_j |w_ij| / |s_i|.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <functional>

#include "reference.hpp"

namespace gref {

using ref::Index;
using ref::MatrixXd;
using ref::Row;
using ref::VectorXd;

/// A kernel in the weight domain: kappa(q, k), its gradients in q and k, and the elementwise
/// sizes of the terms the library forms them from (what their rounding scales with).
struct PairModel {
  bool direct = false;
  std::function<double(const Row& q, const Row& k)> value;
  std::function<Row(const Row& q, const Row& k)> gradient_q;
  std::function<Row(const Row& q, const Row& k)> gradient_k;
  std::function<Row(const Row& q, const Row& k)> size_q;
  std::function<Row(const Row& q, const Row& k)> size_k;
  /// Optional: a relative error of the library's weight at precision u beyond the terms the
  /// bounds below scale with (a feature form's score is a D-term dot product of features that
  /// are themselves rounded).
  std::function<double(const Row& q, const Row& k, double u)> weight_error;
};

/// kappa = exp(s q.k).
inline PairModel exponential(double s) {
  PairModel m;
  m.value = [s](const Row& q, const Row& k) { return std::exp(s * q.dot(k)); };
  m.gradient_q = [m, s](const Row& q, const Row& k) -> Row { return m.value(q, k) * s * k; };
  m.gradient_k = [m, s](const Row& q, const Row& k) -> Row { return m.value(q, k) * s * q; };
  m.size_q = [m, s](const Row& q, const Row& k) -> Row { return m.value(q, k) * s * k.cwiseAbs(); };
  m.size_k = [m, s](const Row& q, const Row& k) -> Row { return m.value(q, k) * s * q.cwiseAbs(); };
  return m;
}

/// kappa = exp(-|q - k|^2 / (2 sigma2)); the library forms q.k / sigma2 and |k|^2 / (2 sigma2).
inline PairModel rbf(double sigma2) {
  PairModel m;
  m.value = [sigma2](const Row& q, const Row& k) {
    return std::exp(-(q - k).squaredNorm() / (2 * sigma2));
  };
  m.gradient_q = [m, sigma2](const Row& q, const Row& k) -> Row {
    return -m.value(q, k) / sigma2 * (q - k);
  };
  m.gradient_k = [m, sigma2](const Row& q, const Row& k) -> Row {
    return m.value(q, k) / sigma2 * (q - k);
  };
  m.size_q = [m, sigma2](const Row& q, const Row& k) -> Row {
    return m.value(q, k) / sigma2 * (q.cwiseAbs() + k.cwiseAbs());
  };
  m.size_k = m.size_q;
  return m;
}

/// Matern nu = twice_nu / 2 with lengthscale l: kappa(r), x = sqrt(2 nu) r / l, and
/// grad_q kappa = kappa'(r) (q - k) / r (0 at r = 0). The library forms r^2 from |q|^2, |k|^2 and
/// q.k, so its terms scale with |kappa'(r) / r| (|q| + |k|).
inline PairModel matern(int twice_nu, double l) {
  const double c = std::sqrt(double(twice_nu)) / l;
  const auto kappa = [twice_nu, c](double r) {
    const double x = c * r;
    if (twice_nu == 1) return std::exp(-x);
    if (twice_nu == 3) return (1 + x) * std::exp(-x);
    return (1 + x + x * x / 3) * std::exp(-x);
  };
  // kappa'(r) / r, finite at r = 0 for nu > 1/2.
  const auto slope_over_r = [twice_nu, c](double r) {
    const double x = c * r;
    if (twice_nu == 1) return r == 0 ? 0.0 : -c * std::exp(-x) / r;
    if (twice_nu == 3) return -c * c * std::exp(-x);
    return -c * c * (1 + x) / 3 * std::exp(-x);
  };
  PairModel m;
  m.value = [kappa](const Row& q, const Row& k) { return kappa((q - k).norm()); };
  m.gradient_q = [slope_over_r](const Row& q, const Row& k) -> Row {
    return slope_over_r((q - k).norm()) * (q - k);
  };
  m.gradient_k = [slope_over_r](const Row& q, const Row& k) -> Row {
    return -slope_over_r((q - k).norm()) * (q - k);
  };
  m.size_q = [slope_over_r](const Row& q, const Row& k) -> Row {
    return std::abs(slope_over_r((q - k).norm())) * (q.cwiseAbs() + k.cwiseAbs());
  };
  m.size_k = m.size_q;
  return m;
}

/// kappa = (1 + r^2 / (2 alpha l^2))^(-alpha): grad_q = -(q - k) / l^2 (1 + ...)^(-alpha - 1).
inline PairModel rational_quadratic(double alpha, double l) {
  const auto base = [alpha, l](const Row& q, const Row& k) {
    return 1 + (q - k).squaredNorm() / (2 * alpha * l * l);
  };
  PairModel m;
  m.value = [base, alpha](const Row& q, const Row& k) { return std::pow(base(q, k), -alpha); };
  m.gradient_q = [base, alpha, l](const Row& q, const Row& k) -> Row {
    return -std::pow(base(q, k), -alpha - 1) / (l * l) * (q - k);
  };
  m.gradient_k = [base, alpha, l](const Row& q, const Row& k) -> Row {
    return std::pow(base(q, k), -alpha - 1) / (l * l) * (q - k);
  };
  m.size_q = [base, alpha, l](const Row& q, const Row& k) -> Row {
    return std::pow(base(q, k), -alpha - 1) / (l * l) * (q.cwiseAbs() + k.cwiseAbs());
  };
  m.size_k = m.size_q;
  return m;
}

/// kappa = (a q.k + c)^n: grad_q = n a (a q.k + c)^(n-1) k.
inline PairModel polynomial(int n, double c, double a) {
  PairModel m;
  m.direct = true;
  m.value = [n, c, a](const Row& q, const Row& k) { return std::pow(a * q.dot(k) + c, n); };
  const auto slope = [n, c, a](const Row& q, const Row& k) {
    return n * a * std::pow(a * q.dot(k) + c, n - 1);
  };
  m.gradient_q = [slope](const Row& q, const Row& k) -> Row { return slope(q, k) * k; };
  m.gradient_k = [slope](const Row& q, const Row& k) -> Row { return slope(q, k) * q; };
  m.size_q = [slope](const Row& q, const Row& k) -> Row {
    return std::abs(slope(q, k)) * k.cwiseAbs();
  };
  m.size_k = [slope](const Row& q, const Row& k) -> Row {
    return std::abs(slope(q, k)) * q.cwiseAbs();
  };
  return m;
}

/// kappa = q.k.
inline PairModel linear() {
  PairModel m = polynomial(1, 0.0, 1.0);
  return m;
}

/// kappa_F(f_q, f_k) kappa_T(t_q, t_k) on [f | t], t the last dt columns.
inline PairModel product(const PairModel& features, const PairModel& positions, Index dt) {
  const auto split = [dt](const Row& x) {
    return std::pair<Row, Row>{x.head(x.size() - dt), x.tail(dt)};
  };
  const auto combine = [split](const PairModel& f, const PairModel& t, auto gradient_f,
                               auto gradient_t) {
    return [split, f, t, gradient_f, gradient_t](const Row& q, const Row& k) -> Row {
      const auto [fq, tq] = split(q);
      const auto [fk, tk] = split(k);
      Row out(q.size());
      out << gradient_f(f, fq, fk) * t.value(tq, tk), f.value(fq, fk) * gradient_t(t, tq, tk);
      return out;
    };
  };
  PairModel m;
  m.value = [split, features, positions](const Row& q, const Row& k) {
    const auto [fq, tq] = split(q);
    const auto [fk, tk] = split(k);
    return features.value(fq, fk) * positions.value(tq, tk);
  };
  const auto by = [](auto member) {
    return [member](const PairModel& model, const Row& a, const Row& b) -> Row {
      return (model.*member)(a, b);
    };
  };
  m.gradient_q =
      combine(features, positions, by(&PairModel::gradient_q), by(&PairModel::gradient_q));
  m.gradient_k =
      combine(features, positions, by(&PairModel::gradient_k), by(&PairModel::gradient_k));
  m.size_q = combine(features, positions, by(&PairModel::size_q), by(&PairModel::size_q));
  m.size_k = combine(features, positions, by(&PairModel::size_k), by(&PairModel::size_k));
  return m;
}

/// A magnitude: log mu(k) and its gradient.
struct MagnitudeModel {
  std::function<double(const Row& k)> log_mu;
  std::function<Row(const Row& k)> gradient;
};

inline MagnitudeModel unit_magnitude() {
  return {[](const Row&) { return 0.0; }, [](const Row& k) -> Row { return Row::Zero(k.size()); }};
}

/// log mu = gamma |k|_p^a: d/dk_i = gamma a |k|_p^(a-p) |k_i|^(p-1) sign(k_i).
inline MagnitudeModel lp(double p, double gamma, double a) {
  return {[p, gamma, a](const Row& k) { return gamma * std::pow(ref::p_norm(k, p), a); },
          [p, gamma, a](const Row& k) -> Row {
            const double norm = ref::p_norm(k, p);
            Row g(k.size());
            for (Index i = 0; i < k.size(); ++i)
              g(i) = k(i) == 0 ? 0.0
                               : gamma * a * std::pow(norm, a - p) *
                                     std::pow(std::abs(k(i)), p - 1) * (k(i) > 0 ? 1.0 : -1.0);
            return g;
          }};
}

/// `inner` on all but the last dt columns.
inline MagnitudeModel feature_part(const MagnitudeModel& inner, Index dt) {
  return {[inner, dt](const Row& k) { return inner.log_mu(k.head(k.size() - dt)); },
          [inner, dt](const Row& k) -> Row {
            Row g = Row::Zero(k.size());
            g.head(k.size() - dt) = inner.gradient(k.head(k.size() - dt));
            return g;
          }};
}

/// The forward and backward of one sequence and head, with the tolerance of each entry.
struct Backward {
  MatrixXd out;
  /// log s_i (exponential forms; -inf for a row that sees no key) or s_i (direct forms).
  VectorXd statistics;
  MatrixXd dQ, dK, dV;
  MatrixXd dQ_bound, dK_bound, dV_bound;
  VectorXd statistics_bound;
};

/// The naive backward of w_ij = kappa(q_i, k_j) mu(k_j) over the pairs `visible` shows, at the
/// library's unit roundoff u.
inline Backward backward(const MatrixXd& Q, const MatrixXd& K, const MatrixXd& V,
                         const MatrixXd& dOut, const PairModel& kernel,
                         const MagnitudeModel& magnitude, const ref::Visibility& visible,
                         double u) {
  const Index nq = Q.rows();
  const Index nk = K.rows();
  const Index d = Q.cols();
  const Index dv = V.cols();
  Backward r;
  r.out = MatrixXd::Zero(nq, dv);
  r.statistics = VectorXd::Zero(nq);
  r.statistics_bound = VectorXd::Zero(nq);
  r.dQ = r.dQ_bound = MatrixXd::Zero(nq, d);
  r.dK = r.dK_bound = MatrixXd::Zero(nk, d);
  r.dV = r.dV_bound = MatrixXd::Zero(nk, dv);
  VectorXd mu(nk);
  for (Index j = 0; j < nk; ++j) mu(j) = std::exp(magnitude.log_mu(K.row(j)));
  MatrixXd w = MatrixXd::Zero(nq, nk);
  double largest_log = 0;
  for (Index i = 0; i < nq; ++i)
    for (Index j = 0; j < nk; ++j)
      if (visible(i, j)) {
        w(i, j) = kernel.value(Q.row(i), K.row(j)) * mu(j);
        if (w(i, j) != 0)
          largest_log = std::max(largest_log, std::abs(std::log(std::abs(w(i, j)))));
      }
  VectorXd s = w.rowwise().sum();
  for (Index i = 0; i < nq; ++i) {
    if (s(i) != 0) r.out.row(i) = w.row(i) * V / s(i);
    r.statistics(i) = kernel.direct ? s(i)
                      : s(i) == 0   ? -std::numeric_limits<double>::infinity()
                                    : std::log(s(i));
  }
  const double factor =
      double(2 * d + dv + 2 * nk + 24) + 2 * largest_log + 2 * std::log1p(double(nk));
  MatrixXd weight_error_dV = MatrixXd::Zero(nk, dv);  // what kernel.weight_error adds to dV
  for (Index i = 0; i < nq; ++i) {
    if (s(i) == 0) continue;
    const double condition = w.row(i).cwiseAbs().sum() / std::abs(s(i));
    const double scale = condition / std::abs(s(i));
    r.statistics_bound(i) = factor * u * (kernel.direct ? w.row(i).cwiseAbs().sum() : condition);
    if (kernel.weight_error)
      for (Index j = 0; j < nk; ++j)
        if (visible(i, j)) {
          const double error = std::abs(w(i, j)) * kernel.weight_error(Q.row(i), K.row(j), u);
          r.statistics_bound(i) += kernel.direct ? error : error / std::abs(s(i));
          weight_error_dV.row(j) += error / std::abs(s(i)) * dOut.row(i).cwiseAbs();
        }
    for (Index j = 0; j < nk; ++j) {
      if (!visible(i, j)) continue;
      const double adjoint = dOut.row(i).dot(V.row(j) - r.out.row(i)) / s(i);
      const double adjoint_size =
          (dOut.row(i).cwiseAbs().dot(V.row(j).cwiseAbs() + r.out.row(i).cwiseAbs())) * scale;
      const double kappa = kernel.value(Q.row(i), K.row(j));
      const Row mu_gradient = magnitude.gradient(K.row(j));
      r.dV.row(j) += w(i, j) / s(i) * dOut.row(i);
      r.dV_bound.row(j) += std::abs(w(i, j)) * scale * dOut.row(i).cwiseAbs();
      r.dQ.row(i) += adjoint * mu(j) * kernel.gradient_q(Q.row(i), K.row(j));
      r.dQ_bound.row(i) += adjoint_size * mu(j) * kernel.size_q(Q.row(i), K.row(j));
      r.dK.row(j) +=
          adjoint * mu(j) * (kernel.gradient_k(Q.row(i), K.row(j)) + kappa * mu_gradient);
      r.dK_bound.row(j) +=
          adjoint_size * mu(j) *
          (kernel.size_k(Q.row(i), K.row(j)) + std::abs(kappa) * mu_gradient.cwiseAbs());
    }
  }
  r.dQ_bound *= factor * u;
  r.dK_bound *= factor * u;
  r.dV_bound *= factor * u;
  r.dV_bound += weight_error_dV;
  return r;
}

}  // namespace gref
