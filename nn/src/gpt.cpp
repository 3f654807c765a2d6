#include "kiln/nn/gpt.h"

#include <cmath>

#include "kiln/nn/init.h"
#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::nn {

GPTConfig GPTConfig::gpt2(int depth, int64_t vocab_size, int64_t block_size) {
  // llm.c's table: channels and heads by depth (head_dim 64).
  int64_t channels = 0;
  switch (depth) {
    case 6: channels = 384; break;
    case 12: channels = 768; break;
    case 24: channels = 1024; break;
    case 36: channels = 1280; break;
    case 48: channels = 1600; break;
    default: KILN_FAIL("[GPTConfig] no GPT-2 configuration of depth {}: use 6, 12, 24, 36 or 48", depth);
  }
  return {.vocab_size = vocab_size, .block_size = block_size, .n_layer = depth, .n_head = channels / 64,
          .n_embd = channels};
}

int64_t GPTConfig::num_parameters() const {
  const int64_t C = n_embd;
  // Per block: two LayerNorms (4C), q/k/v (3C^2 + 3C), projection (C^2 + C), MLP (8C^2 + 5C).
  return padded_vocab_size() * C + block_size * C + n_layer * (12 * C * C + 13 * C) + 2 * C;
}

double GPTConfig::flops_per_token(int64_t seq_len) const {
  return 6.0 * static_cast<double>(num_parameters()) + 12.0 * static_cast<double>(n_layer * n_embd * seq_len);
}

GPT::GPT(const GPTConfig& c, Generator& gen, DType dtype, Device device) : config_(c) {
  KILN_CHECK(c.vocab_size > 0 && c.block_size > 0 && c.n_layer > 0, "[GPT] vocab_size ({}), block_size ({}) and "
             "n_layer ({}) must be positive", c.vocab_size, c.block_size, c.n_layer);
  TransformerOptions t{.n_embd = c.n_embd, .n_head = c.n_head, .dropout = c.dropout, .n_layer = c.n_layer,
                       .dtype = dtype, .device = device};
  wte = register_module("wte", std::make_shared<Embedding>(EmbeddingOptions{c.padded_vocab_size(), c.n_embd, dtype, device}, gen));
  wpe = register_module("wpe", std::make_shared<Embedding>(EmbeddingOptions{c.block_size, c.n_embd, dtype, device}, gen));
  drop = register_module("drop", std::make_shared<Dropout>(c.dropout, gen));
  h = register_module("h", std::make_shared<ModuleList>());
  for (int64_t i = 0; i < c.n_layer; ++i) h->push_back(std::make_shared<Block>(t, gen));
  ln_f = register_module("ln_f", std::make_shared<LayerNorm>(NormOptions{.normalized_shape = {c.n_embd}, .dtype = dtype,
                                                                         .device = device}));
  reset_parameters(gen);
}

void GPT::reset_parameters(Generator& gen) {
  const double std = 0.02, residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(config_.n_layer));
  init::normal_(wte->weight, 0.0, std, gen);
  init::normal_(wpe->weight, 0.0, std, gen);
  {
    NoGradGuard no_grad;  // padding rows start (and stay) zero
    wte->weight.narrow(0, config_.vocab_size, config_.padded_vocab_size() - config_.vocab_size).zero_();
  }
  for (size_t i = 0; i < h->size(); ++i) {
    Block& b = h->at<Block>(i);
    for (Linear* l : {b.attn->c_attn.get(), b.attn->c_proj.get(), b.mlp->c_fc.get(), b.mlp->c_proj.get()}) {
      bool residual = l == b.attn->c_proj.get() || l == b.mlp->c_proj.get();
      init::normal_(l->weight, 0.0, residual ? residual_std : std, gen);
      if (l->bias.defined()) init::zeros_(l->bias);
    }
  }
}

Tensor GPT::hidden(const Tensor& idx, std::vector<KVCache>* caches) const {
  KILN_CHECK(idx.dim() == 2 && !is_floating(idx.dtype()), "[GPT] expects token ids (B, T) of an integer dtype, got "
             "{} [{}]", idx.dtype(), fmt::join(idx.sizes(), ", "));
  KILN_CHECK(!caches || caches->size() == h->size(), "[GPT] needs one KV cache per layer ({}), got {}", h->size(),
             caches ? caches->size() : 0);
  const int64_t T = idx.size(1), past = caches ? (*caches)[0].length() : 0;
  KILN_CHECK(past + T <= config_.block_size, "[GPT] sequence of {} tokens is longer than block_size {}", past + T,
             config_.block_size);
  Tensor pos = arange(past, past + T, 1, TensorOptions(kInt64).device(idx.device()));
  Tensor x = wte->forward(idx) + wpe->forward(pos);  // (B, T, C)
  if (config_.compute_dtype) x = x.to(*config_.compute_dtype);
  x = drop->forward(x);
  for (size_t i = 0; i < h->size(); ++i) x = h->at<Block>(i).forward(x, caches ? &(*caches)[i] : nullptr);
  return ln_f->forward(x);
}

Tensor GPT::head_weight(DType dtype) const {
  // The tied head reads only the real vocabulary rows.
  return cast_cached(wte->weight, dtype).narrow(0, 0, config_.vocab_size);
}

Tensor GPT::forward(const Tensor& idx, std::vector<KVCache>* caches) const {
  Tensor x = hidden(idx, caches);
  return matmul(x, head_weight(x.dtype()).t());
}

Tensor GPT::loss(const Tensor& idx, const Tensor& targets) const {
  // The head and the loss fused: the (B T, V) logits are never all in memory.
  Tensor x = hidden(idx);
  return linear_cross_entropy(x.reshape({-1, config_.n_embd}), head_weight(x.dtype()), targets.reshape({-1}));
}

}  // namespace kiln::nn
