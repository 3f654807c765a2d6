// Fused optimizer updates over lists of tensors: the tensors are cut into
// chunks and one launch updates all of them, one pass over parameter,
// gradient and state, each element read and written once (AdamW: 16 bytes
// read + 12 written per float32 parameter with a float32 gradient, + 2 for a
// bfloat16 compute copy).

#include "chunk_table.cuh"
#include "common.cuh"
#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

namespace {

// Pointers already at the chunk's first element.
struct UpdateChunk {
  void* p;
  const void* g;
  void* m;
  void* v;  // null for Lion
  void* copy;  // the parameter's compute copy, or null
  DType copy_dtype;
  int64_t n;
};

template <typename P>
__device__ __forceinline__ void write_copy(const UpdateChunk& c, int64_t i, P value) {
  switch (c.copy_dtype) {
    case DType::BFloat16: store(static_cast<BFloat16*>(c.copy) + i, value); break;
    case DType::Float16: store(static_cast<Half*>(c.copy) + i, value); break;
    case DType::Float32: store(static_cast<float*>(c.copy) + i, value); break;
    default: store(static_cast<double*>(c.copy) + i, value); break;
  }
}

template <typename P, typename G>
__global__ void adamw_kernel(const UpdateChunk* chunks, P decay, P b1, P b2, P step, P root_bc2, P eps) {
  const UpdateChunk c = chunks[blockIdx.x];
  P* p = static_cast<P*>(c.p);
  const G* g = static_cast<const G*>(c.g);
  P* m = static_cast<P*>(c.m);
  P* v = static_cast<P*>(c.v);
  for (int64_t i = threadIdx.x; i < c.n; i += blockDim.x) {
    const P gi = P(load(g + i));
    const P mi = b1 * m[i] + (P(1) - b1) * gi;
    const P vi = b2 * v[i] + (P(1) - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const P pi = p[i] * decay - step * (mi / (sqrt(vi) / root_bc2 + eps));
    p[i] = pi;
    if (c.copy) write_copy(c, i, pi);
  }
}

template <typename P, typename G>
__global__ void lion_kernel(const UpdateChunk* chunks, P decay, P b1, P b2, P lr) {
  const UpdateChunk c = chunks[blockIdx.x];
  P* p = static_cast<P*>(c.p);
  const G* g = static_cast<const G*>(c.g);
  P* m = static_cast<P*>(c.m);
  for (int64_t i = threadIdx.x; i < c.n; i += blockDim.x) {
    const P gi = P(load(g + i));
    const P d = b1 * m[i] + (P(1) - b1) * gi;
    const P pi = p[i] * decay - lr * P((d > P(0)) - (d < P(0)));
    p[i] = pi;
    m[i] = b2 * m[i] + (P(1) - b2) * gi;
    if (c.copy) write_copy(c, i, pi);
  }
}

// The chunks of every tensor of the lists (v may be empty).
std::vector<UpdateChunk> chunks_of(const std::vector<Buffer>& p, const std::vector<Buffer>& g,
                                   const std::vector<Buffer>& m, const std::vector<Buffer>& v,
                                   const std::vector<Buffer>& copy) {
  std::vector<UpdateChunk> out;
  for (size_t t = 0; t < p.size(); ++t) {
    const size_t pe = element_size(p[t].dtype), ge = element_size(g[t].dtype);
    const size_t ce = copy[t].data ? element_size(copy[t].dtype) : 0;
    for (int64_t at = 0; at < p[t].numel(); at += kChunkElements)
      out.push_back({static_cast<char*>(p[t].data) + at * pe, static_cast<const char*>(g[t].data) + at * ge,
                     static_cast<char*>(m[t].data) + at * pe, v.empty() ? nullptr : static_cast<char*>(v[t].data) + at * pe,
                     copy[t].data ? static_cast<char*>(copy[t].data) + at * ce : nullptr, copy[t].dtype,
                     p[t].numel() - at < kChunkElements ? p[t].numel() - at : kChunkElements});
  }
  return out;
}

constexpr int kUpdateThreads = 512;

// Uploads the chunk table and calls launch(P tag, G tag, table, blocks) for
// the lists' dtypes; frees the table after the launch (stream-ordered).
template <typename Launch>
void update_all(const char* op, const std::vector<Buffer>& p, const std::vector<Buffer>& g,
                const std::vector<Buffer>& m, const std::vector<Buffer>& v, const std::vector<Buffer>& copy,
                Launch&& launch) {
  const std::vector<UpdateChunk> chunks = chunks_of(p, g, m, v, copy);
  if (chunks.empty()) return;
  const int device = p[0].device.index;
  UpdateChunk* table = upload(chunks, device, op);
  visit_master(p[0].dtype, g[0].dtype, op, [&](auto ptag, auto gtag) {
    launch(ptag, gtag, table, static_cast<unsigned>(chunks.size()));
  });
  deallocate(table, device);
}

}  // namespace

void adamw_update(const std::vector<Buffer>& p, const std::vector<Buffer>& g, const std::vector<Buffer>& m,
                  const std::vector<Buffer>& v, const std::vector<Buffer>& copy, const AdamWStep& s) {
  NvtxRange range("kiln::adamw_update");
  update_all("adamw_update", p, g, m, v, copy, [&](auto ptag, auto gtag, const UpdateChunk* table, unsigned blocks) {
    using P = decltype(ptag);
    using G = decltype(gtag);
    launch("adamw_kernel", adamw_kernel<P, G>, blocks, kUpdateThreads, 0, table, P(1 - s.lr * s.weight_decay),
           P(s.beta1), P(s.beta2), P(s.lr / s.bias_correction1), P(sqrt(s.bias_correction2)), P(s.eps));
  });
}

void lion_update(const std::vector<Buffer>& p, const std::vector<Buffer>& g, const std::vector<Buffer>& m,
                 const std::vector<Buffer>& copy, const LionStep& s) {
  NvtxRange range("kiln::lion_update");
  update_all("lion_update", p, g, m, {}, copy, [&](auto ptag, auto gtag, const UpdateChunk* table, unsigned blocks) {
    using P = decltype(ptag);
    using G = decltype(gtag);
    launch("lion_kernel", lion_kernel<P, G>, blocks, kUpdateThreads, 0, table, P(1 - s.lr * s.weight_decay), P(s.beta1),
           P(s.beta2), P(s.lr));
  });
}

}  // namespace kiln::kernels::cuda
