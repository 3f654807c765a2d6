#pragma once
// What curate's filter stage keeps of each input file, in OUT/work, so that
// the later stages read it back at any rank and a killed run resumes file by
// file: F.docs holds the kept documents (each a uint32 length and its bytes),
// F.keys a row of uint64 per kept document (its place in the input file, the
// offset of its record in F.docs, a hash of its text, its LSH band keys) and
// F.json the stage's counts; F.json is published last, so its presence says
// the file is done.

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <string>
#include <vector>

#include <kiln/kiln.h>

namespace curate {

// A document's identity in every stage and at any number of ranks: its input
// file's index (the inputs listed by source priority) and its place in that
// file. A smaller key wins deduplication.
inline uint64_t doc_key(size_t file, int64_t index) { return uint64_t{file} << 32 | static_cast<uint64_t>(index); }
inline size_t file_of(uint64_t key) { return static_cast<size_t>(key >> 32); }

// The columns of F.keys before the band keys.
enum KeyColumn { kIndex, kOffset, kTextHash, kBandKeys };

// The paths of input file F's records.
struct FileRecords {
  std::string docs, keys, counts;  // the filter stage's
  std::string train, val, tokens;  // the tokenize stage's
  FileRecords(const std::string& work, size_t file)
      : docs(fmt::format("{}/{}.docs", work, file)),
        keys(fmt::format("{}/{}.keys", work, file)),
        counts(fmt::format("{}/{}.json", work, file)),
        train(fmt::format("{}/{}.train", work, file)),
        val(fmt::format("{}/{}.val", work, file)),
        tokens(fmt::format("{}/{}.tokens.json", work, file)) {}
};

// Appends kept documents and their key rows; publish() makes both visible.
class FileRecordWriter {
 public:
  explicit FileRecordWriter(const FileRecords& paths) : docs_(paths.docs), keys_(paths.keys) {}

  void add(int64_t index, const std::string& text, uint64_t text_hash, const std::vector<uint64_t>& band_keys) {
    const uint64_t head[kBandKeys] = {static_cast<uint64_t>(index), docs_.size(), text_hash};
    keys_.write(head, sizeof(head));
    keys_.write(band_keys.data(), band_keys.size() * sizeof(uint64_t));
    const auto length = static_cast<uint32_t>(text.size());
    docs_.write(&length, sizeof(length));
    docs_.write(text.data(), text.size());
  }
  void publish() {
    docs_.commit();
    keys_.commit();
  }

 private:
  kiln::AtomicFileWriter docs_, keys_;
};

// The rows of one file's F.keys, for `bands` LSH bands: per kept document
// its key, the offset of its record in F.docs and its bucket keys (bucket 0
// the text hash, 1.. the bands).
class KeyRows {
 public:
  KeyRows(const std::string& work, size_t file, int bands)
      : file_(file), width_(kBandKeys + static_cast<size_t>(bands)) {
    const std::string path = FileRecords(work, file).keys, bytes = kiln::read_file(path);
    KILN_CHECK(bytes.size() % (width_ * sizeof(uint64_t)) == 0,
               "[curate] {} holds {} bytes: not rows of {} keys (written with other --permutations or "
               "--near-duplicates? start again with a new --out)",
               path, bytes.size(), width_);
    rows_.resize(bytes.size() / sizeof(uint64_t));
    std::memcpy(rows_.data(), bytes.data(), bytes.size());
  }

  size_t size() const { return rows_.size() / width_; }  // kept documents
  uint64_t key(size_t r) const { return doc_key(file_, static_cast<int64_t>(rows_[r * width_ + kIndex])); }
  uint64_t offset(size_t r) const { return rows_[r * width_ + kOffset]; }
  uint64_t bucket(size_t r, size_t b) const { return rows_[r * width_ + kTextHash + b]; }

 private:
  size_t file_, width_;
  std::vector<uint64_t> rows_;
};

// Reads documents of F.docs files by offset, one file open at a time (read
// in key order, each file opens once).
class DocReader {
 public:
  explicit DocReader(std::string work) : work_(std::move(work)) {}

  std::string read(size_t file, uint64_t offset) {
    if (!in_.is_open() || file != file_) {
      in_ = std::ifstream(FileRecords(work_, file).docs, std::ios::binary);
      KILN_CHECK(in_, "[curate] cannot open {}", FileRecords(work_, file).docs);
      file_ = file;
    }
    uint32_t length = 0;
    in_.seekg(static_cast<std::streamoff>(offset));
    in_.read(reinterpret_cast<char*>(&length), sizeof(length));
    std::string text(length, '\0');
    in_.read(text.data(), length);
    KILN_CHECK(in_, "[curate] {} is cut short at byte {}", FileRecords(work_, file).docs, offset);
    return text;
  }

 private:
  std::string work_;
  std::ifstream in_;
  size_t file_ = 0;
};

}  // namespace curate
