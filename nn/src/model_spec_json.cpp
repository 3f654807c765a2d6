// A ModelSpec as JSON, kiln's own config.json for models of no Hugging Face
// family: every field of the spec, by its name.

#include <nlohmann/json.hpp>

#include "kiln/nn/transformer_lm.h"
#include "../models/json_fields.h"

namespace kiln::nn {

namespace {

using Json = nlohmann::ordered_json;

template <typename E>
E enum_from(const Json& j, const char* key, std::initializer_list<std::pair<const char*, E>> names) {
  const std::string value = j.at(key).get<std::string>();
  for (const auto& [name, e] : names)
    if (value == name) return e;
  KILN_FAIL("[ModelSpec] unknown {} '{}'", key, value);
}

template <typename E>
const char* enum_name(E e, std::initializer_list<std::pair<const char*, E>> names) {
  for (const auto& [name, v] : names)
    if (v == e) return name;
  KILN_FAIL("[ModelSpec] an enum value without a name");
}

const std::initializer_list<std::pair<const char*, NormKind>> kNorms{{"layer_norm", NormKind::LayerNorm},
                                                                     {"rms_norm", NormKind::RMSNorm}};
const std::initializer_list<std::pair<const char*, NormPlacement>> kPlacements{{"pre", NormPlacement::Pre},
                                                                               {"post", NormPlacement::Post}};
const std::initializer_list<std::pair<const char*, Residual>> kResiduals{
    {"sequential", Residual::Sequential}, {"parallel", Residual::Parallel},
    {"parallel_shared_norm", Residual::ParallelSharedNorm}};
const std::initializer_list<std::pair<const char*, AttentionMask>> kMasks{
    {"causal", AttentionMask::Causal}, {"bidirectional", AttentionMask::Bidirectional},
    {"prefix_lm", AttentionMask::PrefixLM}};
const std::initializer_list<std::pair<const char*, MlpKind>> kMlps{
    {"gelu_tanh", MlpKind::GeluTanh}, {"gelu", MlpKind::Gelu},     {"relu", MlpKind::Relu},
    {"swiglu", MlpKind::SwiGLU},       {"geglu", MlpKind::GeGLU}};
const std::initializer_list<std::pair<const char*, RouterScore>> kScores{
    {"topk_then_softmax", RouterScore::TopKThenSoftmax}, {"softmax_then_topk", RouterScore::SoftmaxThenTopK}};
const std::initializer_list<std::pair<const char*, DropPolicy>> kDropPolicies{{"probs", DropPolicy::Probs},
                                                                              {"position", DropPolicy::Position}};

Json moe_to_json(const std::optional<MoeSpec>& m) {
  if (!m) return nullptr;
  return {{"experts", m->experts}, {"top_k", m->top_k}, {"score", enum_name(m->score, kScores)},
          {"capacity_factor", m->capacity_factor}, {"drop_policy", enum_name(m->drop_policy, kDropPolicies)},
          {"aux_loss_coeff", m->aux_loss_coeff}, {"z_loss_coeff", m->z_loss_coeff}, {"every", m->every}};
}

std::optional<MoeSpec> moe_from_json(const Json& j) {
  if (j.is_null()) return std::nullopt;
  return MoeSpec{.experts = integer(j, "experts"),
                 .top_k = integer(j, "top_k"),
                 .score = enum_from(j, "score", kScores),
                 .capacity_factor = j.at("capacity_factor").get<double>(),
                 .drop_policy = enum_from(j, "drop_policy", kDropPolicies),
                 .aux_loss_coeff = j.at("aux_loss_coeff").get<double>(),
                 .z_loss_coeff = j.at("z_loss_coeff").get<double>(),
                 .every = integer(j, "every")};
}

}  // namespace

std::string spec_to_json(const ModelSpec& s) {
  const BlockSpec& b = s.block;
  const AttentionSpec& a = b.attention;
  Json attention = {{"heads", a.heads}, {"kv_heads", a.kv_heads}, {"head_dim", a.head_dim},
                    {"qkv_bias", a.qkv_bias}, {"out_bias", a.out_bias}, {"rope", nullptr}, {"alibi", a.alibi},
                    {"mask", enum_name(a.mask, kMasks)}, {"scale", nullptr}};
  if (a.rope) {
    attention["rope"] = {{"theta", a.rope->theta}, {"scaling", nullptr}, {"dims", a.rope->dims}};
    if (const auto& r = a.rope->scaling)
      attention["rope"]["scaling"] = {{"factor", r->factor}, {"low_freq_factor", r->low_freq_factor},
                                      {"high_freq_factor", r->high_freq_factor},
                                      {"original_max_positions", r->original_max_positions}};
  }
  if (a.scale) attention["scale"] = *a.scale;
  Json j = {{"model_type", "kiln"},
            {"family", s.family},
            {"vocab_size", s.vocab_size},
            {"max_positions", s.max_positions},
            {"n_layer", s.n_layer},
            {"block",
             {{"d_model", b.d_model},
              {"norm", {{"kind", enum_name(b.norm.kind, kNorms)}, {"eps", b.norm.eps}, {"bias", b.norm.bias}}},
              {"placement", enum_name(b.placement, kPlacements)},
              {"residual", enum_name(b.residual, kResiduals)},
              {"attention", attention},
              {"mlp", {{"kind", enum_name(b.mlp.kind, kMlps)}, {"hidden", b.mlp.hidden}, {"bias", b.mlp.bias},
                       {"moe", moe_to_json(b.mlp.moe)}}},
              {"dropout", b.dropout},
              {"recompute", b.recompute}}},
            {"learned_positions", s.learned_positions},
            {"position_offset", s.position_offset},
            {"block_positions", s.block_positions},
            {"embedding_norm", s.embedding_norm},
            {"tie_embeddings", s.tie_embeddings},
            {"lm_head", s.lm_head},
            {"embedding_dropout", s.embedding_dropout},
            {"z_loss", s.z_loss},
            {"init_std", s.init_std},
            {"scale_residual_init", s.scale_residual_init}};
  return j.dump(2) + "\n";
}

ModelSpec spec_from_json(const std::string& text) {
  try {
    const Json j = Json::parse(text);
    const Json& b = j.at("block");
    const Json& a = b.at("attention");
    ModelSpec s;
    s.family = j.at("family").get<std::string>();
    s.vocab_size = integer(j, "vocab_size");
    s.max_positions = integer(j, "max_positions");
    s.n_layer = integer(j, "n_layer");
    s.block.d_model = integer(b, "d_model");
    s.block.norm = {enum_from(b.at("norm"), "kind", kNorms), b.at("norm").at("eps").get<double>(),
                    b.at("norm").at("bias").get<bool>()};
    s.block.placement = enum_from(b, "placement", kPlacements);
    if (b.contains("residual")) s.block.residual = enum_from(b, "residual", kResiduals);
    s.block.attention = {.heads = integer(a, "heads"),
                         .kv_heads = integer(a, "kv_heads"),
                         .head_dim = integer(a, "head_dim"),
                         .qkv_bias = a.at("qkv_bias").get<bool>(),
                         .out_bias = a.at("out_bias").get<bool>(),
                         .mask = enum_from(a, "mask", kMasks)};
    if (!a.at("rope").is_null()) {
      const Json& r = a.at("rope");
      s.block.attention.rope = RopeSpec{r.at("theta").get<double>(), std::nullopt, integer_or(r, "dims", 0)};
      if (!r.at("scaling").is_null()) {
        const Json& sc = r.at("scaling");
        s.block.attention.rope->scaling =
            RopeScaling{sc.at("factor").get<double>(), sc.at("low_freq_factor").get<double>(),
                        sc.at("high_freq_factor").get<double>(), integer(sc, "original_max_positions")};
      }
    }
    if (!a.at("scale").is_null()) s.block.attention.scale = a.at("scale").get<double>();
    s.block.attention.alibi = a.value("alibi", false);
    s.block.mlp = {enum_from(b.at("mlp"), "kind", kMlps), integer(b.at("mlp"), "hidden"),
                   b.at("mlp").at("bias").get<bool>(), moe_from_json(b.at("mlp").value("moe", Json()))};
    s.block.dropout = b.at("dropout").get<double>();
    s.block.recompute = b.at("recompute").get<bool>();
    s.learned_positions = j.at("learned_positions").get<bool>();
    s.position_offset = integer_or(j, "position_offset", 0);
    s.block_positions = j.value("block_positions", false);
    s.embedding_norm = j.value("embedding_norm", false);
    s.tie_embeddings = j.at("tie_embeddings").get<bool>();
    s.lm_head = j.value("lm_head", true);
    s.embedding_dropout = j.at("embedding_dropout").get<double>();
    s.z_loss = j.value("z_loss", 0.0);
    s.init_std = j.at("init_std").get<double>();
    s.scale_residual_init = j.at("scale_residual_init").get<bool>();
    s.check();
    return s;
  } catch (const nlohmann::json::exception& e) {
    KILN_FAIL("[ModelSpec] not a kiln model config: {}", e.what());
  }
}

}  // namespace kiln::nn
