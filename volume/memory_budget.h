// MemoryBudget: one bound for the memory every open volume of a process uses
// for data, however many volumes are open (doc/memory.md).
//
// `limit` (hbiss serve --memory-limit, default kDefaultMemoryLimit) is split:
//  * write buffers, limit / 2: the in-memory segments of every volume (the
//    open one and those being closed), held in chunks of kChunkBytes that
//    are allocated as the segment fills and freed when it is closed. A
//    writer reserves what its operation may need before it takes the
//    volume's lock and waits (backpressure) while the buffers are full;
//  * CRC tables of closed segments, limit / 4 (an LRU, segment_cache.h);
//  * cached chunks of closed segments on stores that do not cache reads
//    (HDFS), limit / 8 (an LRU, segment_cache.h);
//  * NBD request buffers, limit / 8: the WRITE payloads and READ replies of
//    every connection (nbd::BufferBudget, sized by RequestBufferLimit()).
// Extent maps are not in it: a volume's map is its state (at most 8 bytes
// per mapped block plus 64 bytes per 256 MiB of volume size, extent_map.h;
// Volume::Info().map_memory_bytes).
//
// Progress: write buffers are given back when segments close. A segment
// closes when it is full, and also when its volume has been idle for
// kIdleRoll (kIdleRollUnderPressure while a writer waits for buffers), so
// idle volumes hold no write buffers and a waiting writer always gets one
// in the end.
//
// Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>

#include "util/mutex.h"

namespace hbiss::volume {

inline constexpr uint64_t kDefaultMemoryLimit = 2ull << 30;
inline constexpr uint64_t kMinMemoryLimit = 64ull << 20;
inline constexpr auto kIdleRoll = std::chrono::seconds(2);
inline constexpr auto kIdleRollUnderPressure = std::chrono::milliseconds(100);

class MemoryBudget {
 public:
  // Write buffers are allocated in chunks of this many bytes.
  static constexpr uint64_t kChunkBytes = 1 << 20;

  // A budget for write buffers of `bytes` (the process-wide one gets
  // limit / 2: SetMemoryLimit).
  explicit MemoryBudget(uint64_t bytes) : capacity_(bytes) {}
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  // Takes `bytes` if they fit, waiting up to `timeout` for them; returns
  // whether it took them. Waiting counts as pressure (see waiters()).
  bool Acquire(uint64_t bytes, std::chrono::milliseconds timeout) EXCLUDES(mu_);
  // Takes `bytes` whether or not they fit (recovery, and the small parts of
  // an operation its reservation did not cover).
  void Force(uint64_t bytes) EXCLUDES(mu_);
  void Release(uint64_t bytes) EXCLUDES(mu_);

  void SetCapacity(uint64_t bytes) EXCLUDES(mu_);
  uint64_t capacity() const EXCLUDES(mu_);
  uint64_t used() const EXCLUDES(mu_);
  uint64_t peak() const EXCLUDES(mu_);
  // Writers waiting for buffers now: volumes then close idle segments sooner.
  int waiters() const EXCLUDES(mu_);

 private:
  mutable Mutex mu_;
  CondVar released_;
  uint64_t capacity_ GUARDED_BY(mu_);
  uint64_t used_ GUARDED_BY(mu_) = 0;
  uint64_t peak_ GUARDED_BY(mu_) = 0;
  int waiters_ GUARDED_BY(mu_) = 0;
};

// The process-wide budget for write buffers.
MemoryBudget& DefaultWriteBudget();

// Sets the process-wide memory limit: write buffers get limit / 2, the CRC
// table cache limit / 4, the read cache and NBD request buffers limit / 8
// each. Values below kMinMemoryLimit act as kMinMemoryLimit.
void SetMemoryLimit(uint64_t limit);
uint64_t MemoryLimit();
// The NBD request buffers' share of the limit (the server sizes its
// nbd::BufferBudget with it).
uint64_t RequestBufferLimit();

}  // namespace hbiss::volume
