#pragma once
// BERT (Devlin et al. 2019): word, position and token-type embeddings summed
// and layer-normalized, post-norm bidirectional blocks with the exact (erf)
// GELU, a pooler (tanh of a linear map of the first token, [CLS]), and the
// pre-training heads: the masked-LM head (a linear map, GELU and LayerNorm,
// then the word embeddings' transpose with a bias of its own) and the
// next-sentence head (two classes from the pooled output).
//
// The config's fields are Hugging Face's BertConfig's; weights load from and
// save to BertForPreTraining ("bert.encoder.layer.0.attention.self.query.weight").
// Initialized as Hugging Face initializes it: N(0, initializer_range) for
// matrices and embeddings, zero biases, unit norms.
//
// A LayerFactory (dist::ModelParallel) splits it Megatron's way: each
// tensor-parallel rank holds its heads and its part of every MLP (the
// embeddings and heads stay whole on every rank), each pipeline stage its
// layers, the first the embeddings, the last the pooler and the heads (and
// a copy of the word embeddings for the tied decoder). No sequence parallelism.

#include <map>
#include <memory>
#include <string>

#include "kiln/nn/layers.h"
#include "kiln/nn/linear.h"
#include "kiln/nn/staged_model.h"
#include "kiln/nn/transformer.h"

namespace kiln::nn {

// Hugging Face's BertConfig fields kiln builds from.
struct BertConfig {
  // config.json's fields, under its names and with transformers' defaults.
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  // [PAD]: its embedding gets no gradient from its lookups (Hugging Face's
  // padding_idx), only from the tied masked-LM decoder. -1: none.
  int64_t pad_token_id = 0;
  double layer_norm_eps = 1e-12;
  double hidden_dropout_prob = 0.1;  // on the embeddings and every block's attention and MLP outputs
  double initializer_range = 0.02;

  // The blocks' spec.
  BlockSpec block() const;
  // BERT-base (110M parameters) and BERT-large (340M).
  static BertConfig base();
  static BertConfig large();
};

// The encoder's outputs.
struct BertOutput {
  Tensor sequence;  // (B, T, C): the last block's output
  Tensor pooled;    // (B, C): tanh(pooler(sequence[:, 0]))
};

// BERT: the encoder with its pretraining heads (above).
class Bert : public StagedModel {
 public:
  // The model at the layout of factory (null: one process), initialized as
  // Hugging Face does from gen: at a parallel layout each rank draws the
  // whole model on the CPU and keeps its share.
  explicit Bert(const BertConfig& config, Generator& gen = default_generator(), DType dtype = kFloat32,
                Device device = kCPU, std::shared_ptr<const LayerFactory> factory = nullptr);

  // The whole model on one pipeline stage. ids (B, T) int64; token_types
  // (B, T) or undefined (all type 0); padding through inputs->key_lengths
  // (keys past each row's length are never seen).
  BertOutput forward(const Tensor& ids, const Tensor& token_types = {}, const AttentionInputs* inputs = nullptr) const;
  // The masked-LM logits (B, T, vocab) of forward's sequence.
  Tensor mlm_logits(const Tensor& sequence) const;
  // The next-sentence logits (B, 2) of forward's pooled output: 0 is "B follows A".
  Tensor nsp_logits(const Tensor& pooled) const;
  // BertForPreTraining's loss: the masked-LM cross-entropy over the labelled
  // positions (mlm_labels (B, T), -100 elsewhere) plus the next-sentence one
  // (nsp_labels (B), or undefined for none).
  Tensor pretraining_loss(const Tensor& ids, const Tensor& token_types, const Tensor& mlm_labels,
                          const Tensor& nsp_labels = {}, const AttentionInputs* inputs = nullptr) const;

  // StagedModel: the stages of the masked LM (token types all 0); the
  // loss is the masked-LM cross-entropy against labels (-100 unlabelled).
  Tensor forward_stage(const Tensor& input, std::vector<KVCache>* caches = nullptr,
                       const AttentionInputs* inputs = nullptr) const override;
  Tensor logits_from_hidden(const Tensor& hidden) const override { return mlm_logits(hidden); }
  Tensor loss_from_hidden(const Tensor& hidden, const Tensor& targets) const override;
  Shape activation_shape(int64_t batch, int64_t seq) const override { return {batch, seq, config_.hidden_size}; }
  DType activation_dtype() const override { return dtype_; }
  std::vector<std::string> tied_across_stages() const override;

  // Initializes every parameter as Hugging Face does (one process).
  void reset_parameters(Generator& gen);
  const BertConfig& config() const { return config_; }

  // First stage (embed_tokens also on the last, for the tied decoder).
  std::shared_ptr<Embedding> embed_tokens, embed_positions, embed_types;
  std::shared_ptr<LayerNorm> embed_norm;
  std::shared_ptr<Dropout> drop;
  std::shared_ptr<ModuleList> layers;  // this stage's
  // Last stage.
  std::shared_ptr<Linear> pooler;
  std::shared_ptr<Linear> transform;  // the masked-LM head's transform, before GELU and its norm
  std::shared_ptr<LayerNorm> transform_norm;
  Tensor mlm_bias;  // (vocab): the decoder's bias (its weight is embed_tokens')
  std::shared_ptr<Linear> nsp;

 private:
  // The embedded, normed (and dropped-out) tokens (B, T, C).
  Tensor embed(const Tensor& ids, const Tensor& token_types) const;
  // x through this stage's blocks.
  Tensor blocks(Tensor x, const AttentionInputs* inputs) const;

  BertConfig config_;
  DType dtype_;
};

namespace bert {
// BertForPreTraining's names and config.json.
std::map<std::string, Tensor> to_hf(const std::map<std::string, Tensor>& state);
std::map<std::string, Tensor> from_hf(const std::map<std::string, Tensor>& weights, const BertConfig& config);
std::string hf_config_json(const BertConfig& config);
BertConfig from_hf_config(const std::string& json);
}  // namespace bert

}  // namespace kiln::nn
