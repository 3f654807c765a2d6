// reward: the reward model of InstructGPT, trained on preference pairs: a
// fine-tuned model with a scalar head in place of its vocabulary, scoring
// each answer at its last token, trained so that the chosen one scores above
// the rejected one (the pairwise loss -log sigmoid(r_chosen - r_rejected)).
//
//   reward --init-from out/sft --tokenizer data/fortunes/tokenizer.model \
//          --data pairs.jsonl --out out/reward --epochs 1 --batch 8 --lr 1e-5
//
// --data is JSON lines of {"prompt": ..., "chosen": ..., "rejected": ...}.
// Reports the loss, the accuracy (chosen above rejected) and the mean margin
// on the batches and on held-out pairs. The checkpoints are Hugging Face
// *ForSequenceClassification models (the head is "score"). Under mpirun the
// ranks are data-parallel replicas; --resume continues exactly.

#include <chrono>

#include "stage.h"

using kiln::Tensor;

namespace {

struct Args : align::StageArgs {
  double weight_decay = 0.0;
};

int run(const Args& a) {
  auto world = kiln::dist::mpi_world();
  const bool lead = world->rank() == 0;
  kiln::dist::ParallelState layout = align::parallel_layout(a.tp);
  const kiln::Device device(a.device);
  kiln::data::Tokenizer tok(a.tokenizer);

  // Each pair as its two whole conversations, chosen then rejected.
  std::vector<kiln::data::PreferencePair> pairs = kiln::data::read_preferences(a.data);
  const align::Split split = align::split(pairs.size(), a.val_fraction, a.seed);
  std::vector<kiln::data::ChatExample> train_examples, val_examples;
  int64_t dropped = 0;
  for (size_t i = 0; i < split.order.size(); ++i) {
    const kiln::data::PreferencePair& p = pairs[static_cast<size_t>(split.order[i])];
    auto tokens = [&](const std::string& answer) {
      kiln::data::Conversation c = p.prompt;
      c.push_back({kiln::data::Role::Assistant, answer});
      std::vector<int64_t> t = kiln::data::render(tok, c);
      return kiln::data::ChatExample{t, std::vector<int64_t>(t.size(), -100)};
    };
    kiln::data::ChatExample chosen = tokens(p.chosen), rejected = tokens(p.rejected);
    if (static_cast<int64_t>(std::max(chosen.inputs.size(), rejected.inputs.size())) > a.max_tokens) {
      ++dropped;  // a score needs the answer's end
      continue;
    }
    auto& into = i < split.held_out ? val_examples : train_examples;
    into.push_back(std::move(chosen));
    into.push_back(std::move(rejected));
  }
  const int64_t pad = tok.special_id(kiln::data::Special::Pad);
  kiln::data::ExampleLoader train(train_examples, {.batch_size = a.batch, .rank = layout.dp_rank(),
                                                   .world_size = layout.dp(), .seed = a.seed, .pad_id = pad,
                                                   .group = 2, .device = device});
  kiln::data::ExampleLoader val(val_examples, {.batch_size = std::min<int64_t>(a.batch, static_cast<int64_t>(val_examples.size() / 2)),
                                               .shuffle = false, .pad_id = pad, .group = 2, .device = device});

  // The fine-tuned model with a new scalar head (or a reward model's checkpoint, head included).
  const std::string init = align::checkpoint_dir(a.init_from);
  kiln::Generator gen(a.seed);
  kiln::nn::ValueModel model(kiln::nn::hf::read_config(init), gen, kiln::kFloat32, device,
                             std::make_shared<kiln::dist::ModelParallel>(layout));
  kiln::nn::hf::load_weights(model, kiln::nn::hf::read_weights(init), /*strict=*/false);
  kiln::optim::AdamW opt(kiln::optim::decay_groups(model.named_parameters(), a.weight_decay), {.lr = a.lr});
  std::unique_ptr<kiln::dist::DistributedDataParallel> ddp;
  if (layout.dp() > 1) ddp = std::make_unique<kiln::dist::DistributedDataParallel>(model, layout.dp_group());

  const int64_t steps = align::total_steps(a, train.batches_per_epoch());
  kiln::optim::LRSchedule schedule{a.lr, 0.1 * a.lr, std::max<int64_t>(1, steps / 20), steps,
                                   kiln::optim::LRSchedule::Decay::Cosine};
  const kiln::dist::TrainingState state = align::resume(a, model, opt, train);
  if (lead)
    fmt::print("reward: {} pairs ({} held out, {} dropped by --max-tokens {}); {} steps of {} pairs x {} ranks\n",
               pairs.size(), val_examples.size() / 2, dropped, a.max_tokens, steps, a.batch, layout.dp());

  // The pairwise loss on a batch of pairs (rows chosen, rejected, chosen, ...).
  auto pairwise = [&](const Tensor& x, const Tensor&, const Tensor& lengths) {
    auto [chosen, rejected] = align::chosen_rejected(model.scores(x, lengths));
    return kiln::nn::pairwise_reward_loss(chosen, rejected);
  };
  align::Progress progress(a.out, lead, a.resume, state.step, steps, a.log_every);
  for (int64_t step = state.step; step < steps; ++step) {
    auto t0 = std::chrono::steady_clock::now();
    opt.set_lr(schedule.at(step));
    opt.zero_grad();
    auto [x, y, lengths, attention] = train.next();
    kiln::nn::PairwiseLoss l = pairwise(x, y, lengths);
    l.loss.backward();
    if (ddp) ddp->finish();
    const double norm = kiln::dist::clip_grad_norm(model, layout, a.grad_clip);
    opt.step();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t done = step + 1;
    nlohmann::json m = {{"step", done}, {"train_loss", l.loss.item<double>()}, {"accuracy", l.accuracy},
                        {"margin", l.margin}, {"lr", schedule.at(step)}, {"grad_norm", norm},
                        {"pairs_per_second", static_cast<double>(x.size(0) / 2 * layout.dp()) / seconds}};
    const bool validate = done % a.eval_every == 0 || done == steps;
    if (validate) std::tie(m["val_loss"], m["val_accuracy"]) = align::evaluate_pairs(val, pairwise);
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
  CLI::App app{"Train a reward model on preference pairs"};
  Args a;
  a.out = "out/reward";
  align::add_stage_options(app, a, "fine-tuned run or checkpoint directory (or a reward model's)",
                           "JSON lines of {prompt, chosen, rejected}");
  app.add_option("--weight-decay", a.weight_decay, "on 2+-dim tensors")
      ->check(program::non_negative)->capture_default_str();
  if (auto code = program::parse(app, argc, argv)) return *code;
  return program::run("reward", [&] { return run(a); });
}
