#include "kiln/nn/transformer.h"

#include "kiln/autograd.h"
#include "kiln/nn/init.h"
#include "kiln/nn/moe.h"
#include "kiln/ops.h"

namespace kiln::nn {

int64_t MlpSpec::swiglu_hidden(int64_t d_model, int64_t multiple_of, double multiplier) {
  const auto hidden = static_cast<int64_t>(multiplier * static_cast<double>(2 * 4 * d_model / 3));
  return (hidden + multiple_of - 1) / multiple_of * multiple_of;
}

int64_t BlockSpec::mlp_hidden() const {
  if (mlp.hidden > 0) return mlp.hidden;
  return mlp.kind == MlpKind::SwiGLU ? MlpSpec::swiglu_hidden(d_model) : 4 * d_model;
}

void BlockSpec::check() const {
  const AttentionSpec& a = attention;
  KILN_CHECK(d_model > 0 && a.heads > 0 && (a.head_dim > 0 || d_model % a.heads == 0),
             "[Block] d_model ({}) must divide into {} heads (or give head_dim)", d_model, a.heads);
  KILN_CHECK(a.kv_heads >= 0 && a.heads % kv_heads() == 0, "[Block] {} heads must be a multiple of {} kv heads",
             a.heads, kv_heads());
  KILN_CHECK(!a.rope || head_dim() % 2 == 0, "[Block] RoPE needs an even head size, got {}", head_dim());
  KILN_CHECK(dropout >= 0 && dropout <= 1, "[Block] dropout must be in [0, 1], got {}", dropout);
  if (const auto& m = mlp.moe) {
    KILN_CHECK(m->experts >= 1 && m->top_k >= 1 && m->top_k <= m->experts,
               "[Block] MoE top-k ({}) must be in [1, experts ({})]", m->top_k, m->experts);
    KILN_CHECK(m->capacity_factor >= 0 && m->aux_loss_coeff >= 0 && m->z_loss_coeff >= 0 && m->every >= 1,
               "[Block] MoE capacity factor ({}), loss coefficients ({}, {}) must be >= 0 and every ({}) >= 1",
               m->capacity_factor, m->aux_loss_coeff, m->z_loss_coeff, m->every);
    KILN_CHECK(!mlp.bias, "[Block] MoE experts have no biases: set the MLP spec's bias to false");
  }
}

std::shared_ptr<NormLayer> make_norm(const NormSpec& spec, int64_t dim, DType dtype, Device device) {
  NormOptions o{.normalized_shape = {dim}, .eps = spec.eps, .bias = spec.bias, .dtype = dtype, .device = device};
  if (spec.kind == NormKind::RMSNorm) return std::make_shared<RMSNorm>(o);
  return std::make_shared<LayerNorm>(o);
}

namespace {
void check_split(const char* what, int64_t n, int tp) {
  KILN_CHECK(n % tp == 0, "[Block] {} ({}) must divide among {} tensor-parallel ranks", what, n, tp);
}

// The scores' bias (B, 1, 1, Tk) that hides each row's keys before key_starts[b]:
// a large finite negative rather than -inf, so that a padding query (which
// sees only padding) stays finite and nothing NaN reaches the real rows.
Tensor left_padding_bias(const Tensor& key_starts, int64_t keys, DType dtype) {
  const int64_t B = key_starts.size(0);
  const double hidden = dtype == kFloat16 ? -3e4 : -1e9;
  Tensor index = arange(0, keys, 1, TensorOptions(kInt64).device(key_starts.device())).view({1, keys});
  Tensor padding = lt(index, key_starts.to(kInt64).view({B, 1}));
  return where(padding, hidden, zeros({B, keys}, TensorOptions(dtype).device(key_starts.device()))).view({B, 1, 1, keys});
}
}  // namespace

Attention::Attention(const BlockSpec& spec, const LayerFactory& factory, Generator& dropout_gen, DType dtype,
                     Device device)
    : spec_(spec.attention) {
  spec.check();
  const int tp = factory.tp_size();
  const int64_t C = spec.d_model, D = spec.head_dim(), H = spec.attention.heads, Hkv = spec.kv_heads();
  check_split("the attention heads", H, tp);
  check_split("the kv heads", Hkv, tp);
  heads_ = H / tp;
  kv_heads_ = Hkv / tp;
  head_dim_ = D;
  qkv = register_module("qkv", factory.column({C, (H + 2 * Hkv) * D, spec_.qkv_bias, dtype, device},
                                              {H * D, Hkv * D, Hkv * D}));
  out = register_module("out", factory.row({H * D, C, spec_.out_bias, dtype, device}));
  dropout = register_module("dropout", std::make_shared<Dropout>(spec.dropout, dropout_gen));
}

Tensor Attention::forward(const Tensor& x, KVCache* cache, const AttentionInputs* inputs) const {
  Tensor qkv_x = qkv->forward(x);  // (B, T, (H + 2 Hkv) D) of this rank's heads
  const int64_t B = qkv_x.size(0), T = qkv_x.size(1), D = head_dim_;
  auto heads = [&](int64_t start, int64_t n) {  // -> (B, n, T, D)
    return qkv_x.narrow(2, start * D, n * D).view({B, T, n, D}).transpose(1, 2);
  };
  Tensor q = heads(0, heads_), k = heads(heads_, kv_heads_), v = heads(heads_ + kv_heads_, kv_heads_);
  const int64_t past = cache ? cache->length() : 0;
  const bool offset_rows = inputs && inputs->positions.defined();
  if (spec_.rope && offset_rows) {
    q = rope_at(q, inputs->positions, *spec_.rope);
    k = rope_at(k, inputs->positions, *spec_.rope);
  } else if (spec_.rope) {
    auto [cos, sin] = rope_tables(past, T, D, *spec_.rope, x.dtype() == kFloat64 ? kFloat64 : kFloat32, x.device());
    q = rope(q, cos, sin);
    k = rope(k, cos, sin);
  }
  if (cache) {
    if (past > 0) {
      k = cat({cache->k, k}, 2);
      v = cat({cache->v, v}, 2);
    }
    cache->k = k.detach();
    cache->v = v.detach();
  }
  AttentionOptions options{.causal = spec_.mask != AttentionMask::Bidirectional, .scale = spec_.scale};
  if (inputs && inputs->cu_seqlens.defined()) {
    KILN_CHECK(!cache && spec_.mask != AttentionMask::PrefixLM, "[Attention] packed examples (cu_seqlens) take "
               "causal or bidirectional attention without a KV cache");
    auto packed = [&](const Tensor& t) { return t.transpose(1, 2).reshape({B * T, t.size(1), D}); };
    Tensor y = scaled_dot_product_attention_varlen(packed(q), packed(k), packed(v), inputs->cu_seqlens,
                                                   inputs->cu_seqlens, options);  // (B T, H, D)
    return dropout->forward(out->forward(y.view({B, T, heads_ * D})));
  }
  if (spec_.mask == AttentionMask::PrefixLM) {
    KILN_CHECK(inputs && inputs->prefix_lengths.defined(), "[Attention] a prefix-LM mask needs the batch's "
               "prefix_lengths (AttentionInputs)");
    options.prefix_lengths = inputs->prefix_lengths;
  }
  if (inputs) options.key_lengths = inputs->key_lengths;
  if (inputs && inputs->key_starts.defined()) options.bias = left_padding_bias(inputs->key_starts, k.size(2), q.dtype());
  Tensor y = scaled_dot_product_attention(q, k, v, options);  // (B, H, T, D)
  return dropout->forward(out->forward(y.transpose(1, 2).reshape({B, T, heads_ * D})));
}

Mlp::Mlp(const BlockSpec& spec, const LayerFactory& factory, Generator& dropout_gen, DType dtype, Device device)
    : kind_(spec.mlp.kind) {
  const int64_t C = spec.d_model, hidden = spec.mlp_hidden();
  check_split("the MLP's hidden size", hidden, factory.tp_size());
  if (kind_ == MlpKind::SwiGLU)
    up = register_module("up", factory.column({C, 2 * hidden, spec.mlp.bias, dtype, device}, {hidden, hidden}));
  else
    up = register_module("up", factory.column({C, hidden, spec.mlp.bias, dtype, device}));
  down = register_module("down", factory.row({hidden, C, spec.mlp.bias, dtype, device}));
  dropout = register_module("dropout", std::make_shared<Dropout>(spec.dropout, dropout_gen));
}

Tensor Mlp::forward(const Tensor& x) const {
  Tensor h;
  if (kind_ == MlpKind::SwiGLU) {
    Tensor gate_up = up->forward(x);
    const int64_t hidden = gate_up.size(-1) / 2;
    h = swiglu(gate_up.narrow(-1, 0, hidden), gate_up.narrow(-1, hidden, hidden));
  } else if (kind_ == MlpKind::Gelu) {
    h = gelu(up->forward(x));
  } else {
    h = up->forward(x, Activation::GeluTanh);
  }
  return dropout->forward(down->forward(h));
}

Block::Block(const BlockSpec& spec, const LayerFactory& factory, Generator& dropout_gen, DType dtype, Device device)
    : spec_(spec), dropout_gen_(&dropout_gen) {
  spec.check();
  attn_norm = register_module("attn_norm", make_norm(spec.norm, spec.d_model, dtype, device));
  attn = register_module("attn", std::make_shared<Attention>(spec, factory, dropout_gen, dtype, device));
  mlp_norm = register_module("mlp_norm", make_norm(spec.norm, spec.d_model, dtype, device));
  if (spec.mlp.moe) {
    // The experts are whole on every tensor-parallel rank, which all see the
    // same tokens; a slice of the sequence would give each rank its own
    // routing and auxiliary losses.
    KILN_CHECK(!factory.sequence_parallel(), "[Block] MoE layers do not run with sequence parallelism");
    moe = register_module("mlp", std::make_shared<MoeLayer>(spec, factory, dropout_gen, dtype, device));
  } else {
    mlp = register_module("mlp", std::make_shared<Mlp>(spec, factory, dropout_gen, dtype, device));
  }
}

Tensor Block::feed_forward(const Tensor& x) const { return moe ? moe->forward(x) : mlp->forward(x); }

void Block::reset_parameters(Generator& gen, double std, double residual_std) {
  NoGradGuard no_grad;
  std::vector<LinearLayer*> linears{attn->qkv.get(), attn->out.get()};
  if (mlp) linears.insert(linears.end(), {mlp->up.get(), mlp->down.get()});
  for (LinearLayer* l : linears) {
    const bool residual = l == attn->out.get() || (mlp && l == mlp->down.get());
    init::normal_(l->weight, 0.0, residual ? residual_std : std, gen);
    if (l->bias.defined()) init::zeros_(l->bias);
  }
  if (moe) {
    init::normal_(moe->router, 0.0, std, gen);
    init::normal_(moe->up, 0.0, std, gen);
    init::normal_(moe->down, 0.0, residual_std, gen);
  }
  for (NormLayer* n : {attn_norm.get(), mlp_norm.get()})
    for (auto& [name, p] : n->named_parameters()) p.fill_(name == "weight" ? 1.0 : 0.0);
}

Tensor Block::run(const Tensor& x, KVCache* cache, const AttentionInputs* inputs) const {
  if (spec_.placement == NormPlacement::Post) {
    Tensor h = attn_norm->forward(x + attn->forward(x, cache, inputs));
    return mlp_norm->forward(h + feed_forward(h));
  }
  // h = x + attn(norm(x))
  auto [h, normed] = mlp_norm->forward_add(x, attn->forward(attn_norm->forward(x), cache, inputs));
  return h + feed_forward(normed);
}

Tensor Block::forward(const Tensor& x, KVCache* cache, const AttentionInputs* inputs) const {
  std::vector<Tensor> differentiable{x};
  for (const Tensor& p : parameters()) differentiable.push_back(p);
  if (!spec_.recompute || cache || !autograd::any_requires_grad(differentiable)) return run(x, cache, inputs);
  // Full recomputation: run without a graph, keep the input and where dropout
  // drew from; backward replays the block from there and backpropagates
  // through the replay (its parameters' gradients accumulate as usual).
  const uint64_t drawn_from = dropout_gen_->offset();
  Tensor out;
  {
    NoGradGuard no_grad;
    out = run(x, nullptr, inputs);
  }
  autograd::SavedTensor saved(x, "Block recomputation");
  const bool input_grad = x.requires_grad();
  const AttentionInputs masks = inputs ? *inputs : AttentionInputs{};
  autograd::record("Block recomputation", out, {x}, [this, saved, drawn_from, input_grad, masks](const Tensor& g,
                                                                                              const autograd::Needs&) {
    Tensor input = saved.get().detach().requires_grad_(input_grad);
    const uint64_t now = dropout_gen_->offset();
    dropout_gen_->set_offset(drawn_from);
    Tensor replay;
    {
      autograd::EnableGradGuard grad;
      replay = run(input, nullptr, &masks);
    }
    dropout_gen_->set_offset(now);
    autograd::backward({replay}, {g});
    return autograd::Grads{input_grad ? input.grad() : Tensor()};
  });
  return out;
}

}  // namespace kiln::nn
