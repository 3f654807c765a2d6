#pragma once
// What a matmul kernel may do, and what it adds, beyond out = a @ b.

#include "kiln/base/buffer.h"

namespace kiln {

// The options of a matmul kernel (above).
struct GemmOptions {
  // float32 operands may be rounded to TF32 on tensor cores (CUDA; the CPU
  // computes in float32 regardless).
  bool allow_tf32 = false;
  // When bias.data is set: out[..., j] += bias[j] for the n columns, in the
  // accumulation precision before the result is rounded (cuBLASLt's bias
  // epilogue on CUDA). bias is contiguous, of out's dtype.
  Buffer bias;
  // When gelu_tanh: out = gelu_tanh(a @ b (+ bias)), GPT-2's tanh
  // approximation, computed from the unrounded sum (cuBLASLt's GELU epilogue on
  // CUDA). When pre_activation.data is set too, it receives a @ b (+ bias),
  // with out's shape and dtype, for the backward.
  bool gelu_tanh = false;
  Buffer pre_activation;  // a @ b (+ bias) before the GELU, when set
};

}  // namespace kiln
