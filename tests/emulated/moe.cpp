// kernels/cuda/src/moe.cu, run on the CPU (prelude.h).
#include "prelude.h"

#include "moe.cu"
