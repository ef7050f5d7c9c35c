#pragma once
/// \file
/// Pieces of `Scoring` that several forms share.

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/key_terms.hpp"

namespace kernattn::detail {

/// A form without a key term of the kernel's own: \f$g \equiv 0\f$.
struct WithoutKeyTerm {
  template <class Kernel, class Row>
  static void add_key_term(const Kernel&, const Row&, double&) {}
};

/// A form without log-domain factors (direct and feature forms): the range checks bound only
/// the key term.
struct WithoutLogFactors {
  template <class Kernel, class Add>
  static void log_factors(const Kernel&, Index, Add&&) {}
};

/// Single pairs of the forms scored from \f$a\,(q\cdot k)\f$ (dot-product and direct forms): the
/// queries scaled by \f$a\f$ once, then one dot product with the key per pair.
template <class Kernel>
struct ScaledDotPairs {
  using T = typename Kernel::Scalar;

  template <class QueryRows>
  static RowMajorMatrix<T> prepare_rows(const Kernel& kernel, const QueryRows& queries) {
    return kernel.dot_scale(queries.cols()) * queries;
  }
  template <class Keys>
  static RowMajorMatrix<T> pair_keys(const KeyTerms<T>&, const Keys& keys) {
    return keys;
  }
  template <class Prepared, class KeyRow>
  static T score_pair(const Prepared& prepared, Index i, const KeyRow& key) {
    return prepared.row(i).dot(key);
  }
};

}  // namespace kernattn::detail
