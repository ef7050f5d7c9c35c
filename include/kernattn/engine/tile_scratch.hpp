#pragma once
/// \file
/// The scratch buffers of the exact engine's tile loop, one set per thread.

#include <array>

#include "kernattn/core/scalar_traits.hpp"

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
/// nothing that re-enters the engine; the scoring of each kernel form (`Scoring`) keeps its
/// prepared queries here.
template <Real T>
struct TileScratch {
  Vector<T> scaled_queries;
  Matrix<T> query_features;
  Eigen::VectorXd query_log_scales;
  Eigen::ArrayXXd query_norms;
  Eigen::Array<bool, Eigen::Dynamic, 1> minus_infinite;
  /// One per log-domain factor (two for a product kernel): a distance factor's
  /// \f$\lVert q\rVert^2\f$ of the tile's queries, and its scratch.
  std::array<Vector<T>, 2> query_squared_norms;
  std::array<DistanceScratch<T>, 2> distance;
  Vector<T> scores;
  Vector<T> position_scores;
  Vector<T> accumulated;
  /// The block path (`attend_query_tile_in_blocks`): the packed query blocks
  /// (`pack_query_blocks`), one block of scores and, for `BlockPrefactors` kernels, their
  /// prefactors and each row's largest prefactor.
  Vector<T> packed_queries;
  Vector<T> block_scores;
  Vector<T> block_prefactors;
  Vector<T> largest_prefactors;
  Vector<T> finite_values;

  /// The prepared queries of a tile of `rows` x `cols` (see `Scoring::prepare_tile`), over
  /// `scaled_queries`.
  [[nodiscard]] auto prepared_queries(Index rows, Index cols) {
    return matrix_over(scaled_queries, rows, cols);
  }

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

}  // namespace kernattn::detail
