#pragma once
/// \file
/// The `AttentionHead` concept: what `MultiHead`, `BatchNormalized` and `ScaledHead` accept as a
/// head.

#include <concepts>
#include <string>
#include <vector>

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/options.hpp"

namespace kernattn {

/// What `MultiHead` runs as one head: any attention with a `Scalar` type and
/// `compute(Q, K, V, out, layout)` (`Attention`, `LinearAttention`, `BatchNormalized`,
/// `ScaledHead`, ...). A head sees only its own columns of all `layout.sequences` sequences: Q
/// is \f$(B N_q) \times d\f$, K is \f$(B N_k) \times d\f$, V is \f$(B N_k) \times d_v\f$.
///
/// The smallest user-defined head (every query gets the mean of its sequence's values):
/// \code
/// struct MeanOfValues {
///   using Scalar = float;
///   template <class Q, class K, class V, class Out>
///   void compute(const Q& q, const K&, const V& v, Out&& out, kernattn::BatchLayout layout) const
///   {
///     const kernattn::Index nq = q.rows() / layout.sequences, nk = v.rows() / layout.sequences;
///     for (kernattn::Index b = 0; b < layout.sequences; ++b)
///       out.middleRows(b * nq, nq).rowwise() = v.middleRows(b * nk, nk).colwise().mean();
///   }
/// };
/// \endcode
template <class H>
concept AttentionHead = requires(const H head, const Matrix<typename H::Scalar>& x,
                                 Matrix<typename H::Scalar>& out) {
  requires Real<typename H::Scalar>;
  head.compute(x, x, x, out, BatchLayout{});
};

/// A head whose gradients `MultiHead::backward` can take, with either backward call:
///  - without row statistics, `backward(Q, K, V, out, dOut, dQ, dK, dV, layout)`
///    (`LinearAttention`);
///  - with them, `compute(Q, K, V, out, statistics, layout)` and
///    `backward(Q, K, V, out, statistics, dOut, dQ, dK, dV, layout)` (`Attention`).
template <class H>
concept DifferentiableHead = AttentionHead<H> &&(
    requires(const H head, const Matrix<typename H::Scalar>& x, Matrix<typename H::Scalar>& g) {
      head.backward(x, x, x, x, x, g, g, g, BatchLayout{});
    } ||
    requires(const H head, const Matrix<typename H::Scalar>& x, Matrix<typename H::Scalar>& g) {
      head.compute(x, x, x, g, g, BatchLayout{});
      head.backward(x, x, x, x, g, x, g, g, g, BatchLayout{});
    });

/// A head with a flat vector of trainable parameters (docs/gradients.md, "Parameters") whose
/// backward also writes their gradient: `parameter_names()`, `parameters(d)`,
/// `with_parameters(values)`, `compute(Q, K, V, out, statistics, layout)` and
/// `backward(Q, K, V, out, statistics, dOut, dQ, dK, dV, parameter_gradient, layout)`
/// (`Attention` whose kernel and magnitude have parameters).
template <class H>
concept ParametricHead = AttentionHead<H> &&
    requires(const H head, const Matrix<typename H::Scalar>& x, Matrix<typename H::Scalar>& g,
             Eigen::VectorXd& theta, Index d) {
  { head.parameter_names() } -> std::convertible_to<std::vector<std::string>>;
  { head.parameters(d) } -> std::convertible_to<Eigen::VectorXd>;
  { head.with_parameters(theta) } -> std::convertible_to<H>;
  head.compute(x, x, x, g, g, BatchLayout{});
  head.backward(x, x, x, x, g, x, g, g, g, theta, BatchLayout{});
};

namespace detail {

/// The gradients of one head on its columns (see `DifferentiableHead`): a head that needs row
/// statistics gets them from a forward call of its own first (into a scratch output, so `out`
/// is what its backward reads).
template <DifferentiableHead Head, class Q, class K, class V, class Out, class OutGradient,
          class GQ, class GK, class GV>
void head_backward(const Head& head, const Q& queries, const K& keys, const V& values,
                   const Out& out, const OutGradient& out_gradient, GQ&& dQ, GK&& dK, GV&& dV,
                   BatchLayout layout) {
  if constexpr (requires {
                  head.backward(queries, keys, values, out, out_gradient, dQ, dK, dV, layout);
                }) {
    head.backward(queries, keys, values, out, out_gradient, dQ, dK, dV, layout);
  } else {
    Matrix<typename Head::Scalar> statistics;
    Matrix<typename Head::Scalar> forward(out.rows(), out.cols());
    head.compute(queries, keys, values, forward, statistics, layout);
    head.backward(queries, keys, values, out, statistics, out_gradient, dQ, dK, dV, layout);
  }
}

/// The gradients of one `ParametricHead` on its columns, its parameters' included (after a
/// forward call of its own for the row statistics).
template <ParametricHead Head, class Q, class K, class V, class Out, class OutGradient, class GQ,
          class GK, class GV>
void head_parameter_backward(const Head& head, const Q& queries, const K& keys, const V& values,
                             const Out& out, const OutGradient& out_gradient, GQ&& dQ, GK&& dK,
                             GV&& dV, BatchLayout layout, Eigen::VectorXd& parameter_gradient) {
  Matrix<typename Head::Scalar> statistics;
  Matrix<typename Head::Scalar> forward(out.rows(), out.cols());
  head.compute(queries, keys, values, forward, statistics, layout);
  head.backward(queries, keys, values, out, statistics, out_gradient, dQ, dK, dV,
                parameter_gradient, layout);
}

}  // namespace detail

}  // namespace kernattn
