// The bytes hdfs_store_read's writer mode writes, so that a test can check any prefix of the
// file without keeping a copy.
#pragma once

#include <cstdint>

namespace hbiss::hdfs::testing {

// Byte i of the pattern: a byte of the 8-byte word that holds the word's own index, mixed,
// so that a block that lands at the wrong offset does not match.
inline uint8_t PatternByte(uint64_t i) {
  const uint64_t word = (i / 8) * 0x9E3779B97F4A7C15ull;
  return uint8_t(word >> (8 * (i % 8)));
}

}  // namespace hbiss::hdfs::testing
