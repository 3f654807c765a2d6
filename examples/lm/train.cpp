// train: the trainer of every causal language model (GPT-2, LLaMA, OPT, GPT-NeoX, BLOOM) in the
// spirit of llm.c's train_gpt2, on kiln.
//
//   train --data data/fortunes --layers 4 --channels 192 --heads 6 --seq 128 \
//         --batch 16 --steps 600 --lr 3e-3 --out out/fortunes
//   train --model llama --kv-heads 2 --data data/fortunes --out out/llama ...
//   train --model opt --data data/fortunes --out out/opt ...
//   train --model neox --data data/fortunes --out out/neox ...
//   train --model bloom --data data/fortunes --out out/bloom ...
//   train --data data/fortunes --out out/fortunes --resume    # continue exactly
//
// The data directory holds llm.c-layout token files (train.bin, val.bin) and,
// when prepare_data made them, tokenizer.model; or curate's mixture of
// sources (mixture.json, train-<source>.bin, val.bin), whose rows are drawn by
// the sources' weights (--mixture-weight NAME=W overrides one) and whose
// tokens seen per source are reported; llm.c's own GPT-2 token files
// train as they are (--vocab-size 50257, no samples without a tokenizer).
// Launched with mpirun, it trains in parallel: data parallel over the ranks
// by default, or Megatron-style tensor and pipeline parallel:
//   mpirun -np 4 train --data data/fortunes --out out/dp4 ...
//   mpirun -np 8 train --tp 2 --pp 2 --grad-accum 4 --schedule 1f1b ...   (dp = 2)
// Checkpoints hold the whole model whatever the layout: a run saved at
// --tp 2 --pp 2 resumes on one process, and the other way round.
// Prints a progress line (step, loss, lr, tokens/s, MFU on a GPU, ETA),
// evaluates on val.bin, samples text, writes metrics as JSON lines (plot them
// with scripts/plot) and checkpoints (kiln/dist/checkpoint.h).

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <nlohmann/json.hpp>

#include <kiln/kiln.h>

#include "../lora_options.h"
#include "../program.h"

namespace fs = std::filesystem;
using kiln::Tensor;

namespace {

struct Args {
  std::string model = "gpt2", data = "data/fortunes", out = "out/gpt2", init_from;
  int depth = 0;       // a GPT-2 size (6, 12, 24, 36, 48); 0: layers/channels/heads below
  std::string preset;  // a Llama size (llama2-7b, llama3-8b, ...); empty: layers/channels/heads below
  int64_t layers = 4, channels = 192, heads = 6, kv_heads = 0, block_size = 0, mlp_hidden = 0;
  double rope_theta = 10000.0;
  bool recompute = false;
  double z_loss = 0;  // PaLM's z-loss coefficient
  LoraArgs lora;
  // Mixture of experts (0 experts: dense MLPs).
  int64_t moe_experts = 0, moe_top_k = 2, moe_every = 1;
  double capacity_factor = 0, moe_aux_loss_coeff = 1e-2, moe_z_loss_coeff = 0;
  bool moe_pre_softmax = false;
  std::string moe_drop_policy = "probs";
  int64_t batch = 16, seq = 128, grad_accum = 1, steps = 600, warmup = 30;
  double lr = 3e-3, min_lr_ratio = 0.1, weight_decay = 0.1, grad_clip = 1.0, dropout = 0.0;
  double beta1 = 0.9, beta2 = 0.95;
  std::string lr_schedule = "cosine", optimizer = "adamw", device = "cpu", dtype = "float32";
  int64_t eval_every = 100, eval_batches = 20, sample_every = 200, sample_tokens = 96, checkpoint_every = 200;
  int64_t log_every = 10;
  int64_t vocab_size = 50257;  // without a tokenizer.model (GPT-2's vocabulary)
  int keep = 2;
  int tp = 1, pp = 1, dp = 0, ep = 1;  // dp 0: the ranks left over by tp and pp
  bool zero1 = false, sequence_parallel = false;
  std::string pipeline = "1f1b";
  uint64_t seed = 1337;
  bool resume = false, shuffle = true;
  std::vector<std::string> mixture_weights;  // NAME=WEIGHT overrides of mixture.json
  int64_t skip_nonfinite = 0;  // steps with a non-finite loss or gradient norm skipped before training stops
};

std::unique_ptr<kiln::optim::Optimizer> make_optimizer(const Args& a, std::vector<kiln::optim::ParamGroup> groups) {
  if (a.optimizer == "adamw")
    return std::make_unique<kiln::optim::AdamW>(groups, kiln::optim::AdamWOptions{a.lr, a.beta1, a.beta2, 1e-8});
  if (a.optimizer == "lion")
    return std::make_unique<kiln::optim::Lion>(groups, kiln::optim::LionOptions{a.lr, a.beta1, a.beta2});
  if (a.optimizer == "sgd")
    return std::make_unique<kiln::optim::SGD>(groups, kiln::optim::SGDOptions{.lr = a.lr, .momentum = a.beta1});
  KILN_FAIL("[train] unknown optimizer '{}': use adamw, lion or sgd", a.optimizer);
}

// Cross-entropy of a unigram model (token frequencies of the training files,
// each weighted by its share of the rows, add-one smoothed) on val: the loss a
// model that ignores context would reach.
double unigram_baseline(const std::vector<std::pair<std::string, double>>& train, const kiln::data::TokenFile& val,
                        int64_t vocab) {
  std::vector<double> p(static_cast<size_t>(vocab));
  for (const auto& [file, weight] : train) {
    const kiln::data::TokenFile tokens(file);
    std::vector<double> counts(static_cast<size_t>(vocab), 1.0);
    for (int64_t i = 0; i < tokens.size(); ++i) counts[tokens[i]] += 1;
    const double total = static_cast<double>(tokens.size() + vocab);
    for (size_t t = 0; t < p.size(); ++t) p[t] += weight * counts[t] / total;
  }
  double nll = 0;
  for (int64_t i = 0; i < val.size(); ++i) nll -= std::log(p[val[i]]);
  return nll / static_cast<double>(val.size());
}

// The training batches: train.bin in order (shuffled windows), or, when the
// data directory holds curate's mixture.json, rows drawn from its sources by weight.
class TrainBatches {
 public:
  TrainBatches(const std::string& dir, const std::vector<std::pair<std::string, double>>& weights,
               const kiln::data::DataLoaderOptions& options) {
    if (fs::exists(dir + "/mixture.json")) {
      mixture_.emplace(kiln::data::read_mixture(dir, weights), options);
    } else {
      KILN_CHECK(weights.empty(), "[train] --mixture-weight: {} holds no mixture.json (curate writes one)", dir);
      plain_.emplace(std::vector<std::string>{dir + "/train.bin"}, options);
    }
  }
  std::pair<Tensor, Tensor> next() { return mixture_ ? mixture_->next() : plain_->next(); }
  kiln::data::LoaderPosition position() const { return mixture_ ? mixture_->position() : plain_->position(); }
  void seek(const kiln::data::LoaderPosition& p) { mixture_ ? mixture_->seek(p) : plain_->seek(p); }
  const kiln::data::MixtureLoader* mixture() const { return mixture_ ? &*mixture_ : nullptr; }
  // The training files and each one's share of the rows.
  std::vector<std::pair<std::string, double>> files(const std::string& dir) const {
    if (!mixture_) return {{dir + "/train.bin", 1.0}};
    std::vector<std::pair<std::string, double>> f;
    for (const auto& s : mixture_->sources()) f.emplace_back(s.file, s.weight);
    return f;
  }
  // " | tokens seen: NAME N, ..." for a mixture (every rank's), else "".
  std::string tokens_seen_line() const {
    if (!mixture_) return "";
    std::string line = " | tokens seen:";
    for (size_t s = 0; s < mixture_->sources().size(); ++s)
      line += fmt::format("{} {} {}", s ? "," : "", mixture_->sources()[s].name, mixture_->tokens_seen()[s]);
    return line;
  }
  // What the data line says of them.
  std::string describe(int64_t batch, int64_t seq, int64_t tokens_per_step, int64_t steps) const {
    if (!mixture_) return fmt::format("{} train batches of {} x {} per epoch", plain_->batches_per_epoch(), batch, seq);
    std::string line = fmt::format("a mixture of batches of {} x {}:", batch, seq);
    const std::vector<int64_t> windows = mixture_->windows();
    for (size_t s = 0; s < windows.size(); ++s) {
      const auto& source = mixture_->sources()[s];
      line += fmt::format("{} {} {:.1f}% ({:.2f} passes over its {} tokens in {} steps)", s ? "," : "", source.name,
                          100 * source.weight,
                          source.weight * static_cast<double>(tokens_per_step * steps) /
                              static_cast<double>(windows[s] * seq),
                          windows[s] * seq, steps);
    }
    return line;
  }

 private:
  std::optional<kiln::data::DataLoader> plain_;
  std::optional<kiln::data::MixtureLoader> mixture_;
};

// The model the arguments describe (its vocabulary at least the data's).
kiln::nn::ModelSpec model_spec(const Args& a, int64_t vocab) {
  kiln::nn::ModelSpec spec;
  const int64_t positions = a.block_size > 0 ? a.block_size : a.seq;
  if (!a.init_from.empty()) {
    spec = kiln::nn::hf::read_config(a.init_from);
  } else if (a.model == "gpt2") {
    spec = (a.depth > 0 ? kiln::nn::GPTConfig::gpt2(a.depth, vocab, a.block_size > 0 ? a.block_size : 1024)
                        : kiln::nn::GPTConfig{.vocab_size = vocab, .block_size = positions, .n_layer = a.layers,
                                              .n_head = a.heads, .n_embd = a.channels})
               .spec();
  } else if (a.model == "opt") {
    spec = kiln::nn::OPTConfig{.vocab_size = vocab, .hidden_size = a.channels, .num_hidden_layers = a.layers,
                               .ffn_dim = 4 * a.channels, .num_attention_heads = a.heads,
                               .max_position_embeddings = positions}
               .spec();
  } else if (a.model == "neox") {
    spec = kiln::nn::GPTNeoXConfig{.vocab_size = vocab, .hidden_size = a.channels, .num_hidden_layers = a.layers,
                                   .num_attention_heads = a.heads, .intermediate_size = 4 * a.channels,
                                   .max_position_embeddings = positions, .rotary_emb_base = a.rope_theta}
               .spec();
  } else if (a.model == "bloom") {
    spec = kiln::nn::BloomConfig{.vocab_size = vocab, .hidden_size = a.channels, .n_layer = a.layers,
                                 .n_head = a.heads, .seq_length = positions}
               .spec();
  } else {
    kiln::nn::LlamaConfig c = !a.preset.empty()
        ? kiln::nn::LlamaConfig::preset(a.preset)
        : kiln::nn::LlamaConfig{.hidden_size = a.channels,
                                .intermediate_size = a.mlp_hidden > 0 ? a.mlp_hidden
                                                                      : kiln::nn::MlpSpec::swiglu_hidden(a.channels),
                                .num_hidden_layers = a.layers, .num_attention_heads = a.heads,
                                .num_key_value_heads = a.kv_heads, .max_position_embeddings = positions,
                                .rope_theta = a.rope_theta};
    c.vocab_size = vocab;
    spec = c.spec();
  }
  spec.block.dropout = spec.embedding_dropout = a.dropout;
  spec.block.recompute = a.recompute;
  spec.z_loss = a.z_loss;
  if (a.moe_experts > 0) {
    spec.block.mlp.moe = kiln::nn::MoeSpec{
        .experts = a.moe_experts, .top_k = a.moe_top_k,
        .score = a.moe_pre_softmax ? kiln::nn::RouterScore::SoftmaxThenTopK : kiln::nn::RouterScore::TopKThenSoftmax,
        .capacity_factor = a.capacity_factor,
        .drop_policy = a.moe_drop_policy == "position" ? kiln::nn::DropPolicy::Position : kiln::nn::DropPolicy::Probs,
        .aux_loss_coeff = a.moe_aux_loss_coeff, .z_loss_coeff = a.moe_z_loss_coeff, .every = a.moe_every};
    spec.block.mlp.bias = false;  // experts have none
    // A Llama with Mixtral's experts is saved as Mixtral; other MoE models in
    // kiln's own format (kiln's names and config).
    spec.family = spec.family == "llama" && kiln::nn::mixtral_compatible(spec.block) ? "mixtral" : "";
  }
  if (a.dtype != "float32") spec.compute_dtype = a.dtype == "bfloat16" ? kiln::kBFloat16 : kiln::kFloat16;
  return spec;
}

double evaluate(const kiln::nn::TransformerLM& model, const kiln::dist::ParallelState& layout,
                kiln::data::DataLoader& val, int64_t batches) {
  val.seek({});
  double total = 0;
  int64_t n = std::min(batches, val.batches_per_epoch());
  for (int64_t i = 0; i < n; ++i) {
    auto [x, y] = val.next();
    total += kiln::dist::pipeline_eval_loss(model, layout, x, y);
  }
  return total / static_cast<double>(n);
}

// This rank's index among the ranks of its node (OpenMPI says; else the world rank).
int local_rank(const kiln::dist::ProcessGroup& world) {
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  return local ? std::atoi(local) : world.rank();
}

// fmt::print on the printing rank only.
template <typename... Args>
void say(bool lead, fmt::format_string<Args...> format, Args&&... args) {
  if (lead) fmt::print(format, std::forward<Args>(args)...);
}

std::string format_duration(double seconds) {
  auto s = static_cast<int64_t>(seconds);
  return s >= 3600 ? fmt::format("{}h{:02d}m", s / 3600, s % 3600 / 60) : fmt::format("{}m{:02d}s", s / 60, s % 60);
}

// What the MoE layers of every stage and replica did this step: the
// auxiliary losses per layer forward, the dropped share of the top-k
// choices, and each expert's share of them relative to an even one (1: balanced).
nlohmann::json moe_metrics(kiln::nn::TransformerLM& model, const kiln::dist::ParallelState& layout) {
  const kiln::nn::MoeStats s = model.moe_stats();
  const int64_t E = model.spec().block.mlp.moe->experts;
  std::vector<double> packed{s.aux_loss, s.z_loss, double(s.choices), double(s.dropped), double(s.forwards)};
  for (int64_t e = 0; e < E; ++e) packed.push_back(e < int64_t(s.expert_choices.size()) ? double(s.expert_choices[e]) : 0);
  Tensor total = kiln::tensor(packed, kiln::TensorOptions(kiln::kFloat64).device(model.parameters()[0].device()));
  layout.dp_group()->all_reduce(total, kiln::dist::ReduceOp::Sum);
  layout.pp_group()->all_reduce(total, kiln::dist::ReduceOp::Sum);
  // (The tensor-parallel ranks hold the same experts and tokens: no sum over them.)
  const Tensor host = total.to(kiln::kCPU);
  const double* t = host.data_ptr<double>();
  const double forwards = std::max(t[4], 1.0), choices = std::max(t[2], 1.0);
  std::vector<double> load;
  for (int64_t e = 0; e < E; ++e) load.push_back(t[5 + e] * double(E) / choices);
  return {{"moe_aux_loss", t[0] / forwards}, {"moe_z_loss", t[1] / forwards}, {"moe_dropped", t[3] / choices},
          {"moe_load", load}};
}

int run(const Args& a) {
  // Under mpirun the ranks split into tensor-, pipeline- and data-parallel
  // groups (Megatron's order); world rank 0 prints, logs, samples and
  // checkpoints. Every rank of a data-parallel replica reads the same batches.
  auto mpi = kiln::dist::mpi_world();
  const int ranks = mpi->size();
  const bool lead = mpi->rank() == 0;
  // One GPU per rank: "--device cuda" under mpirun takes the rank's local index.
  kiln::Device device(a.device);
  if (device.is_cuda() && a.device == "cuda" && ranks > 1) device.index = local_rank(*mpi) % kiln::cuda::device_count();
  // CUDA tensors travel over NCCL (its id over MPI), CPU tensors over MPI; one process needs neither.
  auto world = device.is_cuda() && ranks > 1 ? kiln::dist::nccl_world(device.index) : mpi;
  KILN_CHECK(ranks % (a.tp * a.pp) == 0, "[train] {} ranks do not split into --tp {} x --pp {}", ranks, a.tp, a.pp);
  KILN_CHECK(a.ep == 1 || (a.moe_experts > 0 && !a.zero1), "[train] --ep {} shares out experts: it needs "
             "--moe-experts, and not --zero1", a.ep);
  kiln::dist::ParallelState layout(world, a.tp, a.pp, a.dp > 0 ? a.dp : ranks / (a.tp * a.pp), a.ep);
  const int dp = layout.dp(), dp_rank = layout.dp_rank();
  // Dropout masks differ between replicas, and agree within one (tensor-parallel ranks).
  const uint64_t rank_offset = static_cast<uint64_t>(dp_rank) << 40;
  // A sentencepiece model beside the data gives the vocabulary and decodes
  // samples; without one (llm.c's GPT-2 token files), --vocab-size does.
  std::optional<kiln::data::Tokenizer> tok;
  if (fs::exists(a.data + "/tokenizer.model")) tok.emplace(a.data + "/tokenizer.model");
  const int64_t vocab = tok ? tok->vocab_size() : a.vocab_size;
  kiln::Generator gen(a.seed);  // initialization, then dropout

  const kiln::nn::ModelSpec spec = model_spec(a, vocab);
  KILN_CHECK(spec.vocab_size >= vocab, "[train] the model's vocabulary ({}) is smaller than the data's ({})",
             spec.vocab_size, vocab);
  KILN_CHECK(a.seq <= spec.max_positions, "[train] --seq {} exceeds the model's {} positions", a.seq,
             spec.max_positions);
  // This rank's part of the model: its stage's blocks, its heads and vocabulary rows.
  auto factory = std::make_shared<kiln::dist::ModelParallel>(layout, a.sequence_parallel);
  kiln::nn::TransformerLM model(spec, gen, kiln::kFloat32, device, factory);
  if (!a.init_from.empty()) kiln::dist::load_checkpoint(a.init_from, model);
  apply_lora(a.lora, model, gen, a.seed);
  // Data parallel: DDP averages the gradients, or ZeRO-1 shards the optimizer
  // state and averages them itself.
  auto groups = kiln::optim::decay_groups(model.named_parameters(), a.weight_decay);
  std::unique_ptr<kiln::optim::Optimizer> opt;
  std::unique_ptr<kiln::dist::ZeroRedundancyOptimizer> zero;
  std::unique_ptr<kiln::dist::DistributedDataParallel> ddp;
  if (a.zero1) {
    zero = std::make_unique<kiln::dist::ZeroRedundancyOptimizer>(
        groups, layout.dp_group(), [&](std::vector<kiln::optim::ParamGroup> shards) { return make_optimizer(a, shards); });
  } else {
    opt = make_optimizer(a, groups);
    if (dp > 1) {
      // The experts' gradients over the replicas holding the same experts
      // (each already summed over its expert-parallel group by the
      // all-to-all's backward, hence 1 / ep), the rest over every replica.
      std::vector<Tensor> shared, experts;
      for (auto& [name, p] : model.named_parameters())
        (kiln::dist::is_expert_parameter(model, name) ? experts : shared).push_back(p);
      std::vector<kiln::dist::GradientShare> shares{{shared, layout.dp_group()}};
      if (!experts.empty()) shares.push_back({experts, layout.expert_dp_group(), 1.0 / a.ep});
      ddp = std::make_unique<kiln::dist::DistributedDataParallel>(std::move(shares));
    }
  }
  gen.set_offset(gen.offset() + rank_offset);
  kiln::optim::LRSchedule schedule{a.lr, a.lr * a.min_lr_ratio, a.warmup, a.steps,
                                   kiln::optim::LRSchedule::parse(a.lr_schedule)};
  const kiln::dist::PipelineOptions pipeline{kiln::dist::parse_pipeline_schedule(a.pipeline), a.grad_accum};

  std::vector<std::pair<std::string, double>> weights;
  for (const std::string& spec : a.mixture_weights) weights.push_back(program::named_weight(spec, "[train] --mixture-weight"));
  TrainBatches train(a.data, weights,
                     {.batch_size = a.batch, .seq_len = a.seq, .rank = dp_rank, .world_size = dp,
                      .shuffle = a.shuffle, .seed = a.seed, .device = device, .vocab_size = vocab});
  kiln::data::DataLoader val({a.data + "/val.bin"},
                             {.batch_size = a.batch, .seq_len = a.seq, .device = device, .vocab_size = vocab});

  kiln::dist::TrainingState state;
  fs::create_directories(a.out);
  if (a.resume) {
    std::string ckpt = kiln::dist::latest_checkpoint(a.out);
    KILN_CHECK(!ckpt.empty(), "[train] --resume: no checkpoint in {}", a.out);
    if (zero) kiln::dist::load_checkpoint(ckpt, model, *zero, state);
    else kiln::dist::load_checkpoint(ckpt, model, opt.get(), &state);
    train.seek(state.loader);
    gen.set_offset(state.rng_offset + rank_offset);
    say(lead, "resumed from {} at step {}\n", ckpt, state.step);
  }
  const int64_t tokens_per_step = a.batch * a.seq * a.grad_accum * dp;
  const double flops_per_step = spec.flops_per_token(a.seq) * static_cast<double>(tokens_per_step);
  say(lead, "model: {}, {} layers, {} heads ({} kv), {} channels, vocabulary {} (padded {}), {:.2f}M parameters{}{}\n",
      a.model, spec.n_layer, spec.block.attention.heads, spec.block.kv_heads(), spec.block.d_model,
      spec.vocab_size, (spec.vocab_size + 127) / 128 * 128, static_cast<double>(spec.num_parameters()) / 1e6,
      spec.block.mlp.moe ? fmt::format(" ({:.2f}M active)", static_cast<double>(spec.num_parameters(true)) / 1e6) : "",
      spec.block.recompute ? ", activations recomputed" : "");
  if (const auto lora = kiln::nn::lora_config(model)) {
    int64_t trainable = 0;
    for (const auto& p : model.parameters()) trainable += p.requires_grad() ? p.numel() : 0;
    say(lead, "lora: rank {}, alpha {:g}, dropout {:g} on {}; {:.3f}M trainable parameters{}, the rest frozen{}\n",
        lora->rank, lora->alpha, lora->dropout, fmt::join(lora->targets, ", "), static_cast<double>(trainable) / 1e6,
        layout.world()->size() > 1 ? " on this rank" : "", lora->base_dtype ? " in bfloat16" : "");
  }
  if (const auto& moe = spec.block.mlp.moe)
    say(lead, "experts: {} per MoE layer (layers 0, {}, ...), top-{} ({}), {}, aux loss {:g}, z-loss {:g}\n",
        moe->experts, moe->every, moe->top_k,
        moe->score == kiln::nn::RouterScore::TopKThenSoftmax ? "softmax over the top-k" : "top-k of the softmax",
        moe->capacity_factor > 0 ? fmt::format("capacity factor {:g}, {} dropped first", moe->capacity_factor,
                                               a.moe_drop_policy == "position" ? "latest tokens" : "smallest gates")
                                 : std::string("dropless"),
        moe->aux_loss_coeff, moe->z_loss_coeff);
  say(lead, "data: {}; {} tokens per step; {} on {}, {} activations\n",
      train.describe(a.batch, a.seq, tokens_per_step, a.steps), tokens_per_step, a.optimizer, device, a.dtype);
  if (ranks > 1)
    say(lead, "parallel over {} ranks: tp {}{} x pp {} x dp {}{}; {} micro-batches per step{}\n", ranks, a.tp,
        a.sequence_parallel && a.tp > 1 ? " (sequence parallel)" : "", a.pp, dp,
        zero ? " (ZeRO-1)" : a.ep > 1 ? fmt::format(" (experts shared out over {})", a.ep) : "",
        a.grad_accum, a.pp > 1 ? fmt::format(" ({} schedule)", a.pipeline) : "");
  {
    kiln::data::TokenFile va(a.data + "/val.bin");
    say(lead, "unigram baseline on val: {:.4f}\n", unigram_baseline(train.files(a.data), va, spec.vocab_size));
  }

  std::ofstream metrics;
  if (lead) metrics.open(a.out + "/metrics.jsonl", a.resume ? std::ios::app : std::ios::trunc);
  auto log_metrics = [&](const nlohmann::json& j) {
    if (lead) metrics << j.dump() << '\n' << std::flush;
  };
  auto sample = [&](int64_t step) {
    if (!tok) return;  // nothing to decode with
    // Decoded with the KV cache by the trained model itself, at its layout
    // (every rank takes part; the pipeline's last stage samples). Sequence
    // parallelism splits what decoding needs whole: then the whole model,
    // gathered on rank 0, decodes.
    kiln::Generator sampler(a.seed + static_cast<uint64_t>(step));
    const std::vector<int64_t> prompt{static_cast<int64_t>(tok->eos_id())};
    const kiln::nn::SamplingOptions sampling{.temperature = 0.8, .top_k = 40};
    std::vector<int64_t> ids;
    if (!factory->sequence_parallel()) {
      model.eval();
      ids = kiln::dist::pipeline_generate(model, layout, prompt, a.sample_tokens, sampling, sampler, tok->eos_id());
      model.train();
    } else {
      std::map<std::string, Tensor> weights = kiln::dist::full_state_dict(model, layout);
      if (!lead) return;
      kiln::Generator scratch;
      kiln::nn::TransformerLM whole(spec, scratch, kiln::kFloat32, device);
      whole.load_full_state_dict(weights);
      whole.eval();
      ids = kiln::nn::generate(whole, prompt, a.sample_tokens, sampling, sampler, tok->eos_id());
    }
    if (!ids.empty() && ids.back() == static_cast<int64_t>(tok->eos_id())) ids.pop_back();
    say(lead, "--- sample at step {} ---\n{}\n---\n", step, tok->decode({ids.begin(), ids.end()}));
  };

  const int64_t first_step = state.step;
  int64_t skipped = 0;  // steps with a non-finite loss or norm
  auto start = std::chrono::steady_clock::now();
  double window_seconds = 0;
  int64_t window_steps = 0;
  for (int64_t step = first_step; step < a.steps; ++step) {
    auto t0 = std::chrono::steady_clock::now();
    double lr = schedule.at(step);
    if (zero) {
      zero->set_lr(lr);
      zero->zero_grad();
    } else {
      opt->set_lr(lr);
      opt->zero_grad();
    }
    // This replica's micro-batches, one after another in the loader's order.
    std::vector<Tensor> xs, ys;
    for (int64_t micro = 0; micro < a.grad_accum; ++micro) {
      auto [x, y] = train.next();
      xs.push_back(x);
      ys.push_back(y);
    }
    double loss = kiln::dist::pipeline_train_step(model, layout, kiln::cat(xs), kiln::cat(ys), pipeline, ddp.get());
    if (ddp) ddp->finish();
    if (dp > 1) {
      Tensor mean_loss = kiln::full({1}, loss, kiln::TensorOptions(kiln::kFloat64).device(device));
      layout.dp_group()->all_reduce(mean_loss, kiln::dist::ReduceOp::Avg);
      loss = mean_loss.item<double>();
    }
    kiln::dist::sync_gradients(model, layout);
    double norm = 0;
    if (zero) {
      zero->reduce_gradients();
      if (a.grad_clip > 0)
        norm = zero->clip_grad_norm(a.grad_clip, kiln::dist::norm_parameters(model, layout),
                                    {layout.tp_group().get(), layout.pp_group().get()});
    } else if (a.grad_clip > 0) {
      norm = kiln::dist::clip_grad_norm(model, layout, a.grad_clip);
    }
    // Every rank sees the same loss (averaged) and norm (global), so all skip or stop together.
    const bool finite = std::isfinite(loss) && std::isfinite(norm);
    if (!finite) {
      KILN_CHECK(++skipped <= a.skip_nonfinite, "[train] step {}: the loss is {} and the gradient norm {}; training "
                 "stops ({} such steps skipped; --skip-nonfinite N skips up to N). The last checkpoint in {} precedes "
                 "it", step + 1, loss, norm, skipped - 1, a.out);
      say(lead, "step {}: loss {}, gradient norm {}: skipped ({} of {})\n", step + 1, loss, norm, skipped,
          a.skip_nonfinite);
    } else if (zero) {
      zero->step();
    } else {
      opt->step();
    }
    if (device.is_cuda()) kiln::cuda::synchronize(device.index);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    window_seconds += seconds;
    ++window_steps;
    const int64_t done = step + 1;
    double tok_per_s = static_cast<double>(tokens_per_step) / seconds;
    nlohmann::json m = {{"step", done}, {"train_loss", loss}, {"lr", lr}, {"grad_norm", norm},
                        {"tokens_per_second", tok_per_s}};
    if (const auto* mixture = train.mixture())
      for (size_t s = 0; s < mixture->sources().size(); ++s)
        m["tokens_seen"][mixture->sources()[s].name] = mixture->tokens_seen()[s];
    std::string moe;
    if (spec.block.mlp.moe) {
      m.update(moe_metrics(model, layout));
      const std::vector<double> load = m["moe_load"];
      moe = fmt::format(" | aux {:.4f} | z {:.4f} | dropped {:.1f}% | busiest expert {:.2f}x",
                        m["moe_aux_loss"].get<double>(), m["moe_z_loss"].get<double>(),
                        100 * m["moe_dropped"].get<double>(), *std::max_element(load.begin(), load.end()));
    }
    if (done % a.log_every == 0 || done == a.steps || step == first_step) {
      double avg = window_seconds / static_cast<double>(window_steps);
      std::string mfu = device.is_cuda()
                            ? fmt::format(" | MFU {:.1f}% | peak {:.2f} GiB", 100 * flops_per_step / avg / 989e12 / ranks,
                                          static_cast<double>(kiln::cuda::memory_stats(device.index).peak_in_use) /
                                              (1 << 30))
                            : "";
      say(lead, "step {:5d}/{} | loss {:.4f}{} | lr {:.2e} | norm {:.3f} | {:.0f} tok/s{} | ETA {}\n", done, a.steps,
          loss, moe, lr, norm, static_cast<double>(tokens_per_step) / avg, mfu,
          format_duration(avg * static_cast<double>(a.steps - done)));
      std::fflush(stdout);
      window_seconds = 0;
      window_steps = 0;
    }
    if (done % a.eval_every == 0 || done == a.steps) {
      model.eval();
      double v = evaluate(model, layout, val, a.eval_batches);
      model.train();
      m["val_loss"] = v;
      say(lead, "step {:5d}/{} | val loss {:.4f}{}\n", done, a.steps, v, train.tokens_seen_line());
    }
    log_metrics(m);
    if (a.sample_every > 0 && (done % a.sample_every == 0 || done == a.steps)) sample(done);
    if (a.checkpoint_every > 0 && (done % a.checkpoint_every == 0 || done == a.steps)) {
      state = {done, train.position(), gen.offset() - rank_offset};
      std::string path = zero ? kiln::dist::save_checkpoint(a.out, model, layout, *zero, state, a.keep)
                              : kiln::dist::save_checkpoint(a.out, model, layout, *opt, state, a.keep);
      say(lead, "checkpoint: {}\n", path);
    }
  }
  say(lead, "done in {}; metrics in {}/metrics.jsonl (scripts/plot {}/metrics.jsonl)\n",
      format_duration(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()), a.out, a.out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train a causal language model (GPT-2, LLaMA, OPT, GPT-NeoX, BLOOM) with kiln"};
  Args a;
  app.add_option("--model", a.model, "model family: gpt2 | llama | opt | neox | bloom")->capture_default_str()
      ->check(CLI::IsMember({"gpt2", "llama", "opt", "neox", "bloom"}));
  app.add_option("--data", a.data, "directory with train.bin, val.bin, tokenizer.model")->capture_default_str();
  app.add_option("--out", a.out, "checkpoints and metrics go here")->capture_default_str();
  app.add_option("--init-from", a.init_from,
                 "start from a checkpoint directory, kiln's or Hugging Face's (GPT-2, Llama, Mixtral, OPT, GPT-NeoX or BLOOM; "
                 "its config decides the model)");
  app.add_option("--vocab-size", a.vocab_size, "vocabulary when the data has no tokenizer.model")
      ->check(program::positive)->capture_default_str();
  app.add_option("--depth", a.depth, "GPT-2 size by depth: 6, 12 (124M), 24, 36, 48")->check(CLI::IsMember({6, 12, 24, 36, 48}));
  app.add_option("--preset", a.preset, "Llama size: llama2-7b, llama2-13b, llama2-70b, llama3-8b, llama3-70b, llama3.2-1b");
  app.add_option("--layers", a.layers, "layers (without --depth/--preset)")
      ->check(program::positive)->capture_default_str();
  app.add_option("--channels", a.channels, "embedding width (without --depth/--preset)")
      ->check(program::positive)->capture_default_str();
  app.add_option("--heads", a.heads, "attention heads (without --depth/--preset)")
      ->check(program::positive)->capture_default_str();
  app.add_option("--kv-heads", a.kv_heads, "Llama: key/value heads for grouped-query attention (default: --heads)")
      ->check(program::non_negative);
  app.add_option("--mlp-hidden", a.mlp_hidden, "Llama: SwiGLU hidden size (default: LLaMA's rule)")
      ->check(program::non_negative);
  app.add_option("--rope-theta", a.rope_theta, "Llama, GPT-NeoX: RoPE base")
      ->check(program::positive)->capture_default_str();
  app.add_flag("--recompute", a.recompute, "recompute each block's activations in backward (less memory)");
  app.add_option("--moe-experts", a.moe_experts, "experts per MoE layer; 0: dense MLPs (experts have no biases)")
      ->check(program::non_negative)
      ->capture_default_str();
  app.add_option("--moe-top-k", a.moe_top_k, "experts per token")->check(program::positive)->capture_default_str();
  app.add_option("--moe-every", a.moe_every, "layers 0, N, 2N, ... are MoE (GLaM: 2, Mixtral: 1)")
      ->check(program::positive)->capture_default_str();
  app.add_option("--capacity-factor", a.capacity_factor,
                 "expert capacity ceil(tokens k / experts x factor); 0: dropless")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--moe-drop-policy", a.moe_drop_policy, "over capacity, drop the smallest gates or the latest tokens")
      ->check(CLI::IsMember({"probs", "position"}))->capture_default_str();
  app.add_flag("--moe-pre-softmax", a.moe_pre_softmax,
               "gates: the top-k of the softmax (Switch, Qwen-MoE), not a softmax over the top-k logits (Mixtral)");
  app.add_option("--moe-aux-loss-coeff", a.moe_aux_loss_coeff, "load-balancing loss coefficient")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--moe-z-loss-coeff", a.moe_z_loss_coeff, "router z-loss coefficient (ST-MoE: 1e-3)")
      ->check(program::non_negative)
      ->capture_default_str();
  app.add_option("--block-size", a.block_size, "longest sequence the model supports (default: --seq)")
      ->check(program::non_negative);
  app.add_option("--batch,-b", a.batch, "sequences per micro-batch")->check(program::positive)->capture_default_str();
  app.add_option("--seq,-t", a.seq, "tokens per sequence")->check(program::positive)->capture_default_str();
  app.add_option("--grad-accum,--microbatches", a.grad_accum, "micro-batches per step (pipelined with --pp)")
      ->check(program::positive)
      ->capture_default_str();
  app.add_option("--tp", a.tp, "tensor-parallel ranks (heads, MLP and vocabulary split)")
      ->check(program::positive)->capture_default_str();
  app.add_option("--pp", a.pp, "pipeline stages (layers split)")->check(program::positive)->capture_default_str();
  app.add_option("--dp", a.dp, "data-parallel replicas (default: ranks / (tp x pp))")->check(program::non_negative);
  app.add_option("--ep", a.ep, "expert-parallel ranks sharing out each MoE layer's experts; must divide the "
                 "data-parallel replicas (Megatron-Core's layout)")->check(program::positive)->capture_default_str();
  app.add_flag("--zero1", a.zero1, "shard the optimizer state across the data-parallel replicas (ZeRO-1)");
  app.add_flag("--sequence-parallel", a.sequence_parallel, "with --tp: norms and dropout on slices of the sequence");
  app.add_option("--schedule", a.pipeline, "pipeline schedule: gpipe | 1f1b")
      ->capture_default_str()
      ->check(CLI::IsMember({"gpipe", "1f1b"}));
  app.add_option("--steps", a.steps, "optimizer steps")->check(program::positive)->capture_default_str();
  app.add_option("--lr", a.lr, "peak learning rate")->check(program::positive)->capture_default_str();
  app.add_option("--min-lr-ratio", a.min_lr_ratio, "final learning rate / peak")
      ->check(program::fraction)->capture_default_str();
  app.add_option("--warmup", a.warmup, "warmup steps")->check(program::non_negative)->capture_default_str();
  app.add_option("--lr-schedule", a.lr_schedule, "cosine | linear | constant")
      ->check(CLI::IsMember({"cosine", "linear", "constant"}))
      ->capture_default_str();
  app.add_option("--optimizer", a.optimizer, "adamw | lion | sgd")->capture_default_str();
  app.add_option("--weight-decay", a.weight_decay, "on 2+-dim tensors")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--beta1", a.beta1, "AdamW/Lion beta1 (SGD momentum)")
      ->check(program::fraction)->capture_default_str();
  app.add_option("--beta2", a.beta2, "AdamW/Lion beta2")->check(program::fraction)->capture_default_str();
  app.add_option("--grad-clip", a.grad_clip, "global norm clip, 0 to disable")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--dropout", a.dropout, "dropout probability")->check(program::fraction)->capture_default_str();
  add_lora_options(app, a.lora);
  app.add_option("--z-loss", a.z_loss, "PaLM's z-loss: adds this times logsumexp(logits)^2 per token to the training "
                 "loss (PaLM: 1e-4); validation reports the cross-entropy alone")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--device", a.device, "cpu | cuda | cuda:N")->capture_default_str();
  app.add_option("--dtype", a.dtype, "activations: float32, or bfloat16/float16 with float32 master weights")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}));
  app.add_option("--eval-every", a.eval_every, "steps between validation runs")
      ->check(program::positive)->capture_default_str();
  app.add_option("--eval-batches", a.eval_batches, "batches per validation run")
      ->check(program::positive)->capture_default_str();
  app.add_option("--sample-every", a.sample_every, "steps between samples, 0 to disable")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--sample-tokens", a.sample_tokens, "tokens per sample")
      ->check(program::positive)->capture_default_str();
  app.add_option("--checkpoint-every", a.checkpoint_every, "steps between checkpoints, 0 to disable")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--keep", a.keep, "checkpoints kept")->check(program::positive)->capture_default_str();
  app.add_option("--log-every", a.log_every, "steps between progress lines")
      ->check(program::positive)->capture_default_str();
  app.add_option("--seed", a.seed, "initialization, dropout and data order")->capture_default_str();
  app.add_flag("--resume", a.resume, "continue from the latest checkpoint in --out");
  app.add_flag("!--no-shuffle", a.shuffle, "read training batches in file order");
  app.add_option("--mixture-weight", a.mixture_weights,
                 "NAME=WEIGHT: a source's share of the rows, over mixture.json's (curate's data)");
  app.add_option("--skip-nonfinite", a.skip_nonfinite, "skip up to this many steps whose loss or gradient norm is "
                 "NaN or infinite (no update) before stopping; 0: stop at the first")
      ->check(program::non_negative)->capture_default_str();
  if (auto code = program::parse(app, argc, argv)) return *code;
  return program::run("train", [&] { return run(a); });
}
