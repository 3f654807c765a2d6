// Fused attention, FlashAttention's algorithm on CUDA cores: the correct,
// general kernel that any dtype and head dim up to 256 runs on, and the
// reference for the tensor-core kernels (attention_mma.cu), which take
// bfloat16/float16 with head dims 64 and 128.
//
// A padded batch or packed sequences (AttentionGeometry): the grid covers the
// longest sequence, and blocks past a shorter one's end have nothing to do.
//
// Forward: a block takes 64 query rows of one (sequence, head), one thread per
// row holding its query and output accumulator in registers; tiles of keys
// and values pass through shared memory (float32), and each thread keeps an
// online softmax (running max and sum), so the Tq x Tk scores never exist.
// Backward (FlashAttention-2's, split for determinism): a row-dot kernel
// (D_i = dO_i . O_i), a dQ kernel with the forward's layout, and a dK/dV
// kernel with one thread per key that walks every query of its group's heads.
// No atomics: the same inputs give the same bits.

#include <cfloat>

#include "attention_mma.h"
#include "common.cuh"
#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

namespace {

constexpr int kRows = 64;  // threads per block: query rows (forward, dQ) or keys (dK/dV)

// Keys (or queries) per shared-memory tile for head dims up to kD: 32 KiB for two float tiles.
template <int kD>
constexpr int tile_rows() {
  return 4096 / kD;
}

// Rows [first, first + n) of a T-row matrix whose rows lie `stride` elements
// apart into a float tile (zeros past T and past D).
template <typename T, int kD>
__device__ void load_tile(float (*tile)[kD], const T* src, int64_t stride, int64_t first, int n, int64_t T_rows,
                          int D) {
  for (int e = threadIdx.x; e < n * kD; e += blockDim.x) {
    const int r = e / kD, d = e % kD;
    tile[r][d] = (first + r < T_rows && d < D) ? float(load(src + (first + r) * stride + d)) : 0.f;
  }
}

// What a thread of a forward or dQ block works on: block (sequence, head) x
// 64 rows, the thread one query row.
struct QueryRow {
  AttentionSequence seq;
  int64_t i;           // its query in the sequence
  int64_t row;         // its row (element offset row * D, statistics at row)
  int64_t last;        // the last key it sees (-1: none, or no row)
  int64_t block_last;  // the last key any row of the block sees: later tiles are skipped whole
  bool active;         // a real row (the last block may run past the sequence)

  __device__ explicit QueryRow(const AttentionGeometry& g) {
    const int64_t bh = blockIdx.x;
    seq = g.sequence(bh / g.heads_q, bh % g.heads_q);
    const int64_t first_row = int64_t(blockIdx.y) * kRows;
    i = first_row + threadIdx.x;
    active = i < seq.Tq;
    row = seq.query(active ? i : 0);
    last = active ? seq.last_key(i) : -1;
    block_last = seq.last_key_of(first_row, kRows);
  }
};

// Keys and values j0 .. j0 + tile of `seq` into shared memory, once every
// thread is done with the previous tile.
template <typename T, int kD>
__device__ void load_kv_tiles(float (*ks)[kD], float (*vs)[kD], const T* k, const T* v, int64_t j0,
                              const AttentionSequence& seq, int D) {
  __syncthreads();
  const int64_t first = seq.k_base * D, stride = seq.k_step * D;
  load_tile<T, kD>(ks, k + first, stride, j0, tile_rows<kD>(), seq.Tk, D);
  load_tile<T, kD>(vs, v + first, stride, j0, tile_rows<kD>(), seq.Tk, D);
  __syncthreads();
}

template <typename T, int kD>
__global__ void attention_forward_kernel(T* out, float* lse, const T* q, const T* k, const T* v,
                                         AttentionGeometry g, float scale) {
  constexpr int kTile = tile_rows<kD>();
  __shared__ float ks[kTile][kD], vs[kTile][kD];
  const int D = static_cast<int>(g.head_dim);
  const QueryRow r(g);
  const int64_t row = r.row, last = r.last;
  const bool active = r.active;
  float qr[kD], o[kD];
#pragma unroll
  for (int d = 0; d < kD; ++d) {
    qr[d] = active && d < D ? float(load(q + row * D + d)) * scale : 0.f;
    o[d] = 0.f;
  }
  float m = -FLT_MAX, l = 0.f;
  for (int64_t j0 = 0; j0 <= r.block_last; j0 += kTile) {
    load_kv_tiles<T, kD>(ks, vs, k, v, j0, r.seq, D);
    for (int jj = 0; jj < kTile && j0 + jj <= last; ++jj) {
      float score = 0.f;
#pragma unroll
      for (int d = 0; d < kD; ++d) score += qr[d] * ks[jj][d];
      score += r.seq.bias(r.i, j0 + jj);
      const float m_new = fmaxf(m, score), correction = __expf(m - m_new), p = __expf(score - m_new);
      l = l * correction + p;
#pragma unroll
      for (int d = 0; d < kD; ++d) o[d] = o[d] * correction + p * vs[jj][d];
      m = m_new;
    }
  }
  if (!active) return;
  const bool none = last < 0;
#pragma unroll
  for (int d = 0; d < kD; ++d)
    if (d < D) store(out + row * D + d, none ? 0.f : o[d] / l);
  lse[row] = none ? -INFINITY : m + logf(l);
}

template <typename T>
__global__ void row_dot_kernel(float* delta, const T* dout, const T* out, int64_t rows, int D) {
  KILN_GRID_STRIDE(r, rows) {
    float acc = 0.f;
    for (int d = 0; d < D; ++d) acc += float(load(dout + r * D + d)) * float(load(out + r * D + d));
    delta[r] = acc;
  }
}

template <typename T, int kD>
__global__ void attention_dq_kernel(T* dq, const T* dout, const T* q, const T* k, const T* v, const float* lse,
                                    const float* delta, AttentionGeometry g, float scale) {
  constexpr int kTile = tile_rows<kD>();
  __shared__ float ks[kTile][kD], vs[kTile][kD];
  const int D = static_cast<int>(g.head_dim);
  const QueryRow r(g);
  const int64_t row = r.row, last = r.last;
  const bool active = r.active;
  float qr[kD], dor[kD], acc[kD];
#pragma unroll
  for (int d = 0; d < kD; ++d) {
    qr[d] = active && d < D ? float(load(q + row * D + d)) * scale : 0.f;
    dor[d] = active && d < D ? float(load(dout + row * D + d)) : 0.f;
    acc[d] = 0.f;
  }
  const float L = active ? lse[row] : 0.f, Di = active ? delta[row] : 0.f;
  for (int64_t j0 = 0; j0 <= r.block_last; j0 += kTile) {
    load_kv_tiles<T, kD>(ks, vs, k, v, j0, r.seq, D);
    for (int jj = 0; jj < kTile && j0 + jj <= last; ++jj) {
      float score = 0.f, dp = 0.f;
#pragma unroll
      for (int d = 0; d < kD; ++d) {
        score += qr[d] * ks[jj][d];
        dp += dor[d] * vs[jj][d];
      }
      const float ds = __expf(score + r.seq.bias(r.i, j0 + jj) - L) * (dp - Di);
#pragma unroll
      for (int d = 0; d < kD; ++d) acc[d] += ds * ks[jj][d];
    }
  }
  if (!active) return;
#pragma unroll
  for (int d = 0; d < kD; ++d)
    if (d < D) store(dq + row * D + d, acc[d] * scale);
}

template <typename T, int kD>
__global__ void attention_dkv_kernel(T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                                     const float* lse, const float* delta, AttentionGeometry g, float scale) {
  constexpr int kTile = tile_rows<kD>();
  __shared__ float qs[kTile][kD], dos[kTile][kD];
  __shared__ float ls[kTile], ds_[kTile];
  const int D = static_cast<int>(g.head_dim);
  const int64_t bk = blockIdx.x, b = bk / g.heads_kv, hk = bk % g.heads_kv, group = g.group();
  const AttentionSequence keys = g.sequence(b, hk * group);  // the kv head's keys (any of its query heads)
  const int64_t j = int64_t(blockIdx.y) * kRows + threadIdx.x;
  const bool active = j < keys.Tk;
  const int64_t key = keys.key(active ? j : 0) * D;
  float kr[kD], vr[kD], dka[kD], dva[kD];
#pragma unroll
  for (int d = 0; d < kD; ++d) {
    kr[d] = active && d < D ? float(load(k + key + d)) : 0.f;
    vr[d] = active && d < D ? float(load(v + key + d)) : 0.f;
    dka[d] = dva[d] = 0.f;
  }
  // The block's first key bounds the first query that sees any of its keys.
  const int64_t first_key = int64_t(blockIdx.y) * kRows;
  int64_t i_begin = keys.first_query(first_key);
  i_begin -= i_begin % kTile;
  for (int64_t h = hk * group; h < (hk + 1) * group && first_key < keys.Tk; ++h) {
    const AttentionSequence seq = g.sequence(b, h);
    const int64_t first = seq.q_base * D, stride = seq.q_step * D;
    for (int64_t i0 = i_begin; i0 < seq.Tq; i0 += kTile) {
      __syncthreads();
      load_tile<T, kD>(qs, q + first, stride, i0, kTile, seq.Tq, D);
      load_tile<T, kD>(dos, dout + first, stride, i0, kTile, seq.Tq, D);
      for (int r = threadIdx.x; r < kTile; r += blockDim.x) {
        ls[r] = i0 + r < seq.Tq ? lse[seq.query(i0 + r)] : 0.f;
        ds_[r] = i0 + r < seq.Tq ? delta[seq.query(i0 + r)] : 0.f;
      }
      __syncthreads();
      if (!active) continue;
      for (int ii = 0; ii < kTile && i0 + ii < seq.Tq; ++ii) {
        if (j > seq.last_key(i0 + ii)) continue;
        float score = 0.f, dp = 0.f;
#pragma unroll
        for (int d = 0; d < kD; ++d) {
          score += qs[ii][d] * kr[d];
          dp += dos[ii][d] * vr[d];
        }
        const float p = __expf(score * scale + seq.bias(i0 + ii, j) - ls[ii]), dsc = p * (dp - ds_[ii]);
#pragma unroll
        for (int d = 0; d < kD; ++d) {
          dva[d] += p * dos[ii][d];
          dka[d] += dsc * qs[ii][d];
        }
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int d = 0; d < kD; ++d)
    if (d < D) {
      store(dk + key + d, dka[d] * scale);
      store(dv + key + d, dva[d]);
    }
}

// Calls f with the smallest compiled head-dim bound that holds D.
template <typename F>
void with_head_dim(int64_t D, F&& f) {
  if (D <= 32) f(std::integral_constant<int, 32>{});
  else if (D <= 64) f(std::integral_constant<int, 64>{});
  else if (D <= 128) f(std::integral_constant<int, 128>{});
  else if (D <= 256) f(std::integral_constant<int, 256>{});
  else fail("attention", "the fused kernel takes head dims up to 256");
}

void check_float_stats(const Buffer& lse, const char* op) {
  if (lse.dtype != DType::Float32) fail(op, "the CUDA kernel keeps float32 row statistics (no float64 path)");
}

}  // namespace

void attention(const Buffer& out, const Buffer& lse, const Buffer& q, const Buffer& k, const Buffer& v,
               const AttentionGeometry& g, double scale) {
  NvtxRange range("kiln::attention");
  check_float_stats(lse, "attention");
  if (q.numel() == 0) return;
  if (attention_mma_applies(g, q, k, v, out)) return attention_mma_forward(out, lse, q, k, v, g, scale);
  // x: (sequence, head) pairs (up to 2^31 - 1), y: tiles of 64 rows (up to 65535).
  const dim3 grid(static_cast<unsigned>(g.batch * g.heads_q), static_cast<unsigned>((g.Tq + kRows - 1) / kRows));
  visit_floating(q.dtype, "attention", [&](auto tag) {
    using T = decltype(tag);
    with_head_dim(g.head_dim, [&](auto kd) {
      launch("attention_forward_kernel", attention_forward_kernel<T, decltype(kd)::value>, grid, kRows, 0, out.ptr<T>(),
             lse.ptr<float>(), q.ptr<T>(), k.ptr<T>(), v.ptr<T>(), g, static_cast<float>(scale));
    });
  });
}

void attention_backward(const Buffer& dq, const Buffer& dk, const Buffer& dv, const Buffer& dout, const Buffer& q,
                        const Buffer& k, const Buffer& v, const Buffer& out, const Buffer& lse,
                        const AttentionGeometry& g, double scale) {
  NvtxRange range("kiln::attention_backward");
  check_float_stats(lse, "attention_backward");
  if (q.numel() == 0 || k.numel() == 0) {  // nothing attends: every gradient is zero
    for (const Buffer* grad : {&dq, &dk, &dv}) fill(*grad, 0.0);
    return;
  }
  const int64_t rows = q.numel() / g.head_dim;  // query rows of every sequence and head
  const int device = q.device.index;
  const Scratch delta_scratch(static_cast<size_t>(rows) * sizeof(float), device);
  float* delta = delta_scratch.get<float>();
  const bool mma = attention_mma_applies(g, q, k, v, dout) && aligned16(dq.data) && aligned16(dk.data) &&
                   aligned16(dv.data) && aligned16(out.data);
  const float scale_f = static_cast<float>(scale);
  visit_floating(q.dtype, "attention_backward", [&](auto tag) {
    using T = decltype(tag);
    launch("row_dot_kernel", row_dot_kernel<T>, blocks_for(rows), kThreads, 0, delta, dout.ptr<T>(), out.ptr<T>(), rows,
           static_cast<int>(g.head_dim));
    if (mma) return attention_mma_backward(dq, dk, dv, dout, q, k, v, lse, delta, g, scale);
    with_head_dim(g.head_dim, [&](auto kd) {
      constexpr int kD = decltype(kd)::value;
      const dim3 q_grid(static_cast<unsigned>(g.batch * g.heads_q), static_cast<unsigned>((g.Tq + kRows - 1) / kRows));
      launch("attention_dq_kernel", attention_dq_kernel<T, kD>, q_grid, kRows, 0, dq.ptr<T>(), dout.ptr<T>(),
             q.ptr<T>(), k.ptr<T>(), v.ptr<T>(), lse.ptr<float>(), delta, g, scale_f);
      const dim3 kv_grid(static_cast<unsigned>(g.batch * g.heads_kv),
                         static_cast<unsigned>((g.Tk + kRows - 1) / kRows));
      launch("attention_dkv_kernel", attention_dkv_kernel<T, kD>, kv_grid, kRows, 0, dk.ptr<T>(), dv.ptr<T>(),
             dout.ptr<T>(), q.ptr<T>(), k.ptr<T>(), v.ptr<T>(), lse.ptr<float>(), delta, g, scale_f);
    });
  });
}

}  // namespace kiln::kernels::cuda
