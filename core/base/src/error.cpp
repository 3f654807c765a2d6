#include "kiln/base/error.h"

namespace kiln::detail {

void throw_error(const char* file, int line, const std::string& msg) {
  (void)file;
  (void)line;
  throw Error(msg);
}

}  // namespace kiln::detail
