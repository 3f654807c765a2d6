// Token files: any bytes either open as a token file, whose every token can
// be read and checked against a vocabulary, or raise kiln::Error.

#include <kiln/kiln.h>

#include "input_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const kiln_fuzz::InputFile file(data, size);
  try {
    const kiln::data::TokenFile tokens(file.path());
    tokens.check_vocabulary(400);  // reads every token
  } catch (const kiln::Error&) {
  }
  return 0;
}
