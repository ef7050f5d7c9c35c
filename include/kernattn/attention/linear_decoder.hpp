#pragma once
/// \file
/// `LinearDecoder`: the recurrent form of linear attention for decoding (docs/math.md,
/// section 5): a state that takes keys and values in as they come, so that a step costs
/// \f$O(M d)\f$ whatever the number of keys before it.

#include <utility>

#include "kernattn/core/errors.hpp"
#include "kernattn/engine/front_end.hpp"
#include "kernattn/engine/linear_engine.hpp"
#include "kernattn/engine/options.hpp"
#include "kernattn/features/feature_map.hpp"
#include "kernattn/magnitude/magnitude.hpp"
#include "kernattn/magnitude/none.hpp"

namespace kernattn {

/// The state \f$S = \sum_j \psi(k_j) v_j^T\f$, \f$z = \sum_j \psi(k_j)\f$, \f$\psi(k) =
/// \varphi(k)\mu(k)\f$, of every key appended so far (held relative to the largest key log-scale,
/// as `LinearAttention` holds it), and queries answered against it: \f$out_i = \varphi(q_i)^T S /
/// \varphi(q_i)^T z\f$ with `LinearAttention`'s guard. Appending a token and answering a query
/// cost \f$O(M (d + d_v))\f$ each, independent of the number of keys: decoding with causal linear
/// attention, where step t appends key t and asks query t, gives row t of
/// `LinearAttention<Map, Magnitude, mask::Causal>` over the whole sequence, up to rounding (the
/// sums are grouped differently). A key or value that is not finite poisons the state: every
/// later answer is NaN, as in the engine.
template <features::FeatureMap Map, magnitude::Magnitude Magnitude = magnitude::None>
class LinearDecoder {
 public:
  using Scalar = typename Map::Scalar;

  /// For keys of the map's input dimension and values of `value_dimension` columns.
  LinearDecoder(Map map, Index value_dimension, Magnitude magnitude = {},
                LinearOptions options = {})
      : map_(std::move(map)),
        magnitude_(std::move(magnitude)),
        options_(options),
        state_(map_.feature_dimension(), value_dimension) {
    require(value_dimension >= 1, "LinearDecoder: value_dimension must be >= 1, got ",
            value_dimension);
    options_.validate();
  }

  /// The keys and values appended so far.
  [[nodiscard]] Index length() const { return length_; }
  [[nodiscard]] Index value_dimension() const { return state_.weighted_values.cols(); }
  [[nodiscard]] const Map& feature_map() const { return map_; }

  /// Takes in keys (rows, \f$n \times d\f$) and their values (\f$n \times d_v\f$), in order. Wrong
  /// shapes throw `InvalidArgument` and leave the state as it was.
  template <class DK, class DV>
  void append(const Eigen::MatrixBase<DK>& keys, const Eigen::MatrixBase<DV>& values) {
    require(keys.cols() == map_.input_dimension() && values.cols() == value_dimension() &&
                keys.rows() == values.rows(),
            "LinearDecoder::append: keys are ", detail::shape_of(keys), " and values ",
            detail::shape_of(values), " but the decoder takes n x ", map_.input_dimension(),
            " keys with n x ", value_dimension(), " values");
    detail::consume_keys(
        map_, magnitude_, keys.derived(), values.derived(), 0, keys.rows(),
        [](Index) { return true; }, options_.key_tile,
        detail::LinearScratch<Scalar>::of_this_thread(), state_);
    length_ += keys.rows();
  }

  /// Each query (\f$n \times d\f$) against every key appended so far: \f$n \times d_v\f$ (zeros
  /// before any key).
  template <class DQ>
  [[nodiscard]] Matrix<Scalar> attend(const Eigen::MatrixBase<DQ>& queries) const {
    require(queries.cols() == map_.input_dimension(), "LinearDecoder::attend: queries are ",
            detail::shape_of(queries), " but the decoder takes n x ", map_.input_dimension());
    const detail::InputView<DQ> query_rows(queries);
    Matrix<Scalar> out(query_rows.rows(), value_dimension());
    detail::read_state(map_, query_rows, 0, state_, options_.denominator_floor,
                       detail::LinearScratch<Scalar>::of_this_thread(), out,
                       detail::NoStatistics{});
    return out;
  }

 private:
  Map map_;
  Magnitude magnitude_;
  LinearOptions options_;
  detail::LinearState<Scalar> state_;
  Index length_ = 0;
};

}  // namespace kernattn
