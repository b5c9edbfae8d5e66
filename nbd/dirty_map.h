// A dirty bitmap as the NBD server serves it: the byte ranges of an export
// that differ from an earlier state, one `qemu:dirty-bitmap:NAME` meta
// context (QEMU docs/interop/nbd.rst). BLOCK_STATUS on that context reports
// each extent with flag NBD_STATE_DIRTY (bit 0) set when it changed, clear
// when it did not.
//
// A DirtyMap is built once, then only read: it keeps the dirty runs as a
// sorted vector, and Query() finds its place by binary search. It is
// immutable after Build(), so any number of threads may query one map (and
// connections share it through a shared_ptr<const DirtyMap>).
//
// Memory: at most max_runs runs of 16 bytes each (kMaxDirtyRuns: 16 MiB).
// A difference with more runs than that is coarsened at build time (see
// Build), so the map may say more is dirty than changed, never less: a
// backup that copies the dirty extents still copies every change.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "util/status.h"

namespace hbiss::nbd {

// The default bound on a DirtyMap's runs: 2^20 runs, 16 MiB.
inline constexpr size_t kMaxDirtyRuns = size_t{1} << 20;

// One extent of a Query() answer.
struct DirtyExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool dirty = false;
  bool operator==(const DirtyExtent&) const = default;
};

class DirtyMap {
 public:
  // A dirty byte range.
  struct Run {
    uint64_t offset = 0;
    uint64_t length = 0;
    bool operator==(const Run&) const = default;
  };

  // Builds the map of an export of `size` bytes from its dirty ranges.
  // `runs` must be sorted by offset, nonempty each, not overlapping, and
  // inside [0, size); touching runs are merged. InvalidArgument otherwise,
  // or when `granularity` is not a power of two or `max_runs` is 0.
  //
  // When more than `max_runs` runs remain, the map is coarsened: every run
  // is widened outward to multiples of a granularity (starting at
  // `granularity` and doubling, the end clamped to `size`) and runs that
  // then touch are merged, until at most `max_runs` remain. granularity()
  // reports the one used (`granularity` itself when none was needed, since
  // the runs are block-aligned anyway).
  static Result<DirtyMap> Build(uint64_t size, std::vector<Run> runs,
                                uint64_t granularity = 4096,
                                size_t max_runs = kMaxDirtyRuns);

  // An empty map of nothing; Build() makes real ones.
  DirtyMap() = default;

  uint64_t size() const { return size_; }
  // The coarsening granularity in bytes (see Build).
  uint64_t granularity() const { return granularity_; }
  // The dirty runs, sorted, merged, not touching.
  const std::vector<Run>& runs() const { return runs_; }
  uint64_t dirty_bytes() const { return dirty_bytes_; }
  // Heap bytes the map holds.
  size_t MemoryUsage() const { return runs_.capacity() * sizeof(Run); }

  // The extents covering [offset, offset + length) in order, starting at
  // offset, alternating clean and dirty, each nonempty: at most
  // `max_extents` (at least 1) of them, so the answer may stop short of the
  // end, never past it. An empty vector when the range is empty or not
  // inside [0, size()). O(log runs + extents returned).
  std::vector<DirtyExtent> Query(uint64_t offset, uint64_t length, size_t max_extents) const;

 private:
  uint64_t size_ = 0;
  uint64_t granularity_ = 0;
  uint64_t dirty_bytes_ = 0;
  std::vector<Run> runs_;
};

}  // namespace hbiss::nbd
