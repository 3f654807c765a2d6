// Training checkpoints (kiln/dist/checkpoint.h): exact round trips for GPT-2
// and Llama, and a write killed midway leaves the previous checkpoint loadable.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "helpers.h"

using namespace kiln;
namespace fs = std::filesystem;

namespace {
nn::ModelSpec tiny_gpt() {
  return nn::GPTConfig{.vocab_size = 100, .block_size = 8, .n_layer = 2, .n_head = 2, .n_embd = 16}.spec();
}
nn::ModelSpec tiny_llama() {
  return nn::LlamaConfig{.vocab_size = 100, .hidden_size = 16, .intermediate_size = 32, .num_hidden_layers = 2,
                         .num_attention_heads = 4, .num_key_value_heads = 2, .max_position_embeddings = 8,
                         .rope_theta = 500000.0}
      .spec();
}

// A world of one process.
dist::ParallelState& one_process() {
  static dist::ParallelState state(dist::single_process_group(), 1, 1, 1);
  return state;
}

// One AdamW step on random data, so the optimizer has state to save.
void train_step(nn::TransformerLM& model, optim::Optimizer& opt, Generator& gen) {
  Tensor x = randint(0, 100, {2, 8}, gen);
  opt.zero_grad();
  model.loss(x, x).backward();
  opt.step();
}
}  // namespace

TEST_CASE("a checkpoint restores weights, optimizer state and position exactly") {
  for (const nn::ModelSpec& spec : {tiny_gpt(), tiny_llama()}) {
    INFO(spec.family);
    fs::path dir = fs::temp_directory_path() / "kiln_test_ckpt";
    fs::remove_all(dir);
    Generator gen(1);
    nn::TransformerLM model(spec, gen);
    optim::AdamW opt(optim::decay_groups(model.named_parameters(), 0.1), {.lr = 1e-2});
    train_step(model, opt, gen);
    dist::TrainingState state{1, {0, 0, 5}, gen.offset()};
    std::string path = dist::save_checkpoint(dir.string(), model, one_process(), opt, state);
    CHECK(dist::latest_checkpoint(dir.string()) == path);
    CHECK(fs::exists(fs::path(path) / "config.json"));

    Generator other(2);
    nn::TransformerLM restored(nn::hf::read_config(path), other);
    CHECK(restored.spec().family == spec.family);
    optim::AdamW restored_opt(optim::decay_groups(restored.named_parameters(), 0.1), {.lr = 1e-2});
    dist::TrainingState restored_state;
    dist::load_checkpoint(path, restored, &restored_opt, &restored_state);
    CHECK(restored_state.step == 1);
    CHECK(restored_state.loader == data::LoaderPosition{0, 0, 5});
    CHECK(restored_state.rng_offset == state.rng_offset);
    for (auto& [name, t] : model.state_dict()) CHECK(kt::values(restored.state_dict().at(name)) == kt::values(t));
    // The next steps agree bit for bit.
    Generator g1(7), g2(7);
    train_step(model, opt, g1);
    train_step(restored, restored_opt, g2);
    for (auto& [name, t] : model.state_dict()) CHECK(kt::values(restored.state_dict().at(name)) == kt::values(t));
    // Older checkpoints beyond `keep` are removed.
    for (int64_t s = 2; s <= 4; ++s) dist::save_checkpoint(dir.string(), model, one_process(), opt, {s, {}, 0}, 2);
    CHECK(!fs::exists(dir / "step-000001"));
    CHECK(!fs::exists(dir / "step-000002"));
    CHECK(fs::exists(dir / "step-000004"));
    // A save cut short (its .tmp directory) is not a checkpoint.
    fs::create_directories(dir / "step-000005.tmp");
    CHECK(dist::checkpoint_names(dir.string()) == std::vector<std::string>{"step-000003", "step-000004"});
    fs::remove_all(dir);
  }
}

TEST_CASE("a checkpoint write killed midway leaves the previous one intact") {
  fs::path dir = fs::temp_directory_path() / "kiln_test_ckpt_kill";
  fs::remove_all(dir);
  Generator gen(3);
  nn::GPT model({.vocab_size = 500, .block_size = 64, .n_layer = 4, .n_head = 4, .n_embd = 64}, gen);
  optim::AdamW opt(optim::decay_groups(model.named_parameters(), 0.1), {.lr = 1e-2});
  dist::save_checkpoint(dir.string(), model, one_process(), opt, {1, {}, 0});
  auto reference = model.state_dict();
  for (int delay_us : {200, 1500, 5000, 20000}) {
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      // Keep rewriting a newer checkpoint until killed.
      for (int64_t s = 2;; ++s) dist::save_checkpoint(dir.string(), model, one_process(), opt, {s, {}, 0});
    }
    usleep(static_cast<useconds_t>(delay_us));
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    std::string latest = dist::latest_checkpoint(dir.string());
    REQUIRE(!latest.empty());
    Generator other(4);
    nn::TransformerLM restored(nn::hf::read_config(latest), other);
    optim::AdamW restored_opt(optim::decay_groups(restored.named_parameters(), 0.1), {.lr = 1e-2});
    dist::TrainingState st;
    dist::load_checkpoint(latest, restored, &restored_opt, &st);
    INFO("killed after " << delay_us << " us; latest " << latest);
    for (auto& [name, t] : reference) CHECK(kt::values(restored.state_dict().at(name)) == kt::values(t));
  }
  fs::remove_all(dir);
}

TEST_CASE("a model of no Hugging Face family is saved with kiln's names and config") {
  nn::ModelSpec spec = tiny_gpt();
  spec.family = "mine";
  spec.block.norm = {.kind = nn::NormKind::RMSNorm, .eps = 1e-6, .bias = false};
  spec.block.placement = nn::NormPlacement::Post;
  spec.block.attention.rope = nn::RopeSpec{5000.0, nn::RopeScaling{2.0, 1.0, 4.0, 64}};
  spec.block.attention.scale = 0.25;
  spec.block.mlp = {.kind = nn::MlpKind::SwiGLU, .hidden = 40, .bias = false};
  spec.learned_positions = false;
  spec.tie_embeddings = false;
  const nn::ModelSpec back = nn::spec_from_json(nn::spec_to_json(spec));
  CHECK(nn::spec_to_json(back) == nn::spec_to_json(spec));
  CHECK(back.block.attention.rope == spec.block.attention.rope);
  CHECK(back.block.attention.scale == spec.block.attention.scale);
  nn::ModelSpec offset = tiny_gpt();
  offset.position_offset = 3;
  CHECK(nn::spec_from_json(nn::spec_to_json(offset)).position_offset == 3);

  fs::path dir = fs::temp_directory_path() / "kiln_test_ckpt_mine";
  fs::remove_all(dir);
  Generator gen(5);
  nn::TransformerLM model(spec, gen);
  optim::AdamW opt(optim::decay_groups(model.named_parameters(), 0.1), {.lr = 1e-2});
  train_step(model, opt, gen);
  std::string path = dist::save_checkpoint(dir.string(), model, one_process(), opt, {1, {}, 0});
  CHECK(load_safetensors((fs::path(path) / "model.safetensors").string()).tensors.count("layers.1.mlp.up.weight"));
  Generator other(6);
  nn::TransformerLM restored(nn::hf::read_config(path), other);
  dist::load_checkpoint(path, restored);
  for (auto& [name, t] : model.state_dict()) CHECK(kt::values(restored.state_dict().at(name)) == kt::values(t));
  const std::unique_ptr<nn::TransformerLM> loaded = dist::load_model(dir.string());  // the run: its latest
  CHECK(!loaded->is_training());
  CHECK(nn::spec_to_json(loaded->spec()) == nn::spec_to_json(spec));
  for (auto& [name, t] : model.state_dict()) CHECK(kt::values(loaded->state_dict().at(name)) == kt::values(t));
  CHECK_THROWS_WITH(nn::spec_from_json(R"({"model_type": "kiln", "family": "x"})"),
                    Catch::Contains("not a kiln model config"));
  fs::remove_all(dir);
}

TEST_CASE("checkpoint directories: pruned by step, `latest` kept and checked, leftovers cleaned") {
  fs::path dir = fs::temp_directory_path() / "kiln_test_ckpt_prune";
  fs::remove_all(dir);
  Generator gen(1);
  nn::TransformerLM model(tiny_gpt(), gen);
  optim::AdamW opt(optim::decay_groups(model.named_parameters(), 0.1), {.lr = 1e-2});
  train_step(model, opt, gen);
  auto save = [&](int64_t step, int keep) {
    return dist::save_checkpoint(dir.string(), model, one_process(), opt, {step, {}, 0}, keep);
  };
  // Steps past six digits sort by number, not as strings ("step-1000000" < "step-999999").
  save(999999, 2);
  save(1000000, 2);
  save(1000001, 2);
  CHECK(dist::checkpoint_names(dir.string()) == std::vector<std::string>{"step-1000000", "step-1000001"});
  // A run restarted at a lower step keeps the checkpoint it just wrote, which `latest` names.
  const std::string written = save(5, 1);
  CHECK(dist::latest_checkpoint(dir.string()) == written);
  CHECK(dist::checkpoint_names(dir.string()) == std::vector<std::string>{"step-000005"});
  // keep 0 would delete the checkpoint just written.
  CHECK_THROWS_WITH(save(6, 0), Catch::Contains("keep is 0"));
  // An interrupted save's directory is removed by the next save.
  fs::create_directories(dir / "step-000007.tmp");
  save(8, 2);
  CHECK(!fs::exists(dir / "step-000007.tmp"));
  // `latest` names a checkpoint of this directory and nothing else.
  for (const char* bad : {"../../..", "/etc", "step-", "step-12x", "step-000005/../.."}) {
    INFO(bad);
    write_file_atomic((dir / "latest").string(), std::string(bad) + "\n");
    CHECK_THROWS_WITH(dist::latest_checkpoint(dir.string()), Catch::Contains("expected a checkpoint of this directory"));
  }
  fs::remove_all(dir);
}

TEST_CASE("a damaged training state is refused with its key, not 'stoll' or 'map::at'") {
  fs::path dir = fs::temp_directory_path() / "kiln_test_ckpt_damaged";
  fs::remove_all(dir);
  Generator gen(1);
  nn::TransformerLM model(tiny_gpt(), gen);
  optim::AdamW opt(optim::decay_groups(model.named_parameters(), 0.1), {.lr = 1e-2});
  train_step(model, opt, gen);
  const std::string path = dist::save_checkpoint(dir.string(), model, one_process(), opt, {3, {}, 0});
  const std::string state_file = (fs::path(path) / "state.safetensors").string();
  const TensorFile good = load_safetensors(state_file);
  auto refused = [&](std::map<std::string, Tensor> tensors, std::map<std::string, std::string> metadata) {
    save_safetensors(state_file, tensors, metadata);
    dist::TrainingState state;
    try {
      dist::load_checkpoint(path, model, &opt, &state);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  auto metadata = good.metadata;
  metadata["step"] = "abc";
  CHECK_THAT(refused(good.tensors, metadata), Catch::Contains("state 'step' is 'abc'"));
  metadata = good.metadata;
  metadata["loader_batch"] = "-4";
  CHECK_THAT(refused(good.tensors, metadata), Catch::Contains("state 'loader_batch' is '-4'"));
  metadata = good.metadata;
  metadata.erase("rng_offset");
  CHECK_THAT(refused(good.tensors, metadata), Catch::Contains("no 'rng_offset'"));
  auto tensors = good.tensors;
  tensors.erase("step");
  CHECK_THAT(refused(tensors, good.metadata), Catch::Contains("no optimizer step count"));
  fs::remove_all(dir);
}

TEST_CASE("weights holding NaN or infinity are refused as they load") {
  fs::path dir = fs::temp_directory_path() / "kiln_test_ckpt_nan";
  fs::remove_all(dir);
  Generator gen(1);
  nn::TransformerLM model(tiny_gpt(), gen);
  optim::AdamW opt(optim::decay_groups(model.named_parameters(), 0.1), {.lr = 1e-2});
  for (double bad : {std::nan(""), double(INFINITY)}) {
    {
      NoGradGuard no_grad;
      model.named_parameters().at(3).second.view({-1}).narrow(0, 1, 1).fill_(bad);
    }
    const std::string path = dist::save_checkpoint(dir.string(), model, one_process(), opt, {1, {}, 0});
    Generator other(2);
    nn::TransformerLM restored(tiny_gpt(), other);
    CHECK_THROWS_WITH(dist::load_checkpoint(path, restored), Catch::Contains("holds NaN or infinite values"));
  }
  fs::remove_all(dir);
}
