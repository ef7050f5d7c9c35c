#pragma once
/// \file
/// `LinearAttention<FeatureMap, Magnitude, Mask>`: kernel-smoother attention in time linear in
/// the sequence length, through a feature map (docs/math.md, section 5).

#include <algorithm>
#include <utility>
#include <vector>

#include "kernattn/core/threading.hpp"
#include "kernattn/engine/backward_front_end.hpp"
#include "kernattn/engine/front_end.hpp"
#include "kernattn/engine/linear_backward.hpp"
#include "kernattn/engine/linear_engine.hpp"
#include "kernattn/engine/merge_partial.hpp"
#include "kernattn/engine/options.hpp"
#include "kernattn/engine/statistics_out.hpp"
#include "kernattn/features/feature_map.hpp"
#include "kernattn/magnitude/magnitude.hpp"
#include "kernattn/magnitude/none.hpp"
#include "kernattn/mask/causal.hpp"
#include "kernattn/mask/intersection.hpp"
#include "kernattn/mask/key_padding.hpp"
#include "kernattn/mask/none.hpp"
#include "kernattn/mask/pooled.hpp"

namespace kernattn {

namespace detail {

/// Which set filters the linear engine evaluates, and whether they are causal. A filter that
/// depends on the query in any other way (a window, a boolean mask) has no prefix-sum form.
/// A causal filter also gives `visible_count(mask, nq, nk)`: a function of query i, the number
/// \f$n_i\f$ of leading keys it may see (padding aside), non-decreasing in i.
template <class M>
struct LinearMaskTraits {
  static constexpr bool supported = false;
  static constexpr bool causal = false;
};

/// Filters that do not depend on the query.
struct QueryIndependentFilter {
  static constexpr bool supported = true;
  static constexpr bool causal = false;
};

/// A causal filter of either alignment, alone or with padding: \f$n_i = i + o + 1\f$, clamped to
/// \f$[0, N_k]\f$, with \f$o\f$ = `mask::alignment_offset` (\f$N_k - N_q\f$ bottom-right, 0
/// top-left).
template <mask::Alignment alignment>
struct CausalFilter {
  static constexpr bool supported = true;
  static constexpr bool causal = true;

  template <class M>
  [[nodiscard]] static auto visible_count(const M&, Index nq, Index nk) {
    return [shift = mask::alignment_offset(alignment, mask::Shape{nq, nk}) + 1, nk](Index i) {
      return std::clamp<Index>(i + shift, 0, nk);
    };
  }
};

template <>
struct LinearMaskTraits<mask::None> : QueryIndependentFilter {};
template <>
struct LinearMaskTraits<mask::KeyPadding> : QueryIndependentFilter {};
template <>
struct LinearMaskTraits<mask::Causal> : CausalFilter<mask::Alignment::bottom_right> {};
template <>
struct LinearMaskTraits<mask::Intersection<mask::Causal, mask::KeyPadding>>
    : CausalFilter<mask::Alignment::bottom_right> {};
template <>
struct LinearMaskTraits<mask::Intersection<mask::KeyPadding, mask::Causal>>
    : CausalFilter<mask::Alignment::bottom_right> {};
template <>
struct LinearMaskTraits<mask::CausalTopLeft> : CausalFilter<mask::Alignment::top_left> {};
template <>
struct LinearMaskTraits<mask::Intersection<mask::CausalTopLeft, mask::KeyPadding>>
    : CausalFilter<mask::Alignment::top_left> {};
template <>
struct LinearMaskTraits<mask::Intersection<mask::KeyPadding, mask::CausalTopLeft>>
    : CausalFilter<mask::Alignment::top_left> {};

/// The linear engine evaluates every pooled filter it evaluates unpooled: pooled padding is still
/// padding, and a pooled causal filter keeps its prefix form. Query i sees \f$t_i\f$ leading
/// tokens, so the \f$\lfloor t_i / r\rfloor\f$ windows that end inside them, and all
/// \f$\lceil N/r\rceil\f$ windows (the ragged one too) once \f$t_i = N\f$.
template <class Inner>
requires LinearMaskTraits<Inner>::supported struct LinearMaskTraits<mask::Pooled<Inner>>
    : LinearMaskTraits<Inner> {
  [[nodiscard]] static auto visible_count(const mask::Pooled<Inner>& pooled, Index nq,
                                          Index windows) requires LinearMaskTraits<Inner>::causal {
    return [tokens_seen = LinearMaskTraits<Inner>::visible_count(pooled.inner, nq, pooled.tokens),
            factor = pooled.factor, tokens = pooled.tokens, windows](Index i) {
      const Index seen = tokens_seen(i);
      return seen == tokens ? windows : seen / factor;
    };
  }
};

}  // namespace detail

namespace mask {
/// The set filters `LinearAttention` accepts: `None`, `Causal` and `CausalTopLeft`,
/// `KeyPadding`, either causal filter `&& KeyPadding` (either order), and `Pooled` ones of these
/// (`ScaledHead`).
template <class M>
concept LinearMask = Mask<M> && detail::LinearMaskTraits<M>::supported;
}  // namespace mask

/// Linear-time attention with feature map `MapT`, magnitude `MagnitudeT` and set filter `MaskT`:
/// \f$out_i = \varphi(q_i)^T S_i / \varphi(q_i)^T z_i\f$ with \f$S_i = \sum_{j\in M(i)}
/// \psi(k_j) v_j^T\f$, \f$z_i = \sum_{j\in M(i)} \psi(k_j)\f$, \f$\psi(k) = \varphi(k)\mu(k)\f$:
/// the same weights \f$w_{ij} = \varphi(q_i)\cdot\varphi(k_j)\,\mu(k_j)\f$ as
/// `Attention<kernels::RandomFeature<MapT>, MagnitudeT, MaskT>`, in \f$O(N M d)\f$ time and
/// \f$O(M d_v)\f$ state instead of \f$O(N^2 M)\f$.
///
/// - Padding removes keys from the numerator and the denominator; a non-finite value of a
///   padded key changes nothing.
/// - Non-finite data reach exactly the outputs that see them, as in `Attention`: a NaN or an
///   infinity in a visible key makes the whole row of every query that sees the key NaN (under
///   `Causal`, the rows from that key on), one in a query its own row unless it sees no key, and
///   a NaN in a visible value the matching column of the rows that see it.
/// - Causal (`mask::Causal`, aligned bottom-right): prefix state carried across chunks of
///   `LinearOptions::causal_chunk` queries, the diagonal blocks evaluated directly.
/// - The magnitude is folded into the key features in the log domain (see linear_engine.hpp), so
///   \f$\mu\f$ far beyond the float range is exact.
/// - Denominators: non-negative maps (`Positive`) need no guard; a query whose weights are all
///   zero (it sees no key, or they underflowed) outputs zeros. Weights that fall into the
///   subnormal range (a query whose features barely meet every key's) keep little relative
///   precision: the output then stays finite but is no longer accurate. Signed maps (`Fourier`,
///   `Yaglom`) raise a denominator below \f$\tau Z_i\f$ to it (`LinearOptions::denominator_floor`),
///   where \f$Z_i\f$ is the denominator with every kernel estimate replaced by 1; a query that sees
///   no key outputs zeros.
///
/// Shapes and layouts are those of `Attention` (`BatchLayout` for batches and heads; every head
/// uses the same feature map). Parallel over sequence x head (and query tiles when not causal);
/// results are bit-identical for every thread count.
template <features::FeatureMap MapT, magnitude::Magnitude MagnitudeT = magnitude::None,
          mask::LinearMask MaskT = mask::None>
class LinearAttention : public detail::AttentionCalls<LinearAttention<MapT, MagnitudeT, MaskT>>,
                        public detail::GradientCalls<LinearAttention<MapT, MagnitudeT, MaskT>> {
 public:
  using Scalar = typename MapT::Scalar;
  using FeatureMap = MapT;
  using Magnitude = MagnitudeT;
  using Mask = MaskT;
  /// What `compute(Q, K, V, out, statistics, layout)` writes per query row and head
  /// (docs/gradients.md): the signed denominator \f$\sum_{j\in M(i)} \tilde\varphi(q_i)\cdot
  /// \varphi(k_j)\,\mu(k_j)\f$, that of `Attention<kernels::RandomFeature<Map>, ...>` on the same
  /// weights (the query's own log-scale \f$s(q_i)\f$ of a `Positive` map left out, as it cancels):
  /// before the guard of a signed map, 0 for a row that sees no key, NaN for one that sees
  /// non-finite data. A denominator beyond the largest T throws `InvalidArgument`.
  static constexpr RowStatistic row_statistic = RowStatistic::denominator;

  explicit LinearAttention(FeatureMap map, Magnitude magnitude = {}, Mask mask = {},
                           LinearOptions options = {})
      : map_(std::move(map)),
        magnitude_(std::move(magnitude)),
        mask_(std::move(mask)),
        options_(options) {
    options_.validate();
  }

  [[nodiscard]] const FeatureMap& feature_map() const { return map_; }
  [[nodiscard]] const Magnitude& magnitude() const { return magnitude_; }
  [[nodiscard]] const Mask& mask() const { return mask_; }
  [[nodiscard]] const LinearOptions& options() const { return options_; }

  using detail::AttentionCalls<LinearAttention>::compute;

  /// The backward pass (docs/gradients.md, "Linear attention"): given the inputs of a forward
  /// call, its output `out` and \f$dOut = \partial\ell/\partial out\f$ of a scalar loss
  /// \f$\ell\f$, writes \f$\partial\ell/\partial Q\f$, \f$\partial\ell/\partial K\f$ and
  /// \f$\partial\ell/\partial V\f$ into dQ, dK and dV (through temporaries where they may
  /// overlap an argument). The state is recomputed, so no row statistics are needed: time
  /// \f$O(N M d)\f$, memory the state (D x d_v) plus tiles, and under a causal filter one state
  /// per chunk of `LinearOptions::causal_chunk` queries. A row whose output the guard makes zero
  /// has zero gradient; a signed map's floored denominator \f$\tau Z_i\f$ is differentiated as
  /// such. Q, out, dOut and the keys and values that are not padding must be finite
  /// (`InvalidArgument` otherwise). Parallel over sequence x head; bit-identical for every
  /// thread count.
  template <class DQ, class DK, class DV, class DO, class DG, detail::EigenDense GQ,
            detail::EigenDense GK, detail::EigenDense GV>
  void backward(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
                const Eigen::MatrixBase<DG>& dOut, GQ&& dQ, GK&& dK, GV&& dV,
                BatchLayout layout = {}) const {
    static_assert(features::DifferentiableFeatureMap<FeatureMap>,
                  "LinearAttention::backward: the feature map has no feature_gradient "
                  "(features::DifferentiableFeatureMap)");
    static_assert(magnitude::DifferentiableMagnitude<Magnitude>,
                  "LinearAttention::backward: the magnitude has no log_magnitude_gradient");
    backward_of_views(Q, K, V, out, dOut, dQ, dK, dV, layout, nullptr);
  }

  /// `backward`, and also \f$\partial\ell/\partial\Omega\f$ of the feature map's frequencies
  /// (docs/gradients.md, "Feature maps") into `frequency_gradient`, resized to the shape of
  /// `feature_map().frequencies()`: every head uses the same map, so the shares of the sequences
  /// and heads are summed, in order (bit-identical for every thread count). The keys that padding
  /// hides, which may hold anything, are left out.
  template <class DQ, class DK, class DV, class DO, class DG, detail::EigenDense GQ,
            detail::EigenDense GK, detail::EigenDense GV>
  void backward(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
                const Eigen::MatrixBase<DG>& dOut, GQ&& dQ, GK&& dK, GV&& dV,
                Matrix<Scalar>& frequency_gradient,
                BatchLayout layout = {}) const requires features::FrequencyFeatureMap<FeatureMap> {
    static_assert(magnitude::DifferentiableMagnitude<Magnitude>,
                  "LinearAttention::backward: the magnitude has no log_magnitude_gradient");
    Matrix<Scalar> gradient;
    backward_of_views(Q, K, V, out, dOut, dQ, dK, dV, layout, &gradient);
    frequency_gradient = std::move(gradient);
  }

  /// The same feature map, magnitude and options with another set filter.
  template <mask::LinearMask NewMask>
  [[nodiscard]] LinearAttention<FeatureMap, Magnitude, NewMask> with_mask(NewMask mask) const {
    return LinearAttention<FeatureMap, Magnitude, NewMask>(map_, magnitude_, std::move(mask),
                                                           options_);
  }

 private:
  friend class detail::AttentionCalls<LinearAttention>;

  /// The feature map fixes the head dimension.
  template <class DQ>
  void check_head_dimension(Index d, const DQ& Q, BatchLayout layout) const {
    require(d == map_.input_dimension(), "LinearAttention: the head dimension is ", d, " (Q is ",
            detail::shape_of(Q), " for ", layout.heads,
            " head(s)) but the feature map takes d = ", map_.input_dimension());
  }

  template <class Queries, class Keys, class Values, class Out>
  void run(const Queries& Q, const Keys& K, const Values& V, Out& out, BatchLayout layout,
           detail::StatisticsOut<Scalar> statistics = {}) const {
    const Index B = layout.sequences;
    const Index H = layout.heads;
    const Index nq = Q.rows() / B;
    const Index nk = K.rows() / B;
    const Index d = Q.cols() / H;
    const Index dv = V.cols() / H;
    const int threads = resolve_thread_count(options_.threads);

    if (detail::finish_empty_call(mask_, nq, nk, B, out)) return;
    const auto bound_masks = detail::bind_masks(mask_, nq, nk, B);
    // Padding does not depend on the query, and the last query sees every key that is not
    // padding under each supported filter (causal masks align it with the last key).
    const auto key_valid_of = [&](Index b) {
      return [&bound = bound_masks[std::size_t(b)], nq](Index j) {
        return nq == 0 || bound.visible(nq - 1, j);
      };
    };

    const auto queries_of = [&](Index b, Index h) { return Q.block(b * nq, h * d, nq, d); };
    const auto keys_of = [&](Index b, Index h) { return K.block(b * nk, h * d, nk, d); };
    const auto values_of = [&](Index b, Index h) { return V.block(b * nk, h * dv, nk, dv); };
    const auto out_of = [&](Index b, Index h) { return out.block(b * nq, h * dv, nq, dv); };

    if constexpr (detail::LinearMaskTraits<Mask>::causal) {
      const auto visible_count = detail::LinearMaskTraits<Mask>::visible_count(mask_, nq, nk);
      parallel_for(B * H, threads, [&](Index item) {
        const Index b = item / H;
        const Index h = item % H;
        detail::with_statistics_rows(statistics, b, h, 0, nq, [&](auto&& statistics_rows) {
          detail::attend_causal(map_, magnitude_, queries_of(b, h), keys_of(b, h), values_of(b, h),
                                visible_count, key_valid_of(b), options_, out_of(b, h),
                                statistics_rows);
        });
      });
    } else {
      std::vector<detail::LinearState<Scalar>> states(
          std::size_t(B * H), detail::LinearState<Scalar>(map_.feature_dimension(), dv));
      parallel_for(B * H, threads, [&](Index item) {
        const Index b = item / H;
        const Index h = item % H;
        detail::consume_keys(map_, magnitude_, keys_of(b, h), values_of(b, h), 0, nk,
                             key_valid_of(b), options_.key_tile,
                             detail::LinearScratch<Scalar>::of_this_thread(),
                             states[std::size_t(item)]);
      });
      const Index tile = options_.query_tile;
      const Index tiles = nq == 0 ? 0 : 1 + (nq - 1) / tile;
      parallel_for(B * H * tiles, threads, [&](Index item) {
        const Index t = item % tiles;
        const Index b = item / tiles / H;
        const Index h = item / tiles % H;
        const Index first = t * tile;
        const Index rows = std::min(tile, nq - first);
        detail::with_statistics_rows(statistics, b, h, first, rows, [&](auto&& statistics_rows) {
          detail::read_state(map_, queries_of(b, h).middleRows(first, rows), first,
                             states[std::size_t(b * H + h)], options_.denominator_floor,
                             detail::LinearScratch<Scalar>::of_this_thread(),
                             out_of(b, h).middleRows(first, rows), statistics_rows);
        });
      });
    }
    for (Index b = 0; b < B; ++b)
      for (Index h = 0; h < H; ++h)
        detail::require_finite_output(queries_of(b, h), keys_of(b, h), values_of(b, h),
                                      out_of(b, h), b, h);
  }

  /// The checks of both `backward` calls, then `run_backward` on read-only views of the
  /// arguments, written into dQ, dK and dV through `write_gradients` (and the frequencies'
  /// gradient into `frequency_gradient` unless it is null).
  template <class DQ, class DK, class DV, class DO, class DG, class GQ, class GK, class GV>
  void backward_of_views(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                         const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
                         const Eigen::MatrixBase<DG>& dOut, GQ& dQ, GK& dK, GV& dV,
                         BatchLayout layout, Matrix<Scalar>* frequency_gradient) const {
    static_assert(detail::all_of_scalar<Scalar, DQ, DK, DV, DO, DG, GQ, GK, GV>,
                  "every argument must have the attention's scalar type");
    detail::validate_backward_shapes(Q, K, V, out, dOut, dQ, dK, dV, layout);
    check_head_dimension(Q.cols() / layout.heads, Q, layout);
    const detail::InputView<DQ> queries(Q);
    const detail::InputView<DK> keys(K);
    const detail::InputView<DV> values(V);
    const detail::InputView<DO> output(out);
    const detail::InputView<DG> output_gradient(dOut);
    detail::write_gradients<Scalar>(
        dQ, dK, dV,
        [&](auto& query_gradient, auto& key_gradient, auto& value_gradient) {
          run_backward(queries, keys, values, output, output_gradient, query_gradient, key_gradient,
                       value_gradient, layout, frequency_gradient);
        },
        queries, keys, values, output, output_gradient);
  }

  template <class Queries, class Keys, class Values, class Out, class OutGradient, class GQ,
            class GK, class GV>
  void run_backward(const Queries& Q, const Keys& K, const Values& V, const Out& out,
                    const OutGradient& dOut, GQ& dQ, GK& dK, GV& dV, BatchLayout layout,
                    Matrix<Scalar>* frequency_gradient = nullptr) const {
    const Index B = layout.sequences;
    const Index H = layout.heads;
    const Index nq = Q.rows() / B;
    const Index nk = K.rows() / B;
    const Index d = Q.cols() / H;
    const Index dv = V.cols() / H;
    if constexpr (features::FrequencyFeatureMap<FeatureMap>)
      if (frequency_gradient != nullptr) frequency_gradient->setZero(map_.frequencies().rows(), d);
    if (nq == 0 || nk == 0 || dv == 0) {  // the loss cannot depend on Q, K or V
      static_cast<void>(detail::bind_masks(mask_, nq, nk, B));
      dQ.setZero();
      dK.setZero();
      dV.setZero();
      return;
    }
    const auto bound_masks = detail::bind_masks(mask_, nq, nk, B);
    // Each sequence and head's share of the frequencies' gradient, summed in order below.
    std::vector<Matrix<Scalar>> frequency_shares(
        frequency_gradient == nullptr ? 0 : std::size_t(B * H));
    parallel_for(B * H, resolve_thread_count(options_.threads), [&](Index item) {
      const Index b = item / H;
      const Index h = item % H;
      const auto key_valid = [&bound = bound_masks[std::size_t(b)], nq](Index j) {
        return bound.visible(nq - 1, j);
      };
      const auto queries = Q.block(b * nq, h * d, nq, d);
      const auto keys = K.block(b * nk, h * d, nk, d);
      const auto values = V.block(b * nk, h * dv, nk, dv);
      const auto output = out.block(b * nq, h * dv, nq, dv);
      const auto output_gradient = dOut.block(b * nq, h * dv, nq, dv);
      detail::require_finite_backward_inputs(queries, keys, values, output, output_gradient,
                                             key_valid, b, h);
      auto query_gradient = dQ.block(b * nq, h * d, nq, d);
      auto key_gradient = dK.block(b * nk, h * d, nk, d);
      auto value_gradient = dV.block(b * nk, h * dv, nk, dv);
      Matrix<Scalar>* share = nullptr;
      if (frequency_gradient != nullptr) {
        share = &frequency_shares[std::size_t(item)];
        share->setZero(frequency_gradient->rows(), d);
      }
      if constexpr (detail::LinearMaskTraits<Mask>::causal)
        detail::attend_backward_causal(
            map_, magnitude_, queries, keys, values, output, output_gradient,
            detail::LinearMaskTraits<Mask>::visible_count(mask_, nq, nk), key_valid, options_,
            query_gradient, key_gradient, value_gradient, share);
      else
        detail::attend_backward_noncausal(map_, magnitude_, queries, keys, values, output,
                                          output_gradient, key_valid, options_, query_gradient,
                                          key_gradient, value_gradient, share);
    });
    for (const Matrix<Scalar>& share : frequency_shares) *frequency_gradient += share;
  }

  FeatureMap map_;
  Magnitude magnitude_;
  Mask mask_;
  LinearOptions options_{};
};

}  // namespace kernattn
