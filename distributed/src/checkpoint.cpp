#include "kiln/dist/checkpoint.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>

#include "kiln/dist/model_parallel.h"
#include "kiln/nn/models/hf.h"
#include "kiln/nn/models/peft.h"
#include "kiln/serialize.h"

namespace fs = std::filesystem;

namespace kiln::dist {

namespace {

// The optimizer's parameters, in its numbering, by their names in the model.
std::vector<std::string> optimizer_param_names(const nn::Module& model, const std::vector<Tensor>& params) {
  auto named = model.named_parameters();
  std::vector<std::string> names;
  for (const Tensor& p : params) {
    auto it = std::find_if(named.begin(), named.end(), [&](const auto& np) { return np.second.is_same(p); });
    KILN_CHECK(it != named.end(), "[checkpoint] the optimizer updates a tensor that is not a model parameter");
    names.push_back(it->first);
  }
  return names;
}

// N of a checkpoint's name "step-N" (digits only), or nullopt for any other name.
std::optional<int64_t> checkpoint_step(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() == 5 || name.size() > 5 + 18) return std::nullopt;
  int64_t step = 0;
  const char* end = name.data() + name.size();
  auto [ptr, ec] = std::from_chars(name.data() + 5, end, step);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return step;
}

// A non-negative integer of the training state's metadata, or a clear error.
template <typename T>
T state_integer(const std::string& checkpoint, const std::string& key, const std::string& text) {
  T value{};
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  KILN_CHECK(ec == std::errc() && ptr == end && text[0] != '-', "[checkpoint] {}: state '{}' is '{}': expected a "
             "non-negative integer (damaged checkpoint?)", checkpoint, key, text);
  return value;
}

// "<index>.<state>" -> state -> parameter name -> tensor.
std::map<std::string, std::map<std::string, Tensor>> by_state(const std::map<std::string, Tensor>& state,
                                                              const std::vector<std::string>& names) {
  std::map<std::string, std::map<std::string, Tensor>> out;
  for (const auto& [key, t] : state) {
    if (key == "step") continue;
    const size_t dot = key.find('.');
    size_t index = names.size();
    if (dot != std::string::npos) std::from_chars(key.data(), key.data() + dot, index);
    KILN_CHECK(index < names.size(), "[checkpoint] optimizer state '{}' names no parameter of the {} it updates", key,
               names.size());
    out[key.substr(dot + 1)][names[index]] = t;
  }
  return out;
}

// The optimizer state in the numbering of params ("<index>.<state>", this
// rank's shares) as whole tensors under the parameters' names
// ("<name>.<state>"), and the state kinds it holds ("exp_avg,exp_avg_sq").
// gather makes a state kind's local tensors whole.
template <typename Gather>
std::pair<std::map<std::string, Tensor>, std::string> whole_optimizer_state(
    const std::map<std::string, Tensor>& opt_state, const std::vector<std::string>& names, Gather gather) {
  std::map<std::string, Tensor> full_state{{"step", opt_state.at("step")}};
  std::string kinds;
  for (auto& [kind, local] : by_state(opt_state, names)) {
    for (auto& [name, t] : gather(local)) full_state[name + "." + kind] = t;
    kinds += (kinds.empty() ? "" : ",") + kind;
  }
  return {full_state, kinds};
}

// Writes dir/step-N through its .tmp twin: write_model(tmp) puts the weights
// and config there, then the optimizer state and the training state go to
// state.safetensors; renamed into place, `latest` pointed at it, the newest
// `keep` kept. Returns its path.
std::string write_checkpoint(const std::string& dir, const std::function<void(const fs::path&)>& write_model,
                             const std::map<std::string, Tensor>& full_state, const std::string& kinds,
                             const TrainingState& state, int keep) {
  KILN_CHECK(keep >= 1, "[checkpoint] keep is {}: at least the checkpoint just written is kept", keep);
  const std::string name = fmt::format("step-{:06d}", state.step);
  const fs::path final_dir = fs::path(dir) / name, tmp = fs::path(dir) / (name + ".tmp");
  // What an interrupted save left behind.
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".tmp" && checkpoint_step(e.path().stem().string())) fs::remove_all(e.path());
  fs::create_directories(tmp);
  write_model(tmp);
  save_safetensors((tmp / "state.safetensors").string(), full_state,
                   {{"step", std::to_string(state.step)},
                    {"optimizer_state", kinds},
                    {"loader_epoch", std::to_string(state.loader.epoch)},
                    {"loader_shard", std::to_string(state.loader.shard)},
                    {"loader_batch", std::to_string(state.loader.batch)},
                    {"rng_offset", std::to_string(state.rng_offset)}});
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  write_file_atomic((fs::path(dir) / "latest").string(), name + "\n");
  // Keep the newest `keep` complete checkpoints, the one just written among
  // them even when an older run left higher steps.
  std::vector<std::string> older = checkpoint_names(dir);
  std::erase(older, name);
  for (size_t i = 0; i + keep < older.size() + 1; ++i) fs::remove_all(fs::path(dir) / older[i]);
  return final_dir.string();
}

// Writes the checkpoint of a model and its optimizer's state ("<index>.<state>"
// in the numbering of params): gathered on every rank, written on rank 0.
std::string save(const std::string& dir, const nn::ParallelModel& model, const ParallelState& layout,
                 const ModelWriter& write_model, const std::vector<Tensor>& params,
                 const std::map<std::string, Tensor>& opt_state, const TrainingState& state, int keep) {
  std::map<std::string, Tensor> weights = full_state_dict(model, layout);
  auto [full_state, kinds] = whole_optimizer_state(
      opt_state, optimizer_param_names(model, params),
      [&](const std::map<std::string, Tensor>& local) { return gather_full(model, layout, local); });
  if (layout.world()->rank() != 0) return "";
  return write_checkpoint(dir, [&](const fs::path& tmp) { write_model(weights, tmp); }, full_state, kinds, state,
                          keep);
}

// A TransformerLM's weights under its family's Hugging Face names, with its config.
// The model in Hugging Face's format; a LoRA model's adapters beside it in
// PEFT's (adapter_config.json, adapter_model.safetensors).
ModelWriter hf_writer(const nn::TransformerLM& model) {
  return [&model](const std::map<std::string, Tensor>& weights, const fs::path& dir) {
    std::map<std::string, Tensor> base, adapters;
    for (const auto& [name, t] : weights) (nn::is_lora_parameter(name) ? adapters : base)[name] = t;
    save_safetensors((dir / "model.safetensors").string(), nn::hf::to_weights(model.spec(), base), {{"format", "pt"}});
    write_file_atomic((dir / "config.json").string(), nn::hf::config_json(model.spec()));
    if (!adapters.empty()) nn::hf::save_peft_adapter(dir.string(), model.spec(), *nn::lora_config(model), adapters);
  };
}

// A checkpoint's whole optimizer state: its step count, and each state kind's
// tensors by parameter name.
struct StoredState {
  Tensor step;
  std::map<std::string, std::map<std::string, Tensor>> by_kind;
};

// Reads the training state into `state` and returns the optimizer state of
// the parameters `names` (of those that have any: the optimizer's load checks
// that each has all of its kinds).
StoredState read_state(const std::string& checkpoint, const std::vector<std::string>& names, TrainingState& state) {
  TensorFile f = load_safetensors((fs::path(checkpoint) / "state.safetensors").string());
  auto meta = [&](const char* key) -> std::string {
    auto it = f.metadata.find(key);
    KILN_CHECK(it != f.metadata.end(), "[checkpoint] {} has no '{}' in its state", checkpoint, key);
    return it->second;
  };
  auto integer = [&](const char* key) { return state_integer<int64_t>(checkpoint, key, meta(key)); };
  state.step = integer("step");
  state.loader = {integer("loader_epoch"), integer("loader_shard"), integer("loader_batch")};
  state.rng_offset = state_integer<uint64_t>(checkpoint, "rng_offset", meta("rng_offset"));
  auto step = f.tensors.find("step");
  KILN_CHECK(step != f.tensors.end(), "[checkpoint] {} holds no optimizer step count in its state", checkpoint);
  StoredState stored{step->second, {}};
  std::stringstream kinds(meta("optimizer_state"));
  for (std::string kind; std::getline(kinds, kind, ',');)
    for (const std::string& name : names)  // a parameter that never had a gradient has no state
      if (auto it = f.tensors.find(name + "." + kind); it != f.tensors.end()) stored.by_kind[kind][name] = it->second;
  return stored;
}

// The stored optimizer state in the numbering of names, "<index>.<state>";
// take keeps this rank's share of each kind's whole tensors.
template <typename Take>
std::map<std::string, Tensor> numbered_state(const StoredState& stored, const std::vector<std::string>& names,
                                             Take take) {
  std::map<std::string, Tensor> local_state{{"step", stored.step}};
  for (const auto& [kind, full] : stored.by_kind) {
    std::map<std::string, Tensor> mine = take(full);
    for (size_t i = 0; i < names.size(); ++i)
      if (auto it = mine.find(names[i]); it != mine.end()) local_state[fmt::format("{}.{}", i, kind)] = it->second;
  }
  return local_state;
}

// Loads the weights (read_model) and the training state, and returns this
// rank's share of the optimizer state in the numbering of params.
std::map<std::string, Tensor> load(const std::string& checkpoint, nn::ParallelModel& model, const ModelReader& read_model,
                                   const std::vector<Tensor>& params, TrainingState& state) {
  read_model(checkpoint);
  const std::vector<std::string> names = optimizer_param_names(model, params);
  return numbered_state(read_state(checkpoint, names, state), names,
                        [&](const std::map<std::string, Tensor>& full) { return model.take_local(full, false); });
}

// And back: the adapters loaded into the model's, or added when it has none.
ModelReader hf_reader(nn::TransformerLM& model) {
  return [&model](const std::string& dir) {
    nn::hf::load_weights(model, nn::hf::read_weights(dir));
    if (!fs::exists(fs::path(dir) / "adapter_config.json")) return;
    if (nn::lora_config(model)) nn::hf::load_peft_weights(dir, model);
    else nn::hf::load_peft_adapter(dir, model);
  };
}

}  // namespace

std::string save_checkpoint(const std::string& dir, const nn::TransformerLM& model, const ParallelState& layout,
                            const optim::Optimizer& opt, const TrainingState& state, int keep) {
  return save(dir, model, layout, hf_writer(model), opt.params(), opt.state_dict(), state, keep);
}

std::string save_checkpoint(const std::string& dir, const nn::TransformerLM& model, const ParallelState& layout,
                            const ZeroRedundancyOptimizer& opt, const TrainingState& state, int keep) {
  return save(dir, model, layout, hf_writer(model), opt.params(), opt.state_dict(), state, keep);
}

std::string save_checkpoint(const std::string& dir, const nn::ParallelModel& model, const ParallelState& layout,
                            const ModelWriter& write_model, const optim::Optimizer& opt, const TrainingState& state,
                            int keep) {
  return save(dir, model, layout, write_model, opt.params(), opt.state_dict(), state, keep);
}

std::vector<std::string> checkpoint_names(const std::string& dir) {
  std::vector<std::string> names;
  if (!fs::is_directory(dir)) return names;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && checkpoint_step(e.path().filename().string()))
      names.push_back(e.path().filename().string());
  // By step: as strings, step-1000000 would sort before step-999999.
  std::sort(names.begin(), names.end(),
            [](const std::string& a, const std::string& b) { return *checkpoint_step(a) < *checkpoint_step(b); });
  return names;
}

std::string latest_checkpoint(const std::string& dir) {
  fs::path pointer = fs::path(dir) / "latest";
  if (!fs::exists(pointer)) return "";
  std::string name = read_file(pointer.string());
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  KILN_CHECK(checkpoint_step(name), "[checkpoint] {} names '{}': expected a checkpoint of this directory, step-N",
             pointer.string(), name.substr(0, 200));
  fs::path ckpt = fs::path(dir) / name;
  KILN_CHECK(fs::is_directory(ckpt), "[checkpoint] {} names {}, which does not exist", pointer.string(), ckpt.string());
  return ckpt.string();
}

void load_checkpoint(const std::string& checkpoint, nn::TransformerLM& model, optim::Optimizer* opt,
                     TrainingState* state) {
  if (!opt) return hf_reader(model)(checkpoint);
  KILN_CHECK(state, "[checkpoint] loading optimizer state needs a TrainingState to fill");
  opt->load_state_dict(load(checkpoint, model, hf_reader(model), opt->params(), *state));
}

void load_checkpoint(const std::string& checkpoint, nn::TransformerLM& model, ZeroRedundancyOptimizer& opt,
                     TrainingState& state) {
  opt.load_state_dict(load(checkpoint, model, hf_reader(model), opt.params(), state));
}

void load_checkpoint(const std::string& checkpoint, nn::ParallelModel& model, const ModelReader& read_model,
                     optim::Optimizer& opt, TrainingState& state) {
  opt.load_state_dict(load(checkpoint, model, read_model, opt.params(), state));
}

std::unique_ptr<nn::TransformerLM> load_model(const std::string& run_or_checkpoint, Device device, DType dtype) {
  const std::string latest = latest_checkpoint(run_or_checkpoint);
  const std::string dir = latest.empty() ? run_or_checkpoint : latest;
  // The default generator only draws the start values the weights replace
  // (and stays the dropout's, as for any model built without one).
  auto model = std::make_unique<nn::TransformerLM>(nn::hf::read_config(dir), default_generator(), dtype, device);
  load_checkpoint(dir, *model);
  model->eval();
  return model;
}

}  // namespace kiln::dist
