#pragma once
// Where a tensor lives: the CPU or one CUDA device.

#include <cstdint>
#include <string>
#include <string_view>


namespace kiln {

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  constexpr Device() = default;
  constexpr Device(DeviceType t, int i = 0) : type(t), index(t == DeviceType::CPU ? 0 : i) {}
  // Parses "cpu", "cuda", "cuda:1".
  Device(std::string_view spec);  // NOLINT(google-explicit-constructor)
  Device(const char* spec) : Device(std::string_view(spec)) {}  // NOLINT

  constexpr bool is_cpu() const { return type == DeviceType::CPU; }
  constexpr bool is_cuda() const { return type == DeviceType::CUDA; }
  constexpr bool operator==(const Device&) const = default;
  std::string str() const;
};

inline constexpr Device kCPU{DeviceType::CPU, 0};
inline constexpr DeviceType kCUDA = DeviceType::CUDA;  // Device(kCUDA, 1) is cuda:1

}  // namespace kiln
