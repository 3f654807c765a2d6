#include "kiln/nn/models/t5.h"

#include <cmath>

#include "kiln/autograd.h"
#include "kiln/nn/init.h"
#include "kiln/ops.h"

namespace kiln::nn {

BlockSpec T5Config::block(bool decoder) const {
  KILN_CHECK(feed_forward_proj == "relu" || feed_forward_proj == "gated-gelu",
             "[T5] feed_forward_proj '{}': kiln's T5 has 'relu' (v1.0) or 'gated-gelu' (v1.1)", feed_forward_proj);
  return {.d_model = d_model,
          .norm = {.kind = NormKind::RMSNorm, .eps = layer_norm_epsilon, .bias = false},
          .placement = NormPlacement::Pre,
          .attention = {.heads = num_heads,
                        .head_dim = d_kv,
                        .qkv_bias = false,
                        .out_bias = false,
                        .mask = decoder ? AttentionMask::Causal : AttentionMask::Bidirectional,
                        .scale = 1.0},
          .mlp = {.kind = feed_forward_proj == "relu" ? MlpKind::Relu : MlpKind::GeGLU, .hidden = d_ff, .bias = false},
          .dropout = dropout_rate,
          .cross_attention = decoder};
}

T5Config T5Config::small() { return {}; }

T5Config T5Config::v1_1_small() {
  return {.d_model = 512, .d_kv = 64, .d_ff = 1024, .num_layers = 8, .num_heads = 6, .feed_forward_proj = "gated-gelu",
          .tie_word_embeddings = false, .scale_decoder_outputs = false};
}

int64_t t5_relative_bucket(int64_t relative_position, bool bidirectional, int64_t buckets, int64_t max_distance) {
  int64_t bucket = 0, distance = relative_position;
  if (bidirectional) {
    buckets /= 2;
    if (distance > 0) bucket += buckets;
    distance = std::abs(distance);
  } else {
    distance = -std::min<int64_t>(distance, 0);
  }
  const int64_t exact = buckets / 2;
  if (distance < exact) return bucket + distance;
  // In float32, as Hugging Face computes it, so that the truncation agrees.
  const float scaled = std::log(static_cast<float>(distance) / static_cast<float>(exact)) /
                       static_cast<float>(std::log(static_cast<double>(max_distance) / static_cast<double>(exact))) *
                       static_cast<float>(buckets - exact);
  return bucket + std::min(exact + static_cast<int64_t>(scaled), buckets - 1);
}

T5Stack::T5Stack(const T5Config& config, bool decoder, const LayerFactory& factory, Generator& gen, DType dtype,
                 Device device)
    : config_(config), decoder_(decoder), factory_(&factory) {
  const BlockSpec spec = config.block(decoder);
  spec.check();
  layers = register_module("layers", std::make_shared<ModuleList>());
  const int64_t n = decoder ? config.decoder_layers() : config.num_layers;
  for (int64_t i = 0; i < n; ++i) layers->push_back(std::make_shared<Block>(spec, factory, gen, dtype, device));
  relative_bias = register_module(
      "relative_bias", std::make_shared<Embedding>(
                           EmbeddingOptions{config.relative_attention_num_buckets, config.num_heads, dtype, device}, nullptr));
  norm = register_module("norm", std::make_shared<RMSNorm>(NormOptions{.normalized_shape = {config.d_model},
                                                                       .eps = config.layer_norm_epsilon,
                                                                       .bias = false,
                                                                       .dtype = dtype,
                                                                       .device = device}));
  drop = register_module("drop", std::make_shared<Dropout>(config.dropout_rate, gen));
}

Tensor T5Stack::position_bias(int64_t first, int64_t queries, int64_t keys) const {
  std::vector<int64_t> buckets;
  buckets.reserve(static_cast<size_t>(queries * keys));
  for (int64_t i = 0; i < queries; ++i)
    for (int64_t j = 0; j < keys; ++j)
      buckets.push_back(t5_relative_bucket(j - (first + i), !decoder_, config_.relative_attention_num_buckets,
                                           config_.relative_attention_max_distance));
  const Device device = relative_bias->weight.device();
  Tensor index = tensor(buckets, TensorOptions(kInt64).device(device)).view({queries, keys});
  return relative_bias->forward(index).permute({2, 0, 1}).unsqueeze(0);  // (1, H, Tq, Tk)
}

Tensor T5Stack::forward(const Tensor& x, const Tensor& lengths, const Memory* memory,
                        std::vector<KVCache>* caches) const {
  KILN_CHECK(x.dim() == 3 && x.size(2) == config_.d_model, "[T5] a stack expects (B, T, {}), got {}", config_.d_model,
             x.str());
  KILN_CHECK(!decoder_ || memory, "[T5] the decoder needs the encoder's output");
  if (caches && caches->size() != layers->size()) caches->assign(layers->size(), KVCache{});
  const int64_t past = caches ? (*caches)[0].length() : 0, T = x.size(1);
  // Every layer's heads take theirs of the one bias.
  AttentionInputs inputs{.key_lengths = decoder_ ? Tensor() : lengths,
                         .bias = factory_->copy_to_tensor_parallel(position_bias(past, T, past + T))};
  Tensor h = drop->forward(x);
  for (size_t i = 0; i < layers->size(); ++i)
    h = layers->at<Block>(i).forward(h, caches ? &(*caches)[i] : nullptr, &inputs, memory);
  return drop->forward(norm->forward(h));
}

T5::T5(const T5Config& config, Generator& gen, DType dtype, Device device, std::shared_ptr<const LayerFactory> factory)
    : ParallelModel(std::move(factory)), config_(config) {
  const LayerFactory& f = layout();
  KILN_CHECK(f.pp_size() == 1 && !f.sequence_parallel(), "[T5] has no pipeline stages (an encoder-decoder would "
             "need stages of both stacks) and no sequence parallelism yet: got {} stages{}", f.pp_size(),
             f.sequence_parallel() ? ", sequence parallel" : "");
  embed_tokens = register_module(
      "embed_tokens", std::make_shared<Embedding>(EmbeddingOptions{config.vocab_size, config.d_model, dtype, device}, nullptr));
  encoder = register_module("encoder", std::make_shared<T5Stack>(config, false, f, gen, dtype, device));
  decoder = register_module("decoder", std::make_shared<T5Stack>(config, true, f, gen, dtype, device));
  if (!config.tie_word_embeddings)
    lm_head = register_module("lm_head", std::make_shared<Linear>(
                                             LinearOptions{config.d_model, config.vocab_size, false, dtype, device}, nullptr));
  initialize<T5>(config, gen, dtype);
}

void T5::reset_parameters(Generator& gen) {
  KILN_CHECK(layout().whole_model(), "[T5] reset_parameters initializes a whole model; at a parallel layout, load a "
             "whole model's values (load_full_state_dict)");
  NoGradGuard no_grad;
  const double f = config_.initializer_factor, C = static_cast<double>(config_.d_model);
  const double D = static_cast<double>(config_.d_kv);
  const double inner = static_cast<double>(config_.num_heads * config_.d_kv);
  init::normal_(embed_tokens->weight, 0.0, f, gen);
  if (lm_head) init::normal_(lm_head->weight, 0.0, f, gen);
  for (T5Stack* stack : {encoder.get(), decoder.get()}) {
    init::normal_(stack->relative_bias->weight, 0.0, f / std::sqrt(C), gen);
    stack->norm->weight.fill_(f);
    for (size_t i = 0; i < stack->layers->size(); ++i) {
      Block& b = stack->layers->at<Block>(i);
      const Tensor& qkv = b.attn->qkv->weight;
      const int64_t q_rows = config_.num_heads * config_.d_kv;
      Tensor q = qkv.narrow(0, 0, q_rows), kv = qkv.narrow(0, q_rows, 2 * q_rows);
      init::normal_(q, 0.0, f / std::sqrt(C * D), gen);
      init::normal_(kv, 0.0, f / std::sqrt(C), gen);
      init::normal_(b.attn->out->weight, 0.0, f / std::sqrt(inner), gen);
      if (b.cross_attn) {
        init::normal_(b.cross_attn->q->weight, 0.0, f / std::sqrt(C * D), gen);
        init::normal_(b.cross_attn->kv->weight, 0.0, f / std::sqrt(C), gen);
        init::normal_(b.cross_attn->out->weight, 0.0, f / std::sqrt(inner), gen);
      }
      init::normal_(b.mlp->up->weight, 0.0, f / std::sqrt(C), gen);
      init::normal_(b.mlp->down->weight, 0.0, f / std::sqrt(static_cast<double>(config_.d_ff)), gen);
      for (NormLayer* n : {b.attn_norm.get(), b.cross_norm.get(), b.mlp_norm.get()})
        if (n) n->weight.fill_(f);
    }
  }
}

Memory T5::encode(const Tensor& ids, const Tensor& lengths) const {
  KILN_CHECK(ids.dim() == 2 && ids.dtype() == kInt64, "[T5] encode expects ids (B, S) int64, got {}", ids.str());
  KILN_CHECK(!lengths.defined() || (lengths.dim() == 1 && lengths.size(0) == ids.size(0)),
             "[T5] lengths {} must give one length per row of ids {}", lengths.defined() ? lengths.str() : "", ids.str());
  return {encoder->forward(embed_tokens->forward(ids), lengths), lengths};
}

Tensor T5::decode(const Tensor& decoder_ids, const Memory& memory, std::vector<KVCache>* caches) const {
  KILN_CHECK(decoder_ids.dim() == 2 && decoder_ids.dtype() == kInt64,
             "[T5] decode expects decoder ids (B, T) int64, got {}", decoder_ids.str());
  Tensor h = decoder->forward(embed_tokens->forward(decoder_ids), {}, &memory, caches);
  if (config_.scale_decoder_outputs) h = h * (1.0 / std::sqrt(static_cast<double>(config_.d_model)));
  return lm_head ? lm_head->forward(h) : linear(h, embed_tokens->weight);
}

Tensor T5::decoder_inputs(const Tensor& labels) const {
  KILN_CHECK(labels.dim() == 2 && labels.dtype() == kInt64 && labels.size(1) > 0,
             "[T5] labels must be (B, T) int64, got {}", labels.str());
  const int64_t B = labels.size(0), T = labels.size(1);
  Tensor start = full({B, 1}, config_.decoder_start_token_id, TensorOptions(kInt64).device(labels.device()));
  Tensor shifted = cat({start, labels.narrow(1, 0, T - 1)}, 1);
  return where(shifted == -100, config_.pad_token_id, shifted);
}

Tensor T5::loss(const Tensor& ids, const Tensor& labels, const Tensor& lengths) const {
  Tensor logits = decode(decoder_inputs(labels), encode(ids, lengths));
  return cross_entropy(logits.reshape({-1, config_.vocab_size}), labels.reshape({-1}));
}

}  // namespace kiln::nn
