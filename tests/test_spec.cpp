// Blocks built from a spec against a naive float64 transformer written here
// from elementary ops (matmul, exp, sums): each norm kind and placement, bias
// or none, multi-head, grouped- and multi-query attention, head sizes apart
// from d_model / heads, RoPE with and without Llama 3's frequency scaling,
// causal, bidirectional and prefix-LM masks with key padding, a given softmax scale, GELU and SwiGLU
// MLPs; gradients by finite differences; and activation recomputation, which
// must give the same gradients as the stored activations, dropout included.

#include <numbers>

#include "helpers.h"

using namespace kiln;
using kt::values;

namespace {

// The parameter of `block` named `name`, undefined when it has none.
Tensor param(const nn::Block& block, const std::string& name) {
  for (auto& [n, p] : block.named_parameters())
    if (n == name) return p;
  return {};
}

Tensor ref_linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  Tensor y = matmul(x, w.t());
  return b.defined() ? y + b : y;
}

Tensor ref_norm(const Tensor& x, const nn::NormSpec& spec, const Tensor& w, const Tensor& b) {
  Tensor y;
  if (spec.kind == nn::NormKind::LayerNorm) {
    Tensor centered = x - mean(x, {-1}, true);
    y = centered / sqrt(mean(centered * centered, {-1}, true) + spec.eps);
  } else {
    y = x / sqrt(mean(x * x, {-1}, true) + spec.eps);
  }
  y = y * w;
  return b.defined() ? y + b : y;
}

// Hugging Face's rotary inverse frequencies (modeling_rope_utils), written out.
std::vector<double> ref_inverse_frequencies(int64_t dim, const nn::RopeSpec& rope) {
  std::vector<double> inv;
  for (int64_t i = 0; i < dim; i += 2) inv.push_back(1.0 / std::pow(rope.theta, static_cast<double>(i) / dim));
  if (!rope.scaling) return inv;
  const nn::RopeScaling& s = *rope.scaling;
  const double old_context = static_cast<double>(s.original_max_positions);
  for (double& f : inv) {
    const double wavelen = 2 * std::numbers::pi / f;
    double scaled = wavelen > old_context / s.low_freq_factor ? f / s.factor : f;
    const double smooth = (old_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    const bool medium = !(wavelen < old_context / s.high_freq_factor) && !(wavelen > old_context / s.low_freq_factor);
    if (medium) scaled = (1 - smooth) * scaled / s.factor + smooth * scaled;
    f = scaled;
  }
  return inv;
}

// x (B, H, T, D) rotated as Hugging Face's apply_rotary_pos_emb does (rotate_half).
Tensor ref_rope(const Tensor& x, const nn::RopeSpec& rope) {
  if (rope.dims > 0 && rope.dims < x.size(3))  // partial rotary: the first dims features only
    return cat({ref_rope(x.narrow(3, 0, rope.dims), {rope.theta, rope.scaling}),
                x.narrow(3, rope.dims, x.size(3) - rope.dims)}, 3);
  const int64_t T = x.size(2), D = x.size(3);
  std::vector<double> inv = ref_inverse_frequencies(D, rope), c, s;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D; ++i) {
      c.push_back(std::cos(static_cast<double>(t) * inv[static_cast<size_t>(i % (D / 2))]));
      s.push_back(std::sin(static_cast<double>(t) * inv[static_cast<size_t>(i % (D / 2))]));
    }
  Tensor cos_t = tensor(c).view({T, D}), sin_t = tensor(s).view({T, D});
  Tensor rotated = cat({x.narrow(3, D / 2, D / 2) * -1.0, x.narrow(3, 0, D / 2)}, 3);
  return x * cos_t + rotated * sin_t;
}

// Per-batch prefix and key lengths, empty when the case has none.
struct Lengths {
  std::vector<int64_t> prefix, keys;
};

Tensor ref_attention(const Tensor& x, const nn::BlockSpec& spec, const nn::Block& block, const Lengths& lengths) {
  const int64_t B = x.size(0), T = x.size(1), D = spec.head_dim(), H = spec.attention.heads, Hkv = spec.kv_heads();
  Tensor qkv = ref_linear(x, param(block, "attn.qkv.weight"), param(block, "attn.qkv.bias"));
  auto heads = [&](int64_t first, int64_t n) {
    return qkv.narrow(2, first * D, n * D).reshape({B, T, n, D}).transpose(1, 2);  // (B, n, T, D)
  };
  Tensor q = heads(0, H), k = heads(H, Hkv), v = heads(H + Hkv, Hkv);
  if (spec.attention.rope) {
    q = ref_rope(q, *spec.attention.rope);
    k = ref_rope(k, *spec.attention.rope);
  }
  const double scale = spec.attention.scale.value_or(1.0 / std::sqrt(static_cast<double>(D)));
  // ALiBi: BLOOM's slopes written out for 5 heads (those of 4, then the 1st of 8's odd powers).
  const std::vector<double> slopes = {std::pow(2.0, -2.0), std::pow(2.0, -4.0), std::pow(2.0, -6.0),
                                      std::pow(2.0, -8.0), std::pow(2.0, -1.0)};
  std::vector<Tensor> outs;
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / (H / Hkv);  // the kv head this query head reads
    Tensor qh = q.narrow(1, h, 1), kh = k.narrow(1, g, 1), vh = v.narrow(1, g, 1);
    Tensor scores = matmul(qh, kh.transpose(2, 3)) * scale;  // (B, 1, T, T)
    if (spec.attention.alibi) {
      REQUIRE(H == 5);
      std::vector<double> distance;  // slope (j - i)
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j < T; ++j) distance.push_back(slopes[static_cast<size_t>(h)] * static_cast<double>(j - i));
      scores = scores + tensor(distance).view({1, 1, T, T});
    }
    std::vector<double> seen;  // (B, 1, T, T): 1 where query i sees key j
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j < T; ++j) {
          bool visible = spec.attention.mask == nn::AttentionMask::Bidirectional || j <= i ||
                         (spec.attention.mask == nn::AttentionMask::PrefixLM && j < lengths.prefix[b]);
          if (!lengths.keys.empty() && j >= lengths.keys[b]) visible = false;
          seen.push_back(visible ? 1.0 : 0.0);
        }
    Tensor visible = tensor(seen).view({B, 1, T, T});
    Tensor e = exp(scores - max(scores, 3, true)) * visible;
    Tensor total = sum(e, {3}, true);
    outs.push_back(matmul(e / where(total > 0, total, 1.0), vh));  // a query that sees nothing: zeros
  }
  Tensor y = cat(outs, 1).transpose(1, 2).reshape({B, T, H * D});
  return ref_linear(y, param(block, "attn.out.weight"), param(block, "attn.out.bias"));
}

Tensor ref_gelu_tanh(const Tensor& x) {
  return x * 0.5 * (tanh((x + x * x * x * 0.044715) * std::sqrt(2.0 / std::numbers::pi)) + 1.0);
}

Tensor ref_mlp(const Tensor& x, const nn::BlockSpec& spec, const nn::Block& block) {
  Tensor up = ref_linear(x, param(block, "mlp.up.weight"), param(block, "mlp.up.bias"));
  Tensor h;
  const int64_t half = up.size(-1) / 2;
  if (spec.mlp.kind == nn::MlpKind::SwiGLU) {
    Tensor gate = up.narrow(-1, 0, half);
    h = gate / (exp(gate * -1.0) + 1.0) * up.narrow(-1, half, half);
  } else if (spec.mlp.kind == nn::MlpKind::GeGLU) {
    h = ref_gelu_tanh(up.narrow(-1, 0, half)) * up.narrow(-1, half, half);
  } else if (spec.mlp.kind == nn::MlpKind::Relu) {
    h = (up + abs(up)) * 0.5;
  } else if (spec.mlp.kind == nn::MlpKind::Gelu) {  // x Phi(x), Phi from std::erf
    std::vector<double> phi = values(up);
    for (double& v : phi) v = 0.5 * (1.0 + std::erf(v / std::sqrt(2.0)));
    h = up * tensor(phi, kFloat64).view(up.sizes());
  } else {
    h = ref_gelu_tanh(up);
  }
  return ref_linear(h, param(block, "mlp.down.weight"), param(block, "mlp.down.bias"));
}

Tensor ref_block(const Tensor& x, const nn::BlockSpec& spec, const nn::Block& block, const Lengths& lengths) {
  auto norm = [&](const Tensor& t, const char* which) {
    return ref_norm(t, spec.norm, param(block, std::string(which) + ".weight"), param(block, std::string(which) + ".bias"));
  };
  if (spec.placement == nn::NormPlacement::Post) {
    Tensor h = norm(x + ref_attention(x, spec, block, lengths), "attn_norm");
    return norm(h + ref_mlp(h, spec, block), "mlp_norm");
  }
  if (spec.residual == nn::Residual::Parallel)
    return x + ref_attention(norm(x, "attn_norm"), spec, block, lengths) + ref_mlp(norm(x, "mlp_norm"), spec, block);
  if (spec.residual == nn::Residual::ParallelSharedNorm) {
    Tensor normed = norm(x, "attn_norm");
    return x + ref_attention(normed, spec, block, lengths) + ref_mlp(normed, spec, block);
  }
  Tensor h = x + ref_attention(norm(x, "attn_norm"), spec, block, lengths);
  return h + ref_mlp(norm(h, "mlp_norm"), spec, block);
}

struct Case {
  const char* name;
  nn::BlockSpec spec;
  Lengths lengths;  // of a batch of 2 sequences of 7
};

nn::AttentionInputs inputs_of(const Lengths& l) {
  nn::AttentionInputs in;
  if (!l.prefix.empty()) in.prefix_lengths = tensor(l.prefix);
  if (!l.keys.empty()) in.key_lengths = tensor(l.keys).to(kInt32);
  return in;
}

std::vector<Case> cases() {
  const nn::NormSpec rms{.kind = nn::NormKind::RMSNorm, .eps = 1e-6, .bias = false};
  nn::BlockSpec gpt2{.d_model = 16, .attention = {.heads = 4}};
  nn::BlockSpec llama{.d_model = 16, .norm = rms, .attention = {.heads = 4, .kv_heads = 2, .qkv_bias = false,
                      .out_bias = false, .rope = nn::RopeSpec{500000.0}},
                      .mlp = {.kind = nn::MlpKind::SwiGLU, .hidden = 24, .bias = false}};
  nn::BlockSpec post = gpt2;
  post.placement = nn::NormPlacement::Post;
  post.attention.mask = nn::AttentionMask::Bidirectional;
  nn::BlockSpec bert = post;
  bert.mlp.kind = nn::MlpKind::Gelu;
  bert.norm.eps = 1e-12;
  nn::BlockSpec mqa = llama;
  mqa.attention.kv_heads = 1;
  mqa.attention.head_dim = 6;  // heads * head_dim != d_model
  mqa.attention.scale = 0.3;
  nn::BlockSpec scaled = llama;
  // Short wavelengths kept, long ones slowed, the ones between interpolated: at this
  // original context, head size 4 has a pair on each side of the band.
  scaled.attention.rope = nn::RopeSpec{10.0, nn::RopeScaling{4.0, 1.0, 4.0, 8}};
  nn::BlockSpec prefix_lm = llama;
  prefix_lm.attention.mask = nn::AttentionMask::PrefixLM;
  nn::BlockSpec relu = post;
  relu.mlp = {.kind = nn::MlpKind::Relu, .hidden = 20, .bias = false};
  nn::BlockSpec geglu = llama;
  geglu.mlp = {.kind = nn::MlpKind::GeGLU, .hidden = 20, .bias = true};
  nn::BlockSpec layer_norm_no_bias = gpt2;
  layer_norm_no_bias.norm.bias = false;
  layer_norm_no_bias.mlp = {.kind = nn::MlpKind::SwiGLU, .bias = true};
  layer_norm_no_bias.attention.rope = nn::RopeSpec{};
  nn::BlockSpec neox = gpt2;  // parallel attention and MLP, a quarter of each head rotated
  neox.residual = nn::Residual::Parallel;
  neox.mlp.kind = nn::MlpKind::Gelu;
  neox.attention.head_dim = 8;
  neox.attention.rope = nn::RopeSpec{.theta = 10000.0, .dims = 2};
  nn::BlockSpec bloom = gpt2;  // ALiBi over 5 heads (not a power of two)
  bloom.attention = {.heads = 5, .head_dim = 4, .alibi = true};
  nn::BlockSpec palm = llama;  // one norm for both, half of each head rotated
  palm.residual = nn::Residual::ParallelSharedNorm;
  palm.attention.rope->dims = 2;
  return {{"GPT-2: LayerNorm, pre-norm, MHA, biases, GELU", gpt2},
          {"Llama: RMSNorm, GQA, RoPE 500000, SwiGLU, no biases", llama},
          {"post-norm, bidirectional", post},
          {"BERT: post-norm, bidirectional, GELU with erf, eps 1e-12", bert, {{}, {7, 5}}},
          {"MQA, head size 6, scale 0.3", mqa},
          {"ReLU MLP without biases (T5 v1.0)", relu},
          {"GeGLU MLP with biases (T5 v1.1's gated GELU)", geglu},
          {"RoPE with Llama 3 scaling", scaled},
          {"LayerNorm without bias, SwiGLU with biases (default hidden size), RoPE", layer_norm_no_bias},
          {"prefix-LM with key padding", prefix_lm, {{3, 0}, {7, 5}}},
          {"bidirectional with key padding, one sequence all padding", post, {{}, {4, 0}}},
          {"causal with key padding", gpt2, {{}, {2, 6}}},
          {"GPT-NeoX: parallel attention and MLP, partial rotary", neox},
          {"PaLM-style: parallel with one shared norm, partial rotary, GQA", palm},
          {"BLOOM: ALiBi, 5 heads", bloom},
          {"ALiBi with key padding", bloom, {{}, {7, 4}}}};
}

}  // namespace

TEST_CASE("blocks from every spec option match a naive float64 transformer") {
  Generator gen(1);
  for (const Case& c : cases()) {
    INFO(c.name);
    nn::Block block(c.spec, gen, kFloat64);
    block.reset_parameters(gen, 0.3, 0.3);
    {
      NoGradGuard no_grad;  // norms away from one, biases away from zero, so both are tested
      for (auto& [name, p] : block.named_parameters())
        if (p.dim() == 1) p.add_(randn(p.sizes(), gen, kFloat64) * 0.2);
    }
    Tensor x = randn({2, 7, 16}, gen, kFloat64);
    const nn::AttentionInputs in = inputs_of(c.lengths);
    KT_CHECK_CLOSE(block.forward(x, nullptr, &in), values(ref_block(x, c.spec, block, c.lengths)), 1e-12);
  }
  nn::BlockSpec swiglu{.d_model = 96, .mlp = {.kind = nn::MlpKind::SwiGLU}};
  CHECK(swiglu.mlp_hidden() == 256);  // 2/3 of 4 x 96, up to a multiple of 256
  CHECK(nn::MlpSpec::swiglu_hidden(4096, 256, 1.0) == 11008);  // Llama 2 7B
  CHECK(nn::MlpSpec::swiglu_hidden(8192, 4096, 1.3) == 28672);  // Llama 2 70B
}

TEST_CASE("block gradients match finite differences") {
  // GPT-2's and Llama's blocks, a prefix-LM with padding, NeoX's parallel
  // block with partial rotary and BLOOM's ALiBi (every op's own gradient is checked in
  // test_ops; this checks their composition).
  Generator gen(2);
  const std::vector<Case> all = cases();
  for (const Case& c : {all[0], all[1], all[6], all[12], all[14]}) {
    INFO(c.name);
    nn::BlockSpec spec = c.spec;
    nn::Block block(spec, gen, kFloat64);
    block.reset_parameters(gen, 0.3, 0.3);
    std::vector<Tensor> inputs{kt::leaf({2, 7, 16}, gen)};
    for (const Tensor& p : block.parameters()) inputs.push_back(p);
    const nn::AttentionInputs in = inputs_of(c.lengths);
    kt::check_grad([&](const std::vector<Tensor>& v) { return block.forward(v[0], nullptr, &in); }, inputs);
  }
}

TEST_CASE("recomputed blocks give the gradients of stored activations, dropout included") {
  for (const Case& c : cases()) {
    INFO(c.name);
    nn::BlockSpec spec = c.spec;
    spec.dropout = 0.2;
    auto gradients = [&](bool recompute) {
      spec.recompute = recompute;
      Generator init(3), drop(4);
      nn::Block first(spec, drop, kFloat64), second(spec, drop, kFloat64);
      first.reset_parameters(init, 0.3, 0.3);
      second.reset_parameters(init, 0.3, 0.3);
      Tensor x = randn({2, 7, 16}, init, kFloat64).requires_grad_();
      const nn::AttentionInputs in = inputs_of(c.lengths);
      Tensor y = second.forward(first.forward(x, nullptr, &in), nullptr, &in);
      sum(y * randn(y.sizes(), init, kFloat64)).backward();
      std::vector<std::vector<double>> out{values(x.grad())};
      for (const nn::Block* b : {&first, &second})
        for (const Tensor& p : b->parameters()) out.push_back(values(p.grad()));
      out.push_back({static_cast<double>(drop.offset())});  // dropout draws as often
      return out;
    };
    CHECK(gradients(true) == gradients(false));
  }
}

TEST_CASE("RoPE tables: cached, equal to the rope op's own, and Llama 3's scaling") {
  Generator gen(5);
  Tensor x = randn({1, 2, 6, 8}, gen, kFloat64);
  auto [cos, sin] = nn::rope_tables(3, 6, 8, {.theta = 100.0}, kFloat64, kCPU);
  CHECK(values(rope(x, cos, sin)) == values(rope(x, 3, 100.0)));
  auto [cos2, sin2] = nn::rope_tables(3, 6, 8, {.theta = 100.0}, kFloat64, kCPU);
  CHECK(cos2.is_same(cos) == false);  // a view per call,
  CHECK(cos2.data_ptr() == cos.data_ptr());  // of one cached table
  const nn::RopeSpec llama31{500000.0, nn::RopeScaling{8.0, 1.0, 4.0, 8192}};
  std::vector<double> got = nn::rope_inverse_frequencies(128, llama31), want = ref_inverse_frequencies(128, llama31);
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(want[i]).epsilon(1e-14));
  CHECK(got[0] == want[0]);             // high frequencies kept
  CHECK(got[63] == Approx(std::pow(500000.0, -126.0 / 128) / 8).epsilon(1e-14));  // low ones slowed 8x
  CHECK_THROWS_WITH(rope(x, cos.narrow(0, 0, 5), sin), Catch::Contains("expects cos and sin tables of shape [6, 4]"));
  CHECK_THROWS_WITH(nn::rope_tables(0, 4, 7, {}, kFloat32, kCPU), Catch::Contains("needs an even head size"));
}

TEST_CASE("ALiBi's slopes are BLOOM's") {
  // BLOOM's build_alibi_tensor: 2^(-8/n) to the powers 1..n, then 2^(-8/2n) to the odd powers.
  const std::vector<double> four = {0.25, 0.0625, 0.015625, 0.00390625};
  CHECK(nn::alibi_slopes(4) == four);
  const std::vector<double> six = nn::alibi_slopes(6);
  REQUIRE(six.size() == 6);
  CHECK(six[4] == Approx(std::pow(2.0, -1.0)).epsilon(1e-15));
  CHECK(six[5] == Approx(std::pow(2.0, -3.0)).epsilon(1e-15));
  CHECK(nn::alibi_slopes(1) == std::vector<double>{std::pow(2.0, -8.0)});
}

TEST_CASE("a spec whose sizes do not fit raises a clear error") {
  Generator gen(6);
  nn::BlockSpec heads{.d_model = 10, .attention = {.heads = 4}};
  CHECK_THROWS_WITH(nn::Block(heads, gen), Catch::Contains("d_model (10) must divide into 4 heads"));
  nn::BlockSpec kv{.d_model = 16, .attention = {.heads = 4, .kv_heads = 3}};
  CHECK_THROWS_WITH(nn::Block(kv, gen), Catch::Contains("4 heads must be a multiple of 3 kv heads"));
  nn::BlockSpec odd{.d_model = 12, .attention = {.heads = 4, .rope = nn::RopeSpec{}}};
  CHECK_THROWS_WITH(nn::Block(odd, gen), Catch::Contains("RoPE rotates an even number of a head's 3 features, got 3"));
  nn::BlockSpec wide{.d_model = 16, .attention = {.heads = 4, .rope = nn::RopeSpec{.dims = 6}}};
  CHECK_THROWS_WITH(nn::Block(wide, gen), Catch::Contains("a head's 4 features, got 6"));
  nn::BlockSpec both{.d_model = 16, .attention = {.heads = 4, .rope = nn::RopeSpec{}, .alibi = true}};
  CHECK_THROWS_WITH(nn::Block(both, gen), Catch::Contains("ALiBi and RoPE are two ways to give positions"));
  nn::BlockSpec parallel_post{.d_model = 16, .placement = nn::NormPlacement::Post,
                              .residual = nn::Residual::Parallel, .attention = {.heads = 4}};
  CHECK_THROWS_WITH(nn::Block(parallel_post, gen), Catch::Contains("parallel attention and MLP take pre-norm blocks"));
  nn::Block prefix({.d_model = 8, .attention = {.heads = 2, .mask = nn::AttentionMask::PrefixLM}}, gen);
  prefix.reset_parameters(gen);
  CHECK_THROWS_WITH(prefix.forward(randn({1, 3, 8}, gen)), Catch::Contains("a prefix-LM mask needs the batch's prefix_lengths"));
}

TEST_CASE("packed examples give the loss and gradients of one example a row") {
  Generator gen(31);
  nn::ModelSpec llama = nn::LlamaConfig{.vocab_size = 30, .hidden_size = 16, .intermediate_size = 32,
                                        .num_hidden_layers = 2, .num_attention_heads = 4, .num_key_value_heads = 2,
                                        .max_position_embeddings = 32}
                            .spec();
  nn::ModelSpec gpt = nn::GPTConfig{.vocab_size = 30, .block_size = 32, .n_layer = 2, .n_head = 2, .n_embd = 16}.spec();
  std::vector<data::ChatExample> examples;
  for (int64_t n : {5, 3, 7, 2, 6}) {
    data::ChatExample e;
    for (int64_t t = 0; t < n; ++t) {
      e.inputs.push_back(randint(0, 30, {1}, gen).item<int64_t>());
      e.targets.push_back(t % 2 == 0 ? randint(0, 30, {1}, gen).item<int64_t>() : -100);
    }
    examples.push_back(e);
  }
  std::vector<const data::ChatExample*> views;
  for (const auto& e : examples) views.push_back(&e);
  data::ExampleBatch packed = data::pack_examples(views, 10, 0), padded = data::pad_examples(views, 0);
  CHECK(packed.inputs.size(0) == 3);  // 5 + 3 + 2, 7, 6
  CHECK(values(packed.lengths) == std::vector<double>{10, 7, 6});
  CHECK(values(packed.attention.cu_seqlens) == std::vector<double>{0, 5, 8, 10, 17, 20, 26, 30});
  for (const nn::ModelSpec& spec : {gpt, llama}) {
    INFO(spec.family);
    nn::TransformerLM model(spec, gen, kFloat64);
    auto loss_and_grads = [&](const data::ExampleBatch& b) {
      model.zero_grad();
      Tensor loss = model.loss(b.inputs, b.targets, &b.attention);
      loss.backward();
      std::vector<Tensor> grads{loss.detach()};
      for (Tensor p : model.parameters()) grads.push_back(p.grad().clone());
      return grads;
    };
    auto want = loss_and_grads(padded), got = loss_and_grads(packed);
    for (size_t i = 0; i < want.size(); ++i) KT_CHECK_CLOSE(got[i], values(want[i]), 1e-10);
  }
}
