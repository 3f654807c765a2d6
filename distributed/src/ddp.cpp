#include "kiln/dist/ddp.h"

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::dist {

DistributedDataParallel::DistributedDataParallel(nn::Module& module, std::shared_ptr<ProcessGroup> group,
                                                 size_t bucket_bytes)
    : group_(std::move(group)) {
  NoGradGuard no_grad;
  // Each tensor once (state_dict names a tied parameter under every name).
  for (Tensor p : module.parameters()) group_->broadcast(p, 0);
  for (auto& [name, b] : module.named_buffers()) group_->broadcast(b, 0);
  // Buckets in reverse registration order: the last layers' gradients are final first.
  auto params = module.parameters();
  size_t bytes = bucket_bytes;
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    if (!it->requires_grad()) continue;
    size_t size = static_cast<size_t>(it->numel()) * it->element_size();
    if (buckets_.empty() || bytes + size > bucket_bytes) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().params.push_back(*it);
    bytes += size;
  }
  for (size_t b = 0; b < buckets_.size(); ++b)
    for (const Tensor& p : buckets_[b].params)
      p.register_post_accumulate_grad_hook([this, b](const Tensor&) { on_grad_ready(b); });
}

void DistributedDataParallel::on_grad_ready(size_t b) {
  Bucket& bucket = buckets_[b];
  // A group of one has nothing to average: the gradients are final as they are.
  if (!sync_ || group_->size() == 1 || ++bucket.ready < bucket.params.size()) return;
  // Every gradient of the bucket is final: flatten it and start the average.
  std::vector<Tensor> flat;
  for (const Tensor& p : bucket.params) flat.push_back(p.grad().reshape({-1}));
  bucket.flat = cat(flat, 0);
  bucket.work = group_->all_reduce_async(bucket.flat, ReduceOp::Avg);
}

void DistributedDataParallel::finish() {
  if (group_->size() == 1) return;
  NoGradGuard no_grad;
  for (Bucket& bucket : buckets_) {
    if (!bucket.work) {
      // Some parameter got no gradient this step: reduce the bucket now, zeros standing in.
      std::vector<Tensor> flat;
      for (const Tensor& p : bucket.params)
        flat.push_back(p.grad().defined() ? p.grad().reshape({-1}) : zeros({p.numel()}, TensorOptions(p.dtype())));
      bucket.flat = cat(flat, 0);
      bucket.work = group_->all_reduce_async(bucket.flat, ReduceOp::Avg);
    }
    bucket.work->wait();
    int64_t at = 0;
    for (Tensor p : bucket.params) {
      Tensor avg = bucket.flat.narrow(0, at, p.numel()).view(p.sizes());
      if (p.grad().defined()) p.mutable_grad().copy_(avg);
      else p.set_grad(avg.clone());
      at += p.numel();
    }
    bucket.ready = 0;
    bucket.work.reset();
    bucket.flat = Tensor();
  }
}

}  // namespace kiln::dist
