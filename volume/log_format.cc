#include "volume/log_format.h"

#include <cstring>
#include <string>

#include "util/coding.h"
#include "util/crc32c.h"

namespace hbiss::volume {

void EncodeSegmentHeader(const SegmentHeader& h, std::span<uint8_t, kSlotSize> slot) {
  uint8_t* p = slot.data();
  std::memset(p, 0, kSlotSize);
  std::memcpy(p, kSegmentMagic, 8);
  EncodeFixed32(p + 8, h.version);
  EncodeFixed32(p + 12, h.flags);
  EncodeFixed64(p + 16, h.volume_id);
  EncodeFixed64(p + 24, h.segment_id);
  EncodeFixed64(p + 32, h.prev_segment_id);
  EncodeFixed64(p + 40, h.prev_segment_end);
  EncodeFixed64(p + 48, h.first_seq);
  EncodeFixed32(p + 56, crc32c::Mask(crc32c::Value(p, 56)));
}

Result<SegmentHeader> DecodeSegmentHeader(std::span<const uint8_t> slot) {
  if (slot.size() < kSegmentHeaderBytes) return Status::Corruption("segment header is short");
  const uint8_t* p = slot.data();
  if (std::memcmp(p, kSegmentMagic, 8) != 0) {
    return Status::Corruption("segment header has bad magic");
  }
  if (crc32c::Unmask(DecodeFixed32(p + 56)) != crc32c::Value(p, 56)) {
    return Status::Corruption("segment header CRC mismatch");
  }
  SegmentHeader h;
  h.version = DecodeFixed32(p + 8);
  if (h.version == 0) return Status::Corruption("segment header version 0");
  if (h.version > kLogFormatVersion) {
    return Status::NotSupported("segment format version " + std::to_string(h.version) +
                                " is newer than this build supports");
  }
  h.flags = DecodeFixed32(p + 12);
  if (h.flags & ~kSegmentDiscardPending) return Status::NotSupported("unknown segment flags");
  h.volume_id = DecodeFixed64(p + 16);
  h.segment_id = DecodeFixed64(p + 24);
  h.prev_segment_id = DecodeFixed64(p + 32);
  h.prev_segment_end = DecodeFixed64(p + 40);
  h.first_seq = DecodeFixed64(p + 48);
  return h;
}

Status EncodeBatchHeader(const BatchHeader& h, std::span<uint8_t, kSlotSize> slot) {
  if (!BatchFits(h.entries.size(), h.data_crcs.size())) {
    return Status::InvalidArgument("batch header of " + std::to_string(h.entries.size()) +
                                   " entries and " + std::to_string(h.data_crcs.size()) +
                                   " data slots does not fit its slot");
  }
  uint64_t written = 0;
  for (const BatchEntry& e : h.entries) {
    if (e.count == 0 || (e.type != EntryType::kWrite && e.type != EntryType::kTrim &&
                         e.type != EntryType::kZero)) {
      return Status::InvalidArgument("batch header entry with a bad type or count 0");
    }
    if (e.type == EntryType::kWrite) written += e.count;
  }
  if (written != h.data_crcs.size()) {
    return Status::InvalidArgument("batch header WRITE entries cover " + std::to_string(written) +
                                   " blocks but it has " + std::to_string(h.data_crcs.size()) +
                                   " data slots");
  }
  uint8_t* p = slot.data();
  size_t n = BatchHeaderBytes(h.entries.size(), h.data_crcs.size());
  EncodeFixed32(p, kBatchMagic);
  p[4] = h.version;
  p[5] = h.type;
  EncodeFixed16(p + 6, h.flags);
  EncodeFixed64(p + 8, h.volume_id);
  EncodeFixed64(p + 16, h.segment_id);
  EncodeFixed64(p + 24, h.seq);
  EncodeFixed64(p + 32, h.synced_upto.segment_id);
  EncodeFixed64(p + 40, h.synced_upto.offset);
  EncodeFixed16(p + 48, uint16_t(h.entries.size()));
  EncodeFixed16(p + 50, uint16_t(h.data_crcs.size()));
  EncodeFixed32(p + 52, 0);  // reserved
  uint8_t* q = p + kBatchFixedBytes;
  for (const BatchEntry& e : h.entries) {
    q[0] = uint8_t(uint8_t(e.type) | (e.continues ? kEntryContinues : 0));
    EncodeFixed64(q + 1, e.lba);
    EncodeFixed32(q + 9, e.count);
    q += kBatchEntryBytes;
  }
  for (uint32_t c : h.data_crcs) {
    EncodeFixed32(q, c);
    q += 4;
  }
  EncodeFixed32(q, crc32c::Mask(crc32c::Value(p, n - kBatchCrcBytes)));
  std::memset(p + n, 0, kSlotSize - n);
  return Status::OK();
}

Status DecodeBatchHeader(std::span<const uint8_t> slot, BatchHeader* out) {
  if (slot.size() < kSlotSize) return Status::Corruption("batch header is short");
  const uint8_t* p = slot.data();
  if (DecodeFixed32(p) != kBatchMagic) return Status::Corruption("batch header has bad magic");
  size_t n_entries = DecodeFixed16(p + 48);
  size_t n_slots = DecodeFixed16(p + 50);
  if (!BatchFits(n_entries, n_slots)) {
    return Status::Corruption("batch header counts exceed its slot");
  }
  size_t n = BatchHeaderBytes(n_entries, n_slots);
  if (crc32c::Unmask(DecodeFixed32(p + n - kBatchCrcBytes)) !=
      crc32c::Value(p, n - kBatchCrcBytes)) {
    return Status::Corruption("batch header CRC mismatch");
  }
  out->version = p[4];
  if (out->version == 0) return Status::Corruption("batch version 0");
  if (out->version > kLogFormatVersion) {
    return Status::NotSupported("batch format version " + std::to_string(out->version) +
                                " is newer than this build supports");
  }
  out->type = p[5];
  if (out->type != 0) return Status::Corruption("unknown batch type");
  out->flags = DecodeFixed16(p + 6);
  out->volume_id = DecodeFixed64(p + 8);
  out->segment_id = DecodeFixed64(p + 16);
  out->seq = DecodeFixed64(p + 24);
  out->synced_upto.segment_id = DecodeFixed64(p + 32);
  out->synced_upto.offset = DecodeFixed64(p + 40);
  out->entries.resize(n_entries);
  out->data_crcs.resize(n_slots);
  const uint8_t* q = p + kBatchFixedBytes;
  uint64_t write_blocks = 0;
  for (BatchEntry& e : out->entries) {
    uint8_t t = q[0] & uint8_t(~kEntryContinues);
    e.continues = (q[0] & kEntryContinues) != 0;
    if (t < uint8_t(EntryType::kWrite) || t > uint8_t(EntryType::kZero)) {
      return Status::Corruption("batch entry has unknown type");
    }
    e.type = EntryType(t);
    e.lba = DecodeFixed64(q + 1);
    e.count = DecodeFixed32(q + 9);
    if (e.count == 0) return Status::Corruption("batch entry with zero blocks");
    if (e.lba + e.count < e.lba) return Status::Corruption("batch entry range overflows");
    if (e.type == EntryType::kWrite) write_blocks += e.count;
    q += kBatchEntryBytes;
  }
  if (write_blocks != n_slots) {
    return Status::Corruption("batch WRITE entries do not match its data slot count");
  }
  for (uint32_t& c : out->data_crcs) {
    c = DecodeFixed32(q);
    q += 4;
  }
  return Status::OK();
}

uint32_t DataSlotCrc(const uint8_t* slot) { return crc32c::Value(slot, kSlotSize); }

// Layout: magic(8) volume_id(8) segment_id(8) segment_bytes(8) slots(4)
// reserved(4) crcs(4 * slots) valid bitmap(ceil(slots / 8), bit i of byte
// i / 8 is slot i) masked CRC32C of everything before (4).
std::string EncodeSegmentSummary(const SegmentSummary& s) {
  const size_t n = s.crcs.size();
  std::string out(kSummaryFixedBytes + 4 * n + (n + 7) / 8 + 4, '\0');
  uint8_t* p = reinterpret_cast<uint8_t*>(out.data());
  std::memcpy(p, kSummaryMagic, 8);
  EncodeFixed64(p + 8, s.volume_id);
  EncodeFixed64(p + 16, s.segment_id);
  EncodeFixed64(p + 24, s.segment_bytes);
  EncodeFixed32(p + 32, uint32_t(n));
  uint8_t* c = p + kSummaryFixedBytes;
  for (size_t i = 0; i < n; i++) EncodeFixed32(c + 4 * i, s.crcs[i]);
  uint8_t* bits = c + 4 * n;
  for (size_t i = 0; i < n; i++) {
    if (s.valid[i]) bits[i / 8] |= uint8_t(1u << (i % 8));
  }
  const size_t body = out.size() - 4;
  EncodeFixed32(p + body, crc32c::Mask(crc32c::Value(p, body)));
  return out;
}

Result<SegmentSummary> DecodeSegmentSummary(std::span<const uint8_t> d) {
  if (d.size() < kSummaryFixedBytes + 4 || std::memcmp(d.data(), kSummaryMagic, 8) != 0) {
    return Status::Corruption("segment summary: short or bad magic");
  }
  const uint64_t n = DecodeFixed32(d.data() + 32);
  if (d.size() != kSummaryFixedBytes + 4 * n + (n + 7) / 8 + 4) {
    return Status::Corruption("segment summary: size does not match its slot count");
  }
  const size_t body = d.size() - 4;
  if (crc32c::Unmask(DecodeFixed32(d.data() + body)) != crc32c::Value(d.data(), body)) {
    return Status::Corruption("segment summary: CRC mismatch");
  }
  SegmentSummary s;
  s.volume_id = DecodeFixed64(d.data() + 8);
  s.segment_id = DecodeFixed64(d.data() + 16);
  s.segment_bytes = DecodeFixed64(d.data() + 24);
  if (s.segment_bytes / kSlotSize != n) {
    return Status::Corruption("segment summary: slot count does not match the segment size");
  }
  s.crcs.resize(n);
  s.valid.resize(n);
  const uint8_t* c = d.data() + kSummaryFixedBytes;
  const uint8_t* bits = c + 4 * n;
  for (size_t i = 0; i < n; i++) {
    s.crcs[i] = DecodeFixed32(c + 4 * i);
    s.valid[i] = (bits[i / 8] >> (i % 8)) & 1;
  }
  return s;
}

std::string Hex16(uint64_t v) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; i--) {
    s[i] = kDigits[v & 15];
    v >>= 4;
  }
  return s;
}

bool ParseHex16(std::string_view s, uint64_t* v) {
  if (s.size() != 16) return false;
  uint64_t r = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return false;
    r = (r << 4) | uint64_t(d);
  }
  *v = r;
  return true;
}

}  // namespace hbiss::volume
