// pretrain_bert: BERT's masked-LM pre-training on the token files of
// prepare_data (RoBERTa's way: windows of the token stream, documents
// separated by the tokenizer's end of text, no next-sentence pairs). Each
// window of T - 2 tokens becomes [CLS] window [SEP], corrupted by
// data::mask_tokens; the loss is the masked-LM cross-entropy at the drawn
// positions. Validation reports the loss and the masked-token accuracy on
// windows masked the same way at every evaluation. The model is saved as
// BertForPreTraining (model.safetensors and config.json) at the end.
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
  // A window (B, T - 2) of the token stream as BERT's rows [CLS] window [SEP], corrupted.
  kiln::data::MaskedBatch operator()(const Tensor& window, kiln::Generator& gen) const {
    const int64_t B = window.size(0);
    auto column = [&](kiln::data::Special s) {
      return kiln::full({B, 1}, static_cast<int64_t>(tok.special_id(s)), kiln::kInt64);
    };
    Tensor rows = kiln::cat({column(kiln::data::Special::Cls), window.to(kiln::kCPU), column(kiln::data::Special::Sep)}, 1);
    return kiln::data::mask_tokens(rows.contiguous(), {}, options, gen);
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
  kiln::data::Tokenizer tok(a.data + "/tokenizer.model");
  const kiln::nn::BertConfig config{.vocab_size = static_cast<int64_t>(tok.vocab_size()), .hidden_size = a.channels,
                                    .num_hidden_layers = a.layers, .num_attention_heads = a.heads,
                                    .intermediate_size = 4 * a.channels, .max_position_embeddings = a.seq,
                                    .pad_token_id = tok.special_id(kiln::data::Special::Pad),
                                    .hidden_dropout_prob = a.dropout};
  kiln::Generator gen(a.seed);
  kiln::nn::Bert model(config, gen);
  kiln::optim::AdamW opt(kiln::optim::decay_groups(model.named_parameters(), a.weight_decay), {.lr = a.lr});
  kiln::optim::LRSchedule schedule{a.lr, a.lr * 0.1, a.warmup, a.steps, kiln::optim::LRSchedule::Decay::Cosine};
  kiln::data::DataLoader train({a.data + "/train.bin"}, {.batch_size = a.batch, .seq_len = a.seq - 2, .shuffle = true, .seed = a.seed});
  kiln::data::DataLoader val({a.data + "/val.bin"}, {.batch_size = a.batch, .seq_len = a.seq - 2});
  using kiln::data::Special;
  const Masker mask{tok, {.mask_id = tok.special_id(Special::Mask), .vocab_size = config.vocab_size,
                          .never_mask = {tok.special_id(Special::Cls), tok.special_id(Special::Sep),
                                         tok.special_id(Special::Pad)}}};
  fmt::print("bert: {} layers, {} heads, {} channels, vocabulary {}, {:.2f}M parameters; {} steps of {} x {}\n",
             a.layers, a.heads, a.channels, config.vocab_size, static_cast<double>(model.num_parameters()) / 1e6,
             a.steps, a.batch, a.seq);
  fs::create_directories(a.out);
  std::ofstream metrics(a.out + "/metrics.jsonl");
  auto evaluate = [&] {
    kiln::NoGradGuard no_grad;
    model.eval();
    val.seek({});
    kiln::Generator same(a.seed + 1);  // every evaluation masks the same positions
    double loss = 0, accuracy = 0;
    const int64_t n = std::min(a.eval_batches, val.batches_per_epoch());
    for (int64_t i = 0; i < n; ++i) {
      auto [l, acc] = mlm(model, mask(val.next().first, same));
      loss += l.item<double>() / static_cast<double>(n);
      accuracy += acc / static_cast<double>(n);
    }
    model.train();
    return std::pair{loss, accuracy};
  };
  const auto start = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < a.steps; ++step) {
    opt.set_lr(schedule.at(step));
    opt.zero_grad();
    auto [loss, accuracy] = mlm(model, mask(train.next().first, gen));
    loss.backward();
    const double norm = kiln::optim::clip_grad_norm(model.parameters(), a.grad_clip);
    opt.step();
    const int64_t done = step + 1;
    nlohmann::json m = {{"step", done}, {"train_loss", loss.item<double>()}, {"masked_accuracy", accuracy},
                        {"grad_norm", norm}};
    const bool validate = done % a.eval_every == 0 || done == a.steps;
    if (validate) std::tie(m["val_loss"], m["val_masked_accuracy"]) = evaluate();
    if (done % a.log_every == 0 || validate || done == 1) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      fmt::print("step {:5d}/{} | loss {:.4f} | masked accuracy {:.3f}{} | norm {:.3f} | {:.0f} tok/s | ETA {:.0f}s\n",
                 done, a.steps, loss.item<double>(), accuracy,
                 validate ? fmt::format(" | val loss {:.4f} accuracy {:.3f}", m["val_loss"].get<double>(),
                                        m["val_masked_accuracy"].get<double>())
                          : "",
                 norm, static_cast<double>(done * a.batch * a.seq) / seconds,
                 seconds / static_cast<double>(done) * static_cast<double>(a.steps - done));
      std::fflush(stdout);
    }
    metrics << m.dump() << '\n' << std::flush;
  }
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
  app.add_option("--batch,-b", a.batch, "rows per step")->capture_default_str();
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
    fmt::print(stderr, "pretrain_bert: {}\n", e.what());
    return 1;
  }
}
