#pragma once
/// \file
/// The backward pass of the streaming exact engine (docs/gradients.md): dQ, dK and dV from Q,
/// K, V, the output, the row statistics and dOut, with the scores recomputed tile by tile and no
/// \f$N_q \times N_k\f$ matrix anywhere.

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/core/threading.hpp"
#include "kernattn/engine/block_backward.hpp"
#include "kernattn/engine/front_end.hpp"
#include "kernattn/engine/key_terms.hpp"
#include "kernattn/engine/log_weight_range.hpp"
#include "kernattn/engine/options.hpp"
#include "kernattn/engine/prepare_keys.hpp"
#include "kernattn/engine/score_bias.hpp"
#include "kernattn/engine/score_gradients.hpp"
#include "kernattn/engine/scoring.hpp"
#include "kernattn/engine/tile_scratch.hpp"
#include "kernattn/features/feature_map.hpp"
#include "kernattn/kernels/kernel.hpp"
#include "kernattn/magnitude/magnitude.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn::detail {

/// The arguments of one backward call in the batch x heads layout (`BatchLayout`): the inputs,
/// the forward's output and statistics, dOut, and the gradients it writes.
template <class Queries, class Keys, class Values, class Out, class Statistics, class OutGradient,
          class QueryGradient, class KeyGradient, class ValueGradient>
struct BackwardCall {
  const Queries& Q;
  const Keys& K;
  const Values& V;
  const Out& out;
  const Statistics& statistics;
  const OutGradient& dOut;
  QueryGradient& dQ;
  KeyGradient& dK;
  ValueGradient& dV;
  BatchLayout layout;

  [[nodiscard]] Index queries() const { return Q.rows() / layout.sequences; }
  [[nodiscard]] Index keys() const { return K.rows() / layout.sequences; }
  [[nodiscard]] Index d() const { return Q.cols() / layout.heads; }
  [[nodiscard]] Index dv() const { return V.cols() / layout.heads; }

  /// Sequence b, head h of a matrix with `rows` rows per sequence and `cols` columns per head.
  template <class M>
  [[nodiscard]] static auto block_of(M& m, Index b, Index h, Index rows, Index cols) {
    return m.block(b * rows, h * cols, rows, cols);
  }
};

/// A `BackwardCall` over its arguments.
template <class Queries, class Keys, class Values, class Out, class Statistics, class OutGradient,
          class QueryGradient, class KeyGradient, class ValueGradient>
[[nodiscard]] auto backward_call(const Queries& Q, const Keys& K, const Values& V, const Out& out,
                                 const Statistics& statistics, const OutGradient& dOut,
                                 QueryGradient& dQ, KeyGradient& dK, ValueGradient& dV,
                                 BatchLayout layout) {
  return BackwardCall<Queries, Keys, Values, Out, Statistics, OutGradient, QueryGradient,
                      KeyGradient, ValueGradient>{Q,    K,  V,  out, statistics,
                                                  dOut, dQ, dK, dV,  layout};
}

/// \f$\nabla_k\big(g(k) + \log\mu(k)\big)\f$ for every key: the gradient of the key bias of
/// `compute_key_terms`, once per key (all keys at once where the kernel and the magnitude have a
/// batch form), in double and then rounded to T.
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude, class Keys>
[[nodiscard]] Matrix<typename Kernel::Scalar> key_bias_gradients(const Kernel& kernel,
                                                                 const Magnitude& magnitude,
                                                                 const Keys& keys) {
  // In the keys' storage order, so that the batch forms and the rounding run down columns.
  Eigen::MatrixXd gradients = Eigen::MatrixXd::Zero(keys.rows(), keys.cols());
  if constexpr (Scoring<Kernel>::has_key_term) {
    if constexpr (requires { kernel.add_log_key_term_gradients(keys, gradients); })
      kernel.add_log_key_term_gradients(keys, gradients);
    else
      for (Index j = 0; j < keys.rows(); ++j)
        gradients.row(j) += kernel.log_key_term_gradient(keys.row(j));
  }
  if constexpr (!Magnitude::is_unit)
    magnitude::add_log_magnitude_gradients(magnitude, keys, gradients);
  return gradients.cast<typename Kernel::Scalar>();
}

/// What the backward pass of one sequence and head reads once: the key terms and the gradients
/// \f$\nabla_k(g + \log\mu)\f$ of the key bias, once per key; and per query row
/// \f$D_i = dO_i\cdot out_i\f$ (`products`) and the reference of its weights (`references`):
/// \f$L_i - f(q_i)\f$ for the exponential forms (the statistic without the query's own term,
/// which the scores drop), the denominator \f$\ell_i\f$ for the direct forms.
template <Real T>
struct HeadBackwardTerms {
  KeyTerms<T> key_terms;
  Matrix<T> bias_gradients;
  Vector<T> products;
  Vector<T> references;
};

/// The `HeadBackwardTerms` of one sequence and head from its blocks of the arguments.
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude, class Queries, class Keys,
          class Values, class Out, class OutGradient, class Statistics>
[[nodiscard]] HeadBackwardTerms<typename Kernel::Scalar> head_backward_terms(
    const Kernel& kernel, const Magnitude& magnitude, const Queries& queries, const Keys& keys,
    const Values& values, const Out& out, const OutGradient& dOut, const Statistics& statistics) {
  using T = typename Kernel::Scalar;
  HeadBackwardTerms<T> head;
  head.key_terms = compute_key_terms(kernel, magnitude, keys, values);
  if constexpr (has_key_bias<Kernel, Magnitude>())
    head.bias_gradients = key_bias_gradients(kernel, magnitude, keys);
  head.products = (dOut.array() * out.array()).rowwise().sum().matrix();
  if constexpr (Scoring<Kernel>::exponential) {
    Eigen::ArrayXd query_terms = Eigen::ArrayXd::Zero(queries.rows());
    Scoring<Kernel>::add_query_log_terms(kernel, queries, TileScratch<T>::of_this_thread(),
                                         query_terms);
    head.references =
        (statistics.template cast<double>().array() - query_terms).template cast<T>().matrix();
  } else {
    head.references = statistics;
  }
  return head;
}

/// The tiles of one thread's backward pass, kept from call to call.
template <Real T>
struct BackwardTiles {
  Matrix<T> weights;
  Matrix<T> weight_gradients;
  GradientScratch<T> scoring;
  BlockBackwardScratch<T> block;

  [[nodiscard]] static BackwardTiles& of_this_thread() {
    thread_local BackwardTiles tiles;
    return tiles;
  }
};

/// The partial dQ of a backward call's key stripes, kept by the calling thread from call to call:
/// fresh ones would cost page faults every time (a tenth of a call at N = 4096).
template <Real T>
struct BackwardPartials {
  [[nodiscard]] static std::vector<Matrix<T>>& of_this_thread() {
    thread_local std::vector<Matrix<T>> partials;
    return partials;
  }
};

/// What a backward call that also differentiates the parameters collects (docs/gradients.md,
/// "Parameters"): per sequence and head, \f$\partial\ell/\partial b_j\f$ for each key's bias
/// \f$b_j = g(k_j) + \log\mu(k_j)\f$ (`key_bias_gradients`, one vector of N_k per pair, b-major);
/// and per backward task, a distance kernel's \f$\sum G\,\partial h/\partial\theta\f$
/// (`score_sums`, when `kernel_parameters`).
template <Real T>
struct ParameterPartials {
  std::vector<Vector<T>> key_bias_gradients;
  std::vector<Eigen::VectorXd> score_sums;
  bool kernel_parameters = true;
  /// A feature kernel whose map has trainable frequencies, when asked for: each task's share of
  /// their gradient through the scores (the key log-scales' share is added after).
  std::vector<Matrix<T>> frequency_gradients;
  bool frequencies = false;
  /// A differentiable score bias's parameters (`mask::DifferentiableScoreBias`), when
  /// `score_bias_parameters` > 0: each task's share of their gradient.
  std::vector<Eigen::VectorXd> score_bias_sums;
  Index score_bias_parameters = 0;
};

/// A copy of `m` with its non-finite entries replaced by 0.
template <class M>
[[nodiscard]] Matrix<typename M::Scalar> finite_part(const M& m) {
  using T = typename M::Scalar;
  return m.array().isFinite().select(m, T(0));
}

/// Turns a tile of scores (`weights`, rows x keys, keys [first_key, ...) of `terms`) into the
/// normalised weights \f$P_{ij}\f$ and a tile of \f$E_{ij} = dO_i\cdot v_j - D_i\f$ (`gradient`)
/// into the score gradients \f$G_{ij}\f$, from each row's reference (\f$L_i - f(q_i)\f$, or the
/// denominator \f$\ell_i\f$), and adds each key's share of the key bias's gradient to `bias_sums`:
///  - exponential forms, \f$P_{ij} = e^{x_{ij} - L_i}\f$: \f$G_{ij} = P_{ij}E_{ij}\f$, and the
///    bias's share is \f$G_{ij}\f$; a row whose reference is \f$-\infty\f$ weighs nothing;
///  - direct forms, \f$P_{ij} = \kappa_{ij}\mu_j/\ell_i\f$: \f$G_{ij} = \mu_j E_{ij}/\ell_i\f$,
///    and the bias's share is \f$P_{ij}E_{ij}\f$; a row whose denominator is 0 weighs nothing.
/// When `partial`, the pairs that `visible(i, j)` hides get 0 before anything is derived from them.
/// `add_bias(weights)` adds the mask's score bias to the log-weights (`add_score_bias`) of an
/// exponential form.
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude, class References, class Visible,
          class AddBias>
void weights_and_score_gradients(
    const KeyTerms<typename Kernel::Scalar>& terms, Index first_key,
    const References& row_references, bool partial, const Visible& visible, const AddBias& add_bias,
    Matrix<typename Kernel::Scalar>& weights, Matrix<typename Kernel::Scalar>& gradient,
    Eigen::Array<typename Kernel::Scalar, Eigen::Dynamic, 1>& bias_sums) {
  using T = typename Kernel::Scalar;
  constexpr bool add_key_bias = has_key_bias<Kernel, Magnitude>();
  const Index rows = weights.rows();
  const Index key_count = weights.cols();
  const auto hide = [&](Matrix<T>& tile) {
    for (Index j = 0; j < key_count; ++j)
      for (Index i = 0; i < rows; ++i)
        if (!visible(i, j)) tile(i, j) = T(0);
  };
  if constexpr (Scoring<Kernel>::exponential) {
    add_bias(weights);
    for (Index j = 0; j < key_count; ++j) {
      auto column = weights.col(j).array();
      if constexpr (add_key_bias) column += terms.key_bias(first_key + j);
      column = (column - row_references).exp();
    }
    for (Index i = 0; i < rows; ++i)
      if (row_references(i) == ScalarTraits<T>::negative_infinity) weights.row(i).setZero();
    if (partial) hide(weights);
    gradient.array() *= weights.array();
    if (partial) hide(gradient);
    bias_sums += gradient.colwise().sum().transpose().array();
  } else {
    // mu_j / l_i, 0 for a row whose denominator is 0 (it outputs zeros).
    for (Index j = 0; j < key_count; ++j) {
      for (Index i = 0; i < rows; ++i) {
        const T denominator = row_references(i);
        T factor = T(0);
        if (partial && !visible(i, j)) {
          weights(i, j) = T(0);
          gradient(i, j) = T(0);
          continue;
        }
        if (denominator != T(0)) {
          if constexpr (add_key_bias)
            factor = std::copysign(T(std::exp(double(terms.key_bias(first_key + j)) -
                                              std::log(std::abs(double(denominator))))),
                                   denominator);
          else
            factor = T(1) / denominator;
        }
        const T error = gradient(i, j);
        gradient(i, j) = factor * error;
        weights(i, j) *= factor;
        if constexpr (add_key_bias) bias_sums(j) += weights(i, j) * error;
      }
    }
  }
}

/// Where one key tile's parameter partials go (`ParameterPartials`): its sequence and head's
/// key-bias gradients (written for the tile's keys), its task's score sums and its task's sums
/// of the score bias's gradient; null when the call does not differentiate them.
template <Real T>
struct ParameterTile {
  Vector<T>* key_bias_gradients = nullptr;
  Eigen::VectorXd* score_sums = nullptr;
  Matrix<T>* frequency_gradients = nullptr;
  Eigen::VectorXd* score_bias_sums = nullptr;
};

/// The contributions of one key tile (keys [first_key, first_key + keys.rows()) of a sequence
/// and head) against every query tile that sees part of it. With \f$P_{ij}\f$ the normalised
/// weight of pair (i, j) recomputed from the statistics, \f$D_i = dO_i\cdot out_i\f$ and the
/// score gradients \f$G_{ij}\f$ of `weights_and_score_gradients`, \f$dv_j \mathrel{+}= \sum_i
/// P_{ij}\,dO_i\f$; dQ rows get \f$G\f$'s query side (`ScoreGradients::add_gradients`),
/// `key_gradients` and `value_gradients` (this tile's rows of dK and dV) the key side plus the
/// bias's share times \f$\nabla(g + \log\mu)\f$.
///
/// Pairs the mask hides weigh exactly 0 and are set so before anything is derived from them. A
/// partially hidden tile that holds a non-finite entry on the key side (k, v) or the query side
/// (q, dOut, \f$D_i\f$, the statistic) is computed on its finite part, and then every gradient of
/// a pair that sees the entry becomes NaN, as the plain products would make it: a row or key that
/// does not see it keeps its bits.
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude, mask::BoundMask BoundMask,
          class Queries, class KeyRows, class ValueRows, class OutGradient, class DQ,
          class KeyGradientRows, class ValueGradientRows>
void backward_key_tile(const Kernel& kernel, const Queries& queries, const OutGradient& dOut,
                       const HeadBackwardTerms<typename Kernel::Scalar>& head, const KeyRows& keys,
                       const ValueRows& values, Index first_key, const BoundMask& visibility,
                       Index query_tile, DQ&& dq, KeyGradientRows&& key_gradients,
                       ValueGradientRows&& value_gradients,
                       ParameterTile<typename Kernel::Scalar> parameters = {}) {
  using T = typename Kernel::Scalar;
  using Gradients = ScoreGradients<Kernel>;
  const KeyTerms<T>& terms = head.key_terms;
  const Index key_count = keys.rows();
  const Index query_count = queries.rows();
  const Index d = queries.cols();

  BackwardTiles<T>& tiles = BackwardTiles<T>::of_this_thread();
  Matrix<T> dk = Matrix<T>::Zero(key_count, d);
  Matrix<T> dv = Matrix<T>::Zero(key_count, values.cols());
  Eigen::Array<T, Eigen::Dynamic, 1> bias_sums =
      Eigen::Array<T, Eigen::Dynamic, 1>::Zero(key_count);
  const Eigen::Array<bool, Eigen::Dynamic, 1> finite_keys =
      finite_rows(keys) && finite_rows(values);
  const bool keys_finite = finite_keys.all();
  const LogWeightRange<T> range = LogWeightRange<T>::of(kernel, d);
  Eigen::ArrayXXd query_norms;
  constexpr bool block_path = kernels::DotProductKernel<Kernel>;
  BlockBackwardScratch<T>& block_scratch = tiles.block;
  if constexpr (block_path) {
    block_scratch.keys.pack(keys, values);
    block_scratch.sums.reset(key_count, d, values.cols());
  }

  for (Index first = 0; first < query_count; first += query_tile) {
    const Index rows = std::min(query_tile, query_count - first);
    const mask::Coverage coverage =
        visibility.coverage({first, first + rows}, {first_key, first_key + key_count});
    if (coverage == mask::Coverage::hidden) continue;
    const bool partial = coverage == mask::Coverage::partial;
    const auto visible = [&](Index i, Index j) {
      return visibility.visible(first + i, first_key + j);
    };
    const auto query_rows = queries.middleRows(first, rows);
    const auto out_gradient_rows = dOut.middleRows(first, rows);
    const auto row_products = head.products.segment(first, rows).array();
    const auto row_references = head.references.segment(first, rows).array();
    range.norms(query_rows, query_norms);
    range.require_tile("Attention", query_norms, first, terms.range_norms, terms.range_key_terms,
                       first_key, key_count,
                       [&](Index i, Index j) { return !partial || visible(i, j); });
    // Only a partial tile is sanitised: the others need not check their queries.
    Eigen::Array<bool, Eigen::Dynamic, 1> finite_queries;
    if (partial)
      finite_queries = finite_rows(query_rows) && finite_rows(out_gradient_rows) &&
                       row_products.isFinite() && !row_references.isNaN() &&
                       row_references < std::numeric_limits<T>::infinity();
    const bool sanitise = partial && !(keys_finite && finite_queries.all());

    auto& weights = tiles.weights;
    auto& gradient = tiles.weight_gradients;
    const auto attend = [&](const auto& q, const auto& k, const auto& v, const auto& dout,
                            const KeyTerms<T>& scoring_terms, Index scoring_first_key) {
      weights.resize(rows, key_count);
      Gradients::scores(kernel, q, k, scoring_terms, scoring_first_key, tiles.scoring, weights);
      gradient.noalias() = dout * v.transpose();
      gradient.colwise() -= row_products.matrix();
      weights_and_score_gradients<Kernel, Magnitude>(
          terms, first_key, row_references, partial, visible,
          [&](Matrix<T>& log_weights) {
            add_score_bias(visibility, first, first_key, log_weights);
          },
          weights, gradient, bias_sums);
      if constexpr (kernels::ParametricKernel<Kernel> && kernels::DistanceKernel<Kernel>)
        if (parameters.score_sums != nullptr)
          Gradients::add_parameter_sums(kernel, d, tiles.scoring, gradient, *parameters.score_sums);
      if constexpr (mask::DifferentiableBoundScoreBias<BoundMask>)
        if (parameters.score_bias_sums != nullptr)
          visibility.add_bias_gradient(first, first_key, gradient, *parameters.score_bias_sums);
      dv.noalias() += weights.transpose() * dout;
      if constexpr (kernels::FeatureMapKernel<Kernel>)
        Gradients::add_gradients(kernel, q, k, tiles.scoring, gradient, dq.middleRows(first, rows),
                                 dk, parameters.frequency_gradients);
      else
        Gradients::add_gradients(kernel, q, k, tiles.scoring, gradient, dq.middleRows(first, rows),
                                 dk);
    };
    // Dot-product kernels run their tiles on the block path unless the score bias's parameters
    // are differentiated.
    const auto run_tile = [&](const auto& q, const auto& k, const auto& v, const auto& dout,
                              const KeyTerms<T>& scoring_terms, Index scoring_first_key,
                              const PackedKeyTile<T>& packed_keys) {
      if constexpr (block_path) {
        if (parameters.score_bias_sums == nullptr) {
          backward_tile_in_blocks(
              kernel, q, dout, packed_keys, block_scratch,
              has_key_bias<Kernel, Magnitude>() ? terms.key_bias.data() + first_key : nullptr,
              row_references, row_products, visibility, first, first_key, partial, visible,
              dq.middleRows(first, rows), bias_sums);
          return;
        }
      }
      attend(q, k, v, dout, scoring_terms, scoring_first_key);
    };
    if (!sanitise) {
      run_tile(query_rows, keys, values, out_gradient_rows, terms, first_key, block_scratch.keys);
      continue;
    }
    // The form's own key terms (squared norms) of the finite part, so that no NaN enters the
    // scores of pairs that the finite part leaves finite; a finite key keeps its own bits.
    const Matrix<T> finite_keys_part = finite_part(keys);
    const Matrix<T> finite_values_part = finite_part(values);
    KeyTerms<T> finite_terms;
    Eigen::VectorXd unused_log_terms = Eigen::VectorXd::Zero(key_count);
    Scoring<Kernel>::key_terms(kernel, finite_keys_part, finite_terms, unused_log_terms);
    for (Vector<T>* norms : {&finite_terms.squared_norms, &finite_terms.position_squared_norms}) {
      const Vector<T>& own =
          norms == &finite_terms.squared_norms ? terms.squared_norms : terms.position_squared_norms;
      for (Index j = 0; j < norms->size(); ++j)
        if (finite_keys(j)) (*norms)(j) = own(first_key + j);
    }
    if constexpr (block_path) block_scratch.finite_keys.pack(finite_keys_part, finite_values_part);
    run_tile(finite_part(query_rows), finite_keys_part, finite_values_part,
             finite_part(out_gradient_rows), finite_terms, 0, block_scratch.finite_keys);
    constexpr T nan = std::numeric_limits<T>::quiet_NaN();
    for (Index j = 0; j < key_count; ++j)
      for (Index i = 0; i < rows; ++i) {
        if (!visible(i, j) || (finite_keys(j) && finite_queries(i))) continue;
        dq.row(first + i).setConstant(nan);
        dk.row(j).setConstant(nan);
        dv.row(j).setConstant(nan);
        bias_sums(j) = nan;
        if (parameters.score_sums != nullptr) parameters.score_sums->setConstant(double(nan));
        if (parameters.score_bias_sums != nullptr)
          parameters.score_bias_sums->setConstant(double(nan));
        if (parameters.frequency_gradients != nullptr)
          parameters.frequency_gradients->setConstant(nan);
      }
  }
  if constexpr (block_path) block_scratch.sums.add_to(dk, dv);
  if (parameters.key_bias_gradients != nullptr)
    parameters.key_bias_gradients->segment(first_key, key_count) = bias_sums.matrix();
  // Only the keys whose bias moves the loss: a key that no row sees (padding, which may hold
  // anything) keeps a zero gradient.
  if constexpr (has_key_bias<Kernel, Magnitude>())
    for (Index j = 0; j < key_count; ++j)
      if (bias_sums(j) != T(0)) dk.row(j) += bias_sums(j) * head.bias_gradients.row(first_key + j);
  key_gradients = dk;
  value_gradients = dv;
}

/// The key tiles that a backward task takes at once: the query side of a step is packed once for
/// all of them, which halves its cost against one tile at a time for a scratch of
/// query_tile x 2 key_tile scalars per thread.
inline constexpr Index tiles_per_step = 2;

/// The most (sequence, head, key stripe) tasks a backward call makes when it has fewer
/// sequence-head pairs: each pair's keys are split into up to this many stripes of key tiles,
/// each stripe with its own partial dQ (see `attend_exact_backward`).
inline constexpr Index backward_tasks = 8;

/// The backward pass of `attend_exact` (docs/gradients.md). Per sequence and head: the key terms
/// and their gradients once per key; \f$D_i = dO_i\cdot out_i\f$ and the reference of each query
/// row (\f$L_i - f(q_i)\f$ for the exponential forms, the denominator for the direct forms) once
/// per query; then the keys' tiles in S stripes, \f$S = \min(\text{key tiles},
/// \lceil 8 / (BH)\rceil)\f$: each (sequence, head, stripe) is one task that owns its key tiles'
/// rows of dK and dV, takes them `tiles_per_step` at a time, and adds its share of dQ to a
/// partial of its own (stripe 0 to dQ itself); the partials are then added to dQ in stripe order.
/// Every split depends on the shapes alone, so the gradients are bit-identical for every thread
/// count; the extra memory is the partials, \f$(S - 1)\,N_q\,d\f$ scalars per sequence and head,
/// and one tile per thread.
template <kernels::DifferentiableKernel Kernel, magnitude::DifferentiableMagnitude Magnitude,
          mask::Mask Mask, class Call>
void attend_exact_backward(const Kernel& kernel, const Magnitude& magnitude, const Mask& mask,
                           const ExecutionOptions& options, const Call& call,
                           ParameterPartials<typename Kernel::Scalar>* parameters = nullptr) {
  using T = typename Kernel::Scalar;
  const int threads = resolve_thread_count(options.threads);
  const Index sequences = call.layout.sequences;
  const Index heads = call.layout.heads;
  const Index queries = call.queries();
  const Index keys = call.keys();
  const Index d = call.d();
  const Index dv = call.dv();
  call.dQ.setZero();
  call.dK.setZero();
  call.dV.setZero();
  if (queries == 0 || keys == 0 || dv == 0) {
    static_cast<void>(mask.bind(mask::Shape{queries, keys, 0, sequences, 0, heads}));
    return;
  }
  // Per sequence and head when the mask biases the scores, per sequence otherwise.
  const Index bound_heads = mask::ScoreBias<Mask> ? heads : 1;
  const auto bound_masks = bind_masks(mask, queries, keys, sequences, bound_heads);
  const Index pairs = sequences * heads;
  const auto keys_of = [&](Index b, Index h) { return call.block_of(call.K, b, h, keys, d); };
  const auto values_of = [&](Index b, Index h) { return call.block_of(call.V, b, h, keys, dv); };
  const auto queries_of = [&](Index b, Index h) { return call.block_of(call.Q, b, h, queries, d); };
  const auto out_gradient_of = [&](Index b, Index h) {
    return call.block_of(call.dOut, b, h, queries, dv);
  };

  std::vector<HeadBackwardTerms<T>> head_terms(static_cast<std::size_t>(pairs));
  parallel_for(pairs, threads, [&](Index pair) {
    const Index b = pair / heads;
    const Index h = pair % heads;
    head_terms[std::size_t(pair)] =
        head_backward_terms(kernel, magnitude, queries_of(b, h), keys_of(b, h), values_of(b, h),
                            call.block_of(call.out, b, h, queries, dv), out_gradient_of(b, h),
                            call.statistics.col(h).segment(b * queries, queries));
  });

  const Index key_tile = std::min(options.key_tile, keys);
  const Index tiles = 1 + (keys - 1) / key_tile;
  const Index stripes = std::min(tiles, (backward_tasks + pairs - 1) / pairs);
  const Index query_tile = options.query_tile_for(queries);
  std::vector<Matrix<T>>& partial_query_gradients = BackwardPartials<T>::of_this_thread();
  partial_query_gradients.resize(static_cast<std::size_t>(pairs * (stripes - 1)));
  if (parameters != nullptr) {
    parameters->key_bias_gradients.assign(std::size_t(pairs), Vector<T>::Zero(keys));
    parameters->score_sums.assign(std::size_t(pairs * stripes), Eigen::VectorXd());
    if (parameters->frequencies)
      parameters->frequency_gradients.assign(std::size_t(pairs * stripes), Matrix<T>());
    parameters->score_bias_sums.assign(
        std::size_t(parameters->score_bias_parameters > 0 ? pairs * stripes : 0),
        Eigen::VectorXd::Zero(parameters->score_bias_parameters));
  }
  parallel_for(pairs * stripes, threads, [&](Index task) {
    const Index pair = task / stripes;
    const Index stripe = task % stripes;
    const Index b = pair / heads;
    const Index h = pair % heads;
    const auto p = std::size_t(pair);
    ParameterTile<T> parameter_tile;
    if (parameters != nullptr) {
      parameter_tile.key_bias_gradients = &parameters->key_bias_gradients[p];
      if constexpr (kernels::ParametricKernel<Kernel> && kernels::DistanceKernel<Kernel>)
        if (parameters->kernel_parameters) {
          Eigen::VectorXd& sums = parameters->score_sums[std::size_t(task)];
          sums.setZero(Index(kernel.parameter_names().size()));
          parameter_tile.score_sums = &sums;
        }
      if (parameters->score_bias_parameters > 0)
        parameter_tile.score_bias_sums = &parameters->score_bias_sums[std::size_t(task)];
      if constexpr (features::FrequencyKernel<Kernel>)
        if (parameters->frequencies) {
          Matrix<T>& share = parameters->frequency_gradients[std::size_t(task)];
          share.setZero(kernel.feature_map().frequencies().rows(), d);
          parameter_tile.frequency_gradients = &share;
        }
    }
    const auto run_stripe = [&](auto&& dq) {
      const Index end_tile = (stripe + 1) * tiles / stripes;
      for (Index tile = stripe * tiles / stripes; tile < end_tile; tile += tiles_per_step) {
        const Index first_key = tile * key_tile;
        const Index count =
            std::min(std::min(tile + tiles_per_step, end_tile) * key_tile, keys) - first_key;
        backward_key_tile<Kernel, Magnitude>(
            kernel, queries_of(b, h), out_gradient_of(b, h), head_terms[p],
            keys_of(b, h).middleRows(first_key, count),
            values_of(b, h).middleRows(first_key, count), first_key,
            bound_masks[std::size_t(b * bound_heads + h % bound_heads)], query_tile, dq,
            call.block_of(call.dK, b, h, keys, d).middleRows(first_key, count),
            call.block_of(call.dV, b, h, keys, dv).middleRows(first_key, count), parameter_tile);
      }
    };
    if (stripe == 0) {
      run_stripe(call.block_of(call.dQ, b, h, queries, d));
    } else {
      Matrix<T>& partial = partial_query_gradients[std::size_t(pair * (stripes - 1) + stripe - 1)];
      partial.setZero(queries, d);
      run_stripe(partial);
    }
  });
  if (stripes > 1)
    parallel_for(pairs, threads, [&](Index pair) {
      auto dq = call.block_of(call.dQ, pair / heads, pair % heads, queries, d);
      for (Index stripe = 1; stripe < stripes; ++stripe)
        dq += partial_query_gradients[std::size_t(pair * (stripes - 1) + stripe - 1)];
    });
}

}  // namespace kernattn::detail
