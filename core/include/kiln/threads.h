#pragma once
// The threads kiln's CPU ops run on: one pool, the caller's thread among them,
// whose idle threads sleep instead of spinning (a busy machine is not
// starved), and BLAS's GEMMs split over it. The default is OMP_NUM_THREADS
// when set, else the cores this process may run on, divided among the ranks
// of an MPI job on the same node (so mpirun gives each rank its share).
// Results depend on the count only where the docs of an op say so.
//
//   kiln::set_num_threads(1);   // e.g. beside other work on a shared machine

namespace kiln {

void set_num_threads(int threads);  // >= 1
int get_num_threads();              // as set, or the default

}  // namespace kiln
