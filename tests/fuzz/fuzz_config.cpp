// config.json (every Hugging Face family kiln reads, and kiln's own): any
// text either gives a spec that passes its checks and writes back out, or
// raises kiln::Error. An nlohmann exception escaping is a finding too: its
// message would not say which file and field were wrong.

#include <string>

#include <kiln/kiln.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const kiln::nn::ModelSpec spec = kiln::nn::hf::spec_from_config(text);
    spec.check();
    if (spec.num_parameters() <= 0) __builtin_trap();
    kiln::nn::hf::config_json(spec);
  } catch (const kiln::Error&) {
  }
  return 0;
}
