#pragma once
// cuDNN's fused attention as graphs (cudnn_attention.cpp): the operation
// patterns cuDNN's flash-attention engines recognise (those cuDNN's frontend
// builds for cuDNN 9 before 9.21), forward and backward, for a padded batch
// of bfloat16/float16 q (B, Hq, Tq, D), k and v (B, Hkv, Tk, D), out like q,
// lse (B, Hq, Tq) float32, all contiguous. Causal masks align bottom-right.

#include <cstdint>

#include "cudnn_graph.h"

namespace kiln::kernels::cuda::cudnn {

struct AttentionProblem {
  int64_t B, Hq, Hkv, Tq, Tk, D;
  bool causal;
  cudnnDataType_t dtype;  // of q, k, v, out and their gradients
};

// The uids the graphs' tensors are bound to at execution.
enum AttentionUid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kScale, kDO, kDQ, kDK, kDV,
  kNegInf, kOne, kSeqQ, kSeqK,  // by-value scalars
  kSoftmaxSum, kDQAccum,        // float scratch of the backward, in the workspace kiln allocates
};

Graph attention_forward_graph(const AttentionProblem& p);
Graph attention_backward_graph(const AttentionProblem& p);

}  // namespace kiln::kernels::cuda::cudnn
