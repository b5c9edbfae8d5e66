// Views of byte strings as the std::span<const uint8_t> the store and volume APIs take.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace hbiss {

inline std::span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace hbiss
