// kernels/cuda/src/indexing.cu, run on the CPU (prelude.h).
#include "prelude.h"

#include "indexing.cu"
