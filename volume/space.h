// Space accounting and change lists over a volume's states (doc/snapshots.md
// "du" and "diff"): what `hbiss du` and `hbiss diff` print.
//
// A block's identity is its location: a log never overwrites, so two maps
// hold the same data for a block iff they map it to the same (segment, slot),
// or both leave it unmapped. Everything here compares maps; no data is read.
// A block the cleaner moved, or one rewritten with the same bytes, counts as
// changed: the lists may say too much, never too little.
//
// Every function only reads the store (a read-only recovery of the head's
// map, snapshot map objects): it takes no lock, works while a server owns
// the volume, and sees the head as of the moment its log was read. All are
// thread-safe (they share nothing).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "store/store.h"
#include "util/status.h"
#include "volume/extent_map.h"

namespace hbiss::volume {

// One extent of a difference, in bytes, block-aligned.
struct DiffExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool data = false;  // true: the later state maps it; false: unmapped (reads as zeros)
  bool operator==(const DiffExtent&) const = default;
};

// The blocks whose location differs between `from` and `to` (of the same
// number of blocks), in order, merged into maximal runs of one type; `to`
// decides the type. InvalidArgument when the sizes differ; IOError("out of
// memory") when a lookup cannot allocate.
Result<std::vector<DiffExtent>> DiffMaps(const ExtentMap& from, const ExtentMap& to);

// Diff between two states of one volume: `from` is "VOL@SNAP", `to` is
// "VOL@SNAP" or "VOL" (the head). `from` may also be the snapshot a clone
// `to` was made from ("PARENT@SNAP" against "CLONE" or "CLONE@SNAP"): its
// blocks then count as the clone's inherited ones. InvalidArgument for a bad
// spec, a `from` that names no snapshot, or two unrelated volumes; NotFound
// for a missing volume or snapshot; the store's or recovery's errors.
Result<std::vector<DiffExtent>> Diff(store::Store* store, const std::string& from,
                                     const std::string& to);

// One row of DiskUsage: a snapshot, or the head (snapshot empty).
struct UsageRow {
  std::string snapshot;   // empty for the head
  uint64_t provisioned = 0;  // bytes: the volume's size
  // Bytes that changed to data since the previous row (the first row: since
  // the clone's parent snapshot, or since empty): rbd du's USED. The sum over
  // the rows is what the volume's own history put in.
  uint64_t used = 0;
  uint64_t mapped = 0;  // bytes this state maps
  bool trashed = false;  // a trashed snapshot (doc/snapshots.md "Trash")
};

struct DiskUsage {
  std::string volume;
  uint64_t provisioned = 0;  // bytes: the volume's size
  uint64_t mapped = 0;       // bytes the head maps
  // Of those, in the volume's own log (layer 0) and in its parents' logs
  // (a clone's inherited blocks). own + shared == mapped.
  uint64_t own = 0;
  uint64_t shared = 0;
  std::vector<UsageRow> rows;  // the snapshots in creation order, then the head
  // Bytes the store holds for the volume, by kind (its current epoch's
  // objects), and their sum.
  uint64_t segment_bytes = 0;
  uint64_t checkpoint_bytes = 0;
  uint64_t snapshot_map_bytes = 0;
  uint64_t summary_bytes = 0;
  uint64_t store_bytes = 0;
};

// The space accounting of volume `name` (not a snapshot spec).
// InvalidArgument for a bad name; NotFound when it does not exist; the
// store's or recovery's errors (after a few retries when a writer's cleaner
// or a new epoch pulls objects away under the reads).
Result<DiskUsage> GetDiskUsage(store::Store* store, const std::string& name);

}  // namespace hbiss::volume
