// The NCCL backend for CUDA tensors: one communicator per group, NCCL's
// unique id broadcast over MPI. Collectives run on the group's own
// communication stream, so that DDP's bucket all-reduces overlap the rest of
// backward: each waits for the work queued on the current stream, and its
// Work makes the current stream wait for it (no host synchronization). A
// watchdog thread per group aborts the communicator when NCCL reports an
// asynchronous error (a dead peer), so that ranks raise instead of hanging.

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "kiln/autograd.h"
#include "kiln/cuda.h"
#include "kiln/dist/process_group.h"
#include "kiln/ops.h"

namespace kiln::dist {

namespace {

void check(ncclResult_t r, const char* call) {
  KILN_CHECK(r == ncclSuccess, "[nccl] {} failed: {}", call, ncclGetErrorString(r));
}

void check(cudaError_t e, const char* call) {
  KILN_CHECK(e == cudaSuccess, "[nccl] {} failed: {}", call, cudaGetErrorString(e));
}

// ncclGroupStart ... ncclGroupEnd, the group ended also when a call inside
// throws (NCCL would otherwise keep this thread's group open).
class NcclCallGroup {
 public:
  NcclCallGroup() { check(ncclGroupStart(), "ncclGroupStart"); }
  ~NcclCallGroup() {
    if (!ended_) ncclGroupEnd();
  }
  NcclCallGroup(const NcclCallGroup&) = delete;
  NcclCallGroup& operator=(const NcclCallGroup&) = delete;
  void end() {
    ended_ = true;
    check(ncclGroupEnd(), "ncclGroupEnd");
  }

 private:
  bool ended_ = false;
};

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::Bool: return ncclUint8;
    case DType::Int32: return ncclInt32;
    case DType::Int64: return ncclInt64;
    case DType::BFloat16: return ncclBfloat16;
    case DType::Float16: return ncclFloat16;
    case DType::Float32: return ncclFloat32;
    case DType::Float64: return ncclFloat64;
  }
  return ncclUint8;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Avg: return ncclAvg;
    case ReduceOp::Max: return ncclMax;
  }
  return ncclSum;
}

void check_cuda(const Tensor& t, const char* op) {
  KILN_CHECK(t.defined() && t.device().is_cuda(), "[{}] the NCCL backend moves CUDA tensors; got {}", op,
             t.defined() ? t.device().str() : std::string("an undefined tensor"));
  KILN_CHECK(t.is_contiguous(), "[{}] expects a contiguous tensor", op);
}

// A collective queued on the communication stream: waiting orders the
// current stream after it.
class StreamWork : public Work {
 public:
  explicit StreamWork(cuda::Event done) : done_(std::move(done)) {}
  void wait() override { cuda::current_stream(done_.device()).wait(done_); }

 private:
  cuda::Event done_;
};

class NcclGroup : public ProcessGroup {
 public:
  NcclGroup(ncclComm_t comm, int rank, int size)
      : comm_(comm), rank_(rank), size_(size), stream_(cuda::Stream::from_pool(device(), /*high_priority=*/true)),
        watchdog_([this] { watch(); }) {}
  ~NcclGroup() override {
    {
      std::lock_guard<std::mutex> lock(watch_mu_);
      stopping_ = true;
    }
    watch_cv_.notify_all();
    watchdog_.join();
    if (!aborted_) ncclCommDestroy(comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce(Tensor& t, ReduceOp op) override { all_reduce_async(t, op)->wait(); }

  std::shared_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op) override {
    check_cuda(t, "all_reduce");
    return enqueue({t}, [&](cudaStream_t s) {
      check(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()),
                          nccl_op(op), comm_, s),
            "ncclAllReduce");
    });
  }

  void broadcast(Tensor& t, int root) override {
    check_cuda(t, "broadcast");
    enqueue({t}, [&](cudaStream_t s) {
      check(ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()), root,
                          comm_, s),
            "ncclBroadcast");
    })->wait();
  }

  void all_gather(Tensor& out, const Tensor& in) override {
    check_cuda(out, "all_gather");
    check_cuda(in, "all_gather");
    KILN_CHECK(out.numel() == in.numel() * size_ && out.dtype() == in.dtype(),
               "[all_gather] output of {} elements for {} ranks of {} elements", out.numel(), size_, in.numel());
    enqueue({out, in}, [&](cudaStream_t s) {
      check(ncclAllGather(in.data_ptr(), out.data_ptr(), static_cast<size_t>(in.numel()), nccl_type(in.dtype()), comm_,
                          s),
            "ncclAllGather");
    })->wait();
  }

  void reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op) override {
    check_cuda(out, "reduce_scatter");
    check_cuda(in, "reduce_scatter");
    KILN_CHECK(in.numel() == out.numel() * size_ && out.dtype() == in.dtype(),
               "[reduce_scatter] input of {} elements for {} ranks of {} elements", in.numel(), size_, out.numel());
    enqueue({out, in}, [&](cudaStream_t s) {
      check(ncclReduceScatter(in.data_ptr(), out.data_ptr(), static_cast<size_t>(out.numel()), nccl_type(in.dtype()),
                              nccl_op(op), comm_, s),
            "ncclReduceScatter");
    })->wait();
  }

  void send(const Tensor& t, int dst, int tag) override { send_recv({{P2POp::Send, t, dst, tag}}); }

  void recv(Tensor& t, int src, int tag) override { send_recv({{P2POp::Recv, t, src, tag}}); }

  void send_recv(const std::vector<P2POp>& ops) override {
    std::vector<Tensor> tensors;
    for (const P2POp& op : ops) {
      check_cuda(op.tensor, op.kind == P2POp::Send ? "send" : "recv");
      tensors.push_back(op.tensor);
    }
    enqueue(tensors, [&](cudaStream_t s) {
      NcclCallGroup group;
      for (const P2POp& op : ops) {
        const auto n = static_cast<size_t>(op.tensor.numel());
        if (op.kind == P2POp::Send)
          check(ncclSend(op.tensor.data_ptr(), n, nccl_type(op.tensor.dtype()), op.peer, comm_, s), "ncclSend");
        else
          check(ncclRecv(op.tensor.data_ptr(), n, nccl_type(op.tensor.dtype()), op.peer, comm_, s), "ncclRecv");
      }
      group.end();
    })->wait();
  }

  void barrier() override {
    Tensor one = ones({1}, TensorOptions(kFloat32).device(Device(kCUDA, device())));
    all_reduce(one, ReduceOp::Sum);
    cuda::current_stream(device()).synchronize();
  }

  std::shared_ptr<ProcessGroup> split(int color, int key) override {
    ncclComm_t sub;
    check(ncclCommSplit(comm_, color, key, &sub, nullptr), "ncclCommSplit");
    int rank = 0, size = 1;
    check(ncclCommUserRank(sub, &rank), "ncclCommUserRank");
    check(ncclCommCount(sub, &size), "ncclCommCount");
    return std::make_shared<NcclGroup>(sub, rank, size);
  }

 private:
  // Queues `call` on the communication stream after the current stream's work;
  // the tensors' memory is not reused before the stream has passed them.
  template <typename Call>
  std::shared_ptr<Work> enqueue(const std::vector<Tensor>& tensors, Call call) {
    raise_if_failed();
    const cuda::Stream current = cuda::current_stream(stream_.device());
    stream_.wait(current);
    call(static_cast<cudaStream_t>(stream_.handle()));
    for (const Tensor& t : tensors) cuda::record_stream(t, stream_);
    cuda::Event done;
    done.record(stream_);
    return std::make_shared<StreamWork>(std::move(done));
  }

  // The watchdog: a peer that died or a broken network leaves collectives
  // waiting forever; NCCL reports it asynchronously. Polled every 100 ms, as
  // PyTorch's watchdog does; on an error the communicator is aborted (its
  // kernels return) and every later call of this group raises.
  void watch() {
    std::unique_lock<std::mutex> lock(watch_mu_);
    while (!watch_cv_.wait_for(lock, std::chrono::milliseconds(100), [this] { return stopping_; })) {
      ncclResult_t async = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &async) != ncclSuccess || async == ncclSuccess || async == ncclInProgress)
        continue;
      failure_ = fmt::format("[nccl] rank {} of {}: the communicator failed ({}: a peer died or the network broke) "
                             "and was aborted",
                             rank_, size_, ncclGetErrorString(async));
      ncclCommAbort(comm_);
      aborted_ = true;
      return;
    }
  }

  void raise_if_failed() {
    std::lock_guard<std::mutex> lock(watch_mu_);
    KILN_CHECK(!aborted_, "{}", failure_);
  }

  int device() const {
    int d = 0;
    check(ncclCommCuDevice(comm_, &d), "ncclCommCuDevice");
    return d;
  }
  ncclComm_t comm_;
  int rank_, size_;
  cuda::Stream stream_;
  std::mutex watch_mu_;  // guards stopping_, aborted_, failure_
  std::condition_variable watch_cv_;
  bool stopping_ = false, aborted_ = false;
  std::string failure_;
  std::thread watchdog_;  // last: starts once the rest is made
};

}  // namespace

std::shared_ptr<ProcessGroup> nccl_world(int device) {
  auto mpi = mpi_world();
  check(cudaSetDevice(device), "cudaSetDevice");
  ncclUniqueId id;
  if (mpi->rank() == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  Tensor id_bytes = from_blob(&id, {static_cast<int64_t>(sizeof(id))}, kBool);  // raw bytes
  mpi->broadcast(id_bytes, 0);
  ncclComm_t comm;
  check(ncclCommInitRank(&comm, mpi->size(), id, mpi->rank()), "ncclCommInitRank");
  return std::make_shared<NcclGroup>(comm, mpi->rank(), mpi->size());
}

}  // namespace kiln::dist
