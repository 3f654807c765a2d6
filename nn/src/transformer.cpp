#include "kiln/nn/transformer.h"

#include <cmath>
#include <tuple>

#include "kiln/autograd.h"
#include "kiln/nn/init.h"
#include "kiln/nn/moe.h"
#include "kiln/ops.h"

namespace kiln::nn {

int64_t MlpSpec::swiglu_hidden(int64_t d_model, int64_t multiple_of, double multiplier) {
  const auto hidden = static_cast<int64_t>(multiplier * static_cast<double>(2 * 4 * d_model / 3));
  return (hidden + multiple_of - 1) / multiple_of * multiple_of;
}

bool is_gated(MlpKind kind) { return kind == MlpKind::SwiGLU || kind == MlpKind::GeGLU; }

Tensor mlp_activation(MlpKind kind, const Tensor& up) {
  if (is_gated(kind)) {
    const int64_t hidden = up.size(-1) / 2;
    Tensor gate = up.narrow(-1, 0, hidden), linear = up.narrow(-1, hidden, hidden);
    return kind == MlpKind::SwiGLU ? swiglu(gate, linear) : gelu(gate, "tanh") * linear;
  }
  if (kind == MlpKind::Relu) return relu(up);
  return gelu(up, kind == MlpKind::Gelu ? "none" : "tanh");
}

int64_t BlockSpec::mlp_hidden() const {
  if (mlp.hidden > 0) return mlp.hidden;
  return mlp.kind == MlpKind::SwiGLU ? MlpSpec::swiglu_hidden(d_model) : 4 * d_model;
}

void BlockSpec::check() const {
  const AttentionSpec& a = attention;
  for (int64_t size : {d_model, a.heads, a.kv_heads, a.head_dim, mlp.hidden, mlp.moe ? mlp.moe->experts : 0})
    KILN_CHECK(size < kMaxSpecSize, "[Block] a size of {} (d_model {}, heads {}, kv_heads {}, head_dim {}, MLP hidden "
               "{}): no model is that wide", size, d_model, a.heads, a.kv_heads, a.head_dim, mlp.hidden);
  KILN_CHECK(norm.eps > 0 && std::isfinite(norm.eps), "[Block] the norm's eps must be positive, got {}", norm.eps);
  KILN_CHECK(d_model > 0 && a.heads > 0 && (a.head_dim > 0 || d_model % a.heads == 0),
             "[Block] d_model ({}) must divide into {} heads (or give head_dim)", d_model, a.heads);
  KILN_CHECK(a.kv_heads >= 0 && a.heads % kv_heads() == 0, "[Block] {} heads must be a multiple of {} kv heads",
             a.heads, kv_heads());
  KILN_CHECK(!a.rope || (rotary_dims() % 2 == 0 && rotary_dims() <= head_dim() && a.rope->dims >= 0),
             "[Block] RoPE rotates an even number of a head's {} features, got {}", head_dim(), rotary_dims());
  KILN_CHECK(!(a.alibi && a.rope), "[Block] ALiBi and RoPE are two ways to give positions: choose one");
  KILN_CHECK(residual == Residual::Sequential || (placement == NormPlacement::Pre && !cross_attention),
             "[Block] parallel attention and MLP take pre-norm blocks without cross-attention");
  KILN_CHECK(dropout >= 0 && dropout <= 1, "[Block] dropout must be in [0, 1], got {}", dropout);
  KILN_CHECK(!(cross_attention && recompute), "[Block] recomputation does not yet replay cross-attention blocks");
  if (const auto& m = mlp.moe) {
    KILN_CHECK(m->experts >= 1 && m->top_k >= 1 && m->top_k <= m->experts,
               "[Block] MoE top-k ({}) must be in [1, experts ({})]", m->top_k, m->experts);
    KILN_CHECK(m->capacity_factor >= 0 && m->aux_loss_coeff >= 0 && m->z_loss_coeff >= 0 && m->every >= 1,
               "[Block] MoE capacity factor ({}), loss coefficients ({}, {}) must be >= 0 and every ({}) >= 1",
               m->capacity_factor, m->aux_loss_coeff, m->z_loss_coeff, m->every);
    KILN_CHECK(!mlp.bias, "[Block] MoE experts have no biases: set the MLP spec's bias to false");
  }
}

std::vector<double> alibi_slopes(int64_t heads) {
  KILN_CHECK(heads > 0, "[alibi_slopes] needs heads, got {}", heads);
  int64_t n = 1;
  while (2 * n <= heads) n *= 2;
  auto sequence = [](int64_t size, int64_t count, int64_t first, int64_t step) {
    std::vector<double> out;
    const double base = std::pow(2.0, -8.0 / static_cast<double>(size));
    for (int64_t i = 0; i < count; ++i) out.push_back(std::pow(base, static_cast<double>(first + i * step)));
    return out;
  };
  std::vector<double> slopes = sequence(n, n, 1, 1);
  const std::vector<double> extra = sequence(2 * n, heads - n, 1, 2);
  slopes.insert(slopes.end(), extra.begin(), extra.end());
  return slopes;
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

// This rank's attention heads and kv heads, checked to divide among the tensor-parallel ranks.
std::pair<int64_t, int64_t> rank_heads(const BlockSpec& spec, int tp) {
  check_split("the attention heads", spec.attention.heads, tp);
  check_split("the kv heads", spec.kv_heads(), tp);
  return {spec.attention.heads / tp, spec.kv_heads() / tp};
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
  const int64_t C = spec.d_model, D = spec.head_dim(), H = spec.attention.heads, Hkv = spec.kv_heads();
  std::tie(heads_, kv_heads_) = rank_heads(spec, factory.tp_size());
  head_dim_ = D;
  first_head_ = factory.tp_rank() * heads_;
  if (spec_.alibi) {
    const std::vector<double> all = alibi_slopes(H);
    slopes_ = tensor(std::vector<double>(all.begin() + first_head_, all.begin() + first_head_ + heads_))
                  .to(device, kFloat32);
  }
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
  if (spec_.rope) {
    // The first R features of each head rotate, the rest pass (partial rotary).
    const int64_t R = spec_.rope->dims > 0 ? spec_.rope->dims : D;
    Tensor cos, sin;
    if (!offset_rows)
      std::tie(cos, sin) = rope_tables(past, T, R, *spec_.rope, x.dtype() == kFloat64 ? kFloat64 : kFloat32, x.device());
    auto rotate = [&](const Tensor& t) {
      Tensor part = R < D ? t.narrow(3, 0, R).contiguous() : t;
      Tensor turned = offset_rows ? rope_at(part, inputs->positions, *spec_.rope) : rope(part, cos, sin);
      return R < D ? cat({turned, t.narrow(3, R, D - R)}, 3) : turned;
    };
    q = rotate(q);
    k = rotate(k);
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
  // On the model's device unless the model has moved since (Module::to).
  if (slopes_.defined()) options.alibi_slopes = slopes_.device() == x.device() ? slopes_ : slopes_.to(x.device());
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
  if (inputs && inputs->bias.defined()) {
    Tensor mine = inputs->bias.size(1) == heads_ ? inputs->bias : inputs->bias.narrow(1, first_head_, heads_);
    options.bias = options.bias.defined() ? options.bias + mine : mine;
  }
  Tensor y = scaled_dot_product_attention(q, k, v, options);  // (B, H, T, D)
  return dropout->forward(out->forward(y.transpose(1, 2).reshape({B, T, heads_ * D})));
}

CrossAttention::CrossAttention(const BlockSpec& spec, const LayerFactory& factory, Generator& dropout_gen, DType dtype,
                               Device device)
    : spec_(spec.attention) {
  const int64_t C = spec.d_model, D = spec.head_dim(), H = spec.attention.heads, Hkv = spec.kv_heads();
  std::tie(heads_, kv_heads_) = rank_heads(spec, factory.tp_size());
  head_dim_ = D;
  q = register_module("q", factory.column({C, H * D, spec_.qkv_bias, dtype, device}));
  kv = register_module("kv", factory.column({C, 2 * Hkv * D, spec_.qkv_bias, dtype, device}, {Hkv * D, Hkv * D}));
  out = register_module("out", factory.row({H * D, C, spec_.out_bias, dtype, device}));
  dropout = register_module("dropout", std::make_shared<Dropout>(spec.dropout, dropout_gen));
}

Tensor CrossAttention::forward(const Tensor& x, const Memory& memory, KVCache* cache) const {
  KILN_CHECK(memory.states.defined() && memory.states.dim() == 3 && memory.states.size(0) == x.size(0),
             "[CrossAttention] needs the encoder's output (B, S, C) for the {} rows of x {}, got {}", x.size(0),
             x.str(), memory.states.defined() ? memory.states.str() : "none");
  const int64_t B = x.size(0), T = x.size(1), D = head_dim_;
  Tensor q_x = q->forward(x).view({B, T, heads_, D}).transpose(1, 2);
  Tensor k, v;
  if (cache && cache->memory_k.defined()) {
    k = cache->memory_k;
    v = cache->memory_v;
  } else {
    const int64_t S = memory.states.size(1);
    Tensor kv_x = kv->forward(memory.states);
    k = kv_x.narrow(2, 0, kv_heads_ * D).view({B, S, kv_heads_, D}).transpose(1, 2);
    v = kv_x.narrow(2, kv_heads_ * D, kv_heads_ * D).view({B, S, kv_heads_, D}).transpose(1, 2);
    if (cache) {
      cache->memory_k = k.detach();
      cache->memory_v = v.detach();
    }
  }
  AttentionOptions options{.causal = false, .scale = spec_.scale, .key_lengths = memory.lengths};
  Tensor y = scaled_dot_product_attention(q_x, k, v, options);  // (B, H, T, D)
  return dropout->forward(out->forward(y.transpose(1, 2).reshape({B, T, heads_ * D})));
}

Mlp::Mlp(const BlockSpec& spec, const LayerFactory& factory, Generator& dropout_gen, DType dtype, Device device)
    : kind_(spec.mlp.kind) {
  const int64_t C = spec.d_model, hidden = spec.mlp_hidden();
  check_split("the MLP's hidden size", hidden, factory.tp_size());
  if (is_gated(kind_))
    up = register_module("up", factory.column({C, 2 * hidden, spec.mlp.bias, dtype, device}, {hidden, hidden}));
  else
    up = register_module("up", factory.column({C, hidden, spec.mlp.bias, dtype, device}));
  down = register_module("down", factory.row({hidden, C, spec.mlp.bias, dtype, device}));
  dropout = register_module("dropout", std::make_shared<Dropout>(spec.dropout, dropout_gen));
}

Tensor Mlp::forward(const Tensor& x) const {
  // GPT-2's activation runs in the up projection's GEMM epilogue.
  Tensor h = kind_ == MlpKind::GeluTanh ? up->forward(x, Activation::GeluTanh) : mlp_activation(kind_, up->forward(x));
  return dropout->forward(down->forward(h));
}

Block::Block(const BlockSpec& spec, const LayerFactory& factory, Generator& dropout_gen, DType dtype, Device device)
    : spec_(spec), dropout_gen_(&dropout_gen) {
  spec.check();
  attn_norm = register_module("attn_norm", make_norm(spec.norm, spec.d_model, dtype, device));
  attn = register_module("attn", std::make_shared<Attention>(spec, factory, dropout_gen, dtype, device));
  if (spec.cross_attention) {
    cross_norm = register_module("cross_norm", make_norm(spec.norm, spec.d_model, dtype, device));
    cross_attn = register_module("cross_attn", std::make_shared<CrossAttention>(spec, factory, dropout_gen, dtype, device));
  }
  if (spec.residual != Residual::ParallelSharedNorm)
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
  if (cross_attn) linears.insert(linears.end(), {cross_attn->q.get(), cross_attn->kv.get(), cross_attn->out.get()});
  if (mlp) linears.insert(linears.end(), {mlp->up.get(), mlp->down.get()});
  for (LinearLayer* l : linears) {
    const bool residual = l == attn->out.get() || (cross_attn && l == cross_attn->out.get()) ||
                          (mlp && l == mlp->down.get());
    init::normal_(l->weight, 0.0, residual ? residual_std : std, gen);
    if (l->bias.defined()) init::zeros_(l->bias);
  }
  if (moe) {
    init::normal_(moe->router, 0.0, std, gen);
    init::normal_(moe->up, 0.0, std, gen);
    init::normal_(moe->down, 0.0, residual_std, gen);
  }
  for (NormLayer* n : {attn_norm.get(), cross_norm.get(), mlp_norm.get()})
    if (n)
      for (auto& [name, p] : n->named_parameters()) p.fill_(name == "weight" ? 1.0 : 0.0);
}

Tensor Block::run(const Tensor& x, KVCache* cache, const AttentionInputs* inputs, const Memory* memory) const {
  if (cross_attn) KILN_CHECK(memory, "[Block] a cross-attention block needs the encoder's output (Memory)");
  if (spec_.residual != Residual::Sequential) {
    Tensor normed = attn_norm->forward(x);
    Tensor mixed = attn->forward(normed, cache, inputs);
    return x + mixed + feed_forward(mlp_norm ? mlp_norm->forward(x) : normed);
  }
  if (spec_.placement == NormPlacement::Post) {
    Tensor h = attn_norm->forward(x + attn->forward(x, cache, inputs));
    if (cross_attn) h = cross_norm->forward(h + cross_attn->forward(h, *memory, cache));
    return mlp_norm->forward(h + feed_forward(h));
  }
  // h = x + attn(norm(x)) [+ cross_attn(norm(h))], normed = norm(h) from one fused kernel each
  auto [h, normed] = (cross_attn ? cross_norm : mlp_norm)->forward_add(x, attn->forward(attn_norm->forward(x), cache, inputs));
  if (cross_attn) std::tie(h, normed) = mlp_norm->forward_add(h, cross_attn->forward(normed, *memory, cache));
  return h + feed_forward(normed);
}

Tensor Block::forward(const Tensor& x, KVCache* cache, const AttentionInputs* inputs, const Memory* memory) const {
  std::vector<Tensor> differentiable{x};
  for (const Tensor& p : parameters()) differentiable.push_back(p);
  if (!spec_.recompute || cache || !autograd::any_requires_grad(differentiable)) return run(x, cache, inputs, memory);
  KILN_CHECK(!inputs || !inputs->bias.defined() || !inputs->bias.requires_grad(), "[Block] recomputation does not "
             "yet replay a learned attention bias (T5's relative positions)");
  // Full recomputation: run without a graph, keep the input and where dropout
  // drew from; backward replays the block from there and backpropagates
  // through the replay (its parameters' gradients accumulate as usual).
  const uint64_t drawn_from = dropout_gen_->offset();
  Tensor out;
  {
    NoGradGuard no_grad;
    out = run(x, nullptr, inputs, nullptr);
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
      replay = run(input, nullptr, &masks, nullptr);
    }
    dropout_gen_->set_offset(now);
    autograd::backward({replay}, {g});
    return autograd::Grads{input_grad ? input.grad() : Tensor()};
  });
  return out;
}

}  // namespace kiln::nn
