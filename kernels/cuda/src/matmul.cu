// Batched matmul: cuBLASLt for float32 (float32 compute, or TF32 tensor cores
// when allowed), float64, bfloat16 and float16 (float32 accumulation), with
// the bias and GELU in cuBLASLt's epilogue; a plain kernel for integers.
// Row-major C = A B is computed as column-major C^T = B^T A^T, so a row-major
// operand passes untransposed and a column-major one transposed; an operand
// with neither layout is copied first. One handle per device; cuBLASLt's
// choice of algorithm is cached per shape, layout, epilogue and alignment, and
// the workspace it needs comes from the pool on the call's stream. The
// experts' grouped GEMM may go to cuBLAS's grouped launch.

#include <cublasLt.h>
#include <cublas_v2.h>

#include <array>
#include <climits>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "common.cuh"
#include "kiln/base/gemm_layout.h"
#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

namespace {

// The most workspace an algorithm may ask for; what the chosen one needs comes
// from the pool on the call's stream, so two streams never share scratch.
constexpr size_t kMaxWorkspaceBytes = size_t{32} << 20;

void check(cublasStatus_t s, const char* call) {
  if (s != CUBLAS_STATUS_SUCCESS) fail("matmul", (std::string(call) + ": " + cublasLtGetStatusString(s)).c_str());
}

// One cuBLASLt handle per device, made on first use, destroyed at exit.
class LtHandles {
 public:
  cublasLtHandle_t get(int device) {
    std::call_once(once_[device], [&] { check(cublasLtCreate(&handles_[device]), "cublasLtCreate"); });
    return handles_[device];
  }
  ~LtHandles() {
    for (cublasLtHandle_t h : handles_)
      if (h) cublasLtDestroy(h);
  }

 private:
  std::array<std::once_flag, kMaxDevices> once_;
  std::array<cublasLtHandle_t, kMaxDevices> handles_{};
};

cublasLtHandle_t lt(int device) {
  static LtHandles handles;
  return handles.get(device);
}

// What decides cuBLASLt's choice of algorithm: a plan is reused for every
// call that agrees on all of it.
struct PlanKey {
  int device;
  cudaDataType_t type;
  cublasComputeType_t compute;
  cublasLtEpilogue_t epilogue;
  cublasOperation_t ta, tb;
  int64_t batch, m, n, k, lda, ldb, ldc, stride_a, stride_b, stride_c, aux_ld;
  uint32_t align_a, align_b, align_c, align_bias;
  bool operator==(const PlanKey&) const = default;
};

static_assert(std::has_unique_object_representations_v<PlanKey>, "PlanKey is hashed by its bytes: no padding");

struct PlanKeyHash {
  size_t operator()(const PlanKey& key) const {
    const auto* words = reinterpret_cast<const unsigned char*>(&key);
    size_t h = 14695981039346656037ull;  // FNV-1a over the key's bytes
    for (size_t i = 0; i < sizeof(key); ++i) h = (h ^ words[i]) * 1099511628211ull;
    return h;
  }
};

// The algorithm cuBLASLt's heuristic chose for a key, and its workspace.
struct Plan {
  cublasLtMatmulAlgo_t algo;
  size_t workspace;
};

class PlanCache {
 public:
  bool find(const PlanKey& key, Plan& plan) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = plans_.find(key);
    if (it == plans_.end()) return false;
    plan = it->second;
    return true;
  }
  void insert(const PlanKey& key, const Plan& plan) {
    std::lock_guard<std::mutex> lock(mu_);
    plans_.emplace(key, plan);
  }

 private:
  std::mutex mu_;
  std::unordered_map<PlanKey, Plan, PlanKeyHash> plans_;
};

PlanCache& plans() {
  static PlanCache cache;
  return cache;
}

// RAII for the descriptor objects of one call.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Descriptors() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

cudaDataType_t data_type(DType t) {
  switch (t) {
    case DType::Float32: return CUDA_R_32F;
    case DType::Float64: return CUDA_R_64F;
    case DType::BFloat16: return CUDA_R_16BF;
    case DType::Float16: return CUDA_R_16F;
    default: detail::unsupported_dtype("matmul", t);
  }
}

// A column-major (rows, cols) layout with leading dimension ld and a batch stride.
cublasLtMatrixLayout_t layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                              int64_t batch_stride) {
  cublasLtMatrixLayout_t l;
  check(cublasLtMatrixLayoutCreate(&l, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld),
        "cublasLtMatrixLayoutCreate");
  int32_t count = static_cast<int32_t>(batch);
  check(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)), "batch count");
  check(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &batch_stride,
                                         sizeof(batch_stride)),
        "batch stride");
  return l;
}

// An operand as (pointer, layout): in place when its strides allow, else a
// contiguous copy that it holds.
struct Operand {
  const void* ptr;
  GemmLayout layout;
  int64_t batch_stride;
  Scratch copy;
};

Operand prepare(const Buffer& x, int device) {
  const int64_t rows = x.sizes[1], cols = x.sizes[2];
  GemmLayout g = gemm_layout(rows, cols, x.strides[1], x.strides[2]);
  if (g.ok) return {x.data, g, x.strides[0], Scratch()};
  Scratch scratch(static_cast<size_t>(x.numel()) * element_size(x.dtype), device);
  Buffer dense = x;
  dense.data = scratch.get();
  dense.strides[0] = rows * cols;
  dense.strides[1] = cols;
  dense.strides[2] = 1;
  copy(dense, x);
  return {dense.data, {true, false, cols < 1 ? 1 : cols}, rows * cols, std::move(scratch)};
}

// Which parts of the epilogue cuBLASLt applies.
struct Epilogue {
  bool bias = false, gelu = false;
};

// out = op(A) op(B) through cuBLASLt with the epilogue `e`; false when it
// finds no algorithm for this combination.
bool lt_matmul(const Buffer& out, const Operand& A, const Operand& B, int64_t batch, int64_t m, int64_t n, int64_t k,
               const GemmOptions& options, const Epilogue& e) {
  const int device = out.device.index;
  const cublasLtHandle_t handle = lt(device);
  const cudaDataType_t type = data_type(out.dtype);
  const bool f64 = out.dtype == DType::Float64;
  const int64_t elem = static_cast<int64_t>(element_size(out.dtype));
  Descriptors desc;
  const cublasComputeType_t compute = f64                                                 ? CUBLAS_COMPUTE_64F
                                      : out.dtype == DType::Float32 && options.allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                                                          : CUBLAS_COMPUTE_32F;
  check(cublasLtMatmulDescCreate(&desc.op, compute, f64 ? CUDA_R_64F : CUDA_R_32F), "cublasLtMatmulDescCreate");
  const Buffer& pre = options.pre_activation;
  const cublasLtEpilogue_t epilogue = !e.gelu ? (e.bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT)
                                      : pre.data ? (e.bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX)
                                                 : (e.bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU);
  auto set = [&](cublasLtMatmulDescAttributes_t attr, const void* value, size_t size, const char* what) {
    check(cublasLtMatmulDescSetAttribute(desc.op, attr, value, size), what);
  };
  set(CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue), "epilogue");
  if (e.bias) {
    // Column-major C^T has the n output features as rows: the bias is per row.
    const void* bias = options.bias.data;
    set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias), "bias pointer");
    set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &type, sizeof(type), "bias type");
  }
  int64_t aux_ld = 0;
  if (e.gelu && pre.data) {
    // The pre-activation is laid out like C^T: (n, m) column-major per batch.
    const void* aux = pre.data;
    const int64_t stride = pre.strides[0];
    aux_ld = pre.strides[1];
    set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux), "aux pointer");
    set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof(aux_ld), "aux ld");
    if (batch > 1) set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, &stride, sizeof(stride), "aux batch stride");
  }
  // Column-major C^T (n, m) = op(B) (n, k) * op(A) (k, m).
  cublasOperation_t tb = B.layout.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t ta = A.layout.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  set(CUBLASLT_MATMUL_DESC_TRANSA, &tb, sizeof(tb), "transa");
  set(CUBLASLT_MATMUL_DESC_TRANSB, &ta, sizeof(ta), "transb");
  // Stored shapes: row-major (k, n) B is column-major (n, k); a transposed one is stored (k, n).
  desc.a = B.layout.transposed ? layout(type, k, n, B.layout.ld, batch, B.batch_stride)
                               : layout(type, n, k, B.layout.ld, batch, B.batch_stride);
  desc.b = A.layout.transposed ? layout(type, m, k, A.layout.ld, batch, A.batch_stride)
                               : layout(type, k, m, A.layout.ld, batch, A.batch_stride);
  desc.c = layout(type, n, m, out.strides[1], batch, out.strides[0]);
  // The alignments the operands really have (cuBLASLt assumes 256 bytes).
  auto address = [](const void* p) { return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p)); };
  const PlanKey key{device, type, compute, epilogue, tb, ta, batch, m, n, k, B.layout.ld, A.layout.ld, out.strides[1],
                    B.batch_stride, A.batch_stride, out.strides[0], aux_ld,
                    gemm_alignment(address(B.ptr), B.layout.ld, B.batch_stride, batch, elem),
                    gemm_alignment(address(A.ptr), A.layout.ld, A.batch_stride, batch, elem),
                    gemm_alignment(address(out.data), out.strides[1], out.strides[0], batch, elem),
                    e.bias ? gemm_alignment(address(options.bias.data), 1, 0, 1, elem) : 0};
  Plan plan{};
  if (!plans().find(key, plan)) {
    check(cublasLtMatmulPreferenceCreate(&desc.pref), "cublasLtMatmulPreferenceCreate");
    auto prefer = [&](cublasLtMatmulPreferenceAttributes_t attr, const void* value, size_t size, const char* what) {
      check(cublasLtMatmulPreferenceSetAttribute(desc.pref, attr, value, size), what);
    };
    const size_t max_workspace = kMaxWorkspaceBytes;
    prefer(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_workspace, sizeof(max_workspace), "max workspace");
    prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &key.align_a, sizeof(uint32_t), "alignment of A");
    prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &key.align_b, sizeof(uint32_t), "alignment of B");
    prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key.align_c, sizeof(uint32_t), "alignment of C");
    prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key.align_c, sizeof(uint32_t), "alignment of D");
    cublasLtMatmulHeuristicResult_t heuristic{};
    int found = 0;
    const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(handle, desc.op, desc.a, desc.b, desc.c, desc.c,
                                                                 desc.pref, 1, &heuristic, &found);
    if (status == CUBLAS_STATUS_NOT_SUPPORTED || (status == CUBLAS_STATUS_SUCCESS && found == 0)) return false;
    check(status, "cublasLtMatmulAlgoGetHeuristic");
    plan = {heuristic.algo, heuristic.workspaceSize};
    plans().insert(key, plan);
  }
  const double alpha64 = 1.0, beta64 = 0.0;
  const float alpha32 = 1.0f, beta32 = 0.0f;
  const void* alpha = f64 ? static_cast<const void*>(&alpha64) : &alpha32;
  const void* beta = f64 ? static_cast<const void*>(&beta64) : &beta32;
  Scratch workspace(plan.workspace, device);
  check(cublasLtMatmul(handle, desc.op, alpha, B.ptr, desc.a, A.ptr, desc.b, beta, out.data, desc.c, out.data,
                       desc.c, &plan.algo, workspace.get(), plan.workspace, current_stream()),
        "cublasLtMatmul");
  return true;
}

// This thread's cuBLAS handle on a device, for the grouped launch (a handle's
// stream and workspace are its own: threads must not share one).
cublasHandle_t blas(int device) {
  struct Handles {
    std::array<cublasHandle_t, kMaxDevices> of{};
    ~Handles() {
      for (cublasHandle_t h : of)
        if (h) cublasDestroy(h);
    }
  };
  thread_local Handles handles;
  cublasHandle_t& h = handles.of[device];
  if (!h) check(cublasCreate(&h), "cublasCreate");
  return h;
}

// The products as one cublasGemmGroupedBatchedEx, each a group of one; false
// when the dtype, a layout, an empty product or a size past cuBLAS's int keeps
// them apart.
bool grouped_launch(const std::vector<Buffer>& out, const std::vector<Buffer>& a, const std::vector<Buffer>& b,
                    const GemmOptions& options) {
  const DType t = out[0].dtype;
  if (t != DType::Float32 && t != DType::BFloat16 && t != DType::Float16) return false;
  const size_t count = out.size();
  std::vector<cublasOperation_t> ta(count), tb(count);
  std::vector<int> m(count), n(count), k(count), lda(count), ldb(count), ldc(count), group_sizes(count, 1);
  const std::vector<float> alpha(count, 1.0f), beta(count, 0.0f);
  // Device pointers in cuBLAS's order: its A's (kiln's b), B's (kiln's a), C's.
  std::vector<const void*> pointers(3 * count);
  auto fits = [](int64_t v) { return v <= INT_MAX; };
  for (size_t i = 0; i < count; ++i) {
    const Buffer &o = out[i], &x = a[i], &w = b[i];
    const int64_t rows = o.sizes[1], cols = o.sizes[2], inner = x.sizes[2];
    const GemmLayout lx = gemm_layout(rows, inner, x.strides[1], x.strides[2]);
    const GemmLayout lw = gemm_layout(inner, cols, w.strides[1], w.strides[2]);
    if (rows == 0 || cols == 0 || inner == 0 || !lx.ok || !lw.ok || (cols > 1 && o.strides[2] != 1) || !fits(rows) || !fits(cols) || !fits(inner) ||
        !fits(lx.ld) || !fits(lw.ld) || !fits(o.strides[1]))
      return false;
    // Column-major C^T (cols, rows) = op(w) (cols, inner) * op(x) (inner, rows), as in lt_matmul.
    ta[i] = lw.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
    tb[i] = lx.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
    m[i] = static_cast<int>(cols);
    n[i] = static_cast<int>(rows);
    k[i] = static_cast<int>(inner);
    lda[i] = static_cast<int>(lw.ld);
    ldb[i] = static_cast<int>(lx.ld);
    ldc[i] = static_cast<int>(rows == 1 ? (cols < 1 ? 1 : cols) : o.strides[1]);
    pointers[i] = w.data;
    pointers[count + i] = x.data;
    pointers[2 * count + i] = o.data;
  }
  const int device = out[0].device.index;
  const size_t bytes = pointers.size() * sizeof(void*);
  Scratch table(bytes, device);
  // From pageable memory: the call returns once the table is staged.
  if (cudaMemcpyAsync(table.get(), pointers.data(), bytes, cudaMemcpyHostToDevice, current_stream()) != cudaSuccess)
    fail("grouped_matmul", "cannot copy the pointer table to the device");
  const cublasHandle_t h = blas(device);
  check(cublasSetStream(h, current_stream()), "cublasSetStream");
  const cudaDataType_t type = data_type(t);
  const cublasComputeType_t compute =
      t == DType::Float32 && options.allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const void* const* table_in = table.get<const void* const>();
  void* const* table_out = table.get<void* const>() + 2 * count;
  const cublasStatus_t status = cublasGemmGroupedBatchedEx(
      h, ta.data(), tb.data(), m.data(), n.data(), k.data(), alpha.data(), table_in, type, lda.data(),
      table_in + count, type, ldb.data(), beta.data(), table_out, type, ldc.data(), static_cast<int>(count),
      group_sizes.data(), compute);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) return false;
  check(status, "cublasGemmGroupedBatchedEx");
  return true;
}

template <typename T, typename A>
__global__ void integer_matmul_kernel(T* c, const T* a, const T* b, int64_t batch, int64_t m, int64_t n, int64_t k,
                                      int64_t sa0, int64_t sa1, int64_t sa2, int64_t sb0, int64_t sb1, int64_t sb2) {
  KILN_GRID_STRIDE(i, batch * m * n) {
    const int64_t p = i / (m * n), row = i / n % m, col = i % n;
    A acc = 0;
    for (int64_t q = 0; q < k; ++q) acc += A(a[p * sa0 + row * sa1 + q * sa2]) * A(b[p * sb0 + q * sb1 + col * sb2]);
    c[i] = T(acc);
  }
}

}  // namespace

void matmul(const Buffer& out, const Buffer& a, const Buffer& b, const GemmOptions& options) {
  NvtxRange range("kiln::matmul");
  const int64_t batch = out.sizes[0], m = out.sizes[1], n = out.sizes[2], k = a.sizes[2];
  if (out.numel() == 0) return;
  // The bias broadcast over batch and rows, for the paths outside the epilogue.
  auto bias_rows = [&] {
    Buffer rows = options.bias;
    rows.ndim = 3;
    rows.sizes[0] = batch;
    rows.sizes[1] = m;
    rows.sizes[2] = n;
    rows.strides[0] = rows.strides[1] = 0;
    rows.strides[2] = 1;
    return rows;
  };
  if (out.dtype == DType::Int32 || out.dtype == DType::Int64) {
    if (options.bias.data || options.gelu_tanh) fail("matmul", "a bias or GELU is applied to floating matmuls only");
    if (k == 0) return fill(out, 0.0);
    visit_index(out.dtype, "matmul", [&](auto tag) {
      using T = decltype(tag);
      launch("integer_matmul_kernel", integer_matmul_kernel<T, int64_t>, blocks_for(out.numel()), kThreads, 0,
             out.ptr<T>(), a.ptr<T>(), b.ptr<T>(), batch, m, n, k, a.strides[0], a.strides[1], a.strides[2],
             b.strides[0], b.strides[1], b.strides[2]);
    });
    return;
  }
  // The epilogue does what it can: the bias for the float types (16-byte
  // aligned), GELU where cuBLASLt can also store the pre-activation (its leading
  // dimension and batch stride multiples of 8); the rest follows as kernels.
  const Buffer& pre = options.pre_activation;
  Epilogue e;
  if (k == 0) {
    fill(out, 0.0);
  } else {
    const int device = out.device.index;
    const bool f64 = out.dtype == DType::Float64;
    Operand A = prepare(a, device), B = prepare(b, device);
    e.bias = options.bias.data && !f64 && aligned16(options.bias.data);
    e.gelu = options.gelu_tanh && !f64 &&
             (!pre.data || (aligned16(pre.data) && pre.strides[1] % 8 == 0 && (batch == 1 || pre.strides[0] % 8 == 0)));
    // Without an algorithm for the epilogue, GELU and then the bias become kernels.
    bool done = lt_matmul(out, A, B, batch, m, n, k, options, e);
    if (!done && e.gelu) {
      e.gelu = false;
      done = lt_matmul(out, A, B, batch, m, n, k, options, e);
    }
    if (!done && e.bias) {
      e.bias = false;
      done = lt_matmul(out, A, B, batch, m, n, k, options, e);
    }
    if (!done) fail("matmul", "cuBLASLt found no algorithm for these shapes, layouts and alignments");
  }
  if (options.bias.data && !e.bias) binary(BinaryOp::Add, out, out, bias_rows());
  if (options.gelu_tanh && !e.gelu) {
    if (pre.data) copy(pre, out);
    unary(UnaryOp::GeluTanh, out, out, 0, 0);
  }
}

void grouped_matmul(const std::vector<Buffer>& out, const std::vector<Buffer>& a, const std::vector<Buffer>& b,
                    const GemmOptions& options, bool one_launch) {
  NvtxRange range("kiln::grouped_matmul");
  if (out.empty()) return;
  if (one_launch && grouped_launch(out, a, b, options)) return;
  for (size_t i = 0; i < out.size(); ++i) matmul(out[i], a[i], b[i], options);
}

}  // namespace kiln::kernels::cuda
