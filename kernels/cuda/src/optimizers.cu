// Fused optimizer updates over lists of tensors: the tensors are cut into
// chunks and one launch updates all of them, one pass over parameter,
// gradient and state, each element read and written once (AdamW: 16 bytes
// read + 12 written per float32 parameter with a float32 gradient, + 2 for a
// bfloat16 compute copy), 16 bytes of each array per access where aligned.

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
  void* v;     // null for Lion
  void* copy;  // the parameter's compute copy, or null
  DType copy_dtype;
  bool vec;  // p, m, v and g aligned for vector accesses (16 bytes of p a step)
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

// The update rules of one element (p, m, v updated in place; v unused by Lion).
template <typename P>
struct AdamWRule {
  P decay, b1, b2, step, root_bc2, eps;
  __device__ __forceinline__ void operator()(P& p, P& m, P& v, P g) const {
    m = b1 * m + (P(1) - b1) * g;
    v = b2 * v + (P(1) - b2) * g * g;
    p = p * decay - step * (m / (sqrt(v) / root_bc2 + eps));
  }
};

template <typename P>
struct LionRule {
  P decay, b1, b2, lr;
  __device__ __forceinline__ void operator()(P& p, P& m, P&, P g) const {
    const P d = b1 * m + (P(1) - b1) * g;
    p = p * decay - lr * P((d > P(0)) - (d < P(0)));
    m = b2 * m + (P(1) - b2) * g;
  }
};

// One block a chunk: the rule on every element, 16 bytes of parameter (and
// of each state) per access where the chunk is aligned, then the remainder
// element by element; the compute copy written from the new value.
template <typename P, typename G, typename Rule>
__global__ void update_kernel(const UpdateChunk* chunks, Rule rule) {
  constexpr int V = 16 / sizeof(P);
  const UpdateChunk c = chunks[blockIdx.x];
  P* p = static_cast<P*>(c.p);
  const G* g = static_cast<const G*>(c.g);
  P* m = static_cast<P*>(c.m);
  P* v = static_cast<P*>(c.v);
  const int64_t vectors = c.vec ? c.n / V : 0;
  for (int64_t j = threadIdx.x; j < vectors; j += blockDim.x) {
    Vec<P, V> pv = reinterpret_cast<Vec<P, V>*>(p)[j], mv = reinterpret_cast<Vec<P, V>*>(m)[j], vv{};
    if (v) vv = reinterpret_cast<Vec<P, V>*>(v)[j];
    const Vec<G, V> gv = reinterpret_cast<const Vec<G, V>*>(g)[j];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      rule(pv.v[k], mv.v[k], vv.v[k], P(load(&gv.v[k])));
      if (c.copy) write_copy(c, j * V + k, pv.v[k]);
    }
    reinterpret_cast<Vec<P, V>*>(p)[j] = pv;
    reinterpret_cast<Vec<P, V>*>(m)[j] = mv;
    if (v) reinterpret_cast<Vec<P, V>*>(v)[j] = vv;
  }
  for (int64_t i = vectors * V + threadIdx.x; i < c.n; i += blockDim.x) {
    P pi = p[i], mi = m[i], vi = v ? v[i] : P(0);
    rule(pi, mi, vi, P(load(g + i)));
    p[i] = pi;
    m[i] = mi;
    if (v) v[i] = vi;
    if (c.copy) write_copy(c, i, pi);
  }
}

bool aligned_to(const void* ptr, size_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

// The chunks of every tensor of the lists (v may be empty).
std::vector<UpdateChunk> chunks_of(const std::vector<Buffer>& p, const std::vector<Buffer>& g,
                                   const std::vector<Buffer>& m, const std::vector<Buffer>& v,
                                   const std::vector<Buffer>& copy) {
  std::vector<UpdateChunk> out;
  for (size_t t = 0; t < p.size(); ++t) {
    const size_t pe = element_size(p[t].dtype), ge = element_size(g[t].dtype);
    const size_t ce = copy[t].data ? element_size(copy[t].dtype) : 0;
    const size_t per_vector = 16 / pe;  // elements of one 16-byte access of p
    for (int64_t at = 0; at < p[t].numel(); at += kChunkElements) {
      UpdateChunk c{static_cast<char*>(p[t].data) + at * pe,
                    static_cast<const char*>(g[t].data) + at * ge,
                    static_cast<char*>(m[t].data) + at * pe,
                    v.empty() ? nullptr : static_cast<char*>(v[t].data) + at * pe,
                    copy[t].data ? static_cast<char*>(copy[t].data) + at * ce : nullptr,
                    copy[t].dtype,
                    false,
                    p[t].numel() - at < kChunkElements ? p[t].numel() - at : kChunkElements};
      c.vec = aligned_to(c.p, 16) && aligned_to(c.m, 16) && (!c.v || aligned_to(c.v, 16)) &&
              aligned_to(c.g, per_vector * ge);
      out.push_back(c);
    }
  }
  return out;
}

constexpr int kUpdateThreads = 512;

// Uploads the chunk table and calls launch(P tag, G tag, table, blocks) for
// the lists' dtypes; the table is freed after the launch (stream-ordered).
template <typename Launch>
void update_all(const char* op, const std::vector<Buffer>& p, const std::vector<Buffer>& g,
                const std::vector<Buffer>& m, const std::vector<Buffer>& v, const std::vector<Buffer>& copy,
                Launch&& launch) {
  const std::vector<UpdateChunk> chunks = chunks_of(p, g, m, v, copy);
  if (chunks.empty()) return;
  const int device = p[0].device.index;
  const Scratch table = upload(chunks, device, op);
  visit_master(p[0].dtype, g[0].dtype, op, [&](auto ptag, auto gtag) {
    launch(ptag, gtag, table.get<UpdateChunk>(), static_cast<unsigned>(chunks.size()));
  });
}

}  // namespace

void adamw_update(const std::vector<Buffer>& p, const std::vector<Buffer>& g, const std::vector<Buffer>& m,
                  const std::vector<Buffer>& v, const std::vector<Buffer>& copy, const AdamWStep& s) {
  NvtxRange range("kiln::adamw_update");
  update_all("adamw_update", p, g, m, v, copy, [&](auto ptag, auto gtag, const UpdateChunk* table, unsigned blocks) {
    using P = decltype(ptag);
    using G = decltype(gtag);
    const AdamWRule<P> rule{P(1 - s.lr * s.weight_decay), P(s.beta1),        P(s.beta2),
                            P(s.lr / s.bias_correction1),  P(sqrt(s.bias_correction2)), P(s.eps)};
    launch("adamw_update", update_kernel<P, G, AdamWRule<P>>, blocks, kUpdateThreads, 0, table, rule);
  });
}

void lion_update(const std::vector<Buffer>& p, const std::vector<Buffer>& g, const std::vector<Buffer>& m,
                 const std::vector<Buffer>& copy, const LionStep& s) {
  NvtxRange range("kiln::lion_update");
  update_all("lion_update", p, g, m, {}, copy, [&](auto ptag, auto gtag, const UpdateChunk* table, unsigned blocks) {
    using P = decltype(ptag);
    using G = decltype(gtag);
    const LionRule<P> rule{P(1 - s.lr * s.weight_decay), P(s.beta1), P(s.beta2), P(s.lr)};
    launch("lion_update", update_kernel<P, G, LionRule<P>>, blocks, kUpdateThreads, 0, table, rule);
  });
}

}  // namespace kiln::kernels::cuda
