#include "volume/log_reader.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "store/memory_store.h"
#include "volume/test_segment.h"

namespace hbiss::volume {
namespace {

constexpr uint64_t kVolId = 0x1234;
constexpr uint32_t kSlots = 64;
const std::string kObj = "seg";

using W = TestSegment;

class LogReaderTest : public ::testing::Test {
 protected:
  std::unique_ptr<store::SegmentReader> Put(const TestSegment& seg) {
    EXPECT_TRUE(store_.Put(kObj, seg.span()).ok());
    auto r = store_.Open(kObj);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(*r) : nullptr;
  }

  struct Seen {
    uint64_t off;
    uint64_t seq;
  };
  Result<ScanEnd> Scan(const TestSegment& seg, uint64_t seg_id, std::vector<Seen>* seen) {
    auto r = Put(seg);
    return ScanBatchHeaders(r.get(), kVolId, seg_id, kSlots, "test segment",
                            [&](uint64_t off, const BatchHeader& h) {
                              seen->push_back(Seen{off, h.seq});
                            });
  }

  // Replays `seg` as the last segment (no limit) onto map_.
  Status Replay(const TestSegment& seg, uint64_t* end, LogReplayer* rp = nullptr) {
    auto r = Put(seg);
    LogReplayer local(kVolId, kSlots, "t", &map_);
    if (rp == nullptr) rp = &local;
    uint64_t seq = 1;
    return rp->ReplaySegment(r.get(), 1, kSlotSize, nullptr, &seq, end);
  }

  bool Mapped(uint64_t lba) {
    std::vector<MapRun> runs;
    EXPECT_TRUE(map_.Lookup(lba, 1, &runs).ok());
    return !runs.empty() && runs[0].mapped;
  }

  store::MemoryStore store_;
  ExtentMap map_{1024};
};

TEST_F(LogReaderTest, ScanReportsEveryBatchAndTheObjectsEnd) {
  TestSegment seg(kVolId, 1, 1);
  const uint64_t a = seg.AddBatch({W::Write(0, 3)});
  const uint64_t b = seg.AddBatch({W::Trim(5, 2)});
  const uint64_t c = seg.AddBatch({W::Write(10, 1), W::Write(20, 2)});
  std::vector<Seen> seen;
  auto end = Scan(seg, 1, &seen);
  ASSERT_TRUE(end.ok()) << end.status().ToString();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].off, a);
  EXPECT_EQ(seen[1].off, b);
  EXPECT_EQ(seen[2].off, c);
  EXPECT_EQ(seen[2].seq, 3u);
  EXPECT_TRUE(end->at_end);
  EXPECT_EQ(end->offset, seg.bytes().size());
}

// The scan stops at the first slot that is not a valid header of this
// segment and says so (at_end false): the blocks after it are not shown.
TEST_F(LogReaderTest, ScanStopsAtADamagedHeader) {
  TestSegment seg(kVolId, 1, 1);
  seg.AddBatch({W::Write(0, 3)});
  const uint64_t b = seg.AddBatch({W::Write(3, 2)});
  seg.AddBatch({W::Write(5, 2)});
  for (uint64_t byte : {0ull, 24ull, 60ull}) {  // magic, seq, an entry: the CRC catches each
    TestSegment bad = seg;
    bad.bytes()[b + byte] ^= 0x10;
    std::vector<Seen> seen;
    auto end = Scan(bad, 1, &seen);
    ASSERT_TRUE(end.ok()) << end.status().ToString();
    EXPECT_EQ(seen.size(), 1u) << byte;
    EXPECT_FALSE(end->at_end) << byte;
    EXPECT_EQ(end->offset, b) << byte;
  }
  // Valid headers of another segment or volume are not this segment's.
  std::vector<Seen> seen;
  auto end = Scan(seg, 2, &seen);
  ASSERT_TRUE(end.ok());
  EXPECT_TRUE(seen.empty());
  EXPECT_FALSE(end->at_end);
  EXPECT_EQ(end->offset, kSlotSize);
  // A batch that would run past the segment size ends the scan too.
  TestSegment big(kVolId, 1, 1);
  big.AddBatch({W::Write(0, 40)});
  big.AddBatch({W::Write(40, 40)});
  seen.clear();
  auto r = Put(big);
  end = ScanBatchHeaders(r.get(), kVolId, 1, kSlots, "t",
                         [&](uint64_t off, const BatchHeader& h) { seen.push_back({off, h.seq}); });
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_FALSE(end->at_end);
}

// In the last segment the first bad batch is the log's torn end: the
// batches before it apply, it and everything after it do not.
TEST_F(LogReaderTest, TornTailIsTheEndOfTheLastSegment) {
  TestSegment seg(kVolId, 1, 1);
  seg.AddBatch({W::Write(0, 2)});
  const uint64_t b = seg.AddBatch({W::Write(2, 2)});
  const uint64_t c = seg.AddBatch({W::Write(4, 2)});
  seg.bytes()[c + kSlotSize + 7] ^= 1;  // batch 3's data never fully arrived
  uint64_t end = 0;
  LogReplayer rp(kVolId, kSlots, "t", &map_);
  ASSERT_TRUE(Replay(seg, &end, &rp).ok());
  EXPECT_EQ(end, c);
  EXPECT_TRUE(Mapped(0) && Mapped(3));
  EXPECT_FALSE(Mapped(4));
  ASSERT_EQ(rp.tail_batches().size(), 2u);
  EXPECT_EQ(rp.tail_batches()[1].off, b);

  // A later batch that says only the log before the bad one was synced does
  // not change that.
  TestSegment s2(kVolId, 1, 1);
  s2.AddBatch({W::Write(0, 2)});
  const uint64_t b2 = s2.AddBatch({W::Write(2, 2)});
  s2.AddBatch({W::Write(4, 2)}, 1, LogPosition{1, b2});
  s2.bytes()[b2 + 30] ^= 1;
  map_.Reset();
  ASSERT_TRUE(Replay(s2, &end).ok());
  EXPECT_EQ(end, b2);
  EXPECT_FALSE(Mapped(4));
}

// A bad batch followed by one whose synced_upto lies beyond it had been
// synced: that is damage, not a torn tail, and replay says Corruption.
TEST_F(LogReaderTest, BadBatchBeforeALaterBatchProvingSyncIsCorruption) {
  TestSegment seg(kVolId, 1, 1);
  seg.AddBatch({W::Write(0, 2)});
  const uint64_t b = seg.AddBatch({W::Write(2, 2)});
  const uint64_t c = seg.AddBatch({W::Write(4, 2)});
  seg.AddBatch({W::Write(6, 2)}, 1, LogPosition{1, c});
  seg.bytes()[b + 30] ^= 1;
  uint64_t end = 0;
  Status s = Replay(seg, &end);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

// A segment followed by another must be whole up to the end the next one
// names: a bad batch before that limit is corruption.
TEST_F(LogReaderTest, BadBatchBeforeTheLimitIsCorruption) {
  TestSegment seg(kVolId, 1, 1);
  seg.AddBatch({W::Write(0, 2)});
  const uint64_t b = seg.AddBatch({W::Write(2, 2)});
  const uint64_t limit = seg.bytes().size();
  auto r = Put(seg);
  LogReplayer rp(kVolId, kSlots, "t", &map_);
  uint64_t seq = 1, end = 0;
  ASSERT_TRUE(rp.ReplaySegment(r.get(), 1, kSlotSize, &limit, &seq, &end).ok());
  EXPECT_EQ(end, limit);
  EXPECT_EQ(seq, 3u);
  seg.bytes()[b + 2] ^= 1;
  r = Put(seg);
  LogReplayer rp2(kVolId, kSlots, "t", &map_);
  seq = 1;
  EXPECT_TRUE(rp2.ReplaySegment(r.get(), 1, kSlotSize, &limit, &seq, &end).IsCorruption());
}

// An operation takes effect only when its last entry (continues clear) is
// read: cut off by the torn tail, none of it applies.
TEST_F(LogReaderTest, OperationSpanningBatchesAppliesOnlyWhenItsLastEntryIsRead) {
  TestSegment seg(kVolId, 1, 1);
  seg.AddBatch({W::Write(0, 1)});
  seg.AddBatch({W::Write(10, 2, /*continues=*/true)});
  seg.AddBatch({W::Write(12, 2, /*continues=*/true)});
  const uint64_t last = seg.AddBatch({W::Write(14, 1)});
  uint64_t end = 0;
  {
    TestSegment cut = seg;
    cut.bytes()[last + 2] ^= 1;
    LogReplayer rp(kVolId, kSlots, "t", &map_);
    ASSERT_TRUE(Replay(cut, &end, &rp).ok());
    EXPECT_EQ(end, last);
    EXPECT_TRUE(Mapped(0));
    for (uint64_t lba = 10; lba < 15; lba++) EXPECT_FALSE(Mapped(lba)) << lba;
    EXPECT_TRUE(rp.has_pending());
    rp.DiscardPending();
    EXPECT_FALSE(rp.has_pending());
  }
  map_.Reset();
  LogReplayer rp(kVolId, kSlots, "t", &map_);
  ASSERT_TRUE(Replay(seg, &end, &rp).ok());
  EXPECT_EQ(end, seg.bytes().size());
  for (uint64_t lba = 10; lba < 15; lba++) EXPECT_TRUE(Mapped(lba)) << lba;
  EXPECT_FALSE(rp.has_pending());
  std::vector<MapRun> runs;
  ASSERT_TRUE(map_.Lookup(12, 1, &runs).ok());
  EXPECT_EQ(runs[0].seg, 1u);
  // Batch 3's first data slot.
  EXPECT_EQ(runs[0].slot, uint32_t(seg.bytes().size() / kSlotSize) - 4);
}

}  // namespace
}  // namespace hbiss::volume
