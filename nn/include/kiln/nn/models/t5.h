#pragma once
// T5 (Raffel et al. 2020): an encoder-decoder of pre-norm blocks with a
// scale-only RMS norm (no bias, no mean), no biases anywhere, attention scores
// without the 1/sqrt(d) scaling, and relative positions as a learned bias on
// the scores: each (query, key) distance falls in one of 32 buckets (exact up
// to 8, then logarithmic up to 128), signed in the encoder, looking back only
// in the decoder; the bias is computed by each stack's first layer and shared
// by all its layers. The decoder's blocks attend to the encoder's output
// between their self-attention and MLP. v1.0: ReLU MLP, the head tied to the
// shared embedding and fed d_model^-0.5 times the decoder's output; v1.1:
// gated-GELU MLP, an untied, unscaled head.
//
// The config's fields are Hugging Face's T5Config's; weights load from and
// save to T5ForConditionalGeneration ("encoder.block.0.layer.0.SelfAttention.q.weight").
// Dropout falls on the embeddings, every block's attention and MLP outputs and
// each stack's output; Hugging Face's T5 also drops attention probabilities
// and the MLP's hidden units.
//
// A LayerFactory (dist::ModelParallel) splits the heads and the MLPs of both
// stacks among tensor-parallel ranks (embeddings, head, norms and position
// biases stay whole on every rank). No pipeline stages (an encoder-decoder
// would need stages of both stacks) and no sequence parallelism yet.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/nn/layers.h"
#include "kiln/nn/linear.h"
#include "kiln/nn/parallel_model.h"
#include "kiln/nn/transformer.h"

namespace kiln::nn {

// Hugging Face's T5Config fields kiln builds from.
struct T5Config {
  // config.json's fields, under its names and with transformers' defaults.
  int64_t vocab_size = 32128;
  int64_t d_model = 512;
  int64_t d_kv = 64;  // head size
  int64_t d_ff = 2048;
  int64_t num_layers = 6;
  int64_t num_decoder_layers = 0;  // 0: num_layers
  int64_t num_heads = 8;
  int64_t relative_attention_num_buckets = 32;
  int64_t relative_attention_max_distance = 128;
  double dropout_rate = 0.1;
  double layer_norm_epsilon = 1e-6;
  double initializer_factor = 1.0;
  std::string feed_forward_proj = "relu";  // "relu" (v1.0) or "gated-gelu" (v1.1)
  bool tie_word_embeddings = true;         // the head is the shared embedding (v1.0)
  bool scale_decoder_outputs = true;       // the head reads d_model^-0.5 times the decoder's output (v1.0)
  int64_t pad_token_id = 0;
  int64_t eos_token_id = 1;
  int64_t decoder_start_token_id = 0;

  int64_t decoder_layers() const { return num_decoder_layers > 0 ? num_decoder_layers : num_layers; }  // resolved
  // The blocks' specs: the encoder's bidirectional, the decoder's causal with cross-attention.
  BlockSpec block(bool decoder) const;
  // t5-small (60M parameters) and google/t5-v1_1-small (77M).
  static T5Config small();
  static T5Config v1_1_small();
};

// One stack of T5 blocks with its relative position bias and final norm.
class T5Stack : public Module {
 public:
  // Blocks from factory, which must outlive the stack.
  T5Stack(const T5Config& config, bool decoder, const LayerFactory& factory, Generator& gen, DType dtype,
          Device device);
  // x (B, T, C): embedded tokens (dropped out here), after the cached positions with caches (one
  // per layer). lengths (B) or undefined: each row's real length (the
  // encoder's keys past it are padding). memory: the encoder's output, for the
  // decoder. Returns the normed (and dropped-out) output (B, T, C).
  Tensor forward(const Tensor& x, const Tensor& lengths = {}, const Memory* memory = nullptr,
                 std::vector<KVCache>* caches = nullptr) const;
  // The bias (1, H, Tq, Tk) of queries at positions [first, first + Tq) over keys [0, Tk).
  Tensor position_bias(int64_t first, int64_t queries, int64_t keys) const;

  std::shared_ptr<ModuleList> layers;        // the Blocks
  std::shared_ptr<Embedding> relative_bias;  // (buckets, heads)
  std::shared_ptr<RMSNorm> norm;             // the final norm
  std::shared_ptr<Dropout> drop;             // on the input and the output

 private:
  T5Config config_;
  bool decoder_;
  const LayerFactory* factory_;
};

// T5: the encoder-decoder (above).
class T5 : public ParallelModel {
 public:
  // The model at the layout of factory (null: one process), initialized as
  // Hugging Face does from gen: at a parallel layout each rank draws the
  // whole model on the CPU and keeps its share.
  explicit T5(const T5Config& config, Generator& gen = default_generator(), DType dtype = kFloat32,
              Device device = kCPU, std::shared_ptr<const LayerFactory> factory = nullptr);

  // The encoder's output for ids (B, S) int64, whose rows are lengths (B) long
  // (undefined: all S), ready for decode.
  Memory encode(const Tensor& ids, const Tensor& lengths = {}) const;
  // The logits (B, T, vocab) after decoder_ids (B, T) given the encoder's
  // output; with caches (one per decoder layer, empty at first), decoder_ids
  // follow the cached positions.
  Tensor decode(const Tensor& decoder_ids, const Memory& memory, std::vector<KVCache>* caches = nullptr) const;
  // T5ForConditionalGeneration's loss: the decoder reads labels (B, T) shifted
  // right behind decoder_start_token_id; cross-entropy averaged over the
  // labels that are not -100.
  Tensor loss(const Tensor& ids, const Tensor& labels, const Tensor& lengths = {}) const;
  // labels shifted right one place behind decoder_start_token_id, -100 as padding.
  Tensor decoder_inputs(const Tensor& labels) const;

  // Initializes every parameter as Hugging Face does (one process).
  void reset_parameters(Generator& gen);
  const T5Config& config() const { return config_; }

  std::shared_ptr<Embedding> embed_tokens;  // shared by both stacks (and the tied head)
  std::shared_ptr<T5Stack> encoder, decoder;  // the two stacks
  std::shared_ptr<Linear> lm_head;  // untied heads only

 private:
  T5Config config_;
};

// How seq2seq_generate decodes.
struct Seq2SeqOptions {
  int64_t max_new_tokens = 32;  // at most, after decoder_start_token_id
  int64_t beams = 1;            // 1: greedy
  double length_penalty = 1.0;  // a finished beam scores its log-probability / (its length ^ length_penalty)
};
// Decodes each row of ids (B, S) int64, of lengths (B) tokens (undefined:
// all S): the encoder runs once, the decoder one token per step through its
// KV cache from decoder_start_token_id until eos_token_id or max_new_tokens.
// One beam is greedy; more run beam search as Hugging Face's generate does
// (num_beams, length_penalty, early_stopping=False): each step keeps the
// best `beams` continuations of each row, a beam reaching EOS among the best
// joins the row's finished ones, and the row ends once no running beam can
// beat its worst finished one. Returns each row's tokens after the start
// token, through EOS when reached.
std::vector<std::vector<int64_t>> generate(const T5& model, const Tensor& ids, const Tensor& lengths = {},
                                           const Seq2SeqOptions& options = {});

// The bucket of each relative position (key - query) as Hugging Face's T5
// computes it (_relative_position_bucket): half the buckets for exact small
// distances, the rest logarithmic up to max_distance; signed halves when
// bidirectional, only keys behind the query otherwise.
int64_t t5_relative_bucket(int64_t relative_position, bool bidirectional, int64_t buckets, int64_t max_distance);

namespace t5 {
// T5ForConditionalGeneration's names and config.json.
std::map<std::string, Tensor> to_hf(const std::map<std::string, Tensor>& state, const T5Config& config);
std::map<std::string, Tensor> from_hf(const std::map<std::string, Tensor>& weights, const T5Config& config);
std::string hf_config_json(const T5Config& config);
T5Config from_hf_config(const std::string& json);
// A model directory (config.json + model.safetensors) as Hugging Face or kiln
// writes it: its config, and its weights into a model of that config.
T5Config read_config(const std::string& directory);
// read_weights loads this rank's share at any layout; save writes a whole model (one process).
void read_weights(T5& model, const std::string& directory);
// Writes model's config.json and model.safetensors into directory, each atomically.
void save(const std::string& directory, const T5& model);
}  // namespace t5

}  // namespace kiln::nn
