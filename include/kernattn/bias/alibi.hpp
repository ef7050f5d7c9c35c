#pragma once
/// \file
/// ALiBi: attention with linear biases (Press, Smith and Lewis, 2022).

#include <cmath>
#include <cstdlib>
#include <utility>
#include <vector>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn::bias {

/// \f$b(i, j) = -m_h\,|c_i - j|\f$ for head h with slope \f$m_h\f$, where \f$c_i\f$ is the key
/// aligned with query i: \f$i + N_k - N_q\f$ by default (bottom-right, FlashAttention's
/// `alibi_slopes`), \f$i\f$ with `Alignment::top_left`. Intersected with `mask::Causal` it is
/// the causal ALiBi of the paper. The slopes are one per head, or one per sequence and head
/// (sequence-major, FlashAttention's \f$(S, H)\f$ form); they hide no pair.
class Alibi {
 public:
  explicit Alibi(std::vector<double> slopes,
                 mask::Alignment alignment = mask::Alignment::bottom_right)
      : slopes_(std::move(slopes)), alignment_(alignment) {
    require(!slopes_.empty(), "bias::Alibi: the slopes are empty");
    for (std::size_t h = 0; h < slopes_.size(); ++h)
      require(std::isfinite(slopes_[h]), "bias::Alibi: slopes[", h, "] must be finite, got ",
              slopes_[h]);
  }

  /// The paper's slopes for `heads` heads: for H a power of two the geometric sequence
  /// \f$m_h = 2^{-8h/H}\f$, h = 1..H; otherwise, with \f$H' = 2^{\lfloor\log_2 H\rfloor}\f$, the
  /// \f$H'\f$ slopes of \f$H'\f$ heads followed by the first \f$H - H'\f$ of the odd-numbered
  /// slopes (h = 1, 3, 5, ...) of \f$2H'\f$ heads.
  [[nodiscard]] static std::vector<double> standard_slopes(Index heads) {
    require(heads >= 1, "bias::Alibi::standard_slopes: heads must be >= 1, got ", heads);
    const auto geometric = [](Index count) {
      std::vector<double> slopes;
      for (Index h = 1; h <= count; ++h)
        slopes.push_back(std::exp2(-8.0 * double(h) / double(count)));
      return slopes;
    };
    Index power = 1;
    while (power * 2 <= heads) power *= 2;
    std::vector<double> slopes = geometric(power);
    const std::vector<double> finer = geometric(2 * power);
    for (Index h = 0; Index(slopes.size()) < heads; ++h)
      slopes.push_back(finer[std::size_t(2 * h)]);
    return slopes;
  }

  /// ALiBi with the paper's slopes for `heads` heads.
  [[nodiscard]] static Alibi standard(Index heads,
                                      mask::Alignment alignment = mask::Alignment::bottom_right) {
    return Alibi(standard_slopes(heads), alignment);
  }

  [[nodiscard]] const std::vector<double>& slopes() const { return slopes_; }
  /// The slopes are the trainable parameters (`mask::DifferentiableScoreBias`), in their order.
  [[nodiscard]] Index bias_parameter_count() const { return Index(slopes_.size()); }

  struct Bound {
    double slope;
    Index offset;
    /// Which of the slopes this sequence and head reads.
    Index slope_index;

    [[nodiscard]] mask::Coverage coverage(mask::Range, mask::Range) const {
      return mask::Coverage::full;
    }
    [[nodiscard]] bool visible(Index, Index) const { return true; }
    [[nodiscard]] double bias(Index i, Index j) const {
      return -slope * double(std::abs(i + offset - j));
    }
    /// \f$\partial b(i, j)/\partial m = -|c_i - j|\f$ for the slope m: adds
    /// \f$-\sum_{rc} G_{rc}\,|c_{i_0 + r} - (j_0 + c)|\f$.
    template <class Tile>
    void add_bias_gradient(Index first_query, Index first_key, const Tile& gradient,
                           Eigen::VectorXd& sums) const {
      double sum = 0;
      for (Index c = 0; c < gradient.cols(); ++c)
        for (Index r = 0; r < gradient.rows(); ++r)
          sum +=
              double(gradient(r, c)) * double(std::abs(first_query + r + offset - first_key - c));
      sums(slope_index) -= sum;
    }
  };

  [[nodiscard]] Bound bind(const mask::Shape& shape) const {
    const auto count = Index(slopes_.size());
    require(count == shape.heads || count == shape.sequences * shape.heads, "bias::Alibi has ",
            count, " slope(s) but the attention has ", shape.heads, " head(s) and ",
            shape.sequences, " sequence(s): give ", shape.heads, " or ",
            shape.sequences * shape.heads);
    const Index index =
        count == shape.heads ? shape.head : shape.sequence * shape.heads + shape.head;
    return {slopes_[std::size_t(index)], mask::alignment_offset(alignment_, shape), index};
  }

 private:
  std::vector<double> slopes_;
  mask::Alignment alignment_;
};

}  // namespace kernattn::bias
