// Offline consistency check of a volume (`hbiss fsck`), doc/fsck.md is its
// specification. CheckVolume reads the store only and takes no lock, so it
// may run while another process serves the volume (what it then sees is a
// moving target: see doc/fsck.md). RepairVolume takes the volume's lock.
//
// What CheckVolume checks:
//  * every record's CRC: segment headers, batch headers, the data slot of
//    every mapped block against its batch header, checkpoints, summaries;
//  * a summary against the batch headers of its segment;
//  * the map (newest valid checkpoint plus roll-forward, as Open recovers
//    it, read-only) against the log: every mapped block must sit in a slot
//    that a valid batch header covers as a data slot of that block's lba;
//  * every older valid checkpoint against the newest one: replaying the log
//    from the older one's position up to the newest one's must give exactly
//    the newest one's map;
//  * live blocks per segment (recounted from the map); segments the map or
//    a checkpoint needs but that are missing (corruption), and segment and
//    summary objects that nothing references (leaks).
//
// Thread-compatible; the functions keep no state between calls.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "store/store.h"
#include "util/status.h"
#include "volume/log_format.h"
#include "volume/volume_meta.h"

namespace hbiss::volume {

enum class FsckKind {
  kCorruption,  // data or metadata is damaged or inconsistent (qemu-img: "ERROR")
  kLeak,        // an object nothing references: space lost, no harm to data
};

// One problem found. Fields that do not apply are 0 / nullopt.
struct FsckProblem {
  FsckKind kind = FsckKind::kCorruption;
  std::string check;             // what found it: "segment-header", "batch-header",
                                 // "data-crc", "map", "missing-segment", "log",
                                 // "checkpoint", "checkpoint-mismatch", "summary",
                                 // "leaked-segment", "leaked-summary", "references"
  uint64_t segment = 0;          // segment id (0: none)
  std::optional<uint64_t> offset;  // byte offset in the segment
  std::optional<uint64_t> lba;     // first block concerned
  uint64_t checkpoint = 0;       // checkpoint seq (0: none)
  uint64_t bytes = 0;            // leaks: bytes of the leaked objects
  std::string message;           // one line naming all of the above that apply
};

// What the map and the store say about one segment object.
struct FsckSegment {
  uint64_t id = 0;
  uint64_t bytes = 0;
  uint64_t live_blocks = 0;  // blocks of the recovered map in it
  bool referenced = false;   // on the log of some valid checkpoint, or listed by one
  bool summary = false;      // a sum/<id> object exists
};

struct FsckReport {
  std::string volume;
  uint64_t epoch = 0;
  std::vector<FsckProblem> problems;
  uint64_t corruptions = 0;
  uint64_t leaks = 0;
  uint64_t leaked_bytes = 0;
  uint64_t segments = 0;          // segment objects
  uint64_t log_bytes = 0;         // their bytes
  uint64_t mapped_blocks = 0;     // in the recovered map
  uint64_t checkpoint_seq = 0;    // the checkpoint recovery loads, 0: none
  uint64_t checkpoints = 0;       // checkpoint objects
  uint64_t data_slots_checked = 0;  // data slots whose CRC was computed
  // Of those, slots no block maps to (dead space: a torn tail, garbage for
  // the cleaner) that fail their CRC: counted, not an error.
  uint64_t dead_bad_slots = 0;
  std::vector<FsckSegment> segment_usage;  // by id

  // For RepairVolume.
  bool log_recovers = false;       // RecoverLog succeeded
  // The log recovers and the chain after every valid checkpoint was built:
  // the leaks found are surely referenced by nothing.
  bool references_known = false;
  bool newest_checkpoint_bad = false;  // the newest checkpoint object is corrupt
  std::vector<uint64_t> leaked_segments;
  std::vector<uint64_t> leaked_summaries;  // summaries whose segment is gone
  std::vector<uint64_t> corrupt_checkpoints;
  // Bad summaries, each as it should be (built from the batch headers).
  std::map<uint64_t, SegmentSummary> summary_fixes;

  void Add(FsckProblem p);
};

// Checks volume `name` (see the top). A check that finds problems while the
// log changes under it (a writer serves the volume) is run again, up to 3
// times in all; the last one's report is returned. NotFound when the volume
// does not exist; the store's error (IOError, ...) or NotSupported (a newer format)
// when the check could not be completed. Damage is never an error here: it
// is reported in the FsckReport.
Result<FsckReport> CheckVolume(store::Store* store, const std::string& name);

// The hook for checks of references between volumes (snapshots, clones and
// their bases, once they exist): CheckVolume calls it last, with the volume's
// meta, its current log directory and the report so far, and it appends a
// problem (check "references", FsckKind::kCorruption for a reference to
// something missing, kLeak for something nothing references) for each
// reference that does not hold. The segments a snapshot or clone holds are
// not leaks: a check added here should clear them from leaked_segments and
// lower leaks/leaked_bytes. Errors: the store's, which stop the check.
// Snapshots (doc/snapshots.md): each snapshot's map must load (its object, or
// rebuilt from the log while pending), every segment it points into must
// exist, and every block it maps must pass its CRC; the segments snapshots
// hold are not leaks.
Status CheckVolumeReferences(store::Store* store, const VolumeMeta& meta,
                             const std::string& log_dir, FsckReport* report);

// Repairs what `found` (a CheckVolume report of `name`) lists and can be
// repaired without losing acknowledged data, appending one line per action
// to *actions:
//  * newest checkpoint corrupt but the log recovers: opens the volume for
//    writing and closes it (recovery from the older checkpoint, and Close
//    writes a fresh one);
//  * then, holding the volume's lock: deletes leaked segments (with their
//    summaries; only when references_known: with a damaged log they may be
//    the rest of it) and leaked summaries, rewrites bad summaries from the batch
//    headers, and deletes corrupt checkpoints older than the newest valid one.
// Blocks whose data is corrupt stay as they are. Busy when another process
// has the volume open for writing; the store's error when an action failed
// (actions done before it stay done, and the check shows what is left).
Status RepairVolume(store::Store* store, const std::string& name, const FsckReport& found,
                    std::vector<std::string>* actions);

}  // namespace hbiss::volume
