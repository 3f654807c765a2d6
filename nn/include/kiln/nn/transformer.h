#pragma once
// Transformer blocks built from a small spec, as Megatron-Core's layer specs
// build them: the norm (kind, eps, bias) and its placement, the attention
// (heads, grouped-query kv heads, head size, biases, RoPE, mask, scale), the
// MLP (GELU, ReLU, SwiGLU or GeGLU, hidden size, biases), cross-attention
// over an encoder's output (encoder-decoders), dropout and activation
// recomputation. The linear layers come from a LayerFactory, so one block
// class serves one process and every tensor-parallel layout.
//
// Adding a kind: extend the enum, build it in the module that owns it
// (Attention, Mlp or Block, transformer.cpp), and test it against a naive
// reference (tests/test_spec.cpp).

#include <memory>
#include <optional>

#include "kiln/nn/layer_factory.h"
#include "kiln/nn/rope.h"

namespace kiln::nn {

// LayerNorm (GPT-2, BERT: centred, scaled, shifted) or RMSNorm (LLaMA, T5:
// scaled by the root mean square only).
enum class NormKind { LayerNorm, RMSNorm };
// Pre-norm (GPT-2, LLaMA): x + f(norm(x)). Post-norm (the original
// Transformer, BERT): norm(x + f(x)).
enum class NormPlacement { Pre, Post };
// Sequential (GPT-2, LLaMA): the MLP reads the attention's output. Parallel
// (GPT-NeoX, GPT-J, PaLM): both read the block's input, x + attn(norm1(x)) +
// mlp(norm2(x)), with a norm each (NeoX) or one shared (GPT-J, PaLM: no
// mlp_norm); pre-norm only.
enum class Residual { Sequential, Parallel, ParallelSharedNorm };
// Causal (GPT, LLaMA), bidirectional (BERT, encoders) or prefix-LM (UniLM,
// GLM: bidirectional over each sequence's prefix, causal after it; the prefix
// lengths come with the input). Key padding (AttentionInputs::key_lengths)
// goes with any of them.
enum class AttentionMask { Causal, Bidirectional, PrefixLM };
// GELU-tanh MLP (GPT-2): down(gelu_tanh(up(x))); GELU with erf (BERT):
// down(gelu(up(x))); ReLU (T5 v1.0): down(relu(up(x))). The gated kinds:
// SwiGLU (LLaMA) down(silu(gate(x)) * up(x)), GeGLU (T5 v1.1's gated-gelu)
// down(gelu_tanh(gate(x)) * up(x)).
enum class MlpKind { GeluTanh, Gelu, Relu, SwiGLU, GeGLU };
// Whether the MLP's up projection holds [gate; up] (SwiGLU, GeGLU).
bool is_gated(MlpKind kind);
// The MLP's hidden activation of its up projection's output (..., hidden),
// or (..., 2 hidden) holding [gate; up] for the gated kinds.
Tensor mlp_activation(MlpKind kind, const Tensor& up);

// A block's norm: its kind, eps and bias.
struct NormSpec {
  NormKind kind = NormKind::LayerNorm;  // LayerNorm or RMSNorm
  double eps = 1e-5;  // added to the variance (mean square) under the root
  bool bias = true;  // LayerNorm only
};

// A block's attention: heads, kv heads, head size, biases, positions, mask and scale.
struct AttentionSpec {
  int64_t heads = 12;  // query heads
  int64_t kv_heads = 0;  // 0: as heads (multi-head); fewer: grouped-query; 1: multi-query
  int64_t head_dim = 0;  // 0: d_model / heads
  bool qkv_bias = true;  // biases on the q, k, v projections
  bool out_bias = true;  // a bias on the output projection
  std::optional<RopeSpec> rope;  // rotary positions on q and k; none: the model adds positions
  // ALiBi (BLOOM): a linear bias on each head's scores by the key's distance
  // behind the query, BLOOM's slopes (alibi_slopes), computed in the kernels.
  bool alibi = false;
  AttentionMask mask = AttentionMask::Causal;
  std::optional<double> scale;  // default 1 / sqrt(head_dim)
};

// How a token's gates come from its router logits (Megatron-Core's
// --moe-router-pre-softmax chooses).
enum class RouterScore {
  // Softmax over the k largest logits: the gates sum to one. Mixtral, GShard
  // and GLaM's top-2 (their renormalized top-2 probabilities are the same
  // numbers); Megatron-Core's default.
  TopKThenSoftmax,
  // Softmax over every expert, the k largest probabilities as they are:
  // Switch Transformer's top-1, Qwen-MoE and DeepSeek-V2.
  SoftmaxThenTopK,
};
// Which choices an expert over capacity drops: those with the smallest gates
// (Megatron-Core's default "probs"), or the latest tokens ("position").
enum class DropPolicy { Probs, Position };

// A mixture of experts in place of the MLP (nn/moe.h): experts MLPs of the
// MLP spec's kind and hidden size (without biases), each token through the
// top_k experts its router picks, their outputs summed under its gates.
struct MoeSpec {
  int64_t experts = 8;  // experts in each MoE layer
  int64_t top_k = 2;    // experts each token goes through
  RouterScore score = RouterScore::TopKThenSoftmax;  // how gates come from router logits
  // Each expert takes at most ceil(tokens top_k / experts capacity_factor)
  // choices of a forward's tokens; 0: dropless, no limit.
  double capacity_factor = 0;
  DropPolicy drop_policy = DropPolicy::Probs;
  // Switch's load-balancing loss, E sum_i f_i P_i with f_i expert i's share
  // of the top-k choices and P_i its mean probability (Megatron-Core's
  // normalization), times this; and ST-MoE's router z-loss, the mean squared
  // logsumexp of the logits, times z_loss_coeff.
  double aux_loss_coeff = 1e-2;
  double z_loss_coeff = 0;
  // The model's layers 0, every, 2 every, ... take the experts, the others the
  // dense MLP (Megatron-Core's --moe-layer-freq; GLaM: 2, Mixtral: 1).
  int64_t every = 1;
};

// A block's MLP: its kind, hidden size, bias, and experts in its place.
struct MlpSpec {
  MlpKind kind = MlpKind::GeluTanh;  // the activation, gated or not
  int64_t hidden = 0;  // 0: 4 d_model, or LLaMA's rule (SwiGLU)
  bool bias = true;    // biases on its projections
  std::optional<MoeSpec> moe;  // experts in this MLP's place (in the layers MoeSpec::every picks)
  // LLaMA's hidden size: 2/3 of 4 d_model, times multiplier, rounded up to multiple_of.
  static int64_t swiglu_hidden(int64_t d_model, int64_t multiple_of = 256, double multiplier = 1.0);
};

// The bound on every size of a spec (widths, heads, layers, vocabulary,
// positions): past it a config is damaged, and products of sizes could overflow.
inline constexpr int64_t kMaxSpecSize = int64_t{1} << 31;

// One transformer block, part by part (README's table).
struct BlockSpec {
  int64_t d_model = 768;  // the residual stream's width
  NormSpec norm;          // every norm of the block
  NormPlacement placement = NormPlacement::Pre;  // pre-norm or post-norm
  Residual residual = Residual::Sequential;      // sequential or parallel attention and MLP
  AttentionSpec attention;  // the self-attention (and the cross-attention's heads)
  MlpSpec mlp;              // the MLP, or the experts in its place
  double dropout = 0.0;  // on the attention's and the MLP's outputs
  // A decoder block of an encoder-decoder (T5): attention over the encoder's
  // output (Memory) between the self-attention and the MLP, with its own norm.
  bool cross_attention = false;
  // Keep only the block's input in the forward pass and replay the block in
  // backward (Megatron's full recomputation): the same gradients, less memory.
  bool recompute = false;

  // The attention's head size, kv heads and the MLP's hidden size, their
  // defaults (0) resolved.
  int64_t head_dim() const { return attention.head_dim > 0 ? attention.head_dim : d_model / attention.heads; }
  int64_t kv_heads() const { return attention.kv_heads > 0 ? attention.kv_heads : attention.heads; }
  int64_t mlp_hidden() const;
  // The features of a head that RoPE rotates.
  int64_t rotary_dims() const { return attention.rope && attention.rope->dims > 0 ? attention.rope->dims : head_dim(); }
  // Raises unless the sizes fit together (heads, kv heads, head size, RoPE's even head size).
  void check() const;
};

// What a batch brings to its attention masks: each sequence's prefix length
// (PrefixLM) and real length (keys past it are padding), (B) int32/int64.
// Left-padded rows (batched generation from prompts of different lengths)
// bring each row's first real key (key_starts, (B): the keys before it are
// padding) and each token's position (positions, (B, T) int64; without them
// a token's position is its index after the cached ones). Packed rows (short
// examples sharing a row) bring the examples' bounds in the flattened B T
// tokens (cu_seqlens, (n + 1) int32/int64 from 0 to B T, on the host): each
// example attends within itself only (varlen attention), its positions from 0.
// GLM's rows bring each token's place inside its span (block_positions, (B,
// T) int64; 0 outside the spans) beside its position.
// A bias added to every self-attention's scores (T5's relative position
// bias, computed once for the stack) is (1 or B, H, Tq, Tk) over all the
// model's heads; a tensor-parallel rank takes its own.
struct AttentionInputs {
  Tensor prefix_lengths;   // (B): PrefixLM's bidirectional prefix of each row
  Tensor key_lengths;      // (B): each row's real length; keys past it are padding
  Tensor key_starts;       // (B): each left-padded row's first real key
  Tensor positions;        // (B, T) int64: each token's position
  Tensor cu_seqlens;       // (n + 1), on the host: packed examples' bounds in B T
  Tensor block_positions;  // (B, T) int64: GLM's place inside a span
  Tensor bias;             // (1 or B, H, Tq, Tk): added to every self-attention's scores
};

// What a decoder block's cross-attention reads: the encoder's output (B, S, C)
// and each row's real length (B) int32/int64 (keys past it are padding), or
// undefined lengths for none.
struct Memory {
  Tensor states;   // (B, S, C)
  Tensor lengths;  // (B), or undefined: no padding
};

// Keys and values of the positions seen so far, for one layer: (B, Hkv, T, D);
// a decoder block's cross-attention keeps the memory's keys and values,
// computed once.
struct KVCache {
  Tensor k, v;                // (B, Hkv, T, D): the self-attention's
  Tensor memory_k, memory_v;  // (B, Hkv, S, D): the cross-attention's, of the memory
  int64_t length() const { return k.defined() ? k.size(2) : 0; }  // the positions cached
};

// ALiBi's slope of each of `heads` heads, as BLOOM computes them: the
// geometric sequence 2^(-8 h / n) over the largest power of two n <= heads,
// the rest interleaved from the sequence of 2 n.
std::vector<double> alibi_slopes(int64_t heads);

// A norm of the spec's kind over `dim` features, at one (biases zero).
std::shared_ptr<NormLayer> make_norm(const NormSpec& spec, int64_t dim, DType dtype, Device device);

// A block's self-attention, this rank's heads of it.
class Attention : public Module {
 public:
  // The heads of this rank (all of them on one process) from factory.
  Attention(const BlockSpec& spec, const LayerFactory& factory, Generator& dropout_gen, DType dtype, Device device);
  // x (B, T, C) -> (B, T, C). With a cache, x holds the positions after the
  // cached ones, which are attended to and then extended with x's keys/values.
  Tensor forward(const Tensor& x, KVCache* cache = nullptr, const AttentionInputs* inputs = nullptr) const;

  std::shared_ptr<LinearLayer> qkv;  // C -> (heads + 2 kv_heads) head_dim: q, k, v of every head
  std::shared_ptr<LinearLayer> out;  // heads head_dim -> C
  std::shared_ptr<Dropout> dropout;  // on the output

 private:
  AttentionSpec spec_;
  int64_t heads_, kv_heads_, head_dim_;  // this rank's
  int64_t first_head_;                   // this rank's first head among all
  Tensor slopes_;                        // ALiBi: this rank's heads' slopes (float32, on the model's device)
};

// Attention from a decoder's positions to an encoder's output: queries from
// x, keys and values from the memory, every key seen but the padding. The
// spec's heads, head size, biases and scale; no positions.
class CrossAttention : public Module {
 public:
  // The heads of this rank (all of them on one process) from factory.
  CrossAttention(const BlockSpec& spec, const LayerFactory& factory, Generator& dropout_gen, DType dtype, Device device);
  // x (B, T, C), memory.states (B, S, C) -> (B, T, C). With a cache, the
  // memory's keys and values are computed on the first call and kept.
  Tensor forward(const Tensor& x, const Memory& memory, KVCache* cache = nullptr) const;

  std::shared_ptr<LinearLayer> q;    // C -> heads head_dim
  std::shared_ptr<LinearLayer> kv;   // C -> 2 kv_heads head_dim: k, v of every head
  std::shared_ptr<LinearLayer> out;  // heads head_dim -> C
  std::shared_ptr<Dropout> dropout;  // on the output

 private:
  AttentionSpec spec_;
  int64_t heads_, kv_heads_, head_dim_;  // this rank's
};

class MoeLayer;

// A block's dense MLP, this rank's share of its hidden features.
class Mlp : public Module {
 public:
  // This rank's hidden features (all of them on one process) from factory.
  Mlp(const BlockSpec& spec, const LayerFactory& factory, Generator& dropout_gen, DType dtype, Device device);
  // x (..., C) -> (..., C).
  Tensor forward(const Tensor& x) const;

  std::shared_ptr<LinearLayer> up;    // C -> hidden, or [gate; up] (2 hidden) for SwiGLU
  std::shared_ptr<LinearLayer> down;  // hidden -> C
  std::shared_ptr<Dropout> dropout;   // on the output

 private:
  MlpKind kind_;
};

// One block; its layers come allocated, not initialized: reset_parameters,
// or load values (a model does one or the other).
class Block : public Module {
 public:
  // This rank's share of the block (the whole of it on one process) from factory.
  Block(const BlockSpec& spec, const LayerFactory& factory, Generator& dropout_gen, DType dtype = kFloat32,
        Device device = kCPU);
  // One process, whole layers.
  Block(const BlockSpec& spec, Generator& dropout_gen, DType dtype = kFloat32, Device device = kCPU)
      : Block(spec, *local_layers(), dropout_gen, dtype, device) {}
  // memory: the encoder's output, for a cross-attention block.
  Tensor forward(const Tensor& x, KVCache* cache = nullptr, const AttentionInputs* inputs = nullptr,
                 const Memory* memory = nullptr) const;
  // Linear weights N(0, std), those writing into the residual stream (the
  // attention's output, the MLP's last layer) N(0, residual_std); zero
  // biases; norms at one (their biases zero). One process only.
  void reset_parameters(Generator& gen, double std = 0.02, double residual_std = 0.02);
  const BlockSpec& spec() const { return spec_; }

  std::shared_ptr<NormLayer> attn_norm, mlp_norm;  // before (pre-norm) or after (post-norm) each
  std::shared_ptr<Attention> attn;                 // the self-attention
  std::shared_ptr<NormLayer> cross_norm;           // spec.cross_attention only
  std::shared_ptr<CrossAttention> cross_attn;      // spec.cross_attention only
  std::shared_ptr<Mlp> mlp;       // the dense MLP, or
  std::shared_ptr<MoeLayer> moe;  // the experts (spec.mlp.moe), under the name "mlp"

 private:
  Tensor run(const Tensor& x, KVCache* cache, const AttentionInputs* inputs, const Memory* memory) const;
  Tensor feed_forward(const Tensor& x) const;

  BlockSpec spec_;
  Generator* dropout_gen_;
};

}  // namespace kiln::nn
