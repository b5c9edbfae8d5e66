// The checkpoints of an open volume: loading the newest valid one at open,
// and the bookkeeping of which checkpoint objects exist and what each needs,
// which decides what the cleaner may delete (doc/checkpoint_format.md,
// "Deleting segments"):
//  * a checkpoint needs the segment where its replay starts (pos_seg), every
//    segment after it, and the segments it lists (its runs point into them);
//  * a segment may be deleted only when every checkpoint object that exists
//    is one this process wrote or loaded (its needs are known) and needs it
//    not. An old checkpoint counts as kept until its Delete succeeded.
//  * a snapshot's map (doc/snapshots.md) pins the segments its runs point
//    into: they are never deleted (nor cleaned) while it exists.
//
// Thread-safe: CheckpointSet has its own lock, taken briefly; it may be
// called with the volume's lock held (lock order: volume -> checkpoint set).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "store/store.h"
#include "util/mutex.h"
#include "util/status.h"
#include "volume/checkpoint.h"
#include "volume/extent_map.h"
#include "volume/layout.h"
#include "volume/volume_meta.h"

namespace hbiss::volume {

// Loads the newest checkpoint in log directory `dir` that decodes with a good CRC
// and belongs to this volume, newest first, into *info and *map (when map is
// not null). *found is false when none does (the map is then empty). Corrupt
// ones are skipped (logged). all_seqs, when not null, gets every checkpoint
// object's seq, increasing, corrupt ones included.
// With max_next_seq, only checkpoints whose replay starts at or before that
// batch count (a snapshot's map is rebuilt from one: doc/snapshots.md).
Status LoadNewestCheckpoint(store::Store* store, const layout::LogDir& dir, const VolumeMeta& meta,
                            CheckpointInfo* info, ExtentMap* map, bool* found,
                            std::vector<uint64_t>* all_seqs,
                            uint64_t max_next_seq = UINT64_MAX);

class CheckpointSet {
 public:
  // Checkpoints kept: the newest this many; older ones are deleted.
  static constexpr size_t kKeep = 2;

  CheckpointSet() = default;
  CheckpointSet(const CheckpointSet&) = delete;
  CheckpointSet& operator=(const CheckpointSet&) = delete;

  // At open: the checkpoint objects that exist (increasing), and the one
  // loaded, whose needs are then known.
  void Init(const std::vector<uint64_t>& existing) EXCLUDES(mu_);
  void NoteLoaded(const CheckpointInfo& ci) EXCLUDES(mu_);

  // The seq for the next checkpoint: above every existing one, corrupt ones
  // too. Taking it reserves it.
  uint64_t NextSeq() EXCLUDES(mu_);
  // The newest checkpoint object written, loaded or found at open (0: none).
  uint64_t newest() const EXCLUDES(mu_);

  // A checkpoint `ci` was Put: it exists and its needs are known. Returns
  // the seqs of the checkpoints now beyond the newest kKeep, to delete.
  std::vector<uint64_t> Added(const CheckpointInfo& ci) EXCLUDES(mu_);
  // Checkpoint `seq` is gone from the store.
  void Removed(uint64_t seq) EXCLUDES(mu_);

  // Whether no kept checkpoint and no snapshot needs segment `seg` (see the
  // top).
  bool NeededByNone(uint64_t seg) const EXCLUDES(mu_);

  // Snapshot `snap` needs segments `segs`, until Unpin(snap).
  void Pin(uint64_t snap, std::vector<uint64_t> segs) EXCLUDES(mu_);
  void Unpin(uint64_t snap) EXCLUDES(mu_);
  bool Pinned(uint64_t seg) const EXCLUDES(mu_);
  // Every segment is needed from now on (a snapshot whose map could not be
  // read may need any).
  void PinAll() EXCLUDES(mu_);

 private:
  struct Needs {
    uint64_t pos_seg = 0;
    std::vector<uint64_t> listed;  // increasing
  };

  mutable Mutex mu_;
  std::vector<uint64_t> seqs_ GUARDED_BY(mu_);  // existing objects, increasing
  std::map<uint64_t, Needs> known_ GUARDED_BY(mu_);
  uint64_t next_ GUARDED_BY(mu_) = 1;
  uint64_t newest_ GUARDED_BY(mu_) = 0;
  std::map<uint64_t, std::vector<uint64_t>> pins_ GUARDED_BY(mu_);  // snapshot -> segments
  std::map<uint64_t, uint32_t> pinned_ GUARDED_BY(mu_);  // segment -> snapshots pinning it
  bool pin_all_ GUARDED_BY(mu_) = false;
};

}  // namespace hbiss::volume
