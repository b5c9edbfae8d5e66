// MemSegment and QueueItem: what the write path hands the log writer.
//
// A MemSegment is a segment whose bytes are kept in memory: the open one,
// and closed ones until the flusher has closed them in the store. The write
// path fills its slots (under the volume's mutex); the log writer
// (log_writer.h) appends the slots of each sealed batch to the segment's
// store object. A QueueItem is one sealed batch of a MemSegment, or the
// marker that no more batches follow in it.
//
// Who touches what (see volume_impl.h for the volume's locks):
//  * id, slots: set before the segment is shared, then constant.
//  * header, chunks, used, charged: the write path, under the volume's
//    mutex. chunks never reallocates (reserved up front), so the log writer
//    may read the slots of a sealed batch without that mutex while writers
//    add chunks after them; a sealed batch's data slots never change.
//  * the header slot of a sealed batch, crcs, valid, closed_bytes: the log
//    writer's thread (the flusher once the volume has started; before that
//    recovery's re-log, and after the flusher ended Close), which also reads
//    them when it retires the segment or writes its summary.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "util/status.h"
#include "volume/batch_builder.h"
#include "volume/log_format.h"
#include "volume/memory_budget.h"

namespace hbiss::volume {

// Its slots live in chunks of MemoryBudget::kChunkBytes, allocated as the
// segment fills (Grow) and charged to a MemoryBudget until the segment is
// destroyed; slot 0, the segment header, has a buffer of its own.
struct MemSegment {
  static constexpr uint32_t kChunkSlots = MemoryBudget::kChunkBytes / kSlotSize;

  explicit MemSegment(MemoryBudget* b) : budget(b) {}
  ~MemSegment() { budget->Release(charged); }
  MemSegment(const MemSegment&) = delete;
  MemSegment& operator=(const MemSegment&) = delete;

  // A segment of `slots` slots (at most kMaxSegmentSlots) whose slot 0 holds
  // header `h` (its id is h.segment_id), with no chunk allocated yet and
  // room reserved for all of them. Charges nothing until Grow.
  static std::shared_ptr<MemSegment> New(MemoryBudget* budget, uint32_t slots,
                                         const SegmentHeader& h);

  // Allocates the chunks that slots [0, upto) need, taking their charge from
  // *reserved while it lasts and forcing the rest. NoSpace without memory.
  Status Grow(uint32_t upto, uint64_t* reserved);
  uint8_t* Slot(uint32_t i) {
    return i == 0 ? header : chunks[i / kChunkSlots].get() + size_t(i % kChunkSlots) * kSlotSize;
  }
  // Slots that follow slot i in the same chunk (i included).
  uint32_t RunFrom(uint32_t i) const { return i == 0 ? 1 : kChunkSlots - i % kChunkSlots; }
  // Copies n slots from / to contiguous memory.
  void CopyIn(uint32_t slot, const uint8_t* src, uint32_t n);
  void CopyOut(uint32_t slot, uint64_t offset_in_slot, uint8_t* dst, uint64_t len);
  // Frees the chunks and gives their charge back (the volume is closed).
  void FreeBuffers() {
    chunks.clear();
    budget->Release(charged);
    charged = 0;
  }

  MemoryBudget* const budget;
  uint64_t charged = 0;  // bytes charged to budget
  uint64_t id = 0;
  uint32_t slots = 0;
  uint8_t header[kSlotSize];
  std::vector<std::unique_ptr<uint8_t[]>> chunks;
  uint32_t used = 1;           // slots allocated (slot 0 is the header)
  std::vector<uint32_t> crcs;  // data slot CRCs, filled by the log writer
  std::vector<bool> valid;     // data slots the log writer appended
  uint64_t closed_bytes = 0;  // object size once the log writer closed it (0: not closed)
};

// A sealed batch waiting for the flusher, or the end of a segment.
struct QueueItem {
  std::shared_ptr<MemSegment> seg;
  bool end_of_segment = false;  // marker: no more batches in seg
  uint32_t header_slot = 0;
  uint32_t data_slots = 0;
  uint64_t seq = 0;
  std::vector<BatchEntry> entries;

  // The queue item of batch `b`, sealed in segment `seg`.
  static QueueItem Sealed(std::shared_ptr<MemSegment> seg, SealedBatch&& b) {
    QueueItem item;
    item.seg = std::move(seg);
    item.header_slot = b.header_slot;
    item.data_slots = b.data_slots;
    item.seq = b.seq;
    item.entries = std::move(b.entries);
    return item;
  }
};

}  // namespace hbiss::volume
