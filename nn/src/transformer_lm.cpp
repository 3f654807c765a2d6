#include "kiln/nn/transformer_lm.h"

#include <cmath>

#include "kiln/autograd.h"
#include "kiln/host_memory.h"
#include "kiln/nn/init.h"
#include "kiln/nn/lora.h"
#include "kiln/ops.h"

namespace kiln::nn {

void ModelSpec::check() const {
  KILN_CHECK(vocab_size > 0 && max_positions > 0 && n_layer > 0 && position_offset >= 0 && z_loss >= 0,
             "[TransformerLM] vocab_size ({}), max_positions ({}) and n_layer ({}) must be positive, position_offset "
             "({}) and z_loss ({}) not negative", vocab_size, max_positions, n_layer, position_offset, z_loss);
  for (int64_t size : {vocab_size, max_positions, n_layer, position_offset})
    KILN_CHECK(size < kMaxSpecSize, "[TransformerLM] a size of {} (vocab_size {}, max_positions {}, n_layer {}, "
               "position_offset {}): no model is that large", size, vocab_size, max_positions, n_layer, position_offset);
  block.check();
  KILN_CHECK(!block.cross_attention, "[TransformerLM] a decoder-only model has no encoder for cross-attention "
             "blocks to read (nn::T5 is an encoder-decoder)");
  num_parameters();  // raises past what any machine holds
}

BlockSpec ModelSpec::layer_block(int64_t layer) const {
  BlockSpec b = block;
  if (b.mlp.moe && layer % b.mlp.moe->every != 0) b.mlp.moe.reset();
  return b;
}

int64_t ModelSpec::num_parameters(bool active) const {
  // In float64, exact for integers below 2^53, so that a damaged config's
  // sizes (each below kMaxSpecSize) cannot wrap the count around.
  const double C = block.d_model, D = block.head_dim(), H = block.attention.heads, Hkv = block.kv_heads();
  const double hidden = block.mlp_hidden(), padded = std::ceil(vocab_size / 128.0) * 128;
  const bool norm_bias = block.norm.kind == NormKind::LayerNorm && block.norm.bias;
  const double norm = C + (norm_bias ? C : 0);
  const double qkv = C * (H + 2 * Hkv) * D + (block.attention.qkv_bias ? (H + 2 * Hkv) * D : 0);
  const double out = H * D * C + (block.attention.out_bias ? C : 0);
  const double up_width = is_gated(block.mlp.kind) ? 2 * hidden : hidden;
  const double tables = tie_embeddings || !lm_head ? 1 : 2;
  const double mlp = C * up_width + hidden * C + (block.mlp.bias ? up_width + C : 0);
  const double norms = block.residual == Residual::ParallelSharedNorm ? 1 : 2;
  // Layers 0, every, 2 every, ... hold experts (layer_block).
  const auto& moe = block.mlp.moe;
  const double moe_layers = moe ? static_cast<double>((n_layer - 1) / moe->every + 1) : 0;
  const double moe_mlp = moe ? moe->experts * C + (active ? moe->top_k : moe->experts) * mlp : 0;
  const double layers = static_cast<double>(n_layer) * (norms * norm + qkv + out) +
                        (static_cast<double>(n_layer) - moe_layers) * mlp + moe_layers * moe_mlp;
  const double position_rows = (learned_positions ? static_cast<double>(max_positions + position_offset) : 0) +
                               (block_positions ? static_cast<double>(max_positions) : 0);
  const double total = padded * C * tables + position_rows * C + layers + (embedding_norm ? 2 : 1) * norm;
  KILN_CHECK(total < 0x1p53, "[TransformerLM] {:.3g} parameters: more than any machine holds (damaged config?)",
             total);
  return static_cast<int64_t>(total);
}

double ModelSpec::flops_per_token(int64_t seq_len) const {
  return 6.0 * static_cast<double>(num_parameters(/*active=*/true)) +
         12.0 * static_cast<double>(n_layer * block.d_model * seq_len);
}

TransformerLM::TransformerLM(const ModelSpec& spec, Generator& gen, DType dtype, Device device,
                             std::shared_ptr<const LayerFactory> factory)
    : StagedModel(std::move(factory)), spec_(spec) {
  spec.check();
  const int tp = factory_->tp_size(), pp = factory_->pp_size();
  KILN_CHECK(spec.n_layer >= pp, "[TransformerLM] {} layers cannot fill {} pipeline stages", spec.n_layer, pp);
  KILN_CHECK(spec.vocab_size >= tp, "[TransformerLM] a vocabulary of {} cannot split among {} tensor-parallel ranks",
             spec.vocab_size, tp);
  // Host memory is overcommitted: a model that cannot fit would be allocated
  // layer by layer until the machine swaps. (A GPU refuses at its first allocation.)
  const double bytes = static_cast<double>(spec.num_parameters()) * static_cast<double>(element_size(dtype)) / (tp * pp);
  KILN_CHECK(!device.is_cpu() || bytes <= static_cast<double>(physical_host_memory()),
             "[TransformerLM] {:.3g} parameters need {:.1f} GiB in {} on each of {} ranks; this machine has {:.1f} GiB",
             static_cast<double>(spec.num_parameters()), bytes / 0x1p30, dtype, tp * pp,
             static_cast<double>(physical_host_memory()) / 0x1p30);
  build(gen, dtype, device);
  initialize<TransformerLM>(spec, gen, dtype);
}

TransformerLM::TransformerLM(const TransformerLM& like, DType dtype, Device device)
    : StagedModel(like.factory_), spec_(like.spec_) {
  build(*like.dropout_gen_, dtype, device);
}

std::unique_ptr<TransformerLM> TransformerLM::clone() const {
  for (const auto& [name, p] : named_parameters())
    KILN_CHECK(!is_lora_parameter(name), "[{}::clone] the model holds LoRA adapters ('{}'): clone it before add_lora",
               type_name(), name);
  const Tensor any = parameters().front();
  std::unique_ptr<TransformerLM> copy = empty_like(any.dtype(), any.device());
  copy->copy_state_from(*this);
  return copy;
}

std::unique_ptr<TransformerLM> TransformerLM::empty_like(DType dtype, Device device) const {
  return std::unique_ptr<TransformerLM>(new TransformerLM(*this, dtype, device));
}

void TransformerLM::build(Generator& gen, DType dtype, Device device) {
  dropout_gen_ = &gen;
  const LayerFactory& f = *factory_;
  const int64_t C = spec_.block.d_model;
  layer_range_ = f.stage_layers(spec_.n_layer);
  padded_vocab_ = f.padded_vocab(spec_.vocab_size);
  const ShardSpec vocab_rows{0, {}, spec_.vocab_size, padded_vocab_};
  auto vocab_table = [&](const std::string& name) {
    auto table = register_module(name, f.vocab_embedding({padded_vocab_, C, dtype, device}));
    table->set_shard_spec("weight", vocab_rows);
    return table;
  };
  if (f.is_first_stage() || (f.is_last_stage() && spec_.tie_embeddings && spec_.lm_head))
    embed_tokens = vocab_table("embed_tokens");
  if (f.is_first_stage()) {
    if (spec_.learned_positions)
      embed_positions = register_module(
          "embed_positions",
          std::make_shared<Embedding>(EmbeddingOptions{spec_.max_positions + spec_.position_offset, C, dtype, device},
                                      nullptr));
    if (spec_.block_positions)
      embed_block_positions = register_module(
          "embed_block_positions",
          std::make_shared<Embedding>(EmbeddingOptions{spec_.max_positions, C, dtype, device}, nullptr));
    if (spec_.embedding_norm) embed_norm = register_module("embed_norm", make_norm(spec_.block.norm, C, dtype, device));
    drop = register_module("drop", std::make_shared<Dropout>(spec_.embedding_dropout, gen));
  }
  layers = register_module("layers", std::make_shared<ModuleList>(static_cast<size_t>(layer_range_.first)));
  for (int64_t i = layer_range_.first; i < layer_range_.second; ++i)
    layers->push_back(std::make_shared<Block>(spec_.layer_block(i), f, gen, dtype, device));
  if (f.is_last_stage()) {
    norm = register_module("norm", make_norm(spec_.block.norm, C, dtype, device));
    if (!spec_.tie_embeddings && spec_.lm_head) lm_head = vocab_table("lm_head");
  }
}

void TransformerLM::reset_parameters(Generator& gen) {
  KILN_CHECK(factory_->whole_model(),
             "[TransformerLM] reset_parameters initializes a whole model; at a parallel layout, load a whole "
             "model's values (load_full_state_dict)");
  NoGradGuard no_grad;
  const double std = spec_.init_std;
  const double residual_std = spec_.scale_residual_init ? std / std::sqrt(2.0 * static_cast<double>(spec_.n_layer)) : std;
  auto vocab_table = [&](EmbeddingLayer& table) {
    init::normal_(table.weight, 0.0, std, gen);
    // padding rows start (and stay) zero
    table.weight.narrow(0, spec_.vocab_size, padded_vocab_ - spec_.vocab_size).zero_();
  };
  vocab_table(*embed_tokens);
  if (embed_positions) init::normal_(embed_positions->weight, 0.0, std, gen);
  if (embed_block_positions) init::normal_(embed_block_positions->weight, 0.0, std, gen);
  for (size_t i = 0; i < layers->size(); ++i) layers->at<Block>(i).reset_parameters(gen, std, residual_std);
  if (lm_head) vocab_table(*lm_head);
  for (NormLayer* n : {norm.get(), embed_norm.get()})
    if (n)
      for (auto& [name, p] : n->named_parameters()) p.fill_(name == "weight" ? 1.0 : 0.0);
}

void TransformerLM::resize_vocab(int64_t vocab_size, Generator& gen) {
  KILN_CHECK(factory_->whole_model(),
             "[TransformerLM] resize_vocab on one process: resize the whole model, then split it");
  KILN_CHECK(vocab_size >= spec_.vocab_size, "[TransformerLM] resize_vocab grows the vocabulary: {} is below the "
             "model's {}", vocab_size, spec_.vocab_size);
  NoGradGuard no_grad;
  const int64_t old = spec_.vocab_size, padded = factory_->padded_vocab(vocab_size);
  for (EmbeddingLayer* table : {embed_tokens.get(), lm_head.get()}) {
    if (!table) continue;
    Tensor w = zeros({padded, table->weight.size(1)}, TensorOptions(table->weight.dtype()).device(table->weight.device()));
    w.narrow(0, 0, old).copy_(table->weight.narrow(0, 0, old));
    Tensor added = w.narrow(0, old, vocab_size - old);
    if (vocab_size > old) init::normal_(added, 0.0, spec_.init_std, gen);
    table->weight.set_data(w);
    table->set_shard_spec("weight", {0, {}, vocab_size, padded});
  }
  spec_.vocab_size = vocab_size;
  padded_vocab_ = padded;
}

Tensor TransformerLM::forward_stage(const Tensor& input, std::vector<KVCache>* caches,
                                   const AttentionInputs* inputs) const {
  const LayerFactory& f = *factory_;
  KILN_CHECK(!caches || caches->size() == layers->size(), "[TransformerLM] needs one KV cache per layer of the "
             "stage ({}), got {}", layers->size(), caches ? caches->size() : 0);
  KILN_CHECK(!caches || !f.sequence_parallel(), "[TransformerLM] decoding with KV caches needs whole sequences: "
             "build the model without sequence parallelism");
  const int64_t past = caches && !caches->empty() ? (*caches)[0].length() : 0;
  const bool offset_rows = inputs && inputs->positions.defined();
  KILN_CHECK(!offset_rows || (!f.sequence_parallel() && inputs->positions.sizes() == Shape{input.size(0), input.size(1)}),
             "[TransformerLM] positions must be (B, T) = ({}, {}), got [{}], without sequence parallelism",
             input.size(0), input.size(1), fmt::join(inputs->positions.sizes(), ", "));
  Tensor x;
  if (f.is_first_stage()) {
    KILN_CHECK(input.dim() == 2 && !is_floating(input.dtype()),
               "[TransformerLM] the first stage expects token ids (B, T) of an integer dtype, got {} [{}]",
               input.dtype(), fmt::join(input.sizes(), ", "));
    const int64_t T = input.size(1), tp = f.tp_size();
    KILN_CHECK(!spec_.learned_positions || offset_rows || past + T <= spec_.max_positions,
               "[TransformerLM] sequence of {} tokens is longer than max_positions {}", past + T, spec_.max_positions);
    KILN_CHECK(!f.sequence_parallel() || T % tp == 0,
               "[TransformerLM] sequence parallelism splits the {} tokens of a sequence among {} ranks: they must "
               "divide", T, tp);
    x = embed_tokens->forward(input);  // with sequence parallelism, this rank's slice of the sequence
    if (embed_positions && offset_rows) {
      KILN_CHECK(max(inputs->positions).item<int64_t>() < spec_.max_positions,
                 "[TransformerLM] a position is past max_positions {}", spec_.max_positions);
      x = x + embed_positions->forward(spec_.position_offset ? inputs->positions + spec_.position_offset
                                                             : inputs->positions);
    } else if (embed_positions) {
      const int64_t local = f.sequence_parallel() ? T / tp : T;
      const int64_t first = past + (f.sequence_parallel() ? f.tp_rank() * local : 0) + spec_.position_offset;
      x = x + embed_positions->forward(arange(first, first + local, 1, TensorOptions(kInt64).device(input.device())));
    }
    if (embed_block_positions) {
      KILN_CHECK(inputs && inputs->block_positions.defined() && inputs->block_positions.sizes() == input.sizes(),
                 "[TransformerLM] a model with block positions (GLM) needs each token's (AttentionInputs::"
                 "block_positions) of the ids' shape [{}]", fmt::join(input.sizes(), ", "));
      KILN_CHECK(max(inputs->block_positions).item<int64_t>() < spec_.max_positions,
                 "[TransformerLM] a block position is past max_positions {}", spec_.max_positions);
      x = x + embed_block_positions->forward(inputs->block_positions);
    }
    if (spec_.compute_dtype) x = x.to(*spec_.compute_dtype);
    if (embed_norm) x = embed_norm->forward(x);
    x = drop->forward(x);
  } else {
    KILN_CHECK(input.dim() == 3 && input.size(2) == spec_.block.d_model,
               "[TransformerLM] stage {} expects activations (B, T, {}), got {} [{}]", f.pp_rank(),
               spec_.block.d_model, input.dtype(), fmt::join(input.sizes(), ", "));
    x = input;
  }
  for (size_t i = 0; i < layers->size(); ++i) x = layers->at<Block>(i).forward(x, caches ? &(*caches)[i] : nullptr, inputs);
  return f.is_last_stage() ? norm->forward(x) : x;
}

const EmbeddingLayer& TransformerLM::head() const {
  KILN_CHECK(spec_.lm_head, "[TransformerLM] this model has no language-model head (ModelSpec::lm_head is false)");
  return spec_.tie_embeddings ? *embed_tokens : *lm_head;
}

Tensor TransformerLM::head_weight(DType dtype) const {
  const EmbeddingLayer& h = head();
  const int64_t rows = std::min(h.weight.size(0), spec_.vocab_size - h.vocab_start());
  return cast_cached(h.weight, dtype).narrow(0, 0, rows);
}

Tensor TransformerLM::forward(const Tensor& idx, std::vector<KVCache>* caches, const AttentionInputs* inputs) const {
  KILN_CHECK(factory_->pp_size() == 1, "[TransformerLM] the whole forward pass runs on one stage: with {} pipeline "
             "stages, use a pipeline schedule (or dist::pipeline_generate)", factory_->pp_size());
  return logits_from_hidden(forward_stage(idx, caches, inputs));
}

Tensor TransformerLM::logits_from_hidden(const Tensor& hidden) const {
  KILN_CHECK(factory_->is_last_stage(), "[TransformerLM] logits are taken on the last pipeline stage, this is stage "
             "{} of {}", factory_->pp_rank(), factory_->pp_size());
  KILN_CHECK(!factory_->sequence_parallel(), "[TransformerLM] logits of whole sequences: build the model without "
             "sequence parallelism, or take the loss");
  return factory_->vocab_logits(hidden, cast_cached(head().weight, hidden.dtype()), spec_.vocab_size);
}

Tensor TransformerLM::loss_from_hidden(const Tensor& hidden, const Tensor& targets) const {
  KILN_CHECK(factory_->is_last_stage(), "[TransformerLM] the loss is taken on the last pipeline stage, this is "
             "stage {} of {}", factory_->pp_rank(), factory_->pp_size());
  const int64_t slices = factory_->sequence_parallel() ? factory_->tp_size() : 1;
  KILN_CHECK(hidden.dim() == 3 && targets.sizes() == Shape({hidden.size(0), hidden.size(1) * slices}),
             "[TransformerLM] loss expects hidden (B, T{}, C) and targets (B, T), got [{}] and [{}]",
             slices > 1 ? " / tp" : "", fmt::join(hidden.sizes(), ", "), fmt::join(targets.sizes(), ", "));
  return factory_->vocab_loss(hidden, head_weight(hidden.dtype()), head().vocab_start(), targets,
                              is_training() ? spec_.z_loss : 0.0);
}

Tensor TransformerLM::loss(const Tensor& idx, const Tensor& targets, const AttentionInputs* inputs) const {
  KILN_CHECK(factory_->pp_size() == 1, "[TransformerLM] loss(idx, targets) runs the whole model: with {} pipeline "
             "stages, use a pipeline schedule", factory_->pp_size());
  return loss_from_hidden(forward_stage(idx, nullptr, inputs), targets);
}

Shape TransformerLM::activation_shape(int64_t batch, int64_t seq) const {
  return {batch, factory_->sequence_parallel() ? seq / factory_->tp_size() : seq, spec_.block.d_model};
}

DType TransformerLM::activation_dtype() const {
  return spec_.compute_dtype ? *spec_.compute_dtype : named_parameters().at(0).second.dtype();
}

std::vector<std::string> TransformerLM::tied_across_stages() const {
  if (spec_.tie_embeddings && spec_.lm_head && factory_->pp_size() > 1 && (is_first_stage() || is_last_stage()))
    return {"embed_tokens.weight"};
  return {};
}

MoeStats TransformerLM::moe_stats(bool reset) {
  MoeStats total;
  for (size_t i = 0; i < layers->size(); ++i)
    if (const auto& moe = layers->at<Block>(i).moe) {
      total.add(moe->stats());
      if (reset) moe->reset_stats();
    }
  return total;
}

void TransformerLM::set_aux_loss_scale(double scale) const {
  for (size_t i = 0; i < layers->size(); ++i)
    if (const auto& moe = layers->at<Block>(i).moe) moe->set_aux_loss_scale(scale);
}

}  // namespace kiln::nn
