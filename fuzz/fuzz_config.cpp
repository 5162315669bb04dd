// libFuzzer entry point of the config target (fuzz/targets.cpp).
#include <cstddef>
#include <cstdint>
#include <string>

#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pae::fuzz::run(pae::fuzz::config, std::string(reinterpret_cast<const char*>(data), size));
  return 0;
}
