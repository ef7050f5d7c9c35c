// Feature-map kernels in the weight domain for the backward tests (test_backward_linear.cpp,
// test_backward_features.cpp): phi(q).phi(k) and the implicit kernel attention energy, with their
// gradients written out in double from the maps' formulas (linear_reference.hpp's NaiveMap).
#pragma once

#include <cmath>

#include "gradient_reference.hpp"
#include "linear_reference.hpp"
#include "reference.hpp"

namespace feature_gradient_ref {

using linear_ref::Kind;
using linear_ref::NaiveMap;
using ref::Index;
using ref::MatrixXd;
using ref::Row;

/// The Jacobian of the naive map at x, D x d, written out from its formula.
inline MatrixXd jacobian(const NaiveMap& map, const Row& x) {
  const Index m = map.M();
  const double root = std::sqrt(double(m));
  MatrixXd J(map.D(), map.d());
  for (Index f = 0; f < m; ++f) {
    if (map.kind == Kind::fourier) {
      const double p = map.first.row(f).dot(x);
      J.row(f) = -std::sin(p) / root * map.first.row(f);
      J.row(m + f) = std::cos(p) / root * map.first.row(f);
    } else if (map.kind == Kind::yaglom) {
      const Row a = map.scale * map.first.row(f);
      const Row b = map.scale * map.second.row(f);
      J.row(f) = -(std::sin(a.dot(x)) * a + std::sin(b.dot(x)) * b) / (2 * root);
      J.row(m + f) = (std::cos(a.dot(x)) * a + std::cos(b.dot(x)) * b) / (2 * root);
    } else {
      const double value = std::exp(map.scale * map.first.row(f).dot(x) -
                                    0.5 * map.scale * map.scale * x.squaredNorm()) /
                           root;
      J.row(f) = value * (map.scale * map.first.row(f) - map.scale * map.scale * x);
    }
  }
  return J;
}

/// phi(x) of one row.
inline Row phi(const NaiveMap& map, const Row& x) { return map.phi(MatrixXd(x)).row(0); }

/// The gradient of the log-scale s(x) = lambda max_m omega_m.x - lambda^2 |x|^2 / 2 of a Positive
/// map (0 for the others): lambda omega_{m*} - lambda^2 x.
inline Row log_scale_gradient(const NaiveMap& map, const Row& x) {
  if (map.kind != Kind::positive) return Row::Zero(x.size());
  Index largest = 0;
  for (Index m = 1; m < map.M(); ++m)
    if (map.first.row(m).dot(x) > map.first.row(largest).dot(x)) largest = m;
  return map.scale * map.first.row(largest) - map.scale * map.scale * x;
}

/// kappa(q, k) = phi(q).phi(k) with its gradients; the sizes are |J|^T |phi| (what the rounding
/// of the features scales with). With `query_scaled`, kappa = phi~(q).phi(k), phi~(q) =
/// e^{-s(q)} phi(q): the exact engine's direct statistics drop the query's log-scale (the factor
/// cancels in the output and in the gradients).
inline gref::PairModel feature_pair(const NaiveMap& map, bool query_scaled = false) {
  gref::PairModel m;
  m.direct = true;
  const auto query_factor = [map, query_scaled](const Row& q) {
    return query_scaled ? std::exp(-map.log_scale(q)) : 1.0;
  };
  m.value = [map, query_factor](const Row& q, const Row& k) {
    return query_factor(q) * phi(map, q).dot(phi(map, k));
  };
  m.gradient_q = [map, query_factor, query_scaled](const Row& q, const Row& k) -> Row {
    const Row unscaled = phi(map, k) * jacobian(map, q);
    if (!query_scaled) return unscaled;
    return query_factor(q) * (unscaled - phi(map, q).dot(phi(map, k)) * log_scale_gradient(map, q));
  };
  m.gradient_k = [map, query_factor](const Row& q, const Row& k) -> Row {
    return query_factor(q) * (phi(map, q) * jacobian(map, k));
  };
  m.size_q = [map, query_factor](const Row& q, const Row& k) -> Row {
    return query_factor(q) * (phi(map, k).cwiseAbs() * jacobian(map, q).cwiseAbs());
  };
  m.size_k = [map, query_factor](const Row& q, const Row& k) -> Row {
    return query_factor(q) * (phi(map, q).cwiseAbs() * jacobian(map, k).cwiseAbs());
  };
  return m;
}

/// The official implicit kernel attention energy kappa = (phi(q).phi(k))^2 + eps, eps = 1e-5
/// (kernels::IkaEnergy), in the log domain like the library.
inline gref::PairModel ika_energy_pair(const NaiveMap& map) {
  constexpr double epsilon = 1e-5;
  gref::PairModel m;
  m.value = [map](const Row& q, const Row& k) {
    const double x = phi(map, q).dot(phi(map, k));
    return x * x + epsilon;
  };
  m.gradient_q = [map](const Row& q, const Row& k) -> Row {
    return 2 * phi(map, q).dot(phi(map, k)) * (phi(map, k) * jacobian(map, q));
  };
  m.gradient_k = [map](const Row& q, const Row& k) -> Row {
    return 2 * phi(map, q).dot(phi(map, k)) * (phi(map, q) * jacobian(map, k));
  };
  m.size_q = [map](const Row& q, const Row& k) -> Row {
    return 2 * std::abs(phi(map, q).dot(phi(map, k))) *
           (phi(map, k).cwiseAbs() * jacobian(map, q).cwiseAbs());
  };
  m.size_k = [map](const Row& q, const Row& k) -> Row {
    return 2 * std::abs(phi(map, q).dot(phi(map, k))) *
           (phi(map, q).cwiseAbs() * jacobian(map, k).cwiseAbs());
  };
  // x = phi(q).phi(k) errs by the map's pair error of one D-term product (no key sums, no key
  // factor), and log(x^2 + eps) by 2 |x| dx / (x^2 + eps).
  m.weight_error = [map](const Row& q, const Row& k, double u) {
    const Row a = phi(map, q);
    const Row b = phi(map, k);
    const double x = a.dot(b);
    const double dx = map.pair_error(map.token_error(q, u), map.token_error(k, u), x,
                                     a.cwiseAbs().dot(b.cwiseAbs()), 0.0, u, 0, 0.0);
    return 2 * std::abs(x) * dx / (x * x + epsilon);
  };
  return m;
}

}  // namespace feature_gradient_ref
