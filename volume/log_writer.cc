#include "volume/log_writer.h"

#include <algorithm>
#include <utility>

#include "volume/layout.h"

namespace hbiss::volume {

Status EncodeQueuedBatchHeader(uint64_t volume_id, QueueItem& item, LogPosition synced_upto,
                               BatchHeader* scratch) {
  MemSegment* seg = item.seg.get();
  BatchHeader& h = *scratch;
  h.volume_id = volume_id;
  h.segment_id = seg->id;
  h.seq = item.seq;
  h.synced_upto = synced_upto;
  h.entries.swap(item.entries);  // back below: a re-log after NoSpace needs them
  h.data_crcs.resize(item.data_slots);
  for (uint32_t i = 0; i < item.data_slots; i++) {
    const uint32_t s = item.header_slot + 1 + i;
    const uint32_t c = DataSlotCrc(seg->Slot(s));
    h.data_crcs[i] = c;
    seg->crcs[s] = c;
  }
  Status es =
      EncodeBatchHeader(h, std::span<uint8_t, kSlotSize>(seg->Slot(item.header_slot), kSlotSize));
  h.entries.swap(item.entries);
  return es;
}

LogWriter::LogWriter(store::Store* store, layout::LogDir dir, uint64_t volume_id)
    : store_(store), dir_(std::move(dir)), name_(dir_.volume()), volume_id_(volume_id) {}

void LogWriter::Restart(LogPosition durable, uint64_t appended_seq) {
  appended_pos_ = durable_pos_ = durable;
  appended_seq_ = appended_seq;
}

Status LogWriter::Append(QueueItem& item) {
  MemSegment* seg = item.seg.get();
  const std::string obj = layout::SegName(dir_, seg->id);
  if (!writer_ || seg_id_ != seg->id) {
    HBISS_ASSIGN_OR_RETURN(writer_, store_->Create(obj));
    seg_id_ = seg->id;
    appended_.segment_files++;
    HBISS_RETURN_IF_ERROR(writer_->Append(std::span<const uint8_t>(seg->Slot(0), kSlotSize))
                              .WithContext("appending to " + obj));
    appended_.bytes += kSlotSize;
  }
  HBISS_RETURN_IF_ERROR(EncodeQueuedBatchHeader(volume_id_, item, durable_pos_, &scratch_header_)
                            .WithContext("volume " + name_ + ": batch " +
                                         std::to_string(item.seq) + " of " + obj));
  // The batch's slots are contiguous in the object; in memory they may span
  // two chunks.
  const uint32_t end = item.header_slot + 1 + item.data_slots;
  for (uint32_t s = item.header_slot; s < end;) {
    const uint32_t k = std::min(end - s, seg->RunFrom(s));
    HBISS_RETURN_IF_ERROR(
        writer_->Append(std::span<const uint8_t>(seg->Slot(s), size_t(k) * kSlotSize))
            .WithContext("appending to " + obj));
    s += k;
  }
  for (uint32_t s = item.header_slot + 1; s < end; s++) seg->valid[s] = true;
  appended_.bytes += uint64_t(1 + item.data_slots) * kSlotSize;
  appended_pos_ = {seg->id, uint64_t(end) * kSlotSize};
  appended_seq_ = item.seq;
  unsynced_.push_back(std::move(item));
  return Status::OK();
}

Status LogWriter::EndSegment(MemSegment* seg) {
  if (!writer_ || seg_id_ != seg->id) return Status::OK();
  auto bytes = CloseSegment();
  if (!bytes.ok()) return bytes.status().WithContext("closing " + layout::SegName(dir_, seg->id));
  seg->closed_bytes = *bytes;  // its summary is written once waiters are released
  return Status::OK();
}

Status LogWriter::Sync() {
  HBISS_RETURN_IF_ERROR(writer_->Sync().WithContext("volume " + name_ + ": sync"));
  durable_pos_ = appended_pos_;
  unsynced_.clear();
  return Status::OK();
}

Result<uint64_t> LogWriter::CloseSegment() {
  const uint64_t bytes = writer_->Size();
  HBISS_RETURN_IF_ERROR(writer_->Close());
  writer_.reset();
  seg_id_ = 0;
  durable_pos_ = appended_pos_;
  unsynced_.clear();
  return bytes;
}

std::vector<QueueItem> LogWriter::Abandon() {
  writer_.reset();
  seg_id_ = 0;
  appended_pos_ = durable_pos_;
  std::vector<QueueItem> out;
  out.swap(unsynced_);
  return out;
}

LogWriter::Appended LogWriter::TakeAppended() { return std::exchange(appended_, Appended{}); }

}  // namespace hbiss::volume
