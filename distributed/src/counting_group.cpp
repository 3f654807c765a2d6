#include "kiln/dist/counting_group.h"

namespace kiln::dist {

namespace {
double bytes_of(const Tensor& t) { return static_cast<double>(t.numel()) * static_cast<double>(t.element_size()); }
}  // namespace

double CommCounts::total_bytes() const {
  double total = 0;
  for (const auto& [op, b] : bytes) total += b;
  return total;
}

CountingProcessGroup::CountingProcessGroup(std::shared_ptr<ProcessGroup> inner, std::shared_ptr<CommCounts> counts)
    : inner_(std::move(inner)), counts_(std::move(counts)) {}

void CountingProcessGroup::add(const char* op, double bytes) {
  counts_->bytes[op] += bytes;
  counts_->calls[op] += 1;
}

double CountingProcessGroup::ring(double bytes) const {
  const double n = size();
  return (n - 1) / n * bytes;
}

void CountingProcessGroup::all_reduce(Tensor& t, ReduceOp op) {
  add("all_reduce", 2 * ring(bytes_of(t)));
  inner_->all_reduce(t, op);
}

std::shared_ptr<Work> CountingProcessGroup::all_reduce_async(Tensor& t, ReduceOp op) {
  add("all_reduce", 2 * ring(bytes_of(t)));
  return inner_->all_reduce_async(t, op);
}

void CountingProcessGroup::broadcast(Tensor& t, int root) {
  if (size() > 1) add("broadcast", bytes_of(t));
  inner_->broadcast(t, root);
}

void CountingProcessGroup::all_gather(Tensor& out, const Tensor& in) {
  add("all_gather", ring(bytes_of(out)));
  inner_->all_gather(out, in);
}

void CountingProcessGroup::reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op) {
  add("reduce_scatter", ring(bytes_of(in)));
  inner_->reduce_scatter(out, in, op);
}

void CountingProcessGroup::send(const Tensor& t, int dst, int tag) {
  add("send", bytes_of(t));
  inner_->send(t, dst, tag);
}

void CountingProcessGroup::recv(Tensor& t, int src, int tag) { inner_->recv(t, src, tag); }

void CountingProcessGroup::send_recv(const std::vector<P2POp>& ops) {
  for (const P2POp& op : ops)
    if (op.kind == P2POp::Send) add("send", bytes_of(op.tensor));
  inner_->send_recv(ops);
}

std::shared_ptr<ProcessGroup> CountingProcessGroup::split(int color, int key) {
  return std::make_shared<CountingProcessGroup>(inner_->split(color, key), counts_);
}

}  // namespace kiln::dist
