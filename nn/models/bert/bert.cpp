#include "kiln/nn/models/bert.h"

#include "kiln/autograd.h"
#include "kiln/nn/init.h"
#include "kiln/ops.h"

namespace kiln::nn {

BlockSpec BertConfig::block() const {
  return {.d_model = hidden_size,
          .norm = {.kind = NormKind::LayerNorm, .eps = layer_norm_eps, .bias = true},
          .placement = NormPlacement::Post,
          .attention = {.heads = num_attention_heads, .mask = AttentionMask::Bidirectional},
          .mlp = {.kind = MlpKind::Gelu, .hidden = intermediate_size, .bias = true},
          .dropout = hidden_dropout_prob};
}

BertConfig BertConfig::base() { return {}; }

BertConfig BertConfig::large() {
  return {.hidden_size = 1024, .num_hidden_layers = 24, .num_attention_heads = 16, .intermediate_size = 4096};
}

Bert::Bert(const BertConfig& config, Generator& gen, DType dtype, Device device,
           std::shared_ptr<const LayerFactory> factory)
    : StagedModel(std::move(factory)), config_(config), dtype_(dtype) {
  const BlockSpec spec = config.block();
  spec.check();
  const LayerFactory& f = layout();
  KILN_CHECK(!f.sequence_parallel(), "[Bert] has no sequence parallelism: build the layout without it");
  KILN_CHECK(config.num_hidden_layers >= f.pp_size(), "[Bert] {} layers cannot fill {} pipeline stages",
             config.num_hidden_layers, f.pp_size());
  const int64_t C = config.hidden_size;
  auto table = [&](const char* name, int64_t rows) {
    return register_module(name, std::make_shared<Embedding>(EmbeddingOptions{rows, C, dtype, device}, nullptr));
  };
  auto norm = [&](const char* name) {
    return register_module(name, std::make_shared<LayerNorm>(NormOptions{.normalized_shape = {C},
                                                                         .eps = config.layer_norm_eps,
                                                                         .dtype = dtype, .device = device}));
  };
  auto linear = [&](const char* name, int64_t in, int64_t out) {
    return register_module(name, std::make_shared<Linear>(LinearOptions{in, out, true, dtype, device}, nullptr));
  };
  if (f.is_first_stage() || f.is_last_stage()) embed_tokens = table("embed_tokens", config.vocab_size);
  if (f.is_first_stage()) {
    embed_positions = table("embed_positions", config.max_position_embeddings);
    embed_types = table("embed_types", config.type_vocab_size);
    embed_norm = norm("embed_norm");
    drop = register_module("drop", std::make_shared<Dropout>(config.hidden_dropout_prob, gen));
  }
  const auto [first, last] = f.stage_layers(config.num_hidden_layers);
  layers = register_module("layers", std::make_shared<ModuleList>(static_cast<size_t>(first)));
  for (int64_t i = first; i < last; ++i) layers->push_back(std::make_shared<Block>(spec, f, gen, dtype, device));
  if (f.is_last_stage()) {
    pooler = linear("pooler", C, C);
    transform = linear("transform", C, C);
    transform_norm = norm("transform_norm");
    mlm_bias = register_parameter("mlm_bias", zeros({config.vocab_size}, TensorOptions(dtype).device(device)));
    nsp = linear("nsp", C, 2);
  }
  initialize<Bert>(config, gen, dtype);
}

void Bert::reset_parameters(Generator& gen) {
  KILN_CHECK(layout().whole_model(), "[Bert] reset_parameters initializes a whole model; at a parallel layout, load "
             "a whole model's values (load_full_state_dict)");
  NoGradGuard no_grad;
  const double std = config_.initializer_range;
  for (Embedding* e : {embed_tokens.get(), embed_positions.get(), embed_types.get()}) init::normal_(e->weight, 0.0, std, gen);
  for (size_t i = 0; i < layers->size(); ++i) layers->at<Block>(i).reset_parameters(gen, std, std);
  for (Linear* l : {pooler.get(), transform.get(), nsp.get()}) {
    init::normal_(l->weight, 0.0, std, gen);
    init::zeros_(l->bias);
  }
  for (LayerNorm* n : {embed_norm.get(), transform_norm.get()})
    for (auto& [name, p] : n->named_parameters()) p.fill_(name == "weight" ? 1.0 : 0.0);
  mlm_bias.zero_();
}

Tensor Bert::embed(const Tensor& ids, const Tensor& token_types) const {
  KILN_CHECK(ids.dim() == 2 && !is_floating(ids.dtype()) && ids.size(1) <= config_.max_position_embeddings,
             "[Bert] expects ids (B, T) of an integer dtype with T at most {}, got {}",
             config_.max_position_embeddings, ids.str());
  KILN_CHECK(!token_types.defined() || token_types.sizes() == ids.sizes(),
             "[Bert] token types {} must have the ids' shape {}", token_types.str(), ids.str());
  const int64_t T = ids.size(1);
  Tensor positions = arange(0, T, 1, TensorOptions(kInt64).device(ids.device()));
  Tensor types = token_types.defined() ? token_types : zeros(ids.sizes(), TensorOptions(kInt64).device(ids.device()));
  Tensor words = embed_tokens->forward(ids);
  if (config_.pad_token_id >= 0) words = where((ids == config_.pad_token_id).unsqueeze(-1), words.detach(), words);
  Tensor x = words + embed_positions->forward(positions) + embed_types->forward(types);
  return drop->forward(embed_norm->forward(x));
}

Tensor Bert::blocks(Tensor x, const AttentionInputs* inputs) const {
  for (size_t i = 0; i < layers->size(); ++i) x = layers->at<Block>(i).forward(x, nullptr, inputs);
  return x;
}

BertOutput Bert::forward(const Tensor& ids, const Tensor& token_types, const AttentionInputs* inputs) const {
  KILN_CHECK(layout().pp_size() == 1, "[Bert] the whole forward pass runs on one stage: with {} pipeline stages, "
             "use a pipeline schedule", layout().pp_size());
  Tensor x = blocks(embed(ids, token_types), inputs);
  return {x, tanh(pooler->forward(x.select(1, 0)))};
}

Tensor Bert::forward_stage(const Tensor& input, std::vector<KVCache>* caches, const AttentionInputs* inputs) const {
  KILN_CHECK(!caches, "[Bert] an encoder decodes nothing: it keeps no KV caches");
  return blocks(is_first_stage() ? embed(input, {}) : input, inputs);
}

Tensor Bert::loss_from_hidden(const Tensor& hidden, const Tensor& targets) const {
  Tensor logits = mlm_logits(hidden);
  return cross_entropy(logits.reshape({-1, logits.size(-1)}), targets.reshape({-1}));
}

std::vector<std::string> Bert::tied_across_stages() const {
  if (layout().pp_size() == 1) return {};
  return {"embed_tokens.weight"};
}

Tensor Bert::mlm_logits(const Tensor& sequence) const {
  Tensor h = transform_norm->forward(gelu(transform->forward(sequence)));
  return linear(h, embed_tokens->weight, mlm_bias);
}

Tensor Bert::nsp_logits(const Tensor& pooled) const { return nsp->forward(pooled); }

Tensor Bert::pretraining_loss(const Tensor& ids, const Tensor& token_types, const Tensor& mlm_labels,
                              const Tensor& nsp_labels, const AttentionInputs* inputs) const {
  const BertOutput out = forward(ids, token_types, inputs);
  Tensor loss = loss_from_hidden(out.sequence, mlm_labels);
  if (nsp_labels.defined()) loss = loss + cross_entropy(nsp_logits(out.pooled), nsp_labels);
  return loss;
}

}  // namespace kiln::nn
