#include "kiln/base/device.h"

#include <charconv>

#include "kiln/base/error.h"

namespace kiln {

Device::Device(std::string_view spec) {
  if (spec == "cpu") return;
  KILN_CHECK(spec.substr(0, 4) == "cuda", "[Device] unknown device '{}': expected 'cpu', 'cuda' or 'cuda:N'", spec);
  type = DeviceType::CUDA;
  if (spec.size() == 4) return;
  auto digits = spec.substr(5);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
  KILN_CHECK(spec[4] == ':' && ec == std::errc() && end == digits.data() + digits.size() && index >= 0,
             "[Device] unknown device '{}': expected 'cpu', 'cuda' or 'cuda:N'", spec);
}

std::string Device::str() const { return is_cpu() ? std::string("cpu") : fmt::format("cuda:{}", index); }

}  // namespace kiln
