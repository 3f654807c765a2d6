#pragma once
// Training checkpoints for the GPT example. Each is a directory
//   step-000600/model.safetensors   weights under Hugging Face's GPT-2 names
//   step-000600/config.json         GPT2Config, so from_pretrained(dir) works
//   step-000600/state.safetensors   optimizer state under the parameters'
//                                   names + metadata (step, data position, RNG
//                                   offset)
// written as step-000600.tmp, then renamed; `latest` (written atomically)
// names the newest. A crash mid-write leaves the previous checkpoint intact.
// Everything is stored whole (gathered from every tensor- and pipeline-
// parallel rank), so a checkpoint resumes under any layout.

#include <string>

#include <kiln/kiln.h>

namespace gpt2 {

struct TrainingState {
  int64_t step = 0;  // steps completed
  kiln::data::LoaderPosition loader;
  uint64_t rng_offset = 0;  // of the training generator (dropout)
};

// Writes a checkpoint under dir and points dir/latest at it; keeps the newest
// `keep`. Collective over the model's world: every rank calls it, rank 0
// writes and gets the path ("" elsewhere).
std::string save_checkpoint(const std::string& dir, const kiln::dist::ParallelGPT& model,
                            const kiln::optim::Optimizer& opt, const TrainingState& state, int keep = 2);
// The same with ZeRO-1's sharded optimizer state (stored whole as well).
std::string save_checkpoint(const std::string& dir, const kiln::dist::ParallelGPT& model,
                            const kiln::dist::ZeroRedundancyOptimizer& opt, const TrainingState& state, int keep = 2);

// The newest checkpoint directory under dir, or "" if none.
std::string latest_checkpoint(const std::string& dir);

// Reads a model directory's config.json (kiln's or Hugging Face's GPT-2).
kiln::nn::GPTConfig read_config(const std::string& checkpoint);
// Loads this rank's share of the weights (and, when opt and state are given,
// of the optimizer state, and the training state). Every rank reads the files.
void load_checkpoint(const std::string& checkpoint, kiln::dist::ParallelGPT& model,
                     kiln::optim::Optimizer* opt = nullptr, TrainingState* state = nullptr);
void load_checkpoint(const std::string& checkpoint, kiln::dist::ParallelGPT& model,
                     kiln::dist::ZeroRedundancyOptimizer& opt, TrainingState& state);
// Loads the weights of a checkpoint (kiln's or Hugging Face's) into a whole model.
void load_weights(const std::string& checkpoint, kiln::nn::GPT& model);

}  // namespace gpt2
