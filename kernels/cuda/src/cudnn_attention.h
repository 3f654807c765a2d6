#pragma once
// cuDNN's fused attention as graphs (cudnn_attention.cpp): the operation
// patterns cuDNN's flash-attention engines recognise (those cuDNN's frontend
// builds for cuDNN 9 before 9.21), forward and backward, for bfloat16/float16
// q, k, v and out, float32 lse, all contiguous, in either of kiln's attention
// layouts (kiln/base/attention_geometry.h):
// - a padded batch: q (B, Hq, Tq, D), k and v (B, Hkv, Tk, D), lse (B, Hq, Tq);
// - packed sequences: q (total_q, Hq, D), k and v (total_k, Hkv, D), lse
//   (total_q, Hq). Tq and Tk then bound the sequences' lengths, which the
//   graph reads at execution with the sequences' first elements (cuDNN's
//   ragged offsets) and masks past (its padding mask).
// Causal masks align bottom-right, per sequence.

#include <compare>
#include <cstdint>

#include "cudnn_graph.h"

namespace kiln::kernels::cuda::cudnn {

struct AttentionProblem {
  int64_t B, Hq, Hkv, Tq, Tk, D;
  bool causal;
  cudnnDataType_t dtype;  // of q, k, v, out and their gradients
  bool packed = false;
  auto operator<=>(const AttentionProblem&) const = default;  // plans are kept by problem
};

// The uids the graphs' tensors are bound to at execution.
enum AttentionUid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kScale, kDO, kDQ, kDK, kDV,
  kNegInf, kOne, kSeqQ, kSeqK,  // by-value scalars
  kSoftmaxSum, kDQAccum,        // float scratch of the backward, in the workspace kiln allocates
  // Packed sequences' int32 tables (SequenceTables): lengths (B), and the first
  // element of each sequence (B + 1) in q-side, k-side and statistics tensors.
  kLengthQ, kLengthK, kStartQ, kStartK, kStartStats,
  kUidEnd
};

Graph attention_forward_graph(const AttentionProblem& p);
Graph attention_backward_graph(const AttentionProblem& p);

// The uids the caller binds to run p's forward or backward graph: exactly
// the graph's non-virtual tensors (Graph::bound_uids).
std::vector<int64_t> attention_uids(const AttentionProblem& p, bool backward);

}  // namespace kiln::kernels::cuda::cudnn
