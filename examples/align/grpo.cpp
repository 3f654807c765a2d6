// grpo: Group Relative Policy Optimization (DeepSeekMath, Shao et al. 2024)
// of a fine-tuned model on prompts whose answers a rule checks.
//
//   grpo --init-from out/sft --tokenizer data/fortunes/tokenizer.model \
//        --data prompts.jsonl --eval-data heldout.jsonl --out out/grpo \
//        --batch 8 --group 8 --max-new-tokens 16 --lr 1e-5 --beta 0.04
//
// --data is JSON lines of {"prompt": ..., "answer": ...} (or "messages"
// ending with the user's turn; kiln/data/conversations.h). Each step samples
// --group responses to each of --batch prompts per rank, with the KV cache;
// a response earns 1 when it is the answer up to white space (and ended
// with <|end|>), else 0. The advantages are the rewards normalized within
// each group; the loss is GRPO's clipped surrogate with the k3 estimate of
// the KL to the frozen reference (--beta), a token mean per sequence and then
// a mean over sequences, as DeepSeekMath writes it. --iterations > 1 takes
// several steps on one batch of rollouts against the log-probabilities of
// the policy that drew them. The held-out accuracy is that of greedy answers
// to --eval-data (or a --val-fraction share of --data), before the first
// step and every --eval-every steps; --keep-best keeps the policy of the best
// one in OUT/best. Under mpirun the ranks are
// data-parallel replicas; each step's samples come from a generator seeded
// by step and rank, so a checkpoint resumes exactly.

#include <chrono>
#include <numeric>

#include "rollout.h"

using kiln::Tensor;

namespace {

struct Args : align::RolloutArgs {
  int64_t group = 8, iterations = 1;
  double beta = 0.04;
};

int run(const Args& a) {
  auto world = kiln::dist::mpi_world();
  const bool lead = world->rank() == 0;
  kiln::dist::ParallelState layout = align::parallel_layout(a.tp);
  const kiln::Device device(a.device);
  kiln::data::Tokenizer tok(a.tokenizer);
  const std::string init = align::checkpoint_dir(a.init_from);
  const kiln::nn::ModelSpec spec = kiln::nn::hf::read_config(init);

  const auto [train, val] = align::read_prompt_split(a, tok, spec.max_positions);
  kiln::data::ExampleLoader order(train.examples, {.batch_size = a.batch, .rank = layout.dp_rank(),
                                                   .world_size = layout.dp(), .seed = a.seed});

  // The policy, and the reference it starts as, frozen. No dropout: the
  // log-probabilities of a rollout must be those of the policy that drew it.
  kiln::Generator gen(a.seed);
  auto factory = std::make_shared<kiln::dist::ModelParallel>(layout);
  kiln::nn::TransformerLM model(spec, gen, kiln::kFloat32, device, factory);
  kiln::dist::load_checkpoint(init, model);
  model.eval();
  const std::unique_ptr<kiln::nn::TransformerLM> reference = model.clone();
  for (Tensor p : reference->parameters()) p.requires_grad_(false);
  kiln::optim::AdamW opt(kiln::optim::decay_groups(model.named_parameters(), 0.0), {.lr = a.lr});
  std::unique_ptr<kiln::dist::DistributedDataParallel> ddp;
  if (layout.dp() > 1) ddp = std::make_unique<kiln::dist::DistributedDataParallel>(model, layout.dp_group());

  const int64_t steps = align::total_steps(a, order.batches_per_epoch());
  const kiln::dist::TrainingState state = align::resume(a, model, opt, order);
  if (lead)
    fmt::print("grpo: {} training prompts, {} held out; {} steps of {} prompts x {} samples x {} ranks, "
               "{} new tokens at most; beta {}, clip {}\n", train.examples.size(), val.examples.size(), steps, a.batch,
               a.group, layout.dp(), a.max_new_tokens, a.beta, a.clip);

  auto accuracy = [&] { return align::heldout_accuracy(model, tok, val, a.max_new_tokens, a.eval_batch, *layout.dp_group()); };
  align::Progress progress(a.out, lead, a.resume, state.step, steps, a.log_every);
  align::BestPolicy best(a, state.step);
  if (!a.resume) {
    const double before = accuracy();
    progress.record({{"step", 0}, {"val_accuracy", before}});
    if (lead) fmt::print("held-out accuracy before training: {:.3f}\n", before);
    best.offer(before, 0, model, layout, opt, order.position());
  }
  for (int64_t step = state.step; step < steps; ++step) {
    auto t0 = std::chrono::steady_clock::now();
    // Rollouts: --group samples of each prompt, scored by the rule.
    const align::Rollouts r =
        align::sample_rollouts(model, tok, train, order.next_indices(), a.group, a, step, layout.dp_rank(), device);
    const std::vector<double>& rewards = r.rule_rewards;
    const Tensor advantages = kiln::nn::group_advantages(kiln::tensor(rewards).to(device), a.group);

    Tensor reference_lp, old_lp;
    {
      kiln::NoGradGuard no_grad;
      reference_lp = align::rollout_log_probs(*reference, r.inputs, r.targets, a.temperature);
      if (a.iterations > 1) old_lp = align::rollout_log_probs(model, r.inputs, r.targets, a.temperature);
    }
    kiln::nn::GRPOLoss l;
    double norm = 0;
    for (int64_t it = 0; it < a.iterations; ++it) {
      opt.zero_grad();
      Tensor lp = align::rollout_log_probs(model, r.inputs, r.targets, a.temperature);
      l = kiln::nn::grpo_loss(lp, old_lp.defined() ? old_lp : lp.detach(), reference_lp, advantages, r.mask, a.clip,
                              a.beta);
      l.loss.backward();
      if (ddp) ddp->finish();
      norm = kiln::dist::clip_grad_norm(model, layout, a.grad_clip);
      opt.step();
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::vector<double> means = align::mean_over(
        *layout.dp_group(), {std::accumulate(rewards.begin(), rewards.end(), 0.0) / static_cast<double>(rewards.size()),
                             static_cast<double>(r.response_tokens) / static_cast<double>(rewards.size()),
                             static_cast<double>(r.response_tokens) / r.seconds, l.loss.item<double>()},
        device);
    const int64_t done = step + 1;
    nlohmann::json m = {{"step", done}, {"reward", means[0]}, {"kl", l.kl}, {"clip_fraction", l.clip_fraction},
                        {"train_loss", means[3]}, {"grad_norm", norm}, {"response_tokens", means[1]},
                        {"rollout_tokens_per_second", means[2] * layout.dp()},
                        {"seconds", seconds}};
    const bool validate = done % a.eval_every == 0 || done == steps;
    if (validate) m["val_accuracy"] = accuracy();
    progress.report(m, fmt::format("reward {:.3f} | kl {:.4f} | len {:.1f} | {:.0f} rollout tok/s{} | norm {:.3f}",
                                   means[0], l.kl, means[1], m["rollout_tokens_per_second"].get<double>(),
                                   validate ? fmt::format(" | val accuracy {:.3f}", m["val_accuracy"].get<double>()) : "",
                                   norm),
                    validate);
    align::maybe_checkpoint(a, done, steps, model, layout, opt, order);
    if (validate) best.offer(m["val_accuracy"].get<double>(), done, model, layout, opt, order.position());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Group Relative Policy Optimization against a rule that checks answers"};
  Args a;
  a.out = "out/grpo";
  a.lr = 1e-5;
  a.eval_every = 20;
  a.checkpoint_every = 50;
  align::add_stage_options(app, a, "fine-tuned run or checkpoint directory: the policy's start and the reference",
                           "JSON lines of {prompt, answer}");
  align::add_rollout_options(app, a);
  app.add_option("--group", a.group, "samples per prompt (G)")->check(program::positive)->capture_default_str();
  app.add_option("--beta", a.beta, "weight of the k3 KL to the reference")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--iterations", a.iterations, "optimizer steps per batch of rollouts (GRPO's mu)")
      ->check(program::positive)->capture_default_str();
  if (auto code = program::parse(app, argc, argv)) return *code;
  return program::run("grpo", [&] { return run(a); });
}
