#pragma once
/// \file
/// Pieces of `Scoring` that several forms share.

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/key_terms.hpp"

namespace kernattn::detail {

/// A form without a key term of the kernel's own, \f$g \equiv 0\f$, and without a query term
/// that its scores drop.
struct WithoutKeyTerm {
  template <class Kernel, class Keys>
  static void add_key_terms(const Kernel&, const Keys&, Eigen::VectorXd&) {}
  template <class Kernel, class Queries, class Scratch>
  static void add_query_log_terms(const Kernel&, const Queries&, const Scratch&, Eigen::ArrayXd&) {}
};

/// Adds \f$g(x_j)\f$ (`log_key_term`) of every row j of `rows` to `log_terms(j)`: through the
/// kernel's `add_log_key_terms(rows, log_terms)` where it has one (one pass over the rows, equal to
/// `log_key_term` row by row), else row by row.
template <class Kernel, class Rows, class LogTerms>
void add_log_key_terms(const Kernel& kernel, const Rows& rows, LogTerms& log_terms) {
  if constexpr (requires { kernel.add_log_key_terms(rows, log_terms); })
    kernel.add_log_key_terms(rows, log_terms);
  else
    for (Index j = 0; j < rows.rows(); ++j) log_terms(j) += kernel.log_key_term(rows.row(j));
}

/// Adds \f$f(q_i)\f$ to `log_terms(i)` for each query row of a kernel with \f$\log\kappa(q,k) =
/// a\,(q\cdot k) + f(q) + g(k)\f$, in double: the kernel's `log_query_term(q)` if it has one,
/// else \f$g(q)\f$, the query term of a symmetric kernel (every such kernel the library ships).
/// Only the row statistics need it: it cancels in the output.
template <class Kernel, class Queries>
void add_symmetric_query_terms(const Kernel& kernel, const Queries& queries,
                               Eigen::ArrayXd& log_terms) {
  if constexpr (!Kernel::has_key_term)
    return;
  else if constexpr (requires { kernel.log_query_term(queries.row(0)); })
    for (Index i = 0; i < queries.rows(); ++i)
      log_terms(i) += kernel.log_query_term(queries.row(i));
  else
    add_log_key_terms(kernel, queries, log_terms);
}

/// A form whose key term is the kernel's own \f$g(k)\f$ (`log_key_term`), and whose row
/// statistics add back the query term \f$f(q_i)\f$ that its scores drop
/// (`add_symmetric_query_terms`).
struct WithKernelKeyTerm {
  template <class Kernel, class Keys>
  static void add_key_terms(const Kernel& kernel, const Keys& keys, Eigen::VectorXd& log_terms) {
    add_log_key_terms(kernel, keys, log_terms);
  }
  template <class Kernel, class Queries, class Scratch>
  static void add_query_log_terms(const Kernel& kernel, const Queries& queries, const Scratch&,
                                  Eigen::ArrayXd& log_terms) {
    add_symmetric_query_terms(kernel, queries, log_terms);
  }
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
