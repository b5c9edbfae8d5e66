#include "volume/relog.h"

#include <cstdint>

#include "volume/layout.h"
#include "volume/log_writer.h"

namespace hbiss::volume {

RelogBatch RelogBatch::InMemory(const QueueItem& item) {
  RelogBatch b;
  b.entries = &item.entries;
  b.mem = item.seg.get();
  b.header_slot = item.header_slot;
  return b;
}

RelogBatch RelogBatch::InStore(store::SegmentReader* reader, const TailBatch& t) {
  RelogBatch b;
  b.entries = &t.entries;
  b.reader = reader;
  b.offset = t.off;
  b.crcs = &t.crcs;
  return b;
}

namespace {

// Reads `n` data slots of `b`, from its data slot `first`, into `out`.
Status ReadData(const RelogBatch& b, uint32_t first, uint32_t n, std::vector<uint8_t>* out,
                const std::string& where) {
  out->resize(size_t(n) * kSlotSize);
  if (b.mem != nullptr) {
    // The old slots may span two buffer chunks: CopyOut joins them.
    b.mem->CopyOut(b.header_slot + 1 + first, 0, out->data(), out->size());
    return Status::OK();
  }
  const uint64_t slot = b.offset / kSlotSize + 1 + first;
  HBISS_RETURN_IF_ERROR(ReadExact(b.reader, slot * kSlotSize, *out, where));
  for (uint32_t k = 0; k < n; k++) {
    // Replay checked these CRCs; check again, the bytes were read again.
    if (first + k >= b.crcs->size() ||
        DataSlotCrc(out->data() + size_t(k) * kSlotSize) != (*b.crcs)[first + k]) {
      return Status::Corruption(where + ": CRC mismatch re-reading slot " +
                                std::to_string(slot + k));
    }
  }
  return Status::OK();
}

}  // namespace

Result<size_t> RelogBatches(std::span<const RelogBatch> batches, RelogUpTo up_to,
                            const std::string& where, RelogSink* sink) {
  if (batches.empty()) return size_t{0};
  // Where to stop: after the last entry of the last batch, or after the
  // last entry that ends an operation.
  size_t last_b = batches.size() - 1;
  size_t last_e = SIZE_MAX;
  if (up_to == RelogUpTo::kLastCompleteOperation) {
    bool any = false;
    for (size_t i = 0; i < batches.size(); i++) {
      const std::vector<BatchEntry>& es = *batches[i].entries;
      for (size_t j = 0; j < es.size(); j++) {
        if (!es[j].continues) {
          last_b = i;
          last_e = j;
          any = true;
        }
      }
    }
    if (!any) return size_t{0};
  }
  size_t relogged = 0;
  bool in_op = false;
  std::vector<uint8_t> data;
  for (size_t i = 0; i <= last_b; i++) {
    const RelogBatch& b = batches[i];
    const std::vector<BatchEntry>& es = *b.entries;
    uint32_t first = 0;  // the entry's first data slot in the batch
    for (size_t j = 0; j < es.size() && (i < last_b || j <= last_e); j++) {
      const BatchEntry& e = es[j];
      if (!in_op) {
        sink->BeginOp();
        in_op = true;
      }
      Status s;
      if (e.type == EntryType::kWrite) {
        s = ReadData(b, first, e.count, &data, where);
        if (s.ok()) s = sink->Write(e.lba, e.count, data.data(), !e.continues);
        first += e.count;
      } else {
        s = sink->Unmap(e.type, e.lba, e.count, !e.continues);
      }
      if (!s.ok()) {
        sink->EndOp();
        return s;
      }
      if (!e.continues) {
        sink->EndOp();
        in_op = false;
      }
      relogged++;
    }
    sink->SealBatch();
  }
  if (in_op) sink->EndOp();
  return relogged;
}

Result<uint64_t> PutRelogSegment(store::Store* store, const layout::LogDir& dir,
                                 uint64_t volume_id, MemSegment* seg,
                                 std::deque<QueueItem>* items) {
  const std::string name = dir.volume();
  const std::string obj = layout::SegName(dir, seg->id);
  // The items must be the segment's batches, back to back from slot 1 to
  // its end: the Put is the whole segment, and every batch says so.
  uint32_t next = 1;
  for (const QueueItem& item : *items) {
    if (item.end_of_segment || item.seg.get() != seg || item.header_slot != next) {
      return Status::Corruption("volume " + name + ": the re-log of the log's tail does not "
                                "fit one segment");
    }
    next = item.header_slot + 1 + item.data_slots;
  }
  if (items->empty() || next != seg->used) {
    return Status::Corruption("volume " + name + ": the re-log of the log's tail does not fit "
                              "one segment");
  }
  const uint64_t end = uint64_t(seg->used) * kSlotSize;
  BatchHeader scratch;
  for (QueueItem& item : *items) {
    HBISS_RETURN_IF_ERROR(
        EncodeQueuedBatchHeader(volume_id, item, LogPosition{seg->id, end}, &scratch)
            .WithContext("volume " + name + ": re-log batch " + std::to_string(item.seq)));
  }
  std::vector<uint8_t> whole(end);
  seg->CopyOut(0, 0, whole.data(), end);
  HBISS_RETURN_IF_ERROR(
      store->Put(obj, whole).WithContext("volume " + name + ": writing re-log segment " + obj));
  for (const QueueItem& item : *items) {
    for (uint32_t i = 0; i < item.data_slots; i++) seg->valid[item.header_slot + 1 + i] = true;
  }
  return end;
}

}  // namespace hbiss::volume
