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
// A whole file's bytes; raises naming the file when it cannot be read.
std::string read_file(const std::string& path);

}  // namespace kiln
