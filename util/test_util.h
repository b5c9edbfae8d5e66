// Helpers shared by tests only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>

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

}  // namespace hbiss
