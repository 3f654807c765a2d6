#include "kiln/dist/zero.h"

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::dist {

namespace {

// The parameters (or their gradients, zeros where missing) as one flat
// float32 vector padded to `padded` elements.
Tensor flatten(const std::vector<Tensor>& params, int64_t padded, bool gradients) {
  std::vector<Tensor> parts;
  int64_t n = 0;
  for (const Tensor& p : params) {
    const Tensor& t = gradients ? p.grad() : p;
    parts.push_back(t.defined() ? t.reshape({-1}).to(kFloat32) : zeros({p.numel()}));
    n += p.numel();
  }
  if (padded > n) parts.push_back(zeros({padded - n}));
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
    for (const Tensor& p : g.params) {
      KILN_CHECK(p.dtype() == kFloat32 && p.device().is_cpu(),
                 "[ZeroRedundancyOptimizer] expects float32 CPU parameters, got {} on {}", p.dtype(), p.device());
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

void ZeroRedundancyOptimizer::step() {
  NoGradGuard no_grad;
  const int world = group_->size();
  for (Flat& f : flats_) {
    Tensor grads = flatten(f.params, f.shard * world, true);
    Tensor mine = empty({f.shard});
    group_->reduce_scatter(mine, grads, ReduceOp::Avg);
    f.shard_param.set_grad(mine);
  }
  inner_->step();
  for (Flat& f : flats_) {
    Tensor gathered = empty({f.shard * world});
    group_->all_gather(gathered, f.shard_param);
    int64_t at = 0;
    for (Tensor p : f.params) {
      p.copy_(gathered.narrow(0, at, p.numel()).view(p.sizes()));
      at += p.numel();
    }
  }
}

void ZeroRedundancyOptimizer::zero_grad(bool set_to_none) {
  for (Flat& f : flats_) autograd::zero_grad(f.params, set_to_none);
  inner_->zero_grad(set_to_none);
}

}  // namespace kiln::dist
