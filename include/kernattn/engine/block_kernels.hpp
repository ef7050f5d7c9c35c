#pragma once
/// \file
/// The register-blocked kernels of the exact engine's block path (docs/performance.md): a block
/// of `BlockShape::rows` queries scored against a packed key tile, and its weights multiplied
/// into the packed values, each written once with Eigen's packet abstraction, so one code path
/// serves AVX-512, AVX2, SSE, NEON and scalar builds.

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <vector>

#include "kernattn/core/scalar_traits.hpp"

namespace kernattn::detail {

/// The packet and register blocking of the block kernels for scalar `T`:
///  - scores: `rows` queries x `key_panel` keys (`panel_packets` packets) in registers,
///    accumulated over the d coordinates: rows x panel_packets accumulators;
///  - values: `rows` queries x `value_packets` packets of output columns in registers,
///    accumulated over the keys: rows x value_packets accumulators.
/// With 32 vector registers (AVX-512) 6 x 2 and 6 x 4; with 16, 4 x 2 and 4 x 2.
template <Real T>
struct BlockShape {
  using Packet = typename Eigen::internal::packet_traits<T>::type;
  static constexpr Index lanes = Index(sizeof(Packet) / sizeof(T));
#ifdef EIGEN_VECTORIZE_AVX512
  static constexpr Index registers = 32;
#else
  static constexpr Index registers = 16;
#endif
  static constexpr Index rows = registers >= 32 ? 6 : 4;
  static constexpr Index panel_packets = 2;
  static constexpr Index key_panel = panel_packets * lanes;
  static constexpr Index value_packets = registers >= 32 ? 4 : 2;
  static constexpr Index value_chunk = value_packets * lanes;

  /// Keys rounded up to whole panels.
  [[nodiscard]] static constexpr Index padded_keys(Index keys) {
    return (keys + key_panel - 1) / key_panel * key_panel;
  }
  /// Value columns rounded up to whole chunks.
  [[nodiscard]] static constexpr Index padded_columns(Index columns) {
    return (columns + value_chunk - 1) / value_chunk * value_chunk;
  }
};

/// Packs the rows of `queries` (a tile of prepared queries, rows x d) block by block: block b
/// holds rows \f$[b\,R, (b+1)\,R)\f$ coordinate-major, `packed[(b d + l) R + r]` = row
/// \f$bR + r\f$, coordinate l; rows past the tile are 0.
template <class Queries>
void pack_query_blocks(const Queries& queries, Vector<typename Queries::Scalar>& packed) {
  using T = typename Queries::Scalar;
  constexpr Index R = BlockShape<T>::rows;
  const Index d = queries.cols();
  const Index blocks = (queries.rows() + R - 1) / R;
  packed.setZero(blocks * d * R);
  for (Index b = 0; b < blocks; ++b) {
    const Index rows = std::min(R, queries.rows() - b * R);
    for (Index l = 0; l < d; ++l)
      for (Index r = 0; r < rows; ++r) packed((b * d + l) * R + r) = queries(b * R + r, l);
  }
}

/// Packs the rows of `rows` (count x c) in panels of P = `BlockShape::key_panel` rows from `out`
/// on: panel p coordinate-major, `out[(p c + l) P + j]` = row \f$pP + j\f$, coordinate l; rows
/// past the last are 0.
template <class Rows>
void pack_panels(const Rows& rows, typename Rows::Scalar* out) {
  using T = typename Rows::Scalar;
  constexpr Index P = BlockShape<T>::key_panel;
  const Index count = rows.rows();
  const Index c = rows.cols();
  for (Index p = 0; p * P < count; ++p) {
    const Index panel_rows = std::min(P, count - p * P);
    for (Index l = 0; l < c; ++l) {
      T* panel_row = out + (p * c + l) * P;
      for (Index j = 0; j < panel_rows; ++j) panel_row[j] = rows(p * P + j, l);
      std::fill(panel_row + panel_rows, panel_row + P, T(0));
    }
  }
}

/// Copies the rows of `rows` (count x c) row-major to `out`, `width` >= c entries per row, the
/// last width - c of them 0. Blocks of 16 rows: each column of the block is read contiguously,
/// and the block's rows stay in cache while they are written.
template <class Rows>
void pack_padded_rows(const Rows& rows, Index width, typename Rows::Scalar* out) {
  using T = typename Rows::Scalar;
  constexpr Index block = 16;
  const Index count = rows.rows();
  for (Index first_row = 0; first_row < count; first_row += block) {
    const Index block_rows = std::min(block, count - first_row);
    for (Index c = 0; c < rows.cols(); ++c)
      for (Index j = first_row; j < first_row + block_rows; ++j) out[j * width + c] = rows(j, c);
    for (Index j = first_row; j < first_row + block_rows; ++j)
      std::fill(out + j * width + rows.cols(), out + (j + 1) * width, T(0));
  }
}

/// The keys (N_k x d) and values (N_k x d_v) of one sequence and head, packed once per call for
/// the block path: key tile t (keys \f$[t\,K, (t+1)\,K)\f$ for the engine's key tile K) in
/// panels of P keys from `panels_of_tile(t)` on, panel p coordinate-major (`[(p d + l) P + j]`,
/// keys past the tile 0), and the values row-major, `width` columns (padding 0) per key. The
/// storage only grows, so that packing again for a call of the same size allocates nothing.
template <Real T>
struct PackedKeys {
  Vector<T> panels;
  Vector<T> values;
  Index key_tile = 0;
  Index d = 0;
  Index width = 0;

  template <class Keys, class Values>
  void pack(const Keys& keys, const Values& values_in, Index tile) {
    using Shape = BlockShape<T>;
    // A tile longer than the keys is one tile of all of them (and padded_keys cannot overflow).
    key_tile = std::min(tile, std::max<Index>(keys.rows(), 1));
    d = keys.cols();
    width = Shape::padded_columns(values_in.cols());
    const Index count = keys.rows();
    const Index tiles = (count + key_tile - 1) / key_tile;
    grow(panels, tiles * Shape::padded_keys(key_tile) * d);
    for (Index t = 0; t < tiles; ++t) {
      const Index first = t * key_tile;
      pack_panels(keys.middleRows(first, std::min(key_tile, count - first)), panels_of_tile(t));
    }
    grow(values, count * width);
    pack_padded_rows(values_in, width, values.data());
  }

  static void grow(Vector<T>& storage, Index size) {
    if (storage.size() < size) storage.resize(size);
  }

  [[nodiscard]] T* panels_of_tile(Index t) {
    return panels.data() + t * BlockShape<T>::padded_keys(key_tile) * d;
  }
  [[nodiscard]] const T* panels_of_tile(Index t) const {
    return panels.data() + t * BlockShape<T>::padded_keys(key_tile) * d;
  }
  [[nodiscard]] const T* value_rows(Index first_key) const {
    return values.data() + first_key * width;
  }
};

/// The packed keys and values of the `heads` sequences and heads of a call, kept by the calling
/// thread from call to call (a copy of the keys and values of its largest call).
template <Real T>
[[nodiscard]] std::vector<PackedKeys<T>>& packed_keys_of_this_thread(std::size_t heads) {
  thread_local std::vector<PackedKeys<T>> packed;
  if (packed.size() < heads) packed.resize(heads);
  return packed;
}

/// \f$S_{rj} = \sum_l \hat q_{rl}\,k_{jl}\f$ for the R queries of one block and the `panels`
/// packed key panels at `keys`: query r's coordinate l at `queries[r * row_step + l *
/// coordinate_step]` (a packed block, `pack_query_blocks`: steps 1 and R; padded rows: steps
/// `width` and 1); row r of the scores at `scores + r * stride`, panels x P of them (columns past
/// the tile's keys hold 0 · q). The d products of each score are summed in coordinate order.
template <Real T>
void score_block(const T* queries, Index row_step, Index coordinate_step, Index d, const T* keys,
                 Index panels, T* scores, Index stride) {
  using Shape = BlockShape<T>;
  using Packet = typename Shape::Packet;
  using namespace Eigen::internal;
  constexpr Index R = Shape::rows;
  constexpr Index N = Shape::panel_packets;
  for (Index p = 0; p < panels; ++p) {
    const T* panel = keys + p * d * Shape::key_panel;
    Packet sum[R][N];
    for (Index r = 0; r < R; ++r)
      for (Index n = 0; n < N; ++n) sum[r][n] = pset1<Packet>(T(0));
    for (Index l = 0; l < d; ++l) {
      Packet key[N];
      for (Index n = 0; n < N; ++n)
        key[n] = ploadu<Packet>(panel + l * Shape::key_panel + n * Shape::lanes);
      const T* coordinate = queries + l * coordinate_step;
      for (Index r = 0; r < R; ++r) {
        const Packet query = pset1<Packet>(coordinate[r * row_step]);
        for (Index n = 0; n < N; ++n) sum[r][n] = pmadd(query, key[n], sum[r][n]);
      }
    }
    for (Index r = 0; r < R; ++r)
      for (Index n = 0; n < N; ++n)
        pstoreu(scores + r * stride + p * Shape::key_panel + n * Shape::lanes, sum[r][n]);
  }
}

/// \f$A_{rc} \mathrel{+}= \sum_{j < \text{keys}} W_{rj}\,v_{jc}\f$ for the R rows of weights at
/// `weights + r * stride` (with `Transposed`, the R columns: \f$W_{rj}\f$ at
/// `weights + j * stride + r`) and the packed value rows `values` (`width` columns each, a
/// multiple of `BlockShape::value_chunk`): row r of the accumulator at `accumulated + r * width`.
/// The keys are summed in order.
template <Real T, bool Transposed = false>
void accumulate_block(const T* weights, Index stride, Index keys, const T* values, Index width,
                      T* accumulated) {
  using Shape = BlockShape<T>;
  using Packet = typename Shape::Packet;
  using namespace Eigen::internal;
  constexpr Index R = Shape::rows;
  constexpr Index C = Shape::value_packets;
  for (Index first = 0; first < width; first += Shape::value_chunk) {
    Packet sum[R][C];
    for (Index r = 0; r < R; ++r)
      for (Index c = 0; c < C; ++c)
        sum[r][c] = ploadu<Packet>(accumulated + r * width + first + c * Shape::lanes);
    for (Index j = 0; j < keys; ++j) {
      Packet value[C];
      for (Index c = 0; c < C; ++c)
        value[c] = ploadu<Packet>(values + j * width + first + c * Shape::lanes);
      for (Index r = 0; r < R; ++r) {
        const Packet weight =
            pset1<Packet>(Transposed ? weights[j * stride + r] : weights[r * stride + j]);
        for (Index c = 0; c < C; ++c) sum[r][c] = pmadd(weight, value[c], sum[r][c]);
      }
    }
    for (Index r = 0; r < R; ++r)
      for (Index c = 0; c < C; ++c)
        pstoreu(accumulated + r * width + first + c * Shape::lanes, sum[r][c]);
  }
}

/// Splits the `count` squared distances at `scores` by `split` (see
/// `kernels::PrefactoredDistanceKernel`), in one pass: each is replaced by its exponent e, its
/// prefactor P is written at the same place of `prefactors`. Returns the largest P (a NaN P may
/// be left out of it).
template <class Split, Real T>
[[nodiscard]] T split_exponents_and_prefactors(const Split& split, T* scores, T* prefactors,
                                               Index count) {
  using Packet = typename BlockShape<T>::Packet;
  using namespace Eigen::internal;
  constexpr Index lanes = BlockShape<T>::lanes;
  Packet largest = pset1<Packet>(T(1));
  Index j = 0;
  for (; j + lanes <= count; j += lanes) {
    Packet exponent;
    Packet prefactor;
    split(ploadu<Packet>(scores + j), exponent, prefactor);
    pstoreu(scores + j, exponent);
    pstoreu(prefactors + j, prefactor);
    largest = pmax(largest, prefactor);
  }
  T result = predux_max(largest);
  for (; j < count; ++j) {
    T exponent;
    T prefactor;
    split(scores[j], exponent, prefactor);
    scores[j] = exponent;
    prefactors[j] = prefactor;
    result = std::max(result, prefactor);
  }
  return result;
}

}  // namespace kernattn::detail
