// main() for tests run under mpirun: a rank whose test run throws ends every
// rank (abort_all) instead of leaving the others in a collective.
#include <kiln/dist/process_group.h>

#include "catch_session.h"

int main(int argc, char** argv) {
  try {
    kiln::dist::mpi_world();  // start MPI before any test
    int failed = kiln::test::run_catch_session(argc, argv);
    kiln::dist::mpi_world()->barrier();
    return failed;
  } catch (const std::exception& e) {
    kiln::dist::abort_all(e);
  }
}
