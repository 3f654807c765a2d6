#include "kiln/data/example_loader.h"

#include <algorithm>
#include <numeric>

#include "kiln/data/shuffle.h"
#include "kiln/ops.h"

namespace kiln::data {

ExampleLoader::ExampleLoader(std::vector<ChatExample> examples, const ExampleLoaderOptions& o)
    : examples_(std::move(examples)), options_(o) {
  KILN_CHECK(o.batch_size > 0 && o.world_size > 0 && o.rank >= 0 && o.rank < o.world_size,
             "[ExampleLoader] batch_size ({}) must be positive and rank ({}) within world_size ({})", o.batch_size,
             o.rank, o.world_size);
  KILN_CHECK(o.group > 0 && static_cast<int64_t>(examples_.size()) % o.group == 0,
             "[ExampleLoader] {} examples do not come in groups of {}", examples_.size(), o.group);
  KILN_CHECK(batches_per_epoch() > 0, "[ExampleLoader] {} examples do not fill one batch of {} on each of {} ranks",
             examples_.size(), o.batch_size, o.world_size);
}

int64_t ExampleLoader::batches_per_epoch() const {
  return static_cast<int64_t>(examples_.size()) / options_.group / (options_.batch_size * options_.world_size);
}

int64_t ExampleLoader::trained_tokens() const {
  int64_t n = 0;
  for (const ChatExample& e : examples_) n += std::count_if(e.targets.begin(), e.targets.end(), [](int64_t y) { return y != -100; });
  return n;
}

void ExampleLoader::seek(const LoaderPosition& p) {
  KILN_CHECK(p.epoch >= 0 && p.shard == 0 && p.batch >= 0 && p.batch < batches_per_epoch(),
             "[ExampleLoader] position (epoch {}, shard {}, batch {}) is outside the data", p.epoch, p.shard, p.batch);
  pos_ = p;
}

std::vector<int64_t> ExampleLoader::next_indices() {
  const int64_t B = options_.batch_size, G = options_.group, n = static_cast<int64_t>(examples_.size()) / G;
  std::vector<int64_t> order(static_cast<size_t>(n));  // of groups
  if (options_.shuffle) order = shuffled_order(n, options_.seed, static_cast<uint64_t>(pos_.epoch));
  else std::iota(order.begin(), order.end(), 0);
  std::vector<int64_t> indices;
  const int64_t first = (pos_.batch * options_.world_size + options_.rank) * B;
  for (int64_t i = 0; i < B; ++i)
    for (int64_t k = 0; k < G; ++k) indices.push_back(order[static_cast<size_t>(first + i)] * G + k);
  if (++pos_.batch == batches_per_epoch()) pos_ = {pos_.epoch + 1, 0, 0};
  return indices;
}

ExampleBatch ExampleLoader::next() {
  std::vector<const ChatExample*> batch;
  for (int64_t i : next_indices()) batch.push_back(&examples_[static_cast<size_t>(i)]);
  if (options_.pack_tokens > 0) return pack_examples(batch, options_.pack_tokens, options_.pad_id, options_.device);
  return pad_examples(batch, options_.pad_id, options_.device);
}

ExampleBatch pack_examples(const std::vector<const ChatExample*>& examples, int64_t row_tokens, int64_t pad_id,
                           Device device) {
  size_t L = static_cast<size_t>(std::max<int64_t>(row_tokens, 1));
  for (const ChatExample* e : examples) L = std::max(L, e->inputs.size());
  std::vector<std::vector<const ChatExample*>> rows;
  std::vector<size_t> used;
  for (const ChatExample* e : examples) {
    size_t r = 0;
    while (r < rows.size() && used[r] + e->inputs.size() > L) ++r;
    if (r == rows.size()) {
      rows.emplace_back();
      used.push_back(0);
    }
    rows[r].push_back(e);
    used[r] += e->inputs.size();
  }
  std::vector<int64_t> x(rows.size() * L, pad_id), y(rows.size() * L, -100), positions(rows.size() * L, 0), lengths,
      bounds = {0};
  for (size_t r = 0; r < rows.size(); ++r) {
    size_t at = r * L;
    for (const ChatExample* e : rows[r]) {
      std::copy(e->inputs.begin(), e->inputs.end(), x.begin() + static_cast<std::ptrdiff_t>(at));
      std::copy(e->targets.begin(), e->targets.end(), y.begin() + static_cast<std::ptrdiff_t>(at));
      std::iota(positions.begin() + static_cast<std::ptrdiff_t>(at),
                positions.begin() + static_cast<std::ptrdiff_t>(at + e->inputs.size()), 0);
      at += e->inputs.size();
      bounds.push_back(static_cast<int64_t>(at));
    }
    lengths.push_back(static_cast<int64_t>(used[r]));
    if (at < (r + 1) * L) bounds.push_back(static_cast<int64_t>((r + 1) * L));
  }
  const auto n = static_cast<int64_t>(rows.size()), Lt = static_cast<int64_t>(L);
  ExampleBatch b{tensor(x).view({n, Lt}).to(device), tensor(y).view({n, Lt}).to(device), tensor(lengths).to(device), {}};
  b.attention.positions = tensor(positions).view({n, Lt}).to(device);
  b.attention.cu_seqlens = tensor(bounds);  // on the host: the attention reads the bounds there
  return b;
}

ExampleBatch pad_examples(const std::vector<const ChatExample*>& examples, int64_t pad_id, Device device) {
  size_t L = 0;
  for (const ChatExample* e : examples) L = std::max(L, e->inputs.size());
  const auto rows = static_cast<int64_t>(examples.size());
  std::vector<int64_t> x(examples.size() * L, pad_id), y(examples.size() * L, -100);
  std::vector<int64_t> lengths;
  for (size_t b = 0; b < examples.size(); ++b) {
    lengths.push_back(static_cast<int64_t>(examples[b]->inputs.size()));
    std::copy(examples[b]->inputs.begin(), examples[b]->inputs.end(), x.begin() + static_cast<std::ptrdiff_t>(b * L));
    std::copy(examples[b]->targets.begin(), examples[b]->targets.end(), y.begin() + static_cast<std::ptrdiff_t>(b * L));
  }
  const auto Lt = static_cast<int64_t>(L);
  return {tensor(x).view({rows, Lt}).to(device), tensor(y).view({rows, Lt}).to(device), tensor(lengths).to(device)};
}

}  // namespace kiln::data
