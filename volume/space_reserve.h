// SpaceReserve: a volume's reserve object, volumes/NAME/reserve
// (doc/volume_meta.md), which holds space on a store that can run out of it
// (Store::MayRunOutOfSpace) so that the work that gives space back can
// still write on a full device: recovery's re-log Put, a checkpoint Put and
// the cleaner's copies.
//
// Protocol: the volume makes the reserve exist at open (Ensure, best
// effort). When a NoSpace stops one of the writes above, it deletes the
// reserve (Release) and tries once more; the space is then the volume's to
// use. Once space is back, the reserve is written again (MaybeRestore, at
// most once per kRestoreEvery). The reserve's bytes are zeros and mean
// nothing; a missing reserve only means the next full device may stop
// recovery or cleaning until space is freed by hand.
//
// Size rule (BytesFor): one segment (recovery re-logs at most the part of
// one segment after its last proven sync, and a resumed log needs a segment
// to start in) plus kExtraBytes for a checkpoint of a typical map and the
// segment summaries written meanwhile. So 68 MiB for the default 64 MiB
// segments, 5 MiB for 1 MiB ones.
//
// On stores that cannot run out of space (memory, HDFS) it is disabled:
// every method is a no-op and Release returns false.
//
// Thread-safe. Ensure, Release and MaybeRestore do store I/O under an
// internal mutex: call them without the volume's locks.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "store/store.h"
#include "util/mutex.h"
#include "util/status.h"

namespace hbiss::volume {

class SpaceReserve {
 public:
  static constexpr uint64_t kExtraBytes = 4ull << 20;
  static constexpr auto kRestoreEvery = std::chrono::seconds(1);

  // The reserve size for segments of `segment_size` bytes (see the top).
  static uint64_t BytesFor(uint64_t segment_size) { return segment_size + kExtraBytes; }

  // The reserve object `object` of `bytes` bytes in `store` (which must
  // outlive it); `enabled` false makes every method a no-op.
  SpaceReserve(store::Store* store, std::string object, uint64_t bytes, bool enabled);
  SpaceReserve(const SpaceReserve&) = delete;
  SpaceReserve& operator=(const SpaceReserve&) = delete;

  bool enabled() const { return enabled_; }
  uint64_t bytes() const { return bytes_; }
  // Whether the reserve object is known to exist (false until Ensure).
  bool held() const { return held_.load(std::memory_order_acquire); }

  // Makes the object exist with bytes() bytes: OK if it did, or once one
  // Put wrote it; the Put's error (NoSpace on a full device) otherwise, and
  // the reserve stays missing.
  Status Ensure() EXCLUDES(mu_);

  // Deletes the object so its space can be used. True if it existed and is
  // gone now (the caller may retry the write that failed); false if there
  // was none to give (or the delete failed).
  bool Release() EXCLUDES(mu_);

  // Ensure, when enabled, missing and not tried in the last kRestoreEvery;
  // errors are logged at debug level only (the device is still full).
  void MaybeRestore() EXCLUDES(mu_);

 private:
  Status EnsureLocked() REQUIRES(mu_);

  store::Store* const store_;
  const std::string object_;
  const uint64_t bytes_;
  const bool enabled_;

  Mutex mu_;
  std::atomic<bool> held_{false};
  bool tried_ GUARDED_BY(mu_) = false;
  std::chrono::steady_clock::time_point last_try_ GUARDED_BY(mu_){};
};

}  // namespace hbiss::volume
