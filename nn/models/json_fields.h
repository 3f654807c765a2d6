#pragma once
// Integer fields of config files, checked: nlohmann's get<int64_t>() would
// truncate 4.7 to 4 and turn 1e300 into undefined behaviour.

#include <nlohmann/json.hpp>

#include "kiln/base/error.h"

namespace kiln::nn {

// j[key], a JSON integer that fits an int64; raises naming the key otherwise
// (a missing key raises nlohmann's out_of_range, as at() does).
template <typename Json>
int64_t integer(const Json& j, const std::string& key) {
  const Json& v = j.at(key);
  KILN_CHECK(v.is_number_integer() && (v.is_number_unsigned() ? v.template get<uint64_t>() <= INT64_MAX : true),
             "[config] {} is {}: expected an integer", key, v.dump());
  return v.template get<int64_t>();
}

// The same, or fallback when the key is absent or null.
template <typename Json>
int64_t integer_or(const Json& j, const std::string& key, int64_t fallback) {
  return j.contains(key) && !j.at(key).is_null() ? integer(j, key) : fallback;
}

}  // namespace kiln::nn
