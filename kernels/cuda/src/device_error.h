#pragma once
// Host-side pieces of the CUDA backend's error reporting, for both .cu and
// .cpp files: raising kiln::Error without fmt in the caller, and the
// device-side error flag that kernels set and synchronizing calls check.

#include <cstdint>

#include "kiln/base/dtype.h"

namespace kiln::kernels::cuda {

// Raises kiln::Error("[op] message") from host code; defined in runtime.cpp.
[[noreturn]] void fail(const char* op, const char* message);

// Device-side errors (an index out of range): kernels record the first one
// here; the next synchronizing call raises it (runtime.cpp) instead of
// trapping and poisoning the context.
struct DeviceError {
  int code;       // 0: none
  int64_t value;  // the offending index
  int64_t bound;  // the size it had to stay under
};
enum DeviceErrorCode : int { kIndexOutOfRange = 1, kTargetOutOfRange = 2, kIntegerDivisionByZero = 3 };
// The flag in device memory of the current device.
DeviceError* device_error_flag();

}  // namespace kiln::kernels::cuda
