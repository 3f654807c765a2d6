#include "kiln/nn/parallel_model.h"

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::nn {

std::map<std::string, Tensor> ParallelModel::full_state_dict(bool gradients) const {
  KILN_CHECK(factory_->whole_model(), "[{}] full_state_dict of one rank's part: gather it with dist::full_state_dict",
             type_name());
  NoGradGuard no_grad;
  std::map<std::string, Tensor> out;
  for (auto& [name, p] : named_parameters()) {
    KILN_CHECK(!gradients || p.grad().defined(), "[{}] parameter '{}' has no gradient", type_name(), name);
    out[name] = shard_spec(name).assemble({gradients ? p.grad() : p.detach()});
  }
  return out;
}

std::map<std::string, Tensor> ParallelModel::take_local(const std::map<std::string, Tensor>& full, bool strict) const {
  NoGradGuard no_grad;
  std::map<std::string, Tensor> out;
  for (const auto& [name, p] : named_parameters()) {
    auto it = full.find(name);
    if (it == full.end() && !strict) continue;
    KILN_CHECK(it != full.end(), "[{}] the whole model's state has no '{}'", type_name(), name);
    const ShardSpec spec = shard_spec(name);
    Tensor mine = spec.take(it->second, factory_->shard_rank(spec), factory_->shard_ranks(spec));
    KILN_CHECK(mine.sizes() == p.sizes(), "[{}] '{}' of shape [{}] gives a part of [{}], this rank holds [{}]",
               type_name(), name, fmt::join(it->second.sizes(), ", "), fmt::join(mine.sizes(), ", "),
               fmt::join(p.sizes(), ", "));
    out[name] = mine;
  }
  return out;
}

void ParallelModel::load_full_state_dict(const std::map<std::string, Tensor>& full, bool strict) {
  NoGradGuard no_grad;
  std::map<std::string, Tensor> mine = take_local(full, strict);
  for (auto& [name, p] : named_parameters())
    if (auto it = mine.find(name); it != mine.end()) p.copy_(it->second.to(p.device(), p.dtype()));
}

}  // namespace kiln::nn
