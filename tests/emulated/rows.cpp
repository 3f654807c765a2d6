// kernels/cuda/src/rows.cu, run on the CPU (prelude.h).
#include "prelude.h"

#include "rows.cu"
