// kernels/cuda/src/cudnn_sequence_tables.cu, run on the CPU (prelude.h).
#include "prelude.h"

#include "cudnn_sequence_tables.cu"
