// classify: BERT sentence classification fine-tuned from pretrain's BERT, as
// Hugging Face's BertForSequenceClassification: dropout and a linear map of
// the pooled [CLS] output, cross-entropy over the classes. The task: which
// fortune file a fortune comes from, one class per file (by default Debian's
// computers against politics). Fortunes are cleaned as prepare_data cleans
// them, duplicates dropped, shuffled with the seed and split; each epoch
// reports the held-out accuracy beside the majority class's share. The
// fine-tuned model is saved as BertForSequenceClassification.
//
//   pretrain --model bert --data data/fortunes --out out/bert --steps 600
//   classify --model out/bert/model --tokenizer data/fortunes/tokenizer.model
//   classify --scratch ...   # the same BERT from random weights: what pre-training gives

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include <kiln/kiln.h>

#include "../program.h"

namespace fs = std::filesystem;
using kiln::Tensor;
using kiln::data::Special;

namespace {

struct Args {
  std::string model, tokenizer, out = "out/classify", predictions;
  std::vector<std::string> files{"/usr/share/games/fortunes/computers", "/usr/share/games/fortunes/politics"};
  int64_t seq = 128, batch = 16, epochs = 3, log_every = 20;
  int64_t layers = 4, channels = 192, heads = 6;  // --scratch's BERT
  double lr = 1e-4, weight_decay = 0.01, held_out = 0.2;
  uint64_t seed = 1337;
  bool scratch = false;
};

struct Example {
  std::vector<int64_t> ids;  // [CLS] text [SEP]
  int64_t label;
};

// Each file's documents as its class's examples; a text seen before (in any
// file) is dropped, so no text stands on both sides of the split.
std::vector<Example> read_examples(const Args& a, const kiln::data::Tokenizer& tok) {
  std::vector<Example> examples;
  std::set<std::string> seen;
  for (size_t c = 0; c < a.files.size(); ++c)
    for (const std::string& raw : kiln::data::split_documents(kiln::read_file(a.files[c]))) {
      const std::string text = kiln::data::clean_document(raw);
      if (text.empty() || !seen.insert(text).second) continue;
      std::vector<int64_t> ids{tok.special_id(Special::Cls)};
      for (uint32_t id : tok.encode(text)) {
        if (static_cast<int64_t>(ids.size()) == a.seq - 1) break;
        ids.push_back(id);
      }
      ids.push_back(tok.special_id(Special::Sep));
      examples.push_back({std::move(ids), static_cast<int64_t>(c)});
    }
  return examples;
}

// BertForSequenceClassification.
class Classifier : public kiln::nn::Module {
 public:
  Classifier(const kiln::nn::BertConfig& config, int64_t classes, kiln::Generator& gen)
      : bert(register_module("bert", std::make_shared<kiln::nn::Bert>(config, gen))),
        drop(register_module("dropout", std::make_shared<kiln::nn::Dropout>(config.hidden_dropout_prob, gen))),
        head(register_module("classifier", std::make_shared<kiln::nn::Linear>(
                                               kiln::nn::LinearOptions{config.hidden_size, classes}, gen))) {
    kiln::nn::init::normal_(head->weight, 0.0, config.initializer_range, gen);
    kiln::nn::init::zeros_(head->bias);
  }
  // Logits (B, classes) of padded rows ids (B, T) whose lengths are `lengths` (B).
  Tensor forward(const Tensor& ids, const Tensor& lengths) const {
    kiln::nn::AttentionInputs inputs;
    inputs.key_lengths = lengths;
    return head->forward(drop->forward(bert->forward(ids, {}, &inputs).pooled));
  }

  std::shared_ptr<kiln::nn::Bert> bert;
  std::shared_ptr<kiln::nn::Dropout> drop;
  std::shared_ptr<kiln::nn::Linear> head;
};

// Examples order[first .. first + n) as padded ids, their lengths and labels.
std::tuple<Tensor, Tensor, Tensor> batch_of(const std::vector<Example>& examples, const std::vector<int64_t>& order,
                                            size_t first, size_t n, int64_t pad) {
  size_t longest = 0;
  for (size_t i = first; i < first + n; ++i) longest = std::max(longest, examples[order[i]].ids.size());
  std::vector<int64_t> ids, lengths, labels;
  for (size_t i = first; i < first + n; ++i) {
    const Example& e = examples[order[i]];
    ids.insert(ids.end(), e.ids.begin(), e.ids.end());
    ids.insert(ids.end(), longest - e.ids.size(), pad);
    lengths.push_back(static_cast<int64_t>(e.ids.size()));
    labels.push_back(e.label);
  }
  return {kiln::tensor(ids).view({static_cast<int64_t>(n), static_cast<int64_t>(longest)}), kiln::tensor(lengths),
          kiln::tensor(labels)};
}

int run(const Args& a) {
  KILN_CHECK(a.files.size() >= 2, "[classify] needs two files or more (one class each), got {}", a.files.size());
  KILN_CHECK(a.scratch || !a.model.empty(), "[classify] --model (pretrain's BERT directory) or --scratch");
  kiln::data::Tokenizer tok(a.tokenizer);
  kiln::nn::BertConfig config;
  if (a.scratch) {
    config = {.vocab_size = static_cast<int64_t>(tok.vocab_size()), .hidden_size = a.channels,
              .num_hidden_layers = a.layers, .num_attention_heads = a.heads, .intermediate_size = 4 * a.channels,
              .max_position_embeddings = a.seq, .pad_token_id = tok.special_id(Special::Pad)};
  } else {
    config = kiln::nn::bert::from_hf_config(kiln::read_file(a.model + "/config.json"));
    KILN_CHECK(config.vocab_size == static_cast<int64_t>(tok.vocab_size()),
               "[classify] {} has a vocabulary of {}, the tokenizer {} one of {}", a.model, config.vocab_size,
               a.tokenizer, tok.vocab_size());
  }
  KILN_CHECK(a.seq <= config.max_position_embeddings, "[classify] --seq {} is past the model's {} positions", a.seq,
             config.max_position_embeddings);
  kiln::Generator gen(a.seed);
  const auto classes = static_cast<int64_t>(a.files.size());
  Classifier model(config, classes, gen);
  if (!a.scratch)
    model.bert->load_state_dict(
        kiln::nn::bert::from_hf(kiln::load_safetensors(a.model + "/model.safetensors").tensors, config));

  const std::vector<Example> examples = read_examples(a, tok);
  const std::vector<int64_t> shuffled = kiln::data::shuffled_order(static_cast<int64_t>(examples.size()), a.seed, 0);
  const auto n_held = static_cast<size_t>(a.held_out * static_cast<double>(examples.size()));
  const std::vector<int64_t> held(shuffled.begin(), shuffled.begin() + static_cast<std::ptrdiff_t>(n_held));
  const std::vector<int64_t> train(shuffled.begin() + static_cast<std::ptrdiff_t>(n_held), shuffled.end());
  KILN_CHECK(!held.empty() && train.size() >= static_cast<size_t>(a.batch),
             "[classify] {} examples are too few for a held-out share of {} and batches of {}", examples.size(),
             a.held_out, a.batch);
  std::vector<int64_t> held_counts(static_cast<size_t>(classes), 0);
  for (int64_t i : held) ++held_counts[static_cast<size_t>(examples[i].label)];
  const double majority =
      static_cast<double>(*std::max_element(held_counts.begin(), held_counts.end())) / static_cast<double>(held.size());
  fmt::print("{} classes, {} examples: {} to train on, {} held out (majority class {:.3f}); {} BERT, {:.2f}M "
             "parameters\n",
             classes, examples.size(), train.size(), held.size(), majority, a.scratch ? "a fresh" : "a pre-trained",
             static_cast<double>(model.num_parameters()) / 1e6);

  const int64_t pad = tok.special_id(Special::Pad);
  auto accuracy = [&] {
    kiln::NoGradGuard no_grad;
    model.eval();
    int64_t right = 0;
    for (size_t first = 0; first < held.size(); first += static_cast<size_t>(a.batch)) {
      const size_t n = std::min(held.size() - first, static_cast<size_t>(a.batch));
      auto [ids, lengths, labels] = batch_of(examples, held, first, n, pad);
      right += kiln::sum(kiln::argmax(model.forward(ids, lengths), -1) == labels).item<int64_t>();
    }
    model.train();
    return static_cast<double>(right) / static_cast<double>(held.size());
  };

  kiln::optim::AdamW opt(kiln::optim::decay_groups(model.named_parameters(), a.weight_decay), {.lr = a.lr});
  const int64_t steps_per_epoch = static_cast<int64_t>(train.size()) / a.batch, steps = a.epochs * steps_per_epoch;
  // BERT's fine-tuning schedule: a tenth of the steps warming up, then linear decay to zero.
  const kiln::optim::LRSchedule schedule{a.lr, 0.0, steps / 10, steps, kiln::optim::LRSchedule::Decay::Linear};
  fs::create_directories(a.out);
  std::ofstream metrics(a.out + "/metrics.jsonl");
  const double before = accuracy();
  fmt::print("held-out accuracy before fine-tuning {:.3f}\n", before);
  const auto start = std::chrono::steady_clock::now();
  int64_t step = 0;
  for (int64_t epoch = 1; epoch <= a.epochs; ++epoch) {
    const std::vector<int64_t> order = kiln::data::shuffled_order(static_cast<int64_t>(train.size()), a.seed,
                                                                  static_cast<uint64_t>(epoch));
    std::vector<int64_t> epoch_rows(order.size());
    for (size_t i = 0; i < order.size(); ++i) epoch_rows[i] = train[static_cast<size_t>(order[i])];
    double epoch_loss = 0;
    for (int64_t b = 0; b < steps_per_epoch; ++b, ++step) {
      auto [ids, lengths, labels] =
          batch_of(examples, epoch_rows, static_cast<size_t>(b * a.batch), static_cast<size_t>(a.batch), pad);
      opt.set_lr(schedule.at(step));
      opt.zero_grad();
      Tensor loss = kiln::cross_entropy(model.forward(ids, lengths), labels);
      loss.backward();
      kiln::optim::clip_grad_norm(model.parameters(), 1.0);
      opt.step();
      const double l = loss.item<double>();
      epoch_loss += l / static_cast<double>(steps_per_epoch);
      metrics << nlohmann::json{{"step", step + 1}, {"train_loss", l}}.dump() << '\n';
      if ((step + 1) % a.log_every == 0) {
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        fmt::print("epoch {} step {:5d}/{} | loss {:.4f} | {:.1f} examples/s | ETA {:.0f}s\n", epoch, step + 1, steps, l,
                   static_cast<double>((step + 1) * a.batch) / seconds,
                   seconds / static_cast<double>(step + 1) * static_cast<double>(steps - step - 1));
        std::fflush(stdout);
      }
    }
    const double held_accuracy = accuracy();
    metrics << nlohmann::json{{"step", step}, {"epoch", epoch}, {"epoch_loss", epoch_loss},
                              {"held_out_accuracy", held_accuracy}, {"majority", majority}}
                   .dump()
            << '\n'
            << std::flush;
    fmt::print("epoch {} | mean loss {:.4f} | held-out accuracy {:.3f} (majority class {:.3f})\n", epoch, epoch_loss,
               held_accuracy, majority);
  }

  // BertForSequenceClassification: the encoder and pooler under "bert.", the head as "classifier".
  kiln::NoGradGuard no_grad;
  std::map<std::string, Tensor> weights;
  for (const auto& [name, t] : kiln::nn::bert::to_hf(model.bert->state_dict()))
    if (name.rfind("cls.", 0) != 0) weights[name] = t;
  weights["classifier.weight"] = model.head->weight;
  weights["classifier.bias"] = model.head->bias;
  const fs::path dir = fs::path(a.out) / "model", partial = fs::path(a.out) / "model.partial";
  fs::remove_all(partial);
  fs::create_directories(partial);
  kiln::save_safetensors((partial / "model.safetensors").string(), weights, {{"format", "pt"}});
  nlohmann::json hf = nlohmann::json::parse(kiln::nn::bert::hf_config_json(config));
  hf["architectures"] = {"BertForSequenceClassification"};
  for (int64_t c = 0; c < classes; ++c) {
    hf["id2label"][std::to_string(c)] = fs::path(a.files[static_cast<size_t>(c)]).filename().string();
    hf["label2id"][fs::path(a.files[static_cast<size_t>(c)]).filename().string()] = c;
  }
  kiln::write_file_atomic((partial / "config.json").string(), hf.dump(2) + "\n");
  fs::remove_all(dir);
  fs::rename(partial, dir);
  fmt::print("saved {} (BertForSequenceClassification); metrics in {}/metrics.jsonl\n", dir.string(), a.out);
  if (!a.predictions.empty()) {
    model.eval();
    auto [ids, lengths, labels] = batch_of(examples, held, 0, held.size(), pad);
    kiln::save_safetensors(a.predictions, {{"input_ids", ids}, {"lengths", lengths}, {"labels", labels},
                                           {"logits", model.forward(ids, lengths)}});
    fmt::print("held-out predictions in {}\n", a.predictions);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Fine-tune pretrain's BERT to tell which fortune file a fortune comes from"};
  Args a;
  app.add_option("--model", a.model, "pretrain's BERT (a BertForPreTraining directory)");
  app.add_flag("--scratch", a.scratch, "start from random weights instead (of --layers, --channels, --heads)");
  app.add_option("--layers", a.layers, "--scratch: layers")->check(program::positive)->capture_default_str();
  app.add_option("--channels", a.channels, "--scratch: width (the MLP is 4 times it)")
      ->check(program::positive)->capture_default_str();
  app.add_option("--heads", a.heads, "--scratch: attention heads")->check(program::positive)->capture_default_str();
  app.add_option("--tokenizer", a.tokenizer, "the sentencepiece model the BERT was trained with")->required();
  app.add_option("--files", a.files, "text files, one class each (fortune files split at '%' lines)")
      ->capture_default_str();
  app.add_option("--out", a.out, "metrics and the fine-tuned model")->capture_default_str();
  app.add_option("--predictions", a.predictions, "writes the held-out examples (input_ids padded, lengths, labels) "
                 "and the fine-tuned model's logits here, as safetensors");
  app.add_option("--seq,-t", a.seq, "tokens per example, [CLS] and [SEP] included (longer ones are cut)")
      ->check(program::positive)
      ->capture_default_str();
  app.add_option("--batch,-b", a.batch, "examples per step")->check(program::positive)->capture_default_str();
  app.add_option("--epochs", a.epochs, "passes over the training examples")->check(program::positive)
      ->capture_default_str();
  app.add_option("--lr", a.lr, "peak learning rate (a tenth of the steps warming up, then linear decay)")
      ->check(program::positive)
      ->capture_default_str();
  app.add_option("--weight-decay", a.weight_decay, "AdamW weight decay on matrices")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--held-out", a.held_out, "share of the examples held out")
      ->check(program::in_range(0.05, 0.5, "a number in [0.05, 0.5]"))
      ->capture_default_str();
  app.add_option("--log-every", a.log_every, "steps between progress lines")->check(program::positive)
      ->capture_default_str();
  app.add_option("--seed", a.seed, "head initialization, split, order and dropout")->capture_default_str();
  if (auto code = program::parse(app, argc, argv)) return *code;
  return program::run("classify", [&] { return run(a); });
}
