// Rank 1 fails while the others wait in a collective: abort_all must end every
// rank with the error instead of leaving them waiting (run by dist_failure.cmake).
#include <kiln/kiln.h>

int main() {
  auto world = kiln::dist::mpi_world();
  try {
    if (world->rank() == 1) throw kiln::Error("[test] rank 1 failed on purpose");
    kiln::Tensor t = kiln::ones({4});
    world->all_reduce(t);  // the other ranks wait here for rank 1
    world->barrier();
  } catch (const std::exception& e) {
    kiln::dist::abort_all(e);
  }
  return 0;
}
