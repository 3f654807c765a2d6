// The transformer and GPT: shapes, initialization, the KV cache against a full
// forward, grouped-query attention and RoPE, and safetensors round trips.

#include <algorithm>
#include <filesystem>

#include "kiln/nn/models/gpt2.h"

#include "helpers.h"

using namespace kiln;
using kt::values;

namespace {
nn::GPTConfig tiny() { return {.vocab_size = 61, .block_size = 16, .n_layer = 2, .n_head = 2, .n_embd = 8}; }
}  // namespace

TEST_CASE("GPT forward shapes, padded vocabulary and tied head") {
  Generator gen(1);
  nn::GPT gpt(tiny(), gen);
  CHECK(gpt.config().padded_vocab_size() == 128);
  CHECK(gpt.padded_vocab_size() == 128);
  CHECK(gpt.embed_tokens->weight.sizes() == Shape{128, 8});
  // padding rows start at zero and get no gradient
  CHECK(sum(abs(gpt.embed_tokens->weight.narrow(0, 61, 67))).item<double>() == 0.0);
  Tensor idx = randint(0, 61, {3, 5}, gen);
  Tensor logits = gpt.forward(idx);
  CHECK(logits.sizes() == Shape{3, 5, 61});
  Tensor loss = gpt.loss(idx, randint(0, 61, {3, 5}, gen));
  // at initialization the model is near uniform: loss close to ln(61)
  CHECK(loss.item<double>() == Approx(std::log(61.0)).margin(0.1));
  loss.backward();
  CHECK(sum(abs(gpt.embed_tokens->weight.grad().narrow(0, 61, 67))).item<double>() == 0.0);
  CHECK(sum(abs(gpt.embed_tokens->weight.grad().narrow(0, 0, 61))).item<double>() > 0.0);
  // parameters: wte 128*8 + wpe 16*8 + 2 blocks + ln_f
  int64_t block = 2 * 8 * 2 + (8 * 24 + 24) + (8 * 8 + 8) + (8 * 32 + 32) + (32 * 8 + 8);
  CHECK(gpt.num_parameters() == 128 * 8 + 16 * 8 + 2 * block + 16);
  CHECK_THROWS_WITH(gpt.forward(randint(0, 61, {1, 17}, gen)), Catch::Contains("longer than max_positions 16"));
  CHECK_THROWS_WITH(gpt.forward(zeros({1, 2})), Catch::Contains("expects token ids"));
}

TEST_CASE("GPT-2 configurations and initialization scale") {
  nn::GPTConfig c = nn::GPTConfig::gpt2(12);
  CHECK(c.n_embd == 768);
  CHECK(c.n_head == 12);
  CHECK(c.padded_vocab_size() == 50304);
  CHECK(nn::GPTConfig::gpt2(48).n_embd == 1600);
  CHECK_THROWS_WITH(nn::GPTConfig::gpt2(7), Catch::Contains("no GPT-2 configuration of depth 7"));
  Generator gen(2);
  nn::GPT gpt({.vocab_size = 256, .block_size = 64, .n_layer = 4, .n_head = 4, .n_embd = 64}, gen);
  auto stddev = [](const Tensor& t) { return std::sqrt(var(t.reshape({-1}), {0}).item<double>()); };
  auto& b = gpt.layers->at<nn::Block>(0);
  CHECK(stddev(b.attn->qkv->weight) == Approx(0.02).epsilon(0.05));
  CHECK(stddev(b.mlp->down->weight) == Approx(0.02 / std::sqrt(8.0)).epsilon(0.05));
  CHECK(sum(abs(b.attn->qkv->bias)).item<double>() == 0.0);
  CHECK(gpt.flops_per_token(64) == 6.0 * gpt.num_parameters() + 12.0 * 4 * 64 * 64);
  CHECK(gpt.config().num_parameters() == gpt.num_parameters());
}

TEST_CASE("decoding with the KV cache matches the full forward") {
  Generator gen(3);
  for (bool gqa : {false, true}) {
    for (bool use_rope : {false, true}) {
      nn::BlockSpec spec{.d_model = 16, .attention = {.heads = 4, .kv_heads = gqa ? 2 : 0}};
      if (use_rope) spec.attention.rope = nn::RopeSpec{};
      nn::Block block(spec, gen, kFloat64);
      block.reset_parameters(gen, 0.3, 0.3);
      Tensor x = randn({2, 7, 16}, gen, kFloat64);
      Tensor full = block.forward(x);
      nn::KVCache cache;
      std::vector<Tensor> steps;
      steps.push_back(block.forward(x.narrow(1, 0, 3), &cache));  // a prompt of 3
      for (int64_t t = 3; t < 7; ++t) steps.push_back(block.forward(x.narrow(1, t, 1), &cache));
      CHECK(cache.length() == 7);
      INFO("gqa " << gqa << " rope " << use_rope);
      KT_CHECK_CLOSE(cat(steps, 1), values(full), 1e-12);
    }
  }
  nn::GPT gpt(tiny(), gen);
  Tensor idx = randint(0, 61, {1, 9}, gen);
  std::vector<nn::KVCache> caches(2);
  Tensor first = gpt.forward(idx.narrow(1, 0, 5), &caches);
  Tensor rest = gpt.forward(idx.narrow(1, 5, 4), &caches);
  KT_CHECK_CLOSE(cat({first, rest}, 1), values(gpt.forward(idx)), 1e-5);
}

TEST_CASE("sampling draws each token with its probability after temperature, top-k and top-p") {
  const std::vector<double> logits = {1.0, 2.5, 0.2, 2.0, -1.0, 1.5};
  Tensor l = tensor(logits);
  Generator gen(8);
  CHECK(nn::sample_token(l, {.temperature = 0}, gen) == 1);
  for (const nn::SamplingOptions& o : {nn::SamplingOptions{}, nn::SamplingOptions{.temperature = 0.7},
                                       nn::SamplingOptions{.temperature = 1.3, .top_k = 3},
                                       nn::SamplingOptions{.temperature = 1.0, .top_p = 0.8}}) {
    // The reference: softmax(l / T), the top k by logit, then the smallest prefix holding top_p of the mass.
    std::vector<size_t> order = {1, 3, 5, 0, 2, 4};
    std::vector<double> p(logits.size(), 0.0);
    double total = 0;
    const size_t k = o.top_k > 0 ? static_cast<size_t>(o.top_k) : order.size();
    for (size_t i = 0; i < k; ++i) total += std::exp(logits[order[i]] / o.temperature);
    double mass = 0;
    for (size_t i = 0; i < k && mass < o.top_p; ++i) mass += p[order[i]] = std::exp(logits[order[i]] / o.temperature) / total;
    std::vector<double> counts(logits.size(), 0.0);
    const int n = 20000;
    for (int i = 0; i < n; ++i) counts[static_cast<size_t>(nn::sample_token(l, o, gen))] += 1;
    for (size_t v = 0; v < logits.size(); ++v) {
      const double want = p[v] / mass, sigma = std::sqrt(want * (1 - want) / n);
      INFO("T " << o.temperature << " k " << o.top_k << " p " << o.top_p << " token " << v);
      CHECK(std::abs(counts[v] / n - want) <= 4 * sigma + 1e-12);
    }
  }
}

TEST_CASE("batched generation draws what each prompt draws alone, rows stopping on their own") {
  Generator gen(21);
  nn::ModelSpec llama = nn::LlamaConfig{.vocab_size = 40, .hidden_size = 16, .intermediate_size = 32,
                                        .num_hidden_layers = 2, .num_attention_heads = 4, .num_key_value_heads = 2,
                                        .max_position_embeddings = 32}
                            .spec();
  nn::ModelSpec gpt = nn::GPTConfig{.vocab_size = 40, .block_size = 32, .n_layer = 2, .n_head = 2, .n_embd = 16}.spec();
  for (const nn::ModelSpec& spec : {gpt, llama}) {
    INFO(spec.family);
    nn::TransformerLM model(spec, gen, kFloat64);
    const std::vector<std::vector<int64_t>> prompts = {{3, 9}, {1, 5, 7, 2, 8}, {4, 4, 6}, {11}};
    // Greedy: every row as generate() alone; then stopping at a token row 1 draws third.
    Generator unused(0);
    std::vector<Generator> unused_rows(prompts.size());
    std::vector<std::vector<int64_t>> alone;
    for (const auto& p : prompts) alone.push_back(nn::generate(model, p, 6, {.temperature = 0}, unused));
    nn::BatchGeneration all = nn::generate_batch(model, prompts, 6, {.temperature = 0}, unused_rows);
    CHECK(all.tokens == alone);
    CHECK(all.steps == 6);
    const int64_t stop = alone[1][2];
    nn::BatchGeneration stopped = nn::generate_batch(model, prompts, 6, {.temperature = 0}, unused_rows, stop);
    for (size_t b = 0; b < prompts.size(); ++b) {
      auto end = std::find(alone[b].begin(), alone[b].end(), stop);
      CHECK(stopped.tokens[b] == std::vector<int64_t>(alone[b].begin(), end == alone[b].end() ? end : end + 1));
    }
    // Sampled: row b draws from its own generator what generate() draws from
    // one seeded alike, and each token's log-probability is the full forward's.
    std::vector<Generator> rows;
    for (uint64_t b = 0; b < prompts.size(); ++b) rows.emplace_back(100 + b);
    nn::BatchGeneration sampled = nn::generate_batch(model, prompts, 5, {.temperature = 1.0}, rows, stop);
    for (size_t b = 0; b < prompts.size(); ++b) {
      Generator row(100 + b);
      CHECK(nn::generate(model, prompts[b], 5, {.temperature = 1.0}, row, stop) == sampled.tokens[b]);
      std::vector<int64_t> seq = prompts[b];
      seq.insert(seq.end(), sampled.tokens[b].begin(), sampled.tokens[b].end());
      const auto n = static_cast<int64_t>(seq.size()), k = static_cast<int64_t>(sampled.tokens[b].size());
      Tensor ids = tensor(seq).view({1, -1});
      Tensor lp = nn::token_log_probs(model.forward(ids.narrow(1, 0, n - 1)), ids.narrow(1, 1, n - 1));
      KT_CHECK_CLOSE(tensor(sampled.log_probs[b]), values(lp[0].narrow(0, n - 1 - k, k)), 1e-10);
    }
  }
}

TEST_CASE("rope rotates pairs (i, i + D/2) by position-dependent angles") {
  Generator gen(4);
  Tensor x = randn({1, 2, 5, 6}, gen, kFloat64);
  Tensor y = rope(x, 3, 100.0);
  std::vector<double> xv = values(x), yv = values(y), ref(xv.size());
  for (int h = 0; h < 2; ++h)
    for (int t = 0; t < 5; ++t)
      for (int i = 0; i < 3; ++i) {
        double a = (t + 3) * std::pow(100.0, -2.0 * i / 6.0);
        size_t base = (h * 5 + t) * 6;
        double x1 = xv[base + i], x2 = xv[base + i + 3];
        ref[base + i] = x1 * std::cos(a) - x2 * std::sin(a);
        ref[base + i + 3] = x2 * std::cos(a) + x1 * std::sin(a);
      }
  KT_CHECK_CLOSE(y, ref, 1e-14);
  kt::check_grad([](const std::vector<Tensor>& v) { return rope(v[0], 1); }, {kt::leaf({1, 1, 3, 4}, gen)});
  // A strided (B, T, H, D) -> (B, H, T, D) view, as attention passes it; lower precisions round the float64 result.
  Tensor bthd = randn({2, 5, 3, 8}, gen);
  KT_CHECK_CLOSE(rope(bthd.transpose(1, 2), 2), values(rope(bthd.transpose(1, 2).contiguous().to(kFloat64), 2)), 1e-6);
  KT_CHECK_CLOSE(rope(bthd.to(kBFloat16).transpose(1, 2), 2), values(rope(bthd.transpose(1, 2).to(kFloat64), 2)), 1e-2);
}

TEST_CASE("safetensors round trip and corrupt files") {
  auto dir = std::filesystem::temp_directory_path() / "kiln_test_safetensors";
  std::filesystem::create_directories(dir);
  std::string path = (dir / "t.safetensors").string();
  Generator gen(5);
  std::map<std::string, Tensor> tensors = {{"a", randn({3, 4}, gen)},
                                           {"b.int", arange(5)},
                                           {"c", randn({2, 2}, gen, kFloat64).t()},  // non-contiguous
                                           {"d", full({2}, 1.5, kBFloat16)},
                                           {"e", zeros({0, 3})}};
  save_safetensors(path, tensors, {{"step", "12"}});
  TensorFile f = load_safetensors(path);
  CHECK(f.metadata.at("step") == "12");
  REQUIRE(f.tensors.size() == 5);
  for (auto& [name, t] : tensors) {
    CHECK(f.tensors.at(name).dtype() == t.dtype());
    CHECK(f.tensors.at(name).sizes() == t.sizes());
    CHECK(values(f.tensors.at(name)) == values(t));
  }
  CHECK(!std::filesystem::exists(path + ".tmp"));
  // Truncation and garbage are reported with the file's name.
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 4);
  CHECK_THROWS_WITH(load_safetensors(path), Catch::Contains("outside the"));
  write_file_atomic(path, std::string("\x10\0\0\0\0\0\0\0{not json}      ", 24));
  CHECK_THROWS_WITH(load_safetensors(path), Catch::Contains("not valid JSON"));
  write_file_atomic(path, std::string("PK\x03\x04 a zip, as PyTorch's .bin files are"));
  CHECK_THROWS_WITH(load_safetensors(path), Catch::Contains(path + " is not a safetensors file"));
  CHECK_THROWS_WITH(load_safetensors((dir / "missing").string()), Catch::Contains("cannot open"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("mixed precision: bfloat16 activations, float32 master weights and gradients") {
  Generator g1(9), g2(9);
  nn::GPTConfig full = tiny(), mixed = tiny();
  mixed.compute_dtype = kBFloat16;
  nn::GPT a(full, g1), b(mixed, g2);
  Generator data(10);
  Tensor x = randint(0, 61, {2, 8}, data), y = randint(0, 61, {2, 8}, data);
  CHECK(b.forward(x).dtype() == kBFloat16);
  Tensor la = a.loss(x, y), lb = b.loss(x, y);
  CHECK(lb.dtype() == kFloat32);
  CHECK(lb.item<double>() == Approx(la.item<double>()).margin(0.02));
  la.backward();
  lb.backward();
  for (auto& [name, p] : b.named_parameters()) {
    INFO(name);
    CHECK(p.dtype() == kFloat32);
    REQUIRE(p.grad().defined());
    CHECK(p.grad().dtype() == kFloat32);
  }
  // bfloat16 gradients of the block weights are close to the float32 ones.
  Tensor ga = a.layers->at<nn::Block>(1).mlp->up->weight.grad(), gb = b.layers->at<nn::Block>(1).mlp->up->weight.grad();
  KT_CHECK_CLOSE(gb, values(ga), 0.05);
}

TEST_CASE("resizing the vocabulary keeps the old rows and logits") {
  for (bool tied : {true, false}) {
    INFO("tied " << tied);
    Generator gen(11);
    nn::ModelSpec spec = nn::GPTConfig{.vocab_size = 100, .block_size = 16, .n_layer = 2, .n_head = 2, .n_embd = 8}.spec();
    spec.tie_embeddings = tied;
    nn::TransformerLM model(spec, gen, kFloat64);
    Tensor idx = randint(0, 100, {2, 6}, gen);
    std::vector<double> before = values(model.forward(idx));
    Tensor old_rows = model.embed_tokens->weight.narrow(0, 0, 100).clone();
    model.resize_vocab(140, gen);  // past the padding to 128: the table grows to 256 rows
    CHECK(model.spec().vocab_size == 140);
    CHECK(model.padded_vocab_size() == 256);
    for (const auto& table : {model.embed_tokens, model.lm_head}) {
      if (!table) continue;
      CHECK(table->weight.sizes() == Shape{256, 8});
      CHECK(sum(abs(table->weight.narrow(0, 140, 116))).item<double>() == 0.0);  // padding
      const double std = std::sqrt(var(table->weight.narrow(0, 100, 40).reshape({-1}), {0}).item<double>());
      CHECK(std == Approx(0.02).epsilon(0.2));  // the model's init rule for the new rows
    }
    CHECK(values(model.embed_tokens->weight.narrow(0, 0, 100)) == values(old_rows));
    Tensor logits = model.forward(idx);
    CHECK(logits.sizes() == Shape{2, 6, 140});
    CHECK(values(logits.narrow(2, 0, 100).contiguous()) == before);
    // The new ids are looked up and trained like the others.
    Tensor loss = model.loss(full({1, 4}, int64_t{130}, kInt64), full({1, 4}, int64_t{139}, kInt64));
    loss.backward();
    CHECK(sum(abs(model.embed_tokens->weight.grad()[130])).item<double>() > 0);
    CHECK_THROWS_WITH(model.resize_vocab(120, gen), Catch::Contains("grows the vocabulary: 120 is below the model's 140"));
  }
  nn::GPT gpt({.vocab_size = 61, .block_size = 16, .n_layer = 1, .n_head = 2, .n_embd = 8});
  gpt.resize_vocab(70, default_generator());
  CHECK(gpt.config().vocab_size == 70);
}

TEST_CASE("a value model scores each row's last real token, padding aside") {
  Generator gen(12);
  nn::ModelSpec spec = nn::LlamaConfig{.vocab_size = 50, .hidden_size = 16, .intermediate_size = 32,
                                       .num_hidden_layers = 2, .num_attention_heads = 4, .num_key_value_heads = 2,
                                       .max_position_embeddings = 16}
                           .spec();
  nn::ValueModel model(spec, gen, kFloat64);
  CHECK(!model.spec().lm_head);
  CHECK(!model.lm_head);
  auto names = model.state_dict();
  CHECK(names.count("score.weight"));
  CHECK(model.score->weight.sizes() == Shape{1, 16});
  Tensor a = randint(0, 50, {1, 5}, gen), b = randint(0, 50, {1, 3}, gen);
  Tensor batch = cat({a, cat({b, full({1, 2}, int64_t{0}, kInt64)}, 1)});  // b padded to 5
  Tensor lengths = tensor(std::vector<int64_t>{5, 3});
  Tensor s = model.scores(batch, lengths);
  CHECK(s.sizes() == Shape{2});
  KT_CHECK_CLOSE(s[0], values(model.values(a)[0][4]), 1e-12);
  KT_CHECK_CLOSE(s[1], values(model.values(b)[0][2]), 1e-12);  // the padding after it changes nothing
  sum(s).backward();
  CHECK(sum(abs(model.score->weight.grad())).item<double>() > 0);
  CHECK(sum(abs(model.layers->at<nn::Block>(0).attn->qkv->weight.grad())).item<double>() > 0);
  CHECK_THROWS_WITH(model.forward(a), Catch::Contains("has no language-model head"));
  CHECK_THROWS_WITH(model.scores(a, tensor(std::vector<int64_t>{6})), Catch::Contains("lengths must be in [1, 5]"));
  // Hugging Face's name for it: *ForSequenceClassification, one label.
  const std::string config = nn::hf::config_json(model.spec());
  CHECK_THAT(config, Catch::Contains("LlamaForSequenceClassification"));
  CHECK(!nn::hf::spec_from_config(config).lm_head);
  CHECK(nn::hf::to_weights(model.spec(), model.full_state_dict()).count("score.weight"));
}

TEST_CASE("clone is a deep copy: values, frozen parameters, modes and dropout's generator") {
  Generator gen(13);
  nn::GPTConfig config = tiny();
  config.dropout = 0.5;
  nn::GPT gpt(config, gen, kFloat64);
  gpt.embed_positions->weight.requires_grad_(false);
  gpt.layers->at<nn::Block>(1).eval();
  std::unique_ptr<nn::TransformerLM> copy = gpt.clone();

  CHECK(copy->spec().vocab_size == 61);
  auto mine = gpt.named_parameters(), theirs = copy->named_parameters();
  REQUIRE(mine.size() == theirs.size());
  for (size_t i = 0; i < mine.size(); ++i) {
    CHECK(theirs[i].first == mine[i].first);
    CHECK(!theirs[i].second.is_same(mine[i].second));
    CHECK(theirs[i].second.storage() != mine[i].second.storage());
    CHECK(theirs[i].second.dtype() == kFloat64);
    CHECK(theirs[i].second.requires_grad() == mine[i].second.requires_grad());
    CHECK(sum(abs(theirs[i].second - mine[i].second)).item<double>() == 0.0);
  }
  CHECK(!copy->embed_positions->weight.requires_grad());
  CHECK(copy->is_training());
  CHECK(!copy->layers->at<nn::Block>(1).is_training());
  CHECK(copy->layers->at<nn::Block>(0).is_training());
  // the tied head stays tied in the copy
  CHECK(!copy->lm_head);

  // Dropout draws from the same generator: from the same offset, the same masks.
  Tensor idx = randint(0, 61, {2, 6}, gen);
  const uint64_t at = gen.offset();
  Tensor a = gpt.forward(idx);
  gen.set_offset(at);
  Tensor b = copy->forward(idx);
  CHECK(sum(abs(a - b)).item<double>() == 0.0);

  // Training the copy leaves the original as it was.
  Tensor before = gpt.embed_tokens->weight.clone();
  {
    NoGradGuard no_grad;
    copy->embed_tokens->weight.add_(1.0);
  }
  CHECK(sum(abs(gpt.embed_tokens->weight - before)).item<double>() == 0.0);

  // A value model's clone has its head; a model with adapters is refused.
  nn::ValueModel critic(tiny().spec(), gen, kFloat64);
  std::unique_ptr<nn::ValueModel> critic_copy = critic.clone();
  REQUIRE(critic_copy->score);
  gpt.eval();
  critic.eval();
  critic_copy->eval();
  KT_CHECK_CLOSE(critic_copy->values(idx), values(critic.values(idx)), 0.0);
  nn::add_lora(gpt, {.targets = {"qkv"}});
  CHECK_THROWS_WITH(gpt.clone(), Catch::Contains("holds LoRA adapters") && Catch::Contains("clone it before add_lora"));
}
