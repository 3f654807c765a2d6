// dpo: Direct Preference Optimization (Rafailov et al. 2023) of a fine-tuned
// model on preference pairs, against a frozen copy of itself.
//
//   dpo --init-from out/sft --tokenizer data/fortunes/tokenizer.model \
//       --data pairs.jsonl --out out/dpo --epochs 1 --batch 8 --lr 5e-6 --beta 0.1
//
// --data is JSON lines of {"prompt": ..., "chosen": ..., "rejected": ...}
// (kiln/data/conversations.h). Each answer's log-probability is the sum over
// its tokens under the chat template; the loss is DPO's sigmoid loss (with
// --label-smoothing, conservative DPO), reported with the implicit rewards'
// accuracy and margin as TRL reports them, on the training batches and on
// held-out pairs. With --rpo-alpha, the chosen answers' mean token negative
// log-likelihood is added, times alpha (RPO, Pang et al. 2024; TRL's
// rpo_alpha): DPO alone may lower both answers' likelihood and drift.
// The reference is the --init-from checkpoint, frozen. Under
// mpirun the ranks are data-parallel replicas; checkpoints resume exactly.

#include <chrono>

#include "stage.h"

using kiln::Tensor;

namespace {

struct Args : align::StageArgs {
  double beta = 0.1, label_smoothing = 0.0, rpo_alpha = 0.0;
};

// The log-probability of each row's answer tokens: (rows, T), 0 elsewhere.
Tensor answer_token_log_probs(const kiln::nn::TransformerLM& model, const Tensor& x, const Tensor& y) {
  return kiln::nn::token_log_probs(model.forward(x), y);
}

int run(const Args& a) {
  auto world = kiln::dist::mpi_world();
  const bool lead = world->rank() == 0;
  kiln::dist::ParallelState layout = align::parallel_layout(a.tp);
  const kiln::Device device(a.device);
  kiln::data::Tokenizer tok(a.tokenizer);

  // Each pair as two examples, chosen then rejected, whose targets are the answer alone.
  std::vector<kiln::data::PreferencePair> pairs = kiln::data::read_preferences(a.data);
  const align::Split split = align::split(pairs.size(), a.val_fraction, a.seed);
  std::vector<kiln::data::ChatExample> train_examples, val_examples;
  int64_t dropped = 0;
  const kiln::data::ChatTemplateOptions answer_only{.train_every_assistant_turn = false, .max_tokens = a.max_tokens};
  for (size_t i = 0; i < split.order.size(); ++i) {
    const kiln::data::PreferencePair& p = pairs[static_cast<size_t>(split.order[i])];
    auto with = [&](const std::string& answer) {
      kiln::data::Conversation c = p.prompt;
      c.push_back({kiln::data::Role::Assistant, answer});
      return kiln::data::chat_example(tok, c, answer_only);
    };
    auto chosen = with(p.chosen), rejected = with(p.rejected);
    if (!chosen || !rejected) {
      ++dropped;
      continue;
    }
    auto& into = i < split.held_out ? val_examples : train_examples;
    into.push_back(std::move(*chosen));
    into.push_back(std::move(*rejected));
  }
  const int64_t pad = tok.special_id(kiln::data::Special::Pad);
  kiln::data::ExampleLoader train(train_examples, {.batch_size = a.batch, .rank = layout.dp_rank(),
                                                   .world_size = layout.dp(), .seed = a.seed, .pad_id = pad,
                                                   .group = 2, .device = device});
  kiln::data::ExampleLoader val(val_examples, {.batch_size = std::min<int64_t>(a.batch, static_cast<int64_t>(val_examples.size() / 2)),
                                               .shuffle = false, .pad_id = pad, .group = 2, .device = device});

  const std::string init = align::checkpoint_dir(a.init_from);
  const kiln::nn::ModelSpec spec = kiln::nn::hf::read_config(init);
  kiln::Generator gen(a.seed);
  auto factory = std::make_shared<kiln::dist::ModelParallel>(layout);
  kiln::nn::TransformerLM model(spec, gen, kiln::kFloat32, device, factory);
  kiln::dist::load_checkpoint(init, model);
  const std::unique_ptr<kiln::nn::TransformerLM> reference = model.clone();
  reference->eval();
  for (Tensor p : reference->parameters()) p.requires_grad_(false);
  kiln::optim::AdamW opt(kiln::optim::decay_groups(model.named_parameters(), 0.0), {.lr = a.lr});
  std::unique_ptr<kiln::dist::DistributedDataParallel> ddp;
  if (layout.dp() > 1) ddp = std::make_unique<kiln::dist::DistributedDataParallel>(model, layout.dp_group());

  const int64_t steps = align::total_steps(a, train.batches_per_epoch());
  kiln::optim::LRSchedule schedule{a.lr, a.lr, std::max<int64_t>(1, steps / 10), steps,
                                   kiln::optim::LRSchedule::Decay::Constant};
  const kiln::dist::TrainingState state = align::resume(a, model, opt, train);
  if (lead)
    fmt::print("dpo: {} pairs ({} held out, {} dropped by --max-tokens {}); beta {}, {} steps of {} pairs x {} ranks\n",
               pairs.size(), val_examples.size() / 2, dropped, a.max_tokens, a.beta, steps, a.batch, layout.dp());

  // DPO's loss on a batch of pairs (rows chosen, rejected, chosen, ...).
  auto dpo = [&](const Tensor& x, const Tensor& y, const Tensor&) {
    Tensor policy = answer_token_log_probs(model, x, y);
    auto [policy_chosen, policy_rejected] = align::chosen_rejected(kiln::sum(policy, {1}));
    Tensor ref;
    {
      kiln::NoGradGuard no_grad;
      ref = kiln::sum(answer_token_log_probs(*reference, x, y), {1});
    }
    auto [ref_chosen, ref_rejected] = align::chosen_rejected(ref);
    kiln::nn::DPOLoss l =
        kiln::nn::dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, a.beta, a.label_smoothing);
    if (a.rpo_alpha > 0) {  // rows chosen, rejected, ...: the even rows' answer tokens
      const Tensor chosen_tokens = (y.view({-1, 2, y.size(1)}).select(1, 0) != -100).to(policy.dtype());
      const Tensor chosen_log_probs = policy.view({-1, 2, policy.size(1)}).select(1, 0);
      l.loss = l.loss - a.rpo_alpha * kiln::sum(chosen_log_probs) / kiln::clamp(kiln::sum(chosen_tokens), 1.0, {});
    }
    return l;
  };
  align::Progress progress(a.out, lead, a.resume, state.step, steps, a.log_every);
  for (int64_t step = state.step; step < steps; ++step) {
    auto t0 = std::chrono::steady_clock::now();
    opt.set_lr(schedule.at(step));
    opt.zero_grad();
    auto [x, y, lengths, attention] = train.next();
    kiln::nn::DPOLoss l = dpo(x, y, lengths);
    l.loss.backward();
    if (ddp) ddp->finish();
    const double norm = kiln::dist::clip_grad_norm(model, layout, a.grad_clip);
    opt.step();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t done = step + 1;
    nlohmann::json m = {{"step", done}, {"train_loss", l.loss.item<double>()}, {"accuracy", l.accuracy},
                        {"margin", l.margin}, {"chosen_reward", kiln::mean(l.chosen_rewards).item<double>()},
                        {"rejected_reward", kiln::mean(l.rejected_rewards).item<double>()}, {"grad_norm", norm},
                        {"pairs_per_second", static_cast<double>(x.size(0) / 2 * layout.dp()) / seconds}};
    const bool validate = done % a.eval_every == 0 || done == steps;
    if (validate) std::tie(m["val_loss"], m["val_accuracy"]) = align::evaluate_pairs(val, dpo);
    progress.report(m, fmt::format("loss {:.4f} | accuracy {:.2f} | margin {:.3f}{} | norm {:.3f}", l.loss.item<double>(),
                                   l.accuracy, l.margin,
                                   validate ? fmt::format(" | val loss {:.4f} accuracy {:.3f}", m["val_loss"].get<double>(),
                                                          m["val_accuracy"].get<double>())
                                            : "",
                                   norm),
                    validate);
    align::maybe_checkpoint(a, done, steps, model, layout, opt, train);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Direct Preference Optimization of a fine-tuned model on preference pairs"};
  Args a;
  a.out = "out/dpo";
  a.lr = 5e-6;
  align::add_stage_options(app, a, "fine-tuned run or checkpoint directory: the policy's start and the reference",
                           "JSON lines of {prompt, chosen, rejected}");
  app.add_option("--beta", a.beta, "DPO's beta: how far from the reference the policy may go")
      ->check(program::positive)->capture_default_str();
  app.add_option("--label-smoothing", a.label_smoothing, "conservative DPO's label smoothing")
      ->check(program::in_range(0, 0.5, "a number in [0, 0.5]"))->capture_default_str();
  app.add_option("--rpo-alpha", a.rpo_alpha, "weight of the chosen answers' token NLL added to the loss (RPO)")
      ->check(program::non_negative)
      ->capture_default_str();
  if (auto code = program::parse(app, argc, argv)) return *code;
  return program::run("dpo", [&] { return run(a); });
}
