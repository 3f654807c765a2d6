#pragma once
// ProcessGroup: the collectives that data, tensor and pipeline parallelism are
// written against. Backends: MPI for CPU tensors (mpirun starts the ranks),
// NCCL for CUDA tensors, and a single-process group that needs neither. Tensors are
// contiguous and every rank passes the same shapes and dtypes.

#include <memory>
#include <vector>

#include "kiln/tensor.h"

namespace kiln::dist {

// How a collective combines the ranks' values.
enum class ReduceOp { Sum, Avg, Max };

// One point-to-point transfer of a batch (ProcessGroup::send_recv).
struct P2POp {
  // Which way the data goes.
  enum Kind { Send, Recv };
  Kind kind;      // Send or Recv
  Tensor tensor;  // the data to send, or the buffer to receive into
  int peer;       // the other rank, in this group
  int tag = 0;    // matches a send to its receive
};

// An operation in flight; wait() returns when its result is in place.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;  // blocks until the result is in place
};

// Collectives over a group of ranks (MPI on the CPU, NCCL on GPUs).
class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const = 0;  // this process's rank in the group
  virtual int size() const = 0;  // the ranks in the group

  // t = op over all ranks' t (in place).
  virtual void all_reduce(Tensor& t, ReduceOp op = ReduceOp::Sum) = 0;
  // Starts an all_reduce; t holds the result after wait().
  virtual std::shared_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op = ReduceOp::Sum) = 0;
  // t = root's t.
  virtual void broadcast(Tensor& t, int root) = 0;
  // out (size * n elements) = every rank's in (n elements), in rank order.
  virtual void all_gather(Tensor& out, const Tensor& in) = 0;
  // out (n elements) = op over ranks of chunk `rank` of in (size * n elements).
  virtual void reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op = ReduceOp::Sum) = 0;
  // Blocking point-to-point transfer of t, matched by tag.
  virtual void send(const Tensor& t, int dst, int tag = 0) = 0;
  virtual void recv(Tensor& t, int src, int tag = 0) = 0;
  // Posts every transfer of ops at once and returns when all are done (MPI:
  // Isend/Irecv and Waitall; NCCL: one group call), so that two ranks sending
  // to each other at the same time never deadlock (pipeline schedules).
  virtual void send_recv(const std::vector<P2POp>& ops) = 0;
  virtual void barrier() = 0;  // returns once every rank has called it
  // Rows exchanged along dim 0 (the other dims alike on every rank): in holds
  // in_splits[j] rows for rank j, one block after another, and out receives
  // out_splits[i] rows from each rank i, in rank order. Every rank's
  // in_splits[j] must be rank j's out_splits[i]. Empty splits: equal ones (in
  // and out evenly divided among the ranks). Built on send_recv: MPI's
  // Isend/Irecv, NCCL's grouped sends and receives (its all-to-all).
  void all_to_all(Tensor& out, const Tensor& in, std::vector<int64_t> out_splits = {},
                  std::vector<int64_t> in_splits = {});
  // A group of the ranks that pass the same color, ordered by key.
  virtual std::shared_ptr<ProcessGroup> split(int color, int key) = 0;
};

// The group of one process: collectives are copies (or nothing).
std::shared_ptr<ProcessGroup> single_process_group();

// Every rank started by mpirun (MPI is initialized on first use and finalized
// at exit); a single process without mpirun, or a build without MPI, gets a
// world of one.
std::shared_ptr<ProcessGroup> mpi_world();

// The NCCL group of every rank started by mpirun, each on CUDA device
// `device` (NCCL's unique id travels over MPI). For CUDA tensors; collectives
// run on the current stream. Raises when kiln was built without CUDA.
std::shared_ptr<ProcessGroup> nccl_world(int device);

// Ends every rank with the error (MPI_Abort), so that one failing rank never
// leaves the others waiting in a collective. Without MPI, exits the process.
[[noreturn]] void abort_all(const std::exception& e);

}  // namespace kiln::dist
