#pragma once
/// \file
/// The numeric range the engines compute log-weights in (docs/numerics.md). In precision T every
/// term of a log-weight must lie within \f$[-L, L]\f$, \f$L = \f$ (largest T) / 8: a dot-product
/// factor \f$a\,(q\cdot k)\f$ (and the scaled query \f$a\,q\f$ of its GEMM), a distance factor's
/// \f$\lVert q\rVert^2\f$, \f$\lVert k\rVert^2\f$ and \f$2\,q\cdot k\f$, and the key term
/// \f$g(k) + \log\mu(k)\f$. A log-weight adds at most three such terms (two factors and the key
/// term), and the online softmax subtracts a maximum of them, so nothing overflows. The engines
/// check it from norms computed in double, once per key and once per query, and throw
/// `InvalidArgument` for a pair that a query sees and that breaks it; a row with a non-finite
/// entry is exempt (non-finite data propagate to the rows that see them).

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/engine/joined_columns.hpp"
#include "kernattn/engine/scoring.hpp"
#include "kernattn/kernels/kernel.hpp"

namespace kernattn::detail {

/// \f$L\f$: the largest size of any term of a log-weight in precision T.
template <Real T>
inline constexpr double log_weight_limit = double(std::numeric_limits<T>::max()) / 8;

/// Whether each row of `rows` holds only finite entries: \f$0 \cdot x\f$ is 0 for a finite x
/// and NaN for an infinity or a NaN. A column-major block is read column by column (its rows are
/// strided), a row-major one row by row.
template <class Rows>
[[nodiscard]] Eigen::Array<bool, Eigen::Dynamic, 1> finite_rows(const Rows& rows) {
  using S = typename Rows::Scalar;
  if constexpr (is_joined_columns<Rows>) {
    return finite_rows(rows.left()) && finite_rows(rows.right());
  } else {
    Eigen::Array<S, Eigen::Dynamic, 1> probe =
        Eigen::Array<S, Eigen::Dynamic, 1>::Zero(rows.rows());
    if constexpr (Rows::IsRowMajor)
      for (Index i = 0; i < rows.rows(); ++i) probe(i) = (rows.row(i).array() * S(0)).sum();
    else
      for (Index c = 0; c < rows.cols(); ++c) probe += rows.col(c).array() * S(0);
    return probe == S(0);
  }
}

/// What the range checks know of a kernel: its log-domain factors (none for direct and feature
/// kernels, one for a dot-product or distance kernel, two for a product kernel), each with its
/// columns and form, and for a dot-product factor its scale \f$|a|\f$.
template <Real T>
class LogWeightRange {
 public:
  static constexpr Index max_factors = 2;
  /// Norms of one row (or maxima over rows), one per factor.
  using Norms = Eigen::Array<double, 1, Eigen::Dynamic, Eigen::RowMajor, 1, max_factors>;

  /// The factors of `kernel` on inputs of `columns` columns.
  template <kernels::Kernel Kernel>
  [[nodiscard]] static LogWeightRange of(const Kernel& kernel, Index columns) {
    LogWeightRange range;
    Scoring<Kernel>::log_factors(
        kernel, columns, [&range](Index first, Index count, bool distance, double scale) {
          range.factors_[std::size_t(range.count_++)] = Factor{first, count, distance, scale};
        });
    return range;
  }

  [[nodiscard]] Index factors() const { return count_; }

  /// Row `row` of an array of norms (rows x factors, see `norms`), copied: no block is formed of
  /// an array without factors, whose data pointer is null.
  [[nodiscard]] static Norms row_of(const Eigen::ArrayXXd& norms, Index row) {
    Norms out(norms.cols());
    for (Index f = 0; f < norms.cols(); ++f) out(f) = norms(row, f);
    return out;
  }

  /// Writes the norms of every row of `rows` on each factor's columns (rows x factors, in
  /// double); -1 for a row with a non-finite entry. The sums of squares run in the rows' own
  /// precision (accurate to a few d u, plenty for a limit with a margin of 8); a row whose sum is
  /// not finite, because it holds a non-finite entry or overflows, is redone in double with
  /// Eigen's scaled `stableNorm`, so a finite row never has an infinite norm.
  template <class Rows>
  void norms(const Rows& rows, Eigen::ArrayXXd& out) const {
    using S = typename Rows::Scalar;
    out.resize(rows.rows(), count_);
    if (count_ == 0) return;
    Eigen::Array<S, Eigen::Dynamic, 1> squares(rows.rows());
    Eigen::Array<bool, Eigen::Dynamic, 1> nonfinite =
        Eigen::Array<bool, Eigen::Dynamic, 1>::Constant(rows.rows(), false);
    for (Index f = 0; f < count_; ++f) {
      const Factor& factor = factors_[std::size_t(f)];
      with_columns(rows, factor.first, factor.columns, [&](const auto& block) {
        if constexpr (Rows::IsRowMajor) {
          for (Index i = 0; i < rows.rows(); ++i) squares(i) = block.row(i).squaredNorm();
        } else {
          squares.setZero();
          for (Index c = 0; c < factor.columns; ++c) squares += block.col(c).array().square();
        }
        for (Index i = 0; i < rows.rows(); ++i) {
          if (std::isfinite(squares(i)))
            out(i, f) = std::sqrt(double(squares(i)));
          else if (block.row(i).allFinite())
            out(i, f) = block.row(i).template cast<double>().stableNorm();
          else
            nonfinite(i) = true;
        }
      });
    }
    for (Index i = 0; i < rows.rows(); ++i)
      if (nonfinite(i)) out.row(i).setConstant(-1.0);
  }

  /// Whether every term that queries of norms `query` and keys of norms `key` (one per factor,
  /// negative ones read as 0) with a key term of size `key_term` form lies within the range.
  /// Every condition grows with each argument, so maxima over rows bound a whole tile.
  template <class QueryNorms, class KeyNorms>
  [[nodiscard]] bool holds(const QueryNorms& query, const KeyNorms& key, double key_term) const {
    constexpr double limit = log_weight_limit<T>;
    if (!(key_term <= limit)) return false;
    for (Index f = 0; f < count_; ++f) {
      const Factor& factor = factors_[std::size_t(f)];
      const double q = std::max(double(query(f)), 0.0);
      const double k = std::max(double(key(f)), 0.0);
      if (factor.distance ? !((q + k) * (q + k) <= limit)
                          : !(factor.scale * q <= limit && factor.scale * q * k <= limit))
        return false;
    }
    return true;
  }

  /// Requires the range for every pair of query i of a tile (norms row i of `query_norms`, row
  /// `first_query + i` of its sequence) and key j in [first_key, first_key + keys) (norms row j of
  /// `key_norms`, key term size `key_terms(j)`, or none when `key_terms` is empty) such
  /// that `visible(i, j)` (indices relative to the tile's first query and key). The maxima over the
  /// tile decide in O(rows + keys); only a tile they fail is checked pair by pair.
  template <class Visible>
  void require_tile(std::string_view owner, const Eigen::ArrayXXd& query_norms, Index first_query,
                    const Eigen::ArrayXXd& key_norms, const Eigen::ArrayXd& key_terms,
                    Index first_key, Index keys, const Visible& visible) const {
    if ((count_ == 0 && key_terms.size() == 0) || query_norms.rows() == 0 || keys == 0) return;
    const auto key_term = [&](Index j) {
      return key_terms.size() == 0 ? 0.0 : key_terms(first_key + j);
    };
    Norms largest_query = Norms::Zero(count_);
    Norms largest_key = Norms::Zero(count_);
    if (count_ > 0) {
      largest_query = query_norms.colwise().maxCoeff();
      largest_key = key_norms.middleRows(first_key, keys).colwise().maxCoeff();
    }
    const double largest_key_term =
        key_terms.size() == 0 ? 0.0 : key_terms.segment(first_key, keys).maxCoeff();
    if (holds(largest_query, largest_key, largest_key_term)) return;
    for (Index j = 0; j < keys; ++j) {
      const Norms key = row_of(key_norms, first_key + j);
      for (Index i = 0; i < query_norms.rows(); ++i) {
        if (!visible(i, j)) continue;
        const Norms query = row_of(query_norms, i);
        if (!holds(query, key, key_term(j)))
          require_pair(owner, first_query + i, query, first_key + j, key, key_term(j));
      }
    }
  }

  /// Requires the range for query `query_index` (norms `query`) and every key listed in `keys`
  /// (a range of key indices: norms `key_norms.row(j)`, key term size `key_terms(j)`, or none
  /// when `key_terms` is empty): the maxima over the keys first, pair by pair only if they fail.
  template <class QueryNorms, class Keys>
  void require_keys(std::string_view owner, Index query_index, const QueryNorms& query,
                    const Eigen::ArrayXXd& key_norms, const Eigen::ArrayXd& key_terms,
                    const Keys& keys) const {
    if (count_ == 0 && key_terms.size() == 0) return;
    const auto key_term = [&](Index j) { return key_terms.size() == 0 ? 0.0 : key_terms(j); };
    Norms largest_key = Norms::Zero(count_);
    double largest_key_term = 0.0;
    for (const Index j : keys) {
      largest_key = largest_key.max(row_of(key_norms, j));
      largest_key_term = std::max(largest_key_term, key_term(j));
    }
    if (holds(query, largest_key, largest_key_term)) return;
    for (const Index j : keys)
      if (!holds(query, row_of(key_norms, j), key_term(j)))
        require_pair(owner, query_index, query, j, row_of(key_norms, j), key_term(j));
  }

  /// Throws `InvalidArgument` for query `query_index` (norms `query`) and key `key_index` (norms
  /// `key`, key term `key_term`), a pair for which `holds` is false; a non-finite row (a
  /// negative norm) never fails, and neither does a pair that holds.
  template <class QueryNorms, class KeyNorms>
  void require_pair(std::string_view owner, Index query_index, const QueryNorms& query,
                    Index key_index, const KeyNorms& key, double key_term) const {
    constexpr double limit = log_weight_limit<T>;
    constexpr std::string_view type = ScalarTraits<T>::name;
    constexpr std::string_view or_double = std::is_same_v<T, float> ? " or compute in double" : "";
    require(key_term <= limit, owner, ": key ", key_index,
            " has a key term g(k) + log mu(k) of size ", key_term, ", beyond ", limit,
            " (the largest ", type,
            " / 8), the range of log-weights in this precision (docs/numerics.md): scale K down",
            or_double);
    for (Index f = 0; f < count_; ++f) {
      const Factor& factor = factors_[std::size_t(f)];
      const double q = double(query(f));
      const double k = double(key(f));
      if (q < 0 || k < 0) continue;
      const auto columns = [&] {
        return count_ == 1 ? std::string()
                           : concat(" on columns [", factor.first, ", ",
                                    factor.first + factor.columns, ")");
      };
      const auto fail = [&](std::string_view what, double value) {
        throw InvalidArgument(concat(
            owner, ": query ", query_index, " (norm ", q, ") and key ", key_index, " (norm ", k,
            ") of Q and K are too large for the ", factor.distance ? "distance" : "dot-product",
            " kernel", columns(), " in ", type, ": ", what, " = ", value, " exceeds ", limit,
            " (the largest ", type, " / 8; docs/numerics.md): scale Q and K down", or_double));
      };
      if (factor.distance) {
        if (!((q + k) * (q + k) <= limit)) fail("(|q| + |k|)^2", (q + k) * (q + k));
      } else {
        if (!(factor.scale * q <= limit)) fail("|a| |q|", factor.scale * q);
        if (!(factor.scale * q * k <= limit)) fail("|a| |q| |k|", factor.scale * q * k);
      }
    }
  }

 private:
  struct Factor {
    Index first = 0;
    Index columns = 0;
    bool distance = false;
    double scale = 0.0;
  };

  std::array<Factor, max_factors> factors_{};
  Index count_ = 0;
};

}  // namespace kernattn::detail
