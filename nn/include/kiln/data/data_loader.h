#pragma once
// DataLoader: (B, T) batches of inputs and next-token targets from token files,
// as llm.c's loader cuts them: each batch reads B*T + 1 consecutive tokens.
// Data-parallel rank r of R takes windows r, r + R, r + 2R, ... of each shard,
// so ranks never overlap. With shuffle, each epoch visits a shard's windows in
// a Philox permutation of (seed, epoch): deterministic and resumable.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kiln/data/token_file.h"
#include "kiln/tensor.h"

namespace kiln::data {

// A DataLoader's batch, sequence length, rank's share and device.
struct DataLoaderOptions {
  int64_t batch_size = 8;  // rows per rank and batch
  int64_t seq_len = 64;    // tokens per row
  int rank = 0;            // this rank's share of each batch, of world_size
  int world_size = 1;    // ranks sharing each batch
  bool shuffle = false;  // each shard's order of windows drawn from (seed, epoch, shard)
  uint64_t seed = 0;     // of the shuffle
  Device device = kCPU;  // where batches are made
  int64_t vocab_size = 0;  // when positive, every token is checked to be below it as the files open
};

// Where the loader stands: the next batch to read. Saved in checkpoints.
struct LoaderPosition {
  int64_t epoch = 0;  // passes over every shard done
  int64_t shard = 0;  // the file being read
  int64_t batch = 0;  // the next batch of that file
  bool operator==(const LoaderPosition&) const = default;  // every field alike
};

// Batches of (input, target) token windows from a token file, this rank's share.
class DataLoader {
 public:
  // Opens token files (shards, read in order); raises when one holds no whole batch.
  DataLoader(std::vector<std::string> files, const DataLoaderOptions& options);

  // x (B, T) and y (B, T) int64, y shifted by one token; advances the position.
  std::pair<Tensor, Tensor> next();
  LoaderPosition position() const { return pos_; }
  void seek(const LoaderPosition& pos);
  // Batches one rank reads per pass over all shards.
  int64_t batches_per_epoch() const;
  int64_t tokens_per_batch() const { return options_.batch_size * options_.seq_len; }

 private:
  int64_t batches_in(int64_t shard) const;
  int64_t window(int64_t shard, int64_t batch) const;  // which window this rank reads

  std::vector<TokenFile> shards_;
  DataLoaderOptions options_;
  LoaderPosition pos_;
};

}  // namespace kiln::data
