#include "kiln/threads.h"

#include "kiln/kernels/cpu.h"

namespace kiln {

void set_num_threads(int threads) { kernels::cpu::set_num_threads(threads); }
int get_num_threads() { return kernels::cpu::num_threads(); }

}  // namespace kiln
