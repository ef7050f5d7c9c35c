#pragma once
/// \file
/// The `Mask` concept: the set filter \f$M(i)\f$, which keys query i may see.
///
/// A mask is a parameter value. For each call the engine binds it to the problem's shape
/// (`bind(shape)` validates and returns a bound mask), then asks the bound mask about
/// rectangular tiles of the query x key grid: `coverage(rows, cols)` says whether a tile is
/// fully visible, fully hidden (skipped: no arithmetic at all) or partial, and `visible(i, j)`
/// decides single pairs inside partial tiles. Indices are within one sequence.
///
/// A query that sees no key outputs zeros (never NaN).
///
/// The smallest user-defined mask (every query sees only even keys):
/// \code
/// struct EvenKeys {
///   struct Bound {
///     kernattn::mask::Coverage coverage(kernattn::mask::Range, kernattn::mask::Range) const {
///       return kernattn::mask::Coverage::partial;
///     }
///     bool visible(kernattn::Index, kernattn::Index j) const { return j % 2 == 0; }
///   };
///   Bound bind(const kernattn::mask::Shape&) const { return {}; }
/// };
/// \endcode

#include <concepts>
#include <utility>

#include "kernattn/core/scalar_traits.hpp"

namespace kernattn::mask {

/// How much of a tile of the query x key grid a mask lets through.
enum class Coverage { hidden, partial, full };

/// A half-open index range [begin, end).
struct Range {
  Index begin;
  Index end;
};

/// The problem a mask is bound to: `queries` x `keys` in sequence `sequence` of `sequences`, for
/// head `head` of `heads` (a mask that does not depend on the head ignores the last two, and the
/// engines that have no biases bind it once per sequence, as head 0 of 1).
struct Shape {
  Index queries;
  Index keys;
  Index sequence = 0;
  Index sequences = 1;
  Index head = 0;
  Index heads = 1;
};

/// Which query a causal filter aligns with which key when \f$N_q \ne N_k\f$
/// (docs/conventions.md, "Causal alignment"):
///  - `bottom_right`: the last query with the last key, query i sees keys
///    \f$j \le i + N_k - N_q\f$ (FlashAttention's causal, and what decoding with a cache needs);
///  - `top_left`: the first query with the first key, query i sees keys \f$j \le i\f$
///    (PyTorch's `is_causal=True`, `torch.tril` of the \f$N_q \times N_k\f$ scores).
/// Both are the same when \f$N_q = N_k\f$.
enum class Alignment { bottom_right, top_left };

/// The key aligned with query i is \f$i\f$ plus this offset.
[[nodiscard]] constexpr Index alignment_offset(Alignment alignment, const Shape& shape) {
  return alignment == Alignment::top_left ? Index(0) : shape.keys - shape.queries;
}

template <class B>
concept BoundMask = requires(const B bound, Range range, Index i) {
  { bound.coverage(range, range) } -> std::same_as<Coverage>;
  { bound.visible(i, i) } -> std::convertible_to<bool>;
};

template <class M>
concept Mask = requires(const M mask, const Shape shape) {
  { mask.bind(shape) } -> BoundMask;
};

/// A bound mask that also adds a score bias \f$b(i, j)\f$ to the log-weight of every pair it
/// shows (docs/conventions.md, "Score biases"): the exponential forms' weights become
/// \f$e^{x_{ij} + b(i, j)}\f$.
template <class B>
concept BoundScoreBias = BoundMask<B> && requires(const B bound, Index i) {
  { bound.bias(i, i) } -> std::convertible_to<double>;
};

/// A mask whose bound form biases the scores (`bias::Dense`, `bias::Alibi`,
/// `bias::RelativePositions`, or an intersection holding one): only the exact engine's
/// exponential forms take it.
template <class M>
concept ScoreBias = Mask<M> && BoundScoreBias<decltype(std::declval<const M&>().bind(Shape{}))>;

/// A bound score bias that is linear in parameters of its unbound form, \f$b(i, j) =
/// \sum_p c_p(i, j)\,\theta_p\f$: `add_bias_gradient(first_query, first_key, G, sums)` adds
/// \f$\sum_{rc} G_{rc}\,c_p(\mathrm{first\_query} + r, \mathrm{first\_key} + c)\f$ to `sums(p)`
/// for a tile of \f$G_{rc} = \partial\ell/\partial b\f$ (docs/gradients.md, "Score biases").
template <class B>
concept DifferentiableBoundScoreBias = BoundScoreBias<B> &&
    requires(const B bound, Index i, const Eigen::MatrixXd& tile, Eigen::VectorXd& sums) {
  bound.add_bias_gradient(i, i, tile, sums);
};

/// A score bias with trainable parameters (`bias::Alibi`'s slopes, `bias::RelativePositions`'s
/// table, or an intersection holding one of them beside filters that bias nothing):
/// `bias_parameter_count()` of them, and a bound form that differentiates in them.
template <class M>
concept DifferentiableScoreBias = ScoreBias<M> && requires(const M mask) {
  { mask.bias_parameter_count() } -> std::convertible_to<Index>;
} && DifferentiableBoundScoreBias<decltype(std::declval<const M&>().bind(Shape{}))>;

/// The coverage of a tile when query i sees exactly the keys in
/// [first_visible(i), last_visible(i)], both bounds non-decreasing in i (causal, windows).
template <class First, class Last>
[[nodiscard]] Coverage banded_coverage(Range rows, Range cols, First first_visible,
                                       Last last_visible) {
  const Index top = rows.begin;
  const Index bottom = rows.end - 1;
  const Index left = cols.begin;
  const Index right = cols.end - 1;
  if (last_visible(bottom) < left || first_visible(top) > right) return Coverage::hidden;
  if (first_visible(bottom) <= left && last_visible(top) >= right) return Coverage::full;
  return Coverage::partial;
}

}  // namespace kernattn::mask
