#pragma once
// ExampleLoader: batches of variable-length examples (chat examples for
// fine-tuning), each batch padded to its longest example: inputs with the
// padding id, targets with -100, which the loss ignores. Under causal
// attention, padding after an example changes nothing before it. Data-
// parallel rank r of R takes every R-th batch slot; with shuffle, each epoch
// visits the examples in a Philox permutation of (seed, epoch), resumable
// from a saved position like DataLoader. Examples can come in groups of
// consecutive ones that stay together (a preference pair's chosen and
// rejected answers: 2); batch_size counts groups.

#include <utility>
#include <vector>

#include "kiln/data/chat_template.h"
#include "kiln/data/data_loader.h"
#include "kiln/nn/transformer.h"

namespace kiln::data {

// A batch: inputs and targets (rows, L) int64, L the batch's longest
// example, and each row's real length (rows) int64. Packed, a row holds
// several examples: `attention` then gives each token's position in its
// example and the examples' bounds (nn::AttentionInputs::cu_seqlens).
struct ExampleBatch {
  Tensor inputs, targets, lengths;  // (rows, L), (rows, L), (rows)
  nn::AttentionInputs attention;    // packed rows' positions and bounds; empty when padded
};

// Examples as one batch padded to the longest: inputs with pad_id, targets with -100.
ExampleBatch pad_examples(const std::vector<const ChatExample*>& examples, int64_t pad_id, Device device = kCPU);
// Examples packed in order into rows of row_tokens (the first row with room
// takes each; row_tokens grows to the longest example), padded as pad_examples
// pads; the padding at a row's end is a segment of its own.
ExampleBatch pack_examples(const std::vector<const ChatExample*>& examples, int64_t row_tokens, int64_t pad_id,
                           Device device = kCPU);

// An ExampleLoader's batch, rank's share, order, padding or packing, and device.
struct ExampleLoaderOptions {
  int64_t batch_size = 8;  // groups per rank and batch
  int rank = 0;            // this rank's share of each batch, of world_size
  int world_size = 1;   // ranks sharing each batch
  bool shuffle = true;  // each epoch's order of groups drawn from (seed, epoch)
  uint64_t seed = 0;    // of the shuffle
  int64_t pad_id = 0;  // the inputs' padding token
  // Consecutive examples that stay together in one batch, in order (a prompt's
  // chosen and rejected answers: 2); the examples count must be a multiple.
  int64_t group = 1;
  int64_t pack_tokens = 0;  // > 0: each batch's examples packed into rows of this many tokens
  Device device = kCPU;     // where batches are made
};

// Batches of chat examples (inputs, targets, lengths, attention inputs), padded or packed.
class ExampleLoader {
 public:
  ExampleLoader(std::vector<ChatExample> examples, const ExampleLoaderOptions& options);  // raises on a partial group

  // The next B group rows, each group's examples in order; advances.
  ExampleBatch next();
  // The examples next() would batch (their indices), for callers that batch
  // them their own way (prompts to generate from); advances.
  std::vector<int64_t> next_indices();
  LoaderPosition position() const { return pos_; }
  void seek(const LoaderPosition& pos);
  // Batches one rank reads per epoch (a last partial batch is left out).
  int64_t batches_per_epoch() const;
  // Target tokens that count in the loss, over every example.
  int64_t trained_tokens() const;

 private:
  std::vector<ChatExample> examples_;
  ExampleLoaderOptions options_;
  LoaderPosition pos_;
};

}  // namespace kiln::data
