// The on-disk format of a volume's log segments; doc/log_format.md is the
// specification, this header is its code. All integers are little-endian.
//
// A segment is a sequence of 4 KiB slots. Slot 0 is the segment header.
// Then come batches: one batch-header slot followed by N data slots. The
// batch header lists entries (WRITE / TRIM / ZERO over block ranges) and the
// CRC32C of each data slot, and ends with a masked CRC32C over itself.
//
// Everything here is pure encoding/decoding with no I/O; thread-compatible.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "util/status.h"

namespace hbiss::volume {

inline constexpr uint32_t kSlotSize = 4096;
inline constexpr uint32_t kLogFormatVersion = 1;
// Slot indexes are 16 bits in the extent map, so a segment has at most this
// many slots (256 MiB).
inline constexpr uint32_t kMaxSegmentSlots = 65536;
inline constexpr uint32_t kMinSegmentSlots = 8;

// ---------------------------------------------------------------------------
// Segment header (slot 0).
inline constexpr char kSegmentMagic[8] = {'H', 'B', 'S', 'S', 'S', 'E', 'G', '1'};
inline constexpr size_t kSegmentHeaderBytes = 60;  // bytes covered + CRC

// Segment header flag: an operation still incomplete at the end of the
// previous segment's valid log never happened; discard it. Set on segments
// started by recovery after a log whose last operation was cut off.
inline constexpr uint32_t kSegmentDiscardPending = 1;

struct SegmentHeader {
  uint32_t version = kLogFormatVersion;
  uint32_t flags = 0;             // kSegmentDiscardPending
  uint64_t volume_id = 0;
  uint64_t segment_id = 0;
  uint64_t prev_segment_id = 0;   // 0 for the first segment of the log
  uint64_t prev_segment_end = 0;  // byte length of the previous segment's valid log
  uint64_t first_seq = 0;         // seq of the first batch in this segment
};

// Writes the header into slot[0, kSlotSize), zero-padding the rest.
void EncodeSegmentHeader(const SegmentHeader& h, std::span<uint8_t, kSlotSize> slot);

// Parses a segment header. Corruption for a short buffer, bad magic or CRC;
// NotSupported for a version newer than kLogFormatVersion.
Result<SegmentHeader> DecodeSegmentHeader(std::span<const uint8_t> slot);

// ---------------------------------------------------------------------------
// Batch header (the first slot of every batch).
inline constexpr uint32_t kBatchMagic = 0x31425348;  // "HSB1" as LE bytes
inline constexpr size_t kBatchFixedBytes = 56;
inline constexpr size_t kBatchEntryBytes = 13;
inline constexpr size_t kBatchCrcBytes = 4;

enum class EntryType : uint8_t { kWrite = 1, kTrim = 2, kZero = 3 };

// Bit 7 of an entry's type byte: the operation this entry belongs to goes on
// in the next entry (possibly in a later batch or segment). Recovery applies
// an operation only when its last entry (bit clear) is in the valid log, so
// a volume operation is atomic however many batches it spans.
inline constexpr uint8_t kEntryContinues = 0x80;

struct BatchEntry {
  EntryType type = EntryType::kWrite;
  bool continues = false;  // kEntryContinues
  uint64_t lba = 0;        // first block
  uint32_t count = 0;      // blocks, > 0
};

// A position in the log: the byte offset of the next batch in a segment.
struct LogPosition {
  uint64_t segment_id = 0;
  uint64_t offset = 0;
  friend bool operator==(const LogPosition&, const LogPosition&) = default;
  friend auto operator<=>(const LogPosition&, const LogPosition&) = default;
};

struct BatchHeader {
  uint8_t version = kLogFormatVersion;
  uint8_t type = 0;  // 0: data batch (the only type in version 1)
  uint16_t flags = 0;
  uint64_t volume_id = 0;
  uint64_t segment_id = 0;
  uint64_t seq = 0;
  LogPosition synced_upto;  // log known durable when this batch was sealed
  std::vector<BatchEntry> entries;
  std::vector<uint32_t> data_crcs;  // one per data slot (unmasked CRC32C)
};

// Bytes a batch header with `entries` entries and `slots` data slots needs.
inline constexpr size_t BatchHeaderBytes(size_t entries, size_t slots) {
  return kBatchFixedBytes + entries * kBatchEntryBytes + slots * 4 + kBatchCrcBytes;
}
inline constexpr bool BatchFits(size_t entries, size_t slots) {
  return BatchHeaderBytes(entries, slots) <= kSlotSize;
}

// Writes the header into slot (zero-padded). InvalidArgument, with the slot
// untouched, when it would not decode: it does not fit its slot (BatchFits),
// an entry has count 0 or an unknown type, or the WRITE entries' counts do
// not sum to data_crcs.size().
Status EncodeBatchHeader(const BatchHeader& h, std::span<uint8_t, kSlotSize> slot);

// Parses a batch header and checks it is self-consistent: magic, CRC,
// entry types, counts > 0, WRITE counts summing to the data slot count.
// Corruption on any failure (message says which); NotSupported for a newer
// version. Does not check volume id / segment id / seq: the caller does.
Status DecodeBatchHeader(std::span<const uint8_t> slot, BatchHeader* out);

// CRC32C of one data slot as stored in the batch header.
uint32_t DataSlotCrc(const uint8_t* slot);

// ---------------------------------------------------------------------------
// Segment summary: the CRC table of a closed segment in a small object of its
// own (volumes/NAME/epoch/<E>/sum/<id>), so reading a segment needs one Get instead of
// a scan of every batch header. Only a cache: recovery never reads it, and a
// missing or bad one makes the reader scan the segment instead.
inline constexpr char kSummaryMagic[8] = {'H', 'B', 'S', 'S', 'S', 'U', 'M', '1'};
inline constexpr size_t kSummaryFixedBytes = 40;

struct SegmentSummary {
  uint64_t volume_id = 0;
  uint64_t segment_id = 0;
  uint64_t segment_bytes = 0;  // size of the segment object it describes
  // Per slot (segment_bytes / kSlotSize of them): whether a valid batch
  // header covers it as a data slot, and then its DataSlotCrc (else 0).
  std::vector<bool> valid;
  std::vector<uint32_t> crcs;
};

// REQUIRES: valid.size() == crcs.size() == segment_bytes / kSlotSize.
std::string EncodeSegmentSummary(const SegmentSummary& s);
// Corruption for a short or long buffer, bad magic or bad CRC.
Result<SegmentSummary> DecodeSegmentSummary(std::span<const uint8_t> data);

// 16 lowercase hex digits, the name component of segments and checkpoints.
std::string Hex16(uint64_t v);
// Parses exactly 16 hex digits; false otherwise.
bool ParseHex16(std::string_view s, uint64_t* v);

}  // namespace hbiss::volume
