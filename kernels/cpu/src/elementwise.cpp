// Elementwise CPU kernels: fill, copy/cast, random draws, unary, binary, where.

#include <algorithm>
#include <atomic>
#include <cmath>

#include "kiln/base/philox.h"
#include "kiln/kernels/cpu.h"
#include "loops.h"
#include "vec_math.h"

namespace kiln::kernels::cpu {

namespace {

template <typename To, typename From>
inline To convert(From v) {
  if constexpr (std::is_same_v<To, bool>) return static_cast<float>(acc_t<From>(v)) != 0.0f;
  else if constexpr (std::is_same_v<To, BFloat16> || std::is_same_v<To, Half>) return To(static_cast<float>(acc_t<From>(v)));
  else return static_cast<To>(acc_t<From>(v));
}

// o[k so] = f(a[k sa]) for k < n, f on acc_t<T>.
template <typename T, typename O, typename F>
KILN_VECTOR_LOOP void unary_run(O* o, const T* a, int64_t n, int64_t so, int64_t sa, const F& f) {
  if (so == 1 && sa == 1) {
    for (int64_t k = 0; k < n; ++k) o[k] = O(f(acc_t<T>(a[k])));
  } else {
    for (int64_t k = 0; k < n; ++k) o[k * so] = O(f(acc_t<T>(a[k * sa])));
  }
}

// o[k so] = f(a[k sa], b[k sb]) for k < n. Contiguous runs, and runs beside
// one broadcast value (stride 0: a bias, a scale, a gradient of a sum), get
// loops that vectorize.
template <typename T, typename O, typename F>
KILN_VECTOR_LOOP void binary_run(O* o, const T* a, const T* b, int64_t n, int64_t so, int64_t sa, int64_t sb,
                                 const F& f) {
  if (so == 1 && sa == 1 && sb == 1) {
    for (int64_t k = 0; k < n; ++k) o[k] = O(f(acc_t<T>(a[k]), acc_t<T>(b[k])));
  } else if (so == 1 && sa == 1 && sb == 0) {
    const acc_t<T> bv = acc_t<T>(b[0]);
    for (int64_t k = 0; k < n; ++k) o[k] = O(f(acc_t<T>(a[k]), bv));
  } else if (so == 1 && sa == 0 && sb == 1) {
    const acc_t<T> av = acc_t<T>(a[0]);
    for (int64_t k = 0; k < n; ++k) o[k] = O(f(av, acc_t<T>(b[k])));
  } else {
    for (int64_t k = 0; k < n; ++k) o[k * so] = O(f(acc_t<T>(a[k * sa]), acc_t<T>(b[k * sb])));
  }
}

// out[i] = f(x[i]), with f on acc_t<T>.
template <typename T, typename F>
void map_unary(const Buffer& out, const Buffer& x, F f) {
  for_each<2>({&out, &x}, [&](auto off, int64_t n, auto st) {
    unary_run<T, T>(out.ptr<T>() + off[0], x.ptr<T>() + off[1], n, st[0], st[1], f);
  });
}

// out[i] = f(x[i], y[i]); T is the operands' type, O the output's.
template <typename T, typename O, typename F>
void map_binary(const Buffer& out, const Buffer& x, const Buffer& y, F f) {
  for_each<3>({&out, &x, &y}, [&](auto off, int64_t n, auto st) {
    binary_run<T, O>(out.ptr<O>() + off[0], x.ptr<T>() + off[1], y.ptr<T>() + off[2], n, st[0], st[1], st[2], f);
  });
}

template <typename A>
A gelu_erf(A x) { return A(0.5) * x * (A(1) + std::erf(x * A(M_SQRT1_2))); }

}  // namespace

void fill(const Buffer& out, double value) {
  visit_dtype(out.dtype, "fill", [&](auto tag) {
    using T = decltype(tag);
    T v = convert<T>(value);
    for_each<1>({&out}, [&](auto off, int64_t n, auto st) {
      T* o = out.ptr<T>() + off[0];
      if (st[0] == 1) std::fill(o, o + n, v);
      else for (int64_t k = 0; k < n; ++k) o[k * st[0]] = v;
    });
  });
}

void arange(const Buffer& out, double start, double step) {
  visit_numeric(out.dtype, "arange", [&](auto tag) {
    using T = decltype(tag);
    T* o = out.ptr<T>();
    int64_t n = out.numel();
    for (int64_t i = 0; i < n; ++i) o[i] = convert<T>(start + static_cast<double>(i) * step);
  });
}

void copy(const Buffer& out, const Buffer& src) {
  visit_dtype(out.dtype, "copy", [&](auto otag) {
    using O = decltype(otag);
    visit_dtype(src.dtype, "copy", [&](auto itag) {
      using I = decltype(itag);
      for_each<2>({&out, &src}, [&](auto off, int64_t n, auto st) {
        O* o = out.ptr<O>() + off[0];
        const I* a = src.ptr<I>() + off[1];
        if (st[0] == 1 && st[1] == 1) {
          for (int64_t k = 0; k < n; ++k) o[k] = convert<O>(a[k]);
        } else if (st[0] == 1 && st[1] == 0) {  // an expanded value (the gradient of a sum)
          std::fill(o, o + n, convert<O>(a[0]));
        } else {
          for (int64_t k = 0; k < n; ++k) o[k * st[0]] = convert<O>(a[k * st[1]]);
        }
      });
    });
  });
}

namespace {
// out[i] for a contiguous floating buffer, a counter block (four elements) at
// a time: draw(block, values) fills the values of elements 4 block .. 4 block
// + 3 from that block's Philox outputs, computed once for all four. The same
// numbers as philox::uniform and philox::normal element by element.
template <typename F>
void draw_floating(const Buffer& out, const char* op, F&& draw) {
  visit_floating(out.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    T* o = out.ptr<T>();
    const int64_t n = out.numel(), blocks = (n + 3) / 4;
    parallel_for(blocks, 128, [&](int64_t lo, int64_t hi) {
      double v[4];
      for (int64_t blk = lo; blk < hi; ++blk) {
        draw(static_cast<uint64_t>(blk), v);
        for (int64_t j = 0; j < 4 && 4 * blk + j < n; ++j) o[4 * blk + j] = T(v[j]);
      }
    });
  });
}

}  // namespace

void uniform(const Buffer& out, uint64_t seed, uint64_t offset, double low, double high) {
  draw_floating(out, "rand", [&](uint64_t blk, double* v) {
    const philox::Block c = philox::philox4x32_10(seed, offset + blk, 0);
    for (int j = 0; j < 4; ++j) v[j] = low + (high - low) * philox::uniform_of(c.v[j]);
  });
}

void normal(const Buffer& out, uint64_t seed, uint64_t offset, double mean, double std) {
  draw_floating(out, "randn", [&](uint64_t blk, double* v) {
    const philox::Block c0 = philox::philox4x32_10(seed, offset + blk, 0), c1 = philox::philox4x32_10(seed, offset + blk, 1);
    for (int j = 0; j < 4; ++j) v[j] = mean + std * philox::normal_of(c0.v[j], c1.v[j]);
  });
}

void randint(const Buffer& out, uint64_t seed, uint64_t offset, int64_t low, int64_t high) {
  visit_numeric(out.dtype, "randint", [&](auto tag) {
    using T = decltype(tag);
    T* o = out.ptr<T>();
    int64_t n = out.numel();
    auto range = static_cast<uint64_t>(high - low);
    parallel_for(n, 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        // 64 random bits from two draws keep the modulo bias negligible.
        uint64_t r = (uint64_t(philox::bits(seed, offset, i, 0)) << 32) | philox::bits(seed, offset, i, 1);
        o[i] = convert<T>(low + static_cast<int64_t>(r % range));
      }
    });
  });
}

void unary(UnaryOp op, const Buffer& out, const Buffer& x, double a, double b) {
  switch (op) {
    case UnaryOp::Neg:
      return visit_numeric(x.dtype, "neg", [&](auto t) { map_unary<decltype(t)>(out, x, [](auto v) { return -v; }); });
    case UnaryOp::Abs:
      return visit_numeric(x.dtype, "abs", [&](auto t) {
        map_unary<decltype(t)>(out, x, [](auto v) { return v < 0 ? -v : v; });
      });
    case UnaryOp::Sign:
      return visit_numeric(x.dtype, "sign", [&](auto t) {
        map_unary<decltype(t)>(out, x, [](auto v) { return decltype(v)((v > 0) - (v < 0)); });
      });
    case UnaryOp::Clamp:
      return visit_numeric(x.dtype, "clamp", [&](auto t) {
        using A = acc_t<decltype(t)>;
        map_unary<decltype(t)>(out, x, [&](A v) {
          if constexpr (std::is_floating_point_v<A>)
            if (std::isnan(v)) return v;
          const double r = std::max(static_cast<double>(v), a);  // then the max: PyTorch's order when a > b
          return A(r > b ? b : r);
        });
      });
    default: break;
  }
  visit_floating(x.dtype, "unary", [&](auto t) {
    using T = decltype(t);
    using A = acc_t<T>;
    switch (op) {
      case UnaryOp::Exp: return map_unary<T>(out, x, [](A v) { return exp_of(v); });
      case UnaryOp::Log: return map_unary<T>(out, x, [](A v) { return std::log(v); });
      case UnaryOp::Sqrt: return map_unary<T>(out, x, [](A v) { return std::sqrt(v); });
      case UnaryOp::Rsqrt: return map_unary<T>(out, x, [](A v) { return A(1) / std::sqrt(v); });
      case UnaryOp::Tanh: return map_unary<T>(out, x, [](A v) { return std::tanh(v); });
      case UnaryOp::Sigmoid: return map_unary<T>(out, x, [](A v) { return sigmoid_of(v); });
      case UnaryOp::Relu: return map_unary<T>(out, x, [](A v) { return v > 0 ? v : (std::isnan(v) ? v : A(0)); });
      case UnaryOp::GeluErf: return map_unary<T>(out, x, [](A v) { return gelu_erf(v); });
      case UnaryOp::GeluTanh: return map_unary<T>(out, x, [](A v) { return gelu_tanh_of(v); });
      case UnaryOp::Silu: return map_unary<T>(out, x, [](A v) { return v * sigmoid_of(v); });
      case UnaryOp::PowScalar: return map_unary<T>(out, x, [&](A v) { return A(std::pow(v, A(a))); });
      case UnaryOp::Sin: return map_unary<T>(out, x, [](A v) { return std::sin(v); });
      case UnaryOp::Cos: return map_unary<T>(out, x, [](A v) { return std::cos(v); });
      case UnaryOp::Floor: return map_unary<T>(out, x, [](A v) { return std::floor(v); });
      case UnaryOp::Ceil: return map_unary<T>(out, x, [](A v) { return std::ceil(v); });
      case UnaryOp::Round: return map_unary<T>(out, x, [](A v) { return std::nearbyint(v); });
      case UnaryOp::Neg: case UnaryOp::Abs: case UnaryOp::Sign: case UnaryOp::Clamp: break;
    }
  });
}

void binary(BinaryOp op, const Buffer& out, const Buffer& x, const Buffer& y) {
  if (is_comparison(op)) {
    visit_dtype(x.dtype, "compare", [&](auto t) {
      using T = decltype(t);
      auto cmp = [&](auto f) { map_binary<T, bool>(out, x, y, f); };
      switch (op) {
        case BinaryOp::Eq: return cmp([](auto p, auto q) { return p == q; });
        case BinaryOp::Ne: return cmp([](auto p, auto q) { return p != q; });
        case BinaryOp::Lt: return cmp([](auto p, auto q) { return p < q; });
        case BinaryOp::Le: return cmp([](auto p, auto q) { return p <= q; });
        case BinaryOp::Gt: return cmp([](auto p, auto q) { return p > q; });
        case BinaryOp::Ge: return cmp([](auto p, auto q) { return p >= q; });
        case BinaryOp::LogicalAnd: return cmp([](auto p, auto q) { return p != 0 && q != 0; });
        case BinaryOp::LogicalOr: return cmp([](auto p, auto q) { return p != 0 || q != 0; });
        default: break;
      }
    });
    return;
  }
  visit_dtype(x.dtype, "binary", [&](auto t) {
    using T = decltype(t);
    using A = acc_t<T>;
    auto map = [&](auto f) { map_binary<T, T>(out, x, y, f); };
    switch (op) {
      case BinaryOp::Add:
        if constexpr (std::is_same_v<T, bool>) return map([](bool p, bool q) { return p || q; });
        else return map([](A p, A q) { return A(p + q); });
      case BinaryOp::Sub: return map([](A p, A q) { return A(p - q); });
      case BinaryOp::Mul:
        if constexpr (std::is_same_v<T, bool>) return map([](bool p, bool q) { return p && q; });
        else return map([](A p, A q) { return A(p * q); });
      case BinaryOp::Div:
        if constexpr (std::is_integral_v<A> && !std::is_same_v<A, bool>) {
          // Exceptions cannot leave an OpenMP region: flag, then raise after the loop.
          std::atomic<bool> by_zero{false};
          map([&](A p, A q) {
            if (q == 0) {
              by_zero.store(true, std::memory_order_relaxed);
              return A(0);
            }
            A r = p / q;  // floor division, as PyTorch's div(rounding_mode='floor')
            return A((r * q != p && (p < 0) != (q < 0)) ? r - 1 : r);
          });
          KILN_CHECK(!by_zero.load(), "[div] integer division by zero");
          return;
        } else {
          return map([](A p, A q) { return p / q; });
        }
      case BinaryOp::Pow: return map([](A p, A q) { return A(std::pow(p, q)); });
      case BinaryOp::Maximum:
        return map([](A p, A q) {
          if constexpr (std::is_floating_point_v<A>)
            if (std::isnan(p) || std::isnan(q)) return p + q;
          return p > q ? p : q;
        });
      case BinaryOp::Minimum:
        return map([](A p, A q) {
          if constexpr (std::is_floating_point_v<A>)
            if (std::isnan(p) || std::isnan(q)) return p + q;
          return p < q ? p : q;
        });
      case BinaryOp::GeluErfGrad:
        if constexpr (std::is_floating_point_v<A>)
          return map([](A g, A v) {
            A cdf = A(0.5) * (A(1) + std::erf(v * A(M_SQRT1_2)));
            A pdf = std::exp(A(-0.5) * v * v) * A(0.3989422804014327);  // 1 / sqrt(2 pi)
            return g * (cdf + v * pdf);
          });
        break;
      case BinaryOp::GeluTanhGrad:
        if constexpr (std::is_floating_point_v<A>)
          return map([](A g, A v) { return g * gelu_tanh_grad_of(v); });
        break;
      case BinaryOp::SiluGrad:
        if constexpr (std::is_floating_point_v<A>)
          return map([](A g, A v) {
            A s = sigmoid_of(v);
            return g * s * (A(1) + v * (A(1) - s));
          });
        break;
      default: break;
    }
    KILN_FAIL("[binary] op {} is not defined for dtype {}", static_cast<int>(op), x.dtype);
  });
}

void where(const Buffer& out, const Buffer& cond, const Buffer& x, const Buffer& y) {
  visit_dtype(out.dtype, "where", [&](auto t) {
    using T = decltype(t);
    for_each<4>({&out, &cond, &x, &y}, [&](auto off, int64_t n, auto st) {
      T* o = out.ptr<T>() + off[0];
      const bool* c = cond.ptr<bool>() + off[1];
      const T* a = x.ptr<T>() + off[2];
      const T* b = y.ptr<T>() + off[3];
      for (int64_t k = 0; k < n; ++k) o[k * st[0]] = c[k * st[1]] ? a[k * st[2]] : b[k * st[3]];
    });
  });
}

namespace {

template <typename T>
KILN_VECTOR_LOOP void swiglu_run(T* o, const T* g, const T* u, int64_t n) {
  using A = acc_t<T>;
  for (int64_t i = 0; i < n; ++i) {
    const A x = A(g[i]);
    o[i] = T(x * sigmoid_of(x) * A(u[i]));
  }
}

template <typename T>
KILN_VECTOR_LOOP void swiglu_backward_run(T* dg, T* du, const T* d, const T* g, const T* u, int64_t n) {
  using A = acc_t<T>;
  for (int64_t i = 0; i < n; ++i) {
    const A x = A(g[i]), s = sigmoid_of(x), dy = A(d[i]);
    dg[i] = T(dy * A(u[i]) * s * (A(1) + x * (A(1) - s)));
    du[i] = T(dy * x * s);
  }
}

}  // namespace

void swiglu(const Buffer& out, const Buffer& gate, const Buffer& up) {
  visit_floating(out.dtype, "swiglu", [&](auto t) {
    using T = decltype(t);
    parallel_for(out.numel(), 8, [&](int64_t lo, int64_t hi) {
      swiglu_run(out.ptr<T>() + lo, gate.ptr<T>() + lo, up.ptr<T>() + lo, hi - lo);
    });
  });
}

void swiglu_backward(const Buffer& dgate, const Buffer& dup, const Buffer& dout, const Buffer& gate,
                     const Buffer& up) {
  visit_floating(dout.dtype, "swiglu_backward", [&](auto t) {
    using T = decltype(t);
    parallel_for(dout.numel(), 12, [&](int64_t lo, int64_t hi) {
      swiglu_backward_run(dgate.ptr<T>() + lo, dup.ptr<T>() + lo, dout.ptr<T>() + lo, gate.ptr<T>() + lo,
                          up.ptr<T>() + lo, hi - lo);
    });
  });
}

void rope(const Buffer& out, const Buffer& x, const Buffer& cos, const Buffer& sin, bool inverse) {
  const int64_t T = x.sizes[2], D = x.sizes[3], half = D / 2, rows = x.numel() / std::max<int64_t>(D, 1);
  visit_floating(x.dtype, "rope", [&](auto tag) {
    using T_ = decltype(tag);
    using A = acc_t<T_>;
    const bool f64 = cos.dtype == DType::Float64;
    auto table = [&](const Buffer& b, int64_t i) { return f64 ? A(b.ptr<double>()[i]) : A(b.ptr<float>()[i]); };
    parallel_for(rows, D, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        const int64_t t = r % T;
        const T_* xr = x.ptr<T_>() + r * D;
        T_* o = out.ptr<T_>() + r * D;
        for (int64_t i = 0; i < half; ++i) {
          const A c = table(cos, t * half + i), s = inverse ? -table(sin, t * half + i) : table(sin, t * half + i);
          const A a = A(xr[i]), b = A(xr[i + half]);
          o[i] = T_(a * c - b * s);
          o[i + half] = T_(b * c + a * s);
        }
      }
    });
  });
}

}  // namespace kiln::kernels::cpu
