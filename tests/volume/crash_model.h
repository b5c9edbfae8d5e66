// The model the crash tests check a volume against: the operations that were
// acknowledged, applied in order to a byte array, and the search for the
// prefix of them that a recovered volume equals.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "volume/volume.h"

namespace hbiss::volume::crashtest {

struct Op {
  enum Kind { kWrite, kTrim, kZero } kind = kWrite;
  uint64_t off = 0;
  uint64_t len = 0;
  std::vector<uint8_t> data;  // kWrite
};

// Bytes that differ with `tag` and with the position inside the range.
inline std::vector<uint8_t> Pattern(uint64_t len, uint64_t tag) {
  std::vector<uint8_t> d(len);
  for (uint64_t j = 0; j < len; j++) d[j] = uint8_t((tag >> (j % 8 * 8)) + j);
  return d;
}

inline void Apply(const Op& op, std::vector<uint8_t>* state) {
  if (op.kind == Op::kWrite) {
    std::memcpy(state->data() + op.off, op.data.data(), op.len);
  } else {
    std::memset(state->data() + op.off, 0, op.len);
  }
}

// A random range of a volume of vol_size bytes: half the time whole blocks
// (1 to max_blocks), else any bytes (1 to max_bytes).
inline void RandomRange(std::mt19937_64& rng, uint64_t vol_size, uint64_t max_blocks,
                        uint64_t max_bytes, Op* op) {
  if (rng() % 2) {
    op->off = (rng() % (vol_size / kBlockSize)) * kBlockSize;
    op->len = std::min<uint64_t>((1 + rng() % max_blocks) * kBlockSize, vol_size - op->off);
  } else {
    op->off = rng() % vol_size;
    op->len = 1 + rng() % std::min<uint64_t>(vol_size - op->off, max_bytes);
  }
}

// Sets op->kind and performs it on v: `roll` below `writes` is a write of
// fresh Pattern bytes (the tag drawn from rng), below `writes + trims` a
// trim, else a write of zeroes. op's range is already set.
inline Status Perform(Volume* v, uint64_t roll, uint64_t writes, uint64_t trims,
                      std::mt19937_64& rng, Op* op) {
  if (roll < writes) {
    op->kind = Op::kWrite;
    op->data = Pattern(op->len, rng());
    return v->Write(op->off, op->data);
  }
  if (roll < writes + trims) {
    op->kind = Op::kTrim;
    return v->Trim(op->off, op->len);
  }
  op->kind = Op::kZero;
  return v->WriteZeroes(op->off, op->len);
}

// Finds k in [lo, ops.size()] with state(k) == actual over blocks
// [first_block, end_block) (all blocks when end_block is 0), where state(lo)
// is *state on entry. Returns -1 if none. Leaves *state = state(k) (or the
// state after all ops when none matches).
inline int64_t FindPrefix(std::vector<uint8_t>* state, const std::vector<Op>& ops, size_t lo,
                          const std::vector<uint8_t>& actual, uint64_t first_block = 0,
                          uint64_t end_block = 0) {
  const uint64_t blocks = state->size() / kBlockSize;
  if (end_block == 0) end_block = blocks;
  std::vector<bool> bad(blocks);
  uint64_t nbad = 0;
  auto check = [&](uint64_t b) {
    bool m = std::memcmp(state->data() + b * kBlockSize, actual.data() + b * kBlockSize,
                         kBlockSize) != 0;
    if (m != bad[b]) {
      bad[b] = m;
      nbad += m ? 1 : uint64_t(-1);
    }
  };
  for (uint64_t b = first_block; b < end_block; b++) check(b);
  if (nbad == 0) return int64_t(lo);
  for (size_t k = lo; k < ops.size(); k++) {
    Apply(ops[k], state);
    for (uint64_t b = ops[k].off / kBlockSize; b <= (ops[k].off + ops[k].len - 1) / kBlockSize;
         b++) {
      check(b);
    }
    if (nbad == 0) return int64_t(k + 1);
  }
  return -1;
}

}  // namespace hbiss::volume::crashtest
