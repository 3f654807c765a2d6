// pretrain_bert: BERT's masked-LM pre-training on the token files of
// prepare_data (RoBERTa's way: windows of the token stream, documents
// separated by the tokenizer's end of text, no next-sentence pairs). Each
// window of T - 2 tokens becomes [CLS] window [SEP], corrupted by
// data::mask_tokens; the loss is the masked-LM cross-entropy at the drawn
// positions. Validation reports the loss and the masked-token accuracy on
// windows masked the same way at every evaluation. The model is saved as
// BertForPreTraining (model.safetensors and config.json) at the end. Under
// mpirun the ranks are data-parallel replicas; each row is masked from a
// generator of (seed, step, the row's place in the whole batch), so any
// number of replicas takes the steps of one process.
//
//   pretrain_bert --data data/fortunes --out out/bert --layers 4 --channels 192 --heads 6 --steps 600

#include <CLI/CLI.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include <kiln/kiln.h>

namespace fs = std::filesystem;
using kiln::Tensor;

namespace {

struct Args {
  std::string data, out = "out/bert";
  int64_t layers = 4, channels = 192, heads = 6, seq = 128, batch = 16, steps = 600, warmup = 30;
  int64_t eval_every = 100, eval_batches = 20, log_every = 10;
  double lr = 1e-3, weight_decay = 0.01, grad_clip = 1.0, dropout = 0.1;
  uint64_t seed = 1337;
};

struct Masker {
  const kiln::data::Tokenizer& tok;
  kiln::data::MaskingOptions options;
  uint64_t seed;
  // A window (B, T - 2) of the token stream as BERT's rows [CLS] window [SEP],
  // corrupted: row r from a generator of (seed, step, first_row + r).
  kiln::data::MaskedBatch operator()(const Tensor& window, int64_t step, int64_t first_row) const {
    const int64_t B = window.size(0);
    auto column = [&](kiln::data::Special s) {
      return kiln::full({B, 1}, static_cast<int64_t>(tok.special_id(s)), kiln::kInt64);
    };
    Tensor rows = kiln::cat({column(kiln::data::Special::Cls), window.to(kiln::kCPU), column(kiln::data::Special::Sep)}, 1);
    std::vector<Tensor> inputs, labels;
    for (int64_t r = 0; r < B; ++r) {
      kiln::Generator gen(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(step) * 0x100000001B3ull +
                          static_cast<uint64_t>(first_row + r) + 1);
      kiln::data::MaskedBatch one = kiln::data::mask_tokens(rows.narrow(0, r, 1).contiguous(), {}, options, gen);
      inputs.push_back(one.inputs);
      labels.push_back(one.labels);
    }
    return {kiln::cat(inputs), kiln::cat(labels)};
  }
};

// The masked-LM loss and accuracy of a corrupted batch.
std::pair<Tensor, double> mlm(const kiln::nn::Bert& model, const kiln::data::MaskedBatch& batch) {
  Tensor logits = model.mlm_logits(model.forward(batch.inputs).sequence);
  Tensor flat = logits.reshape({-1, logits.size(-1)}), labels = batch.labels.reshape({-1});
  Tensor chosen = labels != -100;
  const double right = kiln::sum(kiln::logical_and(kiln::argmax(flat, -1) == labels, chosen)).item<double>();
  return {kiln::cross_entropy(flat, labels), right / std::max(1.0, kiln::sum(chosen).item<double>())};
}

int run(const Args& a) {
  auto world = kiln::dist::mpi_world();
  const bool lead = world->rank() == 0;
  const int ranks = world->size(), rank = world->rank();
  kiln::data::Tokenizer tok(a.data + "/tokenizer.model");
  const kiln::nn::BertConfig config{.vocab_size = static_cast<int64_t>(tok.vocab_size()), .hidden_size = a.channels,
                                    .num_hidden_layers = a.layers, .num_attention_heads = a.heads,
                                    .intermediate_size = 4 * a.channels, .max_position_embeddings = a.seq,
                                    .pad_token_id = tok.special_id(kiln::data::Special::Pad),
                                    .hidden_dropout_prob = a.dropout};
  kiln::Generator gen(a.seed);
  kiln::nn::Bert model(config, gen);
  gen.set_offset(gen.offset() + (static_cast<uint64_t>(rank) << 40));  // each replica's own dropout
  kiln::optim::AdamW opt(kiln::optim::decay_groups(model.named_parameters(), a.weight_decay), {.lr = a.lr});
  std::unique_ptr<kiln::dist::DistributedDataParallel> ddp;
  if (ranks > 1) ddp = std::make_unique<kiln::dist::DistributedDataParallel>(model, world);
  kiln::optim::LRSchedule schedule{a.lr, a.lr * 0.1, a.warmup, a.steps, kiln::optim::LRSchedule::Decay::Cosine};
  // --batch rows per replica; replica r reads its share of each whole batch.
  kiln::data::DataLoader train({a.data + "/train.bin"}, {.batch_size = a.batch, .seq_len = a.seq - 2, .rank = rank,
                                                         .world_size = ranks, .shuffle = true, .seed = a.seed});
  kiln::data::DataLoader val({a.data + "/val.bin"}, {.batch_size = a.batch, .seq_len = a.seq - 2, .rank = rank,
                                                     .world_size = ranks});
  using kiln::data::Special;
  const Masker mask{tok, {.mask_id = tok.special_id(Special::Mask), .vocab_size = config.vocab_size,
                          .never_mask = {tok.special_id(Special::Cls), tok.special_id(Special::Sep),
                                         tok.special_id(Special::Pad)}},
                    a.seed};
  // Each figure's mean over the replicas (every replica's rows draw as many masked positions).
  auto mean_over_ranks = [&](std::vector<double> figures) {
    Tensor t = kiln::tensor(figures);
    world->all_reduce(t);
    for (size_t i = 0; i < figures.size(); ++i) figures[i] = t[static_cast<int64_t>(i)].item<double>() / ranks;
    return figures;
  };
  if (lead)
    fmt::print("bert: {} layers, {} heads, {} channels, vocabulary {}, {:.2f}M parameters; {} steps of {} x {} x {} "
               "replicas\n", a.layers, a.heads, a.channels, config.vocab_size,
               static_cast<double>(model.num_parameters()) / 1e6, a.steps, a.batch, a.seq, ranks);
  std::ofstream metrics;
  if (lead) {
    fs::create_directories(a.out);
    metrics.open(a.out + "/metrics.jsonl");
  }
  auto evaluate = [&] {
    kiln::NoGradGuard no_grad;
    model.eval();
    val.seek({});
    double loss = 0, accuracy = 0;
    const int64_t n = std::min(a.eval_batches, val.batches_per_epoch());
    for (int64_t i = 0; i < n; ++i) {  // every evaluation masks the same positions (step -1 - i)
      auto [l, acc] = mlm(model, mask(val.next().first, -1 - i, rank * a.batch));
      loss += l.item<double>() / static_cast<double>(n);
      accuracy += acc / static_cast<double>(n);
    }
    model.train();
    const std::vector<double> both = mean_over_ranks({loss, accuracy});
    return std::pair{both[0], both[1]};
  };
  const auto start = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < a.steps; ++step) {
    opt.set_lr(schedule.at(step));
    opt.zero_grad();
    auto [loss, accuracy] = mlm(model, mask(train.next().first, step, rank * a.batch));
    loss.backward();
    if (ddp) ddp->finish();
    const double norm = kiln::optim::clip_grad_norm(model.parameters(), a.grad_clip);
    opt.step();
    const int64_t done = step + 1;
    const std::vector<double> mean = mean_over_ranks({loss.item<double>(), accuracy});
    nlohmann::json m = {{"step", done}, {"train_loss", mean[0]}, {"masked_accuracy", mean[1]}, {"grad_norm", norm}};
    const bool validate = done % a.eval_every == 0 || done == a.steps;
    if (validate) std::tie(m["val_loss"], m["val_masked_accuracy"]) = evaluate();
    if (lead && (done % a.log_every == 0 || validate || done == 1)) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      fmt::print("step {:5d}/{} | loss {:.4f} | masked accuracy {:.3f}{} | norm {:.3f} | {:.0f} tok/s | ETA {:.0f}s\n",
                 done, a.steps, mean[0], mean[1],
                 validate ? fmt::format(" | val loss {:.4f} accuracy {:.3f}", m["val_loss"].get<double>(),
                                        m["val_masked_accuracy"].get<double>())
                          : "",
                 norm, static_cast<double>(done * a.batch * a.seq * ranks) / seconds,
                 seconds / static_cast<double>(done) * static_cast<double>(a.steps - done));
      std::fflush(stdout);
    }
    if (lead) metrics << m.dump() << '\n' << std::flush;
  }
  if (!lead) return 0;
  // Written beside, then renamed into place: a reader never sees half a model.
  const fs::path final_dir = fs::path(a.out) / "model", partial = fs::path(a.out) / "model.partial";
  fs::remove_all(partial);
  fs::create_directories(partial);
  {
    kiln::NoGradGuard no_grad;
    kiln::save_safetensors((partial / "model.safetensors").string(), kiln::nn::bert::to_hf(model.state_dict()),
                           {{"format", "pt"}});
  }
  kiln::write_file_atomic((partial / "config.json").string(), kiln::nn::bert::hf_config_json(config));
  fs::remove_all(final_dir);
  fs::rename(partial, final_dir);
  fmt::print("saved {} (BertForPreTraining); metrics in {}/metrics.jsonl\n", final_dir.string(), a.out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"BERT's masked-LM pre-training on prepare_data's token files"};
  Args a;
  app.add_option("--data", a.data, "directory with train.bin, val.bin, tokenizer.model")->required();
  app.add_option("--out", a.out, "metrics and the saved model")->capture_default_str();
  app.add_option("--layers", a.layers, "layers")->capture_default_str();
  app.add_option("--channels", a.channels, "width (the MLP is 4 times it)")->capture_default_str();
  app.add_option("--heads", a.heads, "attention heads")->capture_default_str();
  app.add_option("--seq,-t", a.seq, "tokens per row, [CLS] and [SEP] included")->capture_default_str();
  app.add_option("--batch,-b", a.batch, "rows per step and replica")->capture_default_str();
  app.add_option("--steps", a.steps, "optimizer steps")->capture_default_str();
  app.add_option("--warmup", a.warmup, "warmup steps")->capture_default_str();
  app.add_option("--lr", a.lr, "peak learning rate (cosine decay to a tenth)")->capture_default_str();
  app.add_option("--weight-decay", a.weight_decay, "AdamW weight decay on matrices")->capture_default_str();
  app.add_option("--grad-clip", a.grad_clip, "global norm clip")->capture_default_str();
  app.add_option("--dropout", a.dropout, "hidden dropout")->capture_default_str();
  app.add_option("--eval-every", a.eval_every, "steps between validation runs")->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--eval-batches", a.eval_batches, "batches per validation run")->capture_default_str();
  app.add_option("--log-every", a.log_every, "steps between progress lines")->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--seed", a.seed, "initialization, data order, masking and dropout")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return run(a);
  } catch (const std::exception& e) {
    // Under mpirun one failing rank must not leave the others in a collective.
    if (kiln::dist::mpi_world()->size() > 1) kiln::dist::abort_all(e);
    fmt::print(stderr, "pretrain_bert: {}\n", e.what());
    return 1;
  }
}
