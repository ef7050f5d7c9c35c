#pragma once
/// \file
/// A dense additive score bias: PyTorch's float `attn_mask`.

#include <cmath>
#include <limits>
#include <utility>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn::bias {

/// \f$b(i, j) = B_{ij}\f$ added to the log-weight of pair (i, j) (docs/conventions.md, "Score
/// biases"): an \f$N_q \times N_k\f$ matrix shared by every sequence and head, or an
/// \f$(S \cdot H \cdot N_q) \times N_k\f$ one holding one \f$N_q \times N_k\f$ block per sequence
/// s and head h, block \f$s H + h\f$ (PyTorch's \f$(S, H, N_q, N_k)\f$ mask, reshaped). An entry
/// of \f$-\infty\f$ hides its pair as a mask does, and a tile whose entries are all \f$-\infty\f$
/// is skipped; NaN and \f$+\infty\f$ are rejected. The bias owns its matrix (move one in to
/// avoid a copy).
template <Real T>
class Dense {
 public:
  explicit Dense(Matrix<T> bias) : bias_(std::move(bias)) {
    for (Index c = 0; c < bias_.cols(); ++c)
      for (Index r = 0; r < bias_.rows(); ++r)
        require(!std::isnan(bias_(r, c)) && bias_(r, c) != std::numeric_limits<T>::infinity(),
                "bias::Dense: entry (", r, ", ", c, ") is ", bias_(r, c),
                "; a bias is finite, or -inf to hide the pair");
  }

  [[nodiscard]] const Matrix<T>& matrix() const { return bias_; }

  struct Bound {
    const Matrix<T>* values;
    Index first_row;

    [[nodiscard]] mask::Coverage coverage(mask::Range rows, mask::Range cols) const {
      const auto block = values->block(first_row + rows.begin, cols.begin, rows.end - rows.begin,
                                       cols.end - cols.begin);
      const Index hidden = (block.array() == ScalarTraits<T>::negative_infinity).count();
      if (hidden == block.size()) return mask::Coverage::hidden;
      return hidden == 0 ? mask::Coverage::full : mask::Coverage::partial;
    }
    [[nodiscard]] bool visible(Index i, Index j) const {
      return (*values)(first_row + i, j) != ScalarTraits<T>::negative_infinity;
    }
    [[nodiscard]] T bias(Index i, Index j) const { return (*values)(first_row + i, j); }
  };

  [[nodiscard]] Bound bind(const mask::Shape& shape) const {
    const bool shared = bias_.rows() == shape.queries;
    require(bias_.cols() == shape.keys &&
                (shared || bias_.rows() == shape.queries * shape.sequences * shape.heads),
            "bias::Dense is ", detail::shape_of(bias_), " but the attention is ", shape.queries,
            "x", shape.keys, " (queries x keys) for each of ", shape.sequences, " sequence(s) and ",
            shape.heads, " head(s): give ", detail::shape_of(shape.queries, shape.keys), " or ",
            detail::shape_of(shape.queries * shape.sequences * shape.heads, shape.keys));
    return {&bias_, shared ? 0 : (shape.sequence * shape.heads + shape.head) * shape.queries};
  }

 private:
  Matrix<T> bias_;
};

}  // namespace kernattn::bias
