#pragma once
/// \file
/// A magnitude of the features alone, for keys that also carry positions (`kernels::Product`).

#include <utility>

#include "kernattn/core/errors.hpp"
#include "kernattn/magnitude/magnitude.hpp"

namespace kernattn::magnitude {

/// \f$\mu([f \mid t]) = \mu_F(f)\f$: the magnitude `Inner` of the leading columns f of a key
/// whose last \f$d_t\f$ columns are positions t, which never weigh a key (docs/math.md, section 4:
/// positions enter only through the position kernel). `Inner` sees a key of the feature dimension
/// d, so its defaults (the \f$\gamma = 1/(2\sqrt d)\f$ of `Lp`) are those of the features.
template <Magnitude Inner>
class FeaturePart {
 public:
  static constexpr bool is_unit = Inner::is_unit;

  FeaturePart() = default;
  /// `inner` on all but the last \f$d_t \ge 1\f$ columns.
  FeaturePart(Inner inner, Index position_dimension)
      : inner_(std::move(inner)), position_dimension_(position_dimension) {
    require(position_dimension >= 1, "FeaturePart: the position dimension must be >= 1, got ",
            position_dimension);
  }

  [[nodiscard]] const Inner& inner() const { return inner_; }
  [[nodiscard]] Index position_dimension() const { return position_dimension_; }

  /// \f$\log\mu_F(f)\f$ for the key \f$[f \mid t]\f$.
  template <class Row>
  [[nodiscard]] double log_magnitude(const Row& k) const {
    require(k.size() > position_dimension_, "FeaturePart: a key has ", k.size(),
            " columns but the last ", position_dimension_,
            " are positions: at least one feature column is needed");
    return inner_.log_magnitude(k.head(k.size() - position_dimension_));
  }

  /// \f$[\nabla\log\mu_F(f) \mid 0]\f$: positions never weigh a key.
  template <class Row>
  [[nodiscard]] Eigen::RowVectorXd log_magnitude_gradient(const Row& k) const {
    Eigen::RowVectorXd gradient = Eigen::RowVectorXd::Zero(k.size());
    if constexpr (!Inner::is_unit)
      gradient.head(k.size() - position_dimension_) =
          inner_.log_magnitude_gradient(k.head(k.size() - position_dimension_));
    return gradient;
  }

 private:
  Inner inner_{};
  Index position_dimension_ = 1;
};

}  // namespace kernattn::magnitude
