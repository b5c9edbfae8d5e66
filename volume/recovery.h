// Recovery of a volume's log at open (doc/log_format.md, "Recovery"): load
// the newest valid checkpoint, read the header of every segment from the
// checkpoint's on, build the chain of segments back to it through
// prev_segment_id, and replay the chain onto the checkpoint's map.
//
// For a writable open it also decides where the log goes on. The valid tail
// may not be durable (after a process crash it can sit in the page cache
// only), and building on it would turn a later power loss into corruption.
// So the new segment continues from the last position proven synced (a
// synced_upto in the last segment, or the checkpoint's position), and the
// operations after that point are to be logged again (RecoveredLog::relog);
// the volume does that through its write path.
//
// Reads the store only. Thread-compatible.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "store/store.h"
#include "util/status.h"
#include "volume/checkpoint.h"
#include "volume/extent_map.h"
#include "volume/layout.h"
#include "volume/log_format.h"
#include "volume/log_reader.h"
#include "volume/volume_meta.h"

namespace hbiss::volume {

struct RecoveredLog {
  bool found_checkpoint = false;
  CheckpointInfo checkpoint;           // the one loaded, if found
  std::vector<uint64_t> ckpt_seqs;     // every checkpoint object, increasing
  std::vector<uint64_t> segment_ids;   // the log, increasing
  std::set<uint64_t> orphans;          // segment objects outside it
  uint64_t log_bytes = 0;              // bytes of all segment objects
  uint64_t segment_files = 0;          // segment objects
  uint64_t max_segment_id = 0;         // largest segment object id (0: none)
  std::map<uint64_t, uint64_t> segment_bytes;  // size of each segment object

  // Writable opens only. The new segment: its id, the position it follows
  // and its flags; the seq of its first batch.
  uint64_t new_segment_id = 0;
  LogPosition prev;
  uint32_t new_segment_flags = 0;
  uint64_t next_seq = 1;
  // Batches of the last segment (relog_segment) to log again, oldest first,
  // up to the last complete operation; relog_pending: the first entry
  // continues an operation begun before them.
  uint64_t relog_segment = 0;
  std::vector<TailBatch> relog;
  bool relog_pending = false;
};

// The header of a segment object, and whether it decoded and belongs to the
// volume (a damaged or foreign one is not valid).
struct SegHead {
  SegmentHeader header;
  bool valid = false;
};

// Reads the header of every segment object in `sizes` (id -> size) whose id
// is at least `c`. With `takeover` (a writable open, which holds the
// volume's lock) each is opened with Store::OpenForTakeover: a segment the
// previous holder may still have open, which is one of these, is taken from
// it, so its length is final before the log is replayed. A reader (read-only
// open, LogFollower) must never do that: the holder may be alive and
// serving the volume.
Result<std::map<uint64_t, SegHead>> ReadSegmentHeaders(store::Store* store,
                                                       const layout::LogDir& dir,
                                                       const VolumeMeta& meta,
                                                       const std::map<uint64_t, uint64_t>& sizes,
                                                       uint64_t c, bool takeover);

// The chain of the log after segment `c`: from the newest segment with a
// valid header back to the one whose prev_segment_id is c, oldest first
// (empty when no segment after c has a valid header). Corruption when the
// links do not lead back to c.
Result<std::vector<uint64_t>> BuildChain(const std::string& name,
                                         const std::map<uint64_t, SegHead>& segs, uint64_t c);

// Recovers the volume whose log is in `dir` (and whose meta is `meta`) into *map (which must be
// empty, of meta.size / kBlockSize blocks) and *out. Corruption when the
// log is damaged before its tail or no chain leads back to the checkpoint;
// NotSupported for a newer format or exhausted segment ids. A writable
// recovery (!read_only; the caller holds the volume's lock) takes the
// segments from the checkpoint's on away from the previous holder
// (Store::OpenForTakeover); a read-only one only reads, whoever writes.
Status RecoverLog(store::Store* store, const layout::LogDir& dir, const VolumeMeta& meta,
                  bool read_only, ExtentMap* map, RecoveredLog* out);

// The map of the log up to batch `stop_seq` (every batch before it, none
// from it on), into *map (empty, of meta.size / kBlockSize blocks): the
// newest valid checkpoint whose replay starts at or before stop_seq, then the
// chain replayed until that batch. Reads only. A pending snapshot's map is
// rebuilt so (doc/snapshots.md). Corruption when the log does not reach
// stop_seq or is damaged before it; *from_ckpt gets the checkpoint used
// (0: none).
Status ReplayLogTo(store::Store* store, const layout::LogDir& dir, const VolumeMeta& meta,
                   uint64_t stop_seq, ExtentMap* map, uint64_t* from_ckpt);

}  // namespace hbiss::volume
