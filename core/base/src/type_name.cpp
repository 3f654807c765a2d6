#include "kiln/base/type_name.h"

#include <cxxabi.h>

#include <cstdlib>
#include <memory>

namespace kiln {

std::string unqualified_name(const std::type_info& type) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> demangled(abi::__cxa_demangle(type.name(), nullptr, nullptr, &status),
                                                   std::free);
  std::string name = status == 0 ? demangled.get() : type.name();
  // The namespaces end at the last "::" before any template arguments.
  const size_t scope = name.rfind("::", name.find('<'));
  return scope == std::string::npos ? name : name.substr(scope + 2);
}

}  // namespace kiln
