#pragma once
// What every alignment stage program shares: its common options, where a
// run's newest checkpoint is, the held-out split, resuming and checkpointing,
// the progress line with its JSON-lines metrics, and how it ends on an error.

#include <CLI/CLI.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <kiln/kiln.h>

#include "../program.h"

namespace align {

// The options of every stage.
struct StageArgs {
  std::string init_from, tokenizer, data, out, device = "cpu";
  int64_t epochs = 1, max_steps = 0, batch = 8, max_tokens = 256, eval_every = 50, checkpoint_every = 200, log_every = 10;
  int keep = 2, tp = 1;
  double lr = 1e-5, grad_clip = 1.0, val_fraction = 0.05;
  bool resume = false;
  uint64_t seed = 1337;
};

// Adds StageArgs' options; `data` says what --data holds, `init` what --init-from is.
inline void add_stage_options(CLI::App& app, StageArgs& a, const std::string& init, const std::string& data) {
  app.add_option("--init-from", a.init_from, init)->required();
  app.add_option("--tokenizer", a.tokenizer, "sentencepiece .model with kiln's special symbols")->required();
  app.add_option("--data", a.data, data)->required();
  app.add_option("--out", a.out, "checkpoints and metrics")->capture_default_str();
  app.add_option("--epochs", a.epochs, "passes over the training data")
      ->check(program::positive)->capture_default_str();
  app.add_option("--max-steps", a.max_steps, "stop after this many steps (0: --epochs decide)")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--batch,-b", a.batch, "records per step and rank")->check(program::positive)->capture_default_str();
  app.add_option("--max-tokens", a.max_tokens, "longest example; longer ones are cut")
      ->check(program::positive)->capture_default_str();
  app.add_option("--lr", a.lr, "peak learning rate")->check(program::positive)->capture_default_str();
  app.add_option("--grad-clip", a.grad_clip, "global norm clip")->check(program::non_negative)->capture_default_str();
  app.add_option("--val-fraction", a.val_fraction, "share of records held out")
      ->check(program::in_range(0, 0.5, "a number in [0, 0.5]"))->capture_default_str();
  app.add_option("--eval-every", a.eval_every, "steps between validation runs")
      ->check(program::positive)->capture_default_str();
  app.add_option("--checkpoint-every", a.checkpoint_every, "steps between checkpoints (and one at the end)")
      ->check(program::positive)->capture_default_str();
  app.add_option("--log-every", a.log_every, "steps between progress lines")
      ->check(program::positive)->capture_default_str();
  app.add_option("--keep", a.keep, "checkpoints kept")->check(program::positive)->capture_default_str();
  app.add_option("--device", a.device, "cpu | cuda:N")->capture_default_str();
  app.add_option("--tp", a.tp, "tensor-parallel ranks (under mpirun; the rest are data-parallel)")
      ->check(program::positive)->capture_default_str();
  app.add_option("--seed", a.seed, "data order and held-out split")->capture_default_str();
  app.add_flag("--resume", a.resume, "continue from the latest checkpoint in --out");
}

// The stage's layout: --tp tensor-parallel ranks, the rest of the world data-parallel.
inline kiln::dist::ParallelState parallel_layout(int tp) {
  auto world = kiln::dist::mpi_world();
  KILN_CHECK(tp >= 1 && world->size() % tp == 0, "[align] --tp {} must divide the {} ranks", tp, world->size());
  return {world, tp, 1, world->size() / tp};
}

// Steps of the run: --epochs over the data, or --max-steps if fewer.
inline int64_t total_steps(const StageArgs& a, int64_t batches_per_epoch) {
  const int64_t steps = a.epochs * batches_per_epoch;
  return a.max_steps > 0 ? std::min(steps, a.max_steps) : steps;
}

// A run directory's newest checkpoint, or the directory itself (one checkpoint,
// kiln's or Hugging Face's).
inline std::string checkpoint_dir(const std::string& run_or_checkpoint) {
  const std::string latest = kiln::dist::latest_checkpoint(run_or_checkpoint);
  return latest.empty() ? run_or_checkpoint : latest;
}

// Record indices in a seeded order; the first `held_out` are for validation.
struct Split {
  std::vector<int64_t> order;
  size_t held_out;
};
inline Split split(size_t records, double val_fraction, uint64_t seed) {
  return {kiln::data::shuffled_order(static_cast<int64_t>(records), seed, 0),
          static_cast<size_t>(static_cast<double>(records) * val_fraction)};
}

// With --resume: the model, optimizer and data position of the newest
// checkpoint in --out; the training state to continue from.
inline kiln::dist::TrainingState resume(const StageArgs& a, kiln::nn::TransformerLM& model, kiln::optim::Optimizer& opt,
                                        kiln::data::ExampleLoader& train) {
  kiln::dist::TrainingState state;
  std::filesystem::create_directories(a.out);
  if (!a.resume) return state;
  const std::string ckpt = kiln::dist::latest_checkpoint(a.out);
  KILN_CHECK(!ckpt.empty(), "[align] --resume: no checkpoint in {}", a.out);
  kiln::dist::load_checkpoint(ckpt, model, &opt, &state);
  train.seek(state.loader);
  return state;
}

// After step `done`: a checkpoint every --checkpoint-every steps and at the end.
inline void maybe_checkpoint(const StageArgs& a, int64_t done, int64_t steps, const kiln::nn::TransformerLM& model,
                             const kiln::dist::ParallelState& layout, const kiln::optim::Optimizer& opt,
                             const kiln::data::ExampleLoader& train) {
  if (done % a.checkpoint_every != 0 && done != steps) return;
  const std::string path = kiln::dist::save_checkpoint(a.out, model, layout, opt, {done, train.position(), 0}, a.keep);
  if (layout.world()->rank() == 0) fmt::print("checkpoint: {}\n", path);
}

// A (2N) tensor of pairs' figures, rows chosen, rejected, chosen, ...: the chosen (N) and the rejected (N).
inline std::pair<kiln::Tensor, kiln::Tensor> chosen_rejected(const kiln::Tensor& rows) {
  kiln::Tensor pairs = rows.view({-1, 2});
  return {pairs.narrow(1, 0, 1).reshape({-1}), pairs.narrow(1, 1, 1).reshape({-1})};
}

// The mean loss and accuracy of a pairwise objective over every held-out
// batch; `loss_of(x, y, lengths)` gives a result with `loss` and `accuracy`.
template <typename LossOf>
std::pair<double, double> evaluate_pairs(kiln::data::ExampleLoader& val, LossOf&& loss_of) {
  kiln::NoGradGuard no_grad;
  val.seek({});
  double loss = 0, accuracy = 0;
  for (int64_t i = 0; i < val.batches_per_epoch(); ++i) {
    auto [x, y, lengths, attention] = val.next();
    auto l = loss_of(x, y, lengths);
    loss += l.loss.template item<double>();
    accuracy += l.accuracy;
  }
  const auto n = static_cast<double>(val.batches_per_epoch());
  return {loss / n, accuracy / n};
}

// Prints a step's line (every log_every steps, the last, and any with a
// validation figure) and appends it to metrics.jsonl, on the leading rank.
class Progress {
 public:
  Progress(const std::string& out, bool lead, bool resume, int64_t first_step, int64_t steps, int64_t log_every)
      : lead_(lead), first_(first_step), steps_(steps), log_every_(log_every), start_(std::chrono::steady_clock::now()) {
    if (lead) metrics_.open(out + "/metrics.jsonl", resume ? std::ios::app : std::ios::trunc);
  }
  // Appends m to metrics.jsonl without printing (figures taken before the first step).
  void record(const nlohmann::json& m) {
    if (lead_) metrics_ << m.dump() << '\n' << std::flush;
  }
  // m holds "step" and the step's figures; `line` is what to print after the step.
  void report(const nlohmann::json& m, const std::string& line, bool validated) {
    if (!lead_) return;
    record(m);
    const int64_t done = m.at("step").get<int64_t>();
    if (done % log_every_ != 0 && done != steps_ && !validated) return;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    fmt::print("step {:5d}/{} | {} | ETA {:.0f}s\n", done, steps_, line,
               elapsed / static_cast<double>(done - first_) * static_cast<double>(steps_ - done));
    std::fflush(stdout);
  }

 private:
  bool lead_;
  int64_t first_, steps_, log_every_;
  std::chrono::steady_clock::time_point start_;
  std::ofstream metrics_;
};

}  // namespace align
