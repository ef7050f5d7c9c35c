#pragma once
/// \file
/// `KeyValueCache`: the keys and values of exact attention kept across decoding steps, with the
/// per-key terms each key needs computed once, when it is appended (docs/conventions.md,
/// "Decoding with a key/value cache").

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

#include "kernattn/attention/attention.hpp"
#include "kernattn/core/errors.hpp"
#include "kernattn/core/threading.hpp"
#include "kernattn/engine/exact_engine.hpp"
#include "kernattn/engine/front_end.hpp"
#include "kernattn/engine/key_terms.hpp"
#include "kernattn/engine/merge_partial.hpp"
#include "kernattn/engine/prepare_keys.hpp"
#include "kernattn/engine/single_query.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn {

namespace detail {

/// A bound mask restricted to the keys in [begin, end): the part of a cache one task attends.
template <mask::BoundMask Inner>
struct KeyRangeMask {
  const Inner& inner;
  Index begin;
  Index end;

  [[nodiscard]] mask::Coverage coverage(mask::Range rows, mask::Range cols) const {
    if (cols.end <= begin || cols.begin >= end) return mask::Coverage::hidden;
    const mask::Coverage inside = inner.coverage(rows, cols);
    const bool straddles = cols.begin < begin || cols.end > end;
    return inside == mask::Coverage::full && straddles ? mask::Coverage::partial : inside;
  }
  [[nodiscard]] bool visible(Index i, Index j) const {
    return j >= begin && j < end && inner.visible(i, j);
  }
  [[nodiscard]] double bias(Index i, Index j) const requires mask::BoundScoreBias<Inner> {
    return double(inner.bias(i, j));
  }
};

/// Copies `added` into rows [length, length + added.rows()) of `stored`, first growing `stored`
/// to `capacity` rows (keeping its contents) where it is shorter. A term the kernel does not
/// have is empty in every chunk and stays empty.
template <class Stored, class Added>
void append_rows(Stored& stored, Index length, Index capacity, const Added& added) {
  if (added.size() == 0) return;
  if (stored.rows() < capacity) stored.conservativeResize(capacity, added.cols());
  stored.middleRows(length, added.rows()) = added;
}

/// Appends the `KeyTerms` of a chunk of `count` keys (`added`, from `compute_key_terms`) to those
/// of the `length` keys before it, growing every term to `capacity` rows.
template <Real T>
void append_key_terms(KeyTerms<T>& terms, Index length, Index capacity, const KeyTerms<T>& added,
                      Index count) {
  append_rows(terms.key_bias, length, capacity, added.key_bias);
  append_rows(terms.squared_norms, length, capacity, added.squared_norms);
  append_rows(terms.position_squared_norms, length, capacity, added.position_squared_norms);
  append_rows(terms.features, length, capacity, added.features);
  append_rows(terms.range_norms, length, capacity, added.range_norms);
  append_rows(terms.range_key_terms, length, capacity, added.range_key_terms);
  auto& before = terms.nonfinite_values_before;
  if (added.nonfinite_values_before.empty() && before.empty()) return;
  if (before.empty()) before.assign(std::size_t(length) + 1, 0);
  for (Index j = 0; j < count; ++j)
    before.push_back(before[std::size_t(length)] +
                     (added.nonfinite_values_before.empty()
                          ? 0
                          : added.nonfinite_values_before[std::size_t(j) + 1]));
}

}  // namespace detail

/// The keys and values of one sequence and head of exact attention, appended as decoding goes,
/// with each key's terms (its norms, magnitude, kernel key term or features, and what the range
/// checks read) computed once, when it is appended. `attend(queries)` answers n queries against
/// the \f$L\f$ keys appended so far as `Attention` would answer them with those keys and values
/// (its kernel, magnitude and mask; the mask bound to \f$n \times L\f$), up to rounding: query i
/// of a step is token \f$L - n + i\f$, so with the bottom-right `mask::Causal` it sees keys
/// \f$j \le L - n + i\f$, and a single query every key whatever the mask but a window.
///
/// A step of at most 8 queries attends them one by one, each reading the keys and values once
/// (`attend_single_query`, in tiles of `4 * key_tile` keys: one query's scores are a single row,
/// so the longer tile stays in the first-level cache and spreads the per-tile work over more
/// keys); more queries share each key tile's reads. The keys
/// are attended in parts of `16 * key_tile` keys, each part's output and row statistic
/// merged in order (`merge_partial_result`): a long cache spreads over threads even for a single
/// query, and the result is bit-identical for every thread count. Appending n tokens costs
/// \f$O(n d)\f$ amortised (storage doubles as it grows); a step costs one pass over the keys and
/// values its queries see, and builds nothing per call but the parts' outputs.
///
/// Wrong shapes throw `InvalidArgument` and leave the cache as it was. Non-finite keys and values
/// reach exactly the queries that see them, as in `Attention`.
template <kernels::Kernel KernelT, magnitude::Magnitude MagnitudeT = magnitude::None,
          mask::Mask MaskT = mask::None>
class KeyValueCache {
 public:
  using Scalar = typename KernelT::Scalar;
  using Kernel = KernelT;
  using Magnitude = MagnitudeT;
  using Mask = MaskT;
  /// What `attend(queries, statistics)` writes (`merge_partial_result` needs to know).
  static constexpr RowStatistic row_statistic = Attention<Kernel, Magnitude, Mask>::row_statistic;

  /// An empty cache for `attention`'s kernel, magnitude, mask and options, holding keys of
  /// `key_dimension` and values of `value_dimension` columns.
  KeyValueCache(Attention<KernelT, MagnitudeT, MaskT> attention, Index key_dimension,
                Index value_dimension)
      : attention_(std::move(attention)), keys_(0, key_dimension), values_(0, value_dimension) {
    require(key_dimension >= 1 && value_dimension >= 1,
            "KeyValueCache: key_dimension and value_dimension must be >= 1, got ", key_dimension,
            " and ", value_dimension);
  }

  /// The tokens appended so far.
  [[nodiscard]] Index length() const { return length_; }
  [[nodiscard]] Index key_dimension() const { return keys_.cols(); }
  [[nodiscard]] Index value_dimension() const { return values_.cols(); }
  [[nodiscard]] const Attention<Kernel, Magnitude, Mask>& attention() const { return attention_; }
  /// The cached keys (\f$L \times d\f$) and values (\f$L \times d_v\f$), one token per row.
  [[nodiscard]] auto keys() const { return keys_.topRows(length_); }
  [[nodiscard]] auto values() const { return values_.topRows(length_); }

  /// Makes room for `tokens` tokens in all, so that appending up to them allocates nothing.
  void reserve(Index tokens) {
    require(tokens >= 0, "KeyValueCache::reserve: tokens must be >= 0, got ", tokens);
    if (tokens > capacity_) grow_to(tokens);
  }

  /// Keeps the first `tokens` tokens and forgets the rest (a rejected draft in speculative
  /// decoding); their storage stays reserved.
  void truncate(Index tokens) {
    require(tokens >= 0 && tokens <= length_, "KeyValueCache::truncate: tokens must be in [0, ",
            length_, "], got ", tokens);
    length_ = tokens;
    auto& before = terms_.nonfinite_values_before;
    if (!before.empty()) before.resize(std::size_t(tokens) + 1);
  }

  /// Appends keys (\f$n \times d\f$) and their values (\f$n \times d_v\f$), in order, and
  /// computes their per-key terms.
  template <class DK, class DV>
  void append(const Eigen::MatrixBase<DK>& keys, const Eigen::MatrixBase<DV>& values) {
    static_assert(detail::all_of_scalar<Scalar, DK, DV>,
                  "keys and values must have the cache's scalar type");
    require(keys.cols() == key_dimension() && values.cols() == value_dimension() &&
                keys.rows() == values.rows(),
            "KeyValueCache::append: keys are ", detail::shape_of(keys), " and values ",
            detail::shape_of(values), " but the cache takes n x ", key_dimension(),
            " keys with n x ", value_dimension(), " values");
    const Index added = keys.rows();
    if (added == 0) return;
    const detail::InputView<DK> key_rows(keys);
    const detail::InputView<DV> value_rows(values);
    const detail::KeyTerms<Scalar> terms = detail::compute_key_terms(
        attention_.kernel(), attention_.magnitude(), key_rows, value_rows);
    if (length_ + added > capacity_) grow_to(std::max({length_ + added, 2 * capacity_, Index(16)}));
    keys_.middleRows(length_, added) = key_rows;
    values_.middleRows(length_, added) = value_rows;
    detail::append_key_terms(terms_, length_, capacity_, terms, added);
    length_ += added;
  }

  /// Each query (\f$n \times d\f$, the next n tokens) against the cached keys: \f$n \times d_v\f$.
  template <class DQ>
  [[nodiscard]] Matrix<Scalar> attend(const Eigen::MatrixBase<DQ>& queries) const {
    Matrix<Scalar> statistics;
    return attend(queries, statistics);
  }

  /// As `attend(queries)`, and writes each query's row statistic (`row_statistic`, n x 1) into
  /// `statistics`: what merges this cache's answer with one over other keys.
  template <class DQ>
  [[nodiscard]] Matrix<Scalar> attend(const Eigen::MatrixBase<DQ>& queries,
                                      Matrix<Scalar>& statistics) const {
    return attend(queries, statistics, 0, 1);
  }

  /// As `attend(queries, statistics)` with the cache as head `head` of `heads`: a score bias
  /// binds to that head (`MultiHeadKeyValueCache`); other masks do not depend on it.
  template <class DQ>
  [[nodiscard]] Matrix<Scalar> attend(const Eigen::MatrixBase<DQ>& queries,
                                      Matrix<Scalar>& statistics, Index head, Index heads) const {
    static_assert(detail::all_of_scalar<Scalar, DQ>, "queries must have the cache's scalar type");
    require(queries.cols() == key_dimension(), "KeyValueCache::attend: queries are ",
            detail::shape_of(queries), " but the cache takes n x ", key_dimension());
    require(heads >= 1 && head >= 0 && head < heads, "KeyValueCache::attend: head ", head,
            " is not one of ", heads, " head(s)");
    const detail::InputView<DQ> query_rows(queries);
    const Index n = query_rows.rows();
    const Mask& mask = attention_.mask();
    const auto visibility = mask.bind(mask::Shape{n, length_, 0, 1, head, heads});
    Matrix<Scalar> out = Matrix<Scalar>::Zero(n, value_dimension());
    statistics.setConstant(n, 1,
                           row_statistic == RowStatistic::log_normaliser
                               ? ScalarTraits<Scalar>::negative_infinity
                               : Scalar(0));
    if (n == 0 || length_ == 0) return out;

    const ExecutionOptions& options = attention_.options();
    const Index part_keys = 16 * options.key_tile;
    const Index parts = (length_ - 1) / part_keys + 1;
    // A few queries are attended one by one (`attend_single_query`: each reads the keys at memory
    // speed); more share each key tile's reads (`attend_query_tile`).
    const Index query_tile = n <= 8 ? 1 : options.query_tile_for(n);
    const Index query_tiles = (n - 1) / query_tile + 1;
    std::vector<Matrix<Scalar>> part_out(std::size_t(parts - 1));
    std::vector<Matrix<Scalar>> part_statistics(std::size_t(parts - 1));
    for (std::size_t p = 0; p + 1 < std::size_t(parts); ++p) {
      part_out[p].resize(n, value_dimension());
      part_statistics[p].resize(n, 1);
    }
    parallel_for(parts * query_tiles, resolve_thread_count(options.threads), [&](Index task) {
      const Index part = task / query_tiles;
      const Index first = (task % query_tiles) * query_tile;
      const Index rows = std::min(query_tile, n - first);
      Matrix<Scalar>& destination = part == 0 ? out : part_out[std::size_t(part - 1)];
      Matrix<Scalar>& part_statistic =
          part == 0 ? statistics : part_statistics[std::size_t(part - 1)];
      const detail::KeyRangeMask<std::remove_cvref_t<decltype(visibility)>> range{
          visibility, part * part_keys, std::min(length_, (part + 1) * part_keys)};
      const auto queries = query_rows.middleRows(first, rows);
      auto out_rows = destination.middleRows(first, rows);
      auto statistic_rows = part_statistic.col(0).segment(first, rows);
      if (rows == 1)
        detail::attend_single_query<Kernel, Magnitude>(
            attention_.kernel(), queries, first, keys(), values(), terms_, range,
            single_query_tiles * options.key_tile, out_rows, statistic_rows);
      else
        detail::attend_query_tile<Kernel, Magnitude>(attention_.kernel(), queries, first, keys(),
                                                     values(), terms_, range, options.key_tile,
                                                     out_rows, statistic_rows);
    });
    for (std::size_t p = 0; p + 1 < std::size_t(parts); ++p)
      merge_partial_result(out, statistics, part_out[p], part_statistics[p], row_statistic);
    return out;
  }

 private:
  using Rows = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  /// The key tile of a one-query step, in units of `key_tile`.
  static constexpr Index single_query_tiles = 4;
  /// Rows of key storage past the capacity: with the doubling capacity a power of two, the key
  /// columns would start a multiple of 4 KiB apart and compete for the same cache sets while a
  /// tile reads them side by side; 64 bytes more per column spreads them over the sets.
  static constexpr Index key_column_padding = 64 / Index(sizeof(Scalar));

  void grow_to(Index capacity) {
    keys_.conservativeResize(capacity + key_column_padding, Eigen::NoChange);
    values_.conservativeResize(capacity, Eigen::NoChange);
    capacity_ = capacity;
  }

  Attention<Kernel, Magnitude, Mask> attention_;
  // Keys column by column: a tile's scores are then a column-major matrix-vector product, a sum
  // of columns scaled by the query's entries, with no reduction across each key's row. Values
  // row by row: the weighted sum of a tile's values is then a sum of rows.
  Matrix<Scalar> keys_;
  Rows values_;
  detail::KeyTerms<Scalar> terms_;
  Index length_ = 0;
  Index capacity_ = 0;
};

}  // namespace kernattn
