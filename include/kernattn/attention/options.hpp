#pragma once
/// \file
/// How a call is laid out (batch x heads) and executed (threads, tile sizes).

#include <algorithm>

#include "kernattn/core/errors.hpp"

namespace kernattn {

/// Many independent sequences and heads in one call, in the layout that follows a projection:
/// sequence b occupies rows [b N, (b+1) N) and head h columns [h d, (h+1) d), so Q is
/// \f$(B N_q) \times (H d)\f$, K is \f$(B N_k) \times (H d)\f$, V is \f$(B N_k) \times (H d_v)\f$
/// and the output \f$(B N_q) \times (H d_v)\f$.
struct BatchLayout {
  Index sequences = 1;
  Index heads = 1;
};

/// Execution settings; none of them changes a single bit of the result.
struct ExecutionOptions {
  /// Threads for the parallel loop over sequence x head x query tile; 0 = the OpenMP default.
  int threads = 0;
  /// Queries per tile: the unit of parallel work and of the engine's scratch memory.
  /// 0 (the default) picks it from \f$N_q\f$ alone, never from the thread count: see
  /// `query_tile_for`.
  Index query_tile = 0;
  /// Keys per tile of the streaming loop; a tile of scores is query_tile x key_tile. Each thread
  /// keeps the buffers of the largest tile it has used (query_tile x (key_tile + d + d_v)
  /// scalars) for its next call.
  Index key_tile = 256;

  /// The query tile used for \f$N_q\f$ queries: `query_tile` if set, otherwise about a quarter
  /// of \f$N_q\f$ rounded up to a multiple of 16 and clamped to [64, 256], so that short
  /// sequences still split across threads and long ones get GEMM-efficient tiles.
  [[nodiscard]] Index query_tile_for(Index queries) const {
    if (query_tile > 0) return query_tile;
    const Index quarter = (queries / 4 + 15) / 16 * 16;
    return std::clamp<Index>(quarter, 64, 256);
  }

  void validate() const {
    require(threads >= 0, "ExecutionOptions: threads must be >= 0 (0 = the OpenMP default), got ",
            threads);
    require(query_tile >= 0, "ExecutionOptions: query_tile must be >= 0 (0 = automatic), got ",
            query_tile);
    require(key_tile >= 1, "ExecutionOptions: key_tile must be >= 1, got ", key_tile);
  }
};

}  // namespace kernattn
