#include "volume/checkpoint.h"

#include <cstring>

#include "util/coding.h"
#include "util/crc32c.h"

namespace hbiss::volume {

std::string EncodeCheckpoint(const CheckpointInfo& info, const ExtentMap& map) {
  std::string out(kCheckpointFixedBytes, '\0');
  uint64_t prev = 0;
  for (uint64_t id : info.segment_ids) {
    PutVarint64(&out, id - prev);
    prev = id;
  }
  uint64_t runs = 0;
  uint64_t prev_end = 0;
  map.ForEach([&](const MapRun& r) {
    PutVarint64(&out, r.lba - prev_end);
    PutVarint64(&out, r.count);
    PutVarint64(&out, r.seg);
    PutVarint64(&out, r.slot);
    prev_end = r.lba + r.count;
    runs++;
  });
  uint8_t* p = reinterpret_cast<uint8_t*>(out.data());
  std::memcpy(p, kCheckpointMagic, 8);
  EncodeFixed32(p + 8, kCheckpointVersion);
  EncodeFixed32(p + 12, 0);
  EncodeFixed64(p + 16, info.volume_id);
  EncodeFixed64(p + 24, info.seq);
  EncodeFixed64(p + 32, info.position.segment_id);
  EncodeFixed64(p + 40, info.position.offset);
  EncodeFixed64(p + 48, info.next_seq);
  EncodeFixed64(p + 56, info.volume_size);
  EncodeFixed64(p + 64, info.segment_ids.size());
  EncodeFixed64(p + 72, runs);
  uint8_t crc[4];
  EncodeFixed32(crc, crc32c::Mask(crc32c::Value(out.data(), out.size())));
  out.append(reinterpret_cast<const char*>(crc), 4);
  return out;
}

Status DecodeCheckpoint(std::string_view data, CheckpointInfo* info, ExtentMap* map) {
  if (data.size() < kCheckpointFixedBytes + 4) return Status::Corruption("checkpoint is short");
  const uint8_t* p = reinterpret_cast<const uint8_t*>(data.data());
  if (std::memcmp(p, kCheckpointMagic, 8) != 0) {
    return Status::Corruption("checkpoint has bad magic");
  }
  size_t body_end = data.size() - 4;
  if (crc32c::Unmask(DecodeFixed32(p + body_end)) != crc32c::Value(p, body_end)) {
    return Status::Corruption("checkpoint CRC mismatch");
  }
  CheckpointInfo ci;
  ci.version = DecodeFixed32(p + 8);
  if (ci.version == 0) return Status::Corruption("checkpoint version 0");
  if (ci.version > kCheckpointVersion) {
    return Status::NotSupported("checkpoint format version " + std::to_string(ci.version) +
                                " is newer than this build supports");
  }
  ci.volume_id = DecodeFixed64(p + 16);
  ci.seq = DecodeFixed64(p + 24);
  ci.position.segment_id = DecodeFixed64(p + 32);
  ci.position.offset = DecodeFixed64(p + 40);
  ci.next_seq = DecodeFixed64(p + 48);
  ci.volume_size = DecodeFixed64(p + 56);
  uint64_t n_ids = DecodeFixed64(p + 64);
  ci.run_count = DecodeFixed64(p + 72);
  if (ci.volume_size % kSlotSize != 0) return Status::Corruption("checkpoint volume size");
  if (map != nullptr && map->blocks() != ci.volume_size / kSlotSize) {
    return Status::Corruption("checkpoint volume size differs from the volume's");
  }
  std::string_view in(data.data() + kCheckpointFixedBytes, body_end - kCheckpointFixedBytes);
  if (n_ids > in.size()) return Status::Corruption("checkpoint segment count too large");
  ci.segment_ids.reserve(n_ids);
  uint64_t prev = 0;
  for (uint64_t i = 0; i < n_ids; i++) {
    uint64_t d;
    if (!GetVarint64(&in, &d)) return Status::Corruption("checkpoint segment list truncated");
    if (d == 0 || prev + d < prev) return Status::Corruption("checkpoint segment ids not increasing");
    prev += d;
    ci.segment_ids.push_back(prev);
  }
  uint64_t blocks = ci.volume_size / kSlotSize;
  uint64_t prev_end = 0;
  for (uint64_t i = 0; i < ci.run_count; i++) {
    uint64_t gap, count, seg, slot;
    if (!GetVarint64(&in, &gap) || !GetVarint64(&in, &count) || !GetVarint64(&in, &seg) ||
        !GetVarint64(&in, &slot)) {
      return Status::Corruption("checkpoint run list truncated");
    }
    uint64_t lba = prev_end + gap;
    if (lba < prev_end || count == 0 || lba + count < lba || lba + count > blocks) {
      return Status::Corruption("checkpoint run outside the volume");
    }
    if (seg == 0 || seg > ExtentMap::kMaxSeg || slot + count > ExtentMap::kMaxSlot) {
      return Status::Corruption("checkpoint run has a bad location");
    }
    if (map != nullptr) {
      Status st = map->Set(lba, count, uint32_t(seg), uint32_t(slot));
      if (!st.ok()) return st;  // out of memory: the checks above rule out the rest
    }
    prev_end = lba + count;
  }
  if (!in.empty()) return Status::Corruption("checkpoint has trailing bytes");
  *info = std::move(ci);
  return Status::OK();
}

}  // namespace hbiss::volume
