// The operation graphs of cuDNN's fused attention (cudnn_attention.h).

#include "cudnn_attention.h"

namespace kiln::kernels::cuda::cudnn {

namespace {

constexpr cudnnDataType_t kFloat = CUDNN_DATA_FLOAT;

struct Operands {
  Tensor q, kt, o, stats, scale;
};

// q, the transposed keys kt (B, Hkv, D, Tk), out and the statistics as the graphs bind them.
Operands operands(Graph& g, const AttentionProblem& p) {
  const int64_t B = p.B, Hq = p.Hq, Hkv = p.Hkv, Tq = p.Tq, Tk = p.Tk, D = p.D;
  return {g.input(kQ, {B, Hq, Tq, D}, packed_strides({B, Hq, Tq, D}), p.dtype),
          g.input(kK, {B, Hkv, D, Tk}, {Hkv * Tk * D, Tk * D, 1, D}, p.dtype),
          g.input(kO, {B, Hq, Tq, D}, packed_strides({B, Hq, Tq, D}), p.dtype),
          g.input(kStats, {B, Hq, Tq, 1}, {Hq * Tq, Tq, 1, 1}, kFloat), g.scalar(kScale)};
}

// The scaled scores q k^T * scale (B, Hq, Tq, Tk).
Tensor scaled_scores(Graph& g, const AttentionProblem& p, const Operands& in) {
  Tensor s = g.intermediate({p.B, p.Hq, p.Tq, p.Tk}, packed_strides({p.B, p.Hq, p.Tq, p.Tk}));
  g.matmul_into(in.q, in.kt, s);
  return g.pointwise(CUDNN_POINTWISE_MUL, s, in.scale);
}

// -inf where key j lies past query i's diagonal (j > i + Tk - Tq).
Tensor causal_mask(Graph& g, const AttentionProblem& p, const Tensor& s) {
  Tensor row = g.pointwise(CUDNN_POINTWISE_GEN_INDEX, s, CUDNN_DATA_INT32, kFloat, 2);
  Tensor col = g.pointwise(CUDNN_POINTWISE_GEN_INDEX, s, CUDNN_DATA_INT32, kFloat, 3);
  if (p.Tq != p.Tk) {  // bottom-right: row + Tk - Tq
    row = g.pointwise(CUDNN_POINTWISE_ADD, row, g.scalar(kSeqK, CUDNN_DATA_INT32), CUDNN_DATA_INT32,
                      CUDNN_DATA_INT32, 3);
    row = g.pointwise(CUDNN_POINTWISE_SUB, row, g.scalar(kSeqQ, CUDNN_DATA_INT32), CUDNN_DATA_INT32,
                      CUDNN_DATA_INT32, 3);
  }
  Tensor seen = g.pointwise(CUDNN_POINTWISE_CMP_GE, row, col, CUDNN_DATA_BOOLEAN, CUDNN_DATA_BOOLEAN);
  Tensor masked = g.intermediate(s.dims, s.strides);
  const Tensor neg_inf = g.scalar(kNegInf);
  g.pointwise_into(CUDNN_POINTWISE_BINARY_SELECT, s, &neg_inf, &seen, masked);
  return masked;
}

// dims with the last two swapped, and the strides that read the same memory.
Tensor transposed(Graph& g, const Tensor& x, cudnnDataType_t dtype) {
  std::vector<int64_t> dims = x.dims, strides = x.strides;
  std::swap(dims[2], dims[3]);
  std::swap(strides[2], strides[3]);
  Tensor y = g.intermediate(dims, strides, dtype);
  g.reshape_into(x, y);
  return y;
}

// c (B, Hkv, rows, D) = a b summed over each kv head's group of query heads
// (one matmul when the heads match).
void grouped_matmul(Graph& g, const AttentionProblem& p, const Tensor& a, const Tensor& b, const Tensor& c) {
  if (p.Hq == p.Hkv) return g.matmul_into(a, b, c);
  const std::vector<int64_t> full = {p.B, p.Hq, c.dims[2], c.dims[3]};
  Tensor per_head = g.intermediate(full, packed_strides(full), p.dtype);
  g.matmul_into(a, b, per_head);
  g.reduce_into(CUDNN_REDUCE_TENSOR_ADD, per_head, c);
}

}  // namespace

Graph attention_forward_graph(const AttentionProblem& p) {
  Graph g;
  const Operands in = operands(g, p);
  const Tensor v = g.input(kV, {p.B, p.Hkv, p.Tk, p.D}, packed_strides({p.B, p.Hkv, p.Tk, p.D}), p.dtype);
  Tensor s = scaled_scores(g, p, in);
  if (p.causal) s = causal_mask(g, p, s);
  // The softmax, and the logsumexp of each row kept for the backward.
  const std::vector<int64_t> rows = {p.B, p.Hq, p.Tq, 1};
  Tensor max = g.intermediate(rows, packed_strides(rows));
  g.reduce_into(CUDNN_REDUCE_TENSOR_MAX, s, max);
  Tensor e = g.pointwise(CUDNN_POINTWISE_EXP, g.pointwise(CUDNN_POINTWISE_SUB, s, max));
  Tensor sum = g.intermediate(rows, packed_strides(rows));
  g.reduce_into(CUDNN_REDUCE_TENSOR_ADD, e, sum);
  const Tensor log_sum = g.pointwise(CUDNN_POINTWISE_LOG, sum);
  g.pointwise_into(CUDNN_POINTWISE_ADD, max, &log_sum, nullptr, in.stats);
  Tensor probs = g.intermediate(s.dims, s.strides, p.dtype);
  g.pointwise_into(CUDNN_POINTWISE_DIV, e, &sum, nullptr, probs);
  g.matmul_into(probs, v, in.o);
  return g;
}

Graph attention_backward_graph(const AttentionProblem& p) {
  Graph g;
  const Operands in = operands(g, p);
  const int64_t B = p.B, Hq = p.Hq, Hkv = p.Hkv, Tq = p.Tq, Tk = p.Tk, D = p.D;
  const Tensor vt = g.input(kV, {B, Hkv, D, Tk}, {Hkv * Tk * D, Tk * D, 1, D}, p.dtype);
  const Tensor dout = g.input(kDO, {B, Hq, Tq, D}, packed_strides({B, Hq, Tq, D}), p.dtype);
  const Tensor dq = g.input(kDQ, {B, Hq, Tq, D}, packed_strides({B, Hq, Tq, D}), p.dtype);
  const Tensor dk = g.input(kDK, {B, Hkv, Tk, D}, packed_strides({B, Hkv, Tk, D}), p.dtype);
  const Tensor dv = g.input(kDV, {B, Hkv, Tk, D}, packed_strides({B, Hkv, Tk, D}), p.dtype);

  // delta = rowsum(dO * O), kept in float scratch.
  const std::vector<int64_t> rows = {B, Hq, Tq, 1};
  Tensor row_dot = g.intermediate(rows, packed_strides(rows));
  g.reduce_into(CUDNN_REDUCE_TENSOR_ADD, g.pointwise(CUDNN_POINTWISE_MUL, dout, in.o), row_dot);
  const Tensor delta = g.input(kSoftmaxSum, rows, packed_strides(rows), kFloat);
  const Tensor one = g.scalar(kOne);
  g.pointwise_into(CUDNN_POINTWISE_MUL, row_dot, &one, nullptr, delta);

  // P = exp(scale q k^T - lse), masked; dV = P^T dO.
  Tensor s = g.pointwise(CUDNN_POINTWISE_SUB, scaled_scores(g, p, in), in.stats);
  if (p.causal) s = causal_mask(g, p, s);
  const Tensor probs = g.pointwise(CUDNN_POINTWISE_EXP, s);
  grouped_matmul(g, p, transposed(g, probs, p.dtype), dout, dv);

  // dS = P (dO v^T - delta) * scale; dK = dS^T q, dQ = dS k.
  Tensor dp = g.intermediate({B, Hq, Tq, Tk}, packed_strides({B, Hq, Tq, Tk}));
  g.matmul_into(dout, vt, dp);
  Tensor ds = g.pointwise(CUDNN_POINTWISE_MUL, g.pointwise(CUDNN_POINTWISE_SUB, dp, delta), probs);
  ds = g.pointwise(CUDNN_POINTWISE_MUL, ds, in.scale);
  grouped_matmul(g, p, transposed(g, ds, p.dtype), in.q, dk);
  const Tensor dq_accum = g.input(kDQAccum, {B, Hq, Tq, D}, packed_strides({B, Hq, Tq, D}), kFloat);
  g.matmul_into(ds, transposed(g, in.kt, p.dtype), dq_accum);
  g.pointwise_into(CUDNN_POINTWISE_IDENTITY, dq_accum, nullptr, nullptr, dq);
  return g;
}

}  // namespace kiln::kernels::cuda::cudnn
