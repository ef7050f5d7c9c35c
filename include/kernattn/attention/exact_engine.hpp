#pragma once
/// \file
/// The streaming exact engine: one query tile against all keys, key tile after key tile, with an
/// online softmax (running maximum and sum). No \f$N_q \times N_k\f$ matrix exists anywhere: the
/// scratch memory is one query tile x key tile of scores plus the tile's accumulators.

#include <algorithm>
#include <array>
#include <limits>
#include <type_traits>

#include "kernattn/attention/key_terms.hpp"
#include "kernattn/attention/log_weight_range.hpp"
#include "kernattn/attention/masked_product.hpp"
#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/kernels/kernel.hpp"
#include "kernattn/magnitude/magnitude.hpp"
#include "kernattn/mask/mask.hpp"

namespace kernattn::detail {

/// The scratch of one distance factor for one query tile (see `complete_squared_distances`): row
/// copies of the queries and of the current key tile for the direct recomputation, each made at
/// the first close pair that needs it (a column-major block's rows are strided, and a key row
/// spans as many pages as the key has entries). `queries_ready` is reset for every query tile,
/// `keys_ready` for every key tile.
template <Real T>
struct DistanceScratch {
  RowMajorMatrix<T> query_rows;
  RowMajorMatrix<T> key_rows;
  bool queries_ready = false;
  bool keys_ready = false;
};

/// The tile buffers of one thread, kept from call to call and only ever grown, so that a thread
/// allocates them once rather than once per query tile (for tiles of 256 x 256 floats and up,
/// every fresh allocation costs page faults). Used only inside `attend_query_tile`, which calls
/// nothing that re-enters the engine.
template <Real T>
struct TileScratch {
  Vector<T> scaled_queries;
  Matrix<T> query_features;
  Eigen::VectorXd query_log_scales;
  Eigen::ArrayXXd query_norms;
  Eigen::Array<bool, Eigen::Dynamic, 1> minus_infinite;
  /// One per distance factor (two for a product kernel).
  std::array<DistanceScratch<T>, 2> distance;
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
/// with \f$\lVert q\rVert^2\f$ in `squared_norms` (and `distance` reset for the tile).
template <class Kernel, class Queries, class Prepared>
void prepare_queries(const Kernel& kernel, const Queries& queries, Prepared&& prepared,
                     Vector<typename Kernel::Scalar>& squared_norms,
                     DistanceScratch<typename Kernel::Scalar>& distance) {
  using T = typename Kernel::Scalar;
  if constexpr (kernels::DistanceKernel<Kernel>) {
    distance.queries_ready = false;
    prepared = T(-2) * queries;
    squared_norms = queries.rowwise().squaredNorm();
  } else {
    prepared = kernel.dot_scale(queries.cols()) * queries;
  }
}

/// Writes \f$\sum_l (q_{il} - k_l)^2\f$ for every query row i of `queries` into `column`, in blocks
/// of queries whose sums stay in registers across the d coordinates.
template <class Queries, class Key, class Column>
void squared_distances_to_key(const Queries& queries, const Key& key, Column&& column) {
  using T = typename Queries::Scalar;
  constexpr Index block = 256 / Index(sizeof(T));  // four 64-byte vectors
  const Index rows = queries.rows();
  Index begin = 0;
  for (; begin + block <= rows; begin += block) {
    Eigen::Array<T, block, 1> sum = Eigen::Array<T, block, 1>::Zero();
    for (Index l = 0; l < queries.cols(); ++l)
      sum += (queries.col(l).template segment<block>(begin).array() - key(l)).square();
    column.template segment<block>(begin) = sum;
  }
  if (begin == rows) return;
  auto tail = column.segment(begin, rows - begin);
  tail.setZero();
  for (Index l = 0; l < queries.cols(); ++l)
    tail += (queries.col(l).segment(begin, rows - begin).array() - key(l)).square();
}

/// Recomputes the squared distances of column `column` (key `key` of the tile's `keys`, squared
/// norm `key_squared_norm`) whose value from the expansion is below \f$(\lVert q\rVert^2 +
/// \lVert k\rVert^2)/4\f$ (see `complete_squared_distances`) directly, as \f$\sum_l (k_l -
/// q_l)^2\f$. A few such pairs (a query that is also a key) are recomputed one by one, from
/// contiguous rows; once more than a quarter of the column is (data far from the origin), the
/// whole column is, vectorised over the queries, and so is every later column of the key tile
/// that has a close pair (`whole_columns` becomes true).
template <class Queries, class KeyRows, class Column>
void recompute_close_distances(const Queries& queries,
                               const Vector<typename Queries::Scalar>& query_squared_norms,
                               const KeyRows& keys, Index key,
                               typename Queries::Scalar key_squared_norm,
                               DistanceScratch<typename Queries::Scalar>& distance,
                               bool& whole_columns, Column&& column) {
  using T = typename Queries::Scalar;
  const Index rows = column.size();
  // Copied column by column: reading a column-major block row by row strides through as many
  // pages as it has columns.
  const auto copy_rows = [](const auto& from, RowMajorMatrix<T>& to) {
    to.resize(from.rows(), from.cols());
    for (Index l = 0; l < from.cols(); ++l) to.col(l) = from.col(l);
  };
  if (!distance.keys_ready) {
    copy_rows(keys, distance.key_rows);
    distance.keys_ready = true;
  }
  const auto key_row = distance.key_rows.row(key);
  if (whole_columns) {
    squared_distances_to_key(queries, key_row, column);
    return;
  }
  // The column is searched in chunks, each tested as a whole first (see
  // `complete_squared_distances`), so that a column with one close pair costs little more.
  constexpr Index chunk = 32;
  const auto excess = [&](const auto& squared_distances, const auto& query_norms) {
    return (key_squared_norm - (T(4) * squared_distances - query_norms)).max(T(0)).sum();
  };
  Index found = 0;
  for (Index begin = 0; begin < rows; begin += chunk) {
    const Index size = std::min(chunk, rows - begin);
    const T chunk_excess =
        size == chunk
            ? excess(column.template segment<chunk>(begin),
                     query_squared_norms.array().template segment<chunk>(begin))
            : excess(column.segment(begin, size), query_squared_norms.array().segment(begin, size));
    if (chunk_excess == T(0)) continue;
    for (Index i = begin; i < begin + size; ++i) {
      if (!(T(4) * column(i) - query_squared_norms(i) < key_squared_norm)) continue;
      if (++found > rows / 4) {
        squared_distances_to_key(queries, key_row, column);
        whole_columns = true;
        return;
      }
      if (!distance.queries_ready) {
        copy_rows(queries, distance.query_rows);
        distance.queries_ready = true;
      }
      column(i) = (key_row - distance.query_rows.row(i)).squaredNorm();
    }
  }
}

/// Completes a tile holding \f$-2\,q_i\cdot k_j\f$ to the squared distances \f$r_{ij}^2 =
/// \lVert q_i\rVert^2 + \lVert k_j\rVert^2 - 2\,q_i\cdot k_j\f$, with the squared norms
/// `query_squared_norms` and `key_squared_norms(j)`.
///
/// The expansion errs by up to about \f$d\,u\,(\lVert q\rVert + \lVert k\rVert)^2 +
/// u\,(\lVert q\rVert^2 + \lVert k\rVert^2) \le (2d + 1)\,u\,(\lVert q\rVert^2 + \lVert
/// k\rVert^2)\f$, which is large next to a small \f$r^2\f$ (a query close to a key, data far from
/// the origin): its square root would be only \f$\sqrt u\f$-accurate. So a value is kept where
/// \f$r^2 \ge (\lVert q\rVert^2 + \lVert k\rVert^2)/4\f$, where its relative error is at most
/// about \f$(8d + 5)\,u\f$, and recomputed directly below that (relative error \f$(d + 2)\,u\f$):
/// every squared distance is within \f$8(d + 2)\,u\,r^2\f$ of the exact one, and within the
/// expansion's own bound (docs/numerics.md). The test costs one pass over the tile, and random
/// data almost never fall below the threshold.
template <class Queries, class KeyRows, class KeyNorms, class Tile>
void complete_squared_distances(const Queries& queries,
                                const Vector<typename Queries::Scalar>& query_squared_norms,
                                const KeyRows& keys, const KeyNorms& key_squared_norms,
                                DistanceScratch<typename Queries::Scalar>& distance, Tile&& tile) {
  using T = typename Queries::Scalar;
  distance.keys_ready = false;
  bool whole_columns = false;
  // Column by column: Eigen does not vectorise a broadcast across a column-major block, and each
  // column here is a contiguous vector of query rows.
  for (Index j = 0; j < keys.rows(); ++j) {
    const T key_norm = key_squared_norms(j);
    auto column = tile.col(j).array();
    column += query_squared_norms.array() + key_norm;
    // r^2 < (|q|^2 + |k|^2) / 4 as 4 r^2 - |q|^2 < |k|^2 (powers of 2: no rounding), for any
    // query of the column: the sum of the positive parts of |k|^2 - (4 r^2 - |q|^2) is > 0 then,
    // and NaN if the column holds a NaN (a sum, unlike a minimum, never drops a term); either
    // way the column is searched, where a NaN is never below the threshold.
    const T excess = (key_norm - (T(4) * column - query_squared_norms.array())).max(T(0)).sum();
    if (!(excess == T(0)))
      recompute_close_distances(queries, query_squared_norms, keys, j, key_norm, distance,
                                whole_columns, column);
  }
}

/// Writes \f$\log\kappa\f$ of a log-domain kernel for a tile of queries and keys, up to the
/// query-only terms (they cancel): the GEMM of the prepared queries (see `prepare_queries`) with
/// the keys, which is all for a dot-product kernel; for a distance kernel completed to squared
/// distances (`complete_squared_distances`, with the keys' squared norms `key_squared_norms` from
/// `first_key` on) and mapped by \f$h\f$. `queries` are the factor's own columns of the query
/// tile.
template <kernels::LogDomainKernel Kernel, class Queries, class Prepared, class KeyRows, class Tile>
void log_kernel_tile(const Kernel& kernel, const Queries& queries, const Prepared& prepared,
                     const Vector<typename Kernel::Scalar>& query_squared_norms,
                     const KeyRows& keys, const Vector<typename Kernel::Scalar>& key_squared_norms,
                     Index first_key, DistanceScratch<typename Kernel::Scalar>& distance,
                     Tile&& tile) {
  tile.noalias() = prepared * keys.transpose();
  if constexpr (kernels::DistanceKernel<Kernel>) {
    complete_squared_distances(queries, query_squared_norms, keys,
                               key_squared_norms.segment(first_key, keys.rows()), distance, tile);
    kernel.log_from_squared_distance(tile.array(), queries.cols());
  }
}

/// Product form: prepares the feature columns of the queries for the feature kernel and the last
/// \f$d_t\f$ columns for the position kernel (see `prepare_queries`).
template <kernels::ProductKernel Kernel, class Queries, class Prepared>
void prepare_product_queries(const Kernel& kernel, const Queries& queries, Prepared& prepared,
                             Vector<typename Kernel::Scalar>& feature_squared_norms,
                             Vector<typename Kernel::Scalar>& position_squared_norms,
                             std::array<DistanceScratch<typename Kernel::Scalar>, 2>& distance) {
  const Index dt = kernel.position_dimension();
  const Index d = queries.cols() - dt;
  prepare_queries(kernel.feature_kernel(), queries.leftCols(d), prepared.leftCols(d),
                  feature_squared_norms, distance[0]);
  prepare_queries(kernel.position_kernel(), queries.rightCols(dt), prepared.rightCols(dt),
                  position_squared_norms, distance[1]);
}

/// Product form: writes \f$\log\kappa_F(f_q,f_k) + \log\kappa_T(t_q,t_k)\f$ (up to query-only
/// terms) for a tile of queries, their prepared form (see `prepare_product_queries`) and key
/// rows. Two dot-product factors make a dot-product kernel whose scale differs between the column
/// blocks, already applied to the prepared queries: one GEMM over all columns. Otherwise the
/// feature factor goes into the tile and the position factor is added: its GEMM accumulated into
/// the tile for a dot-product kernel, else evaluated in `position_scores` (scratch) and added.
template <kernels::ProductKernel Kernel, class Queries, class Prepared, class KeyRows, class Tile>
void product_log_tile(const Kernel& kernel, const Queries& queries, const Prepared& prepared,
                      const Vector<typename Kernel::Scalar>& feature_query_squared_norms,
                      const Vector<typename Kernel::Scalar>& position_query_squared_norms,
                      const KeyRows& keys, const KeyTerms<typename Kernel::Scalar>& terms,
                      Index first_key, Vector<typename Kernel::Scalar>& position_scores,
                      std::array<DistanceScratch<typename Kernel::Scalar>, 2>& distance,
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
    log_kernel_tile(kernel.feature_kernel(), queries.leftCols(d), prepared.leftCols(d),
                    feature_query_squared_norms, keys.leftCols(d), terms.squared_norms, first_key,
                    distance[0], tile);
    if constexpr (kernels::DotProductKernel<PositionKernel>) {
      tile.noalias() += prepared.rightCols(dt) * keys.rightCols(dt).transpose();
    } else {
      auto position_tile = TileScratch<T>::matrix_over(position_scores, tile.rows(), tile.cols());
      log_kernel_tile(kernel.position_kernel(), queries.rightCols(dt), prepared.rightCols(dt),
                      position_query_squared_norms, keys.rightCols(dt),
                      terms.position_squared_norms, first_key, distance[1], position_tile);
      tile += position_tile;
    }
  }
}

/// Requires every output row of a tile of queries (rows [first_query, first_query +
/// queries.rows()) of a sequence) to be finite when the query and every key and value it sees
/// are. The range checks keep log-weights finite, but a direct kernel holds its weights and their
/// sums in T without rescaling (`kernels::DirectForm`), and any kernel's weighted sums of values
/// near the largest T can overflow: such a row throws rather than return a silent NaN or
/// infinity. One pass over the tile's output; the keys are read only for a row that fails it.
template <class Queries, class Keys, class Values, mask::BoundMask BoundMask, class OutTile>
void require_finite_rows(const Queries& queries, Index first_query, const Keys& keys,
                         const Values& values, const BoundMask& visibility, const OutTile& out) {
  using T = typename Queries::Scalar;
  if (out.allFinite()) return;
  for (Index i = 0; i < out.rows(); ++i) {
    if (out.row(i).allFinite() || !queries.row(i).allFinite()) continue;
    bool sees_nonfinite = false;
    for (Index j = 0; j < keys.rows() && !sees_nonfinite; ++j)
      sees_nonfinite = visibility.visible(first_query + i, j) &&
                       !(keys.row(j).allFinite() && values.row(j).allFinite());
    require(sees_nonfinite, "Attention: query ", first_query + i,
            " and every key and value it sees are finite, but its weights or weighted sum of "
            "values overflow ",
            ScalarTraits<T>::name,
            " (a direct kernel holds its weights without rescaling; docs/numerics.md): scale Q "
            "and K or V down",
            std::is_same_v<T, float> ? ", compute in double" : "", ", or use a log-domain kernel");
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
/// \f$out_i = a_i / \ell_i\f$, and a row with \f$\ell_i = 0\f$ outputs zeros: it sees no key, or
/// (exponential forms) every log-weight it sees is \f$-\infty\f$, each of which weighs exactly 0.
///
/// Before any arithmetic on a key tile, the pairs it holds that the queries see are checked
/// against the numeric range of log-weights (`LogWeightRange`, docs/numerics.md); distance
/// kernels' squared distances are accurate to \f$8(d + 2)\,u\,r^2\f$ however close a query and a
/// key are (`complete_squared_distances`).
///
/// Non-finite data reaches exactly the rows that see it, and the rows that do not see it keep
/// their bits: hidden pairs are overwritten before any arithmetic, and a partially hidden tile
/// whose values hold a NaN or an infinity takes its product with the values by
/// `accumulate_nonfinite_values`.
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
                            position_query_squared_norms, scratch.distance);
  } else {
    prepare_queries(kernel, queries, scaled_queries, query_squared_norms, scratch.distance[0]);
  }

  // The range checks (docs/numerics.md): the queries' norms once per tile, then each key tile's
  // maxima against them before any arithmetic.
  const LogWeightRange<T> range = LogWeightRange<T>::of(kernel, d);
  range.norms(queries, scratch.query_norms);

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
    range.require_tile("Attention", scratch.query_norms, first_query, terms.range_norms,
                       terms.range_key_terms, first_key, tile_keys,
                       [&](Index i, Index j) { return !partial || visible(i, j); });

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
      product_log_tile(kernel, queries, scaled_queries, query_squared_norms,
                       position_query_squared_norms, key_rows, terms, first_key,
                       scratch.position_scores, scratch.distance, tile);
    } else {
      log_kernel_tile(kernel, queries, scaled_queries, query_squared_norms, key_rows,
                      terms.squared_norms, first_key, scratch.distance[0], tile);
    }

    // Weights relative to the running maximum; in a fully visible tile the row sums are taken
    // in the same pass, in a partial one after the hidden weights are zeroed.
    if constexpr (exponential) {
      Array tile_max = Array::Constant(rows, minus_infinity);
      // 0 x the log-weights, summed per row (hidden pairs of a partial tile included): NaN
      // exactly where a row of the tile holds a non-finite log-weight, such as -inf.
      Array nonfinite_probe = Array::Zero(rows);
      for (Index j = 0; j < tile_keys; ++j) {
        if constexpr (add_key_bias) tile.col(j).array() += bias(j);
        nonfinite_probe += tile.col(j).array() * T(0);
        if (!partial) tile_max = tile_max.max(tile.col(j).array());
      }
      const bool all_finite = (nonfinite_probe == T(0)).all();
      if (partial) {
        hide_invisible(minus_infinity);
        for (Index j = 0; j < tile_keys; ++j) tile_max = tile_max.max(tile.col(j).array());
      }
      // A log-weight of -inf weighs exactly 0, so a row whose visible log-weights are all -inf
      // sums to 0 and outputs zeros whatever the tiles. Eigen's vectorised exp(-inf) is a tiny
      // positive number, so a tile that holds a non-finite log-weight sets the weights of its
      // -inf ones to 0 after the exp (the select is not vectorised: only such tiles pay for it).
      const Array reference = advance_running_max(tile_max);
      for (Index j = 0; j < tile_keys; ++j) {
        auto weights = tile.col(j).array();
        if (!all_finite) {
          auto& minus_infinite = scratch.minus_infinite;
          minus_infinite = weights == minus_infinity;
          weights = (weights - reference).exp();
          weights = minus_infinite.select(T(0), weights);
        } else {
          weights = (weights - reference).exp();
        }
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

    const auto value_rows = values.middleRows(first_key, tile_keys);
    if (partial && terms.has_nonfinite_values(first_key, first_key + tile_keys))
      accumulate_nonfinite_values(tile, value_rows, visible, accumulated);
    else
      accumulated.noalias() += tile * value_rows;
  }

  // Column by column: rows of a column-major output are strided, and at power-of-two strides
  // a row-wise store thrashes the cache.
  const auto empty = running_sum == T(0);
  for (Index c = 0; c < out.cols(); ++c)
    out.col(c).array() = empty.select(T(0), accumulated.col(c).array() / running_sum);
  require_finite_rows(queries, first_query, keys, values, visibility, out);
}

}  // namespace kernattn::detail
