#pragma once
/// \file
/// The streaming exact engine: one query tile against all keys, key tile after key tile, with an
/// online softmax (running maximum and sum). No \f$N_q \times N_k\f$ matrix exists anywhere: the
/// scratch memory is one query tile x key tile of scores plus the tile's accumulators.

#include <algorithm>
#include <limits>

#include "kernattn/attention/key_terms.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/kernels/kernel.hpp"
#include "kernattn/magnitude/magnitude.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn::detail {

/// The tile buffers of one thread, kept from call to call and only ever grown, so that a thread
/// allocates them once rather than once per query tile (for tiles of 256 x 256 floats and up,
/// every fresh allocation costs page faults). Used only inside `attend_query_tile`, which calls
/// nothing that re-enters the engine.
template <Real T>
struct TileScratch {
  Vector<T> scaled_queries;
  Matrix<T> query_features;
  Eigen::VectorXd query_log_scales;
  Vector<T> scores;
  Vector<T> position_scores;
  Vector<T> accumulated;

  [[nodiscard]] static TileScratch& of_this_thread() {
    thread_local TileScratch scratch;
    return scratch;
  }

  /// A rows x cols matrix over `storage`, grown to hold it if needed. The matrix is contiguous
  /// and aligned like a fresh one whatever the storage held before, so results never depend on
  /// the thread's earlier calls (a block of a larger buffer would have another stride, and
  /// Eigen's products may sum in another order for it).
  template <class Layout = Matrix<T>>
  [[nodiscard]] static Eigen::Map<Layout, Eigen::AlignedMax> matrix_over(Vector<T>& storage,
                                                                         Index rows, Index cols) {
    if (storage.size() < rows * cols) storage.resize(rows * cols);
    return Eigen::Map<Layout, Eigen::AlignedMax>(storage.data(), rows, cols);
  }
};

/// Prepares queries for the GEMM with the keys of a dot-product, distance or direct kernel of
/// dimension `queries.cols()`: \f$a\,q\f$ for a dot-product or direct kernel; \f$-2q\f$ for the
/// squared distances \f$\lVert q\rVert^2 + \lVert k\rVert^2 - 2\,q\cdot k\f$ of a distance kernel,
/// with \f$\lVert q\rVert^2\f$ in `squared_norms`.
template <class Kernel, class Queries, class Prepared>
void prepare_queries(const Kernel& kernel, const Queries& queries, Prepared&& prepared,
                     Vector<typename Kernel::Scalar>& squared_norms) {
  using T = typename Kernel::Scalar;
  if constexpr (kernels::DistanceKernel<Kernel>) {
    prepared = T(-2) * queries;
    squared_norms = queries.rowwise().squaredNorm();
  } else {
    prepared = kernel.dot_scale(queries.cols()) * queries;
  }
}

/// Writes \f$\log\kappa\f$ of a log-domain kernel of dimension `dimension` for a tile of queries
/// and keys, up to the query-only terms (they cancel): the GEMM of the prepared queries (see
/// `prepare_queries`) with the keys, which is all for a dot-product kernel; for a distance kernel
/// the squared distances completed by the norms (`key_squared_norms` from `first_key` on) and
/// mapped by \f$h\f$.
template <kernels::LogDomainKernel Kernel, class Prepared, class KeyRows, class Tile>
void log_kernel_tile(const Kernel& kernel, Index dimension, const Prepared& prepared,
                     const Vector<typename Kernel::Scalar>& query_squared_norms,
                     const KeyRows& keys, const Vector<typename Kernel::Scalar>& key_squared_norms,
                     Index first_key, Tile&& tile) {
  tile.noalias() = prepared * keys.transpose();
  if constexpr (kernels::DistanceKernel<Kernel>) {
    // Broadcasts run column by column: Eigen does not vectorise a broadcast across a
    // column-major block, and each column here is a contiguous vector of query rows.
    for (Index j = 0; j < keys.rows(); ++j)
      tile.col(j).array() += query_squared_norms.array() + key_squared_norms(first_key + j);
    kernel.log_from_squared_distance(tile.array(), dimension);
  }
}

/// Product form: prepares the feature columns of the queries for the feature kernel and the last
/// \f$d_t\f$ columns for the position kernel (see `prepare_queries`).
template <kernels::ProductKernel Kernel, class Queries, class Prepared>
void prepare_product_queries(const Kernel& kernel, const Queries& queries, Prepared& prepared,
                             Vector<typename Kernel::Scalar>& feature_squared_norms,
                             Vector<typename Kernel::Scalar>& position_squared_norms) {
  const Index dt = kernel.position_dimension();
  const Index d = queries.cols() - dt;
  prepare_queries(kernel.feature_kernel(), queries.leftCols(d), prepared.leftCols(d),
                  feature_squared_norms);
  prepare_queries(kernel.position_kernel(), queries.rightCols(dt), prepared.rightCols(dt),
                  position_squared_norms);
}

/// Product form: writes \f$\log\kappa_F(f_q,f_k) + \log\kappa_T(t_q,t_k)\f$ (up to query-only
/// terms) for a tile of prepared queries (see `prepare_product_queries`) and key rows. Two
/// dot-product factors make a dot-product kernel whose scale differs between the column blocks,
/// already applied to the prepared queries: one GEMM over all columns. Otherwise the feature
/// factor goes into the tile and the position factor is added: its GEMM accumulated into the tile
/// for a dot-product kernel, else evaluated in `position_scores` (scratch) and added.
template <kernels::ProductKernel Kernel, class Prepared, class KeyRows, class Tile>
void product_log_tile(const Kernel& kernel, const Prepared& prepared,
                      const Vector<typename Kernel::Scalar>& feature_query_squared_norms,
                      const Vector<typename Kernel::Scalar>& position_query_squared_norms,
                      const KeyRows& keys, const KeyTerms<typename Kernel::Scalar>& terms,
                      Index first_key, Vector<typename Kernel::Scalar>& position_scores,
                      Tile&& tile) {
  using T = typename Kernel::Scalar;
  using FeatureKernel = typename Kernel::FeatureKernel;
  using PositionKernel = typename Kernel::PositionKernel;
  if constexpr (kernels::DotProductKernel<FeatureKernel> &&
                kernels::DotProductKernel<PositionKernel>) {
    tile.noalias() = prepared * keys.transpose();
  } else {
    const Index dt = kernel.position_dimension();
    const Index d = keys.cols() - dt;
    log_kernel_tile(kernel.feature_kernel(), d, prepared.leftCols(d), feature_query_squared_norms,
                    keys.leftCols(d), terms.squared_norms, first_key, tile);
    if constexpr (kernels::DotProductKernel<PositionKernel>) {
      tile.noalias() += prepared.rightCols(dt) * keys.rightCols(dt).transpose();
    } else {
      auto position_tile = TileScratch<T>::matrix_over(position_scores, tile.rows(), tile.cols());
      log_kernel_tile(kernel.position_kernel(), dt, prepared.rightCols(dt),
                      position_query_squared_norms, keys.rightCols(dt),
                      terms.position_squared_norms, first_key, position_tile);
      tile += position_tile;
    }
  }
}

/// Attends one tile of queries (rows [first_query, first_query + queries.rows()) of a sequence)
/// over all keys and writes the tile's output rows.
///
/// Every weight is kept relative to a running per-row maximum \f$m_i\f$ of its log-scale:
///  - exponential forms: \f$w_{ij} = e^{x_{ij}}\f$ with \f$x_{ij} = \log\kappa(q_i,k_j) + g(k_j) +
///    \log\mu(k_j)\f$, stored as \f$e^{x_{ij} - m_i}\f$ with \f$m_i = \max_j x_{ij}\f$;
///  - direct form: \f$w_{ij} = \kappa(q_i,k_j)\,e^{\log\mu(k_j)}\f$, stored as
///    \f$\kappa(q_i,k_j)\,e^{\log\mu(k_j) - m_i}\f$ with \f$m_i = \max_j \log\mu(k_j)\f$ (no
///    maximum without a magnitude).
/// The maxima run over the keys query i sees, so a hidden key can never underflow a visible
/// one. Per key tile: \f$m_i' = \max(m_i, \text{tile maximum})\f$, then
/// \f$\ell_i \leftarrow e^{m_i - m_i'}\ell_i + \sum_j \tilde w_{ij}\f$ and
/// \f$a_i \leftarrow e^{m_i - m_i'} a_i + \sum_j \tilde w_{ij} v_j\f$; finally
/// \f$out_i = a_i / \ell_i\f$, and a row with \f$\ell_i = 0\f$ (it sees no key) outputs zeros.
///
/// Non-finite data reaches exactly the rows that see it: hidden pairs are overwritten before
/// any arithmetic, and in a partially hidden tile whose values hold a NaN or an infinity the
/// product with the values skips the hidden pairs instead of multiplying them by zero.
template <kernels::Kernel Kernel, magnitude::Magnitude Magnitude, mask::BoundMask BoundMask,
          class QueryTile, class Keys, class Values, class OutTile>
void attend_query_tile(const Kernel& kernel, const QueryTile& queries, Index first_query,
                       const Keys& keys, const Values& values,
                       const KeyTerms<typename Kernel::Scalar>& terms, const BoundMask& visibility,
                       Index key_tile, OutTile&& out) {
  using T = typename Kernel::Scalar;
  using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
  constexpr T minus_infinity = ScalarTraits<T>::negative_infinity;
  constexpr bool exponential = [] {
    if constexpr (kernels::FeatureKernel<Kernel>) return bool(Kernel::log_domain);
    return !kernels::DirectKernel<Kernel>;
  }();
  constexpr bool add_key_bias = has_key_bias<Kernel, Magnitude>();
  constexpr bool track_maximum = exponential || add_key_bias;

  const Index rows = queries.rows();
  const Index d = queries.cols();
  const Index key_count = keys.rows();

  TileScratch<T>& scratch = TileScratch<T>::of_this_thread();
  auto scores = TileScratch<T>::matrix_over(scratch.scores, rows, std::min(key_tile, key_count));
  auto accumulated = TileScratch<T>::matrix_over(scratch.accumulated, rows, values.cols());
  accumulated.setZero();

  // The queries, scaled once per tile: a q for dot-product and direct kernels, -2 q for the
  // squared distances |q|^2 + |k|^2 - 2 q.k of distance kernels, each factor's on its own columns
  // for product kernels; the query features of feature kernels (their log-scales cancel and are
  // dropped).
  auto scaled_queries = TileScratch<T>::matrix_over(scratch.scaled_queries, rows, d);
  Vector<T> query_squared_norms;
  Vector<T> position_query_squared_norms;
  if constexpr (kernels::FeatureKernel<Kernel>) {
    scratch.query_log_scales.resize(rows);
    kernel.features(queries, scratch.query_features, scratch.query_log_scales);
  } else if constexpr (kernels::ProductKernel<Kernel>) {
    prepare_product_queries(kernel, queries, scaled_queries, query_squared_norms,
                            position_query_squared_norms);
  } else {
    prepare_queries(kernel, queries, scaled_queries, query_squared_norms);
  }

  Array running_sum = Array::Zero(rows);
  Array running_max = Array::Constant(rows, minus_infinity);

  // Moves the running maximum to include `tile_max`, rescales the sums to it, and returns the
  // reference each row's weights are taken relative to (0 for a row that has seen no key).
  // Eigen's vectorised exp clamps its argument, so exp(-inf) is a tiny positive number: the
  // factor of a row without a visible key so far is set to 0 explicitly.
  const auto advance_running_max = [&](const Array& tile_max) {
    const Array new_max = running_max.max(tile_max);
    const Array reference = (new_max == minus_infinity).select(T(0), new_max);
    const Array rescale =
        (running_max == minus_infinity).select(T(0), (running_max - reference).exp());
    running_sum *= rescale;
    accumulated.array().colwise() *= rescale;
    running_max = new_max;
    return reference;
  };

  const mask::Range query_range{first_query, first_query + rows};
  for (Index first_key = 0; first_key < key_count; first_key += key_tile) {
    const Index tile_keys = std::min(key_tile, key_count - first_key);
    const mask::Coverage coverage =
        visibility.coverage(query_range, {first_key, first_key + tile_keys});
    if (coverage == mask::Coverage::hidden) continue;
    const bool partial = coverage == mask::Coverage::partial;
    const auto visible = [&](Index i, Index j) {
      return visibility.visible(first_query + i, first_key + j);
    };
    const auto bias = [&](Index j) { return terms.key_bias(first_key + j); };

    auto tile = scores.leftCols(tile_keys);
    const auto hide_invisible = [&](T value) {
      for (Index j = 0; j < tile_keys; ++j)
        for (Index i = 0; i < rows; ++i)
          if (!visible(i, j)) tile(i, j) = value;
    };

    const auto key_rows = keys.middleRows(first_key, tile_keys);
    if constexpr (kernels::FeatureKernel<Kernel>) {
      tile.noalias() =
          scratch.query_features * terms.features.middleRows(first_key, tile_keys).transpose();
      kernel.from_feature_dot(tile.array());
    } else if constexpr (kernels::DirectKernel<Kernel>) {
      tile.noalias() = scaled_queries * key_rows.transpose();
      kernel.from_scaled_dot(tile.array());
    } else if constexpr (kernels::ProductKernel<Kernel>) {
      product_log_tile(kernel, scaled_queries, query_squared_norms, position_query_squared_norms,
                       key_rows, terms, first_key, scratch.position_scores, tile);
    } else {
      log_kernel_tile(kernel, d, scaled_queries, query_squared_norms, key_rows, terms.squared_norms,
                      first_key, tile);
    }

    // Weights relative to the running maximum; in a fully visible tile the row sums are taken
    // in the same pass, in a partial one after the hidden weights are zeroed.
    if constexpr (exponential) {
      Array tile_max = Array::Constant(rows, minus_infinity);
      for (Index j = 0; j < tile_keys; ++j) {
        if constexpr (add_key_bias) tile.col(j).array() += bias(j);
        if (!partial) tile_max = tile_max.max(tile.col(j).array());
      }
      if (partial) {
        hide_invisible(minus_infinity);
        for (Index j = 0; j < tile_keys; ++j) tile_max = tile_max.max(tile.col(j).array());
      }
      const Array reference = advance_running_max(tile_max);
      for (Index j = 0; j < tile_keys; ++j) {
        auto weights = tile.col(j).array();
        weights = (weights - reference).exp();
        if (!partial) running_sum += weights;
      }
    } else if constexpr (track_maximum) {
      Array tile_max = Array::Constant(
          rows, partial ? minus_infinity : terms.key_bias.segment(first_key, tile_keys).maxCoeff());
      if (partial)
        for (Index j = 0; j < tile_keys; ++j)
          for (Index i = 0; i < rows; ++i)
            if (visible(i, j)) tile_max(i) = std::max(tile_max(i), bias(j));
      const Array reference = advance_running_max(tile_max);
      for (Index j = 0; j < tile_keys; ++j) {
        auto weights = tile.col(j).array();
        weights *= (bias(j) - reference).exp();
        if (!partial) running_sum += weights;
      }
    } else if (!partial) {
      for (Index j = 0; j < tile_keys; ++j) running_sum += tile.col(j).array();
    }
    if (partial) {
      hide_invisible(T(0));
      for (Index j = 0; j < tile_keys; ++j) running_sum += tile.col(j).array();
    }

    if (partial && terms.has_nonfinite_values(first_key, first_key + tile_keys)) {
      for (Index j = 0; j < tile_keys; ++j)
        for (Index i = 0; i < rows; ++i)
          if (visible(i, j)) accumulated.row(i) += tile(i, j) * values.row(first_key + j);
    } else {
      accumulated.noalias() += tile * values.middleRows(first_key, tile_keys);
    }
  }

  // Column by column: rows of a column-major output are strided, and at power-of-two strides
  // a row-wise store thrashes the cache.
  const auto empty = running_sum == T(0);
  for (Index c = 0; c < out.cols(); ++c)
    out.col(c).array() = empty.select(T(0), accumulated.col(c).array() / running_sum);
}

}  // namespace kernattn::detail
