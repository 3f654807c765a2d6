#include "kiln/dist/ddp.h"

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::dist {

DistributedDataParallel::DistributedDataParallel(nn::Module& module, std::shared_ptr<ProcessGroup> group,
                                                 size_t bucket_bytes)
    : DistributedDataParallel({{module.parameters(), group}}, bucket_bytes) {  // each tensor once
  NoGradGuard no_grad;
  for (auto& [name, b] : module.named_buffers()) group->broadcast(b, 0);
}

DistributedDataParallel::DistributedDataParallel(std::vector<GradientShare> shares, size_t bucket_bytes)
    : shares_(std::move(shares)) {
  NoGradGuard no_grad;
  for (GradientShare& share : shares_) {
    for (Tensor p : share.params) share.group->broadcast(p, 0);
    // Buckets in reverse registration order: the last layers' gradients are final first.
    size_t bytes = bucket_bytes;
    bool first = true;
    for (auto it = share.params.rbegin(); it != share.params.rend(); ++it) {
      if (!it->requires_grad()) continue;
      size_t size = static_cast<size_t>(it->numel()) * it->element_size();
      if (first || bytes + size > bucket_bytes) {
        buckets_.push_back({share.group.get(), share.scale, {}});
        bytes = 0;
        first = false;
      }
      buckets_.back().params.push_back(*it);
      bytes += size;
    }
  }
  for (size_t b = 0; b < buckets_.size(); ++b)
    for (const Tensor& p : buckets_[b].params)
      p.register_post_accumulate_grad_hook([this, b](const Tensor&) { on_grad_ready(b); });
}

void DistributedDataParallel::on_grad_ready(size_t b) {
  Bucket& bucket = buckets_[b];
  // A group of one has nothing to average: finish() scales the gradients.
  if (!sync_ || bucket.group->size() == 1 || ++bucket.ready < bucket.params.size()) return;
  // Every gradient of the bucket is final: flatten it and start the average.
  std::vector<Tensor> flat;
  for (const Tensor& p : bucket.params) flat.push_back(p.grad().reshape({-1}));
  bucket.flat = cat(flat, 0);
  bucket.work = bucket.group->all_reduce_async(bucket.flat, ReduceOp::Avg);
}

void DistributedDataParallel::finish() {
  NoGradGuard no_grad;
  for (Bucket& bucket : buckets_) {
    if (bucket.group->size() == 1) {
      if (bucket.scale != 1.0)
        for (Tensor p : bucket.params)
          if (p.grad().defined()) p.mutable_grad().mul_(bucket.scale);
      continue;
    }
    if (!bucket.work) {
      // Some parameter got no gradient this step: reduce the bucket now, zeros standing in.
      std::vector<Tensor> flat;
      for (const Tensor& p : bucket.params)
        flat.push_back(p.grad().defined() ? p.grad().reshape({-1}) : zeros({p.numel()}, TensorOptions(p.dtype())));
      bucket.flat = cat(flat, 0);
      bucket.work = bucket.group->all_reduce_async(bucket.flat, ReduceOp::Avg);
    }
    bucket.work->wait();
    if (bucket.scale != 1.0) bucket.flat.mul_(bucket.scale);
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
