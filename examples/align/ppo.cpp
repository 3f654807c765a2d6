// ppo: reinforcement learning from a reward model with PPO and a KL penalty
// (InstructGPT, Ouyang et al. 2022), as DeepSpeed-Chat and OpenRLHF do it.
//
//   ppo --init-from out/sft --reward-model out/reward --tokenizer data/fortunes/tokenizer.model \
//       --data prompts.jsonl --eval-data heldout.jsonl --out out/ppo --batch 16 --lr 1e-5
//
// Four models: the actor (the policy, from --init-from), the critic (a value
// head on a transformer, from --reward-model as DeepSpeed-Chat starts it),
// and, frozen, the reference (--init-from) and the reward model. Each step
// samples a response to each of --batch prompts per rank with the KV cache;
// the reward model scores each whole conversation (clipped to
// +-reward_clip); the reward of a token is -beta (log pi - log ref), with
// the score added on the last one; GAE (gamma, lambda) over the critic's
// values gives advantages (whitened) and returns; then --ppo-epochs passes
// over mini-batches of the rollouts take steps of the clipped policy loss
// (actor) and the clipped value loss (critic). --data is JSON lines of
// {"prompt": ...}; an "answer" serves only the held-out accuracy, the share of
// greedy answers to --eval-data (or a --val-fraction share of --data) that
// are exactly right (--keep-best keeps the actor of the best one in
// OUT/best). With --ptx-data (PPO-ptx), each actor update adds
// --ptx-coef times the language-model loss of a batch of pretraining text,
// InstructGPT's guard against forgetting it. Under
// mpirun the ranks are data-parallel replicas; the actor and the critic
// checkpoint side by side (out/actor, out/critic) and resume exactly.

#include <algorithm>
#include <chrono>
#include <numeric>

#include "rollout.h"

using kiln::Tensor;

namespace {

struct Args : align::RolloutArgs {
  std::string reward_model, ptx_data;
  int64_t ppo_epochs = 1, mini_batch = 0, ptx_seq = 64;
  double critic_lr = 5e-6, beta = 0.1, value_clip = 0.2, gamma = 1.0, lambda = 0.95, reward_clip = 5.0, ptx_coef = 27.8;
  bool whiten = true;
};

// The step both the actor's and the critic's checkpoints reached: resuming
// needs the pair (a run stopped between the two saves has one step more on one side).
std::string common_step(const std::string& out) {
  const std::vector<std::string> actor = kiln::dist::checkpoint_names(out + "/actor"),
                                 critic = kiln::dist::checkpoint_names(out + "/critic");
  std::vector<std::string> steps;
  std::set_intersection(actor.begin(), actor.end(), critic.begin(), critic.end(), std::back_inserter(steps));
  KILN_CHECK(!steps.empty(), "[ppo] --resume: no step has both an actor and a critic checkpoint in {}", out);
  return steps.back();
}

int run(const Args& a) {
  auto world = kiln::dist::mpi_world();
  const bool lead = world->rank() == 0;
  kiln::dist::ParallelState layout = align::parallel_layout(a.tp);
  const kiln::Device device(a.device);
  kiln::data::Tokenizer tok(a.tokenizer);
  const std::string init = align::checkpoint_dir(a.init_from), rm = align::checkpoint_dir(a.reward_model);
  const kiln::nn::ModelSpec spec = kiln::nn::hf::read_config(init), rm_spec = kiln::nn::hf::read_config(rm);

  const auto [train, val] = align::read_prompt_split(a, tok, spec.max_positions);
  const bool graded = std::any_of(val.answers.begin(), val.answers.end(), [](const std::string& s) { return !s.empty(); });
  kiln::data::ExampleLoader order(train.examples, {.batch_size = a.batch, .rank = layout.dp_rank(),
                                                   .world_size = layout.dp(), .seed = a.seed});
  const int64_t mini = a.mini_batch > 0 ? a.mini_batch : a.batch;
  KILN_CHECK(a.batch % mini == 0, "[ppo] --mini-batch ({}) must divide --batch ({})", mini, a.batch);
  // PPO-ptx: pretraining text whose language-model loss joins the actor's (--ptx-coef).
  std::unique_ptr<kiln::data::DataLoader> ptx;
  if (!a.ptx_data.empty())
    ptx = std::make_unique<kiln::data::DataLoader>(
        std::vector<std::string>{a.ptx_data + "/train.bin"},
        kiln::data::DataLoaderOptions{.batch_size = mini, .seq_len = a.ptx_seq, .rank = layout.dp_rank(),
                                      .world_size = layout.dp(), .shuffle = true, .seed = a.seed, .device = device});

  // No dropout anywhere: a rollout's log-probabilities and values must be
  // those of the models that drew and judged it.
  kiln::Generator gen(a.seed);
  auto factory = std::make_shared<kiln::dist::ModelParallel>(layout);
  kiln::nn::TransformerLM actor(spec, gen, kiln::kFloat32, device, factory);
  kiln::nn::ValueModel critic(rm_spec, gen, kiln::kFloat32, device, factory);
  kiln::dist::load_checkpoint(init, actor);
  kiln::dist::load_checkpoint(rm, critic);
  actor.eval();
  critic.eval();
  // The frozen reference and reward model start as the actor and the critic do.
  const std::unique_ptr<kiln::nn::TransformerLM> reference = actor.clone();
  const std::unique_ptr<kiln::nn::ValueModel> reward = critic.clone();
  for (Tensor p : reference->parameters()) p.requires_grad_(false);
  for (Tensor p : reward->parameters()) p.requires_grad_(false);
  kiln::optim::AdamW actor_opt(kiln::optim::decay_groups(actor.named_parameters(), 0.0), {.lr = a.lr});
  kiln::optim::AdamW critic_opt(kiln::optim::decay_groups(critic.named_parameters(), 0.0), {.lr = a.critic_lr});
  std::unique_ptr<kiln::dist::DistributedDataParallel> actor_ddp, critic_ddp;
  if (layout.dp() > 1) {
    actor_ddp = std::make_unique<kiln::dist::DistributedDataParallel>(actor, layout.dp_group());
    critic_ddp = std::make_unique<kiln::dist::DistributedDataParallel>(critic, layout.dp_group());
  }

  const int64_t steps = align::total_steps(a, order.batches_per_epoch());
  kiln::dist::TrainingState state;
  std::filesystem::create_directories(a.out);
  if (a.resume) {
    const std::string step = common_step(a.out);
    kiln::dist::load_checkpoint(a.out + "/actor/" + step, actor, &actor_opt, &state);
    kiln::dist::TrainingState critic_state;  // its loader position: the pretraining text's
    kiln::dist::load_checkpoint(a.out + "/critic/" + step, critic, &critic_opt, &critic_state);
    if (ptx) ptx->seek(critic_state.loader);
    order.seek(state.loader);
  }
  if (lead)
    fmt::print("ppo: {} training prompts, {} held out; {} steps of {} prompts x {} ranks in mini-batches of {}, "
               "{} new tokens at most; beta {}, clip {}, value clip {}, gamma {}, lambda {}\n",
               train.examples.size(), val.examples.size(), steps, a.batch, layout.dp(), mini, a.max_new_tokens, a.beta,
               a.clip, a.value_clip, a.gamma, a.lambda);

  auto accuracy = [&] { return align::heldout_accuracy(actor, tok, val, a.max_new_tokens, a.eval_batch, *layout.dp_group()); };
  align::Progress progress(a.out, lead, a.resume, state.step, steps, a.log_every);
  align::BestPolicy best(a, state.step);
  if (!a.resume && graded) {
    const double before = accuracy();
    progress.record({{"step", 0}, {"val_accuracy", before}});
    if (lead) fmt::print("held-out accuracy before training: {:.3f}\n", before);
    best.offer(before, 0, actor, layout, actor_opt, order.position());
  }
  for (int64_t step = state.step; step < steps; ++step) {
    auto t0 = std::chrono::steady_clock::now();
    const align::Rollouts r =
        align::sample_rollouts(actor, tok, train, order.next_indices(), 1, a, step, layout.dp_rank(), device);

    // The experience: old log-probabilities and values, the reference's
    // log-probabilities, the scores, and from them the advantages and returns.
    Tensor old_lp, old_values, scores, advantages, returns, kl;
    {
      kiln::NoGradGuard no_grad;
      old_lp = align::rollout_log_probs(actor, r.inputs, r.targets, a.temperature);
      old_values = critic.values(r.inputs) * r.mask;
      const Tensor reference_lp = align::rollout_log_probs(*reference, r.inputs, r.targets, a.temperature);
      scores = kiln::clamp(reward->scores(r.sequences, r.sequence_lengths), -a.reward_clip, a.reward_clip);
      const Tensor rewards = kiln::nn::kl_penalized_rewards(old_lp, reference_lp, scores, r.mask, a.beta);
      kiln::nn::Advantages gae = kiln::nn::gae(rewards, old_values, r.mask, a.gamma, a.lambda);
      // Whitened over the whole data-parallel batch, as one process would.
      auto all_sum = [&](Tensor& t) { layout.dp_group()->all_reduce(t); };
      advantages = a.whiten ? kiln::nn::whiten(gae.advantages, r.mask, all_sum) : gae.advantages;
      returns = gae.returns;
      kl = kiln::mean(kiln::nn::masked_sum(old_lp - reference_lp, r.mask));
    }
    double policy_loss = 0, value_loss = 0, ptx_loss = 0, clip_fraction = 0, approx_kl = 0, actor_norm = 0,
           critic_norm = 0;
    int64_t updates = 0;
    for (int64_t epoch = 0; epoch < a.ppo_epochs; ++epoch)
      for (int64_t first = 0; first < a.batch; first += mini) {
        auto rows = [&](const Tensor& t) { return t.narrow(0, first, mini); };
        const Tensor mask = rows(r.mask);
        // The token mean over the mini-batch of every rank: the losses divide by its
        // tokens over the ranks, and the data-parallel average of gradients does the rest.
        const double tokens = align::mean_over(*layout.dp_group(), {kiln::sum(mask).item<double>()}, device)[0];
        actor_opt.zero_grad();
        Tensor lp = align::rollout_log_probs(actor, rows(r.inputs), rows(r.targets), a.temperature);
        kiln::nn::PolicyLoss pl = kiln::nn::ppo_policy_loss(lp, rows(old_lp), rows(advantages), mask, a.clip, tokens);
        Tensor actor_loss = pl.loss;
        if (ptx) {  // InstructGPT's objective: the RL one plus gamma times the pretraining log-likelihood
          auto [x, y] = ptx->next();
          Tensor lm = actor.loss(x, y);
          ptx_loss += lm.item<double>();
          actor_loss = actor_loss + lm * a.ptx_coef;
        }
        actor_loss.backward();
        if (actor_ddp) actor_ddp->finish();
        actor_norm = kiln::dist::clip_grad_norm(actor, layout, a.grad_clip);
        actor_opt.step();

        critic_opt.zero_grad();
        Tensor vl = kiln::nn::ppo_value_loss(critic.values(rows(r.inputs)), rows(old_values), rows(returns), mask,
                                             a.value_clip, tokens);
        vl.backward();
        if (critic_ddp) critic_ddp->finish();
        critic_norm = kiln::dist::clip_grad_norm(critic, layout, a.grad_clip);
        critic_opt.step();

        policy_loss += pl.loss.item<double>();
        value_loss += vl.item<double>();
        clip_fraction += pl.clip_fraction;
        approx_kl += pl.approx_kl;
        ++updates;
      }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::vector<double>& correct = r.rule_rewards;
    const auto n = static_cast<double>(correct.size()), u = static_cast<double>(updates);
    const std::vector<double> means = align::mean_over(
        *layout.dp_group(),
        {kiln::mean(scores).item<double>(), kl.item<double>(), std::accumulate(correct.begin(), correct.end(), 0.0) / n,
         static_cast<double>(r.response_tokens) / n, static_cast<double>(r.response_tokens) / r.seconds,
         policy_loss / u, value_loss / u, ptx_loss / u},
        device);
    const int64_t done = step + 1;
    nlohmann::json m = {{"step", done}, {"score", means[0]}, {"kl", means[1]}, {"train_accuracy", means[2]},
                        {"response_tokens", means[3]}, {"rollout_tokens_per_second", means[4] * layout.dp()},
                        {"policy_loss", means[5]}, {"value_loss", means[6]},
                        {"clip_fraction", clip_fraction / u}, {"approx_kl", approx_kl / u},
                        {"actor_grad_norm", actor_norm}, {"critic_grad_norm", critic_norm}, {"seconds", seconds}};
    if (ptx) m["ptx_loss"] = means[7];
    const bool validate = graded && (done % a.eval_every == 0 || done == steps);
    if (validate) m["val_accuracy"] = accuracy();
    progress.report(m, fmt::format("score {:.3f} | kl {:.4f} | len {:.1f} | {:.0f} rollout tok/s | policy {:.4f} "
                                   "value {:.4f}{}",
                                   means[0], means[1], means[3], m["rollout_tokens_per_second"].get<double>(),
                                   means[5], means[6],
                                   validate ? fmt::format(" | val accuracy {:.3f}", m["val_accuracy"].get<double>()) : ""),
                    validate);
    if (done % a.checkpoint_every == 0 || done == steps) {
      const kiln::dist::TrainingState at{done, order.position(), 0};
      const std::string path = kiln::dist::save_checkpoint(a.out + "/actor", actor, layout, actor_opt, at, a.keep);
      kiln::dist::save_checkpoint(a.out + "/critic", critic, layout, critic_opt,
                                  {done, ptx ? ptx->position() : kiln::data::LoaderPosition{}, 0}, a.keep);
      if (lead) fmt::print("checkpoint: {} (and its critic)\n", path);
    }
    if (validate) best.offer(m["val_accuracy"].get<double>(), done, actor, layout, actor_opt, order.position());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"PPO with a KL penalty against a reward model (InstructGPT's RLHF)"};
  Args a;
  a.out = "out/ppo";
  a.lr = 1e-5;
  a.eval_every = 20;
  a.checkpoint_every = 50;
  align::add_stage_options(app, a, "fine-tuned run or checkpoint directory: the actor's start and the reference",
                           "JSON lines of {prompt} (an answer, if given, only for the accuracy)");
  app.add_option("--reward-model", a.reward_model, "reward run or checkpoint (the critic starts from it too)")->required();
  align::add_rollout_options(app, a);
  app.add_option("--critic-lr", a.critic_lr, "the critic's learning rate")
      ->check(program::positive)->capture_default_str();
  app.add_option("--beta", a.beta, "per-token KL penalty folded into the reward")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--value-clip", a.value_clip, "the value's clip around its old value")
      ->check(program::positive)->capture_default_str();
  app.add_option("--gamma", a.gamma, "GAE's discount")->check(program::fraction)->capture_default_str();
  app.add_option("--lambda", a.lambda, "GAE's lambda")->check(program::fraction)->capture_default_str();
  app.add_option("--reward-clip", a.reward_clip, "scores clipped to +-this")
      ->check(program::positive)->capture_default_str();
  app.add_option("--ppo-epochs", a.ppo_epochs, "passes over each batch of rollouts")
      ->check(program::positive)->capture_default_str();
  app.add_option("--mini-batch", a.mini_batch, "rollouts per update (default: the whole --batch)")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--whiten", a.whiten, "whiten the advantages over each batch")->capture_default_str();
  app.add_option("--ptx-data", a.ptx_data, "PPO-ptx: a prepare_data directory whose train.bin's LM loss joins the actor's");
  app.add_option("--ptx-coef", a.ptx_coef, "PPO-ptx: the weight of that loss (InstructGPT's gamma)")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--ptx-seq", a.ptx_seq, "PPO-ptx: tokens per row of pretraining text")
      ->check(program::positive)->capture_default_str();
  if (auto code = program::parse(app, argc, argv)) return *code;
  return program::run("ppo", [&] { return run(a); });
}
