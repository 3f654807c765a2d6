#include "kiln/base/error.h"

#include "kiln/base/visit.h"

namespace kiln::detail {

void throw_error(const char* file, int line, const std::string& msg) {
  (void)file;
  (void)line;
  throw Error(msg);
}

void unsupported_dtype(const char* op, DType dtype) { KILN_FAIL("[{}] is not defined for dtype {}", op, dtype); }

}  // namespace kiln::detail
