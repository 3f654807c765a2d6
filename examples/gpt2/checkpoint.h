#pragma once
// Training checkpoints for the GPT example. Each is a directory
//   step-000600/model.safetensors   weights under Hugging Face's GPT-2 names
//   step-000600/config.json         GPT2Config, so from_pretrained(dir) works
//   step-000600/state.safetensors   optimizer state + metadata (step, data
//                                   position, RNG offset, kiln's config)
// written as step-000600.tmp, then renamed; `latest` (written atomically)
// names the newest. A crash mid-write leaves the previous checkpoint intact.

#include <string>

#include <kiln/kiln.h>

namespace gpt2 {

struct TrainingState {
  int64_t step = 0;  // steps completed
  kiln::data::LoaderPosition loader;
  uint64_t rng_offset = 0;  // of the training generator (dropout)
};

// Writes a checkpoint under dir and points dir/latest at it; keeps the newest `keep`.
std::string save_checkpoint(const std::string& dir, const kiln::nn::GPT& model, const kiln::optim::Optimizer& opt,
                            const TrainingState& state, int keep = 2);

// The newest checkpoint directory under dir, or "" if none.
std::string latest_checkpoint(const std::string& dir);

// Reads a model directory's config.json (kiln's or Hugging Face's GPT-2).
kiln::nn::GPTConfig read_config(const std::string& checkpoint);
// Loads weights (and, when opt and state are given, the training state).
void load_checkpoint(const std::string& checkpoint, kiln::nn::GPT& model, kiln::optim::Optimizer* opt = nullptr,
                     TrainingState* state = nullptr);

}  // namespace gpt2
