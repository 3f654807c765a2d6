#pragma once
// CountingProcessGroup: a ProcessGroup that forwards every call to another
// and counts what it costs each rank on the wire, by kind of operation, with
// the ring algorithms' volumes (the "bus bytes" of nccl-tests): an all-reduce
// of S bytes over n ranks moves 2 (n - 1) / n S per rank, an all-gather or a
// reduce-scatter (n - 1) / n of the whole, a broadcast S, a send S. Groups
// split from it count into the same totals. For measuring a layout's traffic
// (benchmarks/comm.cpp) against the formulas.

#include <map>
#include <memory>
#include <string>

#include "kiln/dist/process_group.h"

namespace kiln::dist {

// What a CountingProcessGroup has counted on one rank.
struct CommCounts {
  std::map<std::string, double> bytes;   // by operation: "all_reduce", "send", ...
  std::map<std::string, int64_t> calls;  // by operation
  double total_bytes() const;            // over every operation
};

// A ProcessGroup that counts (above).
class CountingProcessGroup : public ProcessGroup {
 public:
  // Forwards to inner, counting into counts (shared with the groups split from this one).
  explicit CountingProcessGroup(std::shared_ptr<ProcessGroup> inner,
                                std::shared_ptr<CommCounts> counts = std::make_shared<CommCounts>());
  const CommCounts& counts() const { return *counts_; }  // so far
  void reset() { *counts_ = {}; }                        // to zero

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  void all_reduce(Tensor& t, ReduceOp op) override;
  std::shared_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op) override;
  void broadcast(Tensor& t, int root) override;
  void all_gather(Tensor& out, const Tensor& in) override;
  void reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op) override;
  void send(const Tensor& t, int dst, int tag) override;
  void recv(Tensor& t, int src, int tag) override;
  void send_recv(const std::vector<P2POp>& ops) override;
  void barrier() override { inner_->barrier(); }
  std::shared_ptr<ProcessGroup> split(int color, int key) override;

 private:
  void add(const char* op, double bytes);
  double ring(double bytes) const;  // (n - 1) / n of bytes

  std::shared_ptr<ProcessGroup> inner_;
  std::shared_ptr<CommCounts> counts_;
};

}  // namespace kiln::dist
