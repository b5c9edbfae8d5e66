// LogWriter: the writing end of a volume's log (doc/log_format.md). It
// appends sealed batches of in-memory segments (mem_segment.h) to the
// segments' store objects, closes a segment at its end-of-segment marker,
// and syncs: one Sync covers every batch appended before it (group commit).
//
// Positions. appended_pos() is the end of the last batch appended (or of
// the log at Restart); durable_pos() the end of what a Sync or a segment's
// Close made durable. Every batch header written names durable_pos() as its
// synced_upto, so a later batch proves how far the log was synced when it
// was sealed (recovery's rule, log_reader.h). Batches appended after
// durable_pos() are kept (unsynced()) until a Sync or Close covers them: if
// the store fails first (NoSpace), Abandon hands them back to be logged
// again.
//
// What it writes into the MemSegment of a batch it appends: the batch
// header slot, crcs[] of its data slots (before the append) and valid[]
// (after it); closed_bytes when it closes the segment. It never takes the
// volume's locks: its object counts and appended bytes are kept for the
// caller (TakeAppended), who adds them to the volume's totals.
//
// Errors. A failed store call leaves the writer broken (store.h): the
// positions and unsynced() stay as they were before the call, nothing more
// is marked durable, and the caller either fails or calls Abandon.
//
// Thread-compatible: one thread at a time (the volume's flusher once it
// runs; recovery before it starts, Close after it ended).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "store/store.h"
#include "util/status.h"
#include "volume/layout.h"
#include "volume/log_format.h"
#include "volume/mem_segment.h"

namespace hbiss::volume {

// Encodes the header of the sealed batch `item` into its header slot: the
// ids (`volume_id`, the item's segment), its seq and entries, the CRC of
// each of its data slots (also stored in the segment's crcs[]) and
// `synced_upto`. The one encoder of batch headers on the writing side: the
// log writer's appends and the re-log segment's Put (relog.h) both use it.
// `scratch` is reused between calls (it keeps its allocations); the item's
// entries are left as they were. Calling it again gives the same bytes.
// InvalidArgument when the entries do not fit a header (BatchBuilder
// prevents that). REQUIRES: !item.end_of_segment, its data slots are
// filled and will not change.
Status EncodeQueuedBatchHeader(uint64_t volume_id, QueueItem& item, LogPosition synced_upto,
                               BatchHeader* scratch);

class LogWriter {
 public:
  // What the writer added to the store since the last TakeAppended.
  struct Appended {
    uint64_t segment_files = 0;  // segment objects created
    uint64_t bytes = 0;          // bytes appended to them
  };

  // Writes the segments of log directory `dir` (object names:
  // layout::SegName; its volume's name goes into messages) of the volume
  // whose id is `volume_id`, into `store`, which must outlive it.
  LogWriter(store::Store* store, layout::LogDir dir, uint64_t volume_id);
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;

  // The log is durable up to `durable` and its last batch has sequence
  // number `appended_seq`: both positions become `durable`. Used when no
  // segment is open and nothing is unsynced (at open, after recovery's
  // re-log, after a NoSpace retry renumbered the log).
  void Restart(LogPosition durable, uint64_t appended_seq);

  // Appends the sealed batch `item` to its segment's object. The first batch
  // of a segment creates the object and appends its header slot (a segment
  // still open then is abandoned: the write path ends one segment before
  // the next starts). The batch header gets the data slots' CRCs and
  // synced_upto = durable_pos(); its slots, which may span two chunks in
  // memory, are appended contiguously. On OK the item is moved into
  // unsynced() and appended_pos()/appended_seq() are the batch's end and
  // seq. On error `item` is left as it was. REQUIRES:
  // !item.end_of_segment, and the item's slots are sealed.
  Status Append(QueueItem& item);

  // The end-of-segment marker of `seg`: if seg is the open segment, closes
  // (syncs) it, sets seg->closed_bytes to its size and makes everything
  // appended durable. Otherwise (nothing of seg was appended) does nothing.
  Status EndSegment(MemSegment* seg);

  // Syncs the open segment: on OK everything appended is durable
  // (durable_pos() = appended_pos(), unsynced() empty). REQUIRES: open().
  Status Sync();

  // Closes the open segment whatever it is and returns its size; on OK as
  // after a Sync. On error the writer stays open and broken (call Abandon).
  // REQUIRES: open().
  Result<uint64_t> CloseSegment();

  // Drops the open segment's writer (after a failure; what it holds past
  // durable_pos() is garbage that the next segment's header cuts off), sets
  // appended_pos() back to durable_pos() and returns the unsynced batches,
  // oldest first. appended_seq() is left for Restart to set.
  std::vector<QueueItem> Abandon();

  // Returns and clears the counts since the last call.
  Appended TakeAppended();

  bool open() const { return writer_ != nullptr; }
  // The open segment's id (0: none).
  uint64_t segment_id() const { return seg_id_; }
  LogPosition appended_pos() const { return appended_pos_; }
  LogPosition durable_pos() const { return durable_pos_; }
  uint64_t appended_seq() const { return appended_seq_; }
  // Batches appended since durable_pos(), oldest first.
  const std::vector<QueueItem>& unsynced() const { return unsynced_; }

 private:
  store::Store* const store_;
  const layout::LogDir dir_;
  const std::string name_;
  const uint64_t volume_id_;

  std::unique_ptr<store::SegmentWriter> writer_;
  uint64_t seg_id_ = 0;
  LogPosition appended_pos_;
  uint64_t appended_seq_ = 0;
  LogPosition durable_pos_;
  BatchHeader scratch_header_;
  std::vector<QueueItem> unsynced_;
  Appended appended_;
};

}  // namespace hbiss::volume
