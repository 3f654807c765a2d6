// The device runtime the emulated kernel files call: host memory, no streams,
// launch checks that cannot fail, and no sorted index_add (the general
// kernel takes every layout); and the grid loop, which runs each block's
// threads as fibers (Boost.Context's fcontext, the switch underneath
// Boost.Fiber and Boost.Coroutine2).

#include <sys/mman.h>

#include <algorithm>
#include <boost/context/detail/fcontext.hpp>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <string>

#include "prelude.h"

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

#include "device_error.h"
#include "kiln/base/error.h"
#include "kiln/kernels/cuda.h"
#include "launch.h"
#include "sorted_index_add.h"

namespace kiln::kernels::cuda {

void* allocate(size_t nbytes, int, void*) { return std::aligned_alloc(256, (nbytes + 255) / 256 * 256); }
void deallocate(void* ptr, int, void*) { std::free(ptr); }
cudaStream_t current_stream() { return nullptr; }
void check_launch(const char*) {}
void fail(const char* op, const char* message) { KILN_FAIL("[{}] {}", op, message); }

DeviceError* device_error_flag() {
  static DeviceError flag{};
  return &flag;
}

bool index_add_sorted(const Buffer&, const Buffer&, const Buffer&) { return false; }

}  // namespace kiln::kernels::cuda

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
#else
void start_switch(void**, const void*, size_t) {}
void finish_switch(void*, const void**, size_t*) {}
#endif

// A fiber's stack: mapped once and kept for the process (launches reuse
// them), its lowest page a guard that turns an overflow into a fault.
struct Stack {
  static constexpr size_t kBytes = size_t{512} << 10;  // sanitized frames are large
  Stack() {
    void* mapped = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapped == MAP_FAILED) throw std::runtime_error("emulated launch: no memory for a fiber's stack");
    bottom = static_cast<std::byte*>(mapped);
    mprotect(bottom, 4096, PROT_NONE);
  }
  std::byte* bottom;
};

enum class State : uint8_t { runnable, at_warp, at_block, returned };

struct Fiber {
  unsigned thread = 0;
  State state = State::runnable;
  fcontext_t context = nullptr;
};

std::vector<std::unique_ptr<Stack>> stacks;  // one per thread of the widest block so far
Fiber* current = nullptr;                    // the fiber running
fcontext_t scheduler = nullptr;              // where a suspended fiber returns to
const void* scheduler_bottom = nullptr;      // the scheduler's stack, for AddressSanitizer
size_t scheduler_size = 0;
void (*kernel_body)(void*) = nullptr;
void* kernel_object = nullptr;

// Leaves the running fiber for the scheduler; `returning` when its kernel is done.
void yield_to_scheduler(bool returning) {
  void* fake_stack = nullptr;
  start_switch(returning ? nullptr : &fake_stack, scheduler_bottom, scheduler_size);
  scheduler = jump_fcontext(scheduler, nullptr).fctx;
  finish_switch(fake_stack, &scheduler_bottom, &scheduler_size);
}

[[noreturn]] void fiber_main(transfer_t from) {
  finish_switch(nullptr, &scheduler_bottom, &scheduler_size);
  scheduler = from.fctx;
  try {
    kernel_body(kernel_object);
  } catch (const std::exception& e) {
    if (block().error.empty()) block().error = std::string("a kernel thread threw: ") + e.what();
  }
  current->state = State::returned;
  yield_to_scheduler(true);
  std::abort();  // a returned fiber is never resumed
}

// A fiber's frames that never returned (its entry, and all of a fiber
// suspended when its block failed) span its saved stack pointer to the top.
// Their redzones must not greet the next block's frames there.
void forget_frames(const Fiber& fiber) {
#ifdef KILN_EMULATION_ASAN
  std::byte* top = stacks[fiber.thread]->bottom + Stack::kBytes;
  auto* saved = static_cast<std::byte*>(fiber.context);
  ASAN_UNPOISON_MEMORY_REGION(saved, static_cast<size_t>(top - saved));
#else
  (void)fiber;
#endif
}

void resume(Fiber& fiber) {
  current = &fiber;
  threadIdx = make_uint3(fiber.thread, 0, 0);
  const Stack& stack = *stacks[fiber.thread];
  void* fake_stack = nullptr;
  start_switch(&fake_stack, stack.bottom, Stack::kBytes);
  fiber.context = jump_fcontext(fiber.context, nullptr).fctx;
  finish_switch(fake_stack, nullptr, nullptr);
  current = nullptr;
}

// Opens what can open: each warp whose 32 lanes all wait at a warp exchange,
// else the block barrier once every live thread waits there. Names the
// deadlock when neither can.
bool open_barriers(std::vector<Fiber>& fibers, std::string& error) {
  bool opened = false;
  size_t at_block = 0, returned = 0;
  for (size_t w = 0; w < fibers.size() / 32; ++w) {
    Fiber* lanes = fibers.data() + 32 * w;
    const auto count = [&](State s) { return std::count_if(lanes, lanes + 32, [&](const Fiber& f) { return f.state == s; }); };
    const auto warp = count(State::at_warp), block = count(State::at_block), gone = count(State::returned);
    at_block += block;
    returned += gone;
    if (warp == 32) {
      for (Fiber* f = lanes; f != lanes + 32; ++f) f->state = State::runnable;
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
    block().site = 0;  // the next phase takes its call site afresh
    return true;
  }
  return false;
}

}  // namespace

void suspend(Barrier barrier) {
  current->state = barrier == Barrier::warp ? State::at_warp : State::at_block;
  yield_to_scheduler(false);
}

void run_grid(dim3 grid, unsigned threads, size_t dynamic_bytes, void (*body)(void*), void* kernel) {
  if (threads == 0 || threads % 32 != 0) throw std::invalid_argument("emulated blocks are whole warps");
  if (current) throw std::logic_error("emulated launch from inside a kernel");
  gridDim = grid;
  blockDim = dim3(threads);
  kernel_body = body;
  kernel_object = kernel;
  while (stacks.size() < threads) stacks.push_back(std::make_unique<Stack>());
  std::vector<Fiber> fibers(threads);
  std::vector<Fiber*> order(threads);
  std::minstd_rand draw(threads * 2654435761u ^ grid.x);
  std::string error;  // a breach stops the grid after its block
  for (unsigned z = 0; z < grid.z && error.empty(); ++z)
    for (unsigned y = 0; y < grid.y && error.empty(); ++y)
      for (unsigned x = 0; x < grid.x && error.empty(); ++x) {
        Block current_block(threads, dynamic_bytes);
        running = &current_block;
        blockIdx = make_uint3(x, y, z);
        for (unsigned t = 0; t < threads; ++t) {
          fibers[t] = Fiber{t, State::runnable, make_fcontext(stacks[t]->bottom + Stack::kBytes, Stack::kBytes - 4096, fiber_main)};
          order[t] = &fibers[t];
        }
        do {
          // Between barriers the threads run in a fresh order, as a GPU's warps might.
          std::shuffle(order.begin(), order.end(), draw);
          for (Fiber* f : order)
            if (f->state == State::runnable) resume(*f);
        } while (open_barriers(fibers, current_block.error));
        const bool finished = std::all_of(fibers.begin(), fibers.end(), [](const Fiber& f) { return f.state == State::returned; });
        if (current_block.error.empty() && !finished)
          current_block.error = "some threads wait at __syncthreads and some at warp exchanges: a deadlock";
        error = current_block.error;
        running = nullptr;
        for (Fiber& f : fibers) forget_frames(f);
      }
  if (!error.empty()) throw std::runtime_error("emulated launch: " + error);
}

namespace {
std::mutex attributes_mu;
std::map<const void*, int> max_dynamic_shared;  // per kernel, as cudaFuncSetAttribute set it
}  // namespace

cudaError_t func_set_attribute(const void* function, cudaFuncAttribute attribute, int value) {
  if (attribute == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    std::lock_guard<std::mutex> lock(attributes_mu);
    max_dynamic_shared[function] = value;
  }
  return cudaSuccess;
}

void check_launch_limits(dim3 grid, unsigned threads, size_t dynamic_bytes, const void* function) {
  constexpr size_t kDefaultShared = 48 << 10, kMaxShared = 227 << 10;  // Hopper's per-block limits
  auto refuse = [](const std::string& why) { throw std::runtime_error("emulated launch: " + why); };
  if (threads == 0 || threads > 1024) refuse(std::to_string(threads) + " threads per block (1 to 1024)");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u)
    refuse("a grid of " + std::to_string(grid.x) + " x " + std::to_string(grid.y) + " x " + std::to_string(grid.z) +
           " blocks (x up to 2^31 - 1, y and z 1 to 65535)");
  if (dynamic_bytes > kDefaultShared) {
    int allowed = 0;
    {
      std::lock_guard<std::mutex> lock(attributes_mu);
      if (auto it = max_dynamic_shared.find(function); it != max_dynamic_shared.end()) allowed = it->second;
    }
    if (dynamic_bytes > kMaxShared || dynamic_bytes > static_cast<size_t>(allowed))
      refuse(std::to_string(dynamic_bytes) + " bytes of dynamic shared memory: past 48 KiB it needs "
             "cudaFuncAttributeMaxDynamicSharedMemorySize (set: " + std::to_string(allowed) + "), and 227 KiB at most");
  }
}

}  // namespace kiln_emulation
