#include "kiln/nn/transformer.h"

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::nn {

namespace {

std::shared_ptr<Linear> linear(const TransformerOptions& o, int64_t in, int64_t out, Generator& gen) {
  return std::make_shared<Linear>(LinearOptions{in, out, o.bias, o.dtype, o.device}, gen);
}

std::shared_ptr<LayerNorm> norm(const TransformerOptions& o) {
  return std::make_shared<LayerNorm>(NormOptions{.normalized_shape = {o.n_embd}, .bias = o.bias, .dtype = o.dtype,
                                                 .device = o.device});
}

}  // namespace

CausalSelfAttention::CausalSelfAttention(const TransformerOptions& o, Generator& gen) : options_(o) {
  KILN_CHECK(o.n_head > 0 && o.n_embd % o.n_head == 0, "[CausalSelfAttention] n_embd ({}) must divide into n_head ({})",
             o.n_embd, o.n_head);
  KILN_CHECK(o.n_head % o.kv_heads() == 0, "[CausalSelfAttention] n_head ({}) must be a multiple of n_kv_head ({})",
             o.n_head, o.kv_heads());
  KILN_CHECK(!o.rope || o.head_dim() % 2 == 0, "[CausalSelfAttention] RoPE needs an even head_dim, got {}",
             o.head_dim());
  c_attn = register_module("c_attn", linear(o, o.n_embd, (o.n_head + 2 * o.kv_heads()) * o.head_dim(), gen));
  c_proj = register_module("c_proj", linear(o, o.n_embd, o.n_embd, gen));
  resid_dropout = register_module("resid_dropout", std::make_shared<Dropout>(o.dropout, gen));
}

Tensor causal_attention(const Tensor& qkv, int64_t H, int64_t Hkv, double rope_theta, KVCache* cache) {
  KILN_CHECK(qkv.dim() == 3 && H > 0 && Hkv > 0 && H % Hkv == 0 && qkv.size(2) % (H + 2 * Hkv) == 0,
             "[causal_attention] expects qkv (B, T, (n_head + 2 n_kv_head) D) with n_head a multiple of n_kv_head; "
             "got shape [{}], n_head {}, n_kv_head {}", fmt::join(qkv.sizes(), ", "), H, Hkv);
  const int64_t B = qkv.size(0), T = qkv.size(1), D = qkv.size(2) / (H + 2 * Hkv);
  auto heads = [&](int64_t start, int64_t n) {  // -> (B, n, T, D)
    return qkv.narrow(2, start * D, n * D).view({B, T, n, D}).transpose(1, 2);
  };
  Tensor q = heads(0, H), k = heads(H, Hkv), v = heads(H + Hkv, Hkv);
  const int64_t past = cache ? cache->length() : 0;
  if (rope_theta > 0) {
    q = rope(q, past, rope_theta);
    k = rope(k, past, rope_theta);
  }
  if (cache) {
    if (past > 0) {
      k = cat({cache->k, k}, 2);
      v = cat({cache->v, v}, 2);
    }
    cache->k = k.detach();
    cache->v = v.detach();
  }
  Tensor y = scaled_dot_product_attention(q, k, v, {.causal = true});  // (B, H, T, D)
  return y.transpose(1, 2).reshape({B, T, H * D});
}

Tensor CausalSelfAttention::forward(const Tensor& x, KVCache* cache) const {
  const TransformerOptions& o = options_;
  KILN_CHECK(x.dim() == 3 && x.size(2) == o.n_embd, "[CausalSelfAttention] expects (B, T, {}), got shape [{}]",
             o.n_embd, fmt::join(x.sizes(), ", "));
  Tensor y = causal_attention(c_attn->forward(x), o.n_head, o.kv_heads(), o.rope ? o.rope_theta : 0.0, cache);
  return resid_dropout->forward(c_proj->forward(y));
}

MLP::MLP(const TransformerOptions& o, Generator& gen) {
  c_fc = register_module("c_fc", linear(o, o.n_embd, 4 * o.n_embd, gen));
  c_proj = register_module("c_proj", linear(o, 4 * o.n_embd, o.n_embd, gen));
  dropout = register_module("dropout", std::make_shared<Dropout>(o.dropout, gen));
}

Tensor MLP::forward(const Tensor& x) const {
  return dropout->forward(c_proj->forward(c_fc->forward(x, Activation::GeluTanh)));
}

Block::Block(const TransformerOptions& o, Generator& gen) {
  ln_1 = register_module("ln_1", norm(o));
  attn = register_module("attn", std::make_shared<CausalSelfAttention>(o, gen));
  ln_2 = register_module("ln_2", norm(o));
  mlp = register_module("mlp", std::make_shared<MLP>(o, gen));
}

Tensor Block::forward(const Tensor& x, KVCache* cache) const {
  auto [h, normed] = ln_2->forward_add(x, attn->forward(ln_1->forward(x), cache));  // h = x + attn(ln_1(x))
  return h + mlp->forward(normed);
}

}  // namespace kiln::nn
