#pragma once
/// \file
/// The front end every attention shares: views of Q, K and V without copies, the shape checks
/// with their messages, the detour through a temporary when the output overlaps an input, the
/// blocks of each sequence and head, and the calls themselves (`AttentionCalls`).

#include <algorithm>
#include <limits>
#include <string_view>
#include <type_traits>
#include <vector>

#include "kernattn/core/aliasing.hpp"
#include "kernattn/core/errors.hpp"
#include "kernattn/core/threading.hpp"
#include "kernattn/engine/options.hpp"
#include "kernattn/engine/statistics_out.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn::detail {

/// A read-only view of an Eigen argument with the same storage order: no copy for a matrix, a
/// Map, a Ref or a block of one; one evaluation (not one per tile) for any other expression.
template <class Derived>
using InputView =
    Eigen::Ref<const Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, Eigen::Dynamic,
                                   Derived::IsRowMajor ? Eigen::RowMajor : Eigen::ColMajor>,
               0, Eigen::OuterStride<>>;

template <class Derived>
concept EigenDense =
    std::is_base_of_v<Eigen::DenseBase<std::remove_cvref_t<Derived>>, std::remove_cvref_t<Derived>>;

/// Whether every argument has the scalar type `Scalar`.
template <class Scalar, class... Arguments>
inline constexpr bool all_of_scalar =
    (std::is_same_v<typename std::remove_cvref_t<Arguments>::Scalar, Scalar> && ...);

/// The names the shape checks give the queries, keys and values in their messages.
struct ArgumentNames {
  std::string_view queries = "Q";
  std::string_view keys = "K";
  std::string_view values = "V";
};

/// Checks Q, K, V and out for one call in the batch x heads `layout`; the messages name the
/// argument (as `names` calls it) and both shapes. The layout is checked first, before anything
/// is allocated: B and H are >= 1, \f$B H\f$ fits in `Index`, and B is at most the rows of Q and
/// of K unless they have none (an empty call allows any B, and stores nothing per sequence).
template <class DQ, class DK, class DV, class Out>
void validate_attention_shapes(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                               const Eigen::MatrixBase<DV>& V, const Out& out, BatchLayout layout,
                               ArgumentNames names = {}) {
  using detail::shape_of;
  const std::string_view q = names.queries;
  const std::string_view k = names.keys;
  const std::string_view v = names.values;
  const Index B = layout.sequences;
  const Index H = layout.heads;
  require(B >= 1 && H >= 1, "BatchLayout: sequences and heads must be >= 1, got ", B, " and ", H);
  require(B <= std::numeric_limits<Index>::max() / H, "BatchLayout: ", B, " sequences x ", H,
          " heads overflow the index type (at most ", std::numeric_limits<Index>::max(),
          " sequence-head pairs)");
  require((Q.rows() == 0 || B <= Q.rows()) && (K.rows() == 0 || B <= K.rows()), "BatchLayout: ", B,
          " sequences but ", q, " is ", shape_of(Q), " and ", k, " is ", shape_of(K),
          ": each sequence needs at least one row of ", q, " and of ", k, " unless ", q, " or ", k,
          " has no rows");
  require(K.cols() == Q.cols(), k, " has ", K.cols(), " columns but ", q, " has ", Q.cols(),
          " (queries and keys share the head dimension): ", q, " is ", shape_of(Q), ", ", k, " is ",
          shape_of(K));
  require(V.rows() == K.rows(), v, " has ", V.rows(), " rows but ", k, " has ", K.rows(),
          " (one value per key): ", k, " is ", shape_of(K), ", ", v, " is ", shape_of(V));
  require(Q.cols() % H == 0 && V.cols() % H == 0, q, " (", shape_of(Q), ") and ", v, " (",
          shape_of(V), ") must have a multiple of ", H, " columns for ", H, " heads");
  require(Q.cols() / H >= 1, q, " is ", shape_of(Q), ": the head dimension d must be at least 1");
  require(Q.rows() % B == 0 && K.rows() % B == 0, q, " (", shape_of(Q), ") and ", k, " (",
          shape_of(K), ") must have a multiple of ", B, " rows for ", B, " sequences");
  require(out.rows() == Q.rows() && out.cols() == V.cols(), "out is ", shape_of(out),
          " but the attention output is ", shape_of(Q.rows(), V.cols()), " (", q, "'s rows x ", v,
          "'s columns)");
}

/// Calls `body(destination)` with `out` itself, or when `overlaps` with a temporary of its shape
/// that is copied into `out` afterwards.
template <class Out, class Body>
void with_destination(Out& out, bool overlaps, Body&& body) {
  if (overlaps) {
    Matrix<typename std::remove_cvref_t<Out>::Scalar> separate(out.rows(), out.cols());
    body(separate);
    out = separate;
  } else {
    body(out);
  }
}

/// Calls `body(queries, keys, values, destination)` with read-only views of Q, K and V. When
/// `out` may overlap one of them, `destination` is a temporary that is copied into `out`
/// afterwards; otherwise it is `out` itself.
template <class DQ, class DK, class DV, class Out, class Body>
void with_input_views(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                      const Eigen::MatrixBase<DV>& V, Out&& out, Body&& body) {
  const InputView<DQ> queries(Q);
  const InputView<DK> keys(K);
  const InputView<DV> values(V);
  with_destination(out, may_share_memory_with_any(out, queries, keys, values),
                   [&](auto& destination) { body(queries, keys, values, destination); });
}

/// Calls `attend(values, out, statistics)`, a forward pass that writes its row statistics into
/// `statistics`, by the rules every `compute(..., statistics)` follows: `statistics` is resized
/// to $(B N_q) 	imes H$ (`query_rows` x `heads`) and written through a temporary when it
/// may overlap an input (`overlaps`); when V has no columns, the pass runs on values of one zero
/// column per head into a scratch output (the statistics do not depend on the values, and a call
/// without value columns attends nothing).
template <Real T, class Values, class Out, class Attend>
void compute_with_statistics(const Values& V, Out& out, Matrix<T>& statistics, bool overlaps,
                             Index query_rows, Index key_rows, Index heads, Attend&& attend) {
  Matrix<T> separate;
  Matrix<T>& target = overlaps ? separate : statistics;
  target.setZero(query_rows, heads);
  if (V.cols() == 0 && query_rows > 0 && key_rows > 0) {
    const Matrix<T> zeros = Matrix<T>::Zero(V.rows(), heads);
    Matrix<T> unused(query_rows, heads);
    attend(zeros, unused, target);
  } else {
    attend(V, out, target);
  }
  if (overlaps) statistics = separate;
}

/// Finishes a call with nothing to attend, one without queries, keys or value columns, and says
/// whether it did. Its output is zeros (a query that sees no key outputs zeros) and the mask is
/// checked against the shape of the first sequence only: such a call stores nothing per sequence
/// and forms no block of its inputs (an empty matrix may have no storage, and Eigen forms the
/// address of a block by offsetting the matrix's, a null pointer then).
template <mask::Mask Mask, class Out>
[[nodiscard]] bool finish_empty_call(const Mask& mask, Index queries, Index keys, Index sequences,
                                     Out& out, Index heads = 1) {
  if (queries > 0 && keys > 0 && out.cols() > 0) return false;
  static_cast<void>(mask.bind(mask::Shape{queries, keys, 0, sequences, 0, heads}));
  out.setZero();
  return true;
}

/// `m.middleCols(first, count)`, formed at column 0 when `m` has no entries: every block of it is
/// empty then, and an empty matrix may have no storage to offset.
template <class M>
[[nodiscard]] auto columns_of(M& m, Index first, Index count) {
  return m.middleCols(m.size() == 0 ? 0 : first, count);
}

/// The set filter bound to each of the B sequences of a call, and with `heads` > 1 to each of
/// their heads: entry \f$b H + h\f$ (a score bias may differ between heads).
template <mask::Mask Mask>
[[nodiscard]] auto bind_masks(const Mask& mask, Index queries, Index keys, Index sequences,
                              Index heads = 1) {
  std::vector<decltype(mask.bind(mask::Shape{}))> bound;
  bound.reserve(std::size_t(sequences * heads));
  for (Index b = 0; b < sequences; ++b)
    for (Index h = 0; h < heads; ++h)
      bound.push_back(mask.bind(mask::Shape{queries, keys, b, sequences, h, heads}));
  return bound;
}

/// The blocks of one call in the batch x heads layout (`BatchLayout`): sequence b's rows and head
/// h's columns of Q, K, V and the output, and the parallel loops over them. Every split of the
/// work depends on the shapes alone, never on the threads, so results are bit-identical for every
/// thread count. With `group` g > 1 the query heads share key/value heads (grouped-query
/// attention): K and V hold \f$H/g\f$ heads, and query head h reads key/value head
/// \f$\lfloor h/g \rfloor\f$ in place.
template <class Queries, class Keys, class Values, class Out>
class CallBlocks {
 public:
  CallBlocks(const Queries& Q, const Keys& K, const Values& V, Out& out, BatchLayout layout,
             Index group = 1)
      : sequences(layout.sequences),
        heads(layout.heads),
        group(group),
        key_heads(layout.heads / group),
        queries(Q.rows() / layout.sequences),
        keys(K.rows() / layout.sequences),
        d(Q.cols() / layout.heads),
        dv(V.cols() / key_heads),
        Q_(Q),
        K_(K),
        V_(V),
        out_(out) {}

  const Index sequences;
  /// The query heads, the query heads per key/value head, and the key/value heads.
  const Index heads;
  const Index group;
  const Index key_heads;
  /// \f$N_q\f$ and \f$N_k\f$ of one sequence.
  const Index queries;
  const Index keys;
  /// The query and key columns, and the value columns, of one head.
  const Index d;
  const Index dv;

  /// Queries [first, first + rows) of sequence b, head h.
  [[nodiscard]] auto query_rows(Index b, Index h, Index first, Index rows) const {
    return Q_.block(b * queries + first, h * d, rows, d);
  }
  [[nodiscard]] auto queries_of(Index b, Index h) const { return query_rows(b, h, 0, queries); }
  /// The keys and values query head h of sequence b attends.
  [[nodiscard]] auto keys_of(Index b, Index h) const {
    return K_.block(b * keys, h / group * d, keys, d);
  }
  [[nodiscard]] auto values_of(Index b, Index h) const {
    return V_.block(b * keys, h / group * dv, keys, dv);
  }
  /// Output rows [first, first + rows) of sequence b, head h.
  [[nodiscard]] auto out_rows(Index b, Index h, Index first, Index rows) const {
    return out_.block(b * queries + first, h * dv, rows, dv);
  }
  [[nodiscard]] auto out_of(Index b, Index h) const { return out_rows(b, h, 0, queries); }
  /// The whole output.
  [[nodiscard]] Out& out() const { return out_; }

  /// Runs `body(b, h)` for every sequence b and head h, in parallel.
  template <class Body>
  void for_each_head(int threads, Body&& body) const {
    parallel_for(sequences * heads, threads, [&](Index item) { body(item / heads, item % heads); });
  }
  /// Runs `body(b, kv)` for every sequence b and key/value head kv, in parallel.
  template <class Body>
  void for_each_key_head(int threads, Body&& body) const {
    parallel_for(sequences * key_heads, threads,
                 [&](Index item) { body(item / key_heads, item % key_heads); });
  }
  /// Where the per-key terms of query head h of sequence b are, among
  /// \f$B \cdot H/g\f$: those of its key/value head.
  [[nodiscard]] std::size_t key_head_index(Index b, Index h) const {
    return std::size_t(b * key_heads + h / group);
  }

  /// Runs `body(b, h, first, rows)` for every block of `block` queries (the last one shorter) of
  /// every sequence and head, in parallel.
  template <class Body>
  void for_each_query_block(Index block, int threads, Body&& body) const {
    const Index blocks = queries == 0 ? 0 : 1 + (queries - 1) / block;
    parallel_for(sequences * heads * blocks, threads, [&](Index item) {
      const Index first = item % blocks * block;
      body(item / blocks / heads, item / blocks % heads, first, std::min(block, queries - first));
    });
  }

 private:
  const Queries& Q_;
  const Keys& K_;
  const Values& V_;
  Out& out_;
};

/// Sets `options.threads` (0 = the OpenMP default) if the options stay valid with it.
template <class Options>
void set_thread_count(Options& options, int threads) {
  Options changed = options;
  changed.threads = threads;
  changed.validate();
  options = changed;
}

/// The calls every attention engine offers, written once (CRTP): `operator()`, `compute` and
/// `set_threads`. `Derived` provides `Scalar`, `check_head_dimension(d, Q, layout)` for checks
/// beyond the shapes, and `run(queries, keys, values, out, layout)`, and befriends this class;
/// `set_threads` needs an `options_` member with `threads` and `validate()`, and an optional
/// `resolve_layout(layout)` replaces the caller's layout (a multi-head fills in its head count).
template <class Derived>
class AttentionCalls {
 public:
  /// The attention output, \f$N_q \times d_v\f$ (or \f$(B N_q) \times (H d_v)\f$ for a batch).
  template <class DQ, class DK, class DV>
  [[nodiscard]] auto operator()(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                                const Eigen::MatrixBase<DV>& V, BatchLayout layout = {}) const {
    Matrix<typename DQ::Scalar> out(Q.rows(), V.cols());
    compute(Q, K, V, out, layout);
    return out;
  }

  /// Writes the attention output into `out` (a matrix, Map, Ref or block of the right shape).
  /// `out` may overlap Q, K or V (e.g. `compute(Q, K, V, V)`): the result then goes through a
  /// temporary first.
  template <class DQ, class DK, class DV, EigenDense Out>
  void compute(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
               const Eigen::MatrixBase<DV>& V, Out&& out, BatchLayout layout = {}) const {
    static_assert(all_of_scalar<typename Derived::Scalar, DQ, DK, DV, Out>,
                  "Q, K, V and out must have the attention's scalar type");
    const BatchLayout resolved = resolve(layout);
    validate_attention_shapes(Q, K, V, out, resolved);
    self().check_head_dimension(Q.cols() / resolved.heads, Q, resolved);
    with_input_views(
        Q, K, V, out,
        [&](const auto& queries, const auto& keys, const auto& values, auto& destination) {
          self().run(queries, keys, values, destination, resolved);
        });
  }

  /// Writes the attention output into `out`, as `compute(Q, K, V, out, layout)`, and the row
  /// statistics into `statistics`, resized to \f$(B N_q) \times H\f$ (docs/gradients.md): per
  /// query row and head, the statistic `Derived::row_statistic` names (see there). They are what
  /// the backward pass needs, and what merges outputs over disjoint key sets; writing them costs
  /// one pass over the output rows, and the output's bits are those of the call without them.
  /// `Derived::run` takes a `StatisticsOut` after the layout.
  template <class DQ, class DK, class DV, EigenDense Out, class Self = Derived>
  void compute(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
               const Eigen::MatrixBase<DV>& V, Out&& out, Matrix<typename DQ::Scalar>& statistics,
               BatchLayout layout = {}) const requires requires {
    Self::row_statistic;
  }
  {
    using Scalar = typename Derived::Scalar;
    static_assert(all_of_scalar<Scalar, DQ, DK, DV, Out>,
                  "Q, K, V and out must have the attention's scalar type");
    const BatchLayout resolved = resolve(layout);
    validate_attention_shapes(Q, K, V, out, resolved);
    self().check_head_dimension(Q.cols() / resolved.heads, Q, resolved);
    compute_with_statistics(
        V, out, statistics, may_share_memory_with_any(statistics, Q, K, V, out), Q.rows(), K.rows(),
        resolved.heads, [&](const auto& values_in, auto& out_in, Matrix<Scalar>& target) {
          with_input_views(
              Q, K, values_in, out_in,
              [&](const auto& queries, const auto& keys, const auto& values, auto& destination) {
                self().run(queries, keys, values, destination, resolved,
                           StatisticsOut<Scalar>{&target, Q.rows() / resolved.sequences});
              });
        });
  }

  /// The normalised attention weights, for analysis of small problems (docs/conventions.md,
  /// "Attention weights"): a \f$(B N_q) \times (H N_k)\f$ matrix whose row \f$b N_q + i\f$,
  /// columns \f$[h N_k, (h+1) N_k)\f$ hold \f$w_{ij} / \sum_{j'} w_{ij'}\f$ of query i over the
  /// keys of sequence b, head h (zero for the keys its filter hides; a zero row for a query that
  /// sees no key). Computed as the output for values that are the identity of each sequence and
  /// head, so through exactly the forward's path: \f$O(N_q N_k (d + N_k))\f$ time per sequence
  /// and head, and \f$B H N_k^2\f$ values of scratch (at most \f$2^{28}\f$, else
  /// `InvalidArgument`).
  template <class DQ, class DK>
  [[nodiscard]] Matrix<typename DQ::Scalar> weights(const Eigen::MatrixBase<DQ>& Q,
                                                    const Eigen::MatrixBase<DK>& K,
                                                    BatchLayout layout = {}) const {
    using T = typename DQ::Scalar;
    const BatchLayout resolved = resolve(layout);
    require(resolved.sequences >= 1 && resolved.heads >= 1 && K.rows() % resolved.sequences == 0,
            "weights: K is ", shape_of(K), " but the layout has ", resolved.sequences,
            " sequence(s) and ", resolved.heads, " head(s)");
    const Index nk = K.rows() / resolved.sequences;
    require(double(resolved.sequences) * double(resolved.heads) * double(nk) * double(nk) <= 0x1p28,
            "weights: ", resolved.sequences, " sequence(s) x ", resolved.heads, " head(s) x ", nk,
            "^2 keys is too large for the weights of a small problem (at most 2^28 values)");
    Matrix<T> identity = Matrix<T>::Zero(K.rows(), resolved.heads * nk);
    for (Index b = 0; b < resolved.sequences; ++b)
      for (Index h = 0; h < resolved.heads; ++h)
        identity.block(b * nk, h * nk, nk, nk).setIdentity();
    return (*this)(Q, K, identity, layout);
  }

  /// Sets the number of threads (0 = the OpenMP default); returns *this.
  Derived& set_threads(int threads) {
    set_thread_count(static_cast<Derived&>(*this).options_, threads);
    return static_cast<Derived&>(*this);
  }

 private:
  [[nodiscard]] const Derived& self() const { return static_cast<const Derived&>(*this); }
  /// The caller's layout, or the one `Derived::resolve_layout` makes of it.
  [[nodiscard]] BatchLayout resolve(BatchLayout layout) const {
    if constexpr (requires { self().resolve_layout(layout); })
      return self().resolve_layout(layout);
    else
      return layout;
  }
};

}  // namespace kernattn::detail
