#pragma once
// What a program asks about CUDA: whether kiln can use a GPU here, how many,
// and waiting for one to finish its work.

namespace kiln::cuda {

// True when kiln was built with CUDA and a device is visible.
bool is_available();
int device_count();
// Blocks until every kernel queued on the device has finished.
void synchronize(int device = 0);

}  // namespace kiln::cuda
