#pragma once
// Training checkpoints for any TransformerLM (and any other ParallelModel, in
// its own format) at any layout. Each is a directory
//   step-000600/model.safetensors   the whole model under Hugging Face's names
//   step-000600/config.json         the family's Hugging Face config, so
//                                   from_pretrained(dir) loads it
//   step-000600/state.safetensors   the whole optimizer state under the
//                                   parameters' names, and metadata: step,
//                                   data position, RNG offset
// written as step-000600.tmp, flushed, then renamed; `latest` (written
// atomically) names the newest. A crash mid-write leaves the previous one
// intact. Everything is stored whole (gathered from every tensor- and
// pipeline-parallel rank through each parameter's ShardSpec), so a run saved
// at one layout resumes at any other, bit for bit.

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/data/data_loader.h"
#include "kiln/dist/parallel_state.h"
#include "kiln/dist/zero.h"
#include "kiln/nn/transformer_lm.h"
#include "kiln/optim/optimizer.h"

namespace kiln::dist {

// Where a run stands: its step, its data loader's position and its generator's offset.
struct TrainingState {
  int64_t step = 0;  // steps completed
  data::LoaderPosition loader;  // the next batch to read
  uint64_t rng_offset = 0;  // of the training generator (dropout)
};

// Writes a checkpoint under dir and points dir/latest at it; keeps the newest
// `keep`. Collective over the layout's world: every rank calls it, world rank
// 0 writes and gets the path ("" elsewhere).
std::string save_checkpoint(const std::string& dir, const nn::TransformerLM& model, const ParallelState& layout,
                            const optim::Optimizer& opt, const TrainingState& state, int keep = 2);
// The same with ZeRO-1's sharded optimizer state (stored whole as well).
std::string save_checkpoint(const std::string& dir, const nn::TransformerLM& model, const ParallelState& layout,
                            const ZeroRedundancyOptimizer& opt, const TrainingState& state, int keep = 2);

// The newest checkpoint directory under dir, or "" if none.
std::string latest_checkpoint(const std::string& dir);
// The names of the complete checkpoints under dir (step-NNNNNN), oldest
// first; a save cut short (its .tmp directory) is not one.
std::vector<std::string> checkpoint_names(const std::string& dir);

// Loads this rank's share of the weights and, when opt and state are given,
// of the optimizer state, and the training state. Every rank reads the files.
// A Hugging Face model directory loads too (weights only).
void load_checkpoint(const std::string& checkpoint, nn::TransformerLM& model, optim::Optimizer* opt = nullptr,
                     TrainingState* state = nullptr);
// The same with ZeRO-1's sharded optimizer state, each rank taking its shard.
void load_checkpoint(const std::string& checkpoint, nn::TransformerLM& model, ZeroRedundancyOptimizer& opt,
                     TrainingState& state);

// Checkpoints of any ParallelModel (BERT's, T5's) at any layout, in the
// model's own format: write_model(weights, dir) writes the whole model's
// weights (full_state_dict's names, gathered on world rank 0) with its config
// into the checkpoint's directory; read_model(dir) loads them back (each rank
// its share, as load_full_state_dict). The optimizer and training state are
// stored as above. Collective like the TransformerLM's.
using ModelWriter = std::function<void(const std::map<std::string, Tensor>& weights, const std::filesystem::path& dir)>;
using ModelReader = std::function<void(const std::string& dir)>;
// (The save, with write_model.)
std::string save_checkpoint(const std::string& dir, const nn::ParallelModel& model, const ParallelState& layout,
                            const ModelWriter& write_model, const optim::Optimizer& opt, const TrainingState& state,
                            int keep = 2);
// (The load, with read_model.)
void load_checkpoint(
const std::string& checkpoint, nn::ParallelModel& model, const ModelReader& read_model,
                     optim::Optimizer& opt, TrainingState& state);

// The causal model a directory holds, built from its config.json (GPT-2,
// LLaMA, Mixtral, GLM or kiln's own spec) with its weights, in eval mode, on
// one process: from_pretrained's job. A run directory gives its latest
// checkpoint; a checkpoint or a Hugging Face model directory gives itself.
std::unique_ptr<nn::TransformerLM> load_model(const std::string& run_or_checkpoint, Device device = kCPU,
                                              DType dtype = kFloat32);

}  // namespace kiln::dist
