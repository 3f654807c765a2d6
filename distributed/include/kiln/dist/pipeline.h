#pragma once
// Pipeline schedules over micro-batches for any model cut into stages of
// consecutive blocks (nn::StagedModel, built by a ModelParallel factory).
//
// GPipe (Huang et al. 2019): every micro-batch forward, then every one
// backward; simple, and holds the activations of all M micro-batches.
// 1F1B (PipeDream-Flush, Narayanan et al. 2021; Megatron-LM's default): stage
// s runs pp - s - 1 forwards, then alternates one forward and one backward,
// then drains the backwards; the same result, with at most pp - s micro-
// batches' activations alive.
//
// Activations travel forward and their gradients backward by send/recv
// between neighbouring stages of the pp group; exchanges in both directions
// are posted together (ProcessGroup::send_recv) so that stages never wait on
// each other. Every stage is handed the same batch: the first reads the
// tokens, the last the targets, every stage the attention inputs (GLM's
// prefixes and positions), split into micro-batches with the rows.

#include <functional>
#include <string_view>

#include "kiln/dist/ddp.h"
#include "kiln/dist/parallel_state.h"
#include "kiln/nn/sampling.h"
#include "kiln/nn/staged_model.h"

namespace kiln::dist {

// GPipe: every micro-batch's forward, then every backward. 1F1B (PipeDream-Flush,
// Megatron's default): after a warmup, one forward then one backward, so a
// stage holds at most pp micro-batches' activations.
enum class PipelineSchedule { GPipe, OneForwardOneBackward };

// "gpipe" | "1f1b"
PipelineSchedule parse_pipeline_schedule(std::string_view name);

// The last stage's loss of one micro-batch from its output and targets. The
// batch's loss is the mean of its micro-batches': a loss whose rows weigh
// the same (a mean over rows) gives the whole batch's at any split.
using StageLoss = std::function<Tensor(const Tensor& hidden, const Tensor& targets)>;

// How a pipeline step runs: its schedule, micro-batches, loss and attention inputs.
struct PipelineOptions {
  PipelineSchedule schedule = PipelineSchedule::OneForwardOneBackward;  // the order of the micro-batches' passes
  int64_t microbatches = 1;  // must divide the batch
  StageLoss loss;            // empty: the model's loss_from_hidden
};

// One batch's forward and backward: gradients (of the mean loss over the
// batch: each micro-batch's loss scaled by 1/M) accumulate into the stage's
// parameters; with ddp, its all-reduce runs during the last micro-batch's
// backward (call ddp->finish() after). Returns the batch's mean loss on every
// rank of the pipeline. Works for pp == 1 too (plain gradient accumulation).
// The pipeline group is the state's; the model is this rank's stage of it.
// inputs: what the batch's attention needs beyond its tokens (rows split
// with the micro-batches; packed rows, cu_seqlens, only as one micro-batch).
double pipeline_train_step(const nn::StagedModel& model, const ParallelState& state, const Tensor& idx,
                           const Tensor& targets, const PipelineOptions& options,
                           DistributedDataParallel* ddp = nullptr, const nn::AttentionInputs* inputs = nullptr);

// Forward only (no graph): the batch's mean loss on every rank of the
// pipeline; options.schedule plays no part.
double pipeline_eval_loss(const nn::StagedModel& model, const ParallelState& state, const Tensor& idx,
                          const Tensor& targets, const PipelineOptions& options,
                          const nn::AttentionInputs* inputs = nullptr);
// The same with the model's own loss.
double pipeline_eval_loss(const nn::StagedModel& model, const ParallelState& state, const Tensor& idx,
                          const Tensor& targets, int64_t microbatches = 1);

// Autoregressive sampling from a model cut into stages, with every stage's KV
// caches: each new token's activations travel through the stages, the last
// samples (from gen) and every stage learns the token. Every rank of the
// model calls it (tensor-parallel ranks too) and gets the new tokens. With
// one stage, nn::generate. Not with sequence parallelism (decoding needs
// whole sequences).
std::vector<int64_t> pipeline_generate(const nn::TransformerLM& model, const ParallelState& state,
                                       const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                                       const nn::SamplingOptions& options, Generator& gen, int64_t stop = -1);

}  // namespace kiln::dist
