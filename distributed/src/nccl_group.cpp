// The NCCL backend for CUDA tensors: one communicator per group, NCCL's
// unique id broadcast over MPI, collectives enqueued on kiln's current stream
// (so later kernels see their results in stream order).

#include <cuda_runtime.h>
#include <nccl.h>

#include "kiln/autograd.h"
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

cudaStream_t stream() { return cudaStreamPerThread; }

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

// Work already ordered on the stream: waiting means the stream reached it.
class StreamWork : public Work {
 public:
  void wait() override { check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize"); }
};

class NcclGroup : public ProcessGroup {
 public:
  NcclGroup(ncclComm_t comm, int rank, int size) : comm_(comm), rank_(rank), size_(size) {}
  ~NcclGroup() override { ncclCommDestroy(comm_); }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce(Tensor& t, ReduceOp op) override { all_reduce_async(t, op); }

  std::shared_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op) override {
    check_cuda(t, "all_reduce");
    check(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()), nccl_op(op),
                        comm_, stream()),
          "ncclAllReduce");
    return std::make_shared<StreamWork>();
  }

  void broadcast(Tensor& t, int root) override {
    check_cuda(t, "broadcast");
    check(ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()), root, comm_,
                        stream()),
          "ncclBroadcast");
  }

  void all_gather(Tensor& out, const Tensor& in) override {
    check_cuda(out, "all_gather");
    check_cuda(in, "all_gather");
    KILN_CHECK(out.numel() == in.numel() * size_ && out.dtype() == in.dtype(),
               "[all_gather] output of {} elements for {} ranks of {} elements", out.numel(), size_, in.numel());
    check(ncclAllGather(in.data_ptr(), out.data_ptr(), static_cast<size_t>(in.numel()), nccl_type(in.dtype()), comm_,
                        stream()),
          "ncclAllGather");
  }

  void reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op) override {
    check_cuda(out, "reduce_scatter");
    check_cuda(in, "reduce_scatter");
    KILN_CHECK(in.numel() == out.numel() * size_ && out.dtype() == in.dtype(),
               "[reduce_scatter] input of {} elements for {} ranks of {} elements", in.numel(), size_, out.numel());
    check(ncclReduceScatter(in.data_ptr(), out.data_ptr(), static_cast<size_t>(out.numel()), nccl_type(in.dtype()),
                            nccl_op(op), comm_, stream()),
          "ncclReduceScatter");
  }

  void send(const Tensor& t, int dst, int) override {
    check_cuda(t, "send");
    check(ncclSend(t.data_ptr(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()), dst, comm_, stream()),
          "ncclSend");
  }

  void recv(Tensor& t, int src, int) override {
    check_cuda(t, "recv");
    check(ncclRecv(t.data_ptr(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()), src, comm_, stream()),
          "ncclRecv");
  }

  void send_recv(const std::vector<P2POp>& ops) override {
    check(ncclGroupStart(), "ncclGroupStart");
    for (const P2POp& op : ops) {
      check_cuda(op.tensor, op.kind == P2POp::Send ? "send" : "recv");
      const auto n = static_cast<size_t>(op.tensor.numel());
      if (op.kind == P2POp::Send)
        check(ncclSend(op.tensor.data_ptr(), n, nccl_type(op.tensor.dtype()), op.peer, comm_, stream()), "ncclSend");
      else
        check(ncclRecv(op.tensor.data_ptr(), n, nccl_type(op.tensor.dtype()), op.peer, comm_, stream()), "ncclRecv");
    }
    check(ncclGroupEnd(), "ncclGroupEnd");
  }

  void barrier() override {
    Tensor one = ones({1}, TensorOptions(kFloat32).device(Device(kCUDA, device())));
    all_reduce(one, ReduceOp::Sum);
    check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize");
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
  int device() const {
    int d = 0;
    check(ncclCommCuDevice(comm_, &d), "ncclCommCuDevice");
    return d;
  }
  ncclComm_t comm_;
  int rank_, size_;
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
