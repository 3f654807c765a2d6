#include "kiln/nn/models/peft.h"

#include <filesystem>
#include <set>

#include "hf_names.h"
#include "kiln/serialize.h"
#include "json_fields.h"

namespace kiln::nn::hf {

namespace {

// Where a family's adapters sit in its Hugging Face model.
struct PeftLayout {
  std::string layer_prefix;                    // the blocks' names: "model.layers."
  std::map<std::string, std::string> modules;  // kiln's adapter site ("attn.q") -> the block's module
  bool per_head_qkv = false;                   // the fused q/k/v's rows per head (GPT-NeoX, BLOOM)
  bool fan_in_fan_out = false;                 // weights stored (in, out): GPT-2's Conv1D
  std::string hint;                            // for an adapter with no place
};

const PeftLayout* layout_of(const std::string& family) {
  static const PeftLayout llama{"model.layers.",
                                {{"attn.q", "self_attn.q_proj"}, {"attn.k", "self_attn.k_proj"},
                                 {"attn.v", "self_attn.v_proj"}, {"attn.out", "self_attn.o_proj"},
                                 {"mlp.gate", "mlp.gate_proj"}, {"mlp.up", "mlp.up_proj"},
                                 {"mlp.down", "mlp.down_proj"}},
                                false, false, ": target q, k and v, an adapter each"};
  static const std::map<std::string, PeftLayout> all{
      {"gpt2",
       {"transformer.h.",
        {{"attn.qkv", "attn.c_attn"}, {"attn.out", "attn.c_proj"}, {"mlp.up", "mlp.c_fc"}, {"mlp.down", "mlp.c_proj"}},
        false, true, ": target qkv, GPT-2's one c_attn"}},
      {"llama", llama},
      {"mixtral", llama},
      {"opt",
       {"model.decoder.layers.",
        {{"attn.q", "self_attn.q_proj"}, {"attn.k", "self_attn.k_proj"}, {"attn.v", "self_attn.v_proj"},
         {"attn.out", "self_attn.out_proj"}, {"mlp.up", "fc1"}, {"mlp.down", "fc2"}},
        false, false, ": target q, k and v, an adapter each"}},
      {"gpt_neox",
       {"gpt_neox.layers.",
        {{"attn.qkv", "attention.query_key_value"}, {"attn.out", "attention.dense"},
         {"mlp.up", "mlp.dense_h_to_4h"}, {"mlp.down", "mlp.dense_4h_to_h"}},
        true, false, ": target qkv, GPT-NeoX's one query_key_value"}},
      {"bloom",
       {"transformer.h.",
        {{"attn.qkv", "self_attention.query_key_value"}, {"attn.out", "self_attention.dense"},
         {"mlp.up", "mlp.dense_h_to_4h"}, {"mlp.down", "mlp.dense_4h_to_h"}},
        true, false, ": target qkv, BLOOM's one query_key_value"}}};
  auto it = all.find(family);
  return it == all.end() ? nullptr : &it->second;
}

constexpr const char* kPeftPrefix = "base_model.model.";

// A kiln adapter parameter: "layers.3.attn.qkv.lora.q_B.weight" is layer 3's
// adapter on site "attn.q", matrix B.
struct Adapter {
  std::string layer, site, matrix;
};

Adapter parse_adapter(const std::string& name) {
  const size_t lora = name.find(".lora.");
  KILN_CHECK(name.starts_with("layers.") && lora != std::string::npos && name.ends_with("A.weight") !=
                 name.ends_with("B.weight"),
             "[peft] '{}' is not an adapter of a block (layers.<i>.<layer>.lora.<part>_A.weight)", name);
  const std::string path = name.substr(0, lora);                                  // layers.3.attn.qkv
  const std::string leaf = name.substr(lora + 6, name.size() - lora - 6 - 7);    // q_B, or B
  const size_t layer_end = path.find('.', 7);
  const std::string within = path.substr(layer_end + 1);                          // attn.qkv
  const std::string part = leaf.size() > 1 ? leaf.substr(0, leaf.size() - 2) : "";
  return {path.substr(7, layer_end - 7), part.empty() ? within : within.substr(0, within.rfind('.') + 1) + part,
          leaf.substr(leaf.size() - 1)};
}

std::string peft_name(const PeftLayout* layout, const std::string& family, const std::string& kiln) {
  if (!layout) return kiln;
  const Adapter a = parse_adapter(kiln);
  auto module = layout->modules.find(a.site);
  if (module == layout->modules.end()) {
    std::string sites;
    for (const auto& [site, m] : layout->modules) sites += (sites.empty() ? "" : ", ") + site;
    KILN_FAIL("[peft] {}'s adapters in PEFT's format sit on {}; kiln's on '{}' has no place among them{}", family,
              sites, a.site, a.site == "attn.qkv" || a.site == "attn.q" ? layout->hint : "");
  }
  return kPeftPrefix + layout->layer_prefix + a.layer + "." + module->second + ".lora_" + a.matrix + ".weight";
}

// B beside a per-head q/k/v layer holds its rows per head in Hugging Face's layout.
bool per_head_rows(const PeftLayout* layout, const std::string& kiln) {
  return layout && layout->per_head_qkv && kiln.find(".attn.qkv.lora.B.") != std::string::npos;
}

// The site ("attn.q") of a PEFT tensor's name, or kiln's name's for a model of no family.
std::string site_of(const PeftLayout* layout, const std::string& key) {
  if (!layout) return parse_adapter(key).site;
  const std::string blocks = kPeftPrefix + layout->layer_prefix;
  const bool is_a = key.ends_with(".lora_A.weight"), is_b = key.ends_with(".lora_B.weight");
  KILN_CHECK(key.starts_with(blocks) && (is_a || is_b),
             "[peft] adapter_model.safetensors holds '{}', not a LoRA matrix of a block ({}<i>.<module>.lora_A.weight)",
             key, blocks);
  const std::string rest = key.substr(blocks.size(), key.size() - blocks.size() - 14);  // "3.self_attn.q_proj"
  const std::string module = rest.substr(rest.find('.') + 1);
  for (const auto& [site, m] : layout->modules)
    if (m == module) return site;
  KILN_FAIL("[peft] the adapter on '{}' has no place in kiln's model (modules with adapters: {})", module,
            fmt::join([&] {
              std::vector<std::string> m;
              for (const auto& [s, name] : layout->modules) m.push_back(name);
              return m;
            }(), ", "));
}

}  // namespace

void save_peft_adapter(const std::string& dir, const ModelSpec& spec, const LoraConfig& config,
                       const std::map<std::string, Tensor>& adapters) {
  config.check();
  const PeftLayout* layout = layout_of(spec.family);
  std::map<std::string, Tensor> tensors;
  std::set<std::string> modules;
  for (const auto& [name, t] : adapters) {
    KILN_CHECK(is_lora_parameter(name), "[peft] '{}' is not an adapter parameter", name);
    Tensor v = t.detach().to(kCPU, kFloat32);
    if (per_head_rows(layout, name)) v = qkv_rows_per_head(v, spec.block.attention.heads);
    tensors[peft_name(layout, spec.family, name)] = v.contiguous();
    const std::string site = parse_adapter(name).site;
    modules.insert(layout ? layout->modules.at(site) : site);
  }
  KILN_CHECK(!tensors.empty(), "[peft] no adapters to save");
  nlohmann::ordered_json j = {{"peft_type", "LORA"},
                              {"task_type", spec.lm_head ? "CAUSAL_LM" : "SEQ_CLS"},
                              {"base_model_name_or_path", nullptr},
                              {"r", config.rank},
                              {"lora_alpha", config.alpha},
                              {"lora_dropout", config.dropout},
                              {"target_modules", std::vector<std::string>(modules.begin(), modules.end())},
                              {"bias", "none"},
                              {"fan_in_fan_out", layout && layout->fan_in_fan_out},
                              {"inference_mode", true},
                              {"init_lora_weights", true},
                              {"modules_to_save", nullptr},
                              {"layers_to_transform", nullptr},
                              {"use_rslora", false},
                              {"use_dora", false},
                              {"rank_pattern", nlohmann::json::object()},
                              {"alpha_pattern", nlohmann::json::object()}};
  std::filesystem::create_directories(dir);
  save_safetensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  write_file_atomic(dir + "/adapter_config.json", j.dump(2) + "\n");
}

LoraConfig read_peft_config(const std::string& dir, const ModelSpec& spec) {
  LoraConfig config = read_config_json(read_file(dir + "/adapter_config.json"), "peft", [](const nlohmann::json& j) {
    KILN_CHECK(j.value("peft_type", "") == "LORA", "[peft] peft_type '{}': kiln reads LoRA adapters",
               j.value("peft_type", ""));
    auto refuse = [&](const char* key, bool set, const char* what) {
      KILN_CHECK(!set, "[peft] {} ({}): {}", key, j.at(key).dump(), what);
    };
    auto has = [&](const char* key) { return j.contains(key) && !j.at(key).is_null(); };
    refuse("bias", j.value("bias", "none") != "none", "kiln's adapters train no biases");
    refuse("use_rslora", j.value("use_rslora", false), "kiln scales by alpha / r, not rsLoRA's alpha / sqrt(r)");
    refuse("use_dora", j.value("use_dora", false), "kiln's adapters are LoRA's, not DoRA's");
    refuse("rank_pattern", has("rank_pattern") && !j.at("rank_pattern").empty(), "kiln gives every adapter one rank");
    refuse("alpha_pattern", has("alpha_pattern") && !j.at("alpha_pattern").empty(), "kiln gives every adapter one alpha");
    refuse("modules_to_save", has("modules_to_save") && !j.at("modules_to_save").empty(),
           "kiln trains adapters alone, no other module");
    refuse("lora_bias", j.value("lora_bias", false), "kiln's adapters have no bias");
    refuse("layers_to_transform", has("layers_to_transform"), "kiln adapts the targets of every layer");
    refuse("layer_replication", has("layer_replication"), "kiln's layers are the base model's");
    return LoraConfig{.rank = integer(j, "r"), .alpha = j.at("lora_alpha").get<double>(),
                      .dropout = j.value("lora_dropout", 0.0), .targets = {}};
  });
  // The targets are the sites the weights hold: target_modules may be a pattern.
  const PeftLayout* layout = layout_of(spec.family);
  std::set<std::string> sites;
  for (const auto& [key, t] : load_safetensors(dir + "/adapter_model.safetensors").tensors)
    sites.insert(site_of(layout, key));
  config.targets.assign(sites.begin(), sites.end());
  config.check();
  return config;
}

LoraConfig load_peft_adapter(const std::string& dir, TransformerLM& model, Generator& dropout_gen) {
  const LoraConfig config = read_peft_config(dir, model.spec());
  add_lora(model, config, dropout_gen);
  load_peft_weights(dir, model);
  return config;
}

void load_peft_weights(const std::string& dir, TransformerLM& model) {
  const ModelSpec& spec = model.spec();
  const PeftLayout* layout = layout_of(spec.family);
  std::map<std::string, Tensor> file = load_safetensors(dir + "/adapter_model.safetensors").tensors;
  std::map<std::string, Tensor> values;
  for (const auto& [name, p] : model.named_parameters()) {
    if (!is_lora_parameter(name)) continue;
    const std::string key = peft_name(layout, spec.family, name);
    auto it = file.find(key);
    KILN_CHECK(it != file.end(), "[peft] {}/adapter_model.safetensors has no '{}'", dir, key);
    values[name] = per_head_rows(layout, name) ? qkv_rows_per_kind(it->second, spec.block.attention.heads)
                                               : it->second;
    file.erase(it);
  }
  KILN_CHECK(!model.layout().whole_model() || file.empty(), "[peft] the adapter's '{}' has no place in the model",
             file.empty() ? "" : file.begin()->first);
  model.load_full_state_dict(values, /*strict=*/false);
}

std::vector<std::string> default_lora_targets(const ModelSpec& spec) {
  const PeftLayout* layout = layout_of(spec.family);
  if (layout && layout->modules.count("attn.qkv")) return {"qkv"};
  return {"q", "v"};
}

}  // namespace kiln::nn::hf
