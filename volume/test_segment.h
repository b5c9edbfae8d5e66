// Tests only: builds the bytes of a segment by hand (doc/log_format.md), to
// put into a MemoryStore for the log reader and segment cache tests.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "volume/log_format.h"

namespace hbiss::volume {

class TestSegment {
 public:
  TestSegment(uint64_t volume_id, uint64_t segment_id, uint64_t first_seq)
      : volume_id_(volume_id), segment_id_(segment_id), next_seq_(first_seq) {
    SegmentHeader h;
    h.volume_id = volume_id;
    h.segment_id = segment_id;
    h.first_seq = first_seq;
    bytes_.resize(kSlotSize);
    EncodeSegmentHeader(h, std::span<uint8_t, kSlotSize>(
                               reinterpret_cast<uint8_t*>(bytes_.data()), kSlotSize));
  }

  // The data of block `lba` in version `v` of a test.
  static std::string BlockData(uint64_t lba, uint64_t v) {
    std::string d(kSlotSize, '\0');
    for (size_t i = 0; i < d.size(); i++) d[i] = char(lba * 17 + v * 5 + i / 128);
    std::memcpy(d.data(), &lba, 8);
    std::memcpy(d.data() + 8, &v, 8);
    return d;
  }

  // Appends a batch of `entries` whose WRITE blocks hold BlockData(lba,
  // version); returns its offset. `synced` is its synced_upto (default: the
  // start of this segment).
  uint64_t AddBatch(const std::vector<BatchEntry>& entries, uint64_t version = 1,
                    LogPosition synced = {}) {
    BatchHeader h;
    h.volume_id = volume_id_;
    h.segment_id = segment_id_;
    h.seq = next_seq_++;
    h.synced_upto = synced.segment_id == 0 ? LogPosition{segment_id_, kSlotSize} : synced;
    h.entries = entries;
    std::string data;
    for (const BatchEntry& e : entries) {
      if (e.type != EntryType::kWrite) continue;
      for (uint64_t b = e.lba; b < e.lba + e.count; b++) {
        std::string d = BlockData(b, version);
        h.data_crcs.push_back(DataSlotCrc(reinterpret_cast<const uint8_t*>(d.data())));
        data += d;
      }
    }
    const uint64_t off = bytes_.size();
    std::string slot(kSlotSize, '\0');
    Status s = EncodeBatchHeader(
        h, std::span<uint8_t, kSlotSize>(reinterpret_cast<uint8_t*>(slot.data()), kSlotSize));
    if (!s.ok()) return ~uint64_t{0};
    bytes_ += slot;
    bytes_ += data;
    return off;
  }
  static BatchEntry Write(uint64_t lba, uint32_t count, bool continues = false) {
    return BatchEntry{EntryType::kWrite, continues, lba, count};
  }
  static BatchEntry Trim(uint64_t lba, uint32_t count) {
    return BatchEntry{EntryType::kTrim, false, lba, count};
  }

  std::string& bytes() { return bytes_; }
  std::span<const uint8_t> span() const {
    return {reinterpret_cast<const uint8_t*>(bytes_.data()), bytes_.size()};
  }
  uint64_t next_seq() const { return next_seq_; }

 private:
  const uint64_t volume_id_;
  const uint64_t segment_id_;
  uint64_t next_seq_;
  std::string bytes_;
};

}  // namespace hbiss::volume
