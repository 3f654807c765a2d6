// pretrain: an encoder's or an encoder-decoder's pre-training on the token
// files of prepare_data, as windows of the token stream (documents separated
// by the tokenizer's end of text):
//   --model bert  BERT's masked LM (RoBERTa's way, no next-sentence pairs):
//                 each window of T - 2 tokens becomes [CLS] window [SEP],
//                 corrupted by data::mask_tokens; the loss is the masked-LM
//                 cross-entropy at the drawn positions, the metric the
//                 masked-token accuracy. Saved as BertForPreTraining.
//   --model t5    T5's span corruption (data::span_corruption, the
//                 tokenizer's sentinels): the encoder reads the window with
//                 its noise spans replaced by sentinels, the decoder writes
//                 the spans; the loss is the span loss, the metric the
//                 accuracy of the spans' tokens. Each validation prints a
//                 held-out window with the spans the model fills in (greedy).
//                 Saved as T5ForConditionalGeneration (v1.1: gated GELU, no
//                 head scaling).
//   --model glm   GLM's blank infilling (data::blank_spans, glm_layout):
//                 a GPT-2 under the prefix-LM mask with block positions;
//                 --glm-sentences and --glm-generation give shares of the
//                 rows to the [sMASK] (whole sentences) and [gMASK] (a span
//                 to the end) objectives;
//                 the loss and the metric over part B, each row's mean
//                 weighing the same (part B's length varies; THUDM's code
//                 averages a batch's tokens). Each validation prints
//                 a held-out blank filled in greedily. Saved in kiln's format.
// Validation corrupts the same windows the same way at every evaluation.
// Checkpoints (--checkpoint-every, in the model's own format with the
// optimizer and data state) resume exactly with --resume, at any layout. The
// model is written (model.safetensors and config.json) at the end.
// Under mpirun the ranks split into tensor-parallel (--tp: every model),
// pipeline (--pp: BERT and GLM) and data-parallel groups, as train's; each
// row is corrupted from a generator of (seed, step, the row's place in the
// whole batch), and every row weighs the same in the loss, so any layout
// takes the steps of one process. Samples are printed when one process
// holds the whole model.
//
//   mpirun -np 4 pretrain --model bert --tp 2 --pp 2 --microbatches 4 ...
//   pretrain --model bert --data data/fortunes --out out/bert --layers 4 --channels 192 --heads 6 --steps 600
//   pretrain --model t5 --data data/fortunes --out out/t5 --layers 3 --channels 192 --heads 6 --steps 600
//   pretrain --model glm --data data/fortunes --out out/glm --steps 600

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include <kiln/kiln.h>

#include "../program.h"

namespace fs = std::filesystem;
using kiln::Tensor;
using kiln::data::Special;

namespace {

struct Args {
  std::string model = "bert", data, out;  // out: out/<model> unless given
  int64_t layers = 4, channels = 192, heads = 6, seq = 128, batch = 16, steps = 600, warmup = 30;
  int64_t eval_every = 100, eval_batches = 20, log_every = 10, checkpoint_every = 200, microbatches = 1;
  int keep = 2, tp = 1, pp = 1;
  bool resume = false;
  double lr = 1e-3, weight_decay = 0.01, grad_clip = 1.0, dropout = 0.1;
  double glm_sentences = 0, glm_generation = 0;  // GLM's shares of rows with [sMASK] and [gMASK] objectives
  uint64_t seed = 1337;
};

// The accuracy of the argmax of logits (..., V) at the labels that are not -100.
double label_accuracy(const Tensor& logits, const Tensor& labels) {
  Tensor flat = logits.reshape({-1, logits.size(-1)}), target = labels.reshape({-1});
  Tensor chosen = target != -100;
  const double right = kiln::sum(kiln::logical_and(kiln::argmax(flat, -1) == target, chosen)).item<double>();
  return right / std::max(1.0, kiln::sum(chosen).item<double>());
}

// Each row of rows (B, T) on the CPU corrupted alone by corrupt(row (1, T),
// generator) from kiln::row_generator(seed, step, first_row + r), the rows'
// inputs and labels joined again.
template <typename Corrupt>
std::pair<Tensor, Tensor> corrupt_rows(const Tensor& rows, uint64_t seed, int64_t step, int64_t first_row,
                                       Corrupt corrupt) {
  std::vector<Tensor> inputs, labels;
  for (int64_t r = 0; r < rows.size(0); ++r) {
    kiln::Generator gen = kiln::row_generator(seed, step, first_row + r);
    auto one = corrupt(rows.narrow(0, r, 1).contiguous(), gen);
    inputs.push_back(one.inputs);
    labels.push_back(one.labels);
  }
  return {kiln::cat(inputs), kiln::cat(labels)};
}

// What one batch gives: its loss (the mean over its rows) and metric, the
// metric only on the ranks that see the logits (the last pipeline stage).
struct Figures {
  double loss = 0, metric = 0;
  bool has_metric = false;
};

// How a step runs: the layout, data parallelism's gradient averaging and the
// pipeline's micro-batches.
struct StepContext {
  const kiln::dist::ParallelState& layout;
  kiln::dist::DistributedDataParallel* ddp;
  kiln::dist::PipelineOptions pipeline;
};

// A pre-training objective: its model, its loss and metric on windows of the
// token stream, and how the model is saved.
class Objective {
 public:
  virtual ~Objective() = default;
  virtual kiln::nn::ParallelModel& model() = 0;
  virtual const char* name() const = 0;
  virtual const char* metric() const = 0;
  // Tokens of the stream per row.
  virtual int64_t window(int64_t seq) const = 0;
  // The figures of window (B, T), row r corrupted from kiln::row_generator(seed,
  // step, first_row + r); training, the gradients of the loss accumulate.
  virtual Figures run(const Tensor& window, int64_t step, int64_t first_row, bool train, const StepContext& ctx) = 0;
  // What the model makes of one held-out window, for the progress output (empty: nothing).
  virtual std::string sample(const Tensor&) const { return ""; }
  // Writes the whole model's weights (full_state_dict's names) as
  // model.safetensors with config.json into dir; load reads them back (this rank's share).
  virtual void save(const std::map<std::string, Tensor>& weights, const fs::path& dir) const = 0;
  virtual void load(const std::string& dir) = 0;
  virtual const char* format() const = 0;
};

// An objective whose model runs in pipeline stages: a batch's token ids,
// labels and attention inputs go through dist's schedules, and the last
// stage's loss and metric come from the logits.
class StagedObjective : public Objective {
 public:
  Figures run(const Tensor& window, int64_t step, int64_t first_row, bool train, const StepContext& ctx) override {
    const auto& model = dynamic_cast<const kiln::nn::StagedModel&>(this->model());
    Batch b = batch(window, step, first_row);
    Figures f;
    kiln::dist::PipelineOptions options = ctx.pipeline;
    options.loss = [&](const Tensor& hidden, const Tensor& labels) {
      auto [loss, metric] = loss_and_metric(model.logits_from_hidden(hidden), labels);
      f.metric += metric / static_cast<double>(options.microbatches);
      return loss;
    };
    const kiln::nn::AttentionInputs* inputs = b.has_inputs ? &b.inputs : nullptr;
    f.loss = train ? kiln::dist::pipeline_train_step(model, ctx.layout, b.ids, b.labels, options, ctx.ddp, inputs)
                   : kiln::dist::pipeline_eval_loss(model, ctx.layout, b.ids, b.labels, options, inputs);
    f.has_metric = model.is_last_stage();
    return f;
  }

 protected:
  struct Batch {
    Tensor ids, labels;
    kiln::nn::AttentionInputs inputs;
    bool has_inputs = false;
  };
  // The corrupted rows of window, with what their attention needs.
  virtual Batch batch(const Tensor& window, int64_t step, int64_t first_row) const = 0;
  // The loss (each row weighing the same) and metric of logits (B, T, V) against labels (-100: none).
  virtual std::pair<Tensor, double> loss_and_metric(const Tensor& logits, const Tensor& labels) const = 0;
};

class MaskedLM : public StagedObjective {
 public:
  MaskedLM(const Args& a, const kiln::data::Tokenizer& tok, kiln::Generator& gen,
           std::shared_ptr<const kiln::nn::LayerFactory> layout)
      : tok_(tok),
        seed_(a.seed),
        config_{.vocab_size = static_cast<int64_t>(tok.vocab_size()), .hidden_size = a.channels,
                .num_hidden_layers = a.layers, .num_attention_heads = a.heads, .intermediate_size = 4 * a.channels,
                .max_position_embeddings = a.seq, .pad_token_id = tok.special_id(Special::Pad),
                .hidden_dropout_prob = a.dropout},
        model_(config_, gen, kiln::kFloat32, kiln::kCPU, std::move(layout)),
        options_{.mask_id = tok.special_id(Special::Mask), .vocab_size = config_.vocab_size,
                 .never_mask = {tok.special_id(Special::Cls), tok.special_id(Special::Sep), tok.special_id(Special::Pad)}} {}
  kiln::nn::ParallelModel& model() override { return model_; }
  const char* name() const override { return "bert"; }
  const char* metric() const override { return "masked accuracy"; }
  int64_t window(int64_t seq) const override { return seq - 2; }
  void save(const std::map<std::string, Tensor>& weights, const fs::path& dir) const override {
    kiln::save_safetensors((dir / "model.safetensors").string(), kiln::nn::bert::to_hf(weights), {{"format", "pt"}});
    kiln::write_file_atomic((dir / "config.json").string(), kiln::nn::bert::hf_config_json(config_));
  }
  void load(const std::string& dir) override {
    model_.load_full_state_dict(
        kiln::nn::bert::from_hf(kiln::load_safetensors(dir + "/model.safetensors").tensors, config_));
  }
  const char* format() const override { return "BertForPreTraining"; }

 protected:
  // [CLS] window [SEP], masked.
  Batch batch(const Tensor& window, int64_t step, int64_t first_row) const override {
    const int64_t B = window.size(0);
    auto column = [&](Special s) { return kiln::full({B, 1}, static_cast<int64_t>(tok_.special_id(s)), kiln::kInt64); };
    Tensor rows = kiln::cat({column(Special::Cls), window.to(kiln::kCPU), column(Special::Sep)}, 1);
    auto [ids, labels] = corrupt_rows(rows, seed_, step, first_row, [&](const Tensor& row, kiln::Generator& gen) {
      return kiln::data::mask_tokens(row, {}, options_, gen);
    });
    return {ids, labels, {}, false};
  }
  // Every row holds as many masked tokens: the mean over them weighs rows alike.
  std::pair<Tensor, double> loss_and_metric(const Tensor& logits, const Tensor& labels) const override {
    return {kiln::cross_entropy(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1})),
            label_accuracy(logits, labels)};
  }

 private:
  const kiln::data::Tokenizer& tok_;
  uint64_t seed_;
  kiln::nn::BertConfig config_;
  kiln::nn::Bert model_;
  kiln::data::MaskingOptions options_;
};

class SpanCorruption : public Objective {
 public:
  SpanCorruption(const Args& a, const kiln::data::Tokenizer& tok, kiln::Generator& gen,
                 std::shared_ptr<const kiln::nn::LayerFactory> layout)
      : tok_(tok),
        seed_(a.seed),
        config_{.vocab_size = static_cast<int64_t>(tok.vocab_size()), .d_model = a.channels,
                .d_kv = a.channels / a.heads, .d_ff = 2 * a.channels, .num_layers = a.layers, .num_heads = a.heads,
                .dropout_rate = a.dropout, .feed_forward_proj = "gated-gelu", .tie_word_embeddings = false,
                .scale_decoder_outputs = false, .pad_token_id = tok.special_id(Special::Pad),
                .eos_token_id = tok.eos_id(), .decoder_start_token_id = tok.special_id(Special::Pad)},
        model_(config_, gen, kiln::kFloat32, kiln::kCPU, std::move(layout)),
        options_{.eos_id = static_cast<int64_t>(tok.eos_id())} {
    for (int i = 0; i < tok.sentinels(); ++i) options_.sentinel_ids.push_back(tok.sentinel_id(i));
  }
  kiln::nn::ParallelModel& model() override { return model_; }
  const char* name() const override { return "t5"; }
  const char* metric() const override { return "span accuracy"; }
  int64_t window(int64_t seq) const override { return seq; }
  // Every row's spans hold as many tokens: the mean over them weighs rows alike.
  Figures run(const Tensor& window, int64_t step, int64_t first_row, bool train, const StepContext&) override {
    auto [inputs, labels] = corrupt(window, step, first_row);
    Tensor logits = model_.decode(model_.decoder_inputs(labels), model_.encode(inputs));
    Tensor loss = kiln::cross_entropy(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1}));
    if (train) loss.backward();
    return {loss.item<double>(), label_accuracy(logits, labels), true};
  }
  std::string sample(const Tensor& window) const override {
    auto [inputs, labels] = corrupt(window.narrow(0, 0, 1), -1, 0);
    const std::vector<int64_t> fills =
        kiln::nn::generate(model_, inputs, {}, {.max_new_tokens = labels.size(1)})[0];
    auto text = [&](const Tensor& row) {
      std::vector<uint32_t> ids;
      for (int64_t t = 0; t < row.size(0); ++t) ids.push_back(static_cast<uint32_t>(row[t].item<int64_t>()));
      return tok_.decode(ids);
    };
    std::vector<uint32_t> fill_ids(fills.begin(), fills.end());
    return fmt::format("input: {}\n  spans: {}\n  model: {}", text(inputs[0]), text(labels[0]), tok_.decode(fill_ids));
  }
  void save(const std::map<std::string, Tensor>& weights, const fs::path& dir) const override {
    kiln::save_safetensors((dir / "model.safetensors").string(), kiln::nn::t5::to_hf(weights, config_),
                           {{"format", "pt"}});
    kiln::write_file_atomic((dir / "config.json").string(), kiln::nn::t5::hf_config_json(config_));
  }
  void load(const std::string& dir) override { kiln::nn::t5::read_weights(model_, dir); }
  const char* format() const override { return "T5ForConditionalGeneration"; }

 private:
  std::pair<Tensor, Tensor> corrupt(const Tensor& window, int64_t step, int64_t first_row) const {
    return corrupt_rows(window.to(kiln::kCPU), seed_, step, first_row, [&](const Tensor& row, kiln::Generator& gen) {
      return kiln::data::span_corruption(row, options_, gen);
    });
  }

  const kiln::data::Tokenizer& tok_;
  uint64_t seed_;
  kiln::nn::T5Config config_;
  kiln::nn::T5 model_;
  kiln::data::SpanCorruptionOptions options_;  // the tokenizer's sentinels and EOS
};

class BlankInfilling : public StagedObjective {
 public:
  BlankInfilling(const Args& a, const kiln::data::Tokenizer& tok, kiln::Generator& gen,
                 std::shared_ptr<const kiln::nn::LayerFactory> layout)
      : tok_(tok), seed_(a.seed), spec_(glm_spec(a, tok)), model_(spec_, gen, kiln::kFloat32, kiln::kCPU, std::move(layout)),
        options_{.mask_id = tok.special_id(Special::Mask), .start_id = tok.special_id(Special::StartOfPiece),
                 .end_id = tok.special_id(Special::EndOfPiece),
                 .max_span = std::min<int64_t>(40, a.seq / 2)},  // block positions stay inside the table
        sentence_prob_(a.glm_sentences),
        generation_prob_(a.glm_generation) {
    // THUDM's sentence ends: a piece holding . ? ! ; : ... or a newline (or their CJK forms).
    for (int id = 0; id < tok.vocab_size(); ++id) {
      const std::string p = tok.piece(static_cast<uint32_t>(id));
      bool end = false;
      for (const char* mark : {".", "?", "!", ";", ":", "\n", "\u2026", "\u3002", "\uff1f", "\uff01", "\uff1b"})
        end = end || p.find(mark) != std::string::npos;
      ends_sentence_.push_back(end);
    }
  }
  kiln::nn::ParallelModel& model() override { return model_; }
  const char* name() const override { return "glm"; }
  const char* metric() const override { return "span accuracy"; }
  int64_t window(int64_t seq) const override { return seq; }
  // The first blank of the first row, filled greedily after part A.
  std::string sample(const Tensor& window) const override {
    const Tensor row = window.narrow(0, 0, 1).to(kiln::kCPU).contiguous();
    const int64_t* t = row.data_ptr<int64_t>();
    std::vector<int64_t> tokens(t, t + row.size(1));
    kiln::Generator gen = kiln::row_generator(seed_, -1, 0);
    const auto span = kiln::data::blank_spans(static_cast<int64_t>(tokens.size()), options_, gen).front();
    kiln::data::GlmExample ex = kiln::data::glm_layout(tokens, {span}, options_);
    ex.tokens.resize(static_cast<size_t>(ex.prefix) + 1);  // part A and [START]
    ex.positions.resize(ex.tokens.size());
    ex.block_positions.resize(ex.tokens.size());
    std::vector<uint32_t> fill;
    for (int64_t i = 0; i < span.second - span.first + 8 && ex.block_positions.back() < spec_.max_positions - 1; ++i) {
      auto as_row = [](const std::vector<int64_t>& v) { return kiln::tensor(v).view({1, static_cast<int64_t>(v.size())}); };
      kiln::nn::AttentionInputs in{.prefix_lengths = kiln::tensor(std::vector<int64_t>{ex.prefix}),
                                   .positions = as_row(ex.positions), .block_positions = as_row(ex.block_positions)};
      Tensor logits = model_.forward(as_row(ex.tokens), nullptr, &in);
      const int64_t next = kiln::argmax(logits.select(1, logits.size(1) - 1).reshape({-1})).item<int64_t>();
      if (next == options_.end_id) break;
      fill.push_back(static_cast<uint32_t>(next));
      ex.tokens.push_back(next);
      ex.positions.push_back(ex.positions.back());
      ex.block_positions.push_back(ex.block_positions.back() + 1);
    }
    std::vector<uint32_t> part_a(ex.tokens.begin(), ex.tokens.begin() + ex.prefix), blank(tokens.begin() + span.first,
                                                                                          tokens.begin() + span.second);
    return fmt::format("input: {}\n  blank: {}\n  model: {}", tok_.decode(part_a), tok_.decode(blank), tok_.decode(fill));
  }
  void save(const std::map<std::string, Tensor>& weights, const fs::path& dir) const override {
    kiln::save_safetensors((dir / "model.safetensors").string(), kiln::nn::hf::to_weights(spec_, weights),
                           {{"format", "pt"}});
    kiln::write_file_atomic((dir / "config.json").string(), kiln::nn::hf::config_json(spec_));
  }
  void load(const std::string& dir) override { kiln::nn::hf::load_weights(model_, kiln::nn::hf::read_weights(dir)); }
  const char* format() const override { return "kiln's format (GLM has no Hugging Face class)"; }

 protected:
  // Each row's mean over its part B (whose length varies), so that every row
  // weighs the same and any split of the batch takes one process's steps
  // (THUDM's code averages a batch's tokens).
  std::pair<Tensor, double> loss_and_metric(const Tensor& logits, const Tensor& labels) const override {
    const int64_t B = logits.size(0), L = logits.size(1);
    Tensor per_token = kiln::cross_entropy(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1}), -100,
                                           kiln::Reduction::None).view({B, L});
    Tensor labelled = (labels != -100).to(per_token.dtype());
    Tensor counts = kiln::sum(labelled, {1});
    Tensor right = kiln::sum((kiln::argmax(logits, -1) == labels).to(per_token.dtype()) * labelled, {1});
    return {kiln::mean(kiln::sum(per_token, {1}) / counts), kiln::mean(right / counts).item<double>()};
  }

 private:
  // GPT-2's blocks under the prefix-LM mask, with block positions.
  static kiln::nn::ModelSpec glm_spec(const Args& a, const kiln::data::Tokenizer& tok) {
    kiln::nn::ModelSpec spec = kiln::nn::GPTConfig{.vocab_size = tok.vocab_size(), .block_size = a.seq,
                                                   .n_layer = a.layers, .n_head = a.heads, .n_embd = a.channels,
                                                   .dropout = a.dropout}
                                   .spec();
    spec.family = "";
    spec.block.attention.mask = kiln::nn::AttentionMask::PrefixLM;
    spec.block_positions = true;
    return spec;
  }

  // One row's layout under the objective drawn for it: gap sentences with
  // [sMASK], generation with [gMASK], else blank infilling with [MASK]
  // (THUDM draws one objective per batch; a draw per row keeps replicas
  // exact). A row without a sentence that fits is blank-filled.
  kiln::data::GlmExample corrupt(const std::vector<int64_t>& tokens, kiln::Generator& gen) const {
    const auto T = static_cast<int64_t>(tokens.size());
    const double u = sentence_prob_ + generation_prob_ > 0 ? kiln::rand({1}, gen, kiln::kFloat64).item<double>() : 1.0;
    kiln::data::BlankInfillingOptions o = options_;
    if (u < sentence_prob_) {
      o.mask_id = tok_.special_id(Special::SMask);
      const auto spans = kiln::data::sentence_spans(tokens, ends_sentence_, tok_.eos_id(), o, gen);
      if (!spans.empty()) return kiln::data::glm_layout(tokens, spans, o);
      o.mask_id = options_.mask_id;
    } else if (u < sentence_prob_ + generation_prob_) {
      o.mask_id = tok_.special_id(Special::GMask);
      return kiln::data::glm_layout(tokens, {kiln::data::generation_span(T, o, gen)}, o);
    }
    return kiln::data::glm_layout(tokens, kiln::data::blank_spans(T, o, gen), o);
  }

  // Each row laid out with its own spans, the rows padded to the longest (labels -100).
  Batch batch(const Tensor& window, int64_t step, int64_t first_row) const override {
    const Tensor rows = window.to(kiln::kCPU).contiguous();
    const int64_t B = rows.size(0), T = rows.size(1);
    std::vector<kiln::data::GlmExample> examples;
    size_t longest = 0;
    for (int64_t r = 0; r < B; ++r) {
      const int64_t* t = rows.data_ptr<int64_t>() + r * T;
      std::vector<int64_t> tokens(t, t + T);
      kiln::Generator gen = kiln::row_generator(seed_, step, first_row + r);
      examples.push_back(corrupt(tokens, gen));
      longest = std::max(longest, examples.back().tokens.size());
    }
    std::vector<int64_t> ids, labels, positions, blocks, prefixes;
    for (const auto& ex : examples) {
      const size_t pad = longest - ex.tokens.size();
      auto append = [&](std::vector<int64_t>& to, const std::vector<int64_t>& from, int64_t fill) {
        to.insert(to.end(), from.begin(), from.end());
        to.insert(to.end(), pad, fill);
      };
      append(ids, ex.tokens, tok_.special_id(Special::Pad));
      append(labels, ex.labels, -100);
      append(positions, ex.positions, 0);
      append(blocks, ex.block_positions, 0);
      prefixes.push_back(ex.prefix);
    }
    const auto L = static_cast<int64_t>(longest);
    Batch b{kiln::tensor(ids).view({B, L}), kiln::tensor(labels).view({B, L}), {}, true};
    b.inputs.prefix_lengths = kiln::tensor(prefixes);
    b.inputs.positions = kiln::tensor(positions).view({B, L});
    b.inputs.block_positions = kiln::tensor(blocks).view({B, L});
    return b;
  }

  const kiln::data::Tokenizer& tok_;
  uint64_t seed_;
  kiln::nn::ModelSpec spec_;
  kiln::nn::TransformerLM model_;
  kiln::data::BlankInfillingOptions options_;
  double sentence_prob_, generation_prob_;
  std::vector<bool> ends_sentence_;  // by token id
};

std::unique_ptr<Objective> make_objective(const Args& a, const kiln::data::Tokenizer& tok, kiln::Generator& gen,
                                          std::shared_ptr<const kiln::nn::LayerFactory> layout) {
  if (a.model == "t5") return std::make_unique<SpanCorruption>(a, tok, gen, std::move(layout));
  if (a.model == "glm") return std::make_unique<BlankInfilling>(a, tok, gen, std::move(layout));
  return std::make_unique<MaskedLM>(a, tok, gen, std::move(layout));
}

int run(const Args& a) {
  KILN_CHECK(a.glm_sentences + a.glm_generation <= 1, "[pretrain] --glm-sentences {} and --glm-generation {} share "
             "the rows: they add up to at most 1", a.glm_sentences, a.glm_generation);
  KILN_CHECK(a.model != "t5" || a.pp == 1, "[pretrain] --pp {}: T5 has no pipeline stages yet (an encoder-decoder "
             "needs stages of both stacks); use --tp and data parallelism", a.pp);
  KILN_CHECK(a.batch % a.microbatches == 0, "[pretrain] --microbatches {} must divide --batch {}", a.microbatches,
             a.batch);
  // Under mpirun the ranks split into tensor-, pipeline- and data-parallel
  // groups (Megatron's order); world rank 0 prints, logs and saves.
  auto world = kiln::dist::mpi_world();
  const int ranks = world->size();
  const bool lead = world->rank() == 0;
  KILN_CHECK(ranks % (a.tp * a.pp) == 0, "[pretrain] {} ranks do not split into --tp {} x --pp {}", ranks, a.tp, a.pp);
  kiln::dist::ParallelState layout(world, a.tp, a.pp, ranks / (a.tp * a.pp));
  const int dp = layout.dp(), dp_rank = layout.dp_rank();
  kiln::data::Tokenizer tok(a.data + "/tokenizer.model");
  kiln::Generator gen(a.seed);
  std::unique_ptr<Objective> objective =
      make_objective(a, tok, gen, std::make_shared<kiln::dist::ModelParallel>(layout));
  kiln::nn::ParallelModel& model = objective->model();
  // Dropout masks differ between replicas, and agree within one (tensor-parallel ranks).
  const uint64_t rank_offset = static_cast<uint64_t>(dp_rank) << 40;
  gen.set_offset(gen.offset() + rank_offset);
  kiln::optim::AdamW opt(kiln::optim::decay_groups(model.named_parameters(), a.weight_decay), {.lr = a.lr});
  kiln::optim::LRSchedule schedule{a.lr, a.lr * 0.1, a.warmup, a.steps, kiln::optim::LRSchedule::Decay::Cosine};
  // --batch rows per replica; replica r reads its share of each whole batch.
  const int64_t window = objective->window(a.seq);
  kiln::data::DataLoader train({a.data + "/train.bin"}, {.batch_size = a.batch, .seq_len = window, .rank = dp_rank,
                                                         .world_size = dp, .shuffle = true, .seed = a.seed,
                                                         .vocab_size = tok.vocab_size()});
  kiln::data::DataLoader val({a.data + "/val.bin"}, {.batch_size = a.batch, .seq_len = window, .rank = dp_rank,
                                                     .world_size = dp, .vocab_size = tok.vocab_size()});
  // Checkpoints hold the whole model in its own format, the optimizer, the
  // data position and the dropout generator's: a resumed run takes the same
  // steps, at any layout.
  kiln::dist::TrainingState state;
  if (a.resume) {
    const std::string ckpt = kiln::dist::latest_checkpoint(a.out);
    KILN_CHECK(!ckpt.empty(), "[pretrain] --resume: no checkpoint in {}", a.out);
    kiln::dist::load_checkpoint(ckpt, model, [&](const std::string& dir) { objective->load(dir); }, opt, state);
    train.seek(state.loader);
    gen.set_offset(state.rng_offset + rank_offset);
    if (lead) fmt::print("resumed from {} at step {}\n", ckpt, state.step);
  }
  std::unique_ptr<kiln::dist::DistributedDataParallel> ddp;
  if (dp > 1) ddp = std::make_unique<kiln::dist::DistributedDataParallel>(model, layout.dp_group());
  const StepContext ctx{layout, ddp.get(), {.microbatches = a.microbatches}};
  // The loss's mean over the replicas, the metric's over the ranks that see it.
  auto mean_over_ranks = [&](const Figures& f) {
    Tensor t = kiln::tensor(std::vector<double>{f.loss, f.has_metric ? f.metric : 0.0, f.has_metric ? 1.0 : 0.0});
    world->all_reduce(t);
    return std::pair{t[0].item<double>() / ranks, t[1].item<double>() / t[2].item<double>()};
  };
  // The whole model's size: each weight counted on one rank.
  double counted = 0;
  for (const Tensor& p : kiln::dist::norm_parameters(model, layout)) counted += static_cast<double>(p.numel());
  Tensor size = kiln::full({1}, counted, kiln::kFloat64);
  world->all_reduce(size);
  if (lead)
    fmt::print("{}: {} layers, {} heads, {} channels, vocabulary {}, {:.2f}M parameters; {} steps of {} x {} x {} "
               "replicas{}\n", objective->name(), a.layers, a.heads, a.channels, tok.vocab_size(),
               size.item<double>() / dp / 1e6, a.steps, a.batch, a.seq, dp,
               a.tp * a.pp > 1 ? fmt::format(" (tp {} x pp {}, {} micro-batches)", a.tp, a.pp, a.microbatches) : "");
  std::ofstream metrics;
  if (lead) {
    fs::create_directories(a.out);
    metrics.open(a.out + "/metrics.jsonl", a.resume ? std::ios::app : std::ios::trunc);
  }
  // Samples decode on one process: only when it holds the whole model.
  const bool samples = lead && model.layout().whole_model();
  auto evaluate = [&] {
    kiln::NoGradGuard no_grad;
    model.eval();
    val.seek({});
    double loss = 0, metric = 0;
    std::string sample;
    const int64_t n = std::min(a.eval_batches, val.batches_per_epoch());
    for (int64_t i = 0; i < n; ++i) {  // every evaluation corrupts the same windows alike (step -1 - i)
      const Tensor batch = val.next().first;
      auto [l, m] = mean_over_ranks(objective->run(batch, -1 - i, dp_rank * a.batch, false, ctx));
      loss += l / static_cast<double>(n);
      metric += m / static_cast<double>(n);
      if (i == 0 && samples) sample = objective->sample(batch);
    }
    model.train();
    return std::tuple{loss, metric, sample};
  };
  const std::string metric_key = fmt::format("{}", objective->metric());
  std::string key = metric_key;
  std::replace(key.begin(), key.end(), ' ', '_');
  auto write_model = [&](const std::map<std::string, Tensor>& weights, const fs::path& dir) {
    objective->save(weights, dir);
  };
  const auto start = std::chrono::steady_clock::now();
  for (int64_t step = state.step; step < a.steps; ++step) {
    opt.set_lr(schedule.at(step));
    opt.zero_grad();
    const auto [loss, metric] = mean_over_ranks(objective->run(train.next().first, step, dp_rank * a.batch, true, ctx));
    if (ddp) ddp->finish();
    kiln::dist::sync_gradients(model, layout);
    const double norm = kiln::dist::clip_grad_norm(model, layout, a.grad_clip);
    KILN_CHECK(std::isfinite(loss) && std::isfinite(norm), "[pretrain] step {}: the loss is {} and the gradient norm "
               "{}: training stops before the update (the last checkpoint in {} precedes it)", step + 1, loss, norm,
               a.out);
    opt.step();
    const int64_t done = step + 1;
    nlohmann::json m = {{"step", done}, {"train_loss", loss}, {key, metric}, {"grad_norm", norm}};
    const bool validate = done % a.eval_every == 0 || done == a.steps;
    std::string sample;
    if (validate) std::tie(m["val_loss"], m["val_" + key], sample) = evaluate();
    if (lead && (done % a.log_every == 0 || validate || done == 1)) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      fmt::print("step {:5d}/{} | loss {:.4f} | {} {:.3f}{} | norm {:.3f} | {:.0f} tok/s | ETA {:.0f}s\n", done,
                 a.steps, loss, metric_key, metric,
                 validate ? fmt::format(" | val loss {:.4f} {} {:.3f}", m["val_loss"].get<double>(), metric_key,
                                        m["val_" + key].get<double>())
                          : "",
                 norm, static_cast<double>((done - state.step) * a.batch * a.seq * dp) / seconds,
                 seconds / static_cast<double>(done - state.step) * static_cast<double>(a.steps - done));
      if (!sample.empty()) fmt::print("  {}\n", sample);
      std::fflush(stdout);
    }
    if (lead) metrics << m.dump() << '\n' << std::flush;
    if (a.checkpoint_every > 0 && (done % a.checkpoint_every == 0 || done == a.steps)) {
      const kiln::dist::TrainingState now{done, train.position(), gen.offset() - rank_offset};
      const std::string path = kiln::dist::save_checkpoint(a.out, model, layout, write_model, opt, now, a.keep);
      if (lead) fmt::print("checkpoint: {}\n", path);
    }
  }
  const std::map<std::string, Tensor> weights = kiln::dist::full_state_dict(model, layout);
  if (!lead) return 0;
  // Written beside, then renamed into place: a reader never sees half a model.
  const fs::path final_dir = fs::path(a.out) / "model", partial = fs::path(a.out) / "model.partial";
  fs::remove_all(partial);
  fs::create_directories(partial);
  objective->save(weights, partial);
  fs::remove_all(final_dir);
  fs::rename(partial, final_dir);
  fmt::print("saved {} ({}); metrics in {}/metrics.jsonl\n", final_dir.string(), objective->format(), a.out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"BERT's masked-LM, T5's span-corruption or GLM's blank-infilling pre-training on prepare_data's "
               "token files"};
  Args a;
  app.add_option("--model", a.model, "bert (masked LM), t5 (span corruption) or glm (blank infilling)")
      ->check(CLI::IsMember({"bert", "t5", "glm"}))->capture_default_str();
  app.add_option("--data", a.data, "directory with train.bin, val.bin, tokenizer.model")->required();
  app.add_option("--out", a.out, "metrics and the saved model (default out/<model>)");
  app.add_option("--layers", a.layers, "layers")->check(program::positive)->capture_default_str();
  app.add_option("--channels", a.channels, "width (BERT's MLP is 4 times it, T5's gated one 2 times)")
      ->check(program::positive)
      ->capture_default_str();
  app.add_option("--heads", a.heads, "attention heads")->check(program::positive)->capture_default_str();
  app.add_option("--seq,-t", a.seq, "tokens per row (BERT: [CLS] and [SEP] included; T5: before corruption)")
      ->check(program::positive)
      ->capture_default_str();
  app.add_option("--batch,-b", a.batch, "rows per step and replica")->check(program::positive)->capture_default_str();
  app.add_option("--microbatches", a.microbatches, "micro-batches per step (pipelined with --pp)")
      ->check(program::positive)->capture_default_str();
  app.add_option("--tp", a.tp, "tensor-parallel ranks (heads and MLPs split)")->check(program::positive)
      ->capture_default_str();
  app.add_option("--pp", a.pp, "pipeline stages (layers split; BERT and GLM)")->check(program::positive)
      ->capture_default_str();
  app.add_option("--steps", a.steps, "optimizer steps")->check(program::positive)->capture_default_str();
  app.add_option("--warmup", a.warmup, "warmup steps")->check(program::non_negative)->capture_default_str();
  app.add_option("--lr", a.lr, "peak learning rate (cosine decay to a tenth)")
      ->check(program::positive)->capture_default_str();
  app.add_option("--weight-decay", a.weight_decay, "AdamW weight decay on matrices")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--grad-clip", a.grad_clip, "global norm clip")->check(program::non_negative)->capture_default_str();
  app.add_option("--dropout", a.dropout, "hidden dropout")->check(program::fraction)->capture_default_str();
  app.add_option("--glm-sentences", a.glm_sentences, "GLM: share of rows blanking whole sentences with [sMASK]")
      ->check(program::fraction)->capture_default_str();
  app.add_option("--glm-generation", a.glm_generation,
                 "GLM: share of rows blanking a span to the end with [gMASK] (the rest: [MASK] spans)")
      ->check(program::fraction)->capture_default_str();
  app.add_option("--eval-every", a.eval_every, "steps between validation runs")->check(program::positive)
      ->capture_default_str();
  app.add_option("--eval-batches", a.eval_batches, "batches per validation run")
      ->check(program::positive)->capture_default_str();
  app.add_option("--log-every", a.log_every, "steps between progress lines")->check(program::positive)
      ->capture_default_str();
  app.add_option("--seed", a.seed, "initialization, data order, corruption and dropout")->capture_default_str();
  app.add_option("--checkpoint-every", a.checkpoint_every, "steps between checkpoints in --out, 0 for none")
      ->check(program::non_negative)
      ->capture_default_str();
  app.add_option("--keep", a.keep, "checkpoints kept")->check(program::positive)->capture_default_str();
  app.add_flag("--resume", a.resume, "continue exactly from the latest checkpoint in --out");
  if (auto code = program::parse(app, argc, argv)) return *code;
  if (a.out.empty()) a.out = "out/" + a.model;
  return program::run("pretrain", [&] { return run(a); });
}
