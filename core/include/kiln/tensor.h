#pragma once
// Tensor: a cheap, shared handle to a strided view of a Storage, with optional
// autograd metadata. Copying a Tensor copies the handle, never the data.

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "kiln/base/buffer.h"
#include "kiln/base/device.h"
#include "kiln/base/dtype.h"
#include "kiln/base/error.h"
#include "kiln/scalar.h"
#include "kiln/storage.h"

namespace kiln {

// A tensor's sizes (or strides), outermost dimension first.
using Shape = std::vector<int64_t>;

namespace autograd {
class Node;
}

// What a factory makes: dtype, device, and whether the result requires grad.
// Converts implicitly from a DType or a Device: zeros({2, 3}, kFloat64).
struct TensorOptions {
  DType dtype_ = kFloat32;      // the elements' type
  Device device_ = kCPU;        // where the elements live
  bool requires_grad_ = false;  // a leaf whose gradient backward accumulates
  bool pinned_memory_ = false;  // page-locked host memory (CPU tensors; needs CUDA)

  TensorOptions() = default;
  // Implicit, so that zeros({2, 3}, kFloat64) reads as libtorch's.
  TensorOptions(DType t) : dtype_(t) {}   // NOLINT(google-explicit-constructor)
  TensorOptions(Device d) : device_(d) {}  // NOLINT(google-explicit-constructor)
  // Copies with one option changed: kFloat64.device(kCUDA).requires_grad() reads as libtorch's.
  TensorOptions dtype(DType t) const { auto o = *this; o.dtype_ = t; return o; }
  TensorOptions device(Device d) const { auto o = *this; o.device_ = d; return o; }
  TensorOptions requires_grad(bool r = true) const { auto o = *this; o.requires_grad_ = r; return o; }
  TensorOptions pinned_memory(bool p = true) const { auto o = *this; o.pinned_memory_ = p; return o; }
};

class Tensor;
class TensorIndex;
// Called with a leaf's gradient once backward has accumulated it into .grad().
using GradHook = std::function<void(const Tensor&)>;

struct AutogradMeta;
struct TensorImpl;

// An n-dimensional array on a device, a handle to shared storage (copies share it), with autograd.
class Tensor {
 public:
  Tensor() = default;  // undefined; defined() is false
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}  // a handle on existing state, as ops build results
  // A view of storage with the given geometry (strides and offset in elements).
  Tensor(std::shared_ptr<Storage> storage, Shape sizes, Shape strides, int64_t offset, DType dtype);

  bool defined() const { return impl_ != nullptr; }  // false for Tensor(): no storage, no shape

  // --- geometry -------------------------------------------------------------
  const Shape& sizes() const;
  const Shape& strides() const;
  int64_t size(int64_t dim) const;
  int64_t stride(int64_t dim) const;
  int64_t dim() const;
  int64_t numel() const;
  int64_t storage_offset() const;
  DType dtype() const;
  Device device() const;
  bool is_contiguous() const;
  size_t element_size() const { return kiln::element_size(dtype()); }
  const std::shared_ptr<Storage>& storage() const;
  // Version of the underlying storage; bumped by every in-place op.
  uint32_t version() const;

  // Pointer to the first element; the typed form checks the dtype.
  void* data_ptr() const;
  template <typename T> T* data_ptr() const;
  // What kernels see: pointer, shape, strides, dtype, device.
  Buffer buffer() const;

  // The value of a one-element tensor (copied to the host), as T in the typed form.
  Scalar item() const;
  template <typename T> T item() const;

  // --- views (share storage) ----------------------------------------------------
  Tensor view(Shape shape) const;       // raises when the strides do not allow a view
  Tensor reshape(Shape shape) const;    // a view when possible, else a copy
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const;                     // transpose of a matrix
  Tensor permute(Shape dims) const;
  Tensor movedim(int64_t src, int64_t dst) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor operator[](int64_t index) const { return select(0, index); }
  Tensor expand(Shape shape) const;     // -1 keeps a size
  Tensor expand_as(const Tensor& other) const { return expand(other.sizes()); }
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor contiguous() const;            // this tensor when already contiguous

  // --- conversion -------------------------------------------------------------
  // Between host and GPU, `non_blocking` returns once the copy is queued on
  // the current stream; synchronize before reading host memory written so.
  // With pageable host memory the copy completes before returning anyway.
  Tensor to(Device device, bool non_blocking = false) const;
  Tensor to(DType dtype) const;
  Tensor to(Device device, DType dtype, bool non_blocking = false) const;
  // Page-locked host memory (CPU tensors): GPU copies from it run asynchronously.
  bool is_pinned() const;
  Tensor pin_memory() const;  // this tensor when already pinned
  Tensor clone() const;
  Tensor detach() const;                // shares storage, no autograd history
  // Points this tensor (every handle to it) at src's data, keeping its autograd
  // identity: how Module::to() moves parameters without breaking references.
  void set_data(const Tensor& src);

  // --- autograd ---------------------------------------------------------------
  bool requires_grad() const;
  Tensor& requires_grad_(bool required = true);
  // The accumulated gradient (undefined until a backward reaches this tensor).
  const Tensor& grad() const;
  Tensor& mutable_grad();
  void set_grad(Tensor g);
  const std::shared_ptr<autograd::Node>& grad_fn() const;
  bool is_leaf() const;
  // Backpropagates from this tensor; a scalar unless `gradient` is given.
  void backward(const Tensor& gradient = {}, bool retain_graph = false) const;
  // Keeps the gradient of a non-leaf tensor in grad() after backward.
  void retain_grad() const;
  // On a leaf: fn runs once its gradient for the current backward is final.
  void register_post_accumulate_grad_hook(GradHook fn) const;

  // --- in-place (bump the version counter) ------------------------------------
  Tensor& fill_(Scalar value);
  Tensor& zero_() { return fill_(0); }
  Tensor& copy_(const Tensor& src);  // broadcasts src, converts dtype
  Tensor& add_(const Tensor& other, Scalar alpha = 1);
  Tensor& add_(Scalar other);
  Tensor& sub_(const Tensor& other);
  Tensor& mul_(const Tensor& other);
  Tensor& mul_(Scalar other);
  Tensor& div_(const Tensor& other);
  Tensor& div_(Scalar other);

  // --- ops as methods, as libtorch writes them (the free functions of ops.h) -----
  Tensor sum() const;
  Tensor sum(const Shape& dims, bool keepdim = false) const;
  Tensor mean() const;
  Tensor mean(const Shape& dims, bool keepdim = false) const;
  Tensor max() const;
  Tensor max(int64_t dim, bool keepdim = false) const;
  Tensor min() const;
  Tensor min(int64_t dim, bool keepdim = false) const;
  Tensor argmax(int64_t dim, bool keepdim = false) const;
  Tensor abs() const;
  Tensor exp() const;
  Tensor log() const;
  Tensor sqrt() const;
  Tensor rsqrt() const;
  Tensor tanh() const;
  Tensor sigmoid() const;
  Tensor relu() const;
  Tensor sin() const;
  Tensor cos() const;
  Tensor floor() const;
  Tensor ceil() const;
  Tensor round() const;
  Tensor pow(Scalar exponent) const;
  Tensor pow(const Tensor& exponent) const;
  Tensor clamp(std::optional<Scalar> min, std::optional<Scalar> max) const;
  Tensor matmul(const Tensor& other) const;
  Tensor softmax(int64_t dim) const;
  Tensor log_softmax(int64_t dim) const;
  Tensor masked_fill(const Tensor& mask, Scalar value) const;
  Tensor index_select(int64_t dim, const Tensor& index) const;
  Tensor gather(int64_t dim, const Tensor& index) const;
  Tensor tril(int64_t diagonal = 0) const;
  Tensor triu(int64_t diagonal = 0) const;

  // --- indexing, as libtorch's x.index({Slice(), 0}) (kiln/indexing.h) ---------
  // Integers select (the dim goes), Slice(start, stop, step) slices, None
  // inserts a dim, Ellipsis stands for the dims not named: a view. A 1-D
  // integer tensor picks entries along its dim (index_select: a copy).
  Tensor index(std::initializer_list<TensorIndex> indices) const;
  // Writes value (broadcast) into index(indices). The last index may be a
  // tensor: a bool one over the remaining dims writes only where it is true;
  // a 1-D integer one writes at those positions along its dim
  // (x.index_put_({Slice(), cols}, v): x[:, cols] = v; of repeated positions
  // one write wins, as PyTorch's).
  Tensor& index_put_(std::initializer_list<TensorIndex> indices, const Tensor& value);
  Tensor& index_put_(std::initializer_list<TensorIndex> indices, Scalar value);

  // PyTorch-style text: tensor([[1.0000, 2.0000]], dtype=...).
  std::string str() const;

  // The shared state behind the handle, for kiln's own ops.
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  // Whether both handles are the same tensor (not merely equal values).
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  void check_defined(const char* what) const;
  std::shared_ptr<TensorImpl> impl_;
};

// Autograd state, created only for tensors that need it.
struct AutogradMeta {
  bool requires_grad = false;
  bool retains_grad = false;
  Tensor grad;
  std::shared_ptr<autograd::Node> grad_fn;
  std::weak_ptr<autograd::Node> grad_accumulator;
  std::vector<GradHook> post_accumulate_hooks;
};

// A parameter's low-precision copy for compute (cast_cached): `data` holds the
// parameter's values as of `source`'s version `version`.
struct ComputeCopy {
  Tensor data;
  const Storage* source = nullptr;
  uint32_t version = 0;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape sizes;
  Shape strides;
  int64_t offset = 0;
  DType dtype = kFloat32;
  bool is_view = false;
  std::unique_ptr<AutogradMeta> autograd;
  std::unique_ptr<ComputeCopy> compute_copy;

  AutogradMeta& meta() {
    if (!autograd) autograd = std::make_unique<AutogradMeta>();
    return *autograd;
  }
};

// Writes t.str().
std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Contiguous strides for a shape.
Shape contiguous_strides(const Shape& shape);
// The elements a shape holds; raises on a negative size or a product past int64.
int64_t shape_numel(const Shape& shape);
// Wraps a negative dim into [0, ndim); raises with the op name when out of range.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);

// The DType of a C++ element type: dtype_of<float>() is kFloat32.
template <typename T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, bool>) return kBool;
  else if constexpr (std::is_same_v<T, int32_t>) return kInt32;
  else if constexpr (std::is_same_v<T, int64_t>) return kInt64;
  else if constexpr (std::is_same_v<T, BFloat16>) return kBFloat16;
  else if constexpr (std::is_same_v<T, Half>) return kFloat16;
  else if constexpr (std::is_same_v<T, float>) return kFloat32;
  else if constexpr (std::is_same_v<T, double>) return kFloat64;
  else static_assert(sizeof(T) == 0, "dtype_of: not an element type of kiln (bool, int32, int64, bfloat16, half, float, double)");
}

template <typename T>
T* Tensor::data_ptr() const {
  KILN_CHECK(dtype() == dtype_of<T>(), "[data_ptr] tensor has dtype {}, asked for {}", dtype(), dtype_of<T>());
  return static_cast<T*>(data_ptr());
}

template <typename T>
T Tensor::item() const {
  Scalar s = item();
  if constexpr (std::is_same_v<T, bool>) return s.to_bool();
  else if constexpr (std::is_integral_v<T>) return static_cast<T>(s.to_int());
  else return static_cast<T>(s.to_double());
}

}  // namespace kiln

namespace fmt {
template <>
struct formatter<kiln::Tensor> : formatter<std::string_view> {
  auto format(const kiln::Tensor& t, format_context& ctx) const {
    return formatter<std::string_view>::format(t.str(), ctx);
  }
};
}  // namespace fmt

#include "kiln/indexing.h"
