#pragma once
// bfloat16 and float16 storage types for host code. Arithmetic happens in float:
// load with to_float, compute, store with the round-to-nearest-even constructor.

#include <cstdint>
#include <cstring>

#include "kiln/base/macros.h"

namespace kiln {

namespace detail {
KILN_HOST_DEVICE inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
KILN_HOST_DEVICE inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace detail

// bfloat16: float32's sign, exponent and top 7 mantissa bits.
struct BFloat16 {
  uint16_t bits = 0;  // the stored pattern
  BFloat16() = default;
  // f rounded to nearest even (NaN stays NaN).
  KILN_HOST_DEVICE BFloat16(float f) {  // NOLINT(google-explicit-constructor)
    uint32_t u = detail::float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep it quiet
      bits = static_cast<uint16_t>((u >> 16) | 0x40);
      return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    bits = static_cast<uint16_t>(u >> 16);
  }
  // The exact float value.
  KILN_HOST_DEVICE operator float() const { return detail::bits_float(uint32_t(bits) << 16); }  // NOLINT
};

// IEEE float16: 5 exponent bits, 10 mantissa bits, subnormals.
struct Half {
  uint16_t bits = 0;  // the stored pattern
  Half() = default;
  // f rounded to nearest even; infinity past 65504, subnormals below 2^-14.
  KILN_HOST_DEVICE Half(float f) {  // NOLINT(google-explicit-constructor)
    uint32_t x = detail::float_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t abs = x & 0x7fffffffu;
    if (abs > 0x7f800000u) {  // NaN
      bits = static_cast<uint16_t>(sign | 0x7e00u);
      return;
    }
    if (abs >= 0x477ff000u) {  // rounds to >= 65520: infinity
      bits = static_cast<uint16_t>(sign | 0x7c00u);
      return;
    }
    if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
      // Adding 0.5 aligns the subnormal's bits to the float mantissa's low bits,
      // and float addition rounds to nearest even for us.
      float r = detail::bits_float(abs) + 0.5f;
      bits = static_cast<uint16_t>(sign | (detail::float_bits(r) - 0x3f000000u));
      return;
    }
    uint32_t mant_odd = (abs >> 13) & 1u;
    abs += 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round
    bits = static_cast<uint16_t>(sign | (abs >> 13));
  }
  // The exact float value.
  KILN_HOST_DEVICE operator float() const {  // NOLINT
    uint32_t sign = uint32_t(bits & 0x8000u) << 16;
    uint32_t exp = (bits >> 10) & 0x1fu;
    uint32_t mant = bits & 0x3ffu;
    if (exp == 0x1f) return detail::bits_float(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {  // subnormal or zero: mant * 2^-24
      float f = static_cast<float>(mant) * 5.9604644775390625e-8f;
      return sign ? -f : f;
    }
    return detail::bits_float(sign | ((exp + 112) << 23) | (mant << 13));
  }
};

}  // namespace kiln
