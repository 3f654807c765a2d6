#include "kiln/nn/value_model.h"

#include "kiln/autograd.h"
#include "kiln/nn/init.h"
#include "kiln/ops.h"

namespace kiln::nn {

namespace {
ModelSpec without_lm_head(ModelSpec spec) {
  spec.lm_head = false;
  return spec;
}
}  // namespace

ValueModel::ValueModel(ModelSpec spec, Generator& gen, DType dtype, Device device,
                       std::shared_ptr<const LayerFactory> factory)
    : TransformerLM(without_lm_head(std::move(spec)), gen, dtype, device, std::move(factory)) {
  KILN_CHECK(!layout().sequence_parallel(), "[ValueModel] a value per token needs whole sequences: build it without "
             "sequence parallelism");
  // Drawn on every rank, so that gen ends where one process leaves it.
  const int64_t C = this->spec().block.d_model;
  Tensor drawn = empty({1, C}, TensorOptions(dtype));
  init::normal_(drawn, 0.0, this->spec().init_std, gen);
  if (!is_last_stage()) return;
  score = register_module("score", std::make_shared<Linear>(LinearOptions{C, 1, false, dtype, device}, nullptr));
  NoGradGuard no_grad;
  score->weight.copy_(drawn.to(device));
}

ValueModel::ValueModel(const ValueModel& like, DType dtype, Device device) : TransformerLM(like, dtype, device) {
  if (like.score)
    score = register_module(
        "score", std::make_shared<Linear>(LinearOptions{spec().block.d_model, 1, false, dtype, device}, nullptr));
}

std::unique_ptr<TransformerLM> ValueModel::empty_like(DType dtype, Device device) const {
  return std::unique_ptr<TransformerLM>(new ValueModel(*this, dtype, device));
}

Tensor ValueModel::values_from_hidden(const Tensor& hidden) const {
  KILN_CHECK(is_last_stage(), "[ValueModel] values are taken on the last pipeline stage, this is stage {} of {}",
             layout().pp_rank(), layout().pp_size());
  Tensor v = score->forward(hidden).squeeze(-1);
  return v.dtype() == kFloat64 ? v : v.to(kFloat32);
}

Tensor ValueModel::values(const Tensor& idx) const { return values_from_hidden(forward_stage(idx)); }

Tensor ValueModel::scores(const Tensor& idx, const Tensor& lengths) const {
  KILN_CHECK(lengths.dim() == 1 && idx.dim() == 2 && lengths.size(0) == idx.size(0) && !is_floating(lengths.dtype()),
             "[ValueModel] scores expects token ids (B, T) and integer lengths (B), got [{}] and {} [{}]",
             fmt::join(idx.sizes(), ", "), lengths.dtype(), fmt::join(lengths.sizes(), ", "));
  Tensor last = lengths.to(idx.device(), kInt64) - 1;
  KILN_CHECK(min(last).item<int64_t>() >= 0 && max(last).item<int64_t>() < idx.size(1),
             "[ValueModel] lengths must be in [1, {}]", idx.size(1));
  return gather(values(idx), 1, last.unsqueeze(1)).squeeze(1);
}

}  // namespace kiln::nn
