#pragma once
// A C++ type's name as a reader writes it, for messages and printouts.

#include <string>
#include <typeinfo>

namespace kiln {

// The demangled name without its namespaces: "Linear", "ModuleList", "Cube".
std::string unqualified_name(const std::type_info& type);

}  // namespace kiln
