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
    require(threads >= 0, "ExecutionOptions: threads must be >= 0 (0 = the OpenMP default), got ",
            threads);
    require(query_tile >= 0, "ExecutionOptions: query_tile must be >= 0 (0 = automatic), got ",
            query_tile);
    require(key_tile >= 1, "ExecutionOptions: key_tile must be >= 1, got ", key_tile);
  }
};

/// Settings of the linear-time engine (`LinearAttention`).
struct LinearOptions {
  /// Threads for the parallel loops over sequence x head (x query tile when not causal); 0 = the
  /// OpenMP default. No setting changes a bit of the result.
  int threads = 0;
  /// Tokens per tile when the keys are summed into the state and when queries read it: the
  /// engine's scratch is tile x (feature dimension + d_v) per thread.
  Index tile = 256;
  /// Causal masks: queries per chunk. Within a chunk the engine evaluates the
  /// chunk x chunk block of weights directly; across chunks it carries the prefix state. Longer
  /// chunks mean fewer, larger products.
  Index chunk = 64;
  /// The denominator guard \f$\tau\f$ for feature maps that can be negative (Fourier, Yaglom):
  /// a denominator below \f$\tau\,Z_i\f$ is raised to it, where \f$Z_i = \sum_{j\in M(i)}
  /// \mu(k_j)\f$ bounds \f$|\sum_{j\in M(i)} \hat\kappa(q_i,k_j)\mu(k_j)|\f$ (every
  /// trigonometric estimate lies in [-1, 1]). It changes only rows whose estimated weights
  /// nearly cancel, and bounds their output by \f$\max_j |v_j| / \tau\f$.
  double denominator_floor = 1e-3;

  void validate() const {
    require(threads >= 0, "LinearOptions: threads must be >= 0 (0 = the OpenMP default), got ",
            threads);
    require(tile >= 1, "LinearOptions: tile must be >= 1, got ", tile);
    require(chunk >= 1, "LinearOptions: chunk must be >= 1, got ", chunk);
    require(std::isfinite(denominator_floor) && denominator_floor > 0.0 && denominator_floor <= 1.0,
            "LinearOptions: denominator_floor must lie in (0, 1], got ", denominator_floor);
  }
};

}  // namespace kernattn
