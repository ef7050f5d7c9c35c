#pragma once
/// \file
/// What the backward calls share: the gradients they return and the checks of their arguments.

#include "kernattn/core/aliasing.hpp"
#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/front_end.hpp"
#include "kernattn/engine/options.hpp"

namespace kernattn {

/// The gradients of a scalar loss with respect to Q, K and V, each of its input's shape.
template <Real T>
struct AttentionGradients {
  Matrix<T> dQ;
  Matrix<T> dK;
  Matrix<T> dV;
};

/// The gradient of a scalar loss with respect to a score bias's parameters
/// (`mask::DifferentiableScoreBias`), in the bias's order, in double.
struct ScoreBiasGradient {
  Eigen::VectorXd values;
};

namespace detail {

/// Requires `argument` (named `name`) to have `rows` x `cols`, saying what the shape follows from.
template <class Argument>
void require_shape(const Argument& argument, std::string_view name, Index rows, Index cols,
                   std::string_view because) {
  require(argument.rows() == rows && argument.cols() == cols, name, " is ", shape_of(argument),
          " but must be ", shape_of(rows, cols), " (", because, ")");
}

/// Requires dOut to have out's shape and dQ, dK and dV those of Q, K and V.
template <class Q, class K, class V, class Out, class OutGradient, class GQ, class GK, class GV>
void require_gradient_shapes(const Q& queries, const K& keys, const V& values, const Out& out,
                             const OutGradient& dOut, const GQ& dQ, const GK& dK, const GV& dV) {
  require_shape(dOut, "dOut", out.rows(), out.cols(), "the gradient of the output");
  require_shape(dQ, "dQ", queries.rows(), queries.cols(), "the shape of Q");
  require_shape(dK, "dK", keys.rows(), keys.cols(), "the shape of K");
  require_shape(dV, "dV", values.rows(), values.cols(), "the shape of V");
}

/// The checks of a backward call without row statistics (the linear engine's).
template <class DQ, class DK, class DV, class Out, class OutGradient, class GQ, class GK, class GV>
void validate_backward_shapes(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                              const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<Out>& out,
                              const OutGradient& dOut, const GQ& dQ, const GK& dK, const GV& dV,
                              BatchLayout layout) {
  validate_attention_shapes(Q, K, V, out, layout);
  require_gradient_shapes(Q, K, V, out, dOut, dQ, dK, dV);
}

/// Checks the arguments of a backward call in the batch x heads `layout`: those of the forward
/// call (`validate_attention_shapes`), then the statistics (\f$(B N_q) \times H\f$), dOut (the
/// output's shape) and the gradients (their inputs' shapes), naming each argument and its shape.
template <class DQ, class DK, class DV, class Out, class Statistics, class OutGradient, class GQ,
          class GK, class GV>
void validate_backward_shapes(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                              const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<Out>& out,
                              const Statistics& statistics, const OutGradient& dOut, const GQ& dQ,
                              const GK& dK, const GV& dV, BatchLayout layout) {
  validate_attention_shapes(Q, K, V, out, layout);
  require_shape(statistics, "statistics", Q.rows(), layout.heads,
                "one row statistic per query row and head, as the forward call wrote them");
  validate_backward_shapes(Q, K, V, out, dOut, dQ, dK, dV, layout);
}

/// The gradients that `backward(dQ, dK, dV)` writes into new matrices of Q's, K's and V's
/// shapes (the engines' `gradients` calls).
template <Real T, class Queries, class Keys, class Values, class Backward>
[[nodiscard]] AttentionGradients<T> new_gradients(const Queries& Q, const Keys& K, const Values& V,
                                                  const Backward& backward) {
  AttentionGradients<T> result{Matrix<T>(Q.rows(), Q.cols()), Matrix<T>(K.rows(), K.cols()),
                               Matrix<T>(V.rows(), V.cols())};
  backward(result.dQ, result.dK, result.dV);
  return result;
}

/// The call every backward pass without row statistics offers, written once (CRTP):
/// `gradients(Q, K, V, out, dOut, layout)`, `Derived::backward` into new matrices.
template <class Derived>
class GradientCalls {
 public:
  /// `backward(Q, K, V, out, dOut, dQ, dK, dV, layout)` into new matrices.
  template <class DQ, class DK, class DV, class DO, class DG>
  [[nodiscard]] auto gradients(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                               const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
                               const Eigen::MatrixBase<DG>& dOut, BatchLayout layout = {}) const {
    return new_gradients<typename Derived::Scalar>(Q, K, V, [&](auto& dQ, auto& dK, auto& dV) {
      static_cast<const Derived&>(*this).backward(Q, K, V, out, dOut, dQ, dK, dV, layout);
    });
  }
};

/// Calls `run(dQ, dK, dV)`, through temporaries of the gradients' shapes when a gradient may
/// overlap another or one of `inputs` (an overlapping argument is read after it is written).
template <Real T, class GQ, class GK, class GV, class Run, class... Inputs>
void write_gradients(GQ& dQ, GK& dK, GV& dV, const Run& run, const Inputs&... inputs) {
  const auto overlaps = [&](const auto& gradient) {
    return (may_share_memory(gradient, inputs) || ...);
  };
  if (overlaps(dQ) || overlaps(dK) || overlaps(dV) || may_share_memory(dQ, dK) ||
      may_share_memory(dQ, dV) || may_share_memory(dK, dV)) {
    Matrix<T> query_gradient(dQ.rows(), dQ.cols());
    Matrix<T> key_gradient(dK.rows(), dK.cols());
    Matrix<T> value_gradient(dV.rows(), dV.cols());
    run(query_gradient, key_gradient, value_gradient);
    dQ = query_gradient;
    dK = key_gradient;
    dV = value_gradient;
  } else {
    run(dQ, dK, dV);
  }
}

/// Calls `body(queries, keys, values, output, output_gradient, dQ, dK, dV)` with read-only views
/// of Q, K, V, out and dOut (`InputView`) and gradients that are dQ, dK and dV themselves, or
/// temporaries copied into them afterwards when one may overlap an argument (`write_gradients`).
template <Real T, class DQ, class DK, class DV, class DO, class DG, class GQ, class GK, class GV,
          class Body>
void with_backward_views(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                         const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
                         const Eigen::MatrixBase<DG>& dOut, GQ& dQ, GK& dK, GV& dV,
                         const Body& body) {
  const InputView<DQ> queries(Q);
  const InputView<DK> keys(K);
  const InputView<DV> values(V);
  const InputView<DO> output(out);
  const InputView<DG> output_gradient(dOut);
  write_gradients<T>(
      dQ, dK, dV,
      [&](auto& query_gradient, auto& key_gradient, auto& value_gradient) {
        body(queries, keys, values, output, output_gradient, query_gradient, key_gradient,
             value_gradient);
      },
      queries, keys, values, output, output_gradient);
}

}  // namespace detail
}  // namespace kernattn
