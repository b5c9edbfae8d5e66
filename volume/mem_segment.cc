#include "volume/mem_segment.h"

#include <algorithm>
#include <cstring>
#include <new>

namespace hbiss::volume {

std::shared_ptr<MemSegment> MemSegment::New(MemoryBudget* budget, uint32_t slots,
                                             const SegmentHeader& h) {
  auto s = std::make_shared<MemSegment>(budget);
  s->id = h.segment_id;
  s->slots = slots;
  // Never reallocated: the log writer reads chunks of sealed batches without
  // the volume's mutex while writers add chunks after them.
  s->chunks.reserve((slots + kChunkSlots - 1) / kChunkSlots);
  s->crcs.assign(slots, 0);
  s->valid.assign(slots, false);
  EncodeSegmentHeader(h, std::span<uint8_t, kSlotSize>(s->Slot(0), kSlotSize));
  return s;
}

Status MemSegment::Grow(uint32_t upto, uint64_t* reserved) {
  const size_t need = (size_t(upto) + kChunkSlots - 1) / kChunkSlots;
  while (chunks.size() < need) {
    std::unique_ptr<uint8_t[]> c(new (std::nothrow) uint8_t[MemoryBudget::kChunkBytes]);
    if (!c) return Status::NoSpace("out of memory for a segment buffer chunk");
    if (*reserved >= MemoryBudget::kChunkBytes) {
      *reserved -= MemoryBudget::kChunkBytes;
    } else {
      budget->Force(MemoryBudget::kChunkBytes);
    }
    charged += MemoryBudget::kChunkBytes;
    chunks.push_back(std::move(c));
  }
  return Status::OK();
}

void MemSegment::CopyIn(uint32_t slot, const uint8_t* src, uint32_t n) {
  while (n > 0) {
    const uint32_t k = std::min(n, RunFrom(slot));
    std::memcpy(Slot(slot), src, size_t(k) * kSlotSize);
    slot += k;
    src += size_t(k) * kSlotSize;
    n -= k;
  }
}

void MemSegment::CopyOut(uint32_t slot, uint64_t offset_in_slot, uint8_t* dst, uint64_t len) {
  slot += uint32_t(offset_in_slot / kSlotSize);
  uint64_t off = offset_in_slot % kSlotSize;
  while (len > 0) {
    const uint64_t room = uint64_t(RunFrom(slot)) * kSlotSize - off;
    const uint64_t k = std::min(len, room);
    std::memcpy(dst, Slot(slot) + off, k);
    dst += k;
    len -= k;
    slot += uint32_t((off + k) / kSlotSize);
    off = (off + k) % kSlotSize;
  }
}

}  // namespace hbiss::volume
