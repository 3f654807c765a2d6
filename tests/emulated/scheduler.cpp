// The grid loop of the CUDA emulation (tests/cuda_emulation.h). A block's
// threads are fibers on the calling OS thread (Boost.Context's fcontext, the
// switch underneath Boost.Fiber and Boost.Coroutine2): each runs until it
// meets a barrier, and the scheduler opens a barrier once every thread it
// waits for is there.
//
// With KILN_EMULATION_RACECHECK the kernel files are built with
// ThreadSanitizer and this file, left uninstrumented, tells it that each
// fiber is a thread of its own and what the barriers, atomics and block
// boundaries order; any race it reports fails the launch.

#include <sys/mman.h>

#include <algorithm>
#include <boost/context/detail/fcontext.hpp>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_emulation.h"

#if defined(__SANITIZE_ADDRESS__)
#define KILN_EMULATION_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KILN_EMULATION_ASAN 1
#endif
#endif
#ifdef KILN_EMULATION_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef KILN_EMULATION_RACECHECK
#include <sanitizer/tsan_interface.h>
#endif

namespace kiln_emulation {

namespace {

using boost::context::detail::fcontext_t;
using boost::context::detail::jump_fcontext;
using boost::context::detail::make_fcontext;
using boost::context::detail::transfer_t;

// AddressSanitizer must be told of every switch of stacks, or it takes a
// fiber's frames for overflows of the previous stack.
#ifdef KILN_EMULATION_ASAN
void start_switch(void** fake_stack, const void* bottom, size_t size) {
  __sanitizer_start_switch_fiber(fake_stack, bottom, size);
}
void finish_switch(void* fake_stack, const void** bottom, size_t* size) {
  __sanitizer_finish_switch_fiber(fake_stack, bottom, size);
}
void unpoison(void* begin, size_t size) { ASAN_UNPOISON_MEMORY_REGION(begin, size); }
#else
void start_switch(void**, const void*, size_t) {}
void finish_switch(void*, const void**, size_t*) {}
void unpoison(void*, size_t) {}
#endif

// ThreadSanitizer keeps a context per fiber; a switch orders nothing (the
// threads of a block run concurrently on a GPU), the barriers do.
#ifdef KILN_EMULATION_RACECHECK
void* new_race_context(unsigned thread) {
  void* context = __tsan_create_fiber(0);
  __tsan_set_fiber_name(context, ("CUDA thread " + std::to_string(thread)).c_str());
  return context;
}
void* current_race_context() { return __tsan_get_current_fiber(); }
void switch_race_context(void* context) { __tsan_switch_to_fiber(context, __tsan_switch_to_fiber_no_sync); }
void release(const void* sync) { __tsan_release(const_cast<void*>(sync)); }
void acquire(const void* sync) { __tsan_acquire(const_cast<void*>(sync)); }
#else
void* new_race_context(unsigned) { return nullptr; }
void* current_race_context() { return nullptr; }
void switch_race_context(void*) {}
void release(const void*) {}
void acquire(const void*) {}
#endif

// Races ThreadSanitizer has reported (its __tsan_on_report hook, below).
long races_reported = 0;

// A fiber's stack: mapped once and kept for the process (launches reuse
// them), its lowest page a guard that turns an overflow into a fault.
struct Stack {
  static constexpr size_t kBytes = size_t{512} << 10;  // sanitized frames are large
  static constexpr size_t kGuard = 4096;
  explicit Stack(unsigned thread) : race_context(new_race_context(thread)) {
    void* mapped = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapped == MAP_FAILED) throw std::runtime_error("emulated launch: no memory for a fiber's stack");
    bottom = static_cast<std::byte*>(mapped);
    mprotect(bottom, kGuard, PROT_NONE);
  }
  std::byte* top() const { return bottom + kBytes; }
  std::byte* bottom;
  void* race_context;
};

enum class State : uint8_t { runnable, at_warp, at_block, returned };

struct Fiber {
  unsigned thread = 0;
  State state = State::runnable;
  fcontext_t context = nullptr;
};

constexpr unsigned kMaxWarps = 1024 / 32;

// What orders what for the race check, by address: the scheduler's work
// before a block and each thread's start; each thread's end and the
// scheduler's work after; and the two sides of each barrier. A barrier
// alternates between two addresses, so that a thread past it, releasing the
// next phase, is not yet seen by a thread still to acquire this one.
struct Orders {
  char block_start, block_end;
  char block_barrier[2];
  char warp_barrier[kMaxWarps][2];
};
Orders orders;
unsigned block_phase = 0;
unsigned warp_phase[kMaxWarps];

std::vector<std::unique_ptr<Stack>> stacks;  // one per thread of the widest block so far
Fiber* current = nullptr;                    // the fiber running
fcontext_t scheduler = nullptr;              // where a suspended fiber returns to
void* scheduler_race_context = nullptr;
const void* scheduler_bottom = nullptr;  // the scheduler's stack, for AddressSanitizer
size_t scheduler_size = 0;
void (*kernel_body)(void*) = nullptr;
void* kernel_object = nullptr;

// Leaves the running fiber for the scheduler; `returning` when its kernel is done.
void yield_to_scheduler(bool returning) {
  void* fake_stack = nullptr;
  switch_race_context(scheduler_race_context);
  start_switch(returning ? nullptr : &fake_stack, scheduler_bottom, scheduler_size);
  scheduler = jump_fcontext(scheduler, nullptr).fctx;
  finish_switch(fake_stack, &scheduler_bottom, &scheduler_size);
}

[[noreturn]] void fiber_main(transfer_t from) {
  finish_switch(nullptr, &scheduler_bottom, &scheduler_size);
  scheduler = from.fctx;
  acquire(&orders.block_start);
  try {
    kernel_body(kernel_object);
  } catch (const std::exception& e) {
    if (block().error.empty()) block().error = std::string("a kernel thread threw: ") + e.what();
  }
  release(&orders.block_end);
  current->state = State::returned;
  yield_to_scheduler(true);
  std::abort();  // a returned fiber is never resumed
}

void resume(Fiber& fiber) {
  current = &fiber;
  threadIdx = make_uint3(fiber.thread, 0, 0);
  const Stack& stack = *stacks[fiber.thread];
  void* fake_stack = nullptr;
  switch_race_context(stack.race_context);
  start_switch(&fake_stack, stack.bottom, Stack::kBytes);
  fiber.context = jump_fcontext(fiber.context, nullptr).fctx;
  finish_switch(fake_stack, nullptr, nullptr);
  current = nullptr;
}

// A fiber's frames that never returned (its entry, and all of a fiber
// suspended when its block failed) span its saved stack pointer to the top.
// Their redzones must not greet the next block's frames there.
void forget_frames(const Fiber& fiber) {
  auto* saved = static_cast<std::byte*>(fiber.context);
  unpoison(saved, static_cast<size_t>(stacks[fiber.thread]->top() - saved));
}

// Suspends the running fiber at a barrier, ordered after everything the
// threads did before it.
void suspend(State waiting, const char* order) {
  release(order);
  current->state = waiting;
  yield_to_scheduler(false);
  acquire(order);
}

// Opens what can open: each warp whose 32 lanes all wait at a warp exchange,
// else the block barrier once every live thread waits there. Names the
// deadlock when neither can.
bool open_barriers(std::vector<Fiber>& fibers, std::string& error) {
  bool opened = false;
  size_t at_block = 0, returned = 0;
  for (size_t w = 0; w < fibers.size() / 32; ++w) {
    Fiber* lanes = fibers.data() + 32 * w;
    const auto count = [&](State s) {
      return std::count_if(lanes, lanes + 32, [&](const Fiber& f) { return f.state == s; });
    };
    const auto warp = count(State::at_warp), block = count(State::at_block), gone = count(State::returned);
    at_block += block;
    returned += gone;
    if (warp == 32) {
      for (Fiber* f = lanes; f != lanes + 32; ++f) f->state = State::runnable;
      ++warp_phase[w];
      opened = true;
    } else if (warp > 0 && error.empty()) {
      error = "warp " + std::to_string(w) + ": " + std::to_string(warp) + " lanes wait at a warp exchange (shuffle, "
              "ldmatrix or mma) that " + std::to_string(gone) + " returned lanes and " + std::to_string(block) +
              " at __syncthreads never reach";
    }
  }
  if (opened || !error.empty()) return opened;
  if (at_block + returned == fibers.size() && at_block > 0) {
    for (Fiber& f : fibers)
      if (f.state == State::at_block) f.state = State::runnable;
    ++block_phase;
    block().site = 0;  // the next phase takes its call site afresh
    return true;
  }
  return false;
}

}  // namespace

void warp_sync() {
  const unsigned w = warp();
  suspend(State::at_warp, &orders.warp_barrier[w][warp_phase[w] % 2]);
}

void block_sync(const std::source_location& at) {
  Block& b = block();
  const uint64_t mine = (uint64_t{at.line()} << 48) ^ reinterpret_cast<uintptr_t>(at.file_name());
  if (b.site == 0) b.site = mine;
  if (b.site != mine && b.error.empty())
    b.error = "__syncthreads reached from two places in one phase (line " + std::to_string(b.site >> 48) + " and " +
              at.file_name() + ":" + std::to_string(at.line()) + "): some live threads skip a barrier";
  suspend(State::at_block, &orders.block_barrier[block_phase % 2]);
}

void atomic_begin(void* address) { acquire(address); }
void atomic_end(void* address) { release(address); }

void run_grid(dim3 grid, unsigned threads, size_t dynamic_bytes, void (*body)(void*), void* kernel) {
  if (threads == 0 || threads % 32 != 0) throw std::invalid_argument("emulated blocks are whole warps");
  if (current) throw std::logic_error("emulated launch from inside a kernel");
  gridDim = grid;
  blockDim = dim3(threads);
  kernel_body = body;
  kernel_object = kernel;
  scheduler_race_context = current_race_context();
  while (stacks.size() < threads) stacks.push_back(std::make_unique<Stack>(static_cast<unsigned>(stacks.size())));
  std::vector<Fiber> fibers(threads);
  std::vector<Fiber*> order(threads);
  std::minstd_rand draw(threads * 2654435761u ^ grid.x);
  std::string error;  // a breach stops the grid after its block
  for (unsigned z = 0; z < grid.z && error.empty(); ++z)
    for (unsigned y = 0; y < grid.y && error.empty(); ++y)
      for (unsigned x = 0; x < grid.x && error.empty(); ++x) {
        Block state(threads, dynamic_bytes);
        running = &state;
        blockIdx = make_uint3(x, y, z);
        block_phase = 0;
        std::fill(std::begin(warp_phase), std::end(warp_phase), 0u);
        for (unsigned t = 0; t < threads; ++t) {
          fibers[t] = Fiber{t, State::runnable,
                            make_fcontext(stacks[t]->top(), Stack::kBytes - Stack::kGuard, fiber_main)};
          order[t] = &fibers[t];
        }
        const long races_before = races_reported;
        release(&orders.block_start);
        do {
          // Between barriers the threads run in a fresh order, as a GPU's warps might.
          std::shuffle(order.begin(), order.end(), draw);
          for (Fiber* f : order)
            if (f->state == State::runnable) resume(*f);
        } while (open_barriers(fibers, state.error));
        for (Fiber& f : fibers)
          if (f.state != State::returned) {  // a failed block: what its suspended threads did ends here too
            switch_race_context(stacks[f.thread]->race_context);
            release(&orders.block_end);
            switch_race_context(scheduler_race_context);
          }
        acquire(&orders.block_end);
        const bool finished =
            std::all_of(fibers.begin(), fibers.end(), [](const Fiber& f) { return f.state == State::returned; });
        if (state.error.empty() && !finished)
          state.error = "some threads wait at __syncthreads and some at warp exchanges: a deadlock";
        if (state.error.empty() && races_reported != races_before)
          state.error = "ThreadSanitizer reports a data race between threads of block (" + std::to_string(x) + ", " +
                        std::to_string(y) + ", " + std::to_string(z) + ") (above)";
        error = state.error;
        running = nullptr;
        for (Fiber& f : fibers) forget_frames(f);
      }
  if (!error.empty()) throw std::runtime_error("emulated launch: " + error);
}

}  // namespace kiln_emulation

#ifdef KILN_EMULATION_RACECHECK
// ThreadSanitizer calls it for every race it reports.
extern "C" void __tsan_on_report(void*) { ++kiln_emulation::races_reported; }
// A race fails its launch, and so its test: the exit status is the tests'
// (the planted race the tests expect must not fail the program).
extern "C" const char* __tsan_default_options() { return "exitcode=0"; }
#endif
