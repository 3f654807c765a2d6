// nccl_world in a build without CUDA or NCCL.

#include "kiln/base/error.h"
#include "kiln/dist/process_group.h"

namespace kiln::dist {

std::shared_ptr<ProcessGroup> nccl_world(int) {
  KILN_FAIL("[nccl_world] kiln was built without NCCL (needs CUDA and nccl.h; set KILN_NCCL_ROOT)");
}

}  // namespace kiln::dist
