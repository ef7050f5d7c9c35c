#pragma once
/// \file
/// `Attention<Kernel, Magnitude, Mask>`: exact kernel-smoother attention
/// \f$ out_i = \sum_{j\in M(i)} w_{ij} v_j / \sum_{j\in M(i)} w_{ij}\f$ with
/// \f$w_{ij} = \kappa(q_i,k_j)\,\mu(k_j)\f$, composed at compile time.

#include <concepts>
#include <type_traits>
#include <utility>

#include "kernattn/engine/exact_engine.hpp"
#include "kernattn/engine/front_end.hpp"
#include "kernattn/engine/options.hpp"
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
 public:
  using Scalar = typename KernelT::Scalar;
  using Kernel = KernelT;
  using Magnitude = MagnitudeT;
  using Mask = MaskT;

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

  /// The same kernel, magnitude and options with another set filter.
  template <mask::Mask NewMask>
  [[nodiscard]] Attention<Kernel, Magnitude, NewMask> with_mask(NewMask mask) const {
    return Attention<Kernel, Magnitude, NewMask>(kernel_, magnitude_, std::move(mask), options_);
  }

 private:
  friend class detail::AttentionCalls<Attention>;

  /// Any head dimension d >= 1 works.
  template <class DQ>
  void check_head_dimension(Index, const DQ&, BatchLayout) const {}

  template <class Queries, class Keys, class Values, class Out>
  void run(const Queries& Q, const Keys& K, const Values& V, Out& out, BatchLayout layout) const {
    detail::attend_exact(kernel_, magnitude_, mask_, options_,
                         detail::CallBlocks(Q, K, V, out, layout));
  }

  Kernel kernel_;
  Magnitude magnitude_;
  Mask mask_;
  ExecutionOptions options_{};
};

}  // namespace kernattn
