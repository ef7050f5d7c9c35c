#pragma once
/// \file
/// Two set filters at once, e.g. causal attention over padded keys: `Causal{} && padding`.

#include <utility>

#include "kernattn/mask/mask.hpp"

namespace kernattn::mask {

/// \f$M(i) = M_A(i) \cap M_B(i)\f$, with the sum of their score biases where either has one.
template <Mask A, Mask B>
struct Intersection {
  A first;
  B second;

  template <class BoundA, class BoundB>
  struct Bound {
    BoundA first;
    BoundB second;

    [[nodiscard]] Coverage coverage(Range rows, Range cols) const {
      const Coverage a = first.coverage(rows, cols);
      if (a == Coverage::hidden) return a;
      const Coverage b = second.coverage(rows, cols);
      if (b == Coverage::hidden) return b;
      return a == Coverage::full && b == Coverage::full ? Coverage::full : Coverage::partial;
    }
    [[nodiscard]] bool visible(Index i, Index j) const {
      return first.visible(i, j) && second.visible(i, j);
    }
    /// The sum of the biases of the filters that have one.
    [[nodiscard]] double bias(Index i, Index j) const requires BoundScoreBias<BoundA> ||
        BoundScoreBias<BoundB> {
      double sum = 0;
      if constexpr (BoundScoreBias<BoundA>) sum += double(first.bias(i, j));
      if constexpr (BoundScoreBias<BoundB>) sum += double(second.bias(i, j));
      return sum;
    }

    /// Whether one filter has a differentiable bias and the other biases nothing.
    static constexpr bool one_differentiable_bias =
        (DifferentiableBoundScoreBias<BoundA> && !BoundScoreBias<BoundB>) ||
        (DifferentiableBoundScoreBias<BoundB> && !BoundScoreBias<BoundA>);

    /// The gradient of that filter's bias.
    template <class Tile>
    void add_bias_gradient(Index first_query, Index first_key, const Tile& gradient,
                           Eigen::VectorXd& sums) const requires one_differentiable_bias {
      if constexpr (DifferentiableBoundScoreBias<BoundA>)
        first.add_bias_gradient(first_query, first_key, gradient, sums);
      else
        second.add_bias_gradient(first_query, first_key, gradient, sums);
    }
  };

  /// Whether one filter has a differentiable bias and the other biases nothing.
  static constexpr bool one_differentiable_bias = (DifferentiableScoreBias<A> && !ScoreBias<B>) ||
                                                  (DifferentiableScoreBias<B> && !ScoreBias<A>);

  /// The parameters of that filter's bias.
  [[nodiscard]] Index bias_parameter_count() const requires one_differentiable_bias {
    if constexpr (DifferentiableScoreBias<A>)
      return first.bias_parameter_count();
    else
      return second.bias_parameter_count();
  }

  [[nodiscard]] auto bind(const Shape& shape) const {
    using BoundA = decltype(first.bind(shape));
    using BoundB = decltype(second.bind(shape));
    return Bound<BoundA, BoundB>{first.bind(shape), second.bind(shape)};
  }
};

/// `a && b`: the keys both masks let through.
template <Mask A, Mask B>
[[nodiscard]] Intersection<A, B> operator&&(A a, B b) {
  return {std::move(a), std::move(b)};
}

}  // namespace kernattn::mask
