// A build without MPI: the world is this one process.

#include <cstdio>
#include <cstdlib>

#include "kiln/dist/process_group.h"

namespace kiln::dist {

std::shared_ptr<ProcessGroup> mpi_world() {
  static std::shared_ptr<ProcessGroup> world = single_process_group();
  return world;
}

void abort_all(const std::exception& e) {
  std::fprintf(stderr, "kiln: %s\n", e.what());
  std::fflush(stderr);
  std::_Exit(1);
}

}  // namespace kiln::dist
