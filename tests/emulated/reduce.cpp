// kernels/cuda/src/reduce.cu, run on the CPU (prelude.h).
#include "prelude.h"

#include "reduce.cu"
