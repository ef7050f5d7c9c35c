#pragma once
/// \file
/// `Attention<Kernel, Magnitude, Mask>`: exact kernel-smoother attention
/// \f$ out_i = \sum_{j\in M(i)} w_{ij} v_j / \sum_{j\in M(i)} w_{ij}\f$ with
/// \f$w_{ij} = \kappa(q_i,k_j)\,\mu(k_j)\f$, composed at compile time.

#include <concepts>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernattn/core/aliasing.hpp"
#include "kernattn/engine/backward_front_end.hpp"
#include "kernattn/engine/exact_backward.hpp"
#include "kernattn/engine/exact_engine.hpp"
#include "kernattn/engine/front_end.hpp"
#include "kernattn/engine/merge_partial.hpp"
#include "kernattn/engine/options.hpp"
#include "kernattn/engine/parameter_gradients.hpp"
#include "kernattn/engine/score_bias.hpp"
#include "kernattn/features/feature_map.hpp"
#include "kernattn/kernels/kernel.hpp"
#include "kernattn/magnitude/magnitude.hpp"
#include "kernattn/magnitude/none.hpp"
#include "kernattn/mask/mask.hpp"
#include "kernattn/mask/none.hpp"

namespace kernattn {

namespace detail {
/// Whether every part of a composition has a default value.
template <class... Parts>
concept AllDefaultInitializable = (std::default_initializable<Parts> && ...);
}  // namespace detail

/// Exact attention with kernel `KernelT`, magnitude `MagnitudeT` and set filter `MaskT`.
///
/// Inputs are one token per row: Q is \f$N_q\times d\f$, K is \f$N_k\times d\f$, V is
/// \f$N_k\times d_v\f$ (or the batch x heads layout of `BatchLayout`), any Eigen matrices,
/// Maps, Refs or blocks of the kernel's scalar type, read in place. The scalar type is the
/// kernel's (float or double).
///
/// Shapes and empty inputs: \f$N_q = 0\f$ gives an empty output, \f$N_k = 0\f$ gives zeros (no
/// query sees a key), \f$d_v = 0\f$ gives an \f$N_q \times 0\f$ output; such a call checks the
/// mask against the first sequence only and stores nothing per sequence. \f$d = 0\f$, every
/// inconsistent shape and an impossible `BatchLayout` throw `InvalidArgument` naming the
/// argument and the shapes.
///
/// Thread safety: a const Attention may be used from many threads at once. Results are
/// bit-identical for every thread count.
template <kernels::Kernel KernelT, magnitude::Magnitude MagnitudeT = magnitude::None,
          mask::Mask MaskT = mask::None>
class Attention : public detail::AttentionCalls<Attention<KernelT, MagnitudeT, MaskT>> {
  static_assert(
      detail::accepts_mask<KernelT, MaskT>,
      "a score bias adds to log-weights: only an exponential (log-domain) form takes one");

 public:
  using Scalar = typename KernelT::Scalar;
  using Kernel = KernelT;
  using Magnitude = MagnitudeT;
  using Mask = MaskT;
  /// What `compute(Q, K, V, out, statistics, layout)` writes per query row and head
  /// (docs/gradients.md; `merge_partial_result` needs to know): the log-normaliser \f$L_i =
  /// \log\sum_{j\in M(i)} w_{ij}\f$ (\f$-\infty\f$ for a row that sees no key) for the
  /// exponential forms, the signed denominator \f$\sum_{j\in M(i)} w_{ij}\f$ for the direct
  /// forms.
  static constexpr RowStatistic row_statistic = detail::Scoring<KernelT>::exponential
                                                    ? RowStatistic::log_normaliser
                                                    : RowStatistic::denominator;

  /// The default kernel, magnitude and mask, for compositions where each has one. Constrained
  /// rather than defaulted: then `std::is_default_constructible` is simply false for a mask
  /// such as `mask::Window` (no default), which lets `std::optional` and containers of such
  /// compositions compile with every compiler.
  Attention() requires detail::AllDefaultInitializable<Kernel, Magnitude, Mask>
      : kernel_(), magnitude_(), mask_() {}
  explicit Attention(Kernel kernel, Magnitude magnitude = {}, Mask mask = {},
                     ExecutionOptions options = {})
      : kernel_(std::move(kernel)),
        magnitude_(std::move(magnitude)),
        mask_(std::move(mask)),
        options_(options) {
    options_.validate();
  }

  [[nodiscard]] const Kernel& kernel() const { return kernel_; }
  [[nodiscard]] const Magnitude& magnitude() const { return magnitude_; }
  [[nodiscard]] const Mask& mask() const { return mask_; }
  [[nodiscard]] const ExecutionOptions& options() const { return options_; }

  using detail::AttentionCalls<Attention>::compute;

  /// The backward pass (docs/gradients.md): given the inputs of a forward call, its output `out`
  /// and `statistics` (from `compute(Q, K, V, out, statistics, layout)`) and \f$dOut =
  /// \partial\ell/\partial out\f$ of a scalar loss \f$\ell\f$, writes \f$\partial\ell/\partial
  /// Q\f$, \f$\partial\ell/\partial K\f$ and \f$\partial\ell/\partial V\f$ into dQ, dK and dV
  /// (matrices, Maps, Refs or blocks of their inputs' shapes; through temporaries where they may
  /// overlap an argument). The scores are recomputed tile by tile: no \f$N_q \times N_k\f$ matrix
  /// exists, the extra memory is O(N) plus tiles, and the gradients are bit-identical for every
  /// thread count. A row that sees no key, or whose denominator is 0, has zero gradient.
  template <class DQ, class DK, class DV, class DO, class DG, detail::EigenDense GQ,
            detail::EigenDense GK, detail::EigenDense GV>
  void backward(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
                const Matrix<Scalar>& statistics, const Eigen::MatrixBase<DG>& dOut, GQ&& dQ,
                GK&& dK, GV&& dV, BatchLayout layout = {}) const {
    static_assert(kernels::DifferentiableKernel<Kernel>,
                  "Attention::backward: the kernel has no derivatives (a user-defined kernel "
                  "needs those of kernels::DifferentiableKernel; a feature-map kernel, a map "
                  "with feature_gradient)");
    static_assert(magnitude::DifferentiableMagnitude<Magnitude>,
                  "Attention::backward: the magnitude has no log_magnitude_gradient");
    run_backward(Q, K, V, out, statistics, dOut, dQ, dK, dV, layout, nullptr, [](const auto&) {});
  }

  /// The trainable parameters (docs/gradients.md, "Parameters"), when the kernel and the
  /// magnitude have them (`kernels::ParametricKernel`, `magnitude::ParametricMagnitude`): their
  /// names ("kernel.variance", "magnitude.gamma", ...), their values for head dimension d, and a
  /// copy of this attention with other values.
  [[nodiscard]] std::vector<std::string> parameter_names() const requires
      kernels::ParametricKernel<Kernel> && magnitude::ParametricMagnitude<Magnitude> {
    return detail::parameter_names_of(kernel_, magnitude_);
  }
  [[nodiscard]] Eigen::VectorXd parameters(Index d) const requires
      kernels::ParametricKernel<Kernel> && magnitude::ParametricMagnitude<Magnitude> {
    return detail::parameters_of(kernel_, magnitude_, d);
  }
  [[nodiscard]] Attention with_parameters(const Eigen::VectorXd& values) const requires
      kernels::ParametricKernel<Kernel> && magnitude::ParametricMagnitude<Magnitude> {
    const Index own = Index(kernel_.parameter_names().size());
    require(values.size() == Index(parameter_names().size()), "Attention::with_parameters takes ",
            parameter_names().size(), " value(s) (parameter_names()) but got ", values.size());
    if constexpr (Magnitude::is_unit)
      return Attention(kernel_.with_parameters(values), magnitude_, mask_, options_);
    else
      return Attention(kernel_.with_parameters(values.head(own)),
                       magnitude_.with_parameters(values.tail(values.size() - own)), mask_,
                       options_);
  }

  /// `backward`, and also \f$\partial\ell/\partial\theta\f$ of the parameters, in
  /// `parameter_names()` order, into `parameter_gradient` (resized; in double, summed over the
  /// sequences and heads in order, bit-identical for every thread count). The parameters are those
  /// of the forward call that wrote `out` and `statistics` (`parameters(d)`). It costs O(N d)
  /// more than `backward`, and for a distance kernel one more pass over each score tile.
  template <class DQ, class DK, class DV, class DO, class DG, detail::EigenDense GQ,
            detail::EigenDense GK, detail::EigenDense GV>
  void backward(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
                const Matrix<Scalar>& statistics, const Eigen::MatrixBase<DG>& dOut, GQ&& dQ,
                GK&& dK, GV&& dV, Eigen::VectorXd& parameter_gradient,
                BatchLayout layout = {}) const requires kernels::ParametricKernel<Kernel> &&
      magnitude::ParametricMagnitude<Magnitude> {
    detail::ParameterPartials<Scalar> partials;
    run_backward(Q, K, V, out, statistics, dOut, dQ, dK, dV, layout, &partials,
                 [&](const auto& call) {
                   parameter_gradient =
                       detail::exact_parameter_gradient(kernel_, magnitude_, call, partials);
                 });
  }

  /// `backward`, and also \f$\partial\ell/\partial\Omega\f$ of a feature kernel's frequencies
  /// (docs/gradients.md, "Feature maps") into `frequency_gradient`, resized to the shape of
  /// `kernel().feature_map().frequencies()`: through the scores and, for a map with log-scales,
  /// the keys' log-scales; the shares of the sequences and heads summed in order (bit-identical
  /// for every thread count). What a mask hides is left out.
  template <class DQ, class DK, class DV, class DO, class DG, detail::EigenDense GQ,
            detail::EigenDense GK, detail::EigenDense GV>
  void backward(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
                const Matrix<Scalar>& statistics, const Eigen::MatrixBase<DG>& dOut, GQ&& dQ,
                GK&& dK, GV&& dV, Matrix<Scalar>& frequency_gradient,
                BatchLayout layout = {}) const requires features::FrequencyKernel<Kernel> {
    static_assert(magnitude::DifferentiableMagnitude<Magnitude>,
                  "Attention::backward: the magnitude has no log_magnitude_gradient");
    detail::ParameterPartials<Scalar> partials;
    partials.frequencies = true;
    Matrix<Scalar> gradient;
    run_backward(Q, K, V, out, statistics, dOut, dQ, dK, dV, layout, &partials,
                 [&](const auto& call) {
                   gradient = detail::exact_frequency_gradient(kernel_, call, partials);
                 });
    frequency_gradient = std::move(gradient);
  }

  /// `backward`, and also \f$\partial\ell/\partial\theta\f$ of the score bias's parameters
  /// (docs/gradients.md, "Score biases": `bias::Alibi`'s slopes, `bias::RelativePositions`'s
  /// table in column-major order) into `bias_gradient.values`, resized to
  /// `mask().bias_parameter_count()`. Pair (i, j) contributes its score gradient
  /// \f$\partial\ell/\partial b(i, j) = P_{ij}(dO_i \cdot v_j - D_i)\f$ times
  /// \f$\partial b(i, j)/\partial\theta\f$; hidden pairs contribute nothing. In double, the
  /// shares of the sequences, heads and key stripes summed in order: bit-identical for every
  /// thread count. It costs one more pass over each tile of score gradients.
  template <class DQ, class DK, class DV, class DO, class DG, detail::EigenDense GQ,
            detail::EigenDense GK, detail::EigenDense GV>
  void backward(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
                const Matrix<Scalar>& statistics, const Eigen::MatrixBase<DG>& dOut, GQ&& dQ,
                GK&& dK, GV&& dV, ScoreBiasGradient& bias_gradient,
                BatchLayout layout = {}) const requires mask::DifferentiableScoreBias<Mask> {
    detail::ParameterPartials<Scalar> partials;
    partials.kernel_parameters = false;
    partials.score_bias_parameters = mask_.bias_parameter_count();
    Eigen::VectorXd gradient = Eigen::VectorXd::Zero(partials.score_bias_parameters);
    run_backward(Q, K, V, out, statistics, dOut, dQ, dK, dV, layout, &partials, [&](const auto&) {
      for (const Eigen::VectorXd& share : partials.score_bias_sums) gradient += share;
    });
    bias_gradient.values = std::move(gradient);
  }

  /// `backward` into new matrices.
  template <class DQ, class DK, class DV, class DO, class DG>
  [[nodiscard]] AttentionGradients<Scalar> gradients(const Eigen::MatrixBase<DQ>& Q,
                                                     const Eigen::MatrixBase<DK>& K,
                                                     const Eigen::MatrixBase<DV>& V,
                                                     const Eigen::MatrixBase<DO>& out,
                                                     const Matrix<Scalar>& statistics,
                                                     const Eigen::MatrixBase<DG>& dOut,
                                                     BatchLayout layout = {}) const {
    return detail::new_gradients<Scalar>(Q, K, V, [&](auto& dQ, auto& dK, auto& dV) {
      backward(Q, K, V, out, statistics, dOut, dQ, dK, dV, layout);
    });
  }

  /// The same kernel, magnitude and options with another set filter.
  template <mask::Mask NewMask>
  [[nodiscard]] Attention<Kernel, Magnitude, NewMask> with_mask(NewMask mask) const {
    return Attention<Kernel, Magnitude, NewMask>(kernel_, magnitude_, std::move(mask), options_);
  }

 private:
  friend class detail::AttentionCalls<Attention>;

  /// What every backward call shares: the checks, views of the inputs (an expression such as
  /// `out - target` is evaluated once), the exact backward into dQ, dK and dV (through
  /// temporaries where they may overlap an argument) collecting `partials` when not null, then
  /// `finish(call)` on the call whose gradients are written.
  template <class DQ, class DK, class DV, class DO, class DG, class GQ, class GK, class GV,
            class Finish>
  void run_backward(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                    const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
                    const Matrix<Scalar>& statistics, const Eigen::MatrixBase<DG>& dOut, GQ& dQ,
                    GK& dK, GV& dV, BatchLayout layout, detail::ParameterPartials<Scalar>* partials,
                    const Finish& finish) const {
    static_assert(detail::all_of_scalar<Scalar, DQ, DK, DV, DO, DG, GQ, GK, GV>,
                  "every argument must have the attention's scalar type");
    detail::validate_backward_shapes(Q, K, V, out, statistics, dOut, dQ, dK, dV, layout);
    const detail::InputView<DQ> queries(Q);
    const detail::InputView<DK> keys(K);
    const detail::InputView<DV> values(V);
    const detail::InputView<DO> output(out);
    const detail::InputView<DG> output_gradient(dOut);
    const auto run = [&](auto& query_gradient, auto& key_gradient, auto& value_gradient) {
      const auto call =
          detail::backward_call(queries, keys, values, output, statistics, output_gradient,
                                query_gradient, key_gradient, value_gradient, layout);
      detail::attend_exact_backward(kernel_, magnitude_, mask_, options_, call, partials);
      finish(call);
    };
    detail::write_gradients<Scalar>(dQ, dK, dV, run, queries, keys, values, output, statistics,
                                    output_gradient);
  }

  /// Any head dimension d >= 1 works.
  template <class DQ>
  void check_head_dimension(Index, const DQ&, BatchLayout) const {}

  template <class Queries, class Keys, class Values, class Out>
  void run(const Queries& Q, const Keys& K, const Values& V, Out& out, BatchLayout layout,
           detail::StatisticsOut<Scalar> statistics = {}) const {
    detail::attend_exact(kernel_, magnitude_, mask_, options_,
                         detail::CallBlocks(Q, K, V, out, layout), statistics);
  }

  Kernel kernel_;
  Magnitude magnitude_;
  Mask mask_;
  ExecutionOptions options_{};
};

}  // namespace kernattn
