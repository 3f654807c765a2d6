#include "kiln/data/data_loader.h"

#include <numeric>

#include "kiln/base/philox.h"
#include "kiln/data/shuffle.h"
#include "kiln/ops.h"
#include "loader_options.h"

namespace kiln::data {

DataLoader::DataLoader(std::vector<std::string> files, const DataLoaderOptions& o) : options_(o) {
  KILN_CHECK(!files.empty(), "[DataLoader] no token files given");
  check_loader_options(o, "DataLoader");
  for (const std::string& f : files) {
    shards_.emplace_back(f);
    if (o.vocab_size > 0) shards_.back().check_vocabulary(o.vocab_size);
    KILN_CHECK(batches_in(static_cast<int64_t>(shards_.size()) - 1) > 0,
               "[DataLoader] {} holds {} tokens: too few for one batch of {} x {} (+1) on each of {} ranks", f,
               shards_.back().size(), o.batch_size, o.seq_len, o.world_size);
  }
}

int64_t DataLoader::batches_in(int64_t shard) const {
  int64_t windows = (shards_[shard].size() - 1) / tokens_per_batch();
  return windows / options_.world_size;
}

int64_t DataLoader::batches_per_epoch() const {
  int64_t n = 0;
  for (int64_t s = 0; s < static_cast<int64_t>(shards_.size()); ++s) n += batches_in(s);
  return n;
}

int64_t DataLoader::window(int64_t shard, int64_t batch) const {
  int64_t slot = batch;
  if (options_.shuffle) {
    // The batch-th element of a Fisher-Yates permutation keyed by (seed, epoch, shard).
    const uint64_t stream = (static_cast<uint64_t>(pos_.epoch) << 20) ^ static_cast<uint64_t>(shard);
    slot = shuffled_order(batches_in(shard), options_.seed, stream)[static_cast<size_t>(batch)];
  }
  return slot * options_.world_size + options_.rank;
}

void DataLoader::seek(const LoaderPosition& p) {
  KILN_CHECK(p.epoch >= 0 && p.shard >= 0 && p.shard < static_cast<int64_t>(shards_.size()) && p.batch >= 0 &&
                 p.batch < batches_in(p.shard),
             "[DataLoader] position (epoch {}, shard {}, batch {}) is outside the data", p.epoch, p.shard, p.batch);
  pos_ = p;
}

std::pair<Tensor, Tensor> DataLoader::next() {
  const int64_t B = options_.batch_size, T = options_.seq_len;
  const TokenFile& file = shards_[pos_.shard];
  const int64_t start = window(pos_.shard, pos_.batch) * tokens_per_batch();
  Tensor x = empty({B, T}, kInt64), y = empty({B, T}, kInt64);
  int64_t* xp = x.data_ptr<int64_t>();
  int64_t* yp = y.data_ptr<int64_t>();
  for (int64_t i = 0; i < B * T; ++i) {
    xp[i] = file[start + i];
    yp[i] = file[start + i + 1];
  }
  if (++pos_.batch == batches_in(pos_.shard)) {
    pos_.batch = 0;
    if (++pos_.shard == static_cast<int64_t>(shards_.size())) {
      pos_.shard = 0;
      ++pos_.epoch;
    }
  }
  return {x.to(options_.device), y.to(options_.device)};
}

std::vector<int64_t> shuffled_order(int64_t n, uint64_t seed, uint64_t stream) {
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  for (int64_t i = n - 1; i > 0; --i) {
    uint64_t r = philox::bits(seed, stream << 24, static_cast<uint64_t>(i));
    std::swap(perm[static_cast<size_t>(i)], perm[r % static_cast<uint64_t>(i + 1)]);
  }
  return perm;
}

}  // namespace kiln::data
