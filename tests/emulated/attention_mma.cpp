// kernels/cuda/src/attention_mma.cu, run on the CPU (prelude.h).
#include "prelude.h"

#include "attention_mma.cu"
