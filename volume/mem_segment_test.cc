#include "volume/mem_segment.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <vector>

#include "volume/memory_budget.h"

namespace hbiss::volume {
namespace {

constexpr uint64_t kChunk = MemoryBudget::kChunkBytes;
constexpr uint32_t kCS = MemSegment::kChunkSlots;  // slots per chunk
constexpr uint32_t kSlots = 3 * kCS;

SegmentHeader Header(uint64_t id) {
  SegmentHeader h;
  h.volume_id = 0x77;
  h.segment_id = id;
  h.prev_segment_id = id - 1;
  h.prev_segment_end = 5 * kSlotSize;
  h.first_seq = 40;
  return h;
}

// A byte pattern that differs per position of a buffer and per `tag`.
std::vector<uint8_t> Pattern(size_t n, uint8_t tag) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; i++) v[i] = uint8_t(i * 7 + i / kSlotSize + tag);
  return v;
}

class MemSegmentTest : public ::testing::Test {
 protected:
  MemoryBudget budget_{64 * kChunk};
};

// New: the header is in slot 0, the tables have a place for every slot,
// nothing is allocated or charged yet, and the chunk list never has to
// reallocate (the log writer reads chunks without the write path's lock).
TEST_F(MemSegmentTest, NewHoldsTheHeaderAndChargesNothing) {
  auto s = MemSegment::New(&budget_, kSlots, Header(9));
  EXPECT_EQ(s->id, 9u);
  EXPECT_EQ(s->slots, kSlots);
  EXPECT_EQ(s->used, 1u);
  EXPECT_EQ(s->charged, 0u);
  EXPECT_EQ(budget_.used(), 0u);
  EXPECT_TRUE(s->chunks.empty());
  EXPECT_GE(s->chunks.capacity(), size_t(3));
  EXPECT_EQ(s->crcs.size(), size_t(kSlots));
  EXPECT_EQ(s->valid.size(), size_t(kSlots));
  auto h = DecodeSegmentHeader(std::span<const uint8_t>(s->Slot(0), kSlotSize));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->segment_id, 9u);
  EXPECT_EQ(h->prev_segment_id, 8u);
  EXPECT_EQ(h->prev_segment_end, 5 * kSlotSize);
  EXPECT_EQ(h->first_seq, 40u);
  EXPECT_EQ(s->Slot(0), s->header);  // slot 0 has a buffer of its own
}

// Grow without a reservation forces each chunk onto the budget, exactly the
// chunks that slots [0, upto) need: chunk 0 holds slots 0..kCS-1.
TEST_F(MemSegmentTest, GrowWithoutReserveForcesWholeChunks) {
  auto s = MemSegment::New(&budget_, kSlots, Header(1));
  uint64_t reserved = 0;
  ASSERT_TRUE(s->Grow(2, &reserved).ok());
  EXPECT_EQ(s->chunks.size(), 1u);
  ASSERT_TRUE(s->Grow(kCS, &reserved).ok());  // slot kCS-1 is the last of chunk 0
  EXPECT_EQ(s->chunks.size(), 1u);
  EXPECT_EQ(budget_.used(), kChunk);
  ASSERT_TRUE(s->Grow(kCS + 1, &reserved).ok());  // slot kCS starts chunk 1
  EXPECT_EQ(s->chunks.size(), 2u);
  EXPECT_EQ(s->charged, 2 * kChunk);
  EXPECT_EQ(budget_.used(), 2 * kChunk);
  ASSERT_TRUE(s->Grow(3, &reserved).ok());  // never shrinks or charges again
  EXPECT_EQ(s->chunks.size(), 2u);
  EXPECT_EQ(budget_.used(), 2 * kChunk);
  EXPECT_EQ(reserved, 0u);
}

// With a reservation (taken from the budget by the writer before), Grow
// takes each chunk's charge from it while a whole chunk is left and forces
// only the rest: the budget is never charged twice for one chunk.
TEST_F(MemSegmentTest, GrowTakesItsChargeFromTheReservationFirst) {
  auto s = MemSegment::New(&budget_, kSlots, Header(1));
  ASSERT_TRUE(budget_.Acquire(kChunk + kChunk / 2, std::chrono::milliseconds(0)));
  uint64_t reserved = kChunk + kChunk / 2;
  ASSERT_TRUE(s->Grow(kCS, &reserved).ok());  // from the reservation
  EXPECT_EQ(reserved, kChunk / 2);
  EXPECT_EQ(budget_.used(), kChunk + kChunk / 2);
  ASSERT_TRUE(s->Grow(kCS + 1, &reserved).ok());  // half a chunk left: forced
  EXPECT_EQ(reserved, kChunk / 2);
  EXPECT_EQ(budget_.used(), 2 * kChunk + kChunk / 2);
  EXPECT_EQ(s->charged, 2 * kChunk);

  // Exactly one chunk reserved covers one chunk.
  auto t = MemSegment::New(&budget_, kSlots, Header(2));
  ASSERT_TRUE(budget_.Acquire(kChunk, std::chrono::milliseconds(0)));
  uint64_t one = kChunk;
  ASSERT_TRUE(t->Grow(2, &one).ok());
  EXPECT_EQ(one, 0u);
  EXPECT_EQ(budget_.used(), 3 * kChunk + kChunk / 2);
}

// Slot and RunFrom across the chunk boundary: slots of one chunk are
// contiguous, the next chunk's are elsewhere, and RunFrom says where a
// contiguous run ends.
TEST_F(MemSegmentTest, SlotAndRunFromAcrossTheChunkBoundary) {
  auto s = MemSegment::New(&budget_, kSlots, Header(1));
  uint64_t reserved = 0;
  ASSERT_TRUE(s->Grow(kSlots, &reserved).ok());
  EXPECT_EQ(s->RunFrom(0), 1u);  // the header stands alone
  EXPECT_EQ(s->RunFrom(1), kCS - 1);
  EXPECT_EQ(s->RunFrom(kCS - 1), 1u);
  EXPECT_EQ(s->RunFrom(kCS), kCS);
  EXPECT_EQ(s->RunFrom(kCS + 5), kCS - 5);
  EXPECT_EQ(s->Slot(1), s->chunks[0].get() + kSlotSize);
  EXPECT_EQ(s->Slot(kCS - 1), s->Slot(1) + size_t(kCS - 2) * kSlotSize);
  EXPECT_EQ(s->Slot(kCS), s->chunks[1].get());
  EXPECT_EQ(s->Slot(2 * kCS + 3), s->chunks[2].get() + 3 * kSlotSize);
}

// CopyIn / CopyOut of runs that cross the chunk boundary, and CopyOut from
// an odd byte offset for an odd length: the bytes come back as they went in.
TEST_F(MemSegmentTest, CopyInAndOutAcrossTheBoundaryAtOddOffsets) {
  auto s = MemSegment::New(&budget_, kSlots, Header(1));
  uint64_t reserved = 0;
  ASSERT_TRUE(s->Grow(kSlots, &reserved).ok());
  const uint32_t first = kCS - 6;  // 6 slots in chunk 0, 6 in chunk 1
  const std::vector<uint8_t> in = Pattern(12 * kSlotSize, 3);
  s->CopyIn(first, in.data(), 12);
  // Each slot landed where Slot() says.
  for (uint32_t i = 0; i < 12; i++) {
    ASSERT_EQ(std::memcmp(s->Slot(first + i), in.data() + size_t(i) * kSlotSize, kSlotSize), 0)
        << "slot " << first + i;
  }
  // Whole, from the start.
  std::vector<uint8_t> out(in.size());
  s->CopyOut(first, 0, out.data(), out.size());
  EXPECT_EQ(out, in);
  // Odd offsets and lengths: within a slot, up to the boundary, across it.
  struct Case {
    uint64_t off;
    uint64_t len;
  };
  for (const Case c : {Case{1, 7}, Case{3 * kSlotSize + 123, 5 * kSlotSize + 7},
                       Case{6 * kSlotSize - 1, 2}, Case{kSlotSize - 1, 10 * kSlotSize + 1},
                       Case{6 * kSlotSize + 4095, 1}}) {
    std::vector<uint8_t> part(c.len, 0xee);
    s->CopyOut(first, c.off, part.data(), c.len);
    EXPECT_EQ(part, std::vector<uint8_t>(in.begin() + c.off, in.begin() + c.off + c.len))
        << "offset " << c.off << " length " << c.len;
  }
}

// FreeBuffers gives the whole charge back at once, and the destructor gives
// back nothing more (the budget is shared: a second release would take
// someone else's charge).
TEST_F(MemSegmentTest, FreeBuffersReturnsTheChargeOnce) {
  budget_.Force(kChunk);  // another volume's buffers
  {
    auto s = MemSegment::New(&budget_, kSlots, Header(1));
    uint64_t reserved = 0;
    ASSERT_TRUE(s->Grow(2 * kCS + 1, &reserved).ok());
    EXPECT_EQ(budget_.used(), 4 * kChunk);
    s->FreeBuffers();
    EXPECT_EQ(s->charged, 0u);
    EXPECT_TRUE(s->chunks.empty());
    EXPECT_EQ(budget_.used(), kChunk);
  }
  EXPECT_EQ(budget_.used(), kChunk);
  // Without FreeBuffers, the destructor gives the charge back.
  {
    auto s = MemSegment::New(&budget_, kSlots, Header(2));
    uint64_t reserved = 0;
    ASSERT_TRUE(s->Grow(kCS + 1, &reserved).ok());
    EXPECT_EQ(budget_.used(), 3 * kChunk);
  }
  EXPECT_EQ(budget_.used(), kChunk);
}

}  // namespace
}  // namespace hbiss::volume
