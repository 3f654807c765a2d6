#include "kiln/data/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "kiln/base/error.h"
#include "kiln/serialize.h"

namespace kiln::data {

namespace {

std::array<int32_t, kHeaderInts> header(bool wide, int64_t count) {
  std::array<int32_t, kHeaderInts> h{};
  h[0] = wide ? kMagicU32 : kMagicU16;
  h[1] = wide ? kVersionU32 : kVersionU16;
  h[2] = static_cast<int32_t>(count);
  return h;
}

}  // namespace

void write_tokens(const std::string& path, const std::vector<uint32_t>& tokens) {
  const uint32_t largest = tokens.empty() ? 0 : *std::max_element(tokens.begin(), tokens.end());
  TokenWriter writer(path, int64_t{largest} + 1);
  writer.append(tokens);
  writer.commit();
}

TokenWriter::TokenWriter(const std::string& path, int64_t vocab_size)
    : file_(path), vocab_size_(vocab_size), wide_(vocab_size > 0x10000) {
  const auto h = header(wide_, 0);
  file_.write(h.data(), sizeof(h));
}

void TokenWriter::append(std::span<const uint32_t> tokens) {
  KILN_CHECK(count_ + static_cast<int64_t>(tokens.size()) <= INT32_MAX,
             "[write_tokens] {}: {} tokens do not fit the header's count", file_.path(),
             count_ + static_cast<int64_t>(tokens.size()));
  for (uint32_t t : tokens)
    KILN_CHECK(t < vocab_size_, "[write_tokens] {}: token {} is not below the vocabulary size {}", file_.path(), t,
               vocab_size_);
  count_ += static_cast<int64_t>(tokens.size());
  if (wide_) {
    file_.write(tokens.data(), tokens.size_bytes());
    return;
  }
  narrow_.assign(tokens.begin(), tokens.end());
  file_.write(narrow_.data(), narrow_.size() * sizeof(uint16_t));
}

void TokenWriter::commit() {
  const auto h = header(wide_, count_);
  file_.write_at(0, h.data(), sizeof(h));
  file_.commit();
}

TokenFile::TokenFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  KILN_CHECK(fd >= 0, "[TokenFile] cannot open {}: {}", path, std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  map_size_ = static_cast<size_t>(st.st_size);
  if (map_size_ < kHeaderInts * sizeof(int32_t)) {
    ::close(fd);
    KILN_FAIL("[TokenFile] {} is {} bytes: too short for the {}-byte header of a token file", path, map_size_,
              kHeaderInts * sizeof(int32_t));
  }
  map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  KILN_CHECK(map_ != MAP_FAILED, "[TokenFile] cannot map {}: {}", path, std::strerror(errno));
  const auto* header = static_cast<const int32_t*>(map_);
  try {
    bool u16 = header[0] == kMagicU16 && header[1] == kVersionU16;
    bool u32 = header[0] == kMagicU32 && header[1] == kVersionU32;
    KILN_CHECK(u16 || u32,
               "[TokenFile] {} is not a token file: magic {} version {} (expected {}/{} for uint16 or {}/{} for uint32)",
               path, header[0], header[1], kMagicU16, kVersionU16, kMagicU32, kVersionU32);
    wide_ = u32;
    count_ = header[2];
    size_t expected = kHeaderInts * sizeof(int32_t) + static_cast<size_t>(count_) * (wide_ ? 4 : 2);
    KILN_CHECK(count_ >= 0 && map_size_ == expected,
               "[TokenFile] {} holds {} bytes but its header announces {} tokens ({} bytes): truncated or corrupt",
               path, map_size_, count_, expected);
    KILN_CHECK(count_ > 0, "[TokenFile] {} holds no tokens", path);
  } catch (...) {
    ::munmap(map_, map_size_);
    throw;
  }
  tokens_ = header + kHeaderInts;
}

void TokenFile::check_vocabulary(int64_t vocab_size) const {
  for (int64_t i = 0; i < count_; ++i)
    KILN_CHECK((*this)[i] < vocab_size, "[TokenFile] {}: token {} is {}, outside the vocabulary of {} (data made "
               "with another tokenizer?)", path_, i, (*this)[i], vocab_size);
}

TokenFile::~TokenFile() {
  if (map_) ::munmap(map_, map_size_);
}

TokenFile::TokenFile(TokenFile&& o) noexcept
    : path_(std::move(o.path_)), map_(o.map_), map_size_(o.map_size_), tokens_(o.tokens_), count_(o.count_),
      wide_(o.wide_) {
  o.map_ = nullptr;
}

}  // namespace kiln::data
