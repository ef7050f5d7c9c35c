#pragma once
/// \file
/// T5's bucketed relative-position bias (Raffel et al., 2020).

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <utility>
#include <vector>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn::bias {

/// \f$b(i, j) = W_{\beta(j - c_i),\,h}\f$: a learned table W (buckets x heads) read at the bucket
/// of the relative position \f$j - c_i\f$ of key j to the key \f$c_i\f$ aligned with query i
/// (\f$i + N_k - N_q\f$ by default, bottom-right, as when decoding with a cache; \f$i\f$ with
/// `Alignment::top_left`, T5's positions counted from 0 in both). The buckets (`bucket`) are
/// T5's: exact for small distances, logarithmic up to `max_distance`, and split by sign when
/// `bidirectional` (an encoder) or keeping only keys before the query (a decoder). Hides no
/// pair. The bias owns its table.
template <Real T>
class RelativePositions {
 public:
  RelativePositions(Matrix<T> table, bool bidirectional, Index max_distance,
                    mask::Alignment alignment = mask::Alignment::bottom_right)
      : table_(std::move(table)),
        bidirectional_(bidirectional),
        max_distance_(max_distance),
        alignment_(alignment) {
    const Index exact = (bidirectional ? table_.rows() / 2 : table_.rows()) / 2;
    require(exact >= 1, "bias::RelativePositions: the table has ", table_.rows(),
            " bucket(s) (rows); it needs at least ", bidirectional ? 4 : 2);
    require(table_.cols() >= 1, "bias::RelativePositions: the table has no head (column)");
    require(max_distance > exact, "bias::RelativePositions: max_distance must exceed the ", exact,
            " exact buckets, got ", max_distance);
    require(table_.allFinite(), "bias::RelativePositions: the table holds a non-finite entry");
  }

  /// T5's bucket of relative position \f$r = j - c_i\f$ among `buckets`: bidirectional, the
  /// buckets are halved, \f$r > 0\f$ takes the upper half and \f$n = |r|\f$; otherwise
  /// \f$n = \max(-r, 0)\f$. With \f$e\f$ = half the (remaining) buckets, \f$n < e\f$ is its own
  /// bucket and a larger n takes
  /// \f$\min(\lfloor e + \ln(n/e) / \ln(\mathrm{max\_distance}/e) \cdot (\mathrm{buckets} - e)
  /// \rfloor, \mathrm{buckets} - 1)\f$ (computed in double; the sum truncated toward 0).
  [[nodiscard]] static Index bucket(Index relative_position, Index buckets, bool bidirectional,
                                    Index max_distance) {
    Index first = 0;
    Index n = 0;
    if (bidirectional) {
      buckets /= 2;
      if (relative_position > 0) first = buckets;
      n = std::abs(relative_position);
    } else {
      n = std::max<Index>(-relative_position, 0);
    }
    const Index exact = buckets / 2;
    if (n < exact) return first + n;
    const double logarithmic = double(exact) + std::log(double(n) / double(exact)) /
                                                   std::log(double(max_distance) / double(exact)) *
                                                   double(buckets - exact);
    return first + std::min(Index(logarithmic), buckets - 1);
  }

  [[nodiscard]] const Matrix<T>& table() const { return table_; }
  /// The table's entries are the trainable parameters (`mask::DifferentiableScoreBias`), in
  /// column-major order: entry (bucket, head) is parameter bucket + head x buckets.
  [[nodiscard]] Index bias_parameter_count() const { return table_.size(); }

  /// One head of one sequence: the biases of every relative position the problem holds,
  /// \f$r = j - c_i\f$ from \f$-(N_q - 1) - o\f$ to \f$N_k - 1 - o\f$ with o the alignment
  /// offset, looked up once at binding.
  struct Bound {
    std::vector<T> by_position;
    /// The table entry of each relative position, column-major (bucket + head x buckets).
    std::vector<Index> entry_by_position;
    Index shift;
    Index offset;

    [[nodiscard]] mask::Coverage coverage(mask::Range, mask::Range) const {
      return mask::Coverage::full;
    }
    [[nodiscard]] bool visible(Index, Index) const { return true; }
    [[nodiscard]] T bias(Index i, Index j) const {
      return by_position[std::size_t(j - i - offset + shift)];
    }
    /// \f$\partial b(i, j)/\partial W_{\beta h} = 1\f$ for the entry the pair reads: the
    /// tile's diagonals (one relative position each) are summed first, then each sum goes to
    /// its position's entry.
    template <class Tile>
    void add_bias_gradient(Index first_query, Index first_key, const Tile& gradient,
                           Eigen::VectorXd& sums) const {
      const Index rows = gradient.rows();
      const Index cols = gradient.cols();
      if (rows == 0 || cols == 0) return;
      // Entry t of `diagonals` is relative position `lowest + t`, that of pair (rows - 1, 0).
      Eigen::VectorXd diagonals = Eigen::VectorXd::Zero(rows + cols - 1);
      for (Index c = 0; c < cols; ++c)
        for (Index r = 0; r < rows; ++r) diagonals(c - r + rows - 1) += double(gradient(r, c));
      const Index lowest = first_key - first_query - (rows - 1) - offset + shift;
      for (Index t = 0; t < diagonals.size(); ++t)
        sums(entry_by_position[std::size_t(lowest + t)]) += diagonals(t);
    }
  };

  [[nodiscard]] Bound bind(const mask::Shape& shape) const {
    require(table_.cols() == shape.heads, "bias::RelativePositions has a table of ", table_.cols(),
            " head(s) (columns) but the attention has ", shape.heads);
    const Index offset = mask::alignment_offset(alignment_, shape);
    const Index shift = std::max<Index>(shape.queries - 1, 0) + offset;
    Bound bound{{}, {}, shift, offset};
    const Index positions = std::max<Index>(shape.queries + shape.keys - 1, 0);
    bound.by_position.resize(std::size_t(positions));
    bound.entry_by_position.resize(std::size_t(positions));
    for (Index p = 0; p < positions; ++p) {
      const Index entry = bucket(p - shift, table_.rows(), bidirectional_, max_distance_) +
                          shape.head * table_.rows();
      bound.entry_by_position[std::size_t(p)] = entry;
      bound.by_position[std::size_t(p)] = table_(entry);
    }
    return bound;
  }

 private:
  Matrix<T> table_;
  bool bidirectional_;
  Index max_distance_;
  mask::Alignment alignment_;
};

}  // namespace kernattn::bias
