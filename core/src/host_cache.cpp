#include "host_cache.h"

#include <unistd.h>

#include <cstdlib>
#include <list>
#include <map>
#include <mutex>

#include "kiln/base/error.h"
#include "kiln/host_memory.h"

namespace kiln {

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kCacheOn = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kCacheOn = false;
#else
constexpr bool kCacheOn = true;
#endif
#else
constexpr bool kCacheOn = true;
#endif

constexpr size_t kMinCached = size_t{256} << 10;  // below this, malloc's own bins reuse memory well
constexpr size_t kPage = 4096;

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// Cached blocks by size, and in the order they were freed: past the limit,
// the longest unused go first (the newest are the likeliest to be asked for).
class Cache {
 public:
  // A cached block of [bytes, bytes + bytes / 8], or null.
  void* take(size_t bytes, size_t& block) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_size_.lower_bound(bytes);
    if (it == by_size_.end() || it->first > bytes + bytes / 8) return nullptr;
    void* p = it->second->second;
    block = it->first;
    cached_ -= block;
    by_age_.erase(it->second);
    by_size_.erase(it);
    return p;
  }

  // Keeps the block, freeing the longest unused ones past the limit; false:
  // the block alone is over it, and the caller frees it.
  bool keep(void* p, size_t block) {
    std::lock_guard<std::mutex> lock(mu_);
    if (block > limit_) return false;
    by_size_.emplace(block, by_age_.insert(by_age_.end(), {block, p}));
    cached_ += block;
    evict_to(limit_);
    return true;
  }

  void trim(size_t target) {
    std::lock_guard<std::mutex> lock(mu_);
    evict_to(target);
  }

  void set_limit(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    limit_ = bytes;
    evict_to(bytes);
  }

  size_t cached() {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }

 private:
  using Age = std::list<std::pair<size_t, void*>>;  // (size, block), oldest first

  // Frees the oldest blocks until at most `target` bytes are held (mu_ held).
  void evict_to(size_t target) {
    while (cached_ > target) {
      const auto [size, p] = by_age_.front();
      auto lo = by_size_.lower_bound(size);
      while (lo->second != by_age_.begin()) ++lo;
      by_size_.erase(lo);
      by_age_.pop_front();
      cached_ -= size;
      std::free(p);
    }
  }

  std::mutex mu_;
  Age by_age_;
  std::multimap<size_t, Age::iterator> by_size_;
  size_t cached_ = 0;
  size_t limit_ = size_t{1} << 30;
};

// Never destroyed: tensors that die during static destruction still return here.
Cache& cache() {
  static Cache* c = new Cache;
  return *c;
}

}  // namespace

namespace host_cache {

void* allocate(size_t bytes, size_t& block) {
  // (No machine has 2^62 bytes; the bound keeps the rounding below from wrapping.)
  KILN_CHECK(bytes <= size_t{1} << 62, "[allocate] out of host memory allocating {} bytes", bytes);
  const bool cached = kCacheOn && bytes >= kMinCached;
  block = round_up(bytes, cached ? kPage : 64);
  if (cached)
    if (void* p = cache().take(block, block)) return p;
  void* p = std::aligned_alloc(64, block);
  if (!p && cached) {
    empty_host_cache();
    p = std::aligned_alloc(64, block);
  }
  KILN_CHECK(p != nullptr, "[allocate] out of host memory allocating {} bytes", bytes);
  return p;
}

void release(void* p, size_t block) {
  if (!(kCacheOn && block >= kMinCached && cache().keep(p, block))) std::free(p);
}

}  // namespace host_cache

bool host_cache_enabled() { return kCacheOn; }
uint64_t host_cache_bytes() { return cache().cached(); }
void set_host_cache_limit(uint64_t bytes) { cache().set_limit(static_cast<size_t>(bytes)); }
void empty_host_cache() { cache().trim(0); }

uint64_t physical_host_memory() {
  return static_cast<uint64_t>(::sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace kiln
