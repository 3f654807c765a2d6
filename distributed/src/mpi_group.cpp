// The MPI backend for CPU tensors. MPI starts on first use (MPI_Init_thread,
// funneled: one thread talks to MPI) and finishes at exit. bfloat16/float16
// reductions go through float32.

#include <mpi.h>

#include <cstdio>
#include <cstdlib>

#include "kiln/autograd.h"
#include "kiln/dist/process_group.h"
#include "kiln/ops.h"

namespace kiln::dist {

namespace {

void check(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char message[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, message, &len);
  KILN_FAIL("[mpi] {} failed: {}", call, std::string(message, static_cast<size_t>(len)));
}

struct MpiRuntime {
  MpiRuntime() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
      owns = true;
    }
    // Errors come back as codes (turned into kiln::Error), not aborts.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  ~MpiRuntime() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns && !finalized) MPI_Finalize();
  }
  bool owns = false;
};

MpiRuntime& runtime() {
  static MpiRuntime rt;
  return rt;
}

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::Float32: return MPI_FLOAT;
    case DType::Float64: return MPI_DOUBLE;
    case DType::Int32: return MPI_INT32_T;
    case DType::Int64: return MPI_INT64_T;
    default: return MPI_BYTE;  // moved as bytes; reduced through float32
  }
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::Max ? MPI_MAX : MPI_SUM; }

void check_cpu(const Tensor& t, const char* op) {
  KILN_CHECK(t.defined() && t.device().is_cpu(), "[{}] the MPI backend moves CPU tensors; got {}", op,
             t.defined() ? t.device().str() : std::string("an undefined tensor"));
  KILN_CHECK(t.is_contiguous(), "[{}] expects a contiguous tensor", op);
}

int count_of(const Tensor& t) {
  int64_t n = mpi_type(t.dtype()) == MPI_BYTE ? t.numel() * static_cast<int64_t>(t.element_size()) : t.numel();
  KILN_CHECK(n <= INT32_MAX, "[mpi] {} elements exceed one MPI message", n);
  return static_cast<int>(n);
}

// The tensor reductions run on: t itself, or a float32 copy for 16-bit floats.
Tensor reducible(const Tensor& t) {
  NoGradGuard no_grad;
  return mpi_type(t.dtype()) == MPI_BYTE ? t.to(kFloat32) : t;
}

void finish_reduce(Tensor& t, const Tensor& r, ReduceOp op, int size) {
  NoGradGuard no_grad;
  if (op == ReduceOp::Avg) {
    if (is_floating(r.dtype())) Tensor(r).div_(static_cast<double>(size));
    else KILN_FAIL("[all_reduce] average of an integer tensor");
  }
  if (!r.is_same(t)) t.copy_(r);
}

class MpiWork : public Work {
 public:
  MpiWork(MPI_Request req, Tensor target, Tensor buffer, ReduceOp op, int size)
      : req_(req), target_(std::move(target)), buffer_(std::move(buffer)), op_(op), size_(size) {}
  void wait() override {
    if (done_) return;
    check(MPI_Wait(&req_, MPI_STATUS_IGNORE), "MPI_Wait");
    finish_reduce(target_, buffer_, op_, size_);
    done_ = true;
  }

 private:
  MPI_Request req_;
  Tensor target_, buffer_;
  ReduceOp op_;
  int size_;
  bool done_ = false;
};

class MpiGroup : public ProcessGroup {
 public:
  explicit MpiGroup(MPI_Comm comm) : comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce(Tensor& t, ReduceOp op) override { all_reduce_async(t, op)->wait(); }

  std::shared_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op) override {
    check_cpu(t, "all_reduce");
    Tensor r = reducible(t);
    MPI_Request req;
    check(MPI_Iallreduce(MPI_IN_PLACE, r.data_ptr(), count_of(r), mpi_type(r.dtype()), mpi_op(op), comm_, &req),
          "MPI_Iallreduce");
    return std::make_shared<MpiWork>(req, t, r, op, size_);
  }

  void broadcast(Tensor& t, int root) override {
    check_cpu(t, "broadcast");
    KILN_CHECK(root >= 0 && root < size_, "[broadcast] root {} is not a rank of a group of {}", root, size_);
    check(MPI_Bcast(t.data_ptr(), count_of(t), mpi_type(t.dtype()), root, comm_), "MPI_Bcast");
  }

  void all_gather(Tensor& out, const Tensor& in) override {
    check_cpu(out, "all_gather");
    check_cpu(in, "all_gather");
    KILN_CHECK(out.numel() == in.numel() * size_ && out.dtype() == in.dtype(),
               "[all_gather] output of {} elements for {} ranks of {} elements", out.numel(), size_, in.numel());
    check(MPI_Allgather(in.data_ptr(), count_of(in), mpi_type(in.dtype()), out.data_ptr(), count_of(in),
                        mpi_type(in.dtype()), comm_),
          "MPI_Allgather");
  }

  void reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op) override {
    check_cpu(out, "reduce_scatter");
    check_cpu(in, "reduce_scatter");
    KILN_CHECK(in.numel() == out.numel() * size_ && out.dtype() == in.dtype(),
               "[reduce_scatter] input of {} elements for {} ranks of {} elements", in.numel(), size_, out.numel());
    Tensor src = reducible(in), dst = reducible(out);
    check(MPI_Reduce_scatter_block(src.data_ptr(), dst.data_ptr(), count_of(dst), mpi_type(dst.dtype()), mpi_op(op),
                                   comm_),
          "MPI_Reduce_scatter_block");
    finish_reduce(out, dst, op, size_);
  }

  void send(const Tensor& t, int dst, int tag) override {
    check_cpu(t, "send");
    check(MPI_Send(t.data_ptr(), count_of(t), mpi_type(t.dtype()), dst, tag, comm_), "MPI_Send");
  }

  void recv(Tensor& t, int src, int tag) override {
    check_cpu(t, "recv");
    check(MPI_Recv(t.data_ptr(), count_of(t), mpi_type(t.dtype()), src, tag, comm_, MPI_STATUS_IGNORE), "MPI_Recv");
  }

  void send_recv(const std::vector<P2POp>& ops) override {
    std::vector<MPI_Request> reqs(ops.size());
    for (size_t i = 0; i < ops.size(); ++i) {
      const P2POp& op = ops[i];
      check_cpu(op.tensor, op.kind == P2POp::Send ? "send" : "recv");
      void* data = op.tensor.data_ptr();
      if (op.kind == P2POp::Send)
        check(MPI_Isend(data, count_of(op.tensor), mpi_type(op.tensor.dtype()), op.peer, op.tag, comm_, &reqs[i]),
              "MPI_Isend");
      else
        check(MPI_Irecv(data, count_of(op.tensor), mpi_type(op.tensor.dtype()), op.peer, op.tag, comm_, &reqs[i]),
              "MPI_Irecv");
    }
    check(MPI_Waitall(static_cast<int>(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
  }

  void barrier() override { check(MPI_Barrier(comm_), "MPI_Barrier"); }

  std::shared_ptr<ProcessGroup> split(int color, int key) override {
    MPI_Comm sub;
    check(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
    return std::make_shared<MpiGroup>(sub);
  }

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::shared_ptr<ProcessGroup> mpi_world() {
  runtime();
  static std::shared_ptr<ProcessGroup> world = std::make_shared<MpiGroup>(MPI_COMM_WORLD);
  return world;
}

void abort_all(const std::exception& e) {
  std::fprintf(stderr, "kiln: %s\n", e.what());
  std::fflush(stderr);
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

}  // namespace kiln::dist
