// Big-endian byte-string helpers for tests that script raw NBD streams.
#pragma once

#include <cstdint>
#include <string>

#include "util/coding.h"

namespace hbiss::nbd::testing {

inline std::string Be64(uint64_t v) {
  std::string s(8, '\0');
  EncodeBE64(reinterpret_cast<uint8_t*>(s.data()), v);
  return s;
}
inline std::string Be32(uint32_t v) {
  std::string s(4, '\0');
  EncodeBE32(reinterpret_cast<uint8_t*>(s.data()), v);
  return s;
}
inline std::string Be16(uint16_t v) {
  std::string s(2, '\0');
  EncodeBE16(reinterpret_cast<uint8_t*>(s.data()), v);
  return s;
}
inline uint64_t Get64(const std::string& s, size_t at) {
  return DecodeBE64(reinterpret_cast<const uint8_t*>(s.data()) + at);
}
inline uint32_t Get32(const std::string& s, size_t at) {
  return DecodeBE32(reinterpret_cast<const uint8_t*>(s.data()) + at);
}
inline uint16_t Get16(const std::string& s, size_t at) {
  return DecodeBE16(reinterpret_cast<const uint8_t*>(s.data()) + at);
}

}  // namespace hbiss::nbd::testing
