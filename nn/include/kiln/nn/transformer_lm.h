#pragma once
// TransformerLM: the decoder-only language model that GPT-2 and LLaMA both
// are (models/gpt2.h and models/llama.h give their specs): a token embedding,
// learned positions or RoPE, blocks from a BlockSpec, a final norm and a head,
// tied to the embedding or not. The vocabulary is padded for fast kernels and
// the tensor-parallel split; the padding rows are never looked up and never
// reach the logits or the loss.
//
// Built by a LayerFactory, the same class is one rank's part of the model at
// any tensor/pipeline layout: its stage's blocks (named by their layer index
// in the whole model), its heads and vocabulary rows. Parameter names are
// the same at every layout ("layers.5.attn.qkv.weight" wherever layer 5 is),
// and each carries its ShardSpec, so full_state_dict / load_full_state_dict
// convert between any layout and the whole model.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/nn/moe.h"
#include "kiln/nn/staged_model.h"
#include "kiln/nn/transformer.h"

namespace kiln::nn {

// A decoder-only language model, whole: its blocks and what surrounds them.
struct ModelSpec {
  std::string family;          // "gpt2", "llama": the Hugging Face names and config it maps to; others keep kiln's
  int64_t vocab_size = 50257;  // real tokens; the table is padded beyond
  int64_t max_positions = 1024;  // the longest sequence
  int64_t n_layer = 12;          // blocks
  BlockSpec block;               // every block's
  bool learned_positions = true;  // an embedding of positions added to the tokens' (GPT-2)
  // Rows of the learned positions' table before position 0's: position p
  // reads row p + position_offset (OPT's 2, a relic of fairseq's padding).
  int64_t position_offset = 0;
  // GLM's second table: each token's place inside its blank's span
  // (AttentionInputs::block_positions, max_positions rows), added too.
  bool block_positions = false;
  // A norm of the block's kind on the embeddings, before the first block (BLOOM).
  bool embedding_norm = false;
  bool tie_embeddings = true;     // the head is the token embedding
  // false: no language-model head; the final norm's output is what the model
  // gives (the backbone of a reward model or critic, nn/value_model.h).
  bool lm_head = true;
  double embedding_dropout = 0.0;
  // PaLM's z-loss: z_loss * logsumexp(logits)^2 per target added to the
  // language-model loss in training mode, keeping the softmax normalizer near
  // 1 (PaLM: 1e-4); in eval mode the loss is the cross-entropy alone.
  double z_loss = 0.0;
  // Initialization: N(0, init_std) for every matrix and embedding, zero
  // biases, unit norms; with scale_residual_init, the projections into the
  // residual stream get init_std / sqrt(2 n_layer) (GPT-2).
  double init_std = 0.02;
  bool scale_residual_init = false;
  // The activations' dtype: bfloat16 or float16 for mixed precision (the
  // parameters, their gradients and the optimizer state stay in the model's
  // dtype, float32 by default); the loss is computed in float32.
  std::optional<DType> compute_dtype;

  // Layer i's block: the spec's, with the dense MLP in the layers the MoE spec skips.
  BlockSpec layer_block(int64_t layer) const;
  // Parameters of the whole model on one process (the padded vocabulary
  // included); active: those one token goes through (its top-k experts).
  int64_t num_parameters(bool active = false) const;
  // Training FLOPs per token: 6 N + 12 L C T (llm.c, PaLM appendix B), N the
  // active parameters.
  double flops_per_token(int64_t seq_len) const;
  void check() const;
};

// The spec as kiln's own config.json (every field; "model_type": "kiln"), and
// back: how a model of no Hugging Face family is saved.
std::string spec_to_json(const ModelSpec& spec);
ModelSpec spec_from_json(const std::string& json);

// The decoder-only language model of a ModelSpec, at any layout (above).
class TransformerLM : public StagedModel {
 public:
  // The model of `spec` at the layout of `factory` (null: one process),
  // initialized as the spec says from gen: at a parallel layout, each rank
  // draws the whole model once on the CPU and keeps its share, so every
  // layout starts from the values of one process; gen is left where one
  // process leaves it (dropout then draws from it).
  explicit TransformerLM(const ModelSpec& spec, Generator& gen = default_generator(), DType dtype = kFloat32,
                         Device device = kCPU, std::shared_ptr<const LayerFactory> factory = nullptr);

  // A deep copy (DPO's and PPO's frozen reference: auto reference =
  // policy.clone()): this rank's part at the same layout, dtype and device,
  // with its own parameters holding this model's values, the same frozen
  // parameters and training modes; its dropout draws from the generator this
  // model's draws from. A GPT's or a Llama's clone is a TransformerLM of the
  // same spec. Raises for a model with LoRA adapters: clone before add_lora.
  std::unique_ptr<TransformerLM> clone() const;

  // The whole model on one pipeline stage: idx (B, T) int64 -> logits (B, T,
  // vocab_size). With caches (one per layer), idx holds the positions after
  // the cached ones; inputs as forward_stage.
  Tensor forward(const Tensor& idx, std::vector<KVCache>* caches = nullptr, const AttentionInputs* inputs = nullptr) const;
  // Mean cross-entropy of forward(idx) against targets (B, T), ignore_index
  // -100, without materializing the logits where one rank holds the vocabulary.
  Tensor loss(const Tensor& idx, const Tensor& targets, const AttentionInputs* inputs = nullptr) const;
  // The head's weight in dtype: the real vocabulary rows this rank holds.
  Tensor head_weight(DType dtype) const;

  // StagedModel
  Tensor forward_stage(const Tensor& input, std::vector<KVCache>* caches = nullptr,
                       const AttentionInputs* inputs = nullptr) const override;
  Tensor logits_from_hidden(const Tensor& hidden) const override;
  Tensor loss_from_hidden(const Tensor& hidden, const Tensor& targets) const override;
  Shape activation_shape(int64_t batch, int64_t seq) const override;
  DType activation_dtype() const override;
  std::vector<std::string> tied_across_stages() const override;

  // Initializes every parameter as the spec says (one process only).
  void reset_parameters(Generator& gen);
  // Grows the vocabulary to vocab_size (a tokenizer with symbols the model was
  // trained without): the token embedding and the head keep their rows, the
  // new ones are drawn N(0, init_std) from gen, the padding stays zero. One
  // process; build the optimizer afterwards. Logits of the old tokens are unchanged.
  virtual void resize_vocab(int64_t vocab_size, Generator& gen);
  // The MoE layers of this stage: what their training forwards did since
  // the last reset (summed), and the auxiliary losses' gradient scale.
  MoeStats moe_stats(bool reset = true);
  void set_aux_loss_scale(double scale) const override;

  const ModelSpec& spec() const { return spec_; }  // vocab_size follows resize_vocab
  // This stage's layers [first, last) of the model's n_layer.
  std::pair<int64_t, int64_t> layer_range() const { return layer_range_; }
  int64_t padded_vocab_size() const { return padded_vocab_; }
  double flops_per_token(int64_t seq_len) const { return spec_.flops_per_token(seq_len); }

  std::shared_ptr<EmbeddingLayer> embed_tokens;  // first stage; also the last when tied
  std::shared_ptr<Embedding> embed_positions;    // first stage, with learned positions
  std::shared_ptr<Embedding> embed_block_positions;  // first stage, with block positions (GLM)
  std::shared_ptr<NormLayer> embed_norm;         // first stage, with embedding_norm
  std::shared_ptr<Dropout> drop;                 // first stage
  std::shared_ptr<ModuleList> layers;            // this stage's blocks, named by layer
  std::shared_ptr<NormLayer> norm;               // last stage
  std::shared_ptr<EmbeddingLayer> lm_head;       // last stage, untied

 protected:
  // The structure of `like` (spec and layout) in dtype on device, allocated,
  // not initialized, its dropout drawing from like's generator: what a clone fills.
  TransformerLM(const TransformerLM& like, DType dtype, Device device);
  // A new model of this one's structure (as the constructor above) for
  // clone() to fill; a subclass with parts of its own overrides it.
  virtual std::unique_ptr<TransformerLM> empty_like(DType dtype, Device device) const;

 private:
  void build(Generator& gen, DType dtype, Device device);
  const EmbeddingLayer& head() const;

  ModelSpec spec_;
  std::pair<int64_t, int64_t> layer_range_;
  int64_t padded_vocab_ = 0;
  Generator* dropout_gen_ = nullptr;  // what every Dropout of the model draws from
};

}  // namespace kiln::nn
