#pragma once
// The checks every token loader makes of its options, named by the loader.

#include "kiln/base/error.h"
#include "kiln/data/data_loader.h"

namespace kiln::data {

// Raises, naming `loader`, unless batch and sequence are positive, a batch's
// tokens fit an int64 and the rank is in the world.
inline void check_loader_options(const DataLoaderOptions& o, const char* loader) {
  KILN_CHECK(o.batch_size > 0 && o.seq_len > 0, "[{}] batch_size ({}) and seq_len ({}) must be positive", loader,
             o.batch_size, o.seq_len);
  int64_t tokens = 0;
  KILN_CHECK(!__builtin_mul_overflow(o.batch_size, o.seq_len, &tokens) && tokens < INT64_MAX,
             "[{}] a batch of {} x {} tokens is more than an int64 counts", loader, o.batch_size, o.seq_len);
  KILN_CHECK(o.world_size > 0 && o.rank >= 0 && o.rank < o.world_size, "[{}] rank {} is not in a world of {}", loader,
             o.rank, o.world_size);
}

}  // namespace kiln::data
