#pragma once
// LoRA (Hu et al. 2021): low-rank adapters beside a model's frozen linear
// layers, y = W x + (alpha / r) B A dropout(x), with A (r, in) drawn as
// PyTorch's Linear and B (out, r) zero, so the model starts unchanged.
//
// add_lora puts adapters on the layers a config's targets name, freezes
// every other parameter and, where asked, keeps the frozen linear weights in
// bfloat16. A target names a layer by the end of its dotted name ("out",
// "attn.out", "mlp.down") or, in a layer fused from parts, one part: "q",
// "k", "v" of attention's q/k/v projection, "k", "v" of a cross-attention's
// k/v, "gate" and "up" of a gated MLP's first layer, each part then with an
// adapter of its own (as Hugging Face's q_proj, v_proj, ...); "qkv" is the
// whole fused projection with one adapter (as GPT-2's c_attn).
//
// At a tensor-parallel layout the adapters split with their layer: beside a
// column-parallel layer, A is whole on every rank and B holds the rank's
// output rows (of each segment); beside a row-parallel one, A holds the
// rank's input columns and B is whole. The start values are the same at
// every layout (each adapter's A is drawn from a generator seeded by its
// name), so a parallel run starts where one process does.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/nn/layer_factory.h"
#include "kiln/nn/linear.h"
#include "kiln/nn/parallel_model.h"

namespace kiln::nn {

// The adapters add_lora puts on a model.
struct LoraConfig {
  int64_t rank = 8;      // r: A is (r, in), B (out, r)
  double alpha = 16.0;   // the update is scaled by alpha / rank
  double dropout = 0.0;  // on the adapter's input
  std::vector<std::string> targets{"q", "v"};  // the layers or parts to adapt (above)
  // Modules whose own parameters stay trainable beside the adapters, by the
  // end of their name ("embed_tokens": the embedding, and a tied head with it;
  // PEFT's modules_to_save): symbols the model never saw in pretraining (the
  // chat template's) need their rows learned.
  std::vector<std::string> trainable;
  // The frozen linear layers' weights and biases kept in this dtype
  // (bfloat16 with bfloat16 activations halves their memory); none: as they are.
  std::optional<DType> base_dtype;
  uint64_t seed = 0;  // A's draws: each adapter's from seed and its name

  double scale() const { return alpha / static_cast<double>(rank); }  // alpha / rank
  void check() const;  // raises on a setting out of range
};

// The adapter beside one linear layer: on the whole layer, or on some of the
// parts (segments) of a fused column layer.
class LoraAdapter : public Module {
 public:
  // parts: the segments of base.split that get an adapter, by name
  // (segment index -> part name); empty: one adapter on the whole layer.
  LoraAdapter(const LinearLayer& base, const std::map<int64_t, std::string>& parts, const LoraConfig& config,
              const LayerFactory& factory, Generator& dropout_gen);
  // (alpha / r) B A dropout(x), laid out as the base layer's output on this
  // rank (zeros in the parts without an adapter).
  Tensor forward(const Tensor& x) const;
  // Adds (merge) or subtracts (unmerge) the adapter's update to the base
  // layer's weight; merged, the base layer alone gives the adapted output.
  void merge(LinearLayer& base);
  void unmerge(LinearLayer& base);
  bool merged() const { return merged_; }                // folded into the base layer's weight
  const LoraConfig& config() const { return config_; }  // what add_lora was given
  // Each adapter's whole start values (A drawn, B zero) by parameter name
  // under this module ("A.weight", "q_A.weight", ...).
  std::map<std::string, Tensor> start_values(const std::string& layer_name) const;

 private:
  struct Site {
    std::string name;     // "" (the whole layer) or the part's name
    int64_t segment = -1;  // the base's segment, -1: whole
    std::shared_ptr<LinearLayer> A, B;
    int64_t in_features;  // the whole layer's, for A's draw
  };
  void add_update(LinearLayer& base, double sign);

  std::vector<Site> sites_;
  std::vector<int64_t> local_widths_;  // this rank's output width of each segment of the base
  LoraConfig config_;
  double scale_;
  std::shared_ptr<Dropout> dropout_;
  bool merged_ = false;
};

// Adapters on every linear layer of `model` that config's targets name (each
// target must name one), every other parameter frozen (requires_grad false)
// but those of config.trainable's modules.
// dropout_gen draws the adapters' dropout masks. Build the optimizer after.
void add_lora(ParallelModel& model, const LoraConfig& config, Generator& dropout_gen = default_generator());
// Folds every adapter into its layer's weight, and takes it out again.
void merge_lora(Module& model);
void unmerge_lora(Module& model);
// Whether a parameter name is an adapter's ("layers.0.attn.qkv.lora.q_A.weight").
bool is_lora_parameter(const std::string& name);
// The config add_lora gave the model's adapters, none when it has none.
std::optional<LoraConfig> lora_config(const Module& model);

}  // namespace kiln::nn
