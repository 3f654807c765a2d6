// safetensors reader and writer, and atomic file replacement.

#include "kiln/serialize.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "dispatch.h"

namespace kiln {

namespace {

const char* safetensors_dtype(DType t) {
  switch (t) {
    case DType::Bool: return "BOOL";
    case DType::Int32: return "I32";
    case DType::Int64: return "I64";
    case DType::BFloat16: return "BF16";
    case DType::Float16: return "F16";
    case DType::Float32: return "F32";
    case DType::Float64: return "F64";
  }
  return "?";
}

DType dtype_from(const std::string& name, const std::string& path, const std::string& tensor) {
  for (DType t : {kBool, kInt32, kInt64, kBFloat16, kFloat16, kFloat32, kFloat64})
    if (name == safetensors_dtype(t)) return t;
  KILN_FAIL("[load_safetensors] {}: tensor '{}' has dtype {} which kiln does not support", path, tensor, name);
}

void write_all(int fd, const char* data, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    KILN_CHECK(w > 0, "[write_file_atomic] writing {} failed: {}", path, std::strerror(errno));
    data += w;
    n -= static_cast<size_t>(w);
  }
}

void fsync_directory(const std::filesystem::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // best effort: some filesystems do not allow it
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KILN_CHECK(in.good(), "[read_file] cannot read {}", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  std::filesystem::path target(path);
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  KILN_CHECK(fd >= 0, "[write_file_atomic] cannot create {}: {}", tmp, std::strerror(errno));
  try {
    write_all(fd, bytes.data(), bytes.size(), tmp);
    KILN_CHECK(::fsync(fd) == 0, "[write_file_atomic] fsync of {} failed: {}", tmp, std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  KILN_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "[write_file_atomic] renaming {} to {} failed: {}", tmp, path,
             std::strerror(errno));
  fsync_directory(target.parent_path());
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  NoGradGuard no_grad;
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<Tensor> host;
  size_t offset = 0;
  for (const auto& [name, t] : tensors) {
    KILN_CHECK(t.defined(), "[save_safetensors] tensor '{}' is undefined", name);
    KILN_CHECK(name != "__metadata__", "[save_safetensors] '__metadata__' is reserved");
    Tensor c = t.detach().to(kCPU).contiguous();
    size_t n = static_cast<size_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", safetensors_dtype(c.dtype())}, {"shape", c.sizes()}, {"data_offsets", {offset, offset + n}}};
    offset += n;
    host.push_back(c);
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  std::string bytes(8, '\0');
  uint64_t len = json.size();
  std::memcpy(bytes.data(), &len, 8);  // little-endian hosts only (x86-64, aarch64)
  bytes += json;
  bytes.reserve(bytes.size() + offset);
  for (const Tensor& c : host)
    bytes.append(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()) * c.element_size());
  write_file_atomic(path, bytes);
}

TensorFile load_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KILN_CHECK(in.good(), "[load_safetensors] cannot open {}: {}", path, std::strerror(errno));
  in.seekg(0, std::ios::end);
  const auto file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  uint64_t header_len = 0;
  KILN_CHECK(file_size >= 8 && in.read(reinterpret_cast<char*>(&header_len), 8),
             "[load_safetensors] {} is too short to be a safetensors file ({} bytes)", path, file_size);
  // A safetensors header is JSON: an object right after its 8-byte length.
  KILN_CHECK(file_size > 8 && in.peek() == '{', "[load_safetensors] {} is not a safetensors file (no JSON header "
             "after the first 8 bytes: a PyTorch .bin, a zip or another format?)", path);
  KILN_CHECK(header_len <= file_size - 8, "[load_safetensors] {}: header of {} bytes does not fit in a {}-byte file "
             "(truncated?)", path, header_len, file_size);
  std::string json(header_len, '\0');
  in.read(json.data(), static_cast<std::streamsize>(header_len));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    KILN_FAIL("[load_safetensors] {}: the header is not valid JSON: {}", path, e.what());
  }
  KILN_CHECK(header.is_object(), "[load_safetensors] {}: the header is not a JSON object", path);
  const uint64_t data_size = file_size - 8 - header_len;
  TensorFile out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      for (const auto& [k, v] : entry.items())
        out.metadata[k] = v.is_string() ? v.get<std::string>() : v.dump();
      continue;
    }
    try {
      DType dt = dtype_from(entry.at("dtype").get<std::string>(), path, name);
      Shape shape = entry.at("shape").get<Shape>();
      auto offsets = entry.at("data_offsets").get<std::vector<uint64_t>>();
      KILN_CHECK(offsets.size() == 2 && offsets[0] <= offsets[1] && offsets[1] <= data_size,
                 "[load_safetensors] {}: tensor '{}' has byte range outside the {}-byte data (truncated file?)", path,
                 name, data_size);
      for (int64_t s : shape) KILN_CHECK(s >= 0, "[load_safetensors] {}: tensor '{}' has a negative size", path, name);
      uint64_t expected = static_cast<uint64_t>(shape_numel(shape)) * element_size(dt);
      KILN_CHECK(offsets[1] - offsets[0] == expected,
                 "[load_safetensors] {}: tensor '{}' spans {} bytes but its shape and dtype need {}", path, name,
                 offsets[1] - offsets[0], expected);
      ranges.emplace_back(offsets[0], offsets[1]);
      Tensor t = empty(shape, dt);
      in.seekg(static_cast<std::streamoff>(8 + header_len + offsets[0]));
      in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(expected));
      KILN_CHECK(in.good(), "[load_safetensors] {}: reading tensor '{}' failed", path, name);
      out.tensors.emplace(name, t);
    } catch (const nlohmann::json::exception& e) {
      KILN_FAIL("[load_safetensors] {}: bad entry for tensor '{}': {}", path, name, e.what());
    }
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    KILN_CHECK(ranges[i].first >= ranges[i - 1].second, "[load_safetensors] {}: tensors overlap in the data", path);
  return out;
}

}  // namespace kiln
