#include "volume/log_format.h"

#include <gtest/gtest.h>

#include <array>
#include <functional>
#include <random>

#include "util/coding.h"
#include "util/crc32c.h"

namespace hbiss::volume {
namespace {

using Slot = std::array<uint8_t, kSlotSize>;

SegmentHeader SampleSegmentHeader() {
  SegmentHeader h;
  h.volume_id = 0x1122334455667788ull;
  h.segment_id = 42;
  h.prev_segment_id = 41;
  h.prev_segment_end = 123 * 4096;
  h.first_seq = 9999;
  h.flags = kSegmentDiscardPending;
  return h;
}

TEST(SegmentHeaderTest, RoundTrip) {
  Slot slot;
  slot.fill(0xee);
  SegmentHeader h = SampleSegmentHeader();
  EncodeSegmentHeader(h, slot);
  auto r = DecodeSegmentHeader(slot);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->version, kLogFormatVersion);
  EXPECT_EQ(r->volume_id, h.volume_id);
  EXPECT_EQ(r->segment_id, 42u);
  EXPECT_EQ(r->prev_segment_id, 41u);
  EXPECT_EQ(r->prev_segment_end, 123u * 4096);
  EXPECT_EQ(r->first_seq, 9999u);
  EXPECT_EQ(r->flags, kSegmentDiscardPending);
  // Rest of the slot is zero padding.
  for (size_t i = kSegmentHeaderBytes; i < kSlotSize; i++) ASSERT_EQ(slot[i], 0) << i;
}

TEST(SegmentHeaderTest, EveryCoveredByteFlipIsDetected) {
  Slot slot;
  EncodeSegmentHeader(SampleSegmentHeader(), slot);
  for (size_t i = 0; i < kSegmentHeaderBytes; i++) {
    Slot bad = slot;
    bad[i] ^= 0x01;
    auto r = DecodeSegmentHeader(bad);
    EXPECT_TRUE(r.status().IsCorruption()) << "byte " << i;
  }
  // Padding is not covered: flipping it changes nothing.
  Slot pad = slot;
  pad[100] ^= 0xff;
  EXPECT_TRUE(DecodeSegmentHeader(pad).ok());
}

TEST(SegmentHeaderTest, ShortAndZeroAndNewerVersion) {
  Slot slot;
  EncodeSegmentHeader(SampleSegmentHeader(), slot);
  EXPECT_TRUE(DecodeSegmentHeader(std::span<const uint8_t>(slot.data(), 59)).status()
                  .IsCorruption());
  Slot zero{};
  EXPECT_TRUE(DecodeSegmentHeader(zero).status().IsCorruption());
  SegmentHeader h = SampleSegmentHeader();
  h.version = 2;
  EncodeSegmentHeader(h, slot);
  EXPECT_TRUE(DecodeSegmentHeader(slot).status().IsNotSupported());
}

BatchHeader SampleBatch() {
  BatchHeader b;
  b.volume_id = 77;
  b.segment_id = 3;
  b.seq = 1000;
  b.synced_upto = {3, 8192};
  b.entries = {{EntryType::kWrite, true, 10, 2}, {EntryType::kTrim, false, 100, 50},
               {EntryType::kZero, true, 1ull << 35, 0xffffffffu},
               {EntryType::kWrite, false, 5, 1}};
  b.data_crcs = {0xdeadbeef, 1, 2};
  return b;
}

TEST(BatchHeaderTest, RoundTrip) {
  Slot slot;
  slot.fill(0xaa);
  BatchHeader b = SampleBatch();
  ASSERT_TRUE(EncodeBatchHeader(b, slot).ok());
  BatchHeader d;
  ASSERT_TRUE(DecodeBatchHeader(slot, &d).ok());
  EXPECT_EQ(d.volume_id, 77u);
  EXPECT_EQ(d.segment_id, 3u);
  EXPECT_EQ(d.seq, 1000u);
  EXPECT_EQ(d.synced_upto, (LogPosition{3, 8192}));
  ASSERT_EQ(d.entries.size(), 4u);
  for (size_t i = 0; i < 4; i++) {
    EXPECT_EQ(d.entries[i].type, b.entries[i].type);
    EXPECT_EQ(d.entries[i].lba, b.entries[i].lba);
    EXPECT_EQ(d.entries[i].count, b.entries[i].count);
    EXPECT_EQ(d.entries[i].continues, b.entries[i].continues);
  }
  EXPECT_EQ(d.data_crcs, b.data_crcs);
  size_t n = BatchHeaderBytes(4, 3);
  for (size_t i = n; i < kSlotSize; i++) ASSERT_EQ(slot[i], 0) << i;
}

TEST(BatchHeaderTest, LargestBatchesFit) {
  // Only data slots: one entry, as many CRCs as fit.
  size_t max_slots = (kSlotSize - kBatchFixedBytes - kBatchEntryBytes - kBatchCrcBytes) / 4;
  EXPECT_TRUE(BatchFits(1, max_slots));
  EXPECT_FALSE(BatchFits(1, max_slots + 1));
  BatchHeader b;
  b.volume_id = 1;
  b.segment_id = 1;
  b.seq = 1;
  b.entries = {{EntryType::kWrite, false, 0, uint32_t(max_slots)}};
  std::mt19937 rng(1);
  for (size_t i = 0; i < max_slots; i++) b.data_crcs.push_back(rng());
  Slot slot;
  ASSERT_TRUE(EncodeBatchHeader(b, slot).ok());
  BatchHeader d;
  ASSERT_TRUE(DecodeBatchHeader(slot, &d).ok());
  EXPECT_EQ(d.data_crcs, b.data_crcs);
  // Many single-block random writes.
  size_t e = 0;
  while (BatchFits(e + 1, e + 1)) e++;
  EXPECT_GE(e, 200u);
}

TEST(BatchHeaderTest, EveryCoveredByteFlipIsDetected) {
  Slot slot;
  BatchHeader b = SampleBatch();
  ASSERT_TRUE(EncodeBatchHeader(b, slot).ok());
  size_t n = BatchHeaderBytes(b.entries.size(), b.data_crcs.size());
  for (size_t i = 0; i < n; i++) {
    for (uint8_t bit : {0x01, 0x80}) {
      Slot bad = slot;
      bad[i] ^= bit;
      BatchHeader d;
      EXPECT_TRUE(DecodeBatchHeader(bad, &d).IsCorruption()) << "byte " << i;
    }
  }
}

TEST(BatchHeaderTest, EncoderRefusesWhatWouldNotDecode) {
  // Regression (issue 8, C1): the batch packer produced a header longer than
  // its slot and the encoder's zero-fill length wrapped around. It must
  // refuse such a header, and every other one the decoder would reject,
  // leaving the slot as it was.
  Slot slot;
  slot.fill(0x5a);
  const Slot before = slot;
  BatchHeader b = SampleBatch();
  b.data_crcs.push_back(5);  // 4 slots but WRITE entries cover 3
  EXPECT_TRUE(EncodeBatchHeader(b, slot).IsInvalidArgument());
  b = SampleBatch();
  b.entries[1].count = 0;
  EXPECT_TRUE(EncodeBatchHeader(b, slot).IsInvalidArgument());
  b = SampleBatch();
  b.entries[1].type = EntryType(9);
  EXPECT_TRUE(EncodeBatchHeader(b, slot).IsInvalidArgument());
  // One entry past what fits: 56 + 311 * 13 + 4 > 4096.
  b = SampleBatch();
  b.entries.clear();
  b.data_crcs.clear();
  for (uint64_t i = 0; i < 311; i++) b.entries.push_back({EntryType::kTrim, false, 2 * i, 1});
  ASSERT_FALSE(BatchFits(311, 0));
  EXPECT_TRUE(EncodeBatchHeader(b, slot).IsInvalidArgument());
  b.entries.pop_back();
  ASSERT_TRUE(BatchFits(310, 0));
  EXPECT_EQ(slot, before);
  EXPECT_TRUE(EncodeBatchHeader(b, slot).ok());
}

TEST(BatchHeaderTest, InconsistentButCrcValidIsRejected) {
  // A header whose CRC is right but whose fields disagree (a bug, or a
  // forged header) is still refused: forge one from a valid encoding.
  auto forge = [](const BatchHeader& b, const std::function<void(uint8_t*)>& edit) {
    Slot slot;
    EXPECT_TRUE(EncodeBatchHeader(b, slot).ok());
    edit(slot.data());
    const size_t n = BatchHeaderBytes(DecodeFixed16(slot.data() + 48), DecodeFixed16(slot.data() + 50));
    if (n <= kSlotSize) {
      EncodeFixed32(slot.data() + n - kBatchCrcBytes,
                    crc32c::Mask(crc32c::Value(slot.data(), n - kBatchCrcBytes)));
    }
    return slot;
  };
  BatchHeader d;
  // 3 data slots, but the first WRITE entry made to cover one more block.
  Slot s = forge(SampleBatch(), [](uint8_t* p) {
    EncodeFixed32(p + kBatchFixedBytes + 9, DecodeFixed32(p + kBatchFixedBytes + 9) + 1);
  });
  EXPECT_TRUE(DecodeBatchHeader(s, &d).IsCorruption());
  s = forge(SampleBatch(), [](uint8_t* p) {  // entry count 0
    EncodeFixed32(p + kBatchFixedBytes + kBatchEntryBytes + 9, 0);
  });
  EXPECT_TRUE(DecodeBatchHeader(s, &d).IsCorruption());
  BatchHeader v = SampleBatch();
  v.version = 9;
  ASSERT_TRUE(EncodeBatchHeader(v, s).ok());
  EXPECT_TRUE(DecodeBatchHeader(s, &d).IsNotSupported());
}

TEST(BatchHeaderTest, DataCrcDetectsFlips) {
  Slot data;
  for (size_t i = 0; i < kSlotSize; i++) data[i] = uint8_t(i * 7);
  uint32_t c = DataSlotCrc(data.data());
  EXPECT_EQ(c, crc32c::Value(data.data(), kSlotSize));
  data[4095] ^= 1;
  EXPECT_NE(DataSlotCrc(data.data()), c);
}

TEST(Hex16Test, RoundTrip) {
  EXPECT_EQ(Hex16(1), "0000000000000001");
  EXPECT_EQ(Hex16(0xabcdef0123456789ull), "abcdef0123456789");
  uint64_t v = 0;
  EXPECT_TRUE(ParseHex16("abcdef0123456789", &v));
  EXPECT_EQ(v, 0xabcdef0123456789ull);
  EXPECT_FALSE(ParseHex16("abc", &v));
  EXPECT_FALSE(ParseHex16("000000000000000g", &v));
}

SegmentSummary SampleSummary(uint64_t slots) {
  SegmentSummary s;
  s.volume_id = 0x1122334455667788ull;
  s.segment_id = 42;
  s.segment_bytes = slots * kSlotSize;
  std::mt19937 rng(3);
  for (uint64_t i = 0; i < slots; i++) {
    bool v = i > 0 && rng() % 3 != 0;
    s.valid.push_back(v);
    s.crcs.push_back(v ? uint32_t(rng()) : 0);
  }
  return s;
}

TEST(SegmentSummaryTest, RoundTrip) {
  for (uint64_t slots : {0, 1, 7, 8, 9, 16384}) {
    SegmentSummary s = SampleSummary(slots);
    std::string enc = EncodeSegmentSummary(s);
    auto d = DecodeSegmentSummary(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(enc.data()), enc.size()));
    ASSERT_TRUE(d.ok()) << slots << ": " << d.status().ToString();
    EXPECT_EQ(d->volume_id, s.volume_id);
    EXPECT_EQ(d->segment_id, s.segment_id);
    EXPECT_EQ(d->segment_bytes, s.segment_bytes);
    EXPECT_EQ(d->valid, s.valid);
    EXPECT_EQ(d->crcs, s.crcs);
  }
}

TEST(SegmentSummaryTest, EveryByteFlipAndEveryTruncationIsDetected) {
  std::string enc = EncodeSegmentSummary(SampleSummary(20));
  for (size_t i = 0; i < enc.size(); i++) {
    std::string bad = enc;
    bad[i] = char(bad[i] ^ 0x08);
    auto d = DecodeSegmentSummary(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bad.data()), bad.size()));
    EXPECT_TRUE(d.status().IsCorruption()) << "byte " << i;
  }
  for (size_t n = 0; n < enc.size(); n++) {
    auto d = DecodeSegmentSummary(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(enc.data()), n));
    EXPECT_TRUE(d.status().IsCorruption()) << "length " << n;
  }
}

}  // namespace
}  // namespace hbiss::volume
