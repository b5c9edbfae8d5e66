#include "volume/log_reader.h"

#include <algorithm>

#include <spdlog/spdlog.h>

namespace hbiss::volume {

namespace {
// Bytes read at a time by scans.
constexpr uint64_t kScanBytes = 1 << 20;
}  // namespace

Result<ScanEnd> ScanBatchHeaders(store::SegmentReader* reader, uint64_t volume_id, uint64_t seg,
                                 uint32_t seg_slots, const std::string& where,
                                 const std::function<void(uint64_t, const BatchHeader&)>& fn) {
  const uint64_t size = reader->Size();
  std::vector<uint8_t> buf;
  uint64_t buf_off = 0;
  BatchHeader h;
  uint64_t off = kSlotSize;
  for (; off + kSlotSize <= size;) {
    if (off < buf_off || off + kSlotSize > buf_off + buf.size()) {
      buf.resize(std::min<uint64_t>(kScanBytes, (size - off) / kSlotSize * kSlotSize));
      buf_off = off;
      HBISS_RETURN_IF_ERROR(ReadExact(reader, off, buf, where));
    }
    std::span<const uint8_t> slot(buf.data() + (off - buf_off), kSlotSize);
    if (!DecodeBatchHeader(slot, &h).ok() || h.volume_id != volume_id || h.segment_id != seg) {
      return ScanEnd{off, false};
    }
    if (off / kSlotSize + 1 + h.data_crcs.size() > seg_slots) return ScanEnd{off, false};
    fn(off, h);
    off += kSlotSize * (1 + h.data_crcs.size());
  }
  return ScanEnd{off, off >= size};
}

LogReplayer::LogReplayer(uint64_t volume_id, uint32_t seg_slots, std::string name, ExtentMap* map)
    : volume_id_(volume_id), seg_slots_(seg_slots), name_(std::move(name)), map_(map) {}

Status LogReplayer::Apply(const Pending& p) {
  if (p.e.type == EntryType::kWrite) return map_->Set(p.e.lba, p.e.count, p.seg, p.slot);
  return map_->Clear(p.e.lba, p.e.count);
}

Result<bool> LogReplayer::LaterBatchProvesSynced(store::SegmentReader* r, uint64_t seg_id,
                                                 uint64_t off, uint64_t seq,
                                                 const std::string& where) {
  const uint64_t size = r->Size();
  const LogPosition here{seg_id, off};
  std::vector<uint8_t> buf(kScanBytes);
  for (uint64_t p = off + kSlotSize; p < size; p += buf.size()) {
    size_t want = size_t(std::min<uint64_t>(buf.size(), size - p));
    want -= want % kSlotSize;
    if (want == 0) break;
    HBISS_RETURN_IF_ERROR(ReadExact(r, p, std::span<uint8_t>(buf.data(), want), where));
    for (size_t i = 0; i < want; i += kSlotSize) {
      BatchHeader later;
      if (!DecodeBatchHeader(std::span<const uint8_t>(buf.data() + i, kSlotSize), &later).ok()) {
        continue;
      }
      if (later.volume_id == volume_id_ && later.segment_id == seg_id && later.seq > seq &&
          later.synced_upto > here) {
        return true;
      }
    }
  }
  return false;
}

Status LogReplayer::ReplaySegment(store::SegmentReader* r, uint64_t seg_id, uint64_t from,
                                  const uint64_t* limit, uint64_t* seq, uint64_t* end) {
  const std::string where = "volume " + name_ + " segment " + Hex16(seg_id);
  uint64_t off = from;
  const uint64_t size = r->Size();
  std::vector<uint8_t> slot(kSlotSize);
  std::vector<uint8_t> data;
  BatchHeader& h = h_;
  if (limit == nullptr) {
    tail_.clear();
    tail_proven_ = 0;
  }
  auto corrupt = [&](const std::string& why) {
    return Status::Corruption(where + ": bad batch at offset " + std::to_string(off) + ": " + why);
  };
  for (;;) {
    if (stop_seq_ != 0 && *seq >= stop_seq_) {
      stopped_ = true;
      break;
    }
    if (limit != nullptr) {
      if (off == *limit) break;
      if (off > *limit) return corrupt("log runs past the end named by the next segment");
    }
    Status bad;
    bool have_header = false;
    if (off + kSlotSize > size) {
      bad = Status::Corruption("segment ends inside a batch header");
    } else {
      HBISS_RETURN_IF_ERROR(ReadExact(r, off, slot, where));
      bad = DecodeBatchHeader(slot, &h);
      if (bad.IsNotSupported()) return bad.WithContext(where);
      if (bad.ok()) {
        have_header = true;
        if (h.volume_id != volume_id_) {
          bad = Status::Corruption("batch of another volume");
        } else if (h.segment_id != seg_id) {
          bad = Status::Corruption("batch of another segment");
        } else if (h.seq != *seq) {
          bad = Status::Corruption("batch seq " + std::to_string(h.seq) + ", expected " +
                                   std::to_string(*seq));
        }
      }
    }
    const uint64_t batch_end = off + kSlotSize + uint64_t(h.data_crcs.size()) * kSlotSize;
    if (bad.ok() && have_header) {
      if (batch_end > uint64_t(seg_slots_) * kSlotSize) {
        bad = Status::Corruption("batch runs past the volume's segment size");
      } else if (batch_end > size) {
        bad = Status::Corruption("segment ends inside the batch's data");
      } else if (limit == nullptr && !h.data_crcs.empty()) {
        // The tail segment: a batch counts only if all its data arrived.
        data.resize(h.data_crcs.size() * kSlotSize);
        HBISS_RETURN_IF_ERROR(ReadExact(r, off + kSlotSize, data, where));
        for (size_t i = 0; i < h.data_crcs.size(); i++) {
          if (DataSlotCrc(data.data() + i * kSlotSize) != h.data_crcs[i]) {
            bad = Status::Corruption("data slot " + std::to_string(i) + " CRC mismatch");
            break;
          }
        }
      }
    }
    if (!bad.ok()) {
      if (limit != nullptr) return corrupt(bad.message());
      // Torn tail, unless a later valid batch says the log was durable
      // beyond this point.
      HBISS_ASSIGN_OR_RETURN(bool proven, LaterBatchProvesSynced(r, seg_id, off, *seq, where));
      if (proven) return corrupt(bad.message() + "; a later batch shows it had been synced");
      if (off < size) {
        spdlog::info("{}: log ends at offset {} (torn tail: {})", where, off, bad.message());
      }
      break;
    }
    if (limit == nullptr) {
      tail_.push_back(TailBatch{off, h.seq, !pending_.empty(), h.entries, h.data_crcs});
      if (h.synced_upto.segment_id == seg_id) {
        tail_proven_ = std::max(tail_proven_, h.synced_upto.offset);
      }
    }
    // Apply: an operation takes effect when its last entry is read.
    uint32_t slot_idx = uint32_t(off / kSlotSize) + 1;
    for (const BatchEntry& e : h.entries) {
      if (e.lba + e.count > map_->blocks()) return corrupt("entry beyond the volume's end");
      pending_.push_back(Pending{e, uint32_t(seg_id), slot_idx});
      if (e.type == EntryType::kWrite) slot_idx += e.count;
      if (!e.continues) {
        for (const Pending& q : pending_) HBISS_RETURN_IF_ERROR(Apply(q));
        pending_.clear();
      }
    }
    off = batch_end;
    (*seq)++;
  }
  *end = off;
  return Status::OK();
}

}  // namespace hbiss::volume
