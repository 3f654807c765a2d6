#include "kiln/data/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kiln/base/error.h"
#include "kiln/serialize.h"

namespace kiln::data {

void write_tokens(const std::string& path, const std::vector<uint32_t>& tokens) {
  bool wide = false;
  for (uint32_t t : tokens) wide = wide || t > 0xffffu;
  int32_t header[kHeaderInts] = {};
  header[0] = wide ? kMagicU32 : kMagicU16;
  header[1] = wide ? kVersionU32 : kVersionU16;
  KILN_CHECK(tokens.size() <= static_cast<size_t>(INT32_MAX), "[write_tokens] {} tokens do not fit the header's count",
             tokens.size());
  header[2] = static_cast<int32_t>(tokens.size());
  std::string bytes(reinterpret_cast<const char*>(header), sizeof(header));
  if (wide) {
    bytes.append(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 4);
  } else {
    std::vector<uint16_t> narrow(tokens.begin(), tokens.end());
    bytes.append(reinterpret_cast<const char*>(narrow.data()), narrow.size() * 2);
  }
  write_file_atomic(path, bytes);
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
