#pragma once
/// \file
/// Scoring of the dot-product form, \f$\log\kappa(q,k) = a\,(q\cdot k) + f(q) + g(k)\f$: one GEMM
/// of the scaled queries \f$a\,q\f$ with the keys; \f$g(k)\f$ joins the key's log-weight and
/// \f$f(q)\f$ cancels.

#include <cmath>

#include "kernattn/engine/forms/common.hpp"
#include "kernattn/engine/forms/scoring.hpp"
#include "kernattn/engine/forms/single_factor.hpp"

namespace kernattn::detail {

template <kernels::DotProductKernel Kernel>
struct Scoring<Kernel>
    : SingleFactorScoring<Kernel, Scoring<Kernel>>, ScaledDotPairs<Kernel>, WithKernelKeyTerm {
  using T = typename Kernel::Scalar;
  static constexpr bool has_key_term = Kernel::has_key_term;
  /// A factor's scores are the GEMM alone, so a product of such factors is one GEMM.
  static constexpr bool plain_gemm = true;

  template <class Keys>
  static void key_terms(const Kernel&, const Keys&, KeyTerms<T>&, Eigen::VectorXd&) {}
  template <class Keys>
  static void factor_norms(const Keys&, Vector<T>&) {}

  /// The factor on columns [first, first + columns): its scale \f$|a|\f$ bounds its terms.
  template <class Add>
  static void log_factor(const Kernel& kernel, Index first, Index columns, Add&& add) {
    add(first, columns, false, std::abs(double(kernel.dot_scale(columns))));
  }

  /// \f$a\,q\f$ of the factor's columns.
  template <class Queries, class Prepared>
  static void prepare_factor(const Kernel& kernel, const Queries& queries, Prepared&& prepared,
                             Vector<T>&, DistanceScratch<T>&) {
    prepared = kernel.dot_scale(queries.cols()) * queries;
  }

  /// \f$a\,(q\cdot k)\f$ for a tile: the GEMM of the prepared queries with the keys.
  template <class Queries, class Prepared, class KeyRows, class Tile>
  static void factor_tile(const Kernel&, const Queries&, const Prepared& prepared, const Vector<T>&,
                          const KeyRows& keys, const Vector<T>&, Index, DistanceScratch<T>&,
                          Tile&& tile) {
    tile.noalias() = prepared * keys.transpose();
  }

  template <class Scores>
  static void map_scores(const Kernel&, Scores&&, Index) {}

  /// The block path: the dot products of the scaled queries with the keys are the scores.
  static constexpr bool block_scoring = true;
  template <class Queries, class Keys, class Scores>
  static void finish_block(const Kernel&, const Queries&, Index, TileScratch<T>&, const Keys&,
                           const KeyTerms<T>&, Index, Scores&&) {}
};

}  // namespace kernattn::detail
