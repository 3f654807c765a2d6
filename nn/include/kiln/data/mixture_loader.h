#pragma once
// MixtureLoader: (B, T) batches whose rows are drawn from several sources by
// weight, as GPT-3 mixed its datasets (appendix A, table 2.2): a source is
// seen more or less than once per pass over it, as its weight and size say.
// Row g of the run (counted over every data-parallel rank: batch b, rank r,
// row i is g = (b * world_size + r) * B + i) picks its source by a Philox draw
// of (seed, g); a source's k-th row is window k of its windows of T + 1
// tokens, visited in a Philox permutation per pass. Every rank makes every
// draw, so ranks never share a window and all know the tokens seen per source;
// the position is the number of batches read, and seek() replays the draws:
// a resumed run reads what the uninterrupted one would have.

#include <string>
#include <utility>
#include <vector>

#include "kiln/data/data_loader.h"
#include "kiln/data/token_file.h"

namespace kiln::data {

// One source of a mixture: a token file and its share of the rows.
struct MixtureSource {
  std::string name;   // as reports name it
  std::string file;   // llm.c-layout tokens
  double weight = 1;  // relative: weights are divided by their sum
};

// The sources of OUT/mixture.json as curate writes it (files relative to
// OUT), with each weight replaced by overrides[name] where given; raises
// naming the file when it is malformed or an override names no source.
std::vector<MixtureSource> read_mixture(const std::string& dir,
                                        const std::vector<std::pair<std::string, double>>& overrides = {});

// Batches of rows drawn from the sources by weight; this rank's rows.
class MixtureLoader {
 public:
  // Opens every source; raises when one holds no window of seq_len + 1 tokens
  // or a weight is not positive. options.shuffle is ignored: windows are always shuffled.
  MixtureLoader(std::vector<MixtureSource> sources, const DataLoaderOptions& options);

  // x (B, T) and y (B, T) int64, y shifted by one token; advances the position.
  std::pair<Tensor, Tensor> next();
  // Batches read, as a LoaderPosition's batch (its epoch and shard stay 0).
  LoaderPosition position() const { return {0, 0, batch_}; }
  // Goes to pos.batch by replaying the draws of the batches before it.
  void seek(const LoaderPosition& pos);

  const std::vector<MixtureSource>& sources() const { return sources_; }  // weights normalized
  // Tokens (rows x seq_len) every rank together has read from each source so far.
  std::vector<int64_t> tokens_seen() const;
  // Windows of seq_len + 1 tokens in each source: a pass over it.
  std::vector<int64_t> windows() const;

 private:
  // The source of global row g.
  size_t source_of(int64_t row) const;
  // The start of source s's k-th window.
  int64_t window_start(size_t s, int64_t k);

  std::vector<MixtureSource> sources_;
  std::vector<TokenFile> files_;
  std::vector<double> cumulative_;  // of the normalized weights
  DataLoaderOptions options_;
  int64_t batch_ = 0;
  std::vector<int64_t> drawn_;  // rows of each source drawn by every rank before batch_
  std::vector<int64_t> order_epoch_;              // the pass each source's cached order is of
  std::vector<std::vector<int64_t>> order_;       // that pass's permutation of the windows
};

}  // namespace kiln::data
