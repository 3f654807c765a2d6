// main() for the `gpu` tests: without a usable CUDA device they report why and
// exit with ctest's skip code instead of failing.
#include <cstdio>

#include <kiln/cuda.h>

#include "catch_session.h"

int main(int argc, char** argv) {
  if (!kiln::cuda::is_available()) {
    std::printf("skipped: %s\n", kiln::cuda::device_count() == 0 ? "no CUDA device visible (or kiln built without CUDA)"
                                                                  : "CUDA unavailable");
    return 77;
  }
  return kiln::test::run_catch_session(argc, argv);
}
