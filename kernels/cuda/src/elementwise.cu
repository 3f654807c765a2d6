// Elementwise CUDA kernels: fill, arange, copy/cast, Philox draws, unary,
// binary and where. One generic strided kernel per arity: a grid-stride loop
// that turns a linear index into each operand's offset (StridedIndex, with
// contiguous dims merged); when every operand is contiguous and 16-byte
// aligned, a vector kernel instead moves 16 bytes of the widest operand per
// access and does no index arithmetic. Computes in float for bfloat16/float16.

#include <algorithm>
#include <cmath>

#include "common.cuh"
#include "kiln/base/philox.h"
#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

namespace {

// out[i] = f(); out[i] = f(a[i]); out[i] = f(a[i], b[i])
template <typename O, typename F>
__global__ void map0_kernel(StridedIndex<1> it, int64_t n, O* out, F f) {
  KILN_GRID_STRIDE(i, n) {
    int64_t off[1];
    it.offsets(i, off);
    store(out + off[0], f());
  }
}

template <typename O, typename I, typename F>
__global__ void map1_kernel(StridedIndex<2> it, int64_t n, O* out, const I* a, F f) {
  KILN_GRID_STRIDE(i, n) {
    int64_t off[2];
    it.offsets(i, off);
    store(out + off[0], f(load(a + off[1])));
  }
}

template <typename O, typename I, typename F>
__global__ void map2_kernel(StridedIndex<3> it, int64_t n, O* out, const I* a, const I* b, F f) {
  KILN_GRID_STRIDE(i, n) {
    int64_t off[3];
    it.offsets(i, off);
    store(out + off[0], f(load(a + off[1]), load(b + off[2])));
  }
}

template <typename T>
__global__ void where_kernel(StridedIndex<4> it, int64_t n, T* out, const bool* cond, const T* a, const T* b) {
  KILN_GRID_STRIDE(i, n) {
    int64_t off[4];
    it.offsets(i, off);
    out[off[0]] = cond[off[1]] ? a[off[2]] : b[off[3]];
  }
}

// How many elements one vector access of the widest type moves.
template <typename... T>
constexpr int vec_width() {
  constexpr size_t widest = std::max({sizeof(T)...});
  return static_cast<int>(16 / widest);
}

// Vector i of out from the inputs' vectors i, passed by value: one load each.
template <int V, typename O, typename F, typename... X>
__device__ __forceinline__ void apply_vec(O* out, int64_t i, F f, X... x) {
  Vec<O, V> y;
#pragma unroll
  for (int k = 0; k < V; ++k) store(&y.v[k], f(load(&x.v[k])...));
  reinterpret_cast<Vec<O, V>*>(out)[i] = y;
}

// out[i] = f(a[i]...) over contiguous, 16-byte aligned operands: V elements a
// thread-step, the remainder after the last whole vector element by element.
template <int V, typename O, typename F, typename... I>
__global__ void map_vec_kernel(int64_t n, O* out, F f, const I*... in) {
  const int64_t vecs = n / V;
  KILN_GRID_STRIDE(i, vecs) apply_vec<V>(out, i, f, reinterpret_cast<const Vec<I, V>*>(in)[i]...);
  KILN_GRID_STRIDE(j, n - vecs * V) store(out + vecs * V + j, f(load(in + vecs * V + j)...));
}

// True when the loop is one run of unit stride in every operand.
template <int N>
bool contiguous(const StridedIndex<N>& it) {
  if (it.ndim > 1) return false;
  for (int j = 0; j < N && it.ndim == 1; ++j)
    if (it.strides[j][0] != 1) return false;
  return true;
}

// Launches the vector kernel when the geometry allows; false otherwise.
template <int N, typename O, typename F, typename... I>
bool map_vec(const StridedIndex<N>& it, int64_t n, O* out, F f, const I*... in) {
  if (!contiguous(it) || !aligned16(out) || !(aligned16(in) && ...)) return false;
  constexpr int V = vec_width<O, I...>();
  launch("map_vec_kernel", map_vec_kernel<V, O, F, I...>, blocks_for(n / V + 1), kThreads, 0, n, out, f, in...);
  return true;
}

template <typename O, typename F>
void map0(const Buffer& out, F f, const char* name) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const Buffer* bufs[1] = {&out};
  const auto it = StridedIndex<1>::make(bufs);
  if (!map_vec(it, n, out.ptr<O>(), f))
    launch(name, map0_kernel<O, F>, blocks_for(n), kThreads, 0, it, n, out.ptr<O>(), f);
}

template <typename O, typename I, typename F>
void map1(const Buffer& out, const Buffer& a, F f, const char* name) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const Buffer* bufs[2] = {&out, &a};
  const auto it = StridedIndex<2>::make(bufs);
  if (!map_vec(it, n, out.ptr<O>(), f, a.ptr<I>()))
    launch(name, map1_kernel<O, I, F>, blocks_for(n), kThreads, 0, it, n, out.ptr<O>(), a.ptr<I>(), f);
}

template <typename O, typename I, typename F>
void map2(const Buffer& out, const Buffer& a, const Buffer& b, F f, const char* name) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const Buffer* bufs[3] = {&out, &a, &b};
  const auto it = StridedIndex<3>::make(bufs);
  if (!map_vec(it, n, out.ptr<O>(), f, a.ptr<I>(), b.ptr<I>()))
    launch(name, map2_kernel<O, I, F>, blocks_for(n), kThreads, 0, it, n, out.ptr<O>(), a.ptr<I>(), b.ptr<I>(), f);
}

// --- functors ---------------------------------------------------------------

template <typename A>
struct Constant {
  A v;
  __device__ A operator()() const { return v; }
};
struct Identity {
  template <typename A>
  __device__ A operator()(A x) const { return x; }
};

struct Neg { template <typename A> __device__ A operator()(A x) const { return -x; } };
struct Abs { template <typename A> __device__ A operator()(A x) const { return x < A(0) ? -x : x; } };
struct Sign { template <typename A> __device__ A operator()(A x) const { return A((x > A(0)) - (x < A(0))); } };
struct Clamp {
  double lo, hi;
  template <typename A>
  __device__ A operator()(A x) const {
    if constexpr (std::is_floating_point_v<A>)
      if (isnan(x)) return x;
    double r = static_cast<double>(x);
    r = r < lo ? lo : r;  // then the max: PyTorch's order when lo > hi
    return A(r > hi ? hi : r);
  }
};
struct Exp { template <typename A> __device__ A operator()(A x) const { return exp(x); } };
struct Log { template <typename A> __device__ A operator()(A x) const { return log(x); } };
struct Sqrt { template <typename A> __device__ A operator()(A x) const { return sqrt(x); } };
struct Rsqrt { template <typename A> __device__ A operator()(A x) const { return rsqrt(x); } };
struct Tanh { template <typename A> __device__ A operator()(A x) const { return tanh(x); } };
struct Sigmoid { template <typename A> __device__ A operator()(A x) const { return A(1) / (A(1) + exp(-x)); } };
struct Relu { template <typename A> __device__ A operator()(A x) const { return x > A(0) || isnan(x) ? x : A(0); } };
struct GeluErf {
  template <typename A>
  __device__ A operator()(A x) const { return A(0.5) * x * (A(1) + erf(x * A(0.7071067811865476))); }
};
struct GeluTanh {
  template <typename A>
  __device__ A operator()(A x) const {
    return A(0.5) * x * (A(1) + tanh(A(0.7978845608028654) * (x + A(0.044715) * x * x * x)));
  }
};
struct Silu { template <typename A> __device__ A operator()(A x) const { return x / (A(1) + exp(-x)); } };
struct Sin { template <typename A> __device__ A operator()(A x) const { return sin(x); } };
struct Cos { template <typename A> __device__ A operator()(A x) const { return cos(x); } };
struct Floor { template <typename A> __device__ A operator()(A x) const { return floor(x); } };
struct Ceil { template <typename A> __device__ A operator()(A x) const { return ceil(x); } };
struct Round { template <typename A> __device__ A operator()(A x) const { return rint(x); } };  // half to even
struct PowScalar {
  double p;
  template <typename A>
  __device__ A operator()(A x) const { return pow(x, A(p)); }
};

struct Add {
  template <typename A>
  __device__ A operator()(A x, A y) const {
    if constexpr (std::is_same_v<A, bool>) return x || y;
    else return x + y;
  }
};
struct Sub { template <typename A> __device__ A operator()(A x, A y) const { return x - y; } };
struct Mul {
  template <typename A>
  __device__ A operator()(A x, A y) const {
    if constexpr (std::is_same_v<A, bool>) return x && y;
    else return x * y;
  }
};
struct Div {
  DeviceError* flag;
  template <typename A>
  __device__ A operator()(A x, A y) const {
    if constexpr (std::is_integral_v<A>) {
      if (y == 0) {
        report(flag, kIntegerDivisionByZero, 0, 0);
        return A(0);
      }
      A r = x / y;  // floor division, as on the CPU
      return (r * y != x && (x < 0) != (y < 0)) ? r - 1 : r;
    } else {
      return x / y;
    }
  }
};
struct Pow {
  template <typename A>
  __device__ A operator()(A x, A y) const {
    if constexpr (std::is_integral_v<A>) return A(pow(double(x), double(y)));
    else return pow(x, y);
  }
};
struct Maximum {
  template <typename A>
  __device__ A operator()(A x, A y) const {
    if constexpr (std::is_floating_point_v<A>)
      if (isnan(x) || isnan(y)) return x + y;
    return x > y ? x : y;
  }
};
struct Minimum {
  template <typename A>
  __device__ A operator()(A x, A y) const {
    if constexpr (std::is_floating_point_v<A>)
      if (isnan(x) || isnan(y)) return x + y;
    return x < y ? x : y;
  }
};
struct GeluErfGrad {
  template <typename A>
  __device__ A operator()(A g, A v) const {
    A cdf = A(0.5) * (A(1) + erf(v * A(0.7071067811865476)));
    A pdf = exp(A(-0.5) * v * v) * A(0.3989422804014327);
    return g * (cdf + v * pdf);
  }
};
struct GeluTanhGrad {
  template <typename A>
  __device__ A operator()(A g, A v) const {
    const A k = A(0.7978845608028654);
    A th = tanh(k * (v + A(0.044715) * v * v * v));
    A du = k * (A(1) + A(3 * 0.044715) * v * v);
    return g * (A(0.5) * (A(1) + th) + A(0.5) * v * (A(1) - th * th) * du);
  }
};
struct SiluGrad {
  template <typename A>
  __device__ A operator()(A g, A v) const {
    A s = A(1) / (A(1) + exp(-v));
    return g * s * (A(1) + v * (A(1) - s));
  }
};

template <BinaryOp kOp>
struct Compare {
  template <typename A>
  __device__ bool operator()(A x, A y) const {
    if constexpr (kOp == BinaryOp::Eq) return x == y;
    else if constexpr (kOp == BinaryOp::Ne) return x != y;
    else if constexpr (kOp == BinaryOp::Lt) return x < y;
    else if constexpr (kOp == BinaryOp::Le) return x <= y;
    else if constexpr (kOp == BinaryOp::Gt) return x > y;
    else if constexpr (kOp == BinaryOp::Ge) return x >= y;
    else if constexpr (kOp == BinaryOp::LogicalAnd) return x != A(0) && y != A(0);
    else return x != A(0) || y != A(0);
  }
};

struct Uniform {
  uint64_t seed, offset;
  double low, high;
  __device__ double operator()(int64_t i) const {
    return low + (high - low) * philox::uniform(seed, offset, static_cast<uint64_t>(i));
  }
};
struct Normal {
  uint64_t seed, offset;
  double mean, std;
  __device__ double operator()(int64_t i) const {
    return mean + std * philox::normal(seed, offset, static_cast<uint64_t>(i));
  }
};
struct RandInt {
  uint64_t seed, offset;
  int64_t low;
  uint64_t range;
  __device__ int64_t operator()(int64_t i) const {
    uint64_t r = (uint64_t(philox::bits(seed, offset, uint64_t(i), 0)) << 32) | philox::bits(seed, offset, uint64_t(i), 1);
    return low + static_cast<int64_t>(r % range);
  }
};
struct Arange {
  double start, step;
  __device__ double operator()(int64_t i) const { return start + double(i) * step; }
};

// out[i] = f(i) over a contiguous buffer.
template <typename O, typename F>
__global__ void index_map_kernel(int64_t n, O* out, F f) {
  KILN_GRID_STRIDE(i, n) store(out + i, f(i));
}

template <typename F>
void index_map(const Buffer& out, F f, const char* name, bool floating_only) {
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const int64_t n = out.numel();
    if (n == 0) return;
    launch(name, index_map_kernel<T, F>, blocks_for(n), kThreads, 0, n, out.ptr<T>(), f);
  };
  if (floating_only)
    visit_floating(out.dtype, name, run);
  else
    visit_numeric(out.dtype, name, run);
}

}  // namespace

void fill(const Buffer& out, double value) {
  NvtxRange range("kiln::fill");
  visit_dtype(out.dtype, "fill", [&](auto tag) {
    using T = decltype(tag);
    map0<T>(out, Constant<acc_t<T>>{static_cast<acc_t<T>>(value)}, "fill");
  });
}

void arange(const Buffer& out, double start, double step) {
  NvtxRange range("kiln::arange");
  index_map(out, Arange{start, step}, "arange", false);
}

void copy(const Buffer& out, const Buffer& src) {
  NvtxRange range("kiln::copy");
  visit_dtype(out.dtype, "copy", [&](auto otag) {
    visit_dtype(src.dtype, "copy", [&](auto itag) {
      map1<decltype(otag), decltype(itag)>(out, src, Identity{}, "copy");
    });
  });
}

void uniform(const Buffer& out, uint64_t seed, uint64_t offset, double low, double high) {
  NvtxRange range("kiln::uniform");
  index_map(out, Uniform{seed, offset, low, high}, "rand", true);
}

void normal(const Buffer& out, uint64_t seed, uint64_t offset, double mean, double std) {
  NvtxRange range("kiln::normal");
  index_map(out, Normal{seed, offset, mean, std}, "randn", true);
}

void randint(const Buffer& out, uint64_t seed, uint64_t offset, int64_t low, int64_t high) {
  NvtxRange range("kiln::randint");
  index_map(out, RandInt{seed, offset, low, static_cast<uint64_t>(high - low)}, "randint", false);
}

void unary(UnaryOp op, const Buffer& out, const Buffer& x, double a, double b) {
  NvtxRange range("kiln::unary");
  auto numeric = [&](auto f) {
    visit_numeric(x.dtype, "unary", [&](auto tag) { map1<decltype(tag), decltype(tag)>(out, x, f, "unary"); });
  };
  auto floating = [&](auto f) {
    visit_floating(x.dtype, "unary", [&](auto tag) { map1<decltype(tag), decltype(tag)>(out, x, f, "unary"); });
  };
  switch (op) {
    case UnaryOp::Neg: return numeric(Neg{});
    case UnaryOp::Abs: return numeric(Abs{});
    case UnaryOp::Sign: return numeric(Sign{});
    case UnaryOp::Clamp: return numeric(Clamp{a, b});
    case UnaryOp::Exp: return floating(Exp{});
    case UnaryOp::Log: return floating(Log{});
    case UnaryOp::Sqrt: return floating(Sqrt{});
    case UnaryOp::Rsqrt: return floating(Rsqrt{});
    case UnaryOp::Tanh: return floating(Tanh{});
    case UnaryOp::Sigmoid: return floating(Sigmoid{});
    case UnaryOp::Relu: return floating(Relu{});
    case UnaryOp::GeluErf: return floating(GeluErf{});
    case UnaryOp::GeluTanh: return floating(GeluTanh{});
    case UnaryOp::Silu: return floating(Silu{});
    case UnaryOp::PowScalar: return floating(PowScalar{a});
    case UnaryOp::Sin: return floating(Sin{});
    case UnaryOp::Cos: return floating(Cos{});
    case UnaryOp::Floor: return floating(Floor{});
    case UnaryOp::Ceil: return floating(Ceil{});
    case UnaryOp::Round: return floating(Round{});
  }
}

void binary(BinaryOp op, const Buffer& out, const Buffer& x, const Buffer& y) {
  NvtxRange range("kiln::binary");
  auto compare = [&](auto f) {
    visit_dtype(x.dtype, "compare", [&](auto tag) { map2<bool, decltype(tag)>(out, x, y, f, "compare"); });
  };
  auto all = [&](auto f) {
    visit_dtype(x.dtype, "binary", [&](auto tag) { map2<decltype(tag), decltype(tag)>(out, x, y, f, "binary"); });
  };
  auto numeric = [&](auto f) {
    visit_numeric(x.dtype, "binary", [&](auto tag) { map2<decltype(tag), decltype(tag)>(out, x, y, f, "binary"); });
  };
  auto floating = [&](auto f) {
    visit_floating(x.dtype, "binary", [&](auto tag) { map2<decltype(tag), decltype(tag)>(out, x, y, f, "binary"); });
  };
  switch (op) {
    case BinaryOp::Add: return all(Add{});
    case BinaryOp::Sub: return numeric(Sub{});
    case BinaryOp::Mul: return all(Mul{});
    case BinaryOp::Div: return numeric(Div{device_error_flag()});
    case BinaryOp::Pow: return numeric(Pow{});
    case BinaryOp::Maximum: return numeric(Maximum{});
    case BinaryOp::Minimum: return numeric(Minimum{});
    case BinaryOp::Eq: return compare(Compare<BinaryOp::Eq>{});
    case BinaryOp::Ne: return compare(Compare<BinaryOp::Ne>{});
    case BinaryOp::Lt: return compare(Compare<BinaryOp::Lt>{});
    case BinaryOp::Le: return compare(Compare<BinaryOp::Le>{});
    case BinaryOp::Gt: return compare(Compare<BinaryOp::Gt>{});
    case BinaryOp::Ge: return compare(Compare<BinaryOp::Ge>{});
    case BinaryOp::LogicalAnd: return compare(Compare<BinaryOp::LogicalAnd>{});
    case BinaryOp::LogicalOr: return compare(Compare<BinaryOp::LogicalOr>{});
    case BinaryOp::GeluErfGrad: return floating(GeluErfGrad{});
    case BinaryOp::GeluTanhGrad: return floating(GeluTanhGrad{});
    case BinaryOp::SiluGrad: return floating(SiluGrad{});
  }
}

void where(const Buffer& out, const Buffer& cond, const Buffer& x, const Buffer& y) {
  NvtxRange range("kiln::where");
  visit_dtype(out.dtype, "where", [&](auto tag) {
    using T = decltype(tag);
    const int64_t n = out.numel();
    if (n == 0) return;
    const Buffer* bufs[4] = {&out, &cond, &x, &y};
    launch("where", where_kernel<T>, blocks_for(n), kThreads, 0, StridedIndex<4>::make(bufs), n, out.ptr<T>(),
           cond.ptr<bool>(), x.ptr<T>(), y.ptr<T>());
  });
}

namespace {

template <typename A>
__device__ __forceinline__ A sigmoid_of(A x) {
  return A(1) / (A(1) + exp(-x));
}

// SwiGLU over n elements; with Vector, 16-byte packs (all pointers aligned)
// and a scalar tail.
template <typename T, bool Vector>
__global__ void swiglu_kernel(int64_t n, T* out, const T* gate, const T* up) {
  using A = acc_t<T>;
  constexpr int P = Vector ? Pack<T>::size : 1;
  const int64_t packs = n / P;
  KILN_GRID_STRIDE(i, packs) {
    if constexpr (Vector) {
      const Pack<T> g = reinterpret_cast<const Pack<T>*>(gate)[i], u = reinterpret_cast<const Pack<T>*>(up)[i];
      Pack<T> r;
#pragma unroll
      for (int k = 0; k < P; ++k) {
        const A x = load(&g.v[k]);
        store(&r.v[k], x * sigmoid_of(x) * load(&u.v[k]));
      }
      reinterpret_cast<Pack<T>*>(out)[i] = r;
    } else {
      const A x = load(gate + i);
      store(out + i, x * sigmoid_of(x) * load(up + i));
    }
  }
  KILN_GRID_STRIDE(j, n - packs * P) {
    const int64_t i = packs * P + j;
    const A x = load(gate + i);
    store(out + i, x * sigmoid_of(x) * load(up + i));
  }
}

template <typename T>
__device__ __forceinline__ void swiglu_grad(const T* dout, const T* gate, const T* up, T* dgate, T* dup) {
  using A = acc_t<T>;
  const A x = load(gate), s = sigmoid_of(x), dy = load(dout);
  store(dgate, dy * load(up) * s * (A(1) + x * (A(1) - s)));
  store(dup, dy * x * s);
}

template <typename T, bool Vector>
__global__ void swiglu_backward_kernel(int64_t n, T* dgate, T* dup, const T* dout, const T* gate, const T* up) {
  constexpr int P = Vector ? Pack<T>::size : 1;
  const int64_t packs = n / P;
  KILN_GRID_STRIDE(i, packs) {
    if constexpr (Vector) {
      const Pack<T> d = reinterpret_cast<const Pack<T>*>(dout)[i], g = reinterpret_cast<const Pack<T>*>(gate)[i],
                    u = reinterpret_cast<const Pack<T>*>(up)[i];
      Pack<T> dg, du;
#pragma unroll
      for (int k = 0; k < P; ++k) swiglu_grad(&d.v[k], &g.v[k], &u.v[k], &dg.v[k], &du.v[k]);
      reinterpret_cast<Pack<T>*>(dgate)[i] = dg;
      reinterpret_cast<Pack<T>*>(dup)[i] = du;
    } else {
      swiglu_grad(dout + i, gate + i, up + i, dgate + i, dup + i);
    }
  }
  KILN_GRID_STRIDE(j, n - packs * P) {
    const int64_t i = packs * P + j;
    swiglu_grad(dout + i, gate + i, up + i, dgate + i, dup + i);
  }
}

template <typename Launch>
void vector_or_scalar(std::initializer_list<const void*> ptrs, Launch&& launch) {
  bool vector = true;
  for (const void* p : ptrs) vector = vector && aligned16(p);
  if (vector) launch(std::true_type{});
  else launch(std::false_type{});
}

}  // namespace

void swiglu(const Buffer& out, const Buffer& gate, const Buffer& up) {
  NvtxRange range("kiln::swiglu");
  const int64_t n = out.numel();
  if (n == 0) return;
  visit_floating(out.dtype, "swiglu", [&](auto tag) {
    using T = decltype(tag);
    vector_or_scalar({out.data, gate.data, up.data}, [&](auto vector) {
      constexpr bool V = decltype(vector)::value;
      launch("swiglu_kernel", swiglu_kernel<T, V>, blocks_for(V ? n / Pack<T>::size + 1 : n), kThreads, 0, n,
             out.ptr<T>(), gate.ptr<T>(), up.ptr<T>());
    });
  });
}

void swiglu_backward(const Buffer& dgate, const Buffer& dup, const Buffer& dout, const Buffer& gate,
                     const Buffer& up) {
  NvtxRange range("kiln::swiglu_backward");
  const int64_t n = dout.numel();
  if (n == 0) return;
  visit_floating(dout.dtype, "swiglu_backward", [&](auto tag) {
    using T = decltype(tag);
    vector_or_scalar({dgate.data, dup.data, dout.data, gate.data, up.data}, [&](auto vector) {
      constexpr bool V = decltype(vector)::value;
      launch("swiglu_backward_kernel", swiglu_backward_kernel<T, V>, blocks_for(V ? n / Pack<T>::size + 1 : n),
             kThreads, 0, n, dgate.ptr<T>(), dup.ptr<T>(), dout.ptr<T>(), gate.ptr<T>(), up.ptr<T>());
    });
  });
}

namespace {

// One thread per (row, i) pair of elements i and i + half.
template <typename T, typename C>
__global__ void rope_kernel(T* out, const T* x, const C* cos, const C* sin, int64_t pairs, int64_t T_len,
                            int64_t half, bool inverse) {
  KILN_GRID_STRIDE(p, pairs) {
    const int64_t r = p / half, i = p % half, t = r % T_len, at = r * 2 * half + i;
    const float c = float(cos[t * half + i]), s = inverse ? -float(sin[t * half + i]) : float(sin[t * half + i]);
    const float a = float(load(x + at)), b = float(load(x + at + half));
    store(out + at, a * c - b * s);
    store(out + at + half, b * c + a * s);
  }
}

template <>
__global__ void rope_kernel<double, double>(double* out, const double* x, const double* cos, const double* sin,
                                            int64_t pairs, int64_t T_len, int64_t half, bool inverse) {
  KILN_GRID_STRIDE(p, pairs) {
    const int64_t r = p / half, i = p % half, t = r % T_len, at = r * 2 * half + i;
    const double c = cos[t * half + i], s = inverse ? -sin[t * half + i] : sin[t * half + i];
    const double a = x[at], b = x[at + half];
    out[at] = a * c - b * s;
    out[at + half] = b * c + a * s;
  }
}

}  // namespace

void rope(const Buffer& out, const Buffer& x, const Buffer& cos, const Buffer& sin, bool inverse) {
  NvtxRange range("kiln::rope");
  const int64_t half = x.sizes[3] / 2, pairs = x.numel() / 2;
  if (pairs == 0) return;
  visit_floating(x.dtype, "rope", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, double>)
      launch("rope_kernel", rope_kernel<double, double>, blocks_for(pairs), kThreads, 0, out.ptr<double>(),
             x.ptr<double>(), cos.ptr<double>(), sin.ptr<double>(), pairs, x.sizes[2], half, inverse);
    else
      launch("rope_kernel", rope_kernel<T, float>, blocks_for(pairs), kThreads, 0, out.ptr<T>(), x.ptr<T>(),
             cos.ptr<float>(), sin.ptr<float>(), pairs, x.sizes[2], half, inverse);
  });
}

}  // namespace kiln::kernels::cuda
