#pragma once
// ParallelGPT: the part of an nn::GPT that one rank holds under tensor and
// pipeline parallelism (Megatron-LM's layout).
//
// Pipeline: the blocks are split into pp consecutive stages (the first stages
// take one more when pp does not divide n_layer); the first stage also holds
// the embeddings, the last the final LayerNorm and the head. The head is tied
// to the token embedding, so with pp > 1 the last stage keeps a copy of it
// whose gradient is summed with the first stage's (sync_gradients).
// Tensor parallel: attention heads and MLP columns split across the tp group
// (ColumnParallelLinear then RowParallelLinear), the vocabulary split across
// it (VocabParallelEmbedding, vocab_parallel_cross_entropy); norms, position
// embeddings and dropout are replicated, or, with sequence parallelism, run
// on each rank's slice of the sequence (the same result at dropout 0; with
// dropout, each slice draws its own mask).
//
// Parameters keep nn::GPT's names ("h.5.attn.c_attn.weight" on whichever
// stage holds layer 5), and full_state_dict / load_full_state_dict convert
// between this rank's shards and nn::GPT's full tensors, so checkpoints move
// between layouts.

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "kiln/dist/parallel_state.h"
#include "kiln/dist/tensor_parallel.h"
#include "kiln/nn/gpt.h"

namespace kiln::dist {

class ParallelSelfAttention : public nn::Module {
 public:
  // Heads split across `group`; init_gen initializes (null: the caller loads
  // the values), dropout_gen drives dropout.
  // With sequence_parallel, x and the output are this rank's slice of the sequence.
  ParallelSelfAttention(const nn::TransformerOptions& options, ProcessGroup& group, Generator* init_gen,
                        Generator& dropout_gen, bool sequence_parallel = false);
  Tensor forward(const Tensor& x) const;

  std::shared_ptr<ColumnParallelLinear> c_attn;  // C -> 3C / tp (whole heads of q, k and v)
  std::shared_ptr<RowParallelLinear> c_proj;     // C / tp -> C
  std::shared_ptr<nn::Dropout> resid_dropout;

 private:
  int64_t local_heads_;
};

class ParallelMLP : public nn::Module {
 public:
  ParallelMLP(const nn::TransformerOptions& options, ProcessGroup& group, Generator* init_gen,
              Generator& dropout_gen, bool sequence_parallel = false);
  Tensor forward(const Tensor& x) const;

  std::shared_ptr<ColumnParallelLinear> c_fc;  // C -> 4C / tp
  std::shared_ptr<RowParallelLinear> c_proj;   // 4C / tp -> C
  std::shared_ptr<nn::Dropout> dropout;
};

class ParallelBlock : public nn::Module {
 public:
  ParallelBlock(const nn::TransformerOptions& options, ProcessGroup& group, Generator* init_gen,
                Generator& dropout_gen, bool sequence_parallel = false);
  Tensor forward(const Tensor& x) const;

  std::shared_ptr<nn::LayerNorm> ln_1, ln_2;
  std::shared_ptr<ParallelSelfAttention> attn;
  std::shared_ptr<ParallelMLP> mlp;
};

class ParallelGPT : public nn::Module {
 public:
  // This rank's part of nn::GPT(config, gen, dtype, device): the same initial
  // values (each rank builds the full model once on the CPU and keeps its
  // share) and gen left where nn::GPT leaves it (it then drives dropout).
  // Raises when the model does not divide: n_head or 4 n_embd by tp, n_layer
  // by fewer than pp stages, a vocabulary smaller than tp.
  ParallelGPT(const nn::GPTConfig& config, ParallelState& state, Generator& gen = default_generator(),
              DType dtype = kFloat32, Device device = kCPU, bool sequence_parallel = false);

  bool is_first_stage() const { return state_->pp_rank() == 0; }
  bool is_last_stage() const { return state_->pp_rank() == state_->pp() - 1; }
  // This stage's layers [first, last) of the model's n_layer.
  std::pair<int64_t, int64_t> layers() const { return layers_; }

  // The stage's part of the forward pass: token ids (B, T) on the first
  // stage, the previous stage's output (B, T, C) on the others; the last stage
  // ends with the final LayerNorm. Returns activation_shape(B, T).
  Tensor forward(const Tensor& input) const;
  // What a stage passes on for a batch of (B, T): (B, T, C), or with sequence
  // parallelism the rank's slice (B, T / tp, C).
  Shape activation_shape(int64_t batch, int64_t seq) const;
  // Last stage: mean cross-entropy of the tied head over forward's output.
  Tensor loss_from_hidden(const Tensor& hidden, const Tensor& targets) const;
  // pp == 1: loss_from_hidden(forward(idx), targets).
  Tensor loss(const Tensor& idx, const Tensor& targets) const;

  // The vocabulary padded for the tensor-parallel split: a multiple of 128 tp
  // (of tp when that would leave a rank without real rows).
  int64_t padded_vocab_size() const { return padded_vocab_; }
  const nn::GPTConfig& config() const { return config_; }
  const ParallelState& parallel_state() const { return *state_; }
  // How a parameter (by name) is split across the tensor-parallel group.
  const ShardSpec& spec(const std::string& name) const;

  // After backward, sums the gradients that ranks computed in pieces: the
  // tied embedding's over its first- and last-stage copies (pp > 1), and with
  // sequence parallelism the replicated weights' (norms, biases after row-
  // parallel layers, positions) over the tp group. Before any clipping.
  void sync_gradients();
  // The gradient norm of the whole model (each weight once, over every stage
  // and shard; gradients already averaged over dp), clipped to max_norm like
  // optim::clip_grad_norm. Returns the norm before clipping.
  double clip_grad_norm(double max_norm);
  // The parameters a norm over the whole model counts on this rank, so that
  // the sum over the tp and pp groups counts every weight once.
  std::vector<Tensor> norm_parameters() const;

  // Full tensors under nn::GPT's names from this rank's tensors of the same
  // names (its parameters, or optimizer state shaped like them): assembled
  // across tp and collected from every stage on world rank 0; other ranks get
  // an empty map. Collective over the world. The embedding has vocab_size rows.
  std::map<std::string, Tensor> gather_full(const std::map<std::string, Tensor>& local) const;
  // This rank's share of full tensors (gather_full's inverse), for the names
  // this rank holds; every one must be present.
  std::map<std::string, Tensor> take_local(const std::map<std::string, Tensor>& full) const;
  std::map<std::string, Tensor> full_state_dict() const;
  void load_full_state_dict(const std::map<std::string, Tensor>& full);

  std::shared_ptr<VocabParallelEmbedding> wte;  // first stage, and the head on the last
  std::shared_ptr<nn::Embedding> wpe;           // first stage
  std::shared_ptr<nn::Dropout> drop;            // first stage
  std::shared_ptr<nn::ModuleList> h;            // this stage's blocks, named by layer
  std::shared_ptr<nn::LayerNorm> ln_f;          // last stage

 private:
  bool holds_tied_copy() const { return is_last_stage() && !is_first_stage(); }

  nn::GPTConfig config_;
  ParallelState* state_;
  Device device_;  // of the parameters, and of what the groups move
  bool sequence_parallel_;
  std::pair<int64_t, int64_t> layers_;
  int64_t padded_vocab_;
  std::map<std::string, ShardSpec> specs_;
  std::shared_ptr<ProcessGroup> embedding_group_;  // first and last stage, pp > 1
};

}  // namespace kiln::dist
