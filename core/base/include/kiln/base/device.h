#pragma once
// Where a tensor lives: the CPU or one CUDA device.

#include <cstdint>
#include <string>
#include <string_view>

namespace kiln {

// The kinds of device.
enum class DeviceType : uint8_t { CPU, CUDA };

// A device: its type and, for CUDA, its index ("cuda:1").
struct Device {
  DeviceType type = DeviceType::CPU;  // CPU or CUDA
  int index = 0;  // the CUDA device's ordinal; 0 for the CPU

  constexpr Device() = default;  // the CPU
  constexpr Device(DeviceType t, int i = 0) : type(t), index(t == DeviceType::CPU ? 0 : i) {}  // index ignored on the CPU
  // Parses "cpu", "cuda", "cuda:1".
  Device(std::string_view spec);  // NOLINT(google-explicit-constructor)
  Device(const char* spec) : Device(std::string_view(spec)) {}  // NOLINT

  // The type, and equality of type and index.
  constexpr bool is_cpu() const { return type == DeviceType::CPU; }
  constexpr bool is_cuda() const { return type == DeviceType::CUDA; }
  constexpr bool operator==(const Device&) const = default;
  std::string str() const;  // "cpu", "cuda:1"
};

inline constexpr Device kCPU{DeviceType::CPU, 0};  // the host
inline constexpr DeviceType kCUDA = DeviceType::CUDA;  // Device(kCUDA, 1) is cuda:1

}  // namespace kiln
