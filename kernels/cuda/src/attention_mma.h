#pragma once
// The tensor-core attention kernels (attention_mma.cu): FlashAttention-2 on
// mma.sync (sm_80 and later) for bfloat16 and float16 with head dims 64 and
// 128. attention.cu dispatches to them when they apply.

#include "kiln/base/attention_geometry.h"
#include "kiln/base/buffer.h"

namespace kiln::kernels::cuda {

// True when the tensor-core kernels take these operands: bfloat16 or float16,
// D of 64 or 128, every pointer 16-byte aligned.
bool attention_mma_applies(const AttentionGeometry& g, const Buffer& q, const Buffer& k, const Buffer& v,
                           const Buffer& out);

// The kernel contract's attention (kernel_api.inc) on tensor cores.
void attention_mma_forward(const Buffer& out, const Buffer& lse, const Buffer& q, const Buffer& k, const Buffer& v,
                           const AttentionGeometry& g, double scale);
// Its backward, given delta = rowsum(dout * out) of each query row, float32.
void attention_mma_backward(const Buffer& dq, const Buffer& dk, const Buffer& dv, const Buffer& dout,
                            const Buffer& q, const Buffer& k, const Buffer& v, const Buffer& lse, const float* delta,
                            const AttentionGeometry& g, double scale);

}  // namespace kiln::kernels::cuda
