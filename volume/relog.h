// Re-log: logging batches of a volume's log again, after the last position
// proven durable, when the log past that position cannot be trusted
// (doc/log_format.md, recovery step 6 and DISCARD_PENDING). Both of the
// volume's re-logs go through this unit:
//  * recovery's, at a writable open (recovery.h, RecoveredLog::relog): the
//    complete operations of the unproven tail, read again from the last
//    segment and CRC-checked, go into the new segment, which is then written
//    whole with one atomic, durable Put (PutRelogSegment);
//  * the NoSpace retry's (volume_no_space.cc): every batch that is not
//    durable, copied from its in-memory segment, goes into a fresh segment
//    that the flusher then appends and syncs through the LogWriter.
//
// RelogBatches holds the rules both share: the old batches in order, their
// entries in order with their continue flags, one new batch per old one
// (sealed after each: it needs no more slots than the old one, same data
// and no more entries), and an operation that began before the first batch
// continued. It does not own the write path: it drives
// the caller's (RelogSink), which updates the map and live counts as for
// any write. PutRelogSegment encodes the batch headers with the log
// writer's encoder (EncodeQueuedBatchHeader, log_writer.h); nothing here
// encodes a header by hand.
//
// Threads. No locks of its own, no threads: each call runs on the caller's
// thread and calls the sink synchronously, so the caller holds whatever its
// write path needs (the volume's mutex) around RelogBatches, and holds no
// lock its store calls must not wait under around PutRelogSegment. Batches
// read from the store are read inside RelogBatches, with the caller's locks
// held (the volume does that only at open, before its threads start).
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <vector>

#include "store/store.h"
#include "util/status.h"
#include "volume/layout.h"
#include "volume/log_format.h"
#include "volume/log_reader.h"
#include "volume/mem_segment.h"

namespace hbiss::volume {

// One old batch to log again: its entries, and where its data slots are.
// It refers to what it was made from, which must outlive the call.
struct RelogBatch {
  const std::vector<BatchEntry>* entries = nullptr;
  // In memory: the data slots follow slot `header_slot` of `mem` (a sealed
  // batch, whose slots never change; they may span two buffer chunks).
  MemSegment* mem = nullptr;
  uint32_t header_slot = 0;
  // In the store: the batch header is at byte `offset` of `reader`'s object,
  // and crcs[i] is the CRC of its data slot i (checked again when read).
  store::SegmentReader* reader = nullptr;
  uint64_t offset = 0;
  const std::vector<uint32_t>* crcs = nullptr;

  // A sealed batch of an in-memory segment (REQUIRES: !item.end_of_segment).
  static RelogBatch InMemory(const QueueItem& item);
  // A batch of the last segment as replayed (log_reader.h), in `reader`.
  static RelogBatch InStore(store::SegmentReader* reader, const TailBatch& t);
};

// The write path a re-log goes through. RelogBatches calls, per operation,
// BeginOp, then Write / Unmap for each of its entries in these batches
// (last_part set on the entry that ends it), then EndOp; and SealBatch after
// the entries of each old batch. An error from Write or Unmap stops the
// re-log (EndOp is still called).
class RelogSink {
 public:
  virtual void BeginOp() = 0;
  virtual void EndOp() = 0;
  // Blocks [lba, lba + n) with the data `data` (n slots).
  virtual Status Write(uint64_t lba, uint32_t n, const uint8_t* data, bool last_part) = 0;
  // A TRIM or ZERO of blocks [lba, lba + n).
  virtual Status Unmap(EntryType type, uint64_t lba, uint64_t n, bool last_part) = 0;
  // Seals the batch being built, if any.
  virtual void SealBatch() = 0;

 protected:
  ~RelogSink() = default;
};

// How far RelogBatches logs.
enum class RelogUpTo {
  kEverything,  // every entry (the NoSpace retry: no operation is in progress)
  // Up to the last entry that ends an operation (recovery: an operation
  // whose end is not in the valid log never happened).
  kLastCompleteOperation,
};

// Logs `batches` again, in order, through `sink`, up to `up_to`, and
// returns how many entries it logged (0, and no sink call, when nothing
// ends an operation and up_to says kLastCompleteOperation). A first entry
// that continues an operation begun before the batches needs nothing
// special: the sink's operation begins there, and recovery's replay of the
// re-logged entries continues the one pending before them. Store-backed
// batches are read again and each data slot is checked against its CRC:
// Corruption on a mismatch, named by `where` (as are read errors). On error
// the sink has taken the entries before the failed one and the batches are
// as they were, so a caller that set its write path back (the NoSpace retry
// starts a fresh segment) may call it again with them.
Result<size_t> RelogBatches(std::span<const RelogBatch> batches, RelogUpTo up_to,
                            const std::string& where, RelogSink* sink);

// Writes the re-log segment `seg` of the log in `dir` (volume id `volume_id`) whole,
// with one atomic and durable Put of `store`: its header slot and `items`,
// which must be all of its batches, in order, up to seg->used (no
// end-of-segment marker). Every batch header gets synced_upto = (seg, its
// end), so a later recovery finds the segment proven and never logs it
// again. On OK returns the bytes written (seg->used slots) and marks the
// data slots valid in seg. On error the store holds the old version or none
// (Put is atomic), seg's crcs[] and header slots are set but nothing else
// changed: a call again writes the same bytes. Corruption when `items` do
// not fill seg exactly.
Result<uint64_t> PutRelogSegment(store::Store* store, const layout::LogDir& dir,
                                 uint64_t volume_id, MemSegment* seg,
                                 std::deque<QueueItem>* items);

}  // namespace hbiss::volume
