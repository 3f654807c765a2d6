// safetensors: any bytes either load, with every tensor inside the file, or
// raise kiln::Error. A crash, a hang, a sanitizer report or another exception
// is a finding.

#include <kiln/kiln.h>

#include "input_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const kiln_fuzz::InputFile file(data, size);
  try {
    const kiln::TensorFile loaded = kiln::load_safetensors(file.path());
    // What loaded can be used: each tensor's bytes lie within the file's.
    size_t bytes = 0;
    for (const auto& [name, t] : loaded.tensors) bytes += static_cast<size_t>(t.numel()) * t.element_size();
    if (bytes > size) __builtin_trap();
  } catch (const kiln::Error&) {
  }
  return 0;
}
