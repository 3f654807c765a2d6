#pragma once
// DistributedDataParallel: averages gradients across a data-parallel group
// while backward is still running. Parameters are packed into buckets (in
// reverse registration order, the order their gradients usually become final);
// when the last gradient of a bucket is final (a post-accumulate hook), the
// bucket is flattened and its all-reduce starts; finish() waits for all of
// them and writes the averages back. Gradient accumulation: inside a no_sync()
// scope nothing is communicated, and the next synchronized backward
// all-reduces the accumulated gradients.

#include <memory>
#include <vector>

#include "kiln/dist/process_group.h"
#include "kiln/nn/module.h"

namespace kiln::dist {

// Parameters whose gradients are averaged over one group and then scaled.
struct GradientShare {
  std::vector<Tensor> params;           // whose gradients are averaged
  std::shared_ptr<ProcessGroup> group;  // over which
  double scale = 1.0;                   // applied after the average
};

// Averages a model's gradients over the data-parallel group in buckets, overlapping backward (above).
class DistributedDataParallel {
 public:
  // Broadcasts rank 0's parameters and buffers so every replica starts equal.
  DistributedDataParallel(nn::Module& module, std::shared_ptr<ProcessGroup> group, size_t bucket_bytes = 25u << 20);
  // Each share's parameters over its own group (broadcast from its rank 0
  // first; buffers are not). Expert parallelism: the experts' over the
  // expert-data-parallel group scaled by 1 / ep, the rest over the
  // data-parallel group.
  explicit DistributedDataParallel(std::vector<GradientShare> shares, size_t bucket_bytes = 25u << 20);
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  // Waits for the bucket all-reduces of the last backward and writes the
  // averaged gradients; call it before the optimizer step.
  void finish();

  // Disables communication for its scope (gradient accumulation).
  class NoSync {
   public:
    explicit NoSync(DistributedDataParallel& ddp) : ddp_(ddp), prev_(ddp.sync_) { ddp.sync_ = false; }  // until destroyed
    ~NoSync() { ddp_.sync_ = prev_; }

   private:
    DistributedDataParallel& ddp_;
    bool prev_;
  };
  NoSync no_sync() { return NoSync(*this); }          // auto guard = ddp.no_sync();
  size_t buckets() const { return buckets_.size(); }  // gradients are reduced in this many

 private:
  struct Bucket {
    ProcessGroup* group;
    double scale;
    std::vector<Tensor> params;
    size_t ready = 0;
    Tensor flat;
    std::shared_ptr<Work> work;
  };
  void on_grad_ready(size_t bucket);

  std::vector<GradientShare> shares_;
  std::vector<Bucket> buckets_;
  bool sync_ = true;
};

}  // namespace kiln::dist
