#pragma once
// cuDNN's graph (backend) API, owned: descriptors that free themselves,
// tensors that remember their shape, the operations kiln's graphs are made of
// (pointwise, matmul, reduction, reshape), and execution plans. A plan is built
// for device properties: those of a live device, or (for checks on machines
// without one) properties written as JSON, so that cuDNN's heuristics and plan
// compilation run anywhere. Every failure raises a kiln::Error naming the
// call, cuDNN's status and its last error message.

#include <cudnn.h>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace kiln::kernels::cuda::cudnn {

// Raises unless status is CUDNN_STATUS_SUCCESS.
void check(cudnnStatus_t status, const char* call);

// An owned backend descriptor; copies share it.
class Descriptor {
 public:
  Descriptor() = default;
  Descriptor(cudnnBackendDescriptorType_t type, const char* what);
  cudnnBackendDescriptor_t get() const { return desc_.get(); }
  explicit operator bool() const { return desc_ != nullptr; }

  // `count` values of `type` at `values`.
  Descriptor& set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
                  const void* values);
  Descriptor& set(cudnnBackendAttributeName_t name, const Descriptor& d);
  Descriptor& set_list(cudnnBackendAttributeName_t name, const std::vector<Descriptor>& ds);
  Descriptor& set_int(cudnnBackendAttributeName_t name, int64_t value);
  Descriptor& set_ints(cudnnBackendAttributeName_t name, const std::vector<int64_t>& values);
  Descriptor& finalize();

 private:
  std::shared_ptr<std::remove_pointer_t<cudnnBackendDescriptor_t>> desc_;
  const char* what_ = "";
};

// A tensor of a graph: its descriptor and what later operations need to know of it.
struct Tensor {
  Descriptor desc;
  int64_t uid = 0;
  std::vector<int64_t> dims, strides;
  cudnnDataType_t dtype = CUDNN_DATA_FLOAT;
  Descriptor ragged;  // the tensor of where each batch entry starts, if set (Graph::input)
};

// Row-major strides of dims.
std::vector<int64_t> packed_strides(const std::vector<int64_t>& dims);

// Per-batch-entry extents of a matmul, (B, 1, 1, 1) int32 tensors, where the
// dims are only bounds (packed sequences of different lengths); null: the dim.
struct MatmulExtents {
  const Tensor *m = nullptr, *n = nullptr, *k = nullptr;
};

// An operation graph under construction. Tensors the caller binds at
// execution carry the caller's uids; intermediate (virtual) tensors get their
// own, from 1 << 20 up.
class Graph {
 public:
  // A tensor bound at execution. `ragged`, when given, holds where each batch
  // entry starts (in elements), replacing the batch stride: packed sequences.
  Tensor input(int64_t uid, std::vector<int64_t> dims, std::vector<int64_t> strides, cudnnDataType_t dtype,
               const Tensor* ragged = nullptr);
  // A scalar passed by value at execution (dims 1 x 1 x 1 x 1, host memory).
  Tensor scalar(int64_t uid, cudnnDataType_t dtype = CUDNN_DATA_FLOAT);
  Tensor intermediate(std::vector<int64_t> dims, std::vector<int64_t> strides,
                      cudnnDataType_t dtype = CUDNN_DATA_FLOAT, const Descriptor& ragged = {});

  // y = mode(x[, b[, t]]) with compute type `math`; the returned y is an
  // intermediate shaped like x unless given.
  Tensor pointwise(cudnnPointwiseMode_t mode, const Tensor& x, cudnnDataType_t out = CUDNN_DATA_FLOAT,
                   cudnnDataType_t math = CUDNN_DATA_FLOAT, int64_t axis = -1);
  Tensor pointwise(cudnnPointwiseMode_t mode, const Tensor& x, const Tensor& b,
                   cudnnDataType_t out = CUDNN_DATA_FLOAT, cudnnDataType_t math = CUDNN_DATA_FLOAT,
                   int64_t axis = -1);
  void pointwise_into(cudnnPointwiseMode_t mode, const Tensor& x, const Tensor* b, const Tensor* t, const Tensor& y,
                      cudnnDataType_t math = CUDNN_DATA_FLOAT, int64_t axis = -1);
  // c = a b over the last two dims, batched over the others (b's head dim may
  // divide a's: grouped heads), accumulated in float.
  void matmul_into(const Tensor& a, const Tensor& b, const Tensor& c, MatmulExtents extents = {});
  // y = op over the dims where y has size 1 and x does not.
  void reduce_into(cudnnReduceTensorOp_t op, const Tensor& x, const Tensor& y);
  // The same elements under other dims and strides.
  void reshape_into(const Tensor& x, const Tensor& y);

  // Finalizes the graph of every operation added.
  Descriptor finalize() const;
  // The uids of the tensors bound at execution (inputs and scalars), ascending.
  std::vector<int64_t> bound_uids() const { return {bound_.begin(), bound_.end()}; }

 private:
  void add(Descriptor op) { ops_.push_back(std::move(op)); }
  std::vector<Descriptor> ops_;
  std::set<int64_t> bound_;
  int64_t next_uid_ = int64_t(1) << 20;
};

// Device properties: of a live device, or parsed from JSON (see
// CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION) for a device that is not here.
Descriptor device_properties(cudnnHandle_t handle);
Descriptor device_properties(const std::string& json);

// An execution plan: the first of cuDNN's heuristic choices (mode A, then the
// fallback list) that finalizes for `device`. An engine that accepts the graph
// but whose compiled kernels the driver cannot load ends the search.
class Plan {
 public:
  Plan(const Descriptor& graph, const Descriptor& device, const char* what);
  int64_t workspace_bytes() const { return workspace_; }
  // Runs with data[i] bound to uids[i] (by-value scalars point to host memory).
  void execute(cudnnHandle_t handle, const std::vector<int64_t>& uids, const std::vector<void*>& data,
               void* workspace) const;

 private:
  Descriptor plan_;
  int64_t workspace_ = 0;
  const char* what_;
};

}  // namespace kiln::kernels::cuda::cudnn
