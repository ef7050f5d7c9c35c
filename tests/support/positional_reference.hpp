// The positional attention tests' helpers (test_positional*.cpp; docs/math.md, section 4): problem
// sizes and inputs, the product kernel's reference (the naive double smoother, with the error bound
// of ref::attention), and PositionalAttention run in precision T.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernattn/attention/positional.hpp"
#include "kernattn/attention/sinusoidal.hpp"
#include "reference.hpp"

namespace positional_ref {

using ref::MatrixXd;
using ref::Row;

inline constexpr Index D = 8, Dt = 6, Dv = 5, Nq = 37, Nk = 53;

/// Features, positions and values of one call, in double but exactly representable in T.
struct Positional {
  MatrixXd Fq, Tq, Fk, Tk, V;

  /// The reference's view: queries [Fq | Tq] and keys [Fk | Tk] (one head).
  [[nodiscard]] ref::Problem joined() const {
    MatrixXd Q(Fq.rows(), Fq.cols() + Tq.cols()), K(Fk.rows(), Fk.cols() + Tk.cols());
    Q << Fq, Tq;
    K << Fk, Tk;
    return {Q, K, V};
  }
};

/// `m` rounded to T (and back), so that T holds it exactly.
template <class T>
MatrixXd in(const MatrixXd& m) {
  return m.cast<T>().template cast<double>();
}

/// Sinusoidal positions of `tokens` tokens from position `first`, as the library makes them.
template <class T>
MatrixXd sinusoidal(Index tokens, Index first, Index dimension = Dt) {
  return kernattn::sinusoidal_positions<T>(tokens, dimension, 10000.0, first)
      .template cast<double>();
}

/// N(0, 1) features and values; the queries are the last Nq of Nk tokens, so a causal mask lets
/// query i see the keys at its own position and before. Positions: sinusoidal, or N(0, 0.5^2).
template <class T>
Positional problem(std::uint32_t seed, bool sinusoidal_positions = true) {
  Positional p{in<T>(ref::normal(Nq, D, seed)), MatrixXd(), in<T>(ref::normal(Nk, D, seed + 1)),
               MatrixXd(), in<T>(ref::normal(Nk, Dv, seed + 2))};
  if (sinusoidal_positions) {
    p.Tq = sinusoidal<T>(Nq, Nk - Nq);
    p.Tk = sinusoidal<T>(Nk, 0);
  } else {
    p.Tq = in<T>(ref::normal(Nq, Dt, seed + 3, 0.0, 0.5));
    p.Tk = in<T>(ref::normal(Nk, Dt, seed + 4, 0.0, 0.5));
  }
  return p;
}

/// `row` followed by zeros up to `width` columns.
inline Row padded(const Row& row, Index width) {
  Row wide = Row::Zero(width);
  wide.head(row.size()) = row;
  return wide;
}

/// The product kernel on rows [f | t] with d feature columns, written from the factors' formulas
/// (ref's models, which never call the library): log kappa = log kappa_F(f_q, f_k) +
/// log kappa_T(t_q, t_k), so the smoother's weights are the element-wise product
/// kappa_F(f_i, f_j) kappa_T(t_i, t_j) (times mu(f_j)).
///
/// Error: the library sums both factors' inner-product terms into one tile (one GEMM over all
/// n = d + dt columns for two dot-product factors; otherwise one factor's finished log plus the
/// other's GEMM or finished log). In any such order an inner product errs by at most n u times its
/// absolute terms, so each factor's bound is taken at the full width n (its rows padded with
/// zeros, which change no norm, distance or product and only lengthen the inner product in the
/// bound), plus (n + 1) u (|log kappa_F| + |log kappa_T|) for adding the two parts.
inline ref::KernelModel product(const ref::KernelModel& feature, const ref::KernelModel& position,
                                Index d) {
  const auto f = [d](const Row& x) { return Row(x.head(d)); };
  const auto t = [d](const Row& x) { return Row(x.tail(x.size() - d)); };
  const auto value = [=](const Row& q, const Row& k) {
    return feature.value(f(q), f(k)) + position.value(t(q), t(k));
  };
  const auto error = [=](const Row& q, const Row& k, double u) {
    const Index n = q.size();
    return feature.error(padded(f(q), n), padded(f(k), n), u) +
           position.error(padded(t(q), n), padded(t(k), n), u) +
           double(n + 1) * u *
               (std::abs(feature.value(f(q), f(k))) + std::abs(position.value(t(q), t(k))));
  };
  return {false, value, error};
}

/// The magnitude `m` of the first d columns (the features) of a key [f | t].
inline ref::MagnitudeModel of_features(const ref::MagnitudeModel& m, Index d) {
  return {[=](const Row& k) { return m.log_mu(Row(k.head(d))); },
          [=](const Row& k, double u) { return m.error(Row(k.head(d)), u); }};
}

/// The kernel smoother of the element-wise product of the two kernels' weights, written out
/// literally in double: w_ij = kappa_F(f_i, f_j) kappa_T(t_i, t_j) mu(f_j) for the pairs that
/// `visible` selects (each row sees at least one key), out_i = sum_j w_ij v_j / sum_j w_ij.
inline MatrixXd elementwise_product_attention(const Positional& p, const ref::KernelModel& feature,
                                              const ref::KernelModel& position,
                                              const ref::MagnitudeModel& mu,
                                              const ref::Visibility& visible) {
  MatrixXd weights = MatrixXd::Zero(p.Fq.rows(), p.Fk.rows());
  for (Index i = 0; i < weights.rows(); ++i)
    for (Index j = 0; j < weights.cols(); ++j)
      if (visible(i, j))
        weights(i, j) = std::exp(feature.value(p.Fq.row(i), p.Fk.row(j))) *
                        std::exp(position.value(p.Tq.row(i), p.Tk.row(j))) *
                        std::exp(mu.log_mu(p.Fk.row(j)));
  const Eigen::VectorXd sums = weights.rowwise().sum();
  return (weights * p.V).array().colwise() / sums.array();
}

/// The expected output of positional attention: the literal element-wise product smoother, with
/// the error bound that ref::attention derives for the same smoother on the inputs [f | t] in the
/// log domain (the library's evaluation; the bound includes the reference's own rounding in
/// double).
inline ref::Reference expected_output(const Positional& p, const ref::KernelModel& feature,
                                      const ref::KernelModel& position,
                                      const ref::MagnitudeModel& mu, const ref::Visibility& visible,
                                      double u) {
  ref::Reference r =
      ref::attention(p.joined(), product(feature, position, D), of_features(mu, D), visible, u);
  r.out = elementwise_product_attention(p, feature, position, mu, visible);
  return r;
}

/// PositionalAttention<KF, KT, M, Mask> on the problem in precision T.
template <class T, class KF, class KT, class M = magnitude::None, class Mask = mask::None>
ref::Matrix<T> run(const Positional& p, const KF& kf, const KT& kt, const M& mu = {},
                   const Mask& visibility = {}, kernattn::ExecutionOptions options = {},
                   kernattn::BatchLayout layout = {}) {
  const kernattn::PositionalAttention<KF, KT, M, Mask> attention(kf, kt, mu, visibility, options);
  return attention(p.Fq.cast<T>(), p.Tq.cast<T>(), p.Fk.cast<T>(), p.Tk.cast<T>(), p.V.cast<T>(),
                   layout);
}

/// The default scale 1/sqrt(n) and variance sqrt(n) for dimension n.
inline double default_scale(Index n) { return 1 / std::sqrt(double(n)); }
inline double default_variance(Index n) { return std::sqrt(double(n)); }

}  // namespace positional_ref
