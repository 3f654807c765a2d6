#pragma once
// The CPU kernels: the reference for every op, and a usable backend. float32
// reductions accumulate in float64 here, the 16-bit floats in float32.

#include <cstdint>
#include <vector>

#include "kiln/base/attention_geometry.h"
#include "kiln/base/buffer.h"
#include "kiln/base/gemm_options.h"
#include "kiln/base/op_kinds.h"
#include "kiln/base/optimizer_step.h"

namespace kiln::kernels::cpu {
#include "kiln/base/kernel_api.inc"

// The threads the CPU kernels use (the caller's among them). The default is
// OMP_NUM_THREADS when set, else the cores this process may run on, divided
// among the ranks of an MPI job on this node.
void set_num_threads(int threads);
int num_threads();
}  // namespace kiln::kernels::cpu
