// cuDNN's graph API, owned (cudnn_graph.h).

#include "cudnn_graph.h"

#include <array>

#include "kiln/base/error.h"

namespace kiln::kernels::cuda::cudnn {

void check(cudnnStatus_t status, const char* call) {
  if (status == CUDNN_STATUS_SUCCESS) [[likely]]
    return;
  std::array<char, 1024> last{};
  cudnnGetLastErrorString(last.data(), last.size());
  KILN_FAIL("[cudnn] {} failed: {}{}{}", call, cudnnGetErrorString(status), last[0] ? ": " : "", last.data());
}

Descriptor::Descriptor(cudnnBackendDescriptorType_t type, const char* what) : what_(what) {
  cudnnBackendDescriptor_t d = nullptr;
  check(cudnnBackendCreateDescriptor(type, &d), what);
  desc_.reset(d, [](cudnnBackendDescriptor_t p) { cudnnBackendDestroyDescriptor(p); });
}

Descriptor& Descriptor::set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
                            const void* values) {
  const cudnnStatus_t status = cudnnBackendSetAttribute(get(), name, type, count, values);
  if (status != CUDNN_STATUS_SUCCESS) {
    const std::string call = fmt::format("setting attribute {} of {}", static_cast<int>(name), what_);
    check(status, call.c_str());
  }
  return *this;
}

Descriptor& Descriptor::set(cudnnBackendAttributeName_t name, const Descriptor& d) {
  cudnnBackendDescriptor_t raw = d.get();
  return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw);
}

Descriptor& Descriptor::set_list(cudnnBackendAttributeName_t name, const std::vector<Descriptor>& ds) {
  std::vector<cudnnBackendDescriptor_t> raw;
  for (const Descriptor& d : ds) raw.push_back(d.get());
  return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(raw.size()), raw.data());
}

Descriptor& Descriptor::set_int(cudnnBackendAttributeName_t name, int64_t value) {
  return set(name, CUDNN_TYPE_INT64, 1, &value);
}

Descriptor& Descriptor::set_ints(cudnnBackendAttributeName_t name, const std::vector<int64_t>& values) {
  return set(name, CUDNN_TYPE_INT64, static_cast<int64_t>(values.size()), values.data());
}

Descriptor& Descriptor::finalize() {
  const std::string call = fmt::format("finalizing {}", what_);
  check(cudnnBackendFinalize(get()), call.c_str());
  return *this;
}

std::vector<int64_t> packed_strides(const std::vector<int64_t>& dims) {
  std::vector<int64_t> strides(dims.size(), 1);
  for (size_t i = dims.size() - 1; i > 0; --i) strides[i - 1] = strides[i] * dims[i];
  return strides;
}

namespace {

Tensor make_tensor(int64_t uid, std::vector<int64_t> dims, std::vector<int64_t> strides, cudnnDataType_t dtype,
                   bool is_virtual, bool by_value, const Descriptor& ragged = {}) {
  Tensor t{Descriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, "a tensor descriptor"), uid, std::move(dims),
           std::move(strides), dtype, ragged};
  const int64_t alignment = 16;
  const bool virt = is_virtual, value = by_value;
  t.desc.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dtype)
      .set_ints(CUDNN_ATTR_TENSOR_DIMENSIONS, t.dims)
      .set_ints(CUDNN_ATTR_TENSOR_STRIDES, t.strides)
      .set_int(CUDNN_ATTR_TENSOR_UNIQUE_ID, uid)
      .set_int(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, alignment)
      .set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt)
      .set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &value);
  if (ragged) t.desc.set(CUDNN_ATTR_TENSOR_RAGGED_OFFSET_DESC, ragged);
  t.desc.finalize();
  return t;
}

}  // namespace

Tensor Graph::input(int64_t uid, std::vector<int64_t> dims, std::vector<int64_t> strides, cudnnDataType_t dtype,
                    const Tensor* ragged) {
  bound_.insert(uid);
  return make_tensor(uid, std::move(dims), std::move(strides), dtype, false, false,
                     ragged ? ragged->desc : Descriptor());
}

Tensor Graph::scalar(int64_t uid, cudnnDataType_t dtype) {
  bound_.insert(uid);
  return make_tensor(uid, {1, 1, 1, 1}, {1, 1, 1, 1}, dtype, false, true);
}

Tensor Graph::intermediate(std::vector<int64_t> dims, std::vector<int64_t> strides, cudnnDataType_t dtype,
                           const Descriptor& ragged) {
  return make_tensor(next_uid_++, std::move(dims), std::move(strides), dtype, true, false, ragged);
}

Tensor Graph::pointwise(cudnnPointwiseMode_t mode, const Tensor& x, cudnnDataType_t out, cudnnDataType_t math,
                        int64_t axis) {
  Tensor y = intermediate(x.dims, packed_strides(x.dims), out);
  pointwise_into(mode, x, nullptr, nullptr, y, math, axis);
  return y;
}

Tensor Graph::pointwise(cudnnPointwiseMode_t mode, const Tensor& x, const Tensor& b, cudnnDataType_t out,
                        cudnnDataType_t math, int64_t axis) {
  Tensor y = intermediate(x.dims, packed_strides(x.dims), out);
  pointwise_into(mode, x, &b, nullptr, y, math, axis);
  return y;
}

void Graph::pointwise_into(cudnnPointwiseMode_t mode, const Tensor& x, const Tensor* b, const Tensor* t,
                           const Tensor& y, cudnnDataType_t math, int64_t axis) {
  Descriptor pw(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, "a pointwise descriptor");
  pw.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode)
      .set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math);
  if (axis >= 0) pw.set_int(CUDNN_ATTR_POINTWISE_AXIS, axis);
  pw.finalize();
  Descriptor op(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, "a pointwise operation");
  op.set(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw).set(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x.desc);
  if (b) op.set(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b->desc);
  if (t) op.set(CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t->desc);
  op.set(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y.desc).finalize();
  add(std::move(op));
}

void Graph::matmul_into(const Tensor& a, const Tensor& b, const Tensor& c, MatmulExtents extents) {
  const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  Descriptor mm(CUDNN_BACKEND_MATMUL_DESCRIPTOR, "a matmul descriptor");
  mm.set(CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute).finalize();
  Descriptor op(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, "a matmul operation");
  op.set(CUDNN_ATTR_OPERATION_MATMUL_ADESC, a.desc)
      .set(CUDNN_ATTR_OPERATION_MATMUL_BDESC, b.desc)
      .set(CUDNN_ATTR_OPERATION_MATMUL_CDESC, c.desc)
      .set(CUDNN_ATTR_OPERATION_MATMUL_DESC, mm);
  if (extents.m) op.set(CUDNN_ATTR_OPERATION_MATMUL_GEMM_M_OVERRIDE_DESC, extents.m->desc);
  if (extents.n) op.set(CUDNN_ATTR_OPERATION_MATMUL_GEMM_N_OVERRIDE_DESC, extents.n->desc);
  if (extents.k) op.set(CUDNN_ATTR_OPERATION_MATMUL_GEMM_K_OVERRIDE_DESC, extents.k->desc);
  op.finalize();
  add(std::move(op));
}

void Graph::reduce_into(cudnnReduceTensorOp_t reduce, const Tensor& x, const Tensor& y) {
  const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  Descriptor red(CUDNN_BACKEND_REDUCTION_DESCRIPTOR, "a reduction descriptor");
  red.set(CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &reduce)
      .set(CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute)
      .finalize();
  Descriptor op(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, "a reduction operation");
  op.set(CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x.desc)
      .set(CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y.desc)
      .set(CUDNN_ATTR_OPERATION_REDUCTION_DESC, red)
      .finalize();
  add(std::move(op));
}

void Graph::reshape_into(const Tensor& x, const Tensor& y) {
  Descriptor op(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, "a reshape operation");
  op.set(CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x.desc).set(CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y.desc).finalize();
  add(std::move(op));
}

Descriptor Graph::finalize() const {
  Descriptor graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "the operation graph");
  graph.set_list(CUDNN_ATTR_OPERATIONGRAPH_OPS, ops_).finalize();
  return graph;
}

Descriptor device_properties(cudnnHandle_t handle) {
  Descriptor d(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR, "the device properties");
  d.set(CUDNN_ATTR_DEVICEPROP_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle).finalize();
  return d;
}

Descriptor device_properties(const std::string& json) {
  Descriptor d(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR, "the device properties");
  d.set(CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, static_cast<int64_t>(json.size()), json.data())
      .finalize();
  return d;
}

namespace {

// The engine configurations cuDNN's heuristics suggest for graph in `mode`.
std::vector<Descriptor> engine_configs(const Descriptor& graph, const Descriptor& device, cudnnBackendHeurMode_t mode) {
  Descriptor heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "the engine heuristics");
  heur.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph)
      .set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode)
      .set(CUDNN_ATTR_ENGINEHEUR_DEVICEPROP, device)
      .finalize();
  int64_t count = 0;
  check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                 nullptr),
        "counting the engine heuristics' results");
  std::vector<Descriptor> configs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < count; ++i) {
    configs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "an engine configuration");
    raw.push_back(configs.back().get());
  }
  if (count > 0)
    check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                   &count, raw.data()),
          "reading the engine heuristics' results");
  configs.resize(static_cast<size_t>(count));
  return configs;
}

}  // namespace

Plan::Plan(const Descriptor& graph, const Descriptor& device, const char* what) : what_(what) {
  std::string tried;
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    for (const Descriptor& config : engine_configs(graph, device, mode)) {
      Descriptor plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, "an execution plan");
      plan.set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, config).set(CUDNN_ATTR_EXECUTION_PLAN_DEVICEPROP, device);
      const cudnnStatus_t status = cudnnBackendFinalize(plan.get());
      // The engine took the graph and compiled its kernels, but the driver
      // cannot load them: no other engine will fare better.
      if (status == CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER) check(status, what);
      if (status != CUDNN_STATUS_SUCCESS) {  // this engine declines the graph: try the next
        std::array<char, 512> last{};
        cudnnGetLastErrorString(last.data(), last.size());
        tried += fmt::format("\n  {}: {}", cudnnGetErrorString(status), last.data());
        continue;
      }
      plan_ = plan;
      check(cudnnBackendGetAttribute(plan_.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1,
                                     nullptr, &workspace_),
            "reading the plan's workspace size");
      return;
    }
  }
  KILN_FAIL("[cudnn] no cuDNN engine runs {}{}", what, tried.empty() ? " (the heuristics offered none)" : tried);
}

void Plan::execute(cudnnHandle_t handle, const std::vector<int64_t>& uids, const std::vector<void*>& data,
                   void* workspace) const {
  Descriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, "the variant pack");
  pack.set_ints(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, uids)
      .set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, static_cast<int64_t>(data.size()), data.data())
      .set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace)
      .finalize();
  const std::string call = fmt::format("executing {}", what_);
  check(cudnnBackendExecute(handle, plan_.get(), pack.get()), call.c_str());
}

}  // namespace kiln::kernels::cuda::cudnn
