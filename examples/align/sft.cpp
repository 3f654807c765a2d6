// sft: supervised fine-tuning of a pretrained causal model on conversations,
// the first stage of the path to an assistant (InstructGPT, Alpaca, Vicuna).
//
//   sft --init-from out/fortunes --tokenizer data/fortunes/tokenizer.model \
//       --data tasks.jsonl --out out/sft --epochs 3 --batch 16 --lr 1e-4
//
// --data is JSON lines of Alpaca, ShareGPT/Vicuna or messages records
// (kiln/data/conversations.h). Each conversation is rendered with the chat
// template (the tokenizer's role markers, kiln/data/chat_template.h); the
// loss is the mean over the assistant's tokens only. A share of the
// conversations is held out for validation. With --pack, each batch's
// conversations share rows of --max-tokens tokens, each attending only to
// itself (varlen attention) at its own positions: the same loss, with no
// compute spent on padding. Under mpirun the ranks are
// data-parallel replicas. Prints step, loss, lr, grad norm, tokens/s and ETA,
// writes metrics.jsonl (scripts/plot) and checkpoints that --resume continues
// exactly and that the next stages (--init-from) start from. With
// --lora-rank, low-rank adapters train beside the frozen model (--lora-*,
// nn/lora.h).

#include <chrono>

#include "../lora_options.h"
#include "stage.h"

using kiln::Tensor;

namespace {

struct Args : align::StageArgs {
  double weight_decay = 0.0, warmup_ratio = 0.03;
  bool last_turn_only = false, pack = false;
  LoraArgs lora;
};

int run(const Args& a) {
  auto world = kiln::dist::mpi_world();
  const bool lead = world->rank() == 0;
  kiln::dist::ParallelState layout = align::parallel_layout(a.tp);
  const kiln::Device device(a.device);
  kiln::data::Tokenizer tok(a.tokenizer);

  // Conversations, split into training and held-out ones by a seeded shuffle.
  std::vector<kiln::data::Conversation> all = kiln::data::read_conversations(a.data);
  const align::Split split = align::split(all.size(), a.val_fraction, a.seed);
  std::vector<kiln::data::ChatExample> train_examples, val_examples;
  int64_t dropped = 0;
  for (size_t i = 0; i < split.order.size(); ++i) {
    auto e = kiln::data::chat_example(tok, all[static_cast<size_t>(split.order[i])],
                                      {.train_every_assistant_turn = !a.last_turn_only, .max_tokens = a.max_tokens});
    if (!e) ++dropped;
    else (i < split.held_out ? val_examples : train_examples).push_back(std::move(*e));
  }
  const int64_t pad = tok.special_id(kiln::data::Special::Pad);
  kiln::data::ExampleLoader train(train_examples, {.batch_size = a.batch, .rank = layout.dp_rank(),
                                                   .world_size = layout.dp(), .seed = a.seed, .pad_id = pad,
                                                   .pack_tokens = a.pack ? a.max_tokens : 0, .device = device});
  kiln::data::ExampleLoader val(val_examples, {.batch_size = std::min<int64_t>(a.batch, static_cast<int64_t>(val_examples.size())),
                                               .shuffle = false, .pad_id = pad, .device = device});

  // The pretrained model, its vocabulary grown to the tokenizer's if need be.
  const std::string init = align::checkpoint_dir(a.init_from);
  kiln::nn::ModelSpec spec = kiln::nn::hf::read_config(init);
  kiln::Generator gen(a.seed);
  kiln::nn::TransformerLM model(spec, gen, kiln::kFloat32, device, std::make_shared<kiln::dist::ModelParallel>(layout));
  kiln::dist::load_checkpoint(init, model);
  if (model.spec().vocab_size < tok.vocab_size()) {
    KILN_CHECK(a.lora.rank == 0, "[sft] the tokenizer has {} symbols, the model {}: with --lora-rank the new "
               "symbols' embeddings would stay frozen at their random start; pretrain with this tokenizer",
               tok.vocab_size(), model.spec().vocab_size);
    model.resize_vocab(tok.vocab_size(), gen);
  }
  apply_lora(a.lora, model, gen, a.seed);
  kiln::optim::AdamW opt(kiln::optim::decay_groups(model.named_parameters(), a.weight_decay), {.lr = a.lr});
  std::unique_ptr<kiln::dist::DistributedDataParallel> ddp;
  if (layout.dp() > 1) ddp = std::make_unique<kiln::dist::DistributedDataParallel>(model, layout.dp_group());

  const int64_t steps = align::total_steps(a, train.batches_per_epoch());
  kiln::optim::LRSchedule schedule{a.lr, 0.1 * a.lr, static_cast<int64_t>(a.warmup_ratio * static_cast<double>(steps)),
                                   steps, kiln::optim::LRSchedule::Decay::Cosine};
  const kiln::dist::TrainingState state = align::resume(a, model, opt, train);
  if (lead)
    fmt::print("sft: {} conversations ({} held out, {} dropped by --max-tokens {}), {} answer tokens to train on; "
               "{} steps of {} x {} ranks\n", all.size(), val_examples.size(), dropped, a.max_tokens,
               kiln::data::ExampleLoader(train_examples, {.batch_size = 1}).trained_tokens(), steps, a.batch,
               layout.dp());

  auto evaluate = [&] {
    kiln::NoGradGuard no_grad;
    model.eval();  // no dropout (the adapters')
    val.seek({});
    double total = 0;
    for (int64_t i = 0; i < val.batches_per_epoch(); ++i) {
      auto [x, y, lengths, attention] = val.next();
      total += model.loss(x, y).item<double>();
    }
    model.train();
    return total / static_cast<double>(val.batches_per_epoch());
  };
  align::Progress progress(a.out, lead, a.resume, state.step, steps, a.log_every);
  for (int64_t step = state.step; step < steps; ++step) {
    auto t0 = std::chrono::steady_clock::now();
    opt.set_lr(schedule.at(step));
    opt.zero_grad();
    auto [x, y, lengths, attention] = train.next();
    Tensor loss = model.loss(x, y, &attention);  // the mean over the answers' tokens
    loss.backward();
    if (ddp) ddp->finish();
    const double norm = kiln::dist::clip_grad_norm(model, layout, a.grad_clip);
    opt.step();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t done = step + 1;
    nlohmann::json m = {{"step", done}, {"train_loss", loss.item<double>()}, {"lr", schedule.at(step)},
                        {"grad_norm", norm}, {"tokens_per_second", static_cast<double>(x.numel() * layout.dp()) / seconds}};
    const bool validate = done % a.eval_every == 0 || done == steps;
    if (validate) m["val_loss"] = evaluate();
    progress.report(m, fmt::format("loss {:.4f}{} | lr {:.2e} | norm {:.3f} | {:.0f} tok/s", loss.item<double>(),
                                   validate ? fmt::format(" | val {:.4f}", m["val_loss"].get<double>()) : "",
                                   schedule.at(step), norm, m["tokens_per_second"].get<double>()),
                    validate);
    align::maybe_checkpoint(a, done, steps, model, layout, opt, train);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Supervised fine-tuning of a causal model on conversations"};
  Args a;
  a.out = "out/sft";
  a.epochs = 3;
  a.batch = 16;
  a.lr = 1e-4;
  align::add_stage_options(app, a, "pretrained run or checkpoint directory (kiln's or Hugging Face's)",
                           "JSON lines: Alpaca, ShareGPT/Vicuna or messages records");
  app.add_option("--weight-decay", a.weight_decay, "on 2+-dim tensors")
      ->check(program::non_negative)->capture_default_str();
  app.add_flag("--last-turn-only", a.last_turn_only, "train only the last answer (default: every assistant turn)");
  app.add_flag("--pack", a.pack, "pack each batch's conversations into rows of --max-tokens, each attending "
               "only to itself");
  add_lora_options(app, a.lora);
  if (auto code = program::parse(app, argc, argv)) return *code;
  return program::run("sft", [&] { return run(a); });
}
