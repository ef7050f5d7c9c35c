#pragma once
/// \file
/// Implicit kernel attention exactly as the official PyTorch code computes it (docs/math.md,
/// section 2), for a model trained with that code.

#include <cmath>
#include <utility>

#include "kernattn/attention/attention.hpp"
#include "kernattn/features/random_feature.hpp"
#include "kernattn/features/yaglom.hpp"
#include "kernattn/magnitude/lp.hpp"
#include "kernattn/mask/none.hpp"

namespace kernattn {

/// The official magnitude: \f$(\lVert q\rVert_p^2 + \lVert k\rVert_p^2)/(2\sqrt c)\f$ with
/// \f$c = \sqrt{d}\f$ is, after the query term cancels, \f$\mu(k) = \exp(\gamma\lVert
/// k\rVert_p^2)\f$ with \f$\gamma = 1/(2 d^{1/4})\f$.
template <Real T>
[[nodiscard]] magnitude::Lp<T> ika_reference_magnitude(T p, Index d) {
  require(d >= 1, "ika_reference_magnitude: the head dimension d must be >= 1, got ", d);
  return magnitude::Lp<T>(p, T(0.5 / std::sqrt(std::sqrt(double(d)))));
}

/// The attention type of `make_ika_reference`.
template <Real T, mask::Mask MaskT = mask::None>
using IkaReferenceAttention =
    Attention<kernels::IkaEnergy<features::Yaglom<T>>, magnitude::Lp<T>, MaskT>;

/// The official implicit kernel attention of one head from its trained frequency sets
/// \f$W_1, W_2 \in \mathbb{R}^{d\times M}\f$ (the layout of the official parameters, one
/// frequency per column) and the norm order \f$p\f$: softmax over keys of the energy
/// \f$\log\big((\varphi(q)\cdot\varphi(k)/(4M))^2 + 10^{-5}\big) + (\lVert q\rVert_p^2 +
/// \lVert k\rVert_p^2)/(2\sqrt{\sqrt d})\f$ with the official Yaglom features of frequency scale
/// \f$2\pi\f$. Gives the official attention weights (in inference: the official code applies
/// dropout to the norm term when training). Throws unless \f$W_1\f$ and \f$W_2\f$ have the same
/// shape with \f$d \ge 1\f$ and \f$M \ge 1\f$, naming them as given.
template <Real T, mask::Mask MaskT = mask::None>
[[nodiscard]] IkaReferenceAttention<T, MaskT> make_ika_reference(const Matrix<T>& w1,
                                                                 const Matrix<T>& w2, T p,
                                                                 MaskT mask = {},
                                                                 ExecutionOptions options = {}) {
  require(w1.rows() >= 1 && w1.cols() >= 1, "make_ika_reference: W1 is ", detail::shape_of(w1),
          " but must be d x M with d >= 1 (the head dimension, rows) and M >= 1 (the number of "
          "frequencies, one per column)");
  require(w2.rows() == w1.rows() && w2.cols() == w1.cols(), "make_ika_reference: W2 is ",
          detail::shape_of(w2), " but must have the shape of W1, ", detail::shape_of(w1),
          " (d x M)");
  return IkaReferenceAttention<T, MaskT>(
      kernels::IkaEnergy<features::Yaglom<T>>(features::Yaglom<T>::from_official(w1, w2)),
      ika_reference_magnitude(p, w1.rows()), std::move(mask), options);
}

}  // namespace kernattn
