// The alignment stages' JSON-lines files (conversations, preference pairs,
// prompts): any bytes either read as records or raise kiln::Error.

#include <kiln/kiln.h>

#include "input_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const kiln_fuzz::InputFile file(data, size);
  try {
    kiln::data::read_conversations(file.path());
  } catch (const kiln::Error&) {
  }
  try {
    kiln::data::read_preferences(file.path());
  } catch (const kiln::Error&) {
  }
  try {
    kiln::data::read_prompts(file.path());
  } catch (const kiln::Error&) {
  }
  return 0;
}
