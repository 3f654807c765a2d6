// LoRA adapters against the merged weights written out here (W + (alpha / r)
// B A on each adapted layer's rows): the adapted model's logits equal a plain
// model's with those weights; it starts unchanged; gradients reach the
// adapters alone and match finite differences; merge and unmerge. (At a
// tensor-parallel layout: test_parallel.)

#include <filesystem>

#include "helpers.h"

using namespace kiln;
using kt::values;

namespace {

// GQA (4 heads, 2 kv heads of 4 features) and a SwiGLU MLP of 24.
nn::ModelSpec tiny_llama() {
  return nn::LlamaConfig{.vocab_size = 50, .hidden_size = 16, .intermediate_size = 24, .num_hidden_layers = 2,
                         .num_attention_heads = 4, .num_key_value_heads = 2, .max_position_embeddings = 16}
      .spec();
}

nn::ModelSpec tiny_gpt2() {
  return nn::GPTConfig{.vocab_size = 50, .block_size = 16, .n_layer = 2, .n_head = 4, .n_embd = 16}.spec();
}

// The first row of each part of a fused layer, in the tiny models above.
int64_t first_row(const std::string& part) {
  static const std::map<std::string, int64_t> rows{{"", 0}, {"q_", 0}, {"k_", 16}, {"v_", 24}, {"gate_", 0},
                                                   {"up_", 24}};
  return rows.at(part);
}

// full's base weights with every adapter's update added to its layer's rows.
std::map<std::string, Tensor> merged_by_hand(const std::map<std::string, Tensor>& full, double scale) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : full)
    if (!nn::is_lora_parameter(name)) out[name] = t.clone();
  for (const auto& [name, a] : full) {
    if (!nn::is_lora_parameter(name) || !name.ends_with("A.weight")) continue;
    const std::string layer = name.substr(0, name.find(".lora."));
    const std::string part = name.substr(layer.size() + 6, name.size() - layer.size() - 6 - 8);  // "q_" or ""
    Tensor update = matmul(full.at(layer + ".lora." + part + "B.weight"), a) * scale;
    Tensor rows = out.at(layer + ".weight").narrow(0, first_row(part), update.size(0));
    rows.copy_(rows + update);
  }
  return out;
}

// Random values in place of the adapters' zero B, so that they change the output.
void randomize_adapters(nn::TransformerLM& model, Generator& gen) {
  std::map<std::string, Tensor> values;
  for (auto& [name, p] : model.full_state_dict())
    if (nn::is_lora_parameter(name)) values[name] = randn(p.sizes(), gen, p.dtype()) * 0.3;
  model.load_full_state_dict(values, /*strict=*/false);
}

// The adapted model against a plain one holding the merged weights, its
// gradients against finite differences, merge and unmerge.
void check_adapted(const nn::ModelSpec& spec, const nn::LoraConfig& config, const std::vector<std::string>& expected) {
  Generator gen(5), data(6);
  nn::TransformerLM model(spec, gen, kFloat64);
  Tensor idx = randint(0, spec.vocab_size, {2, 7}, data), targets = randint(0, spec.vocab_size, {2, 7}, data);
  const Tensor before = model.forward(idx);
  nn::add_lora(model, config);
  KT_CHECK_CLOSE(model.forward(idx), values(before), 0);  // B starts at zero
  std::vector<std::string> adapters;
  for (auto& [name, p] : model.named_parameters()) {
    INFO(name);
    CHECK(p.requires_grad() == nn::is_lora_parameter(name));
    if (nn::is_lora_parameter(name)) adapters.push_back(name);
  }
  CHECK(adapters == expected);

  randomize_adapters(model, data);
  std::map<std::string, Tensor> original;  // copies: the state dict's tensors are the parameters
  for (auto& [name, t] : model.full_state_dict()) original[name] = t.clone();
  nn::TransformerLM plain(spec, gen, kFloat64);
  plain.load_full_state_dict(merged_by_hand(original, config.scale()));
  const Tensor want = plain.forward(idx);
  KT_CHECK_CLOSE(model.forward(idx), values(want), 1e-12);

  // Gradients: the adapters' only, and what finite differences say.
  Tensor loss = model.loss(idx, targets);
  loss.backward();
  for (auto& [name, p] : model.named_parameters()) {
    INFO(name);
    CHECK(p.grad().defined() == nn::is_lora_parameter(name));
  }
  for (const std::string& name : {expected.front(), expected.back()}) {
    Tensor p;
    for (auto& [n, t] : model.named_parameters())
      if (n == name) p = t;
    for (int64_t i : {int64_t(0), p.numel() - 1}) {
      NoGradGuard no_grad;
      Tensor element = p.reshape({-1}).narrow(0, i, 1);
      const double h = 1e-6, x = element.item<double>();
      element.fill_(x + h);
      const double up = model.loss(idx, targets).item<double>();
      element.fill_(x - h);
      const double down = model.loss(idx, targets).item<double>();
      element.fill_(x);
      INFO(name << "[" << i << "]");
      CHECK(p.grad().reshape({-1}).narrow(0, i, 1).item<double>() == Approx((up - down) / (2 * h)).margin(1e-8));
    }
  }

  // Merged, the base layers alone give the same logits; unmerged, the weights come back.
  nn::merge_lora(model);
  KT_CHECK_CLOSE(model.forward(idx), values(want), 1e-12);
  for (auto& [name, t] : merged_by_hand(original, config.scale())) {
    INFO(name);
    KT_CHECK_CLOSE(model.full_state_dict().at(name), values(t), 1e-12);
  }
  CHECK_THROWS_WITH(nn::merge_lora(model), Catch::Contains("merged already"));
  nn::unmerge_lora(model);
  for (auto& [name, t] : model.full_state_dict()) {
    INFO(name);
    KT_CHECK_CLOSE(t, values(original.at(name)), 1e-12);
  }
  KT_CHECK_CLOSE(model.forward(idx), values(want), 1e-12);
}

}  // namespace

TEST_CASE("LoRA on parts of fused layers (Llama's q, v and gate) and a row layer (down)") {
  const nn::LoraConfig config{.rank = 3, .alpha = 6.0, .targets = {"q", "v", "gate", "down"}};
  std::vector<std::string> expected;
  for (std::string l : {"0", "1"})
    for (std::string p : {".attn.qkv.lora.q_A", ".attn.qkv.lora.q_B", ".attn.qkv.lora.v_A", ".attn.qkv.lora.v_B",
                          ".mlp.up.lora.gate_A", ".mlp.up.lora.gate_B", ".mlp.down.lora.A", ".mlp.down.lora.B"})
      expected.push_back("layers." + l + p + ".weight");
  check_adapted(tiny_llama(), config, expected);
}

TEST_CASE("LoRA on whole fused layers (GPT-2's qkv), before the activation in the GEMM's epilogue (up)") {
  const nn::LoraConfig config{.rank = 2, .alpha = 5.0, .targets = {"qkv", "mlp.up", "attn.out"}};
  std::vector<std::string> expected;
  for (std::string l : {"0", "1"})
    for (std::string p : {".attn.qkv.lora.A", ".attn.qkv.lora.B", ".attn.out.lora.A", ".attn.out.lora.B",
                          ".mlp.up.lora.A", ".mlp.up.lora.B"})
      expected.push_back("layers." + l + p + ".weight");
  check_adapted(tiny_gpt2(), config, expected);
}

TEST_CASE("LoRA's start values, bfloat16 base and errors") {
  Generator gen(1);
  nn::TransformerLM a(tiny_llama(), gen), b(tiny_llama(), gen);
  nn::add_lora(a, {.targets = {"q", "k"}});
  nn::add_lora(b, {.targets = {"k", "q"}});
  const auto sa = a.full_state_dict(), sb = b.full_state_dict();
  const Tensor q = sa.at("layers.1.attn.qkv.lora.q_A.weight");
  KT_CHECK_CLOSE(sb.at("layers.1.attn.qkv.lora.q_A.weight"), values(q), 0);  // drawn by name, not by order
  CHECK(max(abs(q)).item<double>() <= 0.25);                                  // PyTorch's Linear: 1 / sqrt(16)
  CHECK(max(abs(q)).item<double>() > 0.2);
  CHECK(max(abs(q - sa.at("layers.0.attn.qkv.lora.q_A.weight"))).item<double>() > 0);

  Generator g2(1);
  nn::TransformerLM half(tiny_llama(), g2);
  Tensor idx = randint(0, 50, {1, 5}, gen);
  const Tensor full_precision = half.forward(idx);
  nn::add_lora(half, {.targets = {"v"}, .base_dtype = kBFloat16});
  for (auto& [name, p] : half.named_parameters()) {
    INFO(name);
    const bool linear = name.find(".attn.") != std::string::npos || name.find(".mlp.") != std::string::npos;
    CHECK(p.dtype() == (linear && !nn::is_lora_parameter(name) ? kBFloat16 : kFloat32));
  }
  KT_CHECK_CLOSE(half.forward(idx), values(full_precision), 3e-2);

  CHECK_THROWS_WITH(nn::add_lora(a, {.targets = {"v"}}), Catch::Contains("has an adapter already"));
  nn::TransformerLM c(tiny_llama(), gen);
  CHECK_THROWS_WITH(nn::add_lora(c, {.targets = {"q_proj"}}),
                    Catch::Contains("target 'q_proj' names no linear layer of the model; its layers and parts end "
                                    "in attn.k, attn.out, attn.q, attn.qkv, attn.v, mlp.down, mlp.gate, mlp.up"));
  CHECK_THROWS_WITH(nn::add_lora(c, {.rank = 0}), Catch::Contains("rank (0) and alpha (16) must be positive"));
  CHECK_THROWS_WITH(nn::unmerge_lora(a), Catch::Contains("not merged"));
}

namespace {

// A PEFT adapter written by PEFT (tests/golden/make_golden.py --model
// peft_<name>) loads into kiln and gives PEFT's logits; kiln writes the same
// tensors under the same names back, and the directory `out` (base model,
// adapter, kiln's logits) for the script's check that PEFT loads it.
void check_peft(const std::string& name, const nn::ModelSpec& spec, const std::vector<std::string>& targets) {
  TensorFile golden = load_safetensors(std::string(KILN_GOLDEN_DIR) + "/peft_" + name + "_tiny.safetensors");
  std::map<std::string, Tensor> base, adapter;
  for (auto& [key, t] : golden.tensors) {
    if (key.starts_with("adapter.")) adapter[key.substr(8)] = t;
    else if (key != "input_ids" && key != "logits") base[key] = t;
  }
  const std::string from_peft = "peft_" + name;
  std::filesystem::create_directories(from_peft);
  save_safetensors(from_peft + "/adapter_model.safetensors", adapter);
  write_file_atomic(from_peft + "/adapter_config.json", golden.metadata.at("adapter_config"));

  Generator gen(3);
  nn::TransformerLM model(spec, gen);
  nn::hf::load_weights(model, base);
  const nn::LoraConfig config = nn::hf::load_peft_adapter(from_peft, model);
  CHECK(config.rank == 4);
  CHECK(config.alpha == 8.0);
  CHECK(config.targets == targets);
  const Tensor idx = golden.tensors.at("input_ids");
  const Tensor logits = model.forward(idx);
  KT_CHECK_CLOSE(logits, values(golden.tensors.at("logits")), 1e-5);

  std::map<std::string, Tensor> adapters, weights;
  for (auto& [n, t] : model.full_state_dict()) (nn::is_lora_parameter(n) ? adapters : weights)[n] = t;
  const std::string out = "kiln_peft_" + name;
  nn::hf::save_peft_adapter(out, spec, config, adapters);
  const auto written = load_safetensors(out + "/adapter_model.safetensors").tensors;
  CHECK(written.size() == adapter.size());
  for (auto& [key, t] : adapter) {
    INFO(key);
    REQUIRE(written.count(key));
    KT_CHECK_CLOSE(written.at(key), values(t), 0);
  }
  save_safetensors(out + "/model.safetensors", nn::hf::to_weights(spec, weights), {{"format", "pt"}});
  write_file_atomic(out + "/config.json", nn::hf::config_json(spec));
  save_safetensors(out + "/kiln_logits.safetensors", {{"input_ids", idx}, {"logits", logits}});
}

}  // namespace

TEST_CASE("PEFT's adapters load into kiln and kiln writes them back as PEFT does") {
  check_peft("llama",
             nn::LlamaConfig{.vocab_size = 100, .hidden_size = 32, .intermediate_size = 64, .num_hidden_layers = 2,
                             .num_attention_heads = 4, .num_key_value_heads = 2, .max_position_embeddings = 16,
                             .rms_norm_eps = 1e-5, .rope_theta = 500000.0}
                 .spec(),
             {"attn.q", "attn.v", "mlp.down", "mlp.gate"});
  check_peft("gpt2", nn::GPTConfig{.vocab_size = 100, .block_size = 16, .n_layer = 2, .n_head = 4, .n_embd = 32}.spec(),
             {"attn.out", "attn.qkv"});
  check_peft("neox",
             nn::GPTNeoXConfig{.vocab_size = 100, .hidden_size = 32, .num_hidden_layers = 2, .num_attention_heads = 4,
                               .intermediate_size = 64, .max_position_embeddings = 16}
                 .spec(),
             {"attn.qkv", "mlp.down"});
}

TEST_CASE("adapters PEFT's format has no place for, and PEFT settings kiln does not do, are refused") {
  Generator gen(2);
  nn::TransformerLM llama(tiny_llama(), gen);
  nn::add_lora(llama, {.targets = {"qkv"}});
  CHECK_THROWS_WITH(nn::hf::save_peft_adapter("refused", llama.spec(), {.targets = {"qkv"}}, llama.full_state_dict()),
                    Catch::Contains("is not an adapter parameter"));
  std::map<std::string, Tensor> adapters;
  for (auto& [n, t] : llama.full_state_dict())
    if (nn::is_lora_parameter(n)) adapters[n] = t;
  CHECK_THROWS_WITH(nn::hf::save_peft_adapter("refused", llama.spec(), {.targets = {"qkv"}}, adapters),
                    Catch::Contains("llama's adapters in PEFT's format sit on attn.k, attn.out, attn.q, attn.v, "
                                    "mlp.down, mlp.gate, mlp.up; kiln's on 'attn.qkv' has no place among them: target "
                                    "q, k and v, an adapter each"));
  std::filesystem::create_directories("refused");
  write_file_atomic("refused/adapter_config.json", R"({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "use_rslora": true})");
  CHECK_THROWS_WITH(nn::hf::read_peft_config("refused", llama.spec()),
                    Catch::Contains("use_rslora (true): kiln scales by alpha / r"));
  write_file_atomic("refused/adapter_config.json", R"({"peft_type": "IA3"})");
  CHECK_THROWS_WITH(nn::hf::read_peft_config("refused", llama.spec()), Catch::Contains("peft_type 'IA3'"));
}

TEST_CASE("a LoRA model's checkpoint (base + PEFT adapter) loads back, adapters added to a plain model") {
  Generator gen(8), data(9);
  nn::TransformerLM model(tiny_gpt2(), gen);
  nn::add_lora(model, {.targets = {"qkv", "out", "up", "down"}, .trainable = {"embed_tokens"}});
  CHECK(model.embed_tokens->weight.requires_grad());
  randomize_adapters(model, data);
  {
    NoGradGuard no_grad;
    model.embed_tokens->weight.copy_(model.embed_tokens->weight + randn(model.embed_tokens->weight.sizes(), data) * 0.1);
  }
  optim::AdamW opt(optim::decay_groups(model.named_parameters(), 0.1), {.lr = 1e-3});
  dist::ParallelState one(dist::single_process_group(), 1, 1, 1);
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "kiln_lora_checkpoint";
  std::filesystem::remove_all(dir);
  const std::string path = dist::save_checkpoint(dir.string(), model, one, opt, {1, {}, 0});
  CHECK(std::filesystem::exists(path + "/adapter_config.json"));
  Tensor idx = randint(0, 50, {2, 6}, data);
  model.eval();
  const Tensor want = model.forward(idx);
  Generator other(11);
  nn::TransformerLM plain(tiny_gpt2(), other);
  dist::load_checkpoint(path, plain);
  plain.eval();
  const auto loaded = plain.full_state_dict();
  for (auto& [name, t] : model.full_state_dict()) {
    INFO(name);
    REQUIRE(loaded.count(name));
    KT_CHECK_CLOSE(loaded.at(name), values(t), 0);
  }
  KT_CHECK_CLOSE(plain.forward(idx), values(want), 1e-6);
  std::filesystem::remove_all(dir);
}
