// Reading a volume's log back: whole reads of a segment's bytes, the scan of
// a closed segment's batch headers, and the replay of segments onto an extent
// map during recovery, with the rules of doc/log_format.md:
//  * a segment followed by another must be valid up to the end the next one
//    names (prev_segment_end); anything bad before it is corruption;
//  * in the last segment, the first bad batch is the torn tail (the end of
//    the log), unless a later batch's synced_upto proves it had been synced:
//    then it is corruption;
//  * an operation takes effect when its last entry (continues clear) is read.
//
// Thread-compatible: one LogReplayer per recovery.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "store/store.h"
#include "util/status.h"
#include "volume/extent_map.h"
#include "volume/log_format.h"

namespace hbiss::volume {

// Reads exactly out.size() bytes at offset. Corruption when the object is
// shorter. Errors are named by what(), which is called only on failure, so
// the read path builds no message for the common case.
template <typename WhatFn>
Status ReadExact(store::SegmentReader* r, uint64_t offset, std::span<uint8_t> out,
                 const WhatFn& what) {
  size_t done = 0;
  while (done < out.size()) {
    auto n = r->ReadAt(offset + done, out.subspan(done));
    if (!n.ok()) return n.status().WithContext(what());
    if (*n == 0) {
      return Status::Corruption(what() + " ends at " + std::to_string(offset + done) +
                                ", before the " + std::to_string(out.size()) + " bytes at " +
                                std::to_string(offset));
    }
    done += *n;
  }
  return Status::OK();
}

inline Status ReadExact(store::SegmentReader* r, uint64_t offset, std::span<uint8_t> out,
                        const std::string& what) {
  return ReadExact(r, offset, out, [&] { return what; });
}

// How a scan of batch headers ended.
struct ScanEnd {
  uint64_t offset = 0;    // end of the last valid batch
  bool at_end = false;    // true: that is the end of the object (no bad header)
};

// Calls fn(offset, header) for each valid batch header of segment `seg` of
// volume `volume_id` (a segment of `seg_slots` slots), in order, until the
// first slot that is not one. Reads 1 MiB at a time. `where` names the
// segment in errors.
Result<ScanEnd> ScanBatchHeaders(store::SegmentReader* reader, uint64_t volume_id, uint64_t seg,
                                 uint32_t seg_slots, const std::string& where,
                                 const std::function<void(uint64_t, const BatchHeader&)>& fn);

// A valid batch of the last segment, as replayed: what recovery needs to
// log it again when its durability is not proven.
struct TailBatch {
  uint64_t off = 0;
  uint64_t seq = 0;
  bool pending_before = false;  // an operation was incomplete before it
  std::vector<BatchEntry> entries;
  std::vector<uint32_t> crcs;  // of its data slots
};

// Replays segments, in log order, onto an extent map.
class LogReplayer {
 public:
  // `map` must outlive the replayer; `name` is for messages.
  LogReplayer(uint64_t volume_id, uint32_t seg_slots, std::string name, ExtentMap* map);
  LogReplayer(const LogReplayer&) = delete;
  LogReplayer& operator=(const LogReplayer&) = delete;

  // Replays batches of segment `seg_id` from byte `from`, the first with
  // sequence number *seq. With `limit`, the segment is followed by another
  // that says its valid log ends at *limit. Without, it is the last segment:
  // its valid batches are kept as tail_batches(). On success *seq is the next
  // batch's seq and *end the end of the valid log in this segment.
  // Corruption for damage before the end; NotSupported for a newer format.
  Status ReplaySegment(store::SegmentReader* r, uint64_t seg_id, uint64_t from,
                       const uint64_t* limit, uint64_t* seq, uint64_t* end);

  // Replays no batch with seq >= `seq` (0: no limit): ReplaySegment stops
  // before it as if the log ended there (stopped() then says so). For a
  // snapshot's map (doc/snapshots.md), which is the log up to a batch
  // boundary outside any operation.
  void StopAt(uint64_t seq) { stop_seq_ = seq; }
  bool stopped() const { return stopped_; }

  // Drops an operation still incomplete (a segment flagged
  // kSegmentDiscardPending starts here).
  void DiscardPending() { pending_.clear(); }
  bool has_pending() const { return !pending_.empty(); }

  // Of the last segment replayed without a limit.
  const std::vector<TailBatch>& tail_batches() const { return tail_; }
  std::vector<TailBatch> TakeTailBatches() { return std::move(tail_); }
  // The largest synced_upto offset inside that segment.
  uint64_t tail_proven() const { return tail_proven_; }

 private:
  struct Pending {
    BatchEntry e;
    uint32_t seg = 0;
    uint32_t slot = 0;
  };
  // Whether a batch after `off` in the segment (read from r) says the log
  // was synced beyond it.
  Result<bool> LaterBatchProvesSynced(store::SegmentReader* r, uint64_t seg_id, uint64_t off,
                                      uint64_t seq, const std::string& where);
  Status Apply(const Pending& p);

  const uint64_t volume_id_;
  const uint32_t seg_slots_;
  const std::string name_;
  ExtentMap* const map_;
  std::vector<Pending> pending_;
  std::vector<TailBatch> tail_;
  uint64_t tail_proven_ = 0;
  uint64_t stop_seq_ = 0;
  bool stopped_ = false;
  BatchHeader h_;  // scratch
};

}  // namespace hbiss::volume
