#pragma once
/// \file
/// The `AttentionHead` concept: what `MultiHead`, `BatchNormalized` and `ScaledHead` accept as a
/// head.

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

}  // namespace kernattn
