#include "kiln/dist/zero.h"

#include <algorithm>
#include <cmath>

#include "kiln/autograd.h"
#include "kiln/ops.h"
#include "kiln/optim/schedule.h"

namespace kiln::dist {

namespace {

TensorOptions options_of(const Tensor& t) { return TensorOptions(t.dtype()).device(t.device()); }

// The parameters (or their gradients, zeros where missing) as one flat vector
// padded to `padded` elements, in the parameters' dtype.
Tensor flatten(const std::vector<Tensor>& params, int64_t padded, bool gradients) {
  const TensorOptions opts = options_of(params.at(0));
  std::vector<Tensor> parts;
  int64_t n = 0;
  for (const Tensor& p : params) {
    const Tensor& t = gradients ? p.grad() : p;
    parts.push_back(t.defined() ? t.reshape({-1}).to(p.dtype()) : zeros({p.numel()}, opts));
    n += p.numel();
  }
  if (padded > n) parts.push_back(zeros({padded - n}, opts));
  return cat(parts, 0);
}

}  // namespace

ZeroRedundancyOptimizer::ZeroRedundancyOptimizer(std::vector<optim::ParamGroup> groups,
                                                 std::shared_ptr<ProcessGroup> group, const InnerFactory& make_inner)
    : group_(std::move(group)) {
  NoGradGuard no_grad;
  const int world = group_->size(), rank = group_->rank();
  std::vector<optim::ParamGroup> shards;
  for (optim::ParamGroup& g : groups) {
    Flat f;
    f.params = g.params;
    KILN_CHECK(!g.params.empty(), "[ZeroRedundancyOptimizer] a parameter group is empty");
    for (const Tensor& p : g.params) {
      const Tensor& first = g.params[0];
      KILN_CHECK((p.dtype() == kFloat32 || p.dtype() == kFloat64) && p.dtype() == first.dtype() &&
                     p.device() == first.device(),
                 "[ZeroRedundancyOptimizer] a group's parameters share one float32 or float64 dtype and a device; "
                 "got {} on {} beside {} on {}", p.dtype(), p.device(), first.dtype(), first.device());
      f.numel += p.numel();
    }
    f.shard = (f.numel + world - 1) / world;
    f.shard_param = flatten(f.params, f.shard * world, false).narrow(0, rank * f.shard, f.shard).clone();
    f.shard_param.requires_grad_();
    shards.push_back({{f.shard_param}, g.weight_decay});
    flats_.push_back(std::move(f));
  }
  inner_ = make_inner(shards);
}

void ZeroRedundancyOptimizer::reduce_gradients() {
  NoGradGuard no_grad;
  const int world = group_->size();
  for (Flat& f : flats_) {
    Tensor grads = flatten(f.params, f.shard * world, true);
    Tensor mine = empty({f.shard}, options_of(grads));
    group_->reduce_scatter(mine, grads, ReduceOp::Avg);
    f.shard_param.set_grad(mine);
  }
  reduced_ = true;
}

double ZeroRedundancyOptimizer::clip_grad_norm(double max_norm, const std::vector<Tensor>& counted,
                                               const std::vector<ProcessGroup*>& model_groups) {
  KILN_CHECK(reduced_, "[ZeroRedundancyOptimizer] clip_grad_norm needs reduce_gradients() first");
  NoGradGuard no_grad;
  const int rank = group_->rank();
  auto is_counted = [&](const Tensor& p) {
    return counted.empty() ||
           std::any_of(counted.begin(), counted.end(), [&](const Tensor& c) { return c.is_same(p); });
  };
  // The counted parameters' stretches of this rank's shards of the averaged gradients.
  std::vector<Tensor> pieces;
  for (Flat& f : flats_) {
    const int64_t lo = rank * f.shard, hi = lo + f.shard;
    int64_t at = 0;
    for (const Tensor& p : f.params) {
      const int64_t begin = std::max(at, lo), end = std::min(at + p.numel(), hi);
      if (begin < end && is_counted(p)) pieces.push_back(f.shard_param.grad().narrow(0, begin - lo, end - begin));
      at += p.numel();
    }
  }
  const double total = pieces.empty() ? 0.0 : sum(squared_norms(pieces)).item<double>();
  Tensor t = full({1}, total, TensorOptions(kFloat64).device(flats_.at(0).shard_param.device()));
  group_->all_reduce(t);
  for (ProcessGroup* g : model_groups) g->all_reduce(t);
  const double norm = std::sqrt(t.item<double>());
  std::vector<Tensor> shards;
  for (Flat& f : flats_) shards.push_back(f.shard_param);
  optim::clip_grads_to(shards, norm, max_norm);
  return norm;
}

void ZeroRedundancyOptimizer::step() {
  NoGradGuard no_grad;
  if (!reduced_) reduce_gradients();
  reduced_ = false;
  const int world = group_->size();
  inner_->step();
  for (Flat& f : flats_) {
    Tensor gathered = empty({f.shard * world}, options_of(f.shard_param));
    group_->all_gather(gathered, f.shard_param);
    int64_t at = 0;
    for (Tensor p : f.params) {
      p.copy_(gathered.narrow(0, at, p.numel()).view(p.sizes()));
      at += p.numel();
    }
  }
}

std::vector<Tensor> ZeroRedundancyOptimizer::params() const {
  std::vector<Tensor> out;
  for (const Flat& f : flats_) out.insert(out.end(), f.params.begin(), f.params.end());
  return out;
}

std::map<std::string, Tensor> ZeroRedundancyOptimizer::state_dict() const {
  NoGradGuard no_grad;
  const int world = group_->size();
  std::map<std::string, Tensor> inner = inner_->state_dict(), out{{"step", inner.at("step")}};
  size_t index = 0;  // the first parameter of flat g
  for (size_t g = 0; g < flats_.size(); ++g) {
    const Flat& f = flats_[g];
    const std::string prefix = fmt::format("{}.", g);
    for (const auto& [key, shard] : inner) {
      if (key.rfind(prefix, 0) != 0) continue;
      Tensor whole = empty({f.shard * world}, options_of(shard));
      group_->all_gather(whole, shard.contiguous());
      int64_t at = 0;
      for (size_t i = 0; i < f.params.size(); ++i) {
        const Tensor& p = f.params[i];
        out[fmt::format("{}.{}", index + i, key.substr(prefix.size()))] =
            whole.narrow(0, at, p.numel()).view(p.sizes()).clone();
        at += p.numel();
      }
    }
    index += f.params.size();
  }
  return out;
}

void ZeroRedundancyOptimizer::load_state_dict(const std::map<std::string, Tensor>& state) {
  NoGradGuard no_grad;
  const int world = group_->size(), rank = group_->rank();
  auto it = state.find("step");
  KILN_CHECK(it != state.end(), "[ZeroRedundancyOptimizer] optimizer state has no 'step'");
  std::map<std::string, Tensor> inner{{"step", it->second}};
  // The kinds of state ("exp_avg", ...) of parameter 0..n, flattened into each flat's shards.
  size_t index = 0;
  for (size_t g = 0; g < flats_.size(); ++g) {
    const Flat& f = flats_[g];
    std::map<std::string, std::vector<Tensor>> kinds;
    for (size_t i = 0; i < f.params.size(); ++i) {
      const std::string prefix = fmt::format("{}.", index + i);
      for (const auto& [key, t] : state)
        if (key.rfind(prefix, 0) == 0)
          kinds[key.substr(prefix.size())].push_back(
              t.reshape({-1}).to(f.shard_param.device(), f.shard_param.dtype()));
    }
    for (auto& [kind, parts] : kinds) {
      KILN_CHECK(parts.size() == f.params.size(), "[ZeroRedundancyOptimizer] state '{}' covers {} of the {} "
                 "parameters of group {}", kind, parts.size(), f.params.size(), g);
      parts.push_back(zeros({f.shard * world - f.numel}, options_of(f.shard_param)));
      inner[fmt::format("{}.{}", g, kind)] = cat(parts, 0).narrow(0, rank * f.shard, f.shard).clone();
    }
    index += f.params.size();
  }
  inner_->load_state_dict(inner);
}

void ZeroRedundancyOptimizer::zero_grad(bool set_to_none) {
  for (Flat& f : flats_) autograd::zero_grad(f.params, set_to_none);
  inner_->zero_grad(set_to_none);
}

}  // namespace kiln::dist
