#pragma once
// Token files in llm.c's layout, so its prepared data sets train kiln as they
// are: a header of 256 int32 (magic, version, token count, zeros) followed by
// the tokens; magic 20240520 / version 1 for uint16 tokens, magic 20240801 /
// version 7 for uint32 tokens. Reading memory-maps the file.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kiln/serialize.h"

namespace kiln::data {

// The header's magic and version for uint16 and for uint32 tokens, and its length.
inline constexpr int32_t kMagicU16 = 20240520, kVersionU16 = 1;
inline constexpr int32_t kMagicU32 = 20240801, kVersionU32 = 7;
inline constexpr int64_t kHeaderInts = 256;

// Writes tokens atomically; uint16 when every token fits, else uint32.
void write_tokens(const std::string& path, const std::vector<uint32_t>& tokens);

// A token file written a piece at a time, for data larger than memory:
// uint16 when the vocabulary fits, else uint32; the header's count is set and
// the file published (atomically) by commit(). Destroyed uncommitted, it
// leaves nothing behind.
class TokenWriter {
 public:
  // Starts path.tmp; tokens must be below vocab_size.
  TokenWriter(const std::string& path, int64_t vocab_size);
  // Appends tokens; raises naming the file when one is not below the vocabulary size.
  void append(std::span<const uint32_t> tokens);
  void commit();
  int64_t size() const { return count_; }  // tokens appended so far

 private:
  AtomicFileWriter file_;
  int64_t vocab_size_;
  bool wide_;
  int64_t count_ = 0;
  std::vector<uint16_t> narrow_;  // the piece being appended, as uint16
};

// A read-only, memory-mapped token file; raises kiln::Error naming the file
// when it is missing, empty, truncated or not a token file.
class TokenFile {
 public:
  explicit TokenFile(const std::string& path);  // maps path, checking its header
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;
  TokenFile(TokenFile&& other) noexcept;  // other is left empty

  int64_t size() const { return count_; }  // the tokens held
  // Token i, unchecked.
  uint32_t operator[](int64_t i) const {
    return wide_ ? static_cast<const uint32_t*>(tokens_)[i] : static_cast<const uint16_t*>(tokens_)[i];
  }
  const std::string& path() const { return path_; }  // as opened
  // Raises naming the first token at or above vocab_size: ids index embedding
  // rows and count tables, so they are checked once, when the data opens.
  void check_vocabulary(int64_t vocab_size) const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const void* tokens_ = nullptr;
  int64_t count_ = 0;
  bool wide_ = false;
};

}  // namespace kiln::data
