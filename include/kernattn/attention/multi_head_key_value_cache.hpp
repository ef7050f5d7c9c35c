#pragma once
/// \file
/// A key/value cache of several heads, query heads sharing key/value heads: decoding with
/// multi-head, grouped-query and multi-query attention.

#include <utility>
#include <vector>

#include "kernattn/attention/attention.hpp"
#include "kernattn/attention/key_value_cache.hpp"
#include "kernattn/core/errors.hpp"
#include "kernattn/core/threading.hpp"

namespace kernattn {

/// \f$H_{kv}\f$ key/value heads cached for \f$H_q = g\,H_{kv}\f$ query heads (docs/conventions.md,
/// "Decoding with a key/value cache"): one `KeyValueCache` per key/value head, each key's terms
/// computed once when appended, and query head h answered by key/value head
/// \f$\lfloor h/g \rfloor\f$ (the mapping of `GroupedQuery`; \f$H_q = H_{kv}\f$ is multi-head
/// attention, \f$H_{kv} = 1\f$ multi-query). Tokens are rows and heads columns, as in the batch x
/// heads layout of one sequence: `append` takes K (\f$n \times H_{kv} d\f$) and V
/// (\f$n \times H_{kv} d_v\f$), `attend` takes Q (\f$n \times H_q d\f$) and gives
/// \f$n \times H_q d_v\f$, each query head's columns what `GroupedQuery` gives for the last n
/// tokens, up to rounding. A score bias binds to each query head (\f$H_q\f$ ALiBi slopes). The
/// query heads are attended in parallel on the attention's threads (one head alone splits its
/// keys instead). Wrong shapes throw `InvalidArgument` and leave the cache as it was.
template <kernels::Kernel KernelT, magnitude::Magnitude MagnitudeT = magnitude::None,
          mask::Mask MaskT = mask::None>
class MultiHeadKeyValueCache {
 public:
  using Scalar = typename KernelT::Scalar;
  using HeadCache = KeyValueCache<KernelT, MagnitudeT, MaskT>;

  /// An empty cache of `key_heads` key/value heads of `key_dimension` and `value_dimension`
  /// columns each, for `query_heads` query heads attending with `attention`.
  MultiHeadKeyValueCache(const Attention<KernelT, MagnitudeT, MaskT>& attention, Index query_heads,
                         Index key_heads, Index key_dimension, Index value_dimension)
      : query_heads_(query_heads), key_heads_(key_heads) {
    require(key_heads >= 1 && query_heads >= 1 && query_heads % key_heads == 0,
            "MultiHeadKeyValueCache: the query heads (", query_heads,
            ") must be a positive multiple of the key/value heads (", key_heads, ")");
    heads_.assign(std::size_t(key_heads), HeadCache(attention, key_dimension, value_dimension));
  }

  [[nodiscard]] Index query_heads() const { return query_heads_; }
  [[nodiscard]] Index key_heads() const { return key_heads_; }
  /// g, the query heads per key/value head.
  [[nodiscard]] Index group_size() const { return query_heads_ / key_heads_; }
  /// The tokens appended so far.
  [[nodiscard]] Index length() const { return heads_.front().length(); }
  /// The cache of key/value head kv.
  [[nodiscard]] const HeadCache& head(Index kv) const {
    require(kv >= 0 && kv < key_heads_, "MultiHeadKeyValueCache::head: ", kv, " is not one of ",
            key_heads_, " key/value head(s)");
    return heads_[std::size_t(kv)];
  }

  /// Makes room for `tokens` tokens in all in every head.
  void reserve(Index tokens) {
    for (HeadCache& cache : heads_) cache.reserve(tokens);
  }

  /// Appends the next n tokens' keys (\f$n \times H_{kv} d\f$) and values
  /// (\f$n \times H_{kv} d_v\f$), head h in columns [h d, (h + 1) d) and [h d_v, (h + 1) d_v).
  template <class DK, class DV>
  void append(const Eigen::MatrixBase<DK>& keys, const Eigen::MatrixBase<DV>& values) {
    const Index d = heads_.front().key_dimension();
    const Index dv = heads_.front().value_dimension();
    require(keys.cols() == key_heads_ * d && values.cols() == key_heads_ * dv &&
                keys.rows() == values.rows(),
            "MultiHeadKeyValueCache::append: keys are ", detail::shape_of(keys), " and values ",
            detail::shape_of(values), " but the cache takes n x ", key_heads_ * d,
            " keys with n x ", key_heads_ * dv, " values (", key_heads_, " key/value heads)");
    for (Index kv = 0; kv < key_heads_; ++kv)
      heads_[std::size_t(kv)].append(keys.middleCols(kv * d, d), values.middleCols(kv * dv, dv));
  }

  /// Forgets every token from `tokens` on, in every head.
  void truncate(Index tokens) {
    require(tokens >= 0 && tokens <= length(),
            "MultiHeadKeyValueCache::truncate: tokens must be "
            "in [0, ",
            length(), "], got ", tokens);
    for (HeadCache& cache : heads_) cache.truncate(tokens);
  }

  /// The next n tokens' queries (\f$n \times H_q d\f$) against the cached keys:
  /// \f$n \times H_q d_v\f$.
  template <class DQ>
  [[nodiscard]] Matrix<Scalar> attend(const Eigen::MatrixBase<DQ>& queries) const {
    Matrix<Scalar> statistics;
    return attend(queries, statistics);
  }

  /// As `attend(queries)`, and writes each query's row statistic for each query head
  /// (\f$n \times H_q\f$, column h for head h) into `statistics`.
  template <class DQ>
  [[nodiscard]] Matrix<Scalar> attend(const Eigen::MatrixBase<DQ>& queries,
                                      Matrix<Scalar>& statistics) const {
    const Index d = heads_.front().key_dimension();
    const Index dv = heads_.front().value_dimension();
    require(queries.cols() == query_heads_ * d, "MultiHeadKeyValueCache::attend: queries are ",
            detail::shape_of(queries), " but the cache takes n x ", query_heads_ * d, " (",
            query_heads_, " query heads x d = ", d, ")");
    const detail::InputView<DQ> query_rows(queries);
    const Index n = query_rows.rows();
    Matrix<Scalar> out(n, query_heads_ * dv);
    Matrix<Scalar> head_statistics(n, query_heads_);
    const auto attend_head = [&](Index h) {
      Matrix<Scalar> statistic;
      out.middleCols(h * dv, dv) = heads_[std::size_t(h / group_size())].attend(
          query_rows.middleCols(h * d, d), statistic, h, query_heads_);
      head_statistics.col(h) = statistic.col(0);
    };
    if (query_heads_ == 1)
      attend_head(0);
    else
      parallel_for(query_heads_, resolve_thread_count(heads_.front().attention().options().threads),
                   attend_head);
    statistics = std::move(head_statistics);
    return out;
  }

 private:
  Index query_heads_;
  Index key_heads_;
  std::vector<HeadCache> heads_;
};

}  // namespace kernattn
