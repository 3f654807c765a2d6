#pragma once
// The elementwise and reduction families that one kernel each implements. A new
// member needs a case in kernels/cpu and kernels/cuda (the compiler's -Wswitch
// points at both) and a front-end in core.

#include <cstdint>

namespace kiln {

// out = f(x; a, b). The float-only members run on floating dtypes; the front-end casts.
enum class UnaryOp : uint8_t {
  Neg, Abs, Sign, Exp, Log, Sqrt, Rsqrt, Tanh, Sigmoid, Relu, GeluErf, GeluTanh, Silu, Sin, Cos,
  Floor, Ceil, Round,  // Round: half to even
  PowScalar,  // x ^ a
  Clamp,      // min(max(x, a), b)
};

// out = f(x, y), both operands already broadcast to out's shape and of one dtype.
// Comparisons and logical ops write bool.
enum class BinaryOp : uint8_t {
  Add, Sub, Mul, Div, Pow, Maximum, Minimum,
  Eq, Ne, Lt, Le, Gt, Ge, LogicalAnd, LogicalOr,
  GeluErfGrad,   // x = upstream grad, y = input: grad * gelu'(input)
  GeluTanhGrad,
  SiluGrad,
};

// Whether op writes bool (comparisons and logical ops).
constexpr bool is_comparison(BinaryOp op)
 { return op >= BinaryOp::Eq && op <= BinaryOp::LogicalOr; }

// Reductions over a set of dims; out keeps the reduced dims with size 1.
enum class ReduceOp : uint8_t { Sum, Mean, Max, Min, ArgMax, ArgMin, Var };

}  // namespace kiln
