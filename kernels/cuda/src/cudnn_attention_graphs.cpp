// The operation graphs of cuDNN's fused attention (cudnn_attention.h).

#include "cudnn_attention.h"

#include <algorithm>
#include <optional>

namespace kiln::kernels::cuda::cudnn {

namespace {

constexpr cudnnDataType_t kFloat = CUDNN_DATA_FLOAT;

// Which rows a matmul extent runs over: queries', keys', or all the dim has.
enum class Along { All, Queries, Keys };

// The tensors the caller binds, laid out as p's layout has them, and for
// packed sequences the tables that say where each sequence lies.
class Operands {
 public:
  Operands(Graph& g, const AttentionProblem& p) : g_(g), p_(p) {
    if (p.packed) {
      const std::vector<int64_t> lengths = {p.B, 1, 1, 1}, starts = {p.B + 1, 1, 1, 1};
      length_q_ = g.input(kLengthQ, lengths, packed_strides(lengths), CUDNN_DATA_INT32);
      length_k_ = g.input(kLengthK, lengths, packed_strides(lengths), CUDNN_DATA_INT32);
      start_q_ = g.input(kStartQ, starts, packed_strides(starts), CUDNN_DATA_INT32);
      start_k_ = g.input(kStartK, starts, packed_strides(starts), CUDNN_DATA_INT32);
      start_stats_ = g.input(kStartStats, starts, packed_strides(starts), CUDNN_DATA_INT32);
    }
    q = queries(kQ);
    kt = keys(kK, true);
    o = queries(kO);
    // One statistic per query row: (B, Hq, Tq, 1), packed as (total_q, Hq).
    stats = p.packed ? g.input(kStats, {p.B, p.Hq, p.Tq, 1}, {p.Tq * p.Hq, 1, p.Hq, 1}, kFloat, &*start_stats_)
                     : g.input(kStats, {p.B, p.Hq, p.Tq, 1}, {p.Hq * p.Tq, p.Tq, 1, 1}, kFloat);
    scale = g.scalar(kScale);
  }

  // A q-side tensor (B, Hq, Tq, D): q, out and their gradients.
  Tensor queries(int64_t uid) const { return rows(uid, p_.Hq, p_.Tq, false, start_q_); }
  // A k-side tensor (B, Hkv, Tk, D), or its transpose (B, Hkv, D, Tk).
  Tensor keys(int64_t uid, bool transposed) const { return rows(uid, p_.Hkv, p_.Tk, transposed, start_k_); }

  // A matmul's extents m, n and k, each a packed sequence's number of
  // queries or keys, or the whole dim (always, for a padded batch).
  MatmulExtents extents(Along m, Along n, Along k) const {
    auto of = [&](Along along) -> const Tensor* {
      if (!p_.packed || along == Along::All) return nullptr;
      return along == Along::Queries ? &*length_q_ : &*length_k_;
    };
    return {of(m), of(n), of(k)};
  }

  // Scores past a packed sequence's queries or keys set to -inf (cuDNN's padding mask).
  Tensor mask_padding(const Tensor& s) const {
    if (!p_.packed) return s;
    Tensor row = g_.pointwise(CUDNN_POINTWISE_GEN_INDEX, s, CUDNN_DATA_INT32, kFloat, 2);
    Tensor col = g_.pointwise(CUDNN_POINTWISE_GEN_INDEX, s, CUDNN_DATA_INT32, kFloat, 3);
    Tensor row_in = g_.pointwise(CUDNN_POINTWISE_CMP_LT, row, *length_q_, CUDNN_DATA_BOOLEAN, CUDNN_DATA_BOOLEAN);
    Tensor col_in = g_.pointwise(CUDNN_POINTWISE_CMP_LT, col, *length_k_, CUDNN_DATA_BOOLEAN, CUDNN_DATA_BOOLEAN);
    Tensor in = g_.pointwise(CUDNN_POINTWISE_LOGICAL_AND, row_in, col_in, CUDNN_DATA_BOOLEAN, CUDNN_DATA_BOOLEAN);
    return select_or_neg_inf(s, in);
  }

  // -inf where key j lies past query i's diagonal (j > i + Tk - Tq, with each
  // packed sequence's own lengths).
  Tensor mask_causal(const Tensor& s) const {
    Tensor row = g_.pointwise(CUDNN_POINTWISE_GEN_INDEX, s, CUDNN_DATA_INT32, kFloat, 2);
    Tensor col = g_.pointwise(CUDNN_POINTWISE_GEN_INDEX, s, CUDNN_DATA_INT32, kFloat, 3);
    if (p_.packed || p_.Tq != p_.Tk) {  // bottom-right: row + Tk - Tq
      const Tensor tk = p_.packed ? *length_k_ : g_.scalar(kSeqK, CUDNN_DATA_INT32);
      const Tensor tq = p_.packed ? *length_q_ : g_.scalar(kSeqQ, CUDNN_DATA_INT32);
      row = g_.pointwise(CUDNN_POINTWISE_ADD, row, tk, CUDNN_DATA_INT32, CUDNN_DATA_INT32, 3);
      row = g_.pointwise(CUDNN_POINTWISE_SUB, row, tq, CUDNN_DATA_INT32, CUDNN_DATA_INT32, 3);
    }
    Tensor seen = g_.pointwise(CUDNN_POINTWISE_CMP_GE, row, col, CUDNN_DATA_BOOLEAN, CUDNN_DATA_BOOLEAN);
    return select_or_neg_inf(s, seen);
  }

  Tensor q, kt, o, stats, scale;

 private:
  // (B, H, T, D) rows of width D: contiguous per batch entry, or packed (total, H, D) from each sequence's start.
  Tensor rows(int64_t uid, int64_t heads, int64_t T, bool transposed, const std::optional<Tensor>& start) const {
    const int64_t D = p_.D;
    std::vector<int64_t> dims = {p_.B, heads, T, D};
    std::vector<int64_t> strides = p_.packed ? std::vector<int64_t>{T * heads * D, D, heads * D, 1}
                                             : packed_strides(dims);
    if (transposed) {
      std::swap(dims[2], dims[3]);
      std::swap(strides[2], strides[3]);
    }
    return g_.input(uid, dims, strides, p_.dtype, start ? &*start : nullptr);
  }

  Tensor select_or_neg_inf(const Tensor& s, const Tensor& keep) const {
    Tensor masked = g_.intermediate(s.dims, s.strides);
    const Tensor neg_inf = g_.scalar(kNegInf);
    g_.pointwise_into(CUDNN_POINTWISE_BINARY_SELECT, s, &neg_inf, &keep, masked);
    return masked;
  }

  Graph& g_;
  const AttentionProblem& p_;
  std::optional<Tensor> length_q_, length_k_, start_q_, start_k_, start_stats_;
};

// The scaled scores q k^T * scale (B, Hq, Tq, Tk).
Tensor scaled_scores(Graph& g, const AttentionProblem& p, const Operands& in) {
  Tensor s = g.intermediate({p.B, p.Hq, p.Tq, p.Tk}, packed_strides({p.B, p.Hq, p.Tq, p.Tk}));
  g.matmul_into(in.q, in.kt, s, in.extents(Along::Queries, Along::Keys, Along::All));
  return g.pointwise(CUDNN_POINTWISE_MUL, s, in.scale);
}

// The masks the problem asks for: the padding of packed sequences, then causal.
Tensor masked(const AttentionProblem& p, const Operands& in, const Tensor& s) {
  const Tensor padded = in.mask_padding(s);
  return p.causal ? in.mask_causal(padded) : padded;
}

// dims with the last two swapped, and the strides (and sequence starts) that read the same memory.
Tensor transposed(Graph& g, const Tensor& x, cudnnDataType_t dtype) {
  std::vector<int64_t> dims = x.dims, strides = x.strides;
  std::swap(dims[2], dims[3]);
  std::swap(strides[2], strides[3]);
  Tensor y = g.intermediate(dims, strides, dtype, x.ragged);
  g.reshape_into(x, y);
  return y;
}

// c (B, Hkv, rows, D) = a b summed over each kv head's group of query heads
// (one matmul when the heads match).
void grouped_matmul(Graph& g, const AttentionProblem& p, const Tensor& a, const Tensor& b, const Tensor& c,
                    MatmulExtents extents) {
  if (p.Hq == p.Hkv) return g.matmul_into(a, b, c, extents);
  const std::vector<int64_t> full = {p.B, p.Hq, c.dims[2], c.dims[3]};
  Tensor per_head = g.intermediate(full, packed_strides(full), p.dtype);
  g.matmul_into(a, b, per_head, extents);
  g.reduce_into(CUDNN_REDUCE_TENSOR_ADD, per_head, c);
}

}  // namespace

Graph attention_forward_graph(const AttentionProblem& p) {
  Graph g;
  const Operands in(g, p);
  const Tensor v = in.keys(kV, false);
  const Tensor s = masked(p, in, scaled_scores(g, p, in));
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
  g.matmul_into(probs, v, in.o, in.extents(Along::Queries, Along::All, Along::Keys));
  return g;
}

Graph attention_backward_graph(const AttentionProblem& p) {
  Graph g;
  const Operands in(g, p);
  const int64_t B = p.B, Hq = p.Hq, Tq = p.Tq, Tk = p.Tk, D = p.D;
  const Tensor vt = in.keys(kV, true);
  const Tensor dout = in.queries(kDO), dq = in.queries(kDQ);
  const Tensor dk = in.keys(kDK, false), dv = in.keys(kDV, false);

  // delta = rowsum(dO * O), kept in float scratch (padded to Tq rows per sequence when packed).
  const std::vector<int64_t> rows = {B, Hq, Tq, 1};
  Tensor row_dot = g.intermediate(rows, packed_strides(rows));
  g.reduce_into(CUDNN_REDUCE_TENSOR_ADD, g.pointwise(CUDNN_POINTWISE_MUL, dout, in.o), row_dot);
  const Tensor delta = g.input(kSoftmaxSum, rows, packed_strides(rows), kFloat);
  const Tensor one = g.scalar(kOne);
  g.pointwise_into(CUDNN_POINTWISE_MUL, row_dot, &one, nullptr, delta);

  // P = exp(scale q k^T - lse), masked; dV = P^T dO.
  const Tensor s = masked(p, in, g.pointwise(CUDNN_POINTWISE_SUB, scaled_scores(g, p, in), in.stats));
  const Tensor probs = g.pointwise(CUDNN_POINTWISE_EXP, s);
  grouped_matmul(g, p, transposed(g, probs, p.dtype), dout, dv, in.extents(Along::Keys, Along::All, Along::Queries));

  // dS = P (dO v^T - delta) * scale; dK = dS^T q, dQ = dS k.
  Tensor dp = g.intermediate({B, Hq, Tq, Tk}, packed_strides({B, Hq, Tq, Tk}));
  g.matmul_into(dout, vt, dp, in.extents(Along::Queries, Along::Keys, Along::All));
  Tensor ds = g.pointwise(CUDNN_POINTWISE_MUL, g.pointwise(CUDNN_POINTWISE_SUB, dp, delta), probs);
  ds = g.pointwise(CUDNN_POINTWISE_MUL, ds, in.scale);
  grouped_matmul(g, p, transposed(g, ds, p.dtype), in.q, dk, in.extents(Along::Keys, Along::All, Along::Queries));
  const Tensor dq_accum = g.input(kDQAccum, {B, Hq, Tq, D}, packed_strides({B, Hq, Tq, D}), kFloat);
  g.matmul_into(ds, transposed(g, in.kt, p.dtype), dq_accum, in.extents(Along::Queries, Along::All, Along::Keys));
  g.pointwise_into(CUDNN_POINTWISE_IDENTITY, dq_accum, nullptr, nullptr, dq);
  return g;
}

std::vector<int64_t> attention_uids(const AttentionProblem& p, bool backward) {
  std::vector<int64_t> uids = {kQ, kK, kV, kO, kStats, kScale};
  if (backward) uids.insert(uids.end(), {kDO, kDQ, kDK, kDV, kOne, kSoftmaxSum, kDQAccum});
  if (p.causal || p.packed) uids.push_back(kNegInf);  // the causal and padding masks' fill
  if (p.causal && !p.packed && p.Tq != p.Tk) uids.insert(uids.end(), {kSeqQ, kSeqK});
  if (p.packed) uids.insert(uids.end(), {kLengthQ, kLengthK, kStartQ, kStartK, kStartStats});
  std::sort(uids.begin(), uids.end());
  return uids;
}

}  // namespace kiln::kernels::cuda::cudnn
