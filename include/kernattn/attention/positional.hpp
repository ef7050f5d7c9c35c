#pragma once
/// \file
/// `PositionalAttention<KernelF, KernelT, Magnitude, Mask>`: attention with the product kernel
/// of features and positions of Tsai et al. (2019), docs/math.md, section 4:
/// \f$ out_i = \sum_{j\in M(i)} w_{ij} v_j / \sum_{j\in M(i)} w_{ij}\f$ with
/// \f$w_{ij} = \kappa_F(f_i,f_j)\,\kappa_T(t_i,t_j)\,\mu(f_j)\f$.

#include <type_traits>
#include <utility>

#include "kernattn/attention/attention.hpp"
#include "kernattn/core/errors.hpp"
#include "kernattn/engine/backward_front_end.hpp"
#include "kernattn/engine/exact_engine.hpp"
#include "kernattn/engine/front_end.hpp"
#include "kernattn/engine/joined_columns.hpp"
#include "kernattn/engine/options.hpp"
#include "kernattn/engine/statistics_out.hpp"
#include "kernattn/kernels/kernel.hpp"
#include "kernattn/kernels/product.hpp"
#include "kernattn/magnitude/feature_part.hpp"
#include "kernattn/magnitude/magnitude.hpp"
#include "kernattn/magnitude/none.hpp"
#include "kernattn/mask/mask.hpp"
#include "kernattn/mask/none.hpp"

namespace kernattn {

/// The gradients of a scalar loss with respect to the inputs of `PositionalAttention`.
template <Real T>
struct PositionalGradients {
  Matrix<T> dFq;
  Matrix<T> dTq;
  Matrix<T> dFk;
  Matrix<T> dTk;
  Matrix<T> dV;
};

/// Exact attention whose keys are compared by features and by positions:
/// \f$\kappa((f_q,t_q),(f_k,t_k)) = \kappa_F(f_q,f_k)\,\kappa_T(t_q,t_k)\f$ (`kernels::Product`),
/// with the magnitude \f$\mu(f_k)\f$ of the key features alone and the set filter `MaskT`. The
/// values carry no position: \f$out_i\f$ is a weighted mean of the \f$v_j\f$.
///
/// Inputs, one token per row: features Fq (\f$N_q \times H d\f$) and Fk (\f$N_k \times H d\f$),
/// positions Tq (\f$N_q \times d_t\f$) and Tk (\f$N_k \times d_t\f$), values V
/// (\f$N_k \times H d_v\f$); with a `BatchLayout` of B sequences and H heads, sequence b occupies
/// rows \f$[bN, (b+1)N)\f$ of every argument (the positions too: one row per token) and head h
/// the feature columns \f$[hd, (h+1)d)\f$ and value columns \f$[hd_v, (h+1)d_v)\f$. The
/// positions are shared by every head: a position encodes where a token is, not what a head
/// looks for. Positions can be any vectors, e.g. `sinusoidal_positions`, or raw indices as a
/// one-column matrix.
///
/// Both kernels must be dot-product or distance kernels (see `kernels::Product`); each sees its
/// own dimension (d for \f$\kappa_F\f$, \f$d_t\f$ for \f$\kappa_T\f$) for its defaults, and so does
/// the magnitude (d). A forward call is the exact streaming engine `Attention<Product<KernelF,
/// KernelT>, FeaturePart<MagnitudeT>, MaskT>` on the inputs \f$[f \mid t]\f$, which it reads in
/// place from the features and positions: it builds no copy of them. (The backward pass builds
/// them once per call, \f$(N_q + N_k)\,H\,(d + d_t)\f$ scalars beside its gradients.)
///
/// Numerics (docs/numerics.md): a distance factor keeps its accuracy however close two tokens
/// are, also for non-integer positions far from 0 (the engine recomputes the squared distances
/// that cancel); the numeric range of log-weights is checked per factor, and an error names the
/// factor's columns of \f$[f \mid t]\f$.
///
/// Shapes: every inconsistent shape throws `InvalidArgument` naming the arguments and their
/// shapes; d = 0 and \f$d_t\f$ = 0 throw too. Thread safety and bit-identity for every thread
/// count are those of `Attention`.
template <kernels::Kernel KernelF, kernels::Kernel KernelT,
          magnitude::Magnitude MagnitudeT = magnitude::None, mask::Mask MaskT = mask::None>
class PositionalAttention {
 public:
  using Scalar = typename KernelF::Scalar;
  using FeatureKernel = KernelF;
  using PositionKernel = KernelT;
  using Magnitude = MagnitudeT;
  using Mask = MaskT;
  /// The kernel on the inputs \f$[f \mid t]\f$.
  using Kernel = kernels::Product<KernelF, KernelT>;
  /// The exact attention that each call equals, on those inputs.
  using Engine = Attention<Kernel, magnitude::FeaturePart<MagnitudeT>, MaskT>;

  PositionalAttention() = default;
  explicit PositionalAttention(KernelF feature_kernel, KernelT position_kernel = {},
                               MagnitudeT magnitude = {}, MaskT mask = {},
                               ExecutionOptions options = {})
      : feature_kernel_(std::move(feature_kernel)),
        position_kernel_(std::move(position_kernel)),
        magnitude_(std::move(magnitude)),
        mask_(std::move(mask)),
        options_(options) {
    options_.validate();
  }

  [[nodiscard]] const KernelF& feature_kernel() const { return feature_kernel_; }
  [[nodiscard]] const KernelT& position_kernel() const { return position_kernel_; }
  [[nodiscard]] const MagnitudeT& magnitude() const { return magnitude_; }
  [[nodiscard]] const MaskT& mask() const { return mask_; }
  [[nodiscard]] const ExecutionOptions& options() const { return options_; }

  /// The attention output, \f$N_q \times d_v\f$ (or \f$N_q \times H d_v\f$ for H heads).
  template <class DFq, class DTq, class DFk, class DTk, class DV>
  [[nodiscard]] Matrix<Scalar> operator()(const Eigen::MatrixBase<DFq>& Fq,
                                          const Eigen::MatrixBase<DTq>& Tq,
                                          const Eigen::MatrixBase<DFk>& Fk,
                                          const Eigen::MatrixBase<DTk>& Tk,
                                          const Eigen::MatrixBase<DV>& V,
                                          BatchLayout layout = {}) const {
    Matrix<Scalar> out(Fq.rows(), V.cols());
    compute(Fq, Tq, Fk, Tk, V, out, layout);
    return out;
  }

  /// Writes the attention output into `out` (a matrix, Map, Ref or block of the right shape),
  /// which may overlap any input.
  template <class DFq, class DTq, class DFk, class DTk, class DV, detail::EigenDense Out>
  void compute(const Eigen::MatrixBase<DFq>& Fq, const Eigen::MatrixBase<DTq>& Tq,
               const Eigen::MatrixBase<DFk>& Fk, const Eigen::MatrixBase<DTk>& Tk,
               const Eigen::MatrixBase<DV>& V, Out&& out, BatchLayout layout = {}) const {
    static_assert(detail::all_of_scalar<Scalar, DFq, DTq, DFk, DTk, DV, Out>,
                  "Fq, Tq, Fk, Tk, V and out must have the attention's scalar type");
    validate_shapes(Fq, Tq, Fk, Tk, V, out, layout);
    attend(Fq, Tq, Fk, Tk, V, out, layout, detail::StatisticsOut<Scalar>{});
  }

  /// `compute` that also writes the row statistics (docs/gradients.md), a \f$(B N_q) \times H\f$
  /// matrix, for `backward`.
  template <class DFq, class DTq, class DFk, class DTk, class DV, detail::EigenDense Out>
  void compute(const Eigen::MatrixBase<DFq>& Fq, const Eigen::MatrixBase<DTq>& Tq,
               const Eigen::MatrixBase<DFk>& Fk, const Eigen::MatrixBase<DTk>& Tk,
               const Eigen::MatrixBase<DV>& V, Out&& out, Matrix<Scalar>& statistics,
               BatchLayout layout = {}) const {
    static_assert(detail::all_of_scalar<Scalar, DFq, DTq, DFk, DTk, DV, Out>,
                  "Fq, Tq, Fk, Tk, V and out must have the attention's scalar type");
    validate_shapes(Fq, Tq, Fk, Tk, V, out, layout);
    detail::compute_with_statistics(
        V, out, statistics, detail::may_share_memory_with_any(statistics, Fq, Tq, Fk, Tk, V, out),
        Fq.rows(), Fk.rows(), layout.heads,
        [&](const auto& values, auto& destination, Matrix<Scalar>& target) {
          attend(Fq, Tq, Fk, Tk, values, destination, layout,
                 detail::StatisticsOut<Scalar>{&target, Fq.rows() / layout.sequences});
        });
  }

  /// The backward pass (docs/gradients.md, "Positional attention"): given the inputs of a
  /// forward call, its output and statistics and \f$dOut\f$, writes the gradients with respect
  /// to the features (dFq, dFk), the positions (dTq, dTk) and the values (dV), each of its
  /// input's shape. It is `Engine::backward` on the inputs \f$[f \mid t]\f$; the positions are
  /// shared by the heads, so their gradients are the sums over the heads (in head order).
  template <class DFq, class DTq, class DFk, class DTk, class DV, class DO, class DG,
            detail::EigenDense GFq, detail::EigenDense GTq, detail::EigenDense GFk,
            detail::EigenDense GTk, detail::EigenDense GV>
  void backward(const Eigen::MatrixBase<DFq>& Fq, const Eigen::MatrixBase<DTq>& Tq,
                const Eigen::MatrixBase<DFk>& Fk, const Eigen::MatrixBase<DTk>& Tk,
                const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
                const Matrix<Scalar>& statistics, const Eigen::MatrixBase<DG>& dOut, GFq&& dFq,
                GTq&& dTq, GFk&& dFk, GTk&& dTk, GV&& dV, BatchLayout layout = {}) const {
    static_assert(
        detail::all_of_scalar<Scalar, DFq, DTq, DFk, DTk, DV, DO, DG, GFq, GTq, GFk, GTk, GV>,
        "every argument must have the attention's scalar type");
    validate_shapes(Fq, Tq, Fk, Tk, V, out, layout);
    detail::require_shape(dFq, "dFq", Fq.rows(), Fq.cols(), "the shape of Fq");
    detail::require_shape(dTq, "dTq", Tq.rows(), Tq.cols(), "the shape of Tq");
    detail::require_shape(dFk, "dFk", Fk.rows(), Fk.cols(), "the shape of Fk");
    detail::require_shape(dTk, "dTk", Tk.rows(), Tk.cols(), "the shape of Tk");
    detail::require_shape(dV, "dV", V.rows(), V.cols(), "the shape of V");
    const Index heads = layout.heads;
    const Index dt = Tq.cols();
    const AttentionGradients<Scalar> joint =
        engine(dt).gradients(with_positions(Fq, Tq, heads), with_positions(Fk, Tk, heads), V, out,
                             statistics, dOut, layout);
    // Written last, so that a gradient may overlap any input.
    split_positions(joint.dQ, heads, dt, dFq, dTq);
    split_positions(joint.dK, heads, dt, dFk, dTk);
    dV = joint.dV;
  }

  /// `backward` into new matrices.
  template <class DFq, class DTq, class DFk, class DTk, class DV, class DO, class DG>
  [[nodiscard]] PositionalGradients<Scalar> gradients(
      const Eigen::MatrixBase<DFq>& Fq, const Eigen::MatrixBase<DTq>& Tq,
      const Eigen::MatrixBase<DFk>& Fk, const Eigen::MatrixBase<DTk>& Tk,
      const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
      const Matrix<Scalar>& statistics, const Eigen::MatrixBase<DG>& dOut,
      BatchLayout layout = {}) const {
    PositionalGradients<Scalar> result{
        Matrix<Scalar>(Fq.rows(), Fq.cols()), Matrix<Scalar>(Tq.rows(), Tq.cols()),
        Matrix<Scalar>(Fk.rows(), Fk.cols()), Matrix<Scalar>(Tk.rows(), Tk.cols()),
        Matrix<Scalar>(V.rows(), V.cols())};
    backward(Fq, Tq, Fk, Tk, V, out, statistics, dOut, result.dFq, result.dTq, result.dFk,
             result.dTk, result.dV, layout);
    return result;
  }

  /// Sets the number of threads (0 = the OpenMP default); returns *this.
  PositionalAttention& set_threads(int threads) {
    detail::set_thread_count(options_, threads);
    return *this;
  }

 private:
  /// The shape checks, with messages in the caller's names.
  template <class DFq, class DTq, class DFk, class DTk, class DV, class Out>
  static void validate_shapes(const Eigen::MatrixBase<DFq>& Fq, const Eigen::MatrixBase<DTq>& Tq,
                              const Eigen::MatrixBase<DFk>& Fk, const Eigen::MatrixBase<DTk>& Tk,
                              const Eigen::MatrixBase<DV>& V, const Out& out, BatchLayout layout) {
    using detail::shape_of;
    detail::validate_attention_shapes(Fq, Fk, V, out, layout, {"Fq", "Fk", "V"});
    require(Tq.cols() >= 1, "Tq is ", shape_of(Tq), ": the position dimension must be at least 1");
    require(Tk.cols() == Tq.cols(), "Tk has ", Tk.cols(), " columns but Tq has ", Tq.cols(),
            " (queries and keys share the position dimension): Tq is ", shape_of(Tq), ", Tk is ",
            shape_of(Tk));
    require(Tq.rows() == Fq.rows(), "Tq has ", Tq.rows(), " rows but Fq has ", Fq.rows(),
            " (one position per query): Fq is ", shape_of(Fq), ", Tq is ", shape_of(Tq));
    require(Tk.rows() == Fk.rows(), "Tk has ", Tk.rows(), " rows but Fk has ", Fk.rows(),
            " (one position per key): Fk is ", shape_of(Fk), ", Tk is ", shape_of(Tk));
  }

  /// The exact engine on the inputs \f$[f \mid t]\f$, read in place from the features and
  /// positions (`detail::HeadsWithPositions`), into `out` (through a temporary when it may overlap
  /// an input), with the row statistics when `statistics` names a matrix.
  template <class DFq, class DTq, class DFk, class DTk, class DV, class Out>
  void attend(const Eigen::MatrixBase<DFq>& Fq, const Eigen::MatrixBase<DTq>& Tq,
              const Eigen::MatrixBase<DFk>& Fk, const Eigen::MatrixBase<DTk>& Tk,
              const Eigen::MatrixBase<DV>& V, Out& out, BatchLayout layout,
              detail::StatisticsOut<Scalar> statistics) const {
    const detail::InputView<DFq> feature_queries(Fq);
    const detail::InputView<DTq> position_queries(Tq);
    const detail::InputView<DFk> feature_keys(Fk);
    const detail::InputView<DTk> position_keys(Tk);
    const detail::InputView<DV> values(V);
    const detail::HeadsWithPositions queries(feature_queries, position_queries, layout.heads);
    const detail::HeadsWithPositions keys(feature_keys, position_keys, layout.heads);
    const Index dt = Tq.cols();
    const bool overlaps = detail::may_share_memory_with_any(out, feature_queries, position_queries,
                                                            feature_keys, position_keys, values);
    detail::with_destination(out, overlaps, [&](auto& destination) {
      detail::attend_exact(Kernel(feature_kernel_, position_kernel_, dt),
                           magnitude::FeaturePart<MagnitudeT>(magnitude_, dt), mask_, options_,
                           detail::CallBlocks(queries, keys, values, destination, layout),
                           statistics);
    });
  }

  /// The inputs \f$[f \mid t]\f$ of every head, for the backward pass: head h occupies columns
  /// \f$[h(d + d_t), (h+1)(d + d_t))\f$, its features first.
  template <class DF, class DT>
  [[nodiscard]] static Matrix<Scalar> with_positions(const Eigen::MatrixBase<DF>& F,
                                                     const Eigen::MatrixBase<DT>& T, Index heads) {
    const Index d = F.cols() / heads;
    const Index dt = T.cols();
    Matrix<Scalar> inputs(F.rows(), heads * (d + dt));
    for (Index h = 0; h < heads; ++h) {
      inputs.middleCols(h * (d + dt), d) = F.middleCols(h * d, d);
      inputs.middleCols(h * (d + dt) + d, dt) = T;
    }
    return inputs;
  }

  /// The exact attention on the inputs \f$[f \mid t]\f$ with `dt` position columns.
  [[nodiscard]] Engine engine(Index dt) const {
    return Engine(Kernel(feature_kernel_, position_kernel_, dt),
                  magnitude::FeaturePart<MagnitudeT>(magnitude_, dt), mask_, options_);
  }

  /// The features' columns of a gradient of the inputs \f$[f \mid t]\f$ into `features`, and
  /// the sum over the heads of its positions' columns into `positions`.
  template <class Features, class Positions>
  static void split_positions(const Matrix<Scalar>& joint, Index heads, Index dt,
                              Features& features, Positions& positions) {
    const Index d = joint.cols() / heads - dt;
    positions.setZero();
    for (Index h = 0; h < heads; ++h) {
      features.middleCols(h * d, d) = joint.middleCols(h * (d + dt), d);
      positions += joint.middleCols(h * (d + dt) + d, dt);
    }
  }

  KernelF feature_kernel_{};
  KernelT position_kernel_{};
  MagnitudeT magnitude_{};
  MaskT mask_{};
  ExecutionOptions options_{};
};

}  // namespace kernattn
