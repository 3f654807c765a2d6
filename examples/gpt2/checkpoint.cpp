#include "checkpoint.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace fs = std::filesystem;

namespace gpt2 {

namespace {
std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  KILN_CHECK(in.good(), "[checkpoint] cannot read {}", p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

std::string save_checkpoint(const std::string& dir, const kiln::nn::GPT& model, const kiln::optim::Optimizer& opt,
                            const TrainingState& state, int keep) {
  const std::string name = fmt::format("step-{:06d}", state.step);
  const fs::path final_dir = fs::path(dir) / name, tmp = fs::path(dir) / (name + ".tmp");
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  kiln::save_safetensors((tmp / "model.safetensors").string(), kiln::nn::gpt2_to_hf(model), {{"format", "pt"}});
  kiln::write_file_atomic((tmp / "config.json").string(), kiln::nn::gpt2_hf_config_json(model.config()));
  kiln::save_safetensors((tmp / "state.safetensors").string(), opt.state_dict(),
                         {{"step", std::to_string(state.step)},
                          {"loader_epoch", std::to_string(state.loader.epoch)},
                          {"loader_shard", std::to_string(state.loader.shard)},
                          {"loader_batch", std::to_string(state.loader.batch)},
                          {"rng_offset", std::to_string(state.rng_offset)}});
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  kiln::write_file_atomic((fs::path(dir) / "latest").string(), name + "\n");
  // Keep the newest `keep` complete checkpoints.
  std::vector<fs::path> all;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0 && e.path().extension() != ".tmp")
      all.push_back(e.path());
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + keep < all.size(); ++i) fs::remove_all(all[i]);
  return final_dir.string();
}

std::string latest_checkpoint(const std::string& dir) {
  fs::path pointer = fs::path(dir) / "latest";
  if (!fs::exists(pointer)) return "";
  std::string name = read_text(pointer);
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  fs::path ckpt = fs::path(dir) / name;
  KILN_CHECK(fs::is_directory(ckpt), "[checkpoint] {} names {}, which does not exist", pointer.string(), ckpt.string());
  return ckpt.string();
}

kiln::nn::GPTConfig read_config(const std::string& checkpoint) {
  fs::path p = fs::path(checkpoint) / "config.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text(p));
    return {.vocab_size = j.at("vocab_size").get<int64_t>(),
            .block_size = j.at("n_positions").get<int64_t>(),
            .n_layer = j.at("n_layer").get<int64_t>(),
            .n_head = j.at("n_head").get<int64_t>(),
            .n_embd = j.at("n_embd").get<int64_t>(),
            .dropout = j.value("resid_pdrop", 0.0)};
  } catch (const nlohmann::json::exception& e) {
    KILN_FAIL("[checkpoint] {} is not a GPT-2 config: {}", p.string(), e.what());
  }
}

void load_checkpoint(const std::string& checkpoint, kiln::nn::GPT& model, kiln::optim::Optimizer* opt,
                     TrainingState* state) {
  kiln::nn::gpt2_from_hf(model, kiln::load_safetensors((fs::path(checkpoint) / "model.safetensors").string()).tensors);
  if (!opt) return;
  kiln::TensorFile f = kiln::load_safetensors((fs::path(checkpoint) / "state.safetensors").string());
  opt->load_state_dict(f.tensors);
  auto number = [&](const char* key) -> int64_t {
    auto it = f.metadata.find(key);
    KILN_CHECK(it != f.metadata.end(), "[checkpoint] {} has no '{}' in its state", checkpoint, key);
    return std::stoll(it->second);
  };
  state->step = number("step");
  state->loader = {number("loader_epoch"), number("loader_shard"), number("loader_batch")};
  state->rng_offset = static_cast<uint64_t>(number("rng_offset"));
}

}  // namespace gpt2
