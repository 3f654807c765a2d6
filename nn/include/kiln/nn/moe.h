#pragma once
// Mixture of experts (Shazeer et al. 2017; GShard, Switch, GLaM, Mixtral) as
// Megatron-Core builds it: a router scores the experts for each token, the
// top-k choices are permuted into the experts' order (moe_permute), the
// experts run as grouped GEMMs over their rows (grouped_linear), and each
// token's outputs are summed back under its gates (moe_unpermute).
//
// Conventions (Megatron-Core's, moe_utils.py):
//   - gates: MoeSpec::score (softmax over the top-k logits, or the top-k of
//     the softmax); the router's softmax runs in float32.
//   - load-balancing loss: E sum_i f_i P_i, f_i = (top-k choices of expert i)
//     / (tokens k), P_i = mean over tokens of softmax(logits)_i; the choices
//     are counted before any is dropped. Hugging Face's Mixtral divides by
//     tokens only (k times this for one layer) and pools every layer's tokens
//     into one loss; Megatron-Core and kiln add one loss per layer.
//   - z-loss: mean over tokens of logsumexp(logits)^2.
//   - capacity: ceil(tokens k / E capacity_factor) choices per expert; when
//     an expert is over it, the choices with the smallest gates (Probs) or
//     of the latest tokens (Position) are dropped, and a token whose every
//     choice was dropped gets zero from the layer (the residual carries it).
//   - the auxiliary losses reach training through their gradient: in
//     backward they receive aux_loss_scale (1 / micro-batches, set by the
//     pipeline), as Megatron-Core's MoEAuxLossAutoScaler does, so no trainer
//     adds them to its loss; MoeStats reports them.

#include <vector>

#include "kiln/nn/transformer.h"

namespace kiln::nn {

// The routing of one forward's N tokens: their permutation into the experts'
// order, and how many rows each expert takes.
struct Routing {
  MoePermutation permutation;           // the tokens' choices into rows and back
  std::vector<int64_t> expert_rows;     // (E) rows each expert takes, after drops
  std::vector<int64_t> expert_choices;  // (E) top-k choices of each expert, before drops
  int64_t dropped = 0;                  // choices dropped for capacity
};

// The routing of the choices experts (N, k) int64 with their gates (N, k)
// (the drop policy's ranking), on any device (read on the host). capacity <
// 0: no limit. Rows go expert by expert, each expert's in token order.
Routing route(const Tensor& experts, const Tensor& gates, int64_t num_experts, int64_t capacity, DropPolicy policy);
// Megatron-Core's capacity for n tokens: ceil(n k / E factor).
int64_t expert_capacity(int64_t tokens, const MoeSpec& spec);

// What MoE layers did in training forwards since the last reset, summed.
struct MoeStats {
  double aux_loss = 0;  // the load-balancing losses, coefficient applied
  double z_loss = 0;    // the z-losses, coefficient applied
  std::vector<int64_t> expert_choices;  // top-k choices per expert
  int64_t choices = 0, dropped = 0;  // top-k choices made, and dropped for capacity
  int64_t forwards = 0;              // layer forwards summed over

  void add(const MoeStats& other);  // other's counts added to these
};

// A mixture of experts in place of a block's MLP (above).
class MoeLayer : public Module {
 public:
  // With expert parallelism (factory.ep_size() > 1), this rank holds experts
  // [ep_rank E / ep, (ep_rank + 1) E / ep); each forward sends every routed
  // row to its expert's rank and back (two all-to-alls each way).
  MoeLayer(const BlockSpec& spec, const LayerFactory& factory, Generator& dropout_gen, DType dtype, Device device);
  // One process, every expert.
  MoeLayer(const BlockSpec& spec, Generator& dropout_gen, DType dtype = kFloat32, Device device = kCPU)
      : MoeLayer(spec, *local_layers(), dropout_gen, dtype, device) {}
  // x (B, T, C) -> (B, T, C).
  Tensor forward(const Tensor& x) const;

  Tensor router;  // (E, C)
  Tensor up;      // (local E, hidden, C), or (local E, 2 hidden, C) holding [gate; up] for the gated kinds
  Tensor down;    // (local E, C, hidden)
  std::shared_ptr<Dropout> dropout;  // on the output

  // The auxiliary losses' gradient: 1 / the micro-batches a step averages.
  void set_aux_loss_scale(double scale) const { aux_loss_scale_ = scale; }
  // What the layer did in training forwards since reset_stats (the losses are
  // read from the device here, not in every forward).
  const MoeStats& stats() const;
  void reset_stats();

 private:
  // The routed rows (R, C), in the experts' order, through this rank's
  // experts: across the expert-parallel group when it has more than one rank.
  Tensor experts(const Tensor& rows, const std::vector<int64_t>& expert_rows) const;
  Tensor local_experts(const Tensor& rows, const std::vector<int64_t>& expert_rows) const;

  const LayerFactory* factory_;
  MoeSpec spec_;
  MlpKind kind_;
  mutable double aux_loss_scale_ = 1.0;
  mutable MoeStats stats_;
  mutable Tensor pending_aux_, pending_z_;  // losses of forwards stats() has not read yet
};

}  // namespace kiln::nn
