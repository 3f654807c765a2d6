// Tensor: geometry, views, conversions, autograd accessors and in-place ops.

#include "kiln/tensor.h"

#include <algorithm>
#include <numeric>

#include "dispatch.h"

namespace kiln {


Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) {
    KILN_CHECK(s >= 0, "[shape] negative size in shape {}", detail::shape_str(shape));
    KILN_CHECK(!__builtin_mul_overflow(n, s, &n), "[shape] shape {} has more elements than an int64 counts",
               detail::shape_str(shape));
  }
  return n;
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  int64_t n = std::max<int64_t>(ndim, 1);  // a 0-dim tensor accepts dim 0 and -1
  KILN_CHECK(dim >= -n && dim < n, "[{}] dim {} is out of range for a tensor of {} dims", op, dim, ndim);
  return dim < 0 ? dim + n : dim;
}

Tensor::Tensor(std::shared_ptr<Storage> storage, Shape sizes, Shape strides, int64_t offset, DType dtype) {
  KILN_CHECK(sizes.size() <= static_cast<size_t>(kMaxDims), "[Tensor] {} dims given; kiln supports up to {}",
             sizes.size(), kMaxDims);
  for (int64_t s : sizes) KILN_CHECK(s >= 0, "[Tensor] negative size in shape {}", shape_str(sizes));
  impl_ = std::make_shared<TensorImpl>();
  impl_->storage = std::move(storage);
  impl_->sizes = std::move(sizes);
  impl_->strides = std::move(strides);
  impl_->offset = offset;
  impl_->dtype = dtype;
}

void Tensor::check_defined(const char* what) const {
  KILN_CHECK(impl_ != nullptr, "[{}] called on an undefined tensor", what);
}

const Shape& Tensor::sizes() const { check_defined("sizes"); return impl_->sizes; }
const Shape& Tensor::strides() const { check_defined("strides"); return impl_->strides; }
int64_t Tensor::dim() const { check_defined("dim"); return static_cast<int64_t>(impl_->sizes.size()); }
int64_t Tensor::size(int64_t d) const { return sizes()[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides()[wrap_dim(d, dim(), "stride")]; }
int64_t Tensor::numel() const { return shape_numel(sizes()); }
int64_t Tensor::storage_offset() const { check_defined("storage_offset"); return impl_->offset; }
DType Tensor::dtype() const { check_defined("dtype"); return impl_->dtype; }
Device Tensor::device() const { check_defined("device"); return impl_->storage->device(); }
const std::shared_ptr<Storage>& Tensor::storage() const { check_defined("storage"); return impl_->storage; }
uint32_t Tensor::version() const { return storage()->version(); }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (impl_->sizes[i] != 1 && impl_->strides[i] != expected) return false;
    expected *= impl_->sizes[i];
  }
  return true;
}

void* Tensor::data_ptr() const {
  check_defined("data_ptr");
  return static_cast<char*>(impl_->storage->data()) + impl_->offset * static_cast<int64_t>(element_size());
}

Buffer Tensor::buffer() const {
  Buffer b;
  b.data = data_ptr();
  b.dtype = dtype();
  b.device = device();
  b.ndim = static_cast<int>(dim());
  for (int i = 0; i < b.ndim; ++i) {
    b.sizes[i] = impl_->sizes[i];
    b.strides[i] = impl_->strides[i];
  }
  return b;
}

Scalar Tensor::item() const {
  KILN_CHECK(numel() == 1, "[item] needs a tensor with one element, got shape {}", shape_str(sizes()));
  Tensor host = to(kCPU);
  const void* p = host.data_ptr();
  switch (dtype()) {
    case DType::Bool: return Scalar(*static_cast<const bool*>(p));
    case DType::Int32: return Scalar(*static_cast<const int32_t*>(p));
    case DType::Int64: return Scalar(*static_cast<const int64_t*>(p));
    case DType::BFloat16: return Scalar(static_cast<float>(*static_cast<const BFloat16*>(p)));
    case DType::Float16: return Scalar(static_cast<float>(*static_cast<const Half*>(p)));
    case DType::Float32: return Scalar(*static_cast<const float*>(p));
    case DType::Float64: return Scalar(*static_cast<const double*>(p));
  }
  KILN_FAIL("[item] unknown dtype");
}

// --- views --------------------------------------------------------------------

namespace {

// A view of t's storage with new geometry; records `name` with `backward` when t
// requires grad.
Tensor make_view(const Tensor& t, Shape sizes, Shape strides, int64_t offset, const char* name,
                 autograd::BackwardFn backward) {
  Tensor v(t.storage(), std::move(sizes), std::move(strides), offset, t.dtype());
  v.impl()->is_view = true;
  if (autograd::any_requires_grad({t})) autograd::record(name, v, {t}, std::move(backward));
  return v;
}

// Strides for viewing (sizes, strides) as new_shape without copying, if possible
// (PyTorch's computeStride: each run of merged dims must be contiguous).
std::optional<Shape> view_strides(const Shape& sizes, const Shape& strides, const Shape& new_shape) {
  Shape out(new_shape.size());
  if (shape_numel(sizes) == 0 || sizes.empty()) return contiguous_strides(new_shape);
  int64_t view_d = static_cast<int64_t>(new_shape.size()) - 1;
  int64_t chunk_base_stride = strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(sizes.size()) - 1; d >= 0; --d) {
    tensor_numel *= sizes[d];
    if (d == 0 || (sizes[d - 1] != 1 && strides[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
        out[view_d] = view_numel * chunk_base_stride;
        view_numel *= new_shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_base_stride = strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return out;
}

Shape infer_shape(Shape shape, int64_t numel, const char* op, const Shape& from) {
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      KILN_CHECK(infer < 0, "[{}] only one dimension can be -1, got {}", op, shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      KILN_CHECK(shape[i] >= 0, "[{}] invalid size in shape {}", op, shape_str(shape));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    KILN_CHECK(known != 0 && numel % known == 0, "[{}] shape {} is invalid for input of shape {} ({} elements)", op,
               shape_str(shape), shape_str(from), numel);
    shape[infer] = numel / known;
  }
  KILN_CHECK(shape_numel(shape) == numel, "[{}] shape {} is invalid for input of shape {} ({} elements)", op,
             shape_str(shape), shape_str(from), numel);
  return shape;
}

}  // namespace

Tensor Tensor::view(Shape shape) const {
  shape = infer_shape(std::move(shape), numel(), "view", sizes());
  auto strides = view_strides(sizes(), impl_->strides, shape);
  KILN_CHECK(strides.has_value(),
             "[view] cannot view a tensor of shape {} and strides {} as {}: the strides are incompatible; use "
             "reshape()",
             shape_str(sizes()), shape_str(impl_->strides), shape_str(shape));
  Shape in_shape = sizes();
  return make_view(*this, shape, *strides, impl_->offset, "view",
                   [in_shape](const Tensor& g, const autograd::Needs&) -> autograd::Grads {
                     return {g.reshape(in_shape)};
                   });
}

Tensor Tensor::reshape(Shape shape) const {
  shape = infer_shape(std::move(shape), numel(), "reshape", sizes());
  if (view_strides(sizes(), impl_->strides, shape)) return view(shape);
  return contiguous().view(shape);
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  start_dim = wrap_dim(start_dim, dim(), "flatten");
  end_dim = wrap_dim(end_dim, dim(), "flatten");
  KILN_CHECK(start_dim <= end_dim, "[flatten] start_dim {} is after end_dim {}", start_dim, end_dim);
  Shape shape(sizes().begin(), sizes().begin() + start_dim);
  int64_t n = 1;
  for (int64_t d = start_dim; d <= end_dim; ++d) n *= size(d);
  shape.push_back(n);
  shape.insert(shape.end(), sizes().begin() + end_dim + 1, sizes().end());
  return reshape(shape);
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  Shape perm(dim());
  std::iota(perm.begin(), perm.end(), 0);
  if (dim() == 0) return permute(perm);
  std::swap(perm[wrap_dim(d0, dim(), "transpose")], perm[wrap_dim(d1, dim(), "transpose")]);
  return permute(perm);
}

Tensor Tensor::t() const {
  KILN_CHECK(dim() <= 2, "[t] expects a tensor of at most 2 dims, got shape {}", shape_str(sizes()));
  return dim() < 2 ? *this : transpose(0, 1);
}

Tensor Tensor::permute(Shape dims) const {
  KILN_CHECK(static_cast<int64_t>(dims.size()) == dim(), "[permute] got {} dims for a tensor of shape {}",
             dims.size(), shape_str(sizes()));
  Shape sizes_out(dim()), strides_out(dim()), inverse(dim());
  std::vector<bool> seen(dim(), false);
  for (int64_t i = 0; i < dim(); ++i) {
    int64_t d = wrap_dim(dims[i], dim(), "permute");
    KILN_CHECK(!seen[d], "[permute] dim {} repeated in {}", d, shape_str(dims));
    seen[d] = true;
    sizes_out[i] = impl_->sizes[d];
    strides_out[i] = impl_->strides[d];
    inverse[d] = i;
  }
  return make_view(*this, sizes_out, strides_out, impl_->offset, "permute",
                   [inverse](const Tensor& g, const autograd::Needs&) -> autograd::Grads {
                     return {g.permute(inverse)};
                   });
}

Tensor Tensor::movedim(int64_t src, int64_t dst) const {
  src = wrap_dim(src, dim(), "movedim");
  dst = wrap_dim(dst, dim(), "movedim");
  Shape perm;
  for (int64_t d = 0; d < dim(); ++d)
    if (d != src) perm.push_back(d);
  perm.insert(perm.begin() + dst, src);
  return permute(perm);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  KILN_CHECK(dim() > 0, "[slice] cannot slice a 0-dim tensor");
  KILN_CHECK(step > 0, "[slice] step must be positive, got {}", step);
  int64_t n = impl_->sizes[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape sizes_out = sizes(), strides_out = impl_->strides;
  sizes_out[d] = (end - start + step - 1) / step;
  strides_out[d] *= step;
  Shape in_shape = sizes();
  return make_view(*this, sizes_out, strides_out, impl_->offset + start * impl_->strides[d], "slice",
                   [in_shape, d, start, end, step](const Tensor& g, const autograd::Needs&) -> autograd::Grads {
                     Tensor full = zeros(in_shape, TensorOptions(g.dtype()).device(g.device()));
                     full.slice(d, start, end, step).copy_(g);
                     return {full};
                   });
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim(), "narrow");
  int64_t n = size(d);
  if (start < 0) start += n;
  KILN_CHECK(start >= 0 && length >= 0 && start + length <= n,
             "[narrow] start {} and length {} are out of range for dim {} of shape {}", start, length, d,
             shape_str(sizes()));
  return slice(d, start, start + length);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  KILN_CHECK(dim() > 0, "[select] cannot index a 0-dim tensor");
  d = wrap_dim(d, dim(), "select");
  int64_t n = size(d);
  KILN_CHECK(index >= -n && index < n, "[select] index {} is out of range for dim {} of size {} (shape {})", index,
             d, n, shape_str(sizes()));
  if (index < 0) index += n;
  return narrow(d, index, 1).squeeze(d);
}

Tensor Tensor::expand(Shape shape) const {
  KILN_CHECK(static_cast<int64_t>(shape.size()) >= dim(), "[expand] cannot expand shape {} to {}",
             shape_str(sizes()), shape_str(shape));
  size_t lead = shape.size() - sizes().size();
  Shape strides_out(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      KILN_CHECK(shape[i] >= 0, "[expand] cannot expand shape {} to {}", shape_str(sizes()), shape_str(shape));
      strides_out[i] = 0;
      continue;
    }
    int64_t s = impl_->sizes[i - lead];
    if (shape[i] == -1) shape[i] = s;
    KILN_CHECK(s == shape[i] || s == 1, "[expand] cannot expand shape {} to {}: size {} at dim {} must be 1",
               shape_str(sizes()), shape_str(shape), s, i - lead);
    strides_out[i] = s == shape[i] ? impl_->strides[i - lead] : 0;
  }
  Shape in_shape = sizes();
  return make_view(*this, shape, strides_out, impl_->offset, "expand",
                   [in_shape](const Tensor& g, const autograd::Needs&) -> autograd::Grads {
                     return {sum_to(g, in_shape)};
                   });
}

Tensor Tensor::squeeze() const {
  Shape shape;
  for (int64_t s : sizes())
    if (s != 1) shape.push_back(s);
  return view(shape);
}

Tensor Tensor::squeeze(int64_t d) const {
  if (dim() == 0) return *this;
  d = wrap_dim(d, dim(), "squeeze");
  if (size(d) != 1) return *this;
  Shape shape = sizes();
  shape.erase(shape.begin() + d);
  return view(shape);
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape shape = sizes();
  shape.insert(shape.begin() + d, 1);
  return view(shape);
}

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

// --- conversion ---------------------------------------------------------------

Tensor Tensor::to(Device device, bool non_blocking) const { return to(device, dtype(), non_blocking); }
Tensor Tensor::to(DType t) const { return to(device(), t); }

Tensor Tensor::to(Device dst_device, DType dst_dtype, bool non_blocking) const {
  if (dst_device == device() && dst_dtype == dtype()) return *this;
  // A non-blocking copy to the host lands in pinned memory (pageable would block).
  const bool pinned = non_blocking && dst_device.is_cpu() && device().is_cuda();
  Tensor out = empty(sizes(), TensorOptions(dst_dtype).device(dst_device).pinned_memory(pinned));
  {
    autograd::NoGradGuard no_grad;
    if (dst_device == device()) {
      KILN_DISPATCH(device(), copy, out.buffer(), buffer());
    } else {
      // Across devices: convert dtype where the data is, then move contiguous bytes.
      Tensor src = to(dst_dtype).contiguous();
      kernels::cuda::memcpy(out.data_ptr(), dst_device, src.data_ptr(), device(),
                            static_cast<size_t>(src.numel()) * src.element_size(), non_blocking);
      // A non-blocking copy may still be reading the source when it dies: the
      // memory goes back to the pool only after the copy's stream passes it.
      if (non_blocking && src.device().is_cuda())
        src.storage()->record_stream(
            kernels::cuda::get_current_stream(dst_device.is_cuda() ? dst_device.index : src.device().index));
    }
  }
  if (autograd::any_requires_grad({*this})) {
    Device src_device = device();
    DType src_dtype = dtype();
    autograd::record("to", out, {*this}, [src_device, src_dtype](const Tensor& g, const autograd::Needs&) {
      return autograd::Grads{g.to(src_device, src_dtype)};
    });
  }
  return out;
}

bool Tensor::is_pinned() const { return storage()->pinned(); }

Tensor Tensor::pin_memory() const {
  KILN_CHECK(device().is_cpu(), "[pin_memory] pins host memory; the tensor is on {}", device().str());
  if (is_pinned()) return *this;
  Tensor out = empty(sizes(), TensorOptions(dtype()).pinned_memory());
  out.copy_(*this);
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(sizes(), TensorOptions(dtype()).device(device()));
  KILN_DISPATCH(device(), copy, out.buffer(), buffer());
  if (autograd::any_requires_grad({*this}))
    autograd::record("clone", out, {*this}, [](const Tensor& g, const autograd::Needs&) { return autograd::Grads{g}; });
  return out;
}

Tensor Tensor::detach() const {
  Tensor d(storage(), sizes(), impl_->strides, impl_->offset, dtype());
  return d;
}

void Tensor::set_data(const Tensor& src) {
  check_defined("set_data");
  detail::check_defined(src, "set_data", "src");
  KILN_CHECK(is_leaf(), "[set_data] only a leaf tensor's data can be replaced");
  impl_->storage = src.impl_->storage;
  impl_->sizes = src.impl_->sizes;
  impl_->strides = src.impl_->strides;
  impl_->offset = src.impl_->offset;
  impl_->dtype = src.impl_->dtype;
  if (impl_->autograd) impl_->autograd->grad = Tensor();
}

// --- autograd accessors -------------------------------------------------------

bool Tensor::requires_grad() const { return impl_ && impl_->autograd && impl_->autograd->requires_grad; }

Tensor& Tensor::requires_grad_(bool required) {
  check_defined("requires_grad_");
  KILN_CHECK(is_leaf(), "[requires_grad_] can only change requires_grad on a leaf tensor; use detach()");
  KILN_CHECK(!required || is_floating(dtype()), "[requires_grad_] only floating tensors can require grad, got {}",
             dtype());
  if (required || impl_->autograd) impl_->meta().requires_grad = required;
  return *this;
}

const Tensor& Tensor::grad() const {
  static const Tensor undefined;
  return impl_ && impl_->autograd ? impl_->autograd->grad : undefined;
}

Tensor& Tensor::mutable_grad() {
  check_defined("mutable_grad");
  return impl_->meta().grad;
}

void Tensor::set_grad(Tensor g) {
  check_defined("set_grad");
  if (g.defined())
    KILN_CHECK(g.sizes() == sizes() && g.dtype() == dtype() && g.device() == device(),
               "[set_grad] gradient {} does not match tensor {}", detail::describe(g), detail::describe(*this));
  impl_->meta().grad = std::move(g);
}

const std::shared_ptr<autograd::Node>& Tensor::grad_fn() const {
  static const std::shared_ptr<autograd::Node> none;
  return impl_ && impl_->autograd ? impl_->autograd->grad_fn : none;
}

bool Tensor::is_leaf() const { return grad_fn() == nullptr; }

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  check_defined("backward");
  KILN_CHECK(requires_grad(), "[backward] tensor does not require grad and has no grad_fn");
  Tensor g = gradient;
  if (!g.defined()) {
    KILN_CHECK(numel() == 1, "[backward] grad can be implicitly created only for scalar outputs, got shape {}",
               shape_str(sizes()));
    g = ones(sizes(), TensorOptions(dtype()).device(device()));
  }
  autograd::backward({*this}, {g}, retain_graph);
}

void Tensor::retain_grad() const {
  check_defined("retain_grad");
  KILN_CHECK(requires_grad(), "[retain_grad] called on a tensor that does not require grad");
  if (is_leaf() || impl_->meta().retains_grad) return;
  impl_->meta().retains_grad = true;
  std::weak_ptr<TensorImpl> weak = impl_;
  grad_fn()->pre_hooks().push_back([weak](const Tensor& g) {
    if (auto impl = weak.lock()) {
      Tensor& grad = impl->meta().grad;
      grad = grad.defined() ? grad + g : g.clone();
    }
  });
}

void Tensor::register_post_accumulate_grad_hook(GradHook fn) const {
  check_defined("register_post_accumulate_grad_hook");
  KILN_CHECK(is_leaf() && requires_grad(),
             "[register_post_accumulate_grad_hook] needs a leaf tensor that requires grad");
  impl_->meta().post_accumulate_hooks.push_back(std::move(fn));
}

// --- in-place -------------------------------------------------------------------

namespace {

// Checks that t may be written in place by op while autograd may be watching.
void check_inplace(const Tensor& t, const char* op) {
  if (!autograd::grad_mode_enabled()) return;
  KILN_CHECK(!(t.is_leaf() && t.requires_grad()),
             "[{}] a leaf tensor that requires grad is used in an in-place operation; wrap it in NoGradGuard", op);
}

// Writes result (already computed out of place, with its history) into self and
// moves that history onto self.
Tensor& assign_inplace(Tensor& self, const Tensor& result, const char* op) {
  check_inplace(self, op);
  bool tracked = autograd::grad_mode_enabled() && result.requires_grad();
  KILN_CHECK(!tracked || !self.impl()->is_view,
             "[{}] in-place operation on a view of a tensor in the autograd graph is not supported; use the "
             "out-of-place op",
             op);
  KILN_CHECK(broadcast_shapes(self.sizes(), result.sizes(), op) == self.sizes(),
             "[{}] result of shape {} cannot be written into a tensor of shape {}", op, shape_str(result.sizes()),
             shape_str(self.sizes()));
  {
    autograd::NoGradGuard no_grad;
    Tensor src = result.to(self.dtype()).expand(self.sizes());
    KILN_DISPATCH(self.device(), copy, self.buffer(), src.buffer());
  }
  self.storage()->bump_version();
  if (tracked) {
    auto& meta = self.impl()->meta();
    meta.requires_grad = true;
    meta.grad_fn = result.grad_fn();
  }
  return self;
}

}  // namespace

Tensor& Tensor::fill_(Scalar value) {
  check_inplace(*this, "fill_");
  KILN_DISPATCH(device(), fill, buffer(), value.to_double());
  storage()->bump_version();
  if (autograd::grad_mode_enabled() && !is_leaf()) {  // now a constant: no history to keep
    impl_->meta().grad_fn = nullptr;
    impl_->meta().requires_grad = false;
  }
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  detail::check_defined(src, "copy_", "src");
  detail::check_same_device("copy_", {*this, src});
  if (autograd::grad_mode_enabled() && src.requires_grad()) return assign_inplace(*this, src, "copy_");
  check_inplace(*this, "copy_");
  Tensor s = src.expand(sizes());
  KILN_DISPATCH(device(), copy, buffer(), s.buffer());
  storage()->bump_version();
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, Scalar alpha) { return assign_inplace(*this, add(*this, other, alpha), "add_"); }
Tensor& Tensor::add_(Scalar other) { return assign_inplace(*this, *this + other, "add_"); }
Tensor& Tensor::sub_(const Tensor& other) { return assign_inplace(*this, *this - other, "sub_"); }
Tensor& Tensor::mul_(const Tensor& other) { return assign_inplace(*this, *this * other, "mul_"); }
Tensor& Tensor::mul_(Scalar other) { return assign_inplace(*this, *this * other, "mul_"); }
Tensor& Tensor::div_(const Tensor& other) { return assign_inplace(*this, *this / other, "div_"); }
Tensor& Tensor::div_(Scalar other) { return assign_inplace(*this, *this / other, "div_"); }

}  // namespace kiln
