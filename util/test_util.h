// Helpers shared by tests only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace hbiss {

// n bytes drawn from rng: deterministic for a seeded generator.
inline std::string RandomBytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    std::memcpy(s.data() + i, &v, 8);
  }
  for (; i < n; i++) s[i] = static_cast<char>(rng());
  return s;
}

// A 4 KiB block that only `tag` fills this way, so a read tells which write it
// holds (0 is not special: use tags from 1 when zeros mean "never written").
inline std::vector<uint8_t> TaggedBlock(uint32_t tag) {
  std::vector<uint8_t> b(4096);
  for (uint32_t i = 0; i < b.size(); i += 4) {
    uint32_t v = tag * 2654435761u + i;
    std::memcpy(&b[i], &v, 4);
  }
  return b;
}

}  // namespace hbiss
