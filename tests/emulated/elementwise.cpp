// kernels/cuda/src/elementwise.cu, run on the CPU (prelude.h).
#include "prelude.h"

#include "elementwise.cu"
