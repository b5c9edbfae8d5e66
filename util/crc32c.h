// CRC32C (Castagnoli), as used by iSCSI, HDFS and every hbiss on-disk record.
// Backed by ISA-L's hardware-accelerated implementation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace hbiss::crc32c {

// Returns the CRC32C of data[0, n) continuing from `crc`, the value returned
// for the preceding bytes (0 for none). Extend(Extend(0, a), b) == Value(a+b).
uint32_t Extend(uint32_t crc, const void* data, size_t n);

inline uint32_t Value(const void* data, size_t n) { return Extend(0, data, n); }
inline uint32_t Value(std::span<const uint8_t> s) { return Extend(0, s.data(), s.size()); }

// A CRC stored next to the bytes it covers can make those bytes look valid
// when a whole region is copied; masking (as leveldb does) avoids that.
inline uint32_t Mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }
inline uint32_t Unmask(uint32_t masked) {
  uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

}  // namespace hbiss::crc32c
