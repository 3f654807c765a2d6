// kiln's GPT-2, Llama, Mixtral, OPT, GPT-NeoX and BLOOM against PyTorch + Hugging Face (tests/golden/make_golden.py):
// logits, loss, every gradient and the parameters after one AdamW step, each
// to 1e-5 of the tensor's largest magnitude, in float32 and in float64. The
// golden values come from float64; AdamW's first step divides a gradient by
// its magnitude plus eps (1e-8), so where a gradient is that small (one of
// the Llama's is 4e-9) float32's rounding of it decides the step, and the
// step is compared in float32 only where the gradient stands clear of eps.
// Also writes each model as a kiln checkpoint for the script's Hugging Face
// round-trip check. And Switch Transformer's top-1 router: choices, gates,
// drops at a small capacity, z-loss and balancing loss.

#include <filesystem>
#include <set>

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

// The golden file's initial weights: every tensor not named by the script's other entries.
std::map<std::string, Tensor> initial_weights(const TensorFile& golden) {
  std::map<std::string, Tensor> initial;
  static const std::set<std::string> not_weights{
      "input_ids",         "targets", "logits",          "loss",           "balance_layer0",
      "token_type_ids",    "lengths", "labels",          "next_sentence_label",
      "prediction_logits", "seq_relationship_logits",    "greedy",         "beam3",
      "positions",         "block_positions",            "prefix_lengths"};
  for (auto& [k, v] : golden.tensors)
    if (k.rfind("grad.", 0) != 0 && k.rfind("after.", 0) != 0 && !not_weights.count(k)) initial[k] = v;
  return initial;
}

// One forward, backward and AdamW step of `spec` in dtype from the golden
// file's weights; with `out`, writes the model there for the Hugging Face round trip.
void check_golden(const std::string& file, const nn::ModelSpec& spec, DType dtype, const std::string& out = "") {
  INFO(file << " in " << fmt::format("{}", dtype));
  TensorFile golden = load_safetensors(std::string(KILN_GOLDEN_DIR) + "/" + file);
  Generator gen(0);
  nn::TransformerLM model(spec, gen, dtype);
  const std::map<std::string, Tensor> initial = initial_weights(golden);
  nn::hf::load_weights(model, initial);

  const Tensor& idx = golden.tensors.at("input_ids");
  const Tensor& targets = golden.tensors.at("targets");
  Tensor logits = model.forward(idx);
  check_tensor("logits", logits, golden.tensors.at("logits"));
  Tensor loss = cross_entropy(logits.view({-1, spec.vocab_size}), targets.reshape({-1}));
  check_tensor("loss", loss.reshape({1}), golden.tensors.at("loss"));
  // The fused head and loss the trainer uses give the same loss.
  check_tensor("fused loss", model.loss(idx, targets).reshape({1}), golden.tensors.at("loss"));

  loss.backward();
  auto grads = nn::hf::to_weights(model.spec(), model.full_state_dict(/*gradients=*/true));
  REQUIRE(grads.size() == initial.size());
  for (auto& [name, g] : grads) {
    if (name.ends_with("k_proj.bias")) {
      // A key bias adds one score to all of a query's keys, which softmax
      // ignores: its gradient is zero but for rounding, judged on the scale
      // of the query bias's gradient.
      const std::string q = "grad." + name.substr(0, name.size() - 11) + "q_proj.bias";
      INFO("grad." << name);
      CHECK(max(abs(g)).item<double>() <= 1e-5 * max(abs(golden.tensors.at(q))).item<double>());
      continue;
    }
    check_tensor("grad." + name, g, golden.tensors.at("grad." + name));
  }

  optim::AdamW opt(optim::decay_groups(model.named_parameters(), 0.1), {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8});
  opt.step();
  for (auto& [name, p] : nn::hf::to_weights(model.spec(), model.full_state_dict())) {
    const Tensor& g = golden.tensors.at("grad." + name);
    if (dtype == kFloat32 && min(abs(g)).item<double>() < 1e-6) continue;  // near eps: float64's to judge
    check_tensor("after." + name, p, golden.tensors.at("after." + name));
  }
  if (out.empty()) return;

  // For the script's check that Hugging Face loads what kiln writes.
  NoGradGuard no_grad;
  nn::hf::load_weights(model, initial);
  std::filesystem::create_directories(out);
  save_safetensors(out + "/model.safetensors", nn::hf::to_weights(model.spec(), model.full_state_dict()),
                   {{"format", "pt"}});
  write_file_atomic(out + "/config.json", nn::hf::config_json(model.spec()));
  save_safetensors(out + "/kiln_logits.safetensors", {{"input_ids", idx}, {"logits", model.forward(idx)}});
}

}  // namespace

TEST_CASE("tiny GPT-2 matches PyTorch: logits, loss, gradients, AdamW step") {
  const nn::ModelSpec spec =
      nn::GPTConfig{.vocab_size = 100, .block_size = 16, .n_layer = 2, .n_head = 4, .n_embd = 32}.spec();
  check_golden("gpt2_tiny.safetensors", spec, kFloat64);
  check_golden("gpt2_tiny.safetensors", spec, kFloat32, "kiln_tiny");
}

TEST_CASE("tiny Llama (GQA, RoPE theta 500000, untied head) matches PyTorch: logits, loss, gradients, AdamW step") {
  const nn::ModelSpec spec =
      nn::LlamaConfig{.vocab_size = 100, .hidden_size = 32, .intermediate_size = 64, .num_hidden_layers = 2,
                      .num_attention_heads = 4, .num_key_value_heads = 2, .max_position_embeddings = 16,
                      .rms_norm_eps = 1e-5, .rope_theta = 500000.0}
          .spec();
  check_golden("llama_tiny.safetensors", spec, kFloat64);
  check_golden("llama_tiny.safetensors", spec, kFloat32, "kiln_llama_tiny");
}

TEST_CASE("tiny Llama 3 (RoPE scaling past its original context, head size 12, tied head) matches PyTorch") {
  const nn::ModelSpec spec =
      nn::LlamaConfig{.vocab_size = 100, .hidden_size = 32, .intermediate_size = 48, .num_hidden_layers = 2,
                      .num_attention_heads = 4, .num_key_value_heads = 2, .head_dim = 12,
                      .max_position_embeddings = 64, .rms_norm_eps = 1e-5, .rope_theta = 10000.0,
                      .rope_scaling = nn::RopeScaling{8.0, 1.0, 4.0, 16}, .tie_word_embeddings = true}
          .spec();
  check_golden("llama3_tiny.safetensors", spec, kFloat64);
  check_golden("llama3_tiny.safetensors", spec, kFloat32, "kiln_llama3_tiny");
}

TEST_CASE("tiny OPT (positions two rows on, ReLU MLP) matches PyTorch: logits, loss, gradients, AdamW step") {
  const nn::ModelSpec spec = nn::OPTConfig{.vocab_size = 100, .hidden_size = 32, .num_hidden_layers = 2, .ffn_dim = 64,
                                           .num_attention_heads = 4, .max_position_embeddings = 16, .dropout = 0.0}
                                 .spec();
  check_golden("opt_tiny.safetensors", spec, kFloat64);
  check_golden("opt_tiny.safetensors", spec, kFloat32, "kiln_opt_tiny");
}

TEST_CASE("tiny GPT-NeoX (parallel attention and MLP, partial rotary, untied head) matches PyTorch") {
  const nn::ModelSpec spec =
      nn::GPTNeoXConfig{.vocab_size = 100, .hidden_size = 32, .num_hidden_layers = 2, .num_attention_heads = 4,
                        .intermediate_size = 64, .max_position_embeddings = 16}
          .spec();
  CHECK(spec.block.rotary_dims() == 2);
  check_golden("neox_tiny.safetensors", spec, kFloat64);
  check_golden("neox_tiny.safetensors", spec, kFloat32, "kiln_neox_tiny");
  // transformers 5's config (rope_parameters) and name for the head read as the released ones.
  const nn::GPTNeoXConfig c = nn::gpt_neox::from_hf_config(R"({"vocab_size": 100, "hidden_size": 32,
      "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
      "rope_parameters": {"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.5}})");
  CHECK(c.spec().block.rotary_dims() == 4);
  CHECK(c.spec().block.attention.rope->theta == 500.0);
  TensorFile golden = load_safetensors(std::string(KILN_GOLDEN_DIR) + "/neox_tiny.safetensors");
  std::map<std::string, Tensor> weights = initial_weights(golden);
  weights["lm_head.weight"] = weights.at("embed_out.weight");
  weights.erase("embed_out.weight");
  Generator gen(0);
  nn::TransformerLM model(spec, gen);
  nn::hf::load_weights(model, weights);
  KT_CHECK_CLOSE(model.forward(golden.tensors.at("input_ids")), kt::values(golden.tensors.at("logits")), 1e-5);
}

TEST_CASE("tiny BLOOM (ALiBi over 6 heads, a norm on the embeddings, tied head) matches PyTorch") {
  const nn::ModelSpec spec =
      nn::BloomConfig{.vocab_size = 100, .hidden_size = 48, .n_layer = 2, .n_head = 6, .seq_length = 16}.spec();
  check_golden("bloom_tiny.safetensors", spec, kFloat64);
  check_golden("bloom_tiny.safetensors", spec, kFloat32, "kiln_bloom_tiny");
  // BigScience's released checkpoints name the backbone's tensors without "transformer.".
  TensorFile golden = load_safetensors(std::string(KILN_GOLDEN_DIR) + "/bloom_tiny.safetensors");
  std::map<std::string, Tensor> released;
  for (auto& [name, t] : initial_weights(golden)) released[name.substr(std::string("transformer.").size())] = t;
  Generator gen(0);
  nn::TransformerLM model(spec, gen);
  nn::hf::load_weights(model, released);
  KT_CHECK_CLOSE(model.forward(golden.tensors.at("input_ids")), kt::values(golden.tensors.at("logits")), 1e-5);
  // The config of bigscience/bloom-560m (n_embed, its older name for the width).
  const nn::ModelSpec read = nn::hf::spec_from_config(R"({"model_type": "bloom", "vocab_size": 250880,
      "n_embed": 1024, "n_layer": 24, "num_attention_heads": 16, "layer_norm_epsilon": 1e-05,
      "apply_residual_connection_post_layernorm": false, "pretraining_tp": 1, "slow_but_exact": false})");
  CHECK(read.block.d_model == 1024);
  CHECK(read.block.attention.heads == 16);
  CHECK(read.num_parameters() == 559214592);  // bloom-560m's model card
  CHECK_THROWS_WITH(nn::bloom::from_hf_config(R"({"vocab_size": 100, "hidden_size": 32, "n_layer": 2, "n_head": 4,
      "apply_residual_connection_post_layernorm": true})"), Catch::Contains("apply_residual_connection_post_layernorm"));
}

TEST_CASE("OPT configs kiln does not build are refused by name") {
  const std::string opt350m = R"({"model_type": "opt", "vocab_size": 50272, "hidden_size": 1024, "num_hidden_layers": 24,
      "ffn_dim": 4096, "num_attention_heads": 16, "max_position_embeddings": 2048, "word_embed_proj_dim": 512,
      "do_layer_norm_before": false})";
  CHECK_THROWS_WITH(nn::hf::spec_from_config(opt350m), Catch::Contains("post-norm blocks"));
  CHECK_THROWS_WITH(nn::opt::from_hf_config(R"({"hidden_size": 32})"),
                    Catch::Contains("[opt] config.json lacks a field or has one of the wrong type"));
  CHECK_THROWS_WITH(nn::gpt_neox::from_hf_config("{"), Catch::Contains("[gpt_neox] config.json is not valid JSON"));
  CHECK_THROWS_WITH(nn::hf::spec_from_config(R"({"model_type": "falcon"})"),
                    Catch::Contains("model_type 'falcon': kiln reads gpt2, llama, mixtral, opt, gpt_neox, bloom, and its own"));
  const nn::OPTConfig c = nn::opt::from_hf_config(nn::opt::hf_config_json(nn::OPTConfig::opt_1_3b()));
  CHECK(c.hidden_size == 2048);
  CHECK(c.num_hidden_layers == 24);
  CHECK(nn::hf::spec_from_config(nn::hf::config_json(c.spec())).position_offset == 2);
}

TEST_CASE("Hugging Face checkpoints load with clear errors on mismatch") {
  TensorFile golden = load_safetensors(std::string(KILN_GOLDEN_DIR) + "/gpt2_tiny.safetensors");
  std::map<std::string, Tensor> initial = initial_weights(golden);
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

  TensorFile llama = load_safetensors(std::string(KILN_GOLDEN_DIR) + "/llama_tiny.safetensors");
  std::map<std::string, Tensor> weights = initial_weights(llama);
  nn::Llama tiny({.vocab_size = 100, .hidden_size = 32, .intermediate_size = 64, .num_hidden_layers = 2,
                  .num_attention_heads = 4, .num_key_value_heads = 2}, gen);
  auto no_v = weights;
  no_v.erase("model.layers.0.self_attn.v_proj.weight");
  CHECK_THROWS_WITH(nn::hf::load_weights(tiny, no_v), Catch::Contains("a Llama checkpoint has model.layers.0."
                                                                       "self_attn.q_proj.weight but no model.layers.0."
                                                                       "self_attn.v_proj.weight"));
  nn::Llama mha({.vocab_size = 100, .hidden_size = 32, .intermediate_size = 64, .num_hidden_layers = 2,
                 .num_attention_heads = 4}, gen);
  CHECK_THROWS_WITH(nn::hf::load_weights(mha, weights),
                    Catch::Contains("'model.layers.0.self_attn.q_proj.weight' gives layers.0.attn.qkv.weight of "
                                    "shape [64, 32], the model expects [96, 32]"));
}

TEST_CASE("tiny Mixtral (4 experts, top-2, GQA) matches PyTorch, and its balancing loss is Hugging Face's over k") {
  nn::LlamaConfig config{.vocab_size = 100, .hidden_size = 32, .intermediate_size = 24, .num_hidden_layers = 2,
                         .num_attention_heads = 4, .num_key_value_heads = 2, .max_position_embeddings = 16,
                         .rms_norm_eps = 1e-5, .rope_theta = 1e6, .moe = nn::MoeSpec{.experts = 4, .top_k = 2}};
  // The golden gradients are the cross-entropy's alone.
  config.moe->aux_loss_coeff = 0;
  check_golden("mixtral_tiny.safetensors", config.spec(), kFloat64);
  check_golden("mixtral_tiny.safetensors", config.spec(), kFloat32, "kiln_mixtral_tiny");

  // Megatron-Core's normalization divides by the k choices a token makes;
  // Hugging Face's load_balancing_loss_func does not.
  config.moe->aux_loss_coeff = 0.02;
  TensorFile golden = load_safetensors(std::string(KILN_GOLDEN_DIR) + "/mixtral_tiny.safetensors");
  Generator gen(0);
  nn::TransformerLM model(config.spec(), gen, kFloat64);
  nn::hf::load_weights(model, initial_weights(golden));
  model.forward(golden.tensors.at("input_ids"));
  const double balance = model.layers->at<nn::Block>(0).moe->stats().aux_loss / 0.02;
  CHECK(balance * 2 == Approx(golden.tensors.at("balance_layer0").item<double>()).epsilon(1e-6));

  std::map<std::string, Tensor> missing = initial_weights(golden);
  missing.erase("model.layers.1.block_sparse_moe.experts.3.w3.weight");
  CHECK_THROWS_WITH(nn::hf::load_weights(model, missing),
                    Catch::Contains("no 'model.layers.1.block_sparse_moe.experts.3.w3.weight'"));
}

TEST_CASE("Switch's top-1 router: choices, gates, drops by position, z-loss and balancing loss as transformers'") {
  TensorFile golden = load_safetensors(std::string(KILN_GOLDEN_DIR) + "/switch_router.safetensors");
  auto at = [&](const char* name) { return golden.tensors.at(name).to(kFloat64); };
  const Tensor x = at("x"), weight = at("router.weight");  // (12, 8), (4, 8)
  // Capacity 2 per expert for 12 tokens: Switch's expert_capacity of the sequence.
  const nn::MoeSpec spec{.experts = 4, .top_k = 1, .score = nn::RouterScore::SoftmaxThenTopK, .capacity_factor = 0.6,
                         .drop_policy = nn::DropPolicy::Position, .aux_loss_coeff = 1, .z_loss_coeff = 1};
  REQUIRE(nn::expert_capacity(12, spec) == 2);
  const Tensor logits = matmul(x, weight.t());
  KT_CHECK_CLOSE(logits, kt::values(at("logits")), 1e-5);
  auto [gates, chosen] = topk(softmax(logits, -1), 1);
  KT_CHECK_CLOSE(gates.view({12}), kt::values(at("gates")), 1e-5);
  const nn::Routing routing = nn::route(chosen, gates, 4, 2, nn::DropPolicy::Position);
  const std::vector<double> slot = kt::values(routing.permutation.slot), expert = kt::values(chosen);
  std::vector<double> kept(12 * 4, 0.0);
  for (int64_t t = 0; t < 12; ++t)
    if (slot[t] >= 0) kept[t * 4 + static_cast<int64_t>(expert[t])] = 1;
  CHECK(kept == kt::values(at("kept")));

  // The losses, through a layer with this router (coefficients 1).
  Generator gen(3);
  nn::MoeLayer layer({.d_model = 8, .attention = {.heads = 1},
                      .mlp = {.kind = nn::MlpKind::GeluTanh, .hidden = 4, .bias = false, .moe = spec}},
                     gen, kFloat64);
  {
    NoGradGuard no_grad;
    layer.router.copy_(weight);
    layer.up.copy_(randn(layer.up.sizes(), gen, kFloat64));
    layer.down.copy_(randn(layer.down.sizes(), gen, kFloat64));
  }
  layer.forward(x.view({1, 12, 8}));
  CHECK(layer.stats().z_loss == Approx(at("z_loss").item<double>()).epsilon(1e-5));
  // transformers' balancing loss of the choices before drops (its model passes the choices after them, which
  // counts a dropped token for expert 0).
  CHECK(layer.stats().aux_loss == Approx(at("balance").item<double>()).epsilon(1e-5));
  CHECK(layer.stats().dropped == 12 - 7);
}

TEST_CASE("tiny BERT (BertForPreTraining, padding, two token types) matches PyTorch: heads, loss, gradients, AdamW") {
  TensorFile golden = load_safetensors(std::string(KILN_GOLDEN_DIR) + "/bert_tiny.safetensors");
  const nn::BertConfig config{.vocab_size = 100, .hidden_size = 32, .num_hidden_layers = 2,
                              .num_attention_heads = 4, .intermediate_size = 48, .max_position_embeddings = 16,
                              .hidden_dropout_prob = 0.0};
  auto at = [&](const char* name) { return golden.tensors.at(name); };
  for (DType dtype : {kFloat64, kFloat32}) {
    INFO(fmt::format("{}", dtype));
    Generator gen(0);
    nn::Bert model(config, gen, dtype);
    model.load_state_dict(nn::bert::from_hf(initial_weights(golden), config));
    if (dtype == kFloat32) {  // for the script's check that Hugging Face loads what kiln writes
      NoGradGuard no_grad;
      std::filesystem::create_directories("kiln_bert_tiny");
      save_safetensors("kiln_bert_tiny/model.safetensors", nn::bert::to_hf(model.state_dict()), {{"format", "pt"}});
      write_file_atomic("kiln_bert_tiny/config.json", nn::bert::hf_config_json(config));
      save_safetensors("kiln_bert_tiny/kiln_logits.safetensors",
                       {{"input_ids", at("input_ids")},
                        {"logits", model.mlm_logits(model.forward(at("input_ids")).sequence)}});
    }
    const nn::AttentionInputs padding{.key_lengths = at("lengths")};
    const nn::BertOutput out = model.forward(at("input_ids"), at("token_type_ids"), &padding);
    check_tensor("prediction_logits", model.mlm_logits(out.sequence), at("prediction_logits"));
    check_tensor("seq_relationship_logits", model.nsp_logits(out.pooled), at("seq_relationship_logits"));
    Tensor loss = model.pretraining_loss(at("input_ids"), at("token_type_ids"), at("labels"),
                                         at("next_sentence_label"), &padding);
    check_tensor("loss", loss.reshape({1}), at("loss"));
    loss.backward();
    std::map<std::string, Tensor> grads;
    for (auto& [name, p] : model.named_parameters()) grads[name] = p.grad();
    for (auto& [name, g] : nn::bert::to_hf(grads)) {
      if (!golden.tensors.count("grad." + name)) continue;
      // A key bias shifts every score of a row alike, which the softmax ignores: its gradient is zero up to rounding.
      if (name.ends_with("key.bias")) CHECK(max(abs(g)).item<double>() < 1e-6);
      else check_tensor("grad." + name, g, at(("grad." + name).c_str()));
    }
    optim::AdamW opt(optim::decay_groups(model.named_parameters(), 0.1),
                     {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8});
    opt.step();
    for (auto& [name, p] : nn::bert::to_hf(model.state_dict())) {
      if (!golden.tensors.count("after." + name)) continue;
      const Tensor& g = at(("grad." + name).c_str());
      if (name.ends_with("key.bias") || (dtype == kFloat32 && min(abs(g)).item<double>() < 1e-6)) continue;
      check_tensor("after." + name, p, at(("after." + name).c_str()));
    }
  }
}

namespace {
// One T5 golden file (tests/golden/make_golden.py --model t5 | t5_v1_1): logits over a padded batch, loss,
// gradients, an AdamW step, and greedy and 3-beam generations; writes the model for the round trip.
void check_t5_golden(const char* file, const nn::T5Config& config, const char* out) {
  TensorFile golden = load_safetensors(std::string(KILN_GOLDEN_DIR) + "/" + file);
  auto at = [&](const std::string& name) { return golden.tensors.at(name); };
  for (DType dtype : {kFloat64, kFloat32}) {
    INFO(file << " in " << fmt::format("{}", dtype));
    Generator gen(0);
    nn::T5 model(config, gen, dtype);
    model.load_state_dict(nn::t5::from_hf(initial_weights(golden), config));
    const Tensor& ids = at("input_ids");
    const Tensor& lengths = at("lengths");
    const Tensor& labels = at("labels");
    check_tensor("logits", model.decode(model.decoder_inputs(labels), model.encode(ids, lengths)), at("logits"));
    Tensor loss = model.loss(ids, labels, lengths);
    check_tensor("loss", loss.reshape({1}), at("loss"));
    loss.backward();
    std::map<std::string, Tensor> grads;
    for (auto& [name, p] : model.named_parameters()) grads[name] = p.grad();
    for (auto& [name, g] : nn::t5::to_hf(grads, config)) check_tensor("grad." + name, g, at("grad." + name));
    optim::AdamW opt(optim::decay_groups(model.named_parameters(), 0.1),
                     {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8});
    opt.step();
    for (auto& [name, p] : nn::t5::to_hf(model.state_dict(), config)) {
      // A gradient element near AdamW's eps makes the step hang on its last digits, which the attention's
      // float32 logsumexp decides even in float64: judged by the gradients above.
      if (min(abs(at("grad." + name))).item<double>() < 1e-6) continue;
      check_tensor("after." + name, p, at("after." + name));
    }

    NoGradGuard no_grad;
    model.load_state_dict(nn::t5::from_hf(initial_weights(golden), config));
    for (const auto& [beams, key] : {std::pair<int64_t, const char*>{1, "greedy"}, {3, "beam3"}}) {
      INFO(key);
      const std::vector<std::vector<int64_t>> decoded = nn::generate(model, ids, lengths, {.max_new_tokens = 6, .beams = beams});
      const Tensor expected = at(key);
      REQUIRE(decoded.size() == 2);
      for (int64_t b = 0; b < 2; ++b)
        for (int64_t t = 0; t < 6; ++t) CHECK(decoded[b].at(t) == expected[b][t + 1].item<int64_t>());
    }
    if (dtype == kFloat32) {  // for the script's check that Hugging Face loads what kiln writes
      nn::t5::save(out, model);
      save_safetensors(std::string(out) + "/kiln_logits.safetensors",
                       {{"input_ids", ids}, {"lengths", lengths}, {"labels", labels},
                        {"logits", model.decode(model.decoder_inputs(labels), model.encode(ids, lengths))}});
      // kiln reads back what it wrote.
      const nn::T5Config again = nn::t5::read_config(out);
      nn::T5 reread(again, gen, dtype);
      nn::t5::read_weights(reread, out);
      const auto mine = model.named_parameters(), read = reread.named_parameters();
      REQUIRE(mine.size() == read.size());
      for (size_t i = 0; i < mine.size(); ++i) CHECK(allclose(read[i].second, mine[i].second, 0, 0));
      CHECK(again.num_decoder_layers == config.decoder_layers());
      CHECK(again.scale_decoder_outputs == config.scale_decoder_outputs);
      CHECK(again.feed_forward_proj == config.feed_forward_proj);
    }
  }
}
}  // namespace

TEST_CASE("tiny T5 v1.0 and v1.1 match PyTorch: logits, loss, gradients, AdamW step, greedy and beam decoding") {
  nn::T5Config config{.vocab_size = 100, .d_model = 32, .d_kv = 12, .d_ff = 48, .num_layers = 2,
                      .num_decoder_layers = 3, .num_heads = 4, .relative_attention_num_buckets = 8,
                      .relative_attention_max_distance = 20, .dropout_rate = 0.0};
  check_t5_golden("t5_tiny.safetensors", config, "kiln_t5_tiny");
  config.feed_forward_proj = "gated-gelu";
  config.scale_decoder_outputs = false;  // transformers 5 ties v1.1's head too
  check_t5_golden("t5_v1_1_tiny.safetensors", config, "kiln_t5_v1_1_tiny");
}

TEST_CASE("T5's relative position buckets: exact up to half the buckets, then logarithmic, capped") {
  auto bucket = [](int64_t rp, bool bidirectional) { return nn::t5_relative_bucket(rp, bidirectional, 32, 128); };
  // Bidirectional (the encoder): keys before the query in [0, 16), after it in [16, 32).
  CHECK(bucket(0, true) == 0);
  CHECK(bucket(-1, true) == 1);
  CHECK(bucket(1, true) == 17);
  CHECK(bucket(-7, true) == 7);
  CHECK(bucket(-8, true) == 8);     // 8 + floor(8 log(8/8) / log(16))
  CHECK(bucket(-16, true) == 10);   // 8 + floor(8 log 2 / log 16) = 8 + 2
  CHECK(bucket(-127, true) == 15);  // 8 + floor(7.98)
  CHECK(bucket(-128, true) == 15);  // capped
  CHECK(bucket(200, true) == 31);
  // Causal (the decoder): later keys all in bucket 0, earlier ones exact below 16.
  CHECK(bucket(5, false) == 0);
  CHECK(bucket(-15, false) == 15);
  CHECK(bucket(-20, false) == 17);  // 16 + floor(16 log(20/16) / log 8) = 16 + 1
  CHECK(bucket(-1000, false) == 31);
}

TEST_CASE("T5 checkpoints and configs load with clear errors on mismatch") {
  TensorFile golden = load_safetensors(std::string(KILN_GOLDEN_DIR) + "/t5_tiny.safetensors");
  const nn::T5Config config{.vocab_size = 100, .d_model = 32, .d_kv = 12, .d_ff = 48, .num_layers = 2,
                            .num_decoder_layers = 3, .num_heads = 4, .relative_attention_num_buckets = 8,
                            .relative_attention_max_distance = 20, .dropout_rate = 0.0};
  auto weights = initial_weights(golden);
  auto no_v = weights;
  no_v.erase("decoder.block.2.layer.1.EncDecAttention.v.weight");
  CHECK_THROWS_WITH(nn::t5::from_hf(no_v, config), Catch::Contains("has decoder.block.2.layer.1.EncDecAttention.k."
                                                                   "weight but no decoder.block.2.layer.1.EncDecAttention.v.weight"));
  auto extra = weights;
  extra["decoder.block.3.layer.0.layer_norm.weight"] = ones({32});
  CHECK_THROWS_WITH(nn::t5::from_hf(extra, config),
                    Catch::Contains("unexpected key 'decoder.block.3.layer.0.layer_norm.weight' in a T5 checkpoint of 3 layers"));
  auto untied = weights;
  untied["lm_head.weight"] = zeros({100, 32});
  CHECK_THROWS_WITH(nn::t5::from_hf(untied, config), Catch::Contains("lm_head.weight differs from shared.weight"));
  CHECK_THROWS_WITH(nn::t5::from_hf_config(R"({"vocab_size": 100, "d_model": 32, "d_kv": 8, "d_ff": 64,
                                              "num_layers": 2, "num_heads": 4, "feed_forward_proj": "gated-silu"})"),
                    Catch::Contains("feed_forward_proj 'gated-silu'"));
  CHECK_THROWS_WITH(nn::t5::from_hf_config(R"({"d_model": 32})"), Catch::Contains("not a T5 config.json"));
  Generator gen(0);
  nn::T5 model(config, gen);
  CHECK_THROWS_WITH(model.encode(tensor(std::vector<int64_t>{1, 2, 3})), Catch::Contains("expects ids (B, S) int64"));
  CHECK_THROWS_WITH(nn::generate(model, zeros({1, 4}, TensorOptions(kInt64)), {}, {.beams = 0}),
                    Catch::Contains("beams (0) and max_new_tokens (32) must be at least 1"));
}

TEST_CASE("tiny GLM (blank infilling: two position streams, part A bidirectional) matches THUDM's model") {
  // tests/golden/make_golden.py --model glm: a transcription of THUDM's GLMModel with block positions.
  TensorFile golden = load_safetensors(std::string(KILN_GOLDEN_DIR) + "/glm_tiny.safetensors");
  auto at = [&](const std::string& name) { return golden.tensors.at(name); };
  nn::ModelSpec spec = nn::GPTConfig{.vocab_size = 128, .block_size = 16, .n_layer = 2, .n_head = 4, .n_embd = 32}.spec();
  spec.family = "";
  spec.block.attention.mask = nn::AttentionMask::PrefixLM;
  spec.block_positions = true;
  // The transcription's names -> kiln's: the same tensors, THUDM's layer names.
  auto kiln_name = [](const std::string& name) {
    static const std::map<std::string, std::string> renamed{
        {"word_embeddings", "embed_tokens"}, {"position_embeddings", "embed_positions"},
        {"block_position_embeddings", "embed_block_positions"}, {"final_layernorm", "norm"},
        {"input_layernorm", "attn_norm"}, {"query_key_value", "attn.qkv"}, {"dense", "attn.out"},
        {"post_attention_layernorm", "mlp_norm"}, {"dense_h_to_4h", "mlp.up"}, {"dense_4h_to_h", "mlp.down"}};
    const size_t kind = name.rfind('.'), module = name.rfind('.', kind - 1);
    const size_t start = module == std::string::npos ? 0 : module + 1;
    return name.substr(0, start) + renamed.at(name.substr(start, kind - start)) + name.substr(kind);
  };
  for (DType dtype : {kFloat64, kFloat32}) {
    INFO(fmt::format("{}", dtype));
    Generator gen(0);
    nn::TransformerLM model(spec, gen, dtype);
    std::map<std::string, Tensor> state;
    for (auto& [name, t] : initial_weights(golden)) state[kiln_name(name)] = t;
    model.load_state_dict(state);
    nn::AttentionInputs inputs{.prefix_lengths = at("prefix_lengths"), .positions = at("positions"),
                               .block_positions = at("block_positions")};
    Tensor logits = model.forward(at("input_ids"), nullptr, &inputs);
    check_tensor("logits", logits, at("logits"));
    Tensor loss = cross_entropy(logits.reshape({-1, 128}), at("labels").reshape({-1}));
    check_tensor("loss", loss.reshape({1}), at("loss"));
    loss.backward();
    optim::AdamW opt(optim::decay_groups(model.named_parameters(), 0.1),
                     {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8});
    opt.step();
    std::map<std::string, Tensor> params;
    for (auto& [name, p] : model.named_parameters()) params[name] = p;
    for (auto& [name, t] : initial_weights(golden)) {
      INFO(name);
      const Tensor p = params.at(kiln_name(name));
      check_tensor("grad." + name, p.grad(), at("grad." + name));
      if (min(abs(at("grad." + name))).item<double>() >= 1e-6) check_tensor("after." + name, p, at("after." + name));
    }
  }
  // Without the block positions the model says what it needs.
  Generator gen(0);
  nn::TransformerLM model(spec, gen);
  CHECK_THROWS_WITH(model.forward(at("input_ids")), Catch::Contains("needs each token's (AttentionInputs::block_positions)"));
}
