#include "kiln/nn/rope.h"

#include <cmath>
#include <map>
#include <mutex>
#include <numbers>
#include <tuple>

#include "kiln/ops.h"

namespace kiln::nn {

std::vector<double> rope_inverse_frequencies(int64_t head_dim, const RopeSpec& spec) {
  KILN_CHECK(head_dim > 0 && head_dim % 2 == 0 && spec.theta > 0,
             "[rope] needs an even head size and theta > 0, got head size {} and theta {}", head_dim, spec.theta);
  const int64_t half = head_dim / 2;
  std::vector<double> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) inv[i] = std::pow(spec.theta, -static_cast<double>(2 * i) / head_dim);
  if (!spec.scaling) return inv;
  const RopeScaling& s = *spec.scaling;
  KILN_CHECK(s.factor > 0 && s.high_freq_factor > s.low_freq_factor && s.original_max_positions > 0,
             "[rope] Llama 3 scaling needs factor > 0 and high_freq_factor > low_freq_factor, got {}, {} and {}",
             s.factor, s.high_freq_factor, s.low_freq_factor);
  const double context = static_cast<double>(s.original_max_positions);
  const double low_wavelength = context / s.low_freq_factor, high_wavelength = context / s.high_freq_factor;
  for (double& f : inv) {
    const double wavelength = 2 * std::numbers::pi / f;
    if (wavelength > low_wavelength) {
      f /= s.factor;
    } else if (wavelength >= high_wavelength) {  // between: interpolate
      const double smooth = (context / wavelength - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      f = (1 - smooth) * f / s.factor + smooth * f;
    }
  }
  return inv;
}

namespace {

using Key = std::tuple<int64_t, double, bool, double, double, double, int64_t, DType, DeviceType, int>;

struct Tables {
  int64_t length = 0;
  Tensor cos, sin;
};

}  // namespace

std::pair<Tensor, Tensor> rope_tables(int64_t first, int64_t count, int64_t head_dim, const RopeSpec& spec,
                                      DType dtype, Device device) {
  KILN_CHECK(first >= 0 && count >= 0, "[rope] positions [{}, {}) are not valid", first, first + count);
  static std::mutex mutex;
  static std::map<Key, Tables> cache;
  const RopeScaling scaling = spec.scaling.value_or(RopeScaling{});
  const Key key{head_dim, spec.theta, spec.scaling.has_value(), scaling.factor, scaling.low_freq_factor,
                scaling.high_freq_factor, scaling.original_max_positions, dtype, device.type, device.index};
  std::lock_guard<std::mutex> lock(mutex);
  Tables& t = cache[key];
  if (t.length < first + count) {
    // Grown to the next power of two: a sequence that grows by one token recomputes rarely.
    int64_t length = 1;
    while (length < first + count) length *= 2;
    const std::vector<double> inv = rope_inverse_frequencies(head_dim, spec);
    const int64_t half = head_dim / 2;
    std::vector<double> c(static_cast<size_t>(length * half)), s(c.size());
    for (int64_t p = 0; p < length; ++p)
      for (int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(p) * inv[i];
        c[p * half + i] = std::cos(angle);
        s[p * half + i] = std::sin(angle);
      }
    t = {length, tensor(c).to(device, dtype).view({length, half}), tensor(s).to(device, dtype).view({length, half})};
  }
  return {t.cos.narrow(0, first, count), t.sin.narrow(0, first, count)};
}

Tensor rope_at(const Tensor& x, const Tensor& positions, const RopeSpec& spec) {
  KILN_CHECK(x.dim() == 4 && positions.dim() == 2 && positions.dtype() == kInt64 && positions.size(0) == x.size(0) &&
                 positions.size(1) == x.size(2),
             "[rope] expects x (B, H, T, D) and int64 positions (B, T), got {} [{}] and {} [{}]", x.dtype(),
             fmt::join(x.sizes(), ", "), positions.dtype(), fmt::join(positions.sizes(), ", "));
  const int64_t B = x.size(0), T = x.size(2), half = x.size(3) / 2;
  const DType stat = x.dtype() == kFloat64 ? kFloat64 : kFloat32;
  const int64_t last = max(positions).item<int64_t>();
  // A table row per token, broadcast over the heads; "rotate half" as kiln::rope.
  auto [cos_all, sin_all] = rope_tables(0, last + 1, x.size(3), spec, stat, x.device());
  const Tensor at = positions.reshape({-1});
  Tensor cos = index_select(cos_all, 0, at).view({B, 1, T, half}), sin = index_select(sin_all, 0, at).view({B, 1, T, half});
  Tensor xs = x.to(stat), x1 = xs.narrow(3, 0, half), x2 = xs.narrow(3, half, half);
  return cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, 3).to(x.dtype());
}

}  // namespace kiln::nn
