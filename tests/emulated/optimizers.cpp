// kernels/cuda/src/optimizers.cu, run on the CPU (prelude.h).
#include "prelude.h"

#include "optimizers.cu"
