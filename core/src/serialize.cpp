// safetensors reader and writer, and atomic file replacement.

#include "kiln/serialize.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <tuple>
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

// The reference loader's bound on the header (safetensors' MAX_HEADER_SIZE).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// A header is an object of tensor entries and string metadata: nothing nests deeper.
constexpr int kMaxHeaderDepth = 3;

// One tensor of the header: its dtype, shape and byte range in the data.
struct HeaderEntry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

// A JSON number that must be a non-negative integer (1e30 and 4.7 are not).
uint64_t unsigned_integer(const nlohmann::json& j, const std::string& path, const std::string& tensor,
                          const char* field) {
  KILN_CHECK(j.is_number_unsigned() || (j.is_number_integer() && j.get<int64_t>() >= 0),
             "[load_safetensors] {}: tensor '{}' has {} {}: expected non-negative integers", path, tensor, field,
             j.dump());
  return j.get<uint64_t>();
}

// Parses the JSON header, refusing duplicate keys (which JSON would let the
// last one win) and nesting past what the format has.
nlohmann::json parse_header(const std::string& json, const std::string& path) {
  std::vector<std::vector<std::string>> keys;  // of each open object
  auto check = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    KILN_CHECK(depth <= kMaxHeaderDepth, "[load_safetensors] {}: the header nests deeper than a safetensors header "
               "does ({} levels)", path, kMaxHeaderDepth);
    if (event == Event::object_start) keys.emplace_back();
    if (event == Event::object_end) keys.pop_back();
    if (event == Event::key) {
      auto& seen = keys.back();
      const std::string& key = parsed.get_ref<const std::string&>();
      KILN_CHECK(std::find(seen.begin(), seen.end(), key) == seen.end(),
                 "[load_safetensors] {}: the header names '{}' twice", path, key);
      seen.push_back(key);
    }
    return true;
  };
  try {
    return nlohmann::json::parse(json, check);
  } catch (const nlohmann::json::exception& e) {
    KILN_FAIL("[load_safetensors] {}: the header is not valid JSON: {}", path, e.what());
  }
}

// The header's tensor entries, each checked, sorted by offset and covering
// the data exactly (no gaps, no overlaps), as the reference loader requires;
// the string metadata goes to metadata.
std::vector<HeaderEntry> header_entries(const std::string& json, uint64_t data_size, const std::string& path,
                                        std::map<std::string, std::string>& metadata) {
  const nlohmann::json header = parse_header(json, path);
  KILN_CHECK(header.is_object(), "[load_safetensors] {}: the header is not a JSON object", path);
  std::vector<HeaderEntry> entries;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      KILN_CHECK(entry.is_object(), "[load_safetensors] {}: __metadata__ is not a map of strings", path);
      for (const auto& [k, v] : entry.items()) {
        KILN_CHECK(v.is_string(), "[load_safetensors] {}: metadata '{}' is not a string (the format allows only "
                   "strings)", path, k);
        metadata[k] = v.get<std::string>();
      }
      continue;
    }
    auto field = [&](const char* key) -> const nlohmann::json& {
      KILN_CHECK(entry.is_object() && entry.contains(key), "[load_safetensors] {}: tensor '{}' has no {}", path,
                 name, key);
      return entry.at(key);
    };
    const nlohmann::json &dtype = field("dtype"), &shape = field("shape"), &offsets = field("data_offsets");
    KILN_CHECK(dtype.is_string(), "[load_safetensors] {}: tensor '{}' has dtype {}: expected a string", path, name,
               dtype.dump());
    KILN_CHECK(shape.is_array() && offsets.is_array() && offsets.size() == 2,
               "[load_safetensors] {}: tensor '{}' needs a shape list and two data_offsets", path, name);
    HeaderEntry e{name, dtype_from(dtype.get<std::string>(), path, name), {}, 0, 0};
    for (const auto& s : shape) {
      const uint64_t size = unsigned_integer(s, path, name, "shape");
      KILN_CHECK(size <= uint64_t{INT64_MAX}, "[load_safetensors] {}: tensor '{}' has size {}", path, name, size);
      e.shape.push_back(static_cast<int64_t>(size));
    }
    e.begin = unsigned_integer(offsets[0], path, name, "data_offsets");
    e.end = unsigned_integer(offsets[1], path, name, "data_offsets");
    KILN_CHECK(e.begin <= e.end && e.end <= data_size,
               "[load_safetensors] {}: tensor '{}' has byte range [{}, {}) outside the {}-byte data (truncated "
               "file?)", path, name, e.begin, e.end, data_size);
    uint64_t expected = element_size(e.dtype);
    for (int64_t size : e.shape)
      KILN_CHECK(!__builtin_mul_overflow(expected, static_cast<uint64_t>(size), &expected),
                 "[load_safetensors] {}: tensor '{}' has shape {}: more bytes than any file holds", path, name,
                 shape.dump());
    KILN_CHECK(e.end - e.begin == expected,
               "[load_safetensors] {}: tensor '{}' spans {} bytes but its shape and dtype need {}", path, name,
               e.end - e.begin, expected);
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const HeaderEntry& a, const HeaderEntry& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  uint64_t covered = 0;
  for (const HeaderEntry& e : entries) {
    KILN_CHECK(e.begin == covered, "[load_safetensors] {}: tensor '{}' starts at byte {} of the data, not at {}: "
               "{}", path, e.name, e.begin, covered, e.begin < covered ? "tensors overlap" : "a gap between tensors");
    covered = e.end;
  }
  KILN_CHECK(covered == data_size, "[load_safetensors] {}: the tensors cover {} of the {} data bytes (trailing "
             "bytes)", path, covered, data_size);
  return entries;
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
  AtomicFileWriter file(path);
  file.write(bytes.data(), bytes.size());
  file.commit();
}

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  KILN_CHECK(fd_ >= 0, "[write_file_atomic] cannot create {}: {}", tmp_, std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(tmp_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t n) {
  KILN_CHECK(fd_ >= 0, "[write_file_atomic] {} is already committed", path_);
  buffer_.append(static_cast<const char*>(data), n);
  size_ += n;
  if (buffer_.size() >= kBuffer) flush();
}

void AtomicFileWriter::flush() {
  write_all(fd_, buffer_.data(), buffer_.size(), tmp_);
  buffer_.clear();
}

void AtomicFileWriter::write_at(uint64_t offset, const void* data, size_t n) {
  KILN_CHECK(fd_ >= 0 && offset + n <= size_, "[write_file_atomic] {}: bytes {}..{} are not written yet", path_,
             offset, offset + n);
  flush();
  KILN_CHECK(::pwrite(fd_, data, n, static_cast<off_t>(offset)) == static_cast<ssize_t>(n),
             "[write_file_atomic] writing {} failed: {}", tmp_, std::strerror(errno));
}

void AtomicFileWriter::commit() {
  KILN_CHECK(fd_ >= 0, "[write_file_atomic] {} is already committed", path_);
  flush();
  KILN_CHECK(::fsync(fd_) == 0, "[write_file_atomic] fsync of {} failed: {}", tmp_, std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  KILN_CHECK(::rename(tmp_.c_str(), path_.c_str()) == 0, "[write_file_atomic] renaming {} to {} failed: {}", tmp_,
             path_, std::strerror(errno));
  fsync_directory(std::filesystem::path(path_).parent_path());
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
  KILN_CHECK(header_len <= kMaxHeaderBytes, "[load_safetensors] {}: header of {} bytes; the format allows {}", path,
             header_len, kMaxHeaderBytes);
  KILN_CHECK(header_len <= file_size - 8, "[load_safetensors] {}: header of {} bytes does not fit in a {}-byte file "
             "(truncated?)", path, header_len, file_size);
  std::string json(header_len, '\0');
  in.read(json.data(), static_cast<std::streamsize>(header_len));
  TensorFile out;
  for (const HeaderEntry& e : header_entries(json, file_size - 8 - header_len, path, out.metadata)) {
    Tensor t = empty(e.shape, e.dtype);
    in.seekg(static_cast<std::streamoff>(8 + header_len + e.begin));
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(e.end - e.begin));
    KILN_CHECK(in.good(), "[load_safetensors] {}: reading tensor '{}' failed", path, e.name);
    out.tensors.emplace(e.name, t);
  }
  return out;
}

}  // namespace kiln
