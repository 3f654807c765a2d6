#pragma once
// What every CUDA launcher uses: the stream, an NVTX range, and the launch
// check. Light enough for .cu files (no fmt, no kiln::Error definition).

#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

namespace kiln::kernels::cuda {

// Devices kiln keeps per-device state for (streams, pools, handles).
inline constexpr int kMaxDevices = 64;

// Scoped NVTX range, so profiles name kiln's kernels.
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

// Raises kiln::Error if the last launch failed to start (bad configuration, no
// device). Defined in runtime.cpp.
void check_launch(const char* kernel);

// The stream kiln's kernels run on: this thread's current stream for the
// current device (streams.cpp).
cudaStream_t current_stream();

}  // namespace kiln::kernels::cuda
