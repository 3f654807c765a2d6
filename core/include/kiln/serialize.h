#pragma once
// Saving and loading tensors in the safetensors format (readable by the Hugging
// Face tools): an 8-byte little-endian header length, a JSON header naming each
// tensor's dtype, shape and byte range, then the raw little-endian data.
// Files are written to a temporary name, flushed and renamed: a crash never
// leaves a torn file under the final name.

#include <map>
#include <string>

#include "kiln/tensor.h"

namespace kiln {

// A safetensors file's contents.
struct TensorFile {
  std::map<std::string, Tensor> tensors;           // on the CPU, contiguous
  std::map<std::string, std::string> metadata;     // the header's "__metadata__"
};

// Writes tensors (moved to the CPU as needed) and string metadata to path atomically.
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// Reads a safetensors file; raises kiln::Error naming the file on any
// inconsistency (truncation, bad header, unknown dtype, overlapping ranges).
TensorFile load_safetensors(const std::string& path);

// Writes bytes to path atomically: path.tmp, fsync, rename, fsync of the directory.
void write_file_atomic(const std::string& path, const std::string& bytes);

// A file written in pieces, too large to hold whole, and published
// atomically: the pieces go (through a 1 MiB buffer) to path.tmp; commit() fsyncs it and renames it
// over path. Destroyed before commit (a raised error), it removes path.tmp.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);  // creates path.tmp
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t n);                   // appends
  void write_at(uint64_t offset, const void* data, size_t n);  // overwrites bytes already written (a header)
  void commit();                                            // publishes the file at path
  uint64_t size() const { return size_; }                    // bytes appended so far
  const std::string& path() const { return path_; }          // where commit() publishes it

 private:
  static constexpr size_t kBuffer = 1 << 20;
  void flush();
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t size_ = 0;
  std::string buffer_;  // appended, not yet written
};
// A whole file's bytes; raises naming the file when it cannot be read.
std::string read_file(const std::string& path);

}  // namespace kiln
