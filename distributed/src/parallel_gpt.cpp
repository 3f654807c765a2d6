#include "kiln/dist/parallel_gpt.h"

#include <cmath>

#include "kiln/autograd.h"
#include "kiln/ops.h"
#include "kiln/optim/schedule.h"

namespace kiln::dist {

namespace {

std::shared_ptr<ColumnParallelLinear> column(const nn::TransformerOptions& o, int64_t in, int64_t out,
                                             std::vector<int64_t> segments, bool sp, ProcessGroup& g, Generator* gen) {
  return std::make_shared<ColumnParallelLinear>(
      ParallelLinearOptions{in, out, o.bias, o.dtype, o.device, std::move(segments), sp}, g, gen);
}

std::shared_ptr<RowParallelLinear> row(const nn::TransformerOptions& o, int64_t in, int64_t out, bool sp,
                                       ProcessGroup& g, Generator* gen) {
  return std::make_shared<RowParallelLinear>(ParallelLinearOptions{in, out, o.bias, o.dtype, o.device, {}, sp}, g,
                                             gen);
}

std::shared_ptr<nn::LayerNorm> norm(const nn::TransformerOptions& o) {
  return std::make_shared<nn::LayerNorm>(
      nn::NormOptions{.normalized_shape = {o.n_embd}, .bias = o.bias, .dtype = o.dtype, .device = o.device});
}

// Layers [first, last) of stage `stage`: as even as possible, the first stages one more.
std::pair<int64_t, int64_t> stage_layers(int64_t n_layer, int pp, int stage) {
  const int64_t base = n_layer / pp, extra = n_layer % pp;
  const int64_t first = stage * base + std::min<int64_t>(stage, extra);
  return {first, first + base + (stage < extra ? 1 : 0)};
}

int64_t padded_vocab(int64_t vocab, int tp) {
  auto round_up = [](int64_t n, int64_t m) { return (n + m - 1) / m * m; };
  const int64_t padded = round_up(vocab, 128 * tp);
  // Every rank keeps at least one real row (the loss needs each rank's columns).
  return (padded / tp) * (tp - 1) < vocab ? padded : round_up(vocab, tp);
}

}  // namespace

ParallelSelfAttention::ParallelSelfAttention(const nn::TransformerOptions& o, ProcessGroup& g, Generator* init_gen,
                                             Generator& dropout_gen, bool sp) {
  const int64_t C = o.n_embd, tp = g.size();
  KILN_CHECK(o.n_head % tp == 0, "[ParallelSelfAttention] {} heads do not divide among {} tensor-parallel ranks",
             o.n_head, tp);
  local_heads_ = o.n_head / tp;
  c_attn = register_module("c_attn", column(o, C, 3 * C, {C, C, C}, sp, g, init_gen));
  c_proj = register_module("c_proj", row(o, C, C, sp, g, init_gen));
  resid_dropout = register_module("resid_dropout", std::make_shared<nn::Dropout>(o.dropout, dropout_gen));
}

Tensor ParallelSelfAttention::forward(const Tensor& x) const {
  Tensor y = nn::causal_attention(c_attn->forward(x), local_heads_, local_heads_);
  return resid_dropout->forward(c_proj->forward(y));
}

ParallelMLP::ParallelMLP(const nn::TransformerOptions& o, ProcessGroup& g, Generator* init_gen,
                         Generator& dropout_gen, bool sp) {
  c_fc = register_module("c_fc", column(o, o.n_embd, 4 * o.n_embd, {}, sp, g, init_gen));
  c_proj = register_module("c_proj", row(o, 4 * o.n_embd, o.n_embd, sp, g, init_gen));
  dropout = register_module("dropout", std::make_shared<nn::Dropout>(o.dropout, dropout_gen));
}

Tensor ParallelMLP::forward(const Tensor& x) const {
  return dropout->forward(c_proj->forward(c_fc->forward(x, false, Activation::GeluTanh)));
}

ParallelBlock::ParallelBlock(const nn::TransformerOptions& o, ProcessGroup& g, Generator* init_gen,
                             Generator& dropout_gen, bool sp) {
  ln_1 = register_module("ln_1", norm(o));
  attn = register_module("attn", std::make_shared<ParallelSelfAttention>(o, g, init_gen, dropout_gen, sp));
  ln_2 = register_module("ln_2", norm(o));
  mlp = register_module("mlp", std::make_shared<ParallelMLP>(o, g, init_gen, dropout_gen, sp));
}

Tensor ParallelBlock::forward(const Tensor& x) const {
  auto [h, normed] = ln_2->forward_add(x, attn->forward(ln_1->forward(x)));  // h = x + attn(ln_1(x))
  return h + mlp->forward(normed);
}

ParallelGPT::ParallelGPT(const nn::GPTConfig& c, ParallelState& state, Generator& gen, DType dtype, Device device,
                         bool sequence_parallel)
    : config_(c), state_(&state), device_(device), sequence_parallel_(sequence_parallel && state.tp() > 1) {
  const int tp = state.tp(), pp = state.pp();
  KILN_CHECK(c.n_layer >= pp, "[ParallelGPT] {} layers cannot fill {} pipeline stages", c.n_layer, pp);
  KILN_CHECK(c.vocab_size >= tp, "[ParallelGPT] a vocabulary of {} cannot split among {} tensor-parallel ranks",
             c.vocab_size, tp);
  KILN_CHECK(c.n_head % tp == 0 && (4 * c.n_embd) % tp == 0,
             "[ParallelGPT] {} heads and {} MLP features must divide among {} tensor-parallel ranks", c.n_head,
             4 * c.n_embd, tp);
  layers_ = stage_layers(c.n_layer, pp, state.pp_rank());
  padded_vocab_ = padded_vocab(c.vocab_size, tp);
  // The full model's initial values; gen ends where nn::GPT leaves it.
  std::map<std::string, Tensor> full = nn::GPT(c, gen, dtype).state_dict();
  full["wte.weight"] = full["wte.weight"].narrow(0, 0, c.vocab_size);
  // The split layers are allocated without drawing (null init generators) and
  // filled below; wpe (an nn::Embedding, small) draws from a scratch generator.
  Generator scratch;
  ProcessGroup& g = *state.tp_group();
  nn::TransformerOptions t{.n_embd = c.n_embd, .n_head = c.n_head, .dropout = c.dropout, .n_layer = c.n_layer,
                           .dtype = dtype, .device = device};
  if (is_first_stage() || is_last_stage())
    wte = register_module("wte", std::make_shared<VocabParallelEmbedding>(padded_vocab_, c.n_embd, g, nullptr, dtype,
                                                                           device));
  if (is_first_stage()) {
    wpe = register_module("wpe", std::make_shared<nn::Embedding>(
                                     nn::EmbeddingOptions{c.block_size, c.n_embd, dtype, device}, scratch));
    drop = register_module("drop", std::make_shared<nn::Dropout>(c.dropout, gen));
  }
  h = register_module("h", std::make_shared<nn::ModuleList>(static_cast<size_t>(layers_.first)));
  for (int64_t i = layers_.first; i < layers_.second; ++i)
    h->push_back(std::make_shared<ParallelBlock>(t, g, nullptr, gen, sequence_parallel_));
  if (is_last_stage())
    ln_f = register_module("ln_f", norm(t));

  if (wte) specs_["wte.weight"] = wte->weight_spec();
  for (size_t i = 0; i < h->size(); ++i) {
    const ParallelBlock& b = h->at<ParallelBlock>(i);
    const std::string prefix = fmt::format("h.{}.", layers_.first + static_cast<int64_t>(i));
    for (auto [name, col] : {std::pair{"attn.c_attn", b.attn->c_attn.get()}, {"mlp.c_fc", b.mlp->c_fc.get()}}) {
      specs_[prefix + name + ".weight"] = col->weight_spec();
      specs_[prefix + name + ".bias"] = col->bias_spec();
    }
    for (auto [name, r] : {std::pair{"attn.c_proj", b.attn->c_proj.get()}, {"mlp.c_proj", b.mlp->c_proj.get()}}) {
      specs_[prefix + name + ".weight"] = r->weight_spec();
      specs_[prefix + name + ".bias"] = r->bias_spec();
    }
  }
  load_full_state_dict(full);

  // The tied embedding's two copies form a group: first and last stage of the
  // same tensor- and data-parallel coordinates (every rank takes part in the split).
  if (pp > 1) {
    const int coord = state.dp_rank() * tp + state.tp_rank();
    const bool ends = is_first_stage() || is_last_stage();
    auto group = state.world()->split(ends ? coord : tp * state.dp() + state.world()->rank(), state.pp_rank());
    if (ends) embedding_group_ = group;
  }
}

const ShardSpec& ParallelGPT::spec(const std::string& name) const {
  static const ShardSpec replicated;
  auto it = specs_.find(name);
  return it == specs_.end() ? replicated : it->second;
}

Tensor ParallelGPT::forward(const Tensor& input) const {
  Tensor x;
  if (is_first_stage()) {
    KILN_CHECK(input.dim() == 2 && !is_floating(input.dtype()),
               "[ParallelGPT] the first stage expects token ids (B, T) of an integer dtype, got {} [{}]",
               input.dtype(), fmt::join(input.sizes(), ", "));
    const int64_t T = input.size(1), tp = state_->tp();
    KILN_CHECK(T <= config_.block_size, "[ParallelGPT] sequence of {} tokens is longer than block_size {}", T,
               config_.block_size);
    KILN_CHECK(!sequence_parallel_ || T % tp == 0,
               "[ParallelGPT] sequence parallelism splits the {} tokens of a sequence among {} ranks: they must divide",
               T, tp);
    // With sequence parallelism this rank holds positions [first, first + T / tp).
    const int64_t first = sequence_parallel_ ? state_->tp_rank() * (T / tp) : 0;
    Tensor pos = arange(first, first + (sequence_parallel_ ? T / tp : T), 1, TensorOptions(kInt64).device(input.device()));
    x = wte->forward(input, sequence_parallel_) + wpe->forward(pos);
    if (config_.compute_dtype) x = x.to(*config_.compute_dtype);
    x = drop->forward(x);
  } else {
    KILN_CHECK(input.dim() == 3 && input.size(2) == config_.n_embd,
               "[ParallelGPT] stage {} expects activations (B, T, {}), got {} [{}]", state_->pp_rank(),
               config_.n_embd, input.dtype(), fmt::join(input.sizes(), ", "));
    x = input;
  }
  for (size_t i = 0; i < h->size(); ++i) x = h->at<ParallelBlock>(i).forward(x);
  return is_last_stage() ? ln_f->forward(x) : x;
}

Tensor ParallelGPT::loss_from_hidden(const Tensor& hidden, const Tensor& targets) const {
  KILN_CHECK(is_last_stage(), "[ParallelGPT] the loss is taken on the last pipeline stage, this is stage {} of {}",
             state_->pp_rank(), state_->pp());
  const int64_t slices = sequence_parallel_ ? state_->tp() : 1;
  KILN_CHECK(hidden.dim() == 3 && targets.sizes() == Shape({hidden.size(0), hidden.size(1) * slices}),
             "[ParallelGPT] loss expects hidden (B, T{}, C) and targets (B, T), got [{}] and [{}]",
             slices > 1 ? " / tp" : "", fmt::join(hidden.sizes(), ", "), fmt::join(targets.sizes(), ", "));
  // The head reads this rank's rows of the real vocabulary, for the whole sequence.
  const int64_t rows = std::min(wte->weight.size(0), config_.vocab_size - wte->vocab_start());
  Tensor head = cast_cached(wte->weight, hidden.dtype()).narrow(0, 0, rows);
  if (state_->tp() == 1)  // the whole vocabulary here: the fused head and loss
    return linear_cross_entropy(hidden.reshape({-1, config_.n_embd}), head, targets.reshape({-1}));
  Tensor x = sequence_parallel_ ? gather_from_sequence(hidden, *state_->tp_group())
                                : copy_to_group(hidden, *state_->tp_group());
  Tensor logits = matmul(x, head.t());
  return vocab_parallel_cross_entropy(logits.reshape({-1, rows}), targets.reshape({-1}), wte->vocab_start(),
                                      *state_->tp_group());
}

Tensor ParallelGPT::loss(const Tensor& idx, const Tensor& targets) const {
  KILN_CHECK(state_->pp() == 1, "[ParallelGPT] loss(idx, targets) runs the whole model: with {} pipeline stages, "
             "use a pipeline schedule", state_->pp());
  return loss_from_hidden(forward(idx), targets);
}

Shape ParallelGPT::activation_shape(int64_t batch, int64_t seq) const {
  return {batch, sequence_parallel_ ? seq / state_->tp() : seq, config_.n_embd};
}

namespace {
// Replaces p's gradient (zeros when it has none) by its sum over the group.
void sum_gradient(Tensor p, ProcessGroup& group) {
  Tensor g = p.grad().defined() ? p.grad().contiguous() : zeros_like(p);
  group.all_reduce(g);
  p.set_grad(g);
}
}  // namespace

void ParallelGPT::sync_gradients() {
  NoGradGuard no_grad;
  if (embedding_group_) sum_gradient(wte->weight, *embedding_group_);
  if (sequence_parallel_)
    for (auto& [name, p] : named_parameters())
      if (spec(name).replicated()) sum_gradient(p, *state_->tp_group());
}

std::vector<Tensor> ParallelGPT::norm_parameters() const {
  // Replicated weights on tp rank 0, the tied embedding on the first stage.
  std::vector<Tensor> counted;
  for (auto& [name, p] : named_parameters()) {
    if (spec(name).replicated() && state_->tp_rank() != 0) continue;
    if (name == "wte.weight" && holds_tied_copy()) continue;
    counted.push_back(p);
  }
  return counted;
}

double ParallelGPT::clip_grad_norm(double max_norm) {
  Tensor total = full({1}, optim::grad_squared_sum(norm_parameters()), TensorOptions(kFloat64).device(device_));
  state_->tp_group()->all_reduce(total);
  state_->pp_group()->all_reduce(total);
  const double norm = std::sqrt(total.item<double>());
  optim::clip_grads_to(parameters(), norm, max_norm);
  return norm;
}

std::map<std::string, Tensor> ParallelGPT::gather_full(const std::map<std::string, Tensor>& local) const {
  NoGradGuard no_grad;
  std::map<std::string, Tensor> out;
  if (state_->dp_rank() != 0) return out;  // the replicas hold the same values
  // Within each stage: assemble across tp. Then stage s's tp rank 0 sends its
  // tensors to world rank 0 (pp rank 0 of the same pp group): a count, then
  // per tensor its name, shape and values.
  ProcessGroup& pipe = *state_->pp_group();
  const bool lead = state_->tp_rank() == 0;
  std::vector<std::pair<std::string, Tensor>> mine;
  for (const auto& [name, t] : local) {
    if (name == "wte.weight" && holds_tied_copy()) continue;  // the first stage's copy is the one
    Tensor f = all_gather_shards(t, spec(name), *state_->tp_group());
    if (name == "wte.weight") f = f.narrow(0, 0, config_.vocab_size).contiguous();
    mine.emplace_back(name, f);
  }
  if (!lead) return out;
  if (is_first_stage()) {
    for (auto& [name, t] : mine) out[name] = t;
    for (int s = 1; s < state_->pp(); ++s) {
      // Received on the model's device (NCCL moves device memory), kept on the CPU.
      auto receive = [&](Shape sizes, DType dtype) {
        Tensor t = empty(sizes, TensorOptions(dtype).device(device_));
        pipe.recv(t, s);
        return t.to(kCPU);
      };
      const int64_t count = receive({1}, kInt64).item<int64_t>();
      for (int64_t i = 0; i < count; ++i) {
        Tensor header = receive({3}, kInt64);  // name length, dims, dtype
        Tensor name = receive({header[0].item<int64_t>()}, kInt32);
        const auto* chars = static_cast<const int32_t*>(name.data_ptr());
        Tensor shape = receive({header[1].item<int64_t>()}, kInt64);
        Shape sizes;
        for (int64_t d = 0; d < shape.numel(); ++d) sizes.push_back(shape[d].item<int64_t>());
        out[std::string(chars, chars + name.numel())] = receive(sizes, static_cast<DType>(header[2].item<int64_t>()));
      }
    }
  } else {
    auto send = [&](const Tensor& t) { pipe.send(t.to(device_).contiguous(), 0); };
    send(full({1}, static_cast<int64_t>(mine.size()), kInt64));
    for (auto& [name, t] : mine) {
      send(tensor(std::vector<int64_t>{static_cast<int64_t>(name.size()), t.dim(), static_cast<int64_t>(t.dtype())}));
      send(tensor(std::vector<int32_t>(name.begin(), name.end())));
      send(tensor(std::vector<int64_t>(t.sizes().begin(), t.sizes().end())));
      send(t);
    }
  }
  return out;
}

std::map<std::string, Tensor> ParallelGPT::take_local(const std::map<std::string, Tensor>& full) const {
  NoGradGuard no_grad;
  std::map<std::string, Tensor> out;
  for (const auto& [name, p] : named_parameters()) {
    auto it = full.find(name);
    KILN_CHECK(it != full.end(), "[ParallelGPT] the full state has no '{}'", name);
    Tensor t = it->second;
    if (name == "wte.weight") {
      KILN_CHECK(t.dim() == 2 && t.size(0) == config_.vocab_size && t.size(1) == config_.n_embd,
                 "[ParallelGPT] 'wte.weight' has shape [{}], the model expects [{}, {}]", fmt::join(t.sizes(), ", "),
                 config_.vocab_size, config_.n_embd);
      t = cat({t, zeros({padded_vocab_ - config_.vocab_size, t.size(1)}, TensorOptions(t.dtype()).device(t.device()))});
    }
    Tensor mine = spec(name).take(t, state_->tp_rank(), state_->tp());
    KILN_CHECK(mine.sizes() == p.sizes(), "[ParallelGPT] '{}' of shape [{}] gives a shard of [{}], the rank holds [{}]",
               name, fmt::join(it->second.sizes(), ", "), fmt::join(mine.sizes(), ", "), fmt::join(p.sizes(), ", "));
    out[name] = mine;
  }
  return out;
}

std::map<std::string, Tensor> ParallelGPT::full_state_dict() const {
  std::map<std::string, Tensor> local;
  for (auto& [name, p] : named_parameters()) local[name] = p;
  return gather_full(local);
}

void ParallelGPT::load_full_state_dict(const std::map<std::string, Tensor>& full) {
  NoGradGuard no_grad;
  std::map<std::string, Tensor> mine = take_local(full);
  for (auto& [name, p] : named_parameters()) p.copy_(mine.at(name).to(p.device(), p.dtype()));
}

}  // namespace kiln::dist
