#pragma once
// A seeded Fisher-Yates permutation of 0 .. n - 1 drawn from Philox, so that
// every rank and every resumed run visits data in the same order.

#include <cstdint>
#include <vector>

namespace kiln::data {

// The permutation of (seed, stream): a data loader's stream numbers its epoch (and shard).
std::vector<int64_t> shuffled_order(int64_t n, uint64_t seed, uint64_t stream);

}  // namespace kiln::data
