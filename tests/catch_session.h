#pragma once
// Catch2's implementation is compiled once (catch_session.cpp); each test
// main (catch_main.cpp, mpi_main.cpp, gpu_main.cpp) runs the session through this.

namespace kiln::test {

int run_catch_session(int argc, char** argv);

}  // namespace kiln::test
