#pragma once
/// \file
/// How a call is laid out (batch x heads) and executed (threads, tile sizes).

#include <algorithm>
#include <cmath>

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

namespace detail {

inline void require_valid_threads(const char* options, int threads) {
  require(threads >= 0, options, ": threads must be >= 0 (0 = the OpenMP default), got ", threads);
}

inline void require_valid_tile(const char* options, const char* field, Index tile) {
  require(tile >= 1, options, ": ", field, " must be >= 1, got ", tile);
}

}  // namespace detail

// Every engine's settings speak one vocabulary:
//
//   threads       threads of the engine's parallel loop; 0 = the OpenMP default. It never
//                 changes a bit of the result: the work is split by tiles, never by threads.
//                 The tiles may change the last bits (where sums are split or rescaled).
//   query_tile    queries per tile: the unit of parallel work and of the engine's scratch.
//   key_tile      keys per step of the engine's loop over keys.
//   causal_chunk  (linear engine, causal masks) queries per chunk of the chunked recurrence.
//
// An engine reads only the fields it has; a field a struct does not have is one its engine has
// no use for (the graph engine visits the neighbours of a row, not tiles of keys).

/// Settings of the streaming exact engine (`Attention`, `PositionalAttention`, the IKA reference
/// mode). `threads` never changes a bit of the result; `key_tile` decides where the online
/// softmax rescales, and `query_tile` how the general tile path's products are blocked, so
/// both may change the last bits (docs/performance.md).
struct ExecutionOptions {
  /// Threads for the parallel loop over sequence x head x query tile; 0 = the OpenMP default.
  int threads = 0;
  /// Queries per tile: the unit of parallel work and of the engine's scratch memory.
  /// 0 (the default) picks it from \f$N_q\f$ alone, never from the thread count: see
  /// `query_tile_for`.
  Index query_tile = 0;
  /// Keys per tile of the streaming loop; a tile of scores is query_tile x key_tile. Each thread
  /// keeps the buffers of the largest tile it has used (query_tile x (key_tile + d + d_v)
  /// scalars, one more query_tile x key_tile for a product kernel whose position factor is a
  /// distance kernel) for its next call.
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
    detail::require_valid_threads("ExecutionOptions", threads);
    require(query_tile >= 0, "ExecutionOptions: query_tile must be >= 0 (0 = automatic), got ",
            query_tile);
    detail::require_valid_tile("ExecutionOptions", "key_tile", key_tile);
  }
};

/// Settings of the linear-time engine (`LinearAttention`, Attention-SH's pooled heads).
/// `threads` never changes a bit of the result; the tiles and the chunk decide the order in
/// which the state sums its keys, so they may change the last bits.
struct LinearOptions {
  /// Threads for the parallel loops over sequence x head (x query tile when not causal); 0 = the
  /// OpenMP default.
  int threads = 0;
  /// Queries per tile when they read a finished state (masks that are not causal): the unit of
  /// parallel work, with scratch query_tile x (feature dimension + d_v) per thread.
  Index query_tile = 256;
  /// Keys per tile when they are summed into the state: scratch key_tile x (feature dimension
  /// + d_v) per thread.
  Index key_tile = 256;
  /// Causal masks: queries per chunk. Within a chunk the engine evaluates the
  /// chunk x chunk block of weights directly; across chunks it carries the prefix state. Longer
  /// chunks mean fewer, larger products.
  Index causal_chunk = 64;
  /// The denominator guard \f$\tau\f$ for feature maps that can be negative (Fourier, Yaglom):
  /// a denominator below \f$\tau\,Z_i\f$ is raised to it, where \f$Z_i = \sum_{j\in M(i)}
  /// \mu(k_j)\f$ bounds \f$|\sum_{j\in M(i)} \hat\kappa(q_i,k_j)\mu(k_j)|\f$ (every
  /// trigonometric estimate lies in [-1, 1]). It changes only rows whose estimated weights
  /// nearly cancel, and bounds their output by \f$\max_j |v_j| / \tau\f$.
  double denominator_floor = 1e-3;

  void validate() const {
    detail::require_valid_threads("LinearOptions", threads);
    detail::require_valid_tile("LinearOptions", "query_tile", query_tile);
    detail::require_valid_tile("LinearOptions", "key_tile", key_tile);
    detail::require_valid_tile("LinearOptions", "causal_chunk", causal_chunk);
    require(std::isfinite(denominator_floor) && denominator_floor > 0.0 && denominator_floor <= 1.0,
            "LinearOptions: denominator_floor must lie in (0, 1], got ", denominator_floor);
  }
};

/// Settings of the sparse engine (`GraphAttention`). `threads` never changes a bit of the result;
/// nor does `query_tile`, except for random-feature kernels, whose query features are computed
/// a tile at a time (the last bits).
struct GraphOptions {
  /// Threads for the parallel loop over sequence x head x query tile; 0 = the OpenMP default.
  int threads = 0;
  /// Query rows per tile: the unit of parallel work.
  Index query_tile = 64;
  /// Whether every node also attends to itself: \f$N(i) \cup \{i\}\f$, whether or not the
  /// adjacency stores \f$(i, i)\f$. Needs a square adjacency (\f$N_q = N_k\f$).
  bool add_self_loops = false;

  void validate() const {
    detail::require_valid_threads("GraphOptions", threads);
    detail::require_valid_tile("GraphOptions", "query_tile", query_tile);
  }
};

/// Settings of `MultiHead`.
struct MultiHeadOptions {
  /// Threads for the heads (see `MultiHead`); 0 = the OpenMP default. No setting changes a bit
  /// of the result.
  int threads = 0;

  void validate() const { detail::require_valid_threads("MultiHeadOptions", threads); }
};

}  // namespace kernattn
