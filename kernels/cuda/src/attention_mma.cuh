#pragma once
// Fused attention on tensor cores (the kernels; attention_mma.cu launches
// them): FlashAttention-2 with the m16n8k16 mma.sync instruction (sm_80 and
// later; runs on Hopper too), bfloat16 or float16 operands with float32
// accumulation, head dims 64 and 128. tests/cuda_emulation.h runs this file's
// device code on the CPU.
//
// A block is 4 warps; each warp owns 16 rows of the block's 64 (query rows in
// the forward and dQ kernels, keys in the dK/dV kernel) of one sequence and
// head of a padded batch or of packed sequences (AttentionGeometry), rows a
// runtime stride apart. Tiles of 64 keys (or
// queries) pass through shared memory, rows padded by 16 bytes so that the
// ldmatrix fragment loads (8 rows of 16 bytes a phase) meet no bank conflict. Scores stay in registers: the S
// accumulator fragments become the A operand of the next product directly.
// The softmax runs in the log2 domain (exp2 of scores pre-scaled by
// scale * log2 e).
//
// Backward, deterministic (no atomics): a dQ kernel over each block's query
// rows (S, dP = dO V^T, dS, dQ += dS K) and a dK/dV kernel over each block's
// keys that walks every query of its group's heads (S^T, dV += P^T dO,
// dP^T, dK += dS^T Q).
//
// Register fragments of m16n8k16 (PTX ISA), per lane: g = lane / 4, t = lane % 4.
//   A (16 x 16, row-major): a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..)
//   B (16 x 8):             b0 (k 2t..2t+1, n g), b1 (k 2t+8..2t+9, n g)
//   C (16 x 8, float):      c0 c1 (g, 2t..2t+1), c2 c3 (g+8, 2t..2t+1)

#include <cfloat>

#include "common.cuh"
#include "kiln/base/attention_geometry.h"

namespace kiln::kernels::cuda {

constexpr int kWarps = 4;
constexpr int kThreadsPerBlock = 32 * kWarps;
constexpr int kBlockRows = 16 * kWarps;  // query rows or keys a block owns
constexpr int kTile = 64;                // keys or queries per shared-memory tile
constexpr float kLog2e = 1.4426950408889634f;

// Row stride of a padded shared-memory tile, in elements.
template <int D>
constexpr int ld() {
  return D + 8;
}

// --- fragments -------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ uint32_t ld32(const T* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

template <typename T>
__device__ __forceinline__ uint32_t pack(float lo, float hi) {
  if constexpr (std::is_same_v<T, BFloat16>) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  } else {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
}

// c += a b on the tensor cores.
template <typename T>
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifdef KILN_CUDA_EMULATION
  emulated_mma_m16n8k16<T>(c, a, b0, b1);
#else
  if constexpr (std::is_same_v<T, BFloat16>)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// Four 8 x 8 matrices of 16-bit elements from shared memory in one
// instruction: lanes 8j .. 8j + 7 give the row addresses of matrix j, and lane
// l receives, of matrix j, elements (l / 4, 2 (l % 4) .. + 1), or with kTrans
// elements (2 (l % 4) .. + 1, l / 4): exactly the A, B and C fragment
// positions above. Row addresses must be 16-byte aligned.
template <bool kTrans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
#ifdef KILN_CUDA_EMULATION
  emulated_ldmatrix_x4(r, row, kTrans);
#else
  const auto addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  if constexpr (kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#endif
}

// A fragment of the 16 x 16 block at m (shared memory, row-major, row stride
// ld): matrices (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15).
template <typename T>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const T* m, int ld, int lane) {
  const int j = lane / 8;
  ldmatrix_x4<false>(a, m + ((j % 2) * 8 + lane % 8) * ld + (j / 2) * 8);
}

// Two accumulator tiles (16 x 8 each, side by side) as the A fragment of a 16 x 16 block.
template <typename T>
__device__ __forceinline__ void to_a(uint32_t (&a)[4], const float (&left)[4], const float (&right)[4]) {
  a[0] = pack<T>(left[0], left[1]);
  a[1] = pack<T>(left[2], left[3]);
  a[2] = pack<T>(right[0], right[1]);
  a[3] = pack<T>(right[2], right[3]);
}

// acc (16 x 64) = A (16 x D, fragments at a) times the transpose of the 64 x D
// tile m: B(k, n) = m[n][k]. One ldmatrix gives the B fragments of two n-tiles:
// matrices (n-tile nt, k 0-7), (nt, k 8-15), (nt + 1, k 0-7), (nt + 1, k 8-15).
template <typename T, int D>
__device__ __forceinline__ void scores(float (&acc)[kTile / 8][4], const uint32_t (&a)[D / 16][4], const T* m,
                                       int lane) {
  const int j = lane / 8;
#pragma unroll
  for (int nt = 0; nt < kTile / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
#pragma unroll
  for (int nt = 0; nt < kTile / 8; nt += 2)
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t b[4];
      ldmatrix_x4<false>(b, m + ((nt + j / 2) * 8 + lane % 8) * ld<D>() + kk * 16 + (j % 2) * 8);
      mma<T>(acc[nt], a[kk], b[0], b[1]);
      mma<T>(acc[nt + 1], a[kk], b[2], b[3]);
    }
}

// acc (16 x D) += P (16 x 64, accumulator fragments p) times the 64 x D tile m:
// B(k, n) = m[k][n], transposed by ldmatrix, two n-tiles a load: matrices
// (k 0-7, n-tile dt), (k 8-15, dt), (k 0-7, dt + 1), (k 8-15, dt + 1).
template <typename T, int D>
__device__ __forceinline__ void accumulate(float (&acc)[D / 8][4], const float (&p)[kTile / 8][4], const T* m,
                                           int lane) {
  const int j = lane / 8;
#pragma unroll
  for (int kk = 0; kk < kTile / 16; ++kk) {
    uint32_t a[4];
    to_a<T>(a, p[2 * kk], p[2 * kk + 1]);
#pragma unroll
    for (int dt = 0; dt < D / 8; dt += 2) {
      uint32_t b[4];
      ldmatrix_x4<true>(b, m + (kk * 16 + (j % 2) * 8 + lane % 8) * ld<D>() + (dt + j / 2) * 8);
      mma<T>(acc[dt], a, b[0], b[1]);
      mma<T>(acc[dt + 1], a, b[2], b[3]);
    }
  }
}

// Rows [first, first + kTile) of a matrix of `rows` rows, `stride` elements
// apart, into a padded tile, zeros past `rows`; 16 bytes a thread-step.
template <typename T, int D>
__device__ __forceinline__ void load_tile(T* tile, const T* src, int64_t stride, int64_t first, int64_t rows) {
  constexpr int kChunks = D / 8;
  for (int e = threadIdx.x; e < kTile * kChunks; e += blockDim.x) {
    const int r = e / kChunks, c = e % kChunks;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (first + r < rows) v = *reinterpret_cast<const uint4*>(src + (first + r) * stride + c * 8);
    *reinterpret_cast<uint4*>(tile + r * ld<D>() + c * 8) = v;
  }
}

// 16 bytes from global to shared memory without passing through registers
// (cp.async, sm_80), zeros when !valid; complete after cp_async_wait.
__device__ __forceinline__ void cp_async16(void* shared, const void* global, bool valid) {
#ifdef KILN_CUDA_EMULATION
  kiln_emulation::cp_async(shared, global, 16, valid);
#else
  const auto dst = static_cast<uint32_t>(__cvta_generic_to_shared(shared));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global), "r"(valid ? 16 : 0));
#endif
}

// The same for one float (cp.async.ca: 4-byte copies go through L1).
__device__ __forceinline__ void cp_async4(float* shared, const float* global, bool valid) {
#ifdef KILN_CUDA_EMULATION
  kiln_emulation::cp_async(shared, global, 4, valid);
#else
  const auto dst = static_cast<uint32_t>(__cvta_generic_to_shared(shared));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(global), "r"(valid ? 4 : 0));
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#ifdef KILN_CUDA_EMULATION
  kiln_emulation::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most `pending` of this thread's committed copy groups are in flight.
template <int pending>
__device__ __forceinline__ void cp_async_wait() {
#ifdef KILN_CUDA_EMULATION
  kiln_emulation::cp_async_wait(pending);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(pending));
#endif
}

// The first query row of this block. Blocks start in grid order, and under
// a causal mask the last query tiles are the heaviest: they go first, so
// that no long block starts last.
__device__ __forceinline__ int64_t first_query_row() { return int64_t(gridDim.y - 1 - blockIdx.y) * kBlockRows; }

// Tiles of two matrices with the same rows (keys and values, or queries and
// their output gradients) in two stages: the next step's tiles are copied
// while the current step computes. Optionally two float statistics per row
// (the dK/dV kernel's logsumexp and rowsum(dO * O)) travel with them.
template <typename T, int D>
struct TileStages {
  static constexpr int kTileElements = kTile * ld<D>();
  T* tiles;  // [stage][first, second][kTile][ld], then the statistics [stage][first, second][kTile]
  const T* first_matrix;
  const T* second_matrix;
  int64_t stride;  // elements from one row to the next, in both
  int64_t rows;
  const float* first_stats = nullptr;  // row r's at first_stats[r * stats_step]; null: none
  const float* second_stats = nullptr;
  int64_t stats_step = 0;

  __device__ __forceinline__ T* first(int stage) const { return tiles + (2 * stage) * kTileElements; }
  __device__ __forceinline__ T* second(int stage) const { return tiles + (2 * stage + 1) * kTileElements; }
  __device__ __forceinline__ float* stats(int stage) const {
    return reinterpret_cast<float*>(tiles + 4 * kTileElements) + 2 * stage * kTile;
  }

  // Starts copying rows r0 .. r0 + kTile of both matrices (zeros past `rows`) into `stage`.
  __device__ __forceinline__ void fetch(int64_t r0, int stage) const {
    constexpr int kChunks = D / 8;
    for (int e = threadIdx.x; e < kTile * kChunks; e += blockDim.x) {
      const int r = e / kChunks, c = e % kChunks;
      const bool valid = r0 + r < rows;
      const int64_t row = valid ? r0 + r : 0;
      cp_async16(first(stage) + r * ld<D>() + c * 8, first_matrix + row * stride + c * 8, valid);
      cp_async16(second(stage) + r * ld<D>() + c * 8, second_matrix + row * stride + c * 8, valid);
    }
    if (first_stats)
      for (int r = threadIdx.x; r < kTile; r += blockDim.x) {
        const bool valid = r0 + r < rows;
        const int64_t at = valid ? (r0 + r) * stats_step : 0;
        cp_async4(stats(stage) + r, first_stats + at, valid);
        cp_async4(stats(stage) + kTile + r, second_stats + at, valid);
      }
    cp_async_commit();
  }

  // Runs step(first tile, second tile, statistics, r0) for the tiles starting
  // at begin, begin + kTile, ... up to row `last`, fetching each next tile
  // during the step before it. The statistics: kTile of the first, then kTile
  // of the second.
  template <typename Step>
  __device__ __forceinline__ void for_each(int64_t begin, int64_t last, Step&& step) const {
    if (last < begin) return;
    fetch(begin, 0);
    for (int64_t r0 = begin, i = 0; r0 <= last; r0 += kTile, ++i) {
      const int stage = static_cast<int>(i % 2);
      const bool more = r0 + kTile <= last;
      if (more) fetch(r0 + kTile, 1 - stage);
      if (more) cp_async_wait<1>();
      else cp_async_wait<0>();
      __syncthreads();  // every thread's copies of this tile have landed
      step(first(stage), second(stage), stats(stage), r0);
      __syncthreads();  // every warp is done with it before it is refilled
    }
  }
};

// Shared memory of the forward and dQ kernels: two stages of key and value tiles.
template <int D>
constexpr size_t kv_shared_bytes(size_t element) {
  return 4 * kTile * ld<D>() * element;
}

// A fragments of rows r and r + 8 (rows[0], rows[1]) of a matrix of
// rows_total rows, `stride` elements apart, in global memory; zeros for rows
// past the end.
template <typename T, int D>
__device__ __forceinline__ void load_row_fragments(uint32_t (&f)[D / 16][4], const T* m, int64_t stride,
                                                   const int64_t (&rows)[2], int64_t rows_total, int t) {
  const bool in0 = rows[0] < rows_total, in1 = rows[1] < rows_total;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const T* r0 = m + (in0 ? rows[0] : 0) * stride + kk * 16 + 2 * t;
    const T* r1 = m + (in1 ? rows[1] : 0) * stride + kk * 16 + 2 * t;
    f[kk][0] = in0 ? ld32(r0) : 0u;
    f[kk][1] = in1 ? ld32(r1) : 0u;
    f[kk][2] = in0 ? ld32(r0 + 8) : 0u;
    f[kk][3] = in1 ? ld32(r1 + 8) : 0u;
  }
}

// Stores a 16 x D accumulator (rows r0 and r0 + 8 of this lane, rows
// `stride` elements apart) times `factor` as T.
template <typename T, int D>
__device__ __forceinline__ void store_rows(T* dst, int64_t stride, const float (&acc)[D / 8][4], int64_t row0,
                                           int64_t rows, const float (&factor)[2], int t) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row = row0 + 8 * r;
    if (row >= rows) continue;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
      *reinterpret_cast<uint32_t*>(dst + row * stride + dt * 8 + 2 * t) =
          pack<T>(acc[dt][2 * r] * factor[r], acc[dt][2 * r + 1] * factor[r]);
  }
}

struct MmaShape {
  AttentionGeometry g;
  float scale;       // on the scores
  float scale_log2;  // scale * log2 e
};

// Where a forward or dQ block's sequence lies: its query rows (element
// offsets base * D + i * stride) and its keys and values.
template <int D>
struct QueryBlock {
  AttentionSequence seq;
  int64_t q_offset, q_stride, kv_offset, kv_stride;
  __device__ explicit QueryBlock(const AttentionGeometry& g) {
    const int64_t bh = blockIdx.x;
    seq = g.sequence(bh / g.heads_q, bh % g.heads_q);
    q_offset = seq.q_base * D;
    q_stride = seq.q_step * D;
    kv_offset = seq.k_base * D;
    kv_stride = seq.k_step * D;
  }
};

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// --- forward -------------------------------------------------------------------------

template <typename T, int D>
__global__ void __launch_bounds__(kThreadsPerBlock)
    attention_mma_forward_kernel(T* out, float* lse, const T* q, const T* k, const T* v, MmaShape s) {
  KILN_DYNAMIC_SHARED(uint4, shared_raw);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const QueryBlock<D> blk(s.g);
  const AttentionSequence& seq = blk.seq;
  const int64_t first = first_query_row(), row0 = first + warp * 16 + g;
  if (first >= seq.Tq) return;  // a block past this sequence's end (packed sequences)
  const int64_t rows[2] = {row0, row0 + 8};

  // The warp's 16 query rows as A fragments, zeros past Tq.
  uint32_t qf[D / 16][4];
  load_row_fragments<T, D>(qf, q + blk.q_offset, blk.q_stride, rows, seq.Tq, t);
  const int64_t last[2] = {rows[0] < seq.Tq ? seq.last_key(rows[0]) : -1,
                           rows[1] < seq.Tq ? seq.last_key(rows[1]) : -1};
  float o[D / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  const TileStages<T, D> stages{reinterpret_cast<T*>(shared_raw), k + blk.kv_offset, v + blk.kv_offset,
                                blk.kv_stride, seq.Tk};
  stages.for_each(0, seq.last_key_of(first, kBlockRows), [&](const T* ks, const T* vs, const float*, int64_t j0) {
    float p[kTile / 8][4];
    scores<T, D>(p, qf, ks, lane);
    // Masked, scaled scores and each row's maximum over the tile.
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kTile / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t key = j0 + nt * 8 + 2 * t + (e & 1);
        p[nt][e] = key <= last[e / 2] ? p[nt][e] * s.scale_log2 : -INFINITY;
        tile_max[e / 2] = fmaxf(tile_max[e / 2], p[nt][e]);
      }
    float base[2], correction[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(m[r], quad_max(tile_max[r]));
      // A row that has seen no key yet keeps every factor finite (and zero).
      base[r] = m_new == -INFINITY ? 0.f : m_new;
      correction[r] = exp2f(m[r] - base[r]);
      m[r] = m_new;
    }
    float sum[2] = {0.f, 0.f};
#pragma unroll
    for (int nt = 0; nt < kTile / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        p[nt][e] = exp2f(p[nt][e] - base[e / 2]);
        sum[e / 2] += p[nt][e];
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) l[r] = l[r] * correction[r] + sum[r];  // this lane's share; summed at the end
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[dt][e] *= correction[e / 2];
    accumulate<T, D>(o, p, vs, lane);
  });

  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] = quad_sum(l[r]);
    inv[r] = l[r] > 0.f ? 1.f / l[r] : 0.f;  // a row that sees no key gets zeros
  }
  store_rows<T, D>(out + blk.q_offset, blk.q_stride, o, row0, seq.Tq, inv, t);
  if (t == 0)
#pragma unroll
    for (int r = 0; r < 2; ++r)
      if (rows[r] < seq.Tq) lse[seq.query(rows[r])] = l[r] > 0.f ? m[r] / kLog2e + logf(l[r]) : -INFINITY;
}

// --- backward: dQ --------------------------------------------------------------------

template <typename T, int D>
__global__ void __launch_bounds__(kThreadsPerBlock)
    attention_mma_dq_kernel(T* dq, const T* dout, const T* q, const T* k, const T* v, const float* lse,
                            const float* delta, MmaShape s) {
  KILN_DYNAMIC_SHARED(uint4, shared_raw);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const QueryBlock<D> blk(s.g);
  const AttentionSequence& seq = blk.seq;
  const int64_t first = first_query_row(), row0 = first + warp * 16 + g;
  if (first >= seq.Tq) return;  // a block past this sequence's end (packed sequences)
  const int64_t rows[2] = {row0, row0 + 8};

  uint32_t qf[D / 16][4], df[D / 16][4];
  load_row_fragments<T, D>(qf, q + blk.q_offset, blk.q_stride, rows, seq.Tq, t);
  load_row_fragments<T, D>(df, dout + blk.q_offset, blk.q_stride, rows, seq.Tq, t);
  int64_t last[2];
  float L[2], Di[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const bool in = rows[r] < seq.Tq;
    last[r] = in ? seq.last_key(rows[r]) : -1;
    L[r] = in && last[r] >= 0 ? lse[seq.query(rows[r])] * kLog2e : 0.f;
    Di[r] = in ? delta[seq.query(rows[r])] : 0.f;
  }
  float acc[D / 8][4] = {};

  const TileStages<T, D> stages{reinterpret_cast<T*>(shared_raw), k + blk.kv_offset, v + blk.kv_offset,
                                blk.kv_stride, seq.Tk};
  stages.for_each(0, seq.last_key_of(first, kBlockRows), [&](const T* ks, const T* vs, const float*, int64_t j0) {
    float p[kTile / 8][4], dp[kTile / 8][4];
    scores<T, D>(p, qf, ks, lane);
    scores<T, D>(dp, df, vs, lane);
    // dS = P (dP - D_i), the softmax's backward (into p).
#pragma unroll
    for (int nt = 0; nt < kTile / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t key = j0 + nt * 8 + 2 * t + (e & 1);
        const float prob = key <= last[e / 2] ? exp2f(p[nt][e] * s.scale_log2 - L[e / 2]) : 0.f;
        p[nt][e] = prob * (dp[nt][e] - Di[e / 2]);
      }
    accumulate<T, D>(acc, p, ks, lane);
  });
  const float factor[2] = {s.scale, s.scale};
  store_rows<T, D>(dq + blk.q_offset, blk.q_stride, acc, row0, seq.Tq, factor, t);
}

// --- backward: dK, dV ----------------------------------------------------------------

// Dynamic shared memory of the dK/dV kernel: the block's keys and values,
// then two stages of query and output-gradient tiles and their rows' two
// statistics.
template <int D>
constexpr size_t dkv_shared_bytes(size_t element) {
  return 6 * kTile * ld<D>() * element + 4 * kTile * sizeof(float);
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreadsPerBlock)
    attention_mma_dkv_kernel(T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const float* lse,
                             const float* delta, MmaShape s) {
  KILN_DYNAMIC_SHARED(uint4, shared_raw);
  T* kb = reinterpret_cast<T*>(shared_raw);  // the block's 64 keys
  T* vb = kb + kTile * ld<D>();              // and values
  T* staged = vb + kTile * ld<D>();          // query and output-gradient tiles

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t bk = blockIdx.x, b = bk / s.g.heads_kv, hk = bk % s.g.heads_kv, group = s.g.group();
  const AttentionSequence key_seq = s.g.sequence(b, hk * group);  // the kv head's keys (any of its query heads)
  const int64_t Tk = key_seq.Tk, kv = key_seq.k_base * D, kv_stride = key_seq.k_step * D;
  const int64_t first_key = int64_t(blockIdx.y) * kBlockRows;
  if (first_key >= Tk) return;  // a block past this sequence's end (packed sequences)
  const int64_t key0 = first_key + warp * 16 + g;
  const int64_t keys[2] = {key0, key0 + 8};
  load_tile<T, D>(kb, k + kv, kv_stride, first_key, Tk);  // visible after the first staged tile's barrier
  load_tile<T, D>(vb, v + kv, kv_stride, first_key, Tk);
  const T* kw = kb + warp * 16 * ld<D>();  // this warp's 16 keys
  const T* vw = vb + warp * 16 * ld<D>();

  float dka[D / 8][4] = {}, dva[D / 8][4] = {};
  // The block's first key bounds the first query that sees any of its keys.
  int64_t i_begin = key_seq.first_query(first_key);
  i_begin -= i_begin % kTile;
  for (int64_t hq = hk * group; hq < (hk + 1) * group; ++hq) {
    const AttentionSequence seq = s.g.sequence(b, hq);
    // Query i sees keys <= i + shift and those < prefix (seq.last_key, hoisted out of the score loop: calling
    // it there costs the kernel 4 to 56 more registers, 252 at D 128 on sm_90a).
    const int64_t Tq = seq.Tq, shift = s.g.causal ? Tk - Tq : Tk, prefix = seq.prefix;
    const TileStages<T, D> stages{staged,      q + seq.q_base * D, dout + seq.q_base * D, seq.q_step * D, Tq,
                                  lse + seq.q_base, delta + seq.q_base, seq.q_step};
    stages.for_each(i_begin, Tq - 1, [&](const T* qs, const T* dos, const float* stats, int64_t i0) {
      // S^T = K Q^T and dP^T = V dO^T for the warp's 16 keys and the tile's 64 queries.
      uint32_t kf[D / 16][4], vf[D / 16][4];
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        load_a(kf[kk], kw + kk * 16, ld<D>(), lane);
        load_a(vf[kk], vw + kk * 16, ld<D>(), lane);
      }
      float p[kTile / 8][4], dp[kTile / 8][4];
      scores<T, D>(p, kf, qs, lane);
      scores<T, D>(dp, vf, dos, lane);
#pragma unroll
      for (int nt = 0; nt < kTile / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = nt * 8 + 2 * t + (e & 1);  // the query's place in the tile
          const int64_t query = i0 + col, key = keys[e / 2];
          const bool seen = query < Tq && key < Tk && (key <= query + shift || key < prefix);
          const float prob = seen ? exp2f(p[nt][e] * s.scale_log2 - stats[col] * kLog2e) : 0.f;
          p[nt][e] = prob;                                                   // P^T
          dp[nt][e] = seen ? prob * (dp[nt][e] - stats[kTile + col]) : 0.f;  // dS^T
        }
      accumulate<T, D>(dva, p, dos, lane);
      accumulate<T, D>(dka, dp, qs, lane);
    });
  }
  const float one[2] = {1.f, 1.f}, scale[2] = {s.scale, s.scale};
  store_rows<T, D>(dv + kv, kv_stride, dva, key0, Tk, one, t);
  store_rows<T, D>(dk + kv, kv_stride, dka, key0, Tk, scale, t);
}

}  // namespace kiln::kernels::cuda
