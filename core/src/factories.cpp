// Factories: empty/zeros/ones/full/arange, from_blob, and the Philox draws.

#include <cmath>

#include "dispatch.h"
#include "kiln/ops.h"

namespace kiln {

Generator& default_generator() {
  static Generator gen(0);
  return gen;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

Tensor empty(const Shape& shape, TensorOptions options) {
  for (int64_t s : shape) KILN_CHECK(s >= 0, "[empty] negative size in shape {}", detail::shape_str(shape));
  size_t bytes = 0;
  KILN_CHECK(!__builtin_mul_overflow(static_cast<size_t>(shape_numel(shape)), element_size(options.dtype_), &bytes),
             "[empty] shape {} of {} needs more bytes than a size_t counts", detail::shape_str(shape),
             options.dtype_);
  auto storage = Storage::allocate(bytes, options.device_, options.pinned_memory_);
  Tensor t(std::move(storage), shape, contiguous_strides(shape), 0, options.dtype_);
  if (options.requires_grad_) t.requires_grad_();
  return t;
}

Tensor full(const Shape& shape, Scalar value, TensorOptions options) {
  bool required = options.requires_grad_;
  Tensor t = empty(shape, options.requires_grad(false));
  KILN_DISPATCH(t.device(), fill, t.buffer(), value.to_double());
  return required ? t.requires_grad_() : t;
}

Tensor zeros(const Shape& shape, TensorOptions options) { return full(shape, 0, options); }
Tensor ones(const Shape& shape, TensorOptions options) { return full(shape, 1, options); }
Tensor empty_like(const Tensor& t) { return empty(t.sizes(), TensorOptions(t.dtype()).device(t.device())); }
Tensor zeros_like(const Tensor& t) { return full_like(t, 0); }
Tensor ones_like(const Tensor& t) { return full_like(t, 1); }
Tensor full_like(const Tensor& t, Scalar value) {
  return full(t.sizes(), value, TensorOptions(t.dtype()).device(t.device()));
}

Tensor scalar_tensor(Scalar value, TensorOptions options) { return full({}, value, options); }

Tensor tensor(std::initializer_list<double> values, TensorOptions options) {
  return tensor(std::vector<double>(values), options);
}

Tensor arange(Scalar start, Scalar end, Scalar step, std::optional<TensorOptions> options) {
  bool integral = start.kind() != Scalar::Kind::Float && end.kind() != Scalar::Kind::Float &&
                  step.kind() != Scalar::Kind::Float;
  TensorOptions opts = options.value_or(TensorOptions(integral ? kInt64 : kFloat32));
  double s = start.to_double(), e = end.to_double(), st = step.to_double();
  KILN_CHECK(st != 0, "[arange] step must be nonzero");
  KILN_CHECK((st > 0 && e >= s) || (st < 0 && e <= s) || s == e,
             "[arange] the range [{}, {}) is empty or reversed for step {}", s, e, st);
  auto n = static_cast<int64_t>(std::ceil((e - s) / st));
  Tensor t = empty({std::max<int64_t>(n, 0)}, opts.requires_grad(false));
  KILN_DISPATCH(t.device(), arange, t.buffer(), s, st);
  return opts.requires_grad_ ? t.requires_grad_() : t;
}

Tensor arange(Scalar end, std::optional<TensorOptions> options) { return arange(0, end, 1, options); }

Tensor from_blob(void* data, const Shape& shape, TensorOptions options, Storage::Deleter deleter) {
  return from_blob(data, shape, contiguous_strides(shape), options, std::move(deleter));
}

Tensor from_blob(void* data, const Shape& shape, const Shape& strides, TensorOptions options,
                 Storage::Deleter deleter) {
  KILN_CHECK(shape.size() == strides.size(), "[from_blob] shape {} and strides {} differ in rank",
             detail::shape_str(shape), detail::shape_str(strides));
  KILN_CHECK(data != nullptr || shape_numel(shape) == 0, "[from_blob] null data for shape {}",
             detail::shape_str(shape));
  int64_t extent = 1;  // one past the furthest element reached
  for (size_t i = 0; i < shape.size(); ++i) {
    KILN_CHECK(strides[i] >= 0, "[from_blob] negative strides are not supported: {}", detail::shape_str(strides));
    if (shape[i] > 0) extent += (shape[i] - 1) * strides[i];
  }
  auto storage = Storage::wrap(data, static_cast<size_t>(extent) * element_size(options.dtype_), options.device_,
                               std::move(deleter));
  Tensor t(std::move(storage), shape, strides, 0, options.dtype_);
  return options.requires_grad_ ? t.requires_grad_() : t;
}

namespace {

Tensor random_tensor(const Shape& shape, Generator& gen, TensorOptions options, const char* op, auto&& draw) {
  KILN_CHECK(op == std::string_view("randint") || is_floating(options.dtype_), "[{}] needs a floating dtype, got {}",
             op, options.dtype_);
  Tensor t = empty(shape, options.requires_grad(false));
  uint64_t offset = gen.reserve(static_cast<uint64_t>(t.numel()));
  draw(t.buffer(), gen.seed(), offset);
  return options.requires_grad_ ? t.requires_grad_() : t;
}

}  // namespace

Tensor rand(const Shape& shape, Generator& gen, TensorOptions options) {
  return random_tensor(shape, gen, options, "rand", [](const Buffer& b, uint64_t seed, uint64_t off) {
    KILN_DISPATCH(b.device, uniform, b, seed, off, 0.0, 1.0);
  });
}
Tensor rand(const Shape& shape, TensorOptions options) { return rand(shape, default_generator(), options); }

Tensor randn(const Shape& shape, Generator& gen, TensorOptions options) {
  return random_tensor(shape, gen, options, "randn", [](const Buffer& b, uint64_t seed, uint64_t off) {
    KILN_DISPATCH(b.device, normal, b, seed, off, 0.0, 1.0);
  });
}
Tensor randn(const Shape& shape, TensorOptions options) { return randn(shape, default_generator(), options); }

Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& gen, TensorOptions options) {
  KILN_CHECK(low < high, "[randint] empty range [{}, {})", low, high);
  KILN_CHECK(options.dtype_ != kBool, "[randint] cannot draw bool tensors");
  return random_tensor(shape, gen, options, "randint", [=](const Buffer& b, uint64_t seed, uint64_t off) {
    KILN_DISPATCH(b.device, randint, b, seed, off, low, high);
  });
}
Tensor randint(int64_t low, int64_t high, const Shape& shape, TensorOptions options) {
  return randint(low, high, shape, default_generator(), options);
}

Tensor randperm(int64_t n, Generator& gen, TensorOptions options) {
  KILN_CHECK(n >= 0, "[randperm] n must be >= 0, got {}", n);
  KILN_CHECK(!is_floating(options.dtype_) && options.dtype_ != kBool, "[randperm] needs an integer dtype, got {}",
             dtype_name(options.dtype_));
  // Fisher-Yates on the host from one draw of n uniforms, whatever the device.
  const Tensor u = rand({n}, gen, kFloat64);
  const double* draw = u.data_ptr<double>();
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  for (int64_t i = n - 1; i > 0; --i)
    std::swap(order[static_cast<size_t>(i)],
              order[static_cast<size_t>(std::min<int64_t>(i, static_cast<int64_t>(draw[i] * static_cast<double>(i + 1))))]);
  return tensor(order).to(options.device_, options.dtype_);
}
Tensor randperm(int64_t n, TensorOptions options) { return randperm(n, default_generator(), options); }

}  // namespace kiln
