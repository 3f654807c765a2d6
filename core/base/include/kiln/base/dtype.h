#pragma once
// Element types and their properties.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kiln {

// The element types.
enum class DType : uint8_t { Bool, Int32, Int64, BFloat16, Float16, Float32, Float64 };

// libtorch's short names: kFloat32 for DType::Float32.
inline constexpr DType kBool = DType::Bool;
inline constexpr DType kInt32 = DType::Int32;
inline constexpr DType kInt64 = DType::Int64;
inline constexpr DType kBFloat16 = DType::BFloat16;
inline constexpr DType kFloat16 = DType::Float16;
inline constexpr DType kFloat32 = DType::Float32;
inline constexpr DType kFloat64 = DType::Float64;

// Bytes per element.
constexpr size_t element_size(DType t) {
  switch (t) {
    case DType::Bool: return 1;
    case DType::Int32: return 4;
    case DType::Int64: return 8;
    case DType::BFloat16: return 2;
    case DType::Float16: return 2;
    case DType::Float32: return 4;
    case DType::Float64: return 8;
  }
  return 0;
}

// Floating point: bfloat16, float16, float32, float64.
constexpr bool is_floating(DType t) {
  return t == DType::BFloat16 || t == DType::Float16 || t == DType::Float32 || t == DType::Float64;
}
// Integer: int32, int64 (bool is neither).
constexpr bool is_integral(DType t) { return t == DType::Int32 || t == DType::Int64; }

// "float32", "bfloat16", ... as PyTorch names them.
std::string_view dtype_name(DType t);

}  // namespace kiln
