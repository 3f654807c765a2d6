// Attention through cuDNN's fused engines (AttentionBackend::Cudnn, the
// benchmark baseline): the graphs of cudnn_attention_graphs.cpp, planned once
// per shape on each thread and device, run on the current stream.

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <bit>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>

#include "cuda_check.h"
#include "cudnn_attention.h"
#include "cudnn_sequence_tables.h"
#include "kiln/kernels/cuda.h"
#include "launch.h"
#include "scratch.h"

namespace kiln::kernels::cuda {

namespace {

using cudnn::AttentionProblem;
using cudnn::Plan;

// Packed batches' sequence count and longest lengths, rounded up to a power
// of two (lengths to at least 64), so that batches of similar shapes share a
// plan: the graph masks past each sequence's end, and the count is made up
// with empty sequences.
int64_t bucket(int64_t n, int64_t least) { return std::max<int64_t>(least, std::bit_ceil(static_cast<uint64_t>(n))); }

AttentionProblem problem_of(const AttentionGeometry& g, const Buffer& q, const Buffer& k, const char* op) {
  KILN_CHECK(q.dtype == DType::BFloat16 || q.dtype == DType::Float16,
             "[{}] the cuDNN backend takes bfloat16 or float16, got {}", op, dtype_name(q.dtype));
  KILN_CHECK(g.head_dim % 8 == 0 && g.head_dim <= 256, "[{}] the cuDNN backend takes head dims of 8 .. 256 in steps "
             "of 8, got {}", op, g.head_dim);
  KILN_CHECK(!g.prefix, "[{}] the cuDNN backend has no prefix-LM mask: kiln's fused kernel takes it", op);
  KILN_CHECK(!g.slopes, "[{}] the cuDNN backend leaves ALiBi to kiln's fused kernel", op);
  const cudnnDataType_t dtype = q.dtype == DType::BFloat16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
  if (g.cu_q) {
    // cuDNN reads packed sequences' starts as int32 element offsets.
    const int64_t limit = std::numeric_limits<int32_t>::max();
    KILN_CHECK(q.numel() <= limit && k.numel() <= limit,
               "[{}] the cuDNN backend addresses packed sequences with int32 offsets: q has {} elements, k {}", op,
               q.numel(), k.numel());
    // Per-sequence lengths (causal needs Tq <= Tk in each) are checked where the offsets are on the host.
    return {bucket(g.batch, 1), g.heads_q, g.heads_kv, bucket(g.Tq, 64), bucket(g.Tk, 64), g.head_dim, g.causal,
            dtype, true};
  }
  // cuDNN leaves rows that see no key undefined; kiln's contract gives them zeros.
  KILN_CHECK(g.Tk > 0 && (!g.causal || g.Tq <= g.Tk),
             "[{}] the cuDNN backend needs every query to see a key (causal: Tq <= Tk), got Tq {} and Tk {}", op, g.Tq,
             g.Tk);
  return {g.batch, g.heads_q, g.heads_kv, g.Tq, g.Tk, g.head_dim, g.causal, dtype};
}

// The graphs declare 16-byte aligned tensors.
void check_aligned(std::initializer_list<const Buffer*> buffers, const char* op) {
  for (const Buffer* b : buffers)
    KILN_CHECK(reinterpret_cast<uintptr_t>(b->data) % 16 == 0,
               "[{}] the cuDNN backend needs 16-byte aligned tensors (a view at an odd offset? make a copy)", op);
}

// A thread's cuDNN state on one device, released when the thread ends (for
// the main thread, before static destructors and CUDA's own teardown).
struct State {
  cudnnHandle_t handle = nullptr;
  cudnn::Descriptor device;
  std::map<AttentionProblem, Plan> forward, backward;
  ~State() {
    forward.clear();
    backward.clear();
    device = {};
    if (handle) cudnnDestroy(handle);
  }
};

State& state(int device) {
  thread_local std::array<std::unique_ptr<State>, kMaxDevices> states;
  std::unique_ptr<State>& s = states[static_cast<size_t>(device)];
  if (!s) {  // kept only once complete: a failed start is retried by the next call
    auto fresh = std::make_unique<State>();
    cudnn::check(cudnnCreate(&fresh->handle), "cudnnCreate");
    fresh->device = cudnn::device_properties(fresh->handle);
    s = std::move(fresh);
  }
  cudnn::check(cudnnSetStream(s->handle, current_stream()), "cudnnSetStream");
  return *s;
}

const Plan& plan_for(std::map<AttentionProblem, Plan>& plans, const AttentionProblem& p,
                     const cudnn::Descriptor& device, bool backward) {
  auto it = plans.find(p);
  if (it == plans.end()) {
    const cudnn::Graph graph = backward ? attention_backward_graph(p) : attention_forward_graph(p);
    it = plans.emplace(p, Plan(graph.finalize(), device, backward ? "attention backward" : "attention")).first;
  }
  return it->second;
}

// What a graph's uids are bound to: pointers by uid, among them the by-value
// scalars held here. Execution passes exactly the uids p's graph reads
// (attention_uids, which test_cudnn_graphs checks against the graphs).
class Bindings {
 public:
  Bindings(const AttentionProblem& p, double attention_scale)
      : scale_(static_cast<float>(attention_scale)), tq_(static_cast<int32_t>(p.Tq)), tk_(static_cast<int32_t>(p.Tk)) {
    set(cudnn::kScale, &scale_);
    set(cudnn::kNegInf, &neg_inf_);
    set(cudnn::kOne, &one_);
    set(cudnn::kSeqQ, &tq_);
    set(cudnn::kSeqK, &tk_);
  }
  Bindings(const Bindings&) = delete;  // the pointers to the scalars point into this object
  Bindings& operator=(const Bindings&) = delete;

  void set(cudnn::AttentionUid uid, const void* data) { at_[uid] = const_cast<void*>(data); }

  // Packed sequences' tables, built in `memory` on the current stream.
  void set_sequences(const AttentionProblem& p, const AttentionGeometry& g, void* memory) {
    const cudnn::SequenceTables t =
        cudnn::sequence_tables(memory, g.cu_q, g.cu_k, g.batch, p.B, p.Hq * p.D, p.Hkv * p.D, p.Hq);
    set(cudnn::kLengthQ, t.length_q);
    set(cudnn::kLengthK, t.length_k);
    set(cudnn::kStartQ, t.start_q);
    set(cudnn::kStartK, t.start_k);
    set(cudnn::kStartStats, t.start_stats);
  }

  void execute(const Plan& plan, cudnnHandle_t handle, const AttentionProblem& p, bool backward,
               void* workspace) const {
    const std::vector<int64_t> uids = cudnn::attention_uids(p, backward);
    std::vector<void*> data;
    for (int64_t uid : uids) {
      KILN_CHECK(at_[static_cast<size_t>(uid)], "[cudnn] kiln bound nothing to the attention graph's uid {}", uid);
      data.push_back(at_[static_cast<size_t>(uid)]);
    }
    plan.execute(handle, uids, data, workspace);
  }

 private:
  std::array<void*, cudnn::kUidEnd> at_{};
  float scale_, neg_inf_ = -std::numeric_limits<float>::infinity(), one_ = 1.f;
  int32_t tq_, tk_;
};

size_t tables_bytes(const AttentionProblem& p) { return p.packed ? cudnn::sequence_tables_bytes(p.B) : 0; }

}  // namespace

void cudnn_attention(const Buffer& out, const Buffer& lse, const Buffer& q, const Buffer& k, const Buffer& v,
                     const AttentionGeometry& g, double scale) {
  NvtxRange range("kiln::cudnn_attention");
  if (q.numel() == 0) return;  // no query: nothing to write
  const AttentionProblem p = problem_of(g, q, k, "scaled_dot_product_attention");
  check_aligned({&out, &lse, &q, &k, &v}, "scaled_dot_product_attention");
  State& st = state(q.device.index);
  const Plan& plan = plan_for(st.forward, p, st.device, false);
  const size_t ws = round_up(static_cast<size_t>(plan.workspace_bytes()));
  Scratch scratch(ws + tables_bytes(p), q.device.index);
  Bindings b(p, scale);
  for (auto [uid, buffer] : {std::pair{cudnn::kQ, &q}, {cudnn::kK, &k}, {cudnn::kV, &v}, {cudnn::kO, &out},
                             {cudnn::kStats, &lse}})
    b.set(uid, buffer->data);
  if (p.packed) b.set_sequences(p, g, scratch.get<char>() + ws);
  b.execute(plan, st.handle, p, false, scratch.get<char>());
}

void cudnn_attention_backward(const Buffer& dq, const Buffer& dk, const Buffer& dv, const Buffer& dout,
                              const Buffer& q, const Buffer& k, const Buffer& v, const Buffer& out, const Buffer& lse,
                              const AttentionGeometry& g, double scale) {
  NvtxRange range("kiln::cudnn_attention_backward");
  if (q.numel() == 0) {  // no query sees the keys: their gradients are zero
    for (const Buffer* d : {&dk, &dv})
      KILN_CUDA_CHECK(
          cudaMemsetAsync(d->data, 0, static_cast<size_t>(d->numel()) * element_size(d->dtype), current_stream()));
    return;
  }
  const AttentionProblem p = problem_of(g, q, k, "scaled_dot_product_attention backward");
  check_aligned({&dq, &dk, &dv, &dout, &q, &k, &v, &out, &lse}, "scaled_dot_product_attention backward");
  State& st = state(q.device.index);
  const Plan& plan = plan_for(st.backward, p, st.device, true);
  // Beside the plan's workspace, the graph's float scratch: rowsum(dO * O) and
  // dQ's accumulator (Tq rows a sequence when packed), and the sequence tables.
  const size_t rows = static_cast<size_t>(p.B * p.Hq * p.Tq), ws = round_up(static_cast<size_t>(plan.workspace_bytes()));
  const size_t delta_bytes = round_up(rows * sizeof(float));
  const size_t dq_bytes = round_up(rows * static_cast<size_t>(p.D) * sizeof(float));
  Scratch scratch(ws + delta_bytes + dq_bytes + tables_bytes(p), q.device.index);
  char* delta = scratch.get<char>() + ws;
  char* dq_accum = delta + delta_bytes;
  KILN_CUDA_CHECK(cudaMemsetAsync(dq_accum, 0, dq_bytes, current_stream()));  // accumulated into
  Bindings b(p, scale);
  for (auto [uid, buffer] : {std::pair{cudnn::kQ, &q}, {cudnn::kK, &k}, {cudnn::kV, &v}, {cudnn::kO, &out},
                             {cudnn::kStats, &lse}, {cudnn::kDO, &dout}, {cudnn::kDQ, &dq}, {cudnn::kDK, &dk},
                             {cudnn::kDV, &dv}})
    b.set(uid, buffer->data);
  b.set(cudnn::kSoftmaxSum, delta);
  b.set(cudnn::kDQAccum, dq_accum);
  if (p.packed) b.set_sequences(p, g, dq_accum + dq_bytes);
  b.execute(plan, st.handle, p, true, scratch.get<char>());
}

}  // namespace kiln::kernels::cuda
