#pragma once
/// \file
/// `BatchNormalized<Head>`: Attention-BN (Nguyen et al. 2024, docs/primal_dual.md), queries and
/// keys normalised with the keys' statistics before any kernel.

#include <cmath>
#include <utility>
#include <vector>

#include "kernattn/core/errors.hpp"
#include "kernattn/engine/backward_front_end.hpp"
#include "kernattn/engine/front_end.hpp"
#include "kernattn/heads/attention_head.hpp"
#include "kernattn/mask/seen_keys.hpp"

namespace kernattn {

/// Runs `Head` on \f$\hat q = (q - \beta\mu_K)/\sqrt{\sigma_K^2 + \varepsilon}\f$ and
/// \f$\hat k = (k - \beta\mu_K)/\sqrt{\sigma_K^2 + \varepsilon}\f$, feature by feature, with the
/// mean \f$\mu_K = \frac1{|S|}\sum_{j \in S} k_j\f$ and the (population) variance
/// \f$\sigma_K^2 = \frac1{|S|}\sum_{j \in S} (k_j - \mu_K)^2\f$ of the keys along the sequence, for
/// each sequence and head separately; values are unchanged. \f$\beta \in [0, 1]\f$ (default 1) and
/// \f$\varepsilon > 0\f$ (default \f$10^{-5}\f$). Any kernel, magnitude and engine.
///
/// \f$S = \bigcup_i M(i)\f$ holds the keys that the queries of the sequence see under the head's
/// mask (`mask::seen_keys`; all keys for a head without `mask()`), so padded keys change nothing,
/// whatever they hold. The statistics are shared by every query of the sequence, so the mask must
/// give every query the same keys: \f$M(i) \in \{\emptyset, S\}\f$ (a query that sees no key
/// outputs zeros). Otherwise a query's output would depend, through \f$\mu_K\f$ and
/// \f$\sigma_K\f$, on keys its mask hides: a call whose mask breaks the rule (`Causal` with more
/// than one query, a `Window` narrower than the sequence, a `Boolean` mask whose non-empty rows
/// differ, the pooled causal filters of `ScaledHead`) throws `InvalidArgument` naming a query and a
/// key it does not see. `None`, `KeyPadding` and `Boolean` masks with equal rows pass. A
/// `MultiHead` is refused at compile time: wrap its heads instead
/// (`MultiHead<BatchNormalized<Head>>` takes the same statistics, column by column). See
/// docs/primal_dual.md.
///
/// The statistics are computed in double, two-pass, and \f$\hat q, \hat k\f$ are rounded once to
/// the scalar type. A sequence in which no query sees a key passes unchanged.
template <AttentionHead Head>
class BatchNormalized : public detail::AttentionCalls<BatchNormalized<Head>>,
                        public detail::GradientCalls<BatchNormalized<Head>> {
 public:
  using Scalar = typename Head::Scalar;

  explicit BatchNormalized(Head head, double beta = 1.0, double epsilon = 1e-5)
      : head_(std::move(head)), beta_(beta), epsilon_(epsilon) {
    require(std::isfinite(beta_) && beta_ >= 0.0 && beta_ <= 1.0,
            "BatchNormalized: beta must lie in [0, 1], got ", beta_);
    require_positive_finite(epsilon_, "BatchNormalized", "epsilon");
  }

  [[nodiscard]] const Head& head() const { return head_; }
  [[nodiscard]] double beta() const { return beta_; }
  [[nodiscard]] double epsilon() const { return epsilon_; }
  [[nodiscard]] decltype(auto) mask() const requires requires(const Head& head) { head.mask(); }
  { return head_.mask(); }

  /// The same normalisation around the head with another set filter.
  template <class NewMask>
  requires requires(const Head& head, NewMask mask) { head.with_mask(std::move(mask)); }
  [[nodiscard]] auto with_mask(NewMask mask) const {
    using NewHead = decltype(head_.with_mask(std::move(mask)));
    return BatchNormalized<NewHead>(head_.with_mask(std::move(mask)), beta_, epsilon_);
  }

  /// The backward pass (docs/gradients.md, "Compositions"): the head's backward on
  /// \f$\hat q, \hat k\f$ (`DifferentiableHead`), then through the normalisation and the keys'
  /// statistics, per sequence and feature, in double: with \f$s = (\sigma_K^2 +
  /// \varepsilon)^{-1/2}\f$, \f$A = \sum_x d\hat x\,(x - \beta\mu_K)\f$ and \f$D = \sum_x d\hat
  /// x\f$ over the sequence's queries and keys, \f[ dq_i = s\,d\hat q_i,\qquad dk_j = s\,d\hat k_j
  /// + [j \in S]\,\frac{1}{|S|}\big(-\beta s D
  ///     - s^3 A\,(k_j - \mu_K)\big). \f]
  /// Keys outside \f$S\f$ (padding) get zero gradients.
  template <class DQ, class DK, class DV, class DO, class DG, detail::EigenDense GQ,
            detail::EigenDense GK, detail::EigenDense GV>
  void backward(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
                const Eigen::MatrixBase<DG>& dOut, GQ&& dQ, GK&& dK, GV&& dV,
                BatchLayout layout = {}) const {
    static_assert(DifferentiableHead<Head>,
                  "BatchNormalized::backward: the head needs a backward pass (DifferentiableHead)");
    static_assert(detail::all_of_scalar<Scalar, DQ, DK, DV, DO, DG, GQ, GK, GV>,
                  "every argument must have the attention's scalar type");
    detail::validate_backward_shapes(Q, K, V, out, dOut, dQ, dK, dV, layout);
    const Index B = layout.sequences;
    const Index nq = Q.rows() / B;
    const Index nk = K.rows() / B;
    Matrix<Scalar> queries = Q;
    Matrix<Scalar> keys = K;
    std::vector<ColumnStatistics> statistics;
    normalise(K, nq, nk, B, queries, keys, &statistics);
    Matrix<Scalar> query_gradient(Q.rows(), Q.cols());
    Matrix<Scalar> key_gradient(K.rows(), K.cols());
    Matrix<Scalar> value_gradient(V.rows(), V.cols());
    detail::head_backward(head_, queries, keys, V, out, dOut, query_gradient, key_gradient,
                          value_gradient, layout);
    for (const ColumnStatistics& column : statistics)
      add_statistics_gradients(column, Q, K, nq, nk, query_gradient, key_gradient);
    // Written last, so that a gradient may overlap any input.
    dQ = query_gradient;
    dK = key_gradient;
    dV = value_gradient;
  }

  BatchNormalized& set_threads(int threads) {
    head_.set_threads(threads);
    return *this;
  }

 private:
  friend class detail::AttentionCalls<BatchNormalized>;
  using Flags = Eigen::Array<bool, Eigen::Dynamic, 1>;

  /// The head checks its own dimension.
  template <class DQ>
  void check_head_dimension(Index, const DQ&, BatchLayout) const {}

  /// What the backward pass needs of one feature of one sequence.
  struct ColumnStatistics {
    Index sequence = 0;
    Index column = 0;
    Flags seen;
    double mean = 0.0;
    double scale = 1.0;  ///< \f$s = (\sigma_K^2 + \varepsilon)^{-1/2}\f$
  };

  template <class Queries, class Keys, class Values, class Out>
  void run(const Queries& Q, const Keys& K, const Values& V, Out& out, BatchLayout layout) const {
    const Index B = layout.sequences;
    Matrix<Scalar> queries = Q;
    Matrix<Scalar> keys = K;
    normalise(K, Q.rows() / B, K.rows() / B, B, queries, keys, nullptr);
    head_.compute(queries, keys, V, out, layout);
  }

  /// Normalises `queries` and `keys` (copies of Q and K) with the statistics of K, sequence by
  /// sequence and feature by feature; with `statistics`, keeps what the backward pass needs.
  template <class Keys>
  void normalise(const Keys& K, Index nq, Index nk, Index B, Matrix<Scalar>& queries,
                 Matrix<Scalar>& keys, std::vector<ColumnStatistics>* statistics) const {
    for (Index b = 0; b < B; ++b) {
      const Flags seen = keys_seen_in(nq, nk, b, B);
      const Index count = seen.count();
      if (count == 0) continue;
      for (Index c = 0; c < K.cols(); ++c) {
        const auto [mean, scale] = normalise_column(K.col(c).segment(b * nk, nk), seen, count,
                                                    queries.col(c).segment(b * nq, nq),
                                                    keys.col(c).segment(b * nk, nk), b, c);
        if (statistics) statistics->push_back({b, c, seen, mean, scale});
      }
    }
  }

  /// Adds the share of one feature of one sequence that flows through the normalisation to the
  /// gradients of \f$\hat q, \hat k\f$ (see `backward`).
  template <class Queries, class Keys>
  void add_statistics_gradients(const ColumnStatistics& column, const Queries& Q, const Keys& K,
                                Index nq, Index nk, Matrix<Scalar>& query_gradient,
                                Matrix<Scalar>& key_gradient) const {
    auto dq = query_gradient.col(column.column).segment(column.sequence * nq, nq);
    auto dk = key_gradient.col(column.column).segment(column.sequence * nk, nk);
    const auto q = Q.col(column.column).segment(column.sequence * nq, nq);
    const auto k = K.col(column.column).segment(column.sequence * nk, nk);
    const double shift = beta_ * column.mean;
    double centred_sum = 0.0;  // A
    double sum = 0.0;          // D
    // Over the entries with a gradient: a query that sees no key and a padded key have none, and
    // may hold anything.
    for (Index i = 0; i < nq; ++i)
      if (dq(i) != Scalar(0)) {
        centred_sum += double(dq(i)) * (double(q(i)) - shift);
        sum += double(dq(i));
      }
    for (Index j = 0; j < nk; ++j)
      if (column.seen(j) && dk(j) != Scalar(0)) {
        centred_sum += double(dk(j)) * (double(k(j)) - shift);
        sum += double(dk(j));
      }
    const double s = column.scale;
    const double count = double(column.seen.count());
    for (Index i = 0; i < nq; ++i) dq(i) = Scalar(s * double(dq(i)));
    for (Index j = 0; j < nk; ++j) {
      double gradient = s * double(dk(j));
      if (column.seen(j))
        gradient +=
            (-beta_ * s * sum - s * s * s * centred_sum * (double(k(j)) - column.mean)) / count;
      else
        gradient = 0.0;
      dk(j) = Scalar(gradient);
    }
  }

  /// The keys of sequence b that the queries see under the head's mask, \f$S\f$; throws unless
  /// every query sees either \f$S\f$ or nothing.
  [[nodiscard]] Flags keys_seen_in(Index nq, Index nk, Index b, Index B) const {
    if constexpr (requires { head_.mask(); }) {
      const auto bound = head_.mask().bind(mask::Shape{nq, nk, b, B});
      Flags seen = mask::seen_keys(bound, nq, nk);
      if (const auto unshared = mask::first_unshared_key(bound, nq, nk, seen))
        throw InvalidArgument(detail::concat(
            "BatchNormalized: the key statistics are shared by every query of a sequence, so "
            "every query that sees a key must see the same keys; under the head's mask query ",
            unshared->query, " of sequence ", b, " (", nq, " queries x ", nk,
            " keys) does not see key ", unshared->key,
            ", which another query sees (causal, window and pooled causal masks, and boolean "
            "masks whose rows differ, would let an output depend on keys its mask hides)"));
      return seen;
    } else {
      static_assert(
          !requires { head_.heads(); },
          "BatchNormalized: wrap each head of a MultiHead, not the MultiHead "
          "(MultiHead<BatchNormalized<Head>> takes the same statistics column by column "
          "and checks each head's mask)");
      return nq == 0 ? Flags::Zero(nk) : Flags::Ones(nk);
    }
  }

  /// One feature (column `c`) of one sequence (`b`): the statistics of the `count` keys of
  /// `original_keys` flagged in `seen`, applied to `queries` and `keys` in place; returns the
  /// mean and \f$s = (\sigma_K^2 + \varepsilon)^{-1/2}\f$. A finite entry
  /// whose normalised value overflows the scalar type (a query far from keys that barely vary,
  /// with a small \f$\varepsilon\f$) throws rather than turn into an infinity.
  template <class Column, class Target>
  std::pair<double, double> normalise_column(const Column& original_keys, const Flags& seen,
                                             Index count, Target queries, Target keys, Index b,
                                             Index c) const {
    double sum = 0.0;
    for (Index j = 0; j < original_keys.size(); ++j)
      if (seen(j)) sum += double(original_keys(j));
    const double mean = sum / double(count);
    double squares = 0.0;
    for (Index j = 0; j < original_keys.size(); ++j)
      if (seen(j)) {
        const double deviation = double(original_keys(j)) - mean;
        squares = std::fma(deviation, deviation, squares);
      }
    const double variance = squares / double(count);
    const double scale = 1.0 / std::sqrt(variance + epsilon_);
    const double shift = beta_ * mean;
    const auto normalise = [&](auto& column, const char* name) {
      for (Index i = 0; i < column.size(); ++i) {
        const double normalised = (double(column(i)) - shift) * scale;
        const Scalar value = Scalar(normalised);
        if (!std::isfinite(value) && std::isfinite(column(i)))
          throw InvalidArgument(detail::concat(
              "BatchNormalized: feature ", c, " of sequence ", b, ": the normalised ", name, " ", i,
              ", (x - beta mu_K) / sqrt(sigma_K^2 + epsilon) = ", normalised, ", overflows ",
              ScalarTraits<Scalar>::name, " (x = ", double(column(i)), ", mu_K = ", mean,
              ", sigma_K^2 = ", variance, ", epsilon = ", epsilon_,
              "): raise epsilon, or bring Q and K closer"));
        column(i) = value;
      }
    };
    normalise(queries, "query");
    normalise(keys, "key");
    return {mean, scale};
  }

  Head head_;
  double beta_ = 1.0;
  double epsilon_ = 1e-5;
};

}  // namespace kernattn
