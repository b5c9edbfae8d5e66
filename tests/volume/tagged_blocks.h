// Helpers shared by the clone and trash tests: a block pattern that says
// which volume wrote which version of which block, and read-only options.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "volume/volume.h"

namespace hbiss::volume {

// Block b as written by `who` (a volume's tag) in version v.
inline std::vector<uint8_t> Block(uint64_t b, uint32_t who, uint32_t v) {
  std::vector<uint8_t> d(kBlockSize);
  for (size_t i = 0; i < d.size(); i++) d[i] = uint8_t(b * 7 + who * 31 + v * 3 + i / 64);
  std::memcpy(d.data(), &b, 8);
  std::memcpy(d.data() + 8, &who, 4);
  std::memcpy(d.data() + 12, &v, 4);
  return d;
}

inline OpenOptions ReadOnly() {
  OpenOptions o;
  o.read_only = true;
  return o;
}

}  // namespace hbiss::volume
