#pragma once
/// \file
/// An arbitrary boolean set filter given as a dense query x key matrix.

#include <utility>

#include "kernattn/core/errors.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn::mask {

/// \f$M(i) = \{ j : \mathrm{allowed}(i, j) \}\f$ for an \f$N_q \times N_k\f$ boolean matrix shared
/// by every sequence, or a \f$(B \cdot N_q) \times N_k\f$ one holding the B sequences' masks one
/// under the other. The mask owns its matrix (move one in to avoid a copy).
class Boolean {
 public:
  using Matrix = Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic>;

  explicit Boolean(Matrix allowed) : allowed_(std::move(allowed)) {}

  struct Bound {
    const Matrix* allowed;
    Index first_row;

    [[nodiscard]] Coverage coverage(Range, Range) const { return Coverage::partial; }
    [[nodiscard]] bool visible(Index i, Index j) const { return (*allowed)(first_row + i, j); }
  };

  [[nodiscard]] Bound bind(const Shape& shape) const {
    const bool shared = allowed_.rows() == shape.queries;
    require(allowed_.cols() == shape.keys &&
                (shared || allowed_.rows() == shape.queries * shape.sequences),
            "Boolean mask is ", detail::shape_of(allowed_), " but the attention is ", shape.queries,
            "x", shape.keys, " (queries x keys) for each of ", shape.sequences,
            " sequence(s): give ", detail::shape_of(shape.queries, shape.keys), " or ",
            detail::shape_of(shape.queries * shape.sequences, shape.keys));
    return {&allowed_, shared ? 0 : shape.sequence * shape.queries};
  }

 private:
  Matrix allowed_;
};

}  // namespace kernattn::mask
