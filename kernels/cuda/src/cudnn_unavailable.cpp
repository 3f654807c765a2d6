// The cuDNN attention backend of a build without cuDNN (no CUDA, or no cuDNN
// beside it): each entry point raises "built without cuDNN".

#include "kiln/base/error.h"
#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

namespace {
[[noreturn]] void missing(const char* op) {
  KILN_FAIL("[{}] kiln was built without cuDNN (install it beside the CUDA toolkit, or configure with "
            "-DKILN_CUDNN_ROOT=<prefix>)", op);
}
}  // namespace

void cudnn_attention(const Buffer&, const Buffer&, const Buffer&, const Buffer&, const Buffer&,
                     const AttentionGeometry&, double) {
  missing("cudnn_attention");
}
void cudnn_attention_backward(const Buffer&, const Buffer&, const Buffer&, const Buffer&, const Buffer&, const Buffer&,
                              const Buffer&, const Buffer&, const Buffer&, const AttentionGeometry&, double) {
  missing("cudnn_attention_backward");
}

}  // namespace kiln::kernels::cuda
