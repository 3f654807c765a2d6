// The process group of one process.

#include "kiln/autograd.h"
#include "kiln/dist/process_group.h"
#include "kiln/ops.h"

namespace kiln::dist {

namespace {

class DoneWork : public Work {
 public:
  void wait() override {}
};

class SingleProcessGroup : public ProcessGroup {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce(Tensor& t, ReduceOp) override { check_contiguous(t, "all_reduce"); }
  std::shared_ptr<Work> all_reduce_async(Tensor& t, ReduceOp) override {
    check_contiguous(t, "all_reduce");
    return std::make_shared<DoneWork>();
  }
  void broadcast(Tensor& t, int root) override {
    check_contiguous(t, "broadcast");
    check_rank(root, "broadcast");
  }
  void all_gather(Tensor& out, const Tensor& in) override { copy(out, in, "all_gather"); }
  void reduce_scatter(Tensor& out, const Tensor& in, ReduceOp) override { copy(out, in, "reduce_scatter"); }
  void send(const Tensor&, int dst, int) override { KILN_FAIL("[send] rank {} does not exist in a group of one", dst); }
  void recv(Tensor&, int src, int) override { KILN_FAIL("[recv] rank {} does not exist in a group of one", src); }
  void send_recv(const std::vector<P2POp>& ops) override {
    for (const P2POp& op : ops) check_rank(op.peer, op.kind == P2POp::Send ? "send" : "recv");
    KILN_CHECK(ops.empty(), "[send_recv] a process cannot send to itself in a group of one");
  }
  void barrier() override {}
  std::shared_ptr<ProcessGroup> split(int, int) override { return std::make_shared<SingleProcessGroup>(); }

 private:
  // The same contract as the other backends, so code tested here holds there.
  static void check_contiguous(const Tensor& t, const char* op) {
    KILN_CHECK(t.defined() && t.is_contiguous(), "[{}] expects a contiguous tensor", op);
  }
  static void check_rank(int r, const char* op) {
    KILN_CHECK(r == 0, "[{}] rank {} does not exist in a group of one", op, r);
  }
  static void copy(Tensor& out, const Tensor& in, const char* op) {
    KILN_CHECK(out.numel() == in.numel(), "[{}] output has {} elements, input {}", op, out.numel(), in.numel());
    NoGradGuard no_grad;
    out.copy_(in.reshape(out.sizes()));
  }
};

}  // namespace

std::shared_ptr<ProcessGroup> single_process_group() { return std::make_shared<SingleProcessGroup>(); }

}  // namespace kiln::dist
