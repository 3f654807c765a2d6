// kiln's GPT-2 against PyTorch + Hugging Face (tests/golden/make_gpt2_golden.py):
// logits, loss, every gradient and the parameters after one AdamW step, each
// to 1e-5 of the tensor's largest magnitude, in float32. Also writes the same
// model as a kiln checkpoint for the script's Hugging Face round-trip check.

#include <filesystem>

#include "helpers.h"

using namespace kiln;

#ifndef KILN_GOLDEN_DIR
#error "KILN_GOLDEN_DIR must name tests/golden"
#endif

namespace {
void check_tensor(const std::string& name, const Tensor& actual, const Tensor& expected) {
  INFO(name);
  REQUIRE(actual.sizes() == expected.sizes());
  KT_CHECK_CLOSE(actual, kt::values(expected), 1e-5);
}
}  // namespace

TEST_CASE("tiny GPT-2 matches PyTorch: logits, loss, gradients, AdamW step") {
  TensorFile golden = load_safetensors(std::string(KILN_GOLDEN_DIR) + "/gpt2_tiny.safetensors");
  nn::GPTConfig config{.vocab_size = 100, .block_size = 16, .n_layer = 2, .n_head = 4, .n_embd = 32};
  Generator gen(0);
  nn::GPT model(config, gen);
  std::map<std::string, Tensor> initial;
  for (auto& [k, v] : golden.tensors)
    if (k.rfind("transformer.", 0) == 0) initial[k] = v;
  nn::hf::load_weights(model, initial);

  const Tensor& idx = golden.tensors.at("input_ids");
  const Tensor& targets = golden.tensors.at("targets");
  Tensor logits = model.forward(idx);
  check_tensor("logits", logits, golden.tensors.at("logits"));
  Tensor loss = cross_entropy(logits.view({-1, 100}), targets.reshape({-1}));
  check_tensor("loss", loss.reshape({1}), golden.tensors.at("loss"));

  loss.backward();
  auto grads = nn::hf::to_weights(model.spec(), model.full_state_dict(/*gradients=*/true));
  REQUIRE(grads.size() == initial.size());
  for (auto& [name, g] : grads) check_tensor("grad." + name, g, golden.tensors.at("grad." + name));

  optim::AdamW opt(optim::decay_groups(model.named_parameters(), 0.1), {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8});
  opt.step();
  for (auto& [name, p] : nn::hf::to_weights(model.spec(), model.full_state_dict()))
    check_tensor("after." + name, p, golden.tensors.at("after." + name));

  // For the script's check that Hugging Face loads what kiln writes.
  NoGradGuard no_grad;
  nn::hf::load_weights(model, initial);
  std::filesystem::create_directories("kiln_tiny");
  save_safetensors("kiln_tiny/model.safetensors", nn::hf::to_weights(model.spec(), model.full_state_dict()),
                   {{"format", "pt"}});
  write_file_atomic("kiln_tiny/config.json", nn::hf::config_json(model.spec()));
  save_safetensors("kiln_tiny/kiln_logits.safetensors", {{"input_ids", idx}, {"logits", model.forward(idx)}});
}

TEST_CASE("Hugging Face checkpoints load with clear errors on mismatch") {
  TensorFile golden = load_safetensors(std::string(KILN_GOLDEN_DIR) + "/gpt2_tiny.safetensors");
  std::map<std::string, Tensor> initial;
  for (auto& [k, v] : golden.tensors)
    if (k.rfind("transformer.", 0) == 0) initial[k] = v;
  Generator gen(0);
  nn::GPT wider({.vocab_size = 100, .block_size = 16, .n_layer = 2, .n_head = 4, .n_embd = 64}, gen);
  CHECK_THROWS_WITH(nn::hf::load_weights(wider, initial),
                    Catch::Contains("'transformer.wte.weight' gives embed_tokens.weight of shape [100, 32], the model "
                                    "expects [100, 64]"));
  nn::GPT model({.vocab_size = 100, .block_size = 16, .n_layer = 2, .n_head = 4, .n_embd = 32}, gen);
  auto missing = initial;
  missing.erase("transformer.h.1.mlp.c_fc.bias");
  CHECK_THROWS_WITH(nn::hf::load_weights(model, missing), Catch::Contains("no 'transformer.h.1.mlp.c_fc.bias'"));
  auto extra = initial;
  extra["transformer.h.2.ln_1.weight"] = ones({32});
  CHECK_THROWS_WITH(nn::hf::load_weights(model, extra), Catch::Contains("unexpected key 'transformer.h.2.ln_1.weight'"));
}
