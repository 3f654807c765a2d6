// kernels/cuda/src/attention.cu, run on the CPU (prelude.h).
#include "prelude.h"

#include "attention.cu"
