#include "host_cache.h"

#include <cstdlib>
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

class Cache {
 public:
  // A cached block of [bytes, bytes + bytes / 8], or null.
  void* take(size_t bytes, size_t& block) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blocks_.lower_bound(bytes);
    if (it == blocks_.end() || it->first > bytes + bytes / 8) return nullptr;
    void* p = it->second;
    block = it->first;
    cached_ -= block;
    blocks_.erase(it);
    return p;
  }

  // Keeps the block unless the limit would be passed; false: the caller frees it.
  bool keep(void* p, size_t block) {
    std::lock_guard<std::mutex> lock(mu_);
    if (cached_ + block > limit_) return false;
    blocks_.emplace(block, p);
    cached_ += block;
    return true;
  }

  // Frees cached blocks, largest first, until at most `target` bytes are held.
  void trim(size_t target) {
    std::lock_guard<std::mutex> lock(mu_);
    while (cached_ > target && !blocks_.empty()) {
      auto last = std::prev(blocks_.end());
      std::free(last->second);
      cached_ -= last->first;
      blocks_.erase(last);
    }
  }

  void set_limit(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      limit_ = bytes;
    }
    trim(bytes);
  }

  size_t cached() {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }

 private:
  std::mutex mu_;
  std::multimap<size_t, void*> blocks_;  // by size
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

uint64_t host_cache_bytes() { return cache().cached(); }
void set_host_cache_limit(uint64_t bytes) { cache().set_limit(static_cast<size_t>(bytes)); }
void empty_host_cache() { cache().trim(0); }

}  // namespace kiln
