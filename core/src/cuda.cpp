#include "kiln/cuda.h"

#include "dispatch.h"

namespace kiln::cuda {

bool is_available() { return kernels::cuda::is_available(); }
int device_count() { return kernels::cuda::device_count(); }
void synchronize(int device) { kernels::cuda::synchronize(device); }

}  // namespace kiln::cuda
