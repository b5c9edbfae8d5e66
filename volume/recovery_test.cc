#include "volume/recovery.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "store/memory_store.h"
#include "volume/layout.h"
#include "volume/test_segment.h"
#include "volume/volume.h"

namespace hbiss::volume {
namespace {

constexpr uint64_t kVolId = 0x5eed;
constexpr uint64_t kBlocks = 1024;
const std::string kName = "v";
const layout::LogDir kDir = layout::EpochDir(kName, 1);

using W = TestSegment;

class RecoveryTest : public ::testing::Test {
 protected:
  RecoveryTest() {
    meta_.id = kVolId;
    meta_.size = kBlocks * kBlockSize;
    meta_.segment_size = 64 * kSlotSize;
  }

  // A segment whose header names the segment before it.
  static TestSegment Seg(uint64_t id, uint64_t first_seq, uint64_t prev_id, uint64_t prev_end) {
    TestSegment s(kVolId, id, first_seq);
    SegmentHeader h;
    h.volume_id = kVolId;
    h.segment_id = id;
    h.first_seq = first_seq;
    h.prev_segment_id = prev_id;
    h.prev_segment_end = prev_end;
    EncodeSegmentHeader(h, std::span<uint8_t, kSlotSize>(
                               reinterpret_cast<uint8_t*>(s.bytes().data()), kSlotSize));
    return s;
  }
  void Put(uint64_t id, const TestSegment& s) {
    ASSERT_TRUE(store_.Put(layout::SegName(kDir, id), s.span()).ok());
  }
  Status Recover(bool read_only) { return RecoverLog(&store_, kDir, meta_, read_only, &map_, &out_); }
  MapRun At(uint64_t lba) {
    std::vector<MapRun> runs;
    EXPECT_TRUE(map_.Lookup(lba, 1, &runs).ok());
    return runs.empty() ? MapRun{} : runs[0];
  }

  // Three segments 1 <- 2 <- 3, seqs 1..4, every batch's synced_upto at
  // the start of its own segment.
  void PutThreeSegments() {
    TestSegment s1 = Seg(1, 1, 0, 0);
    s1.AddBatch({W::Write(0, 2)});   // slots 2, 3
    s1.AddBatch({W::Write(10, 1)});  // slot 5
    end1_ = s1.bytes().size();
    TestSegment s2 = Seg(2, s1.next_seq(), 1, end1_);
    s2.AddBatch({W::Trim(10, 1)});
    end2_ = s2.bytes().size();
    TestSegment s3 = Seg(3, s2.next_seq(), 2, end2_);
    off3_ = s3.AddBatch({W::Write(1, 1)});  // slot 2
    end3_ = s3.bytes().size();
    Put(1, s1);
    Put(2, s2);
    Put(3, s3);
  }

  store::MemoryStore store_;
  VolumeMeta meta_;
  ExtentMap map_{kBlocks};
  RecoveredLog out_;
  uint64_t end1_ = 0, end2_ = 0, off3_ = 0, end3_ = 0;
};

TEST_F(RecoveryTest, EmptyVolumeStartsSegmentOne) {
  ASSERT_TRUE(Recover(false).ok());
  EXPECT_FALSE(out_.found_checkpoint);
  EXPECT_TRUE(out_.segment_ids.empty());
  EXPECT_EQ(out_.new_segment_id, 1u);
  EXPECT_EQ(out_.prev, (LogPosition{0, 0}));
  EXPECT_EQ(out_.next_seq, 1u);
  EXPECT_TRUE(out_.relog.empty());
}

TEST_F(RecoveryTest, NoCheckpointReplaysEverySegment) {
  PutThreeSegments();
  Status s = Recover(true);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_FALSE(out_.found_checkpoint);
  EXPECT_EQ(out_.segment_ids, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_TRUE(out_.orphans.empty());
  EXPECT_EQ(out_.segment_files, 3u);
  EXPECT_EQ(out_.max_segment_id, 3u);
  EXPECT_EQ(out_.log_bytes, end1_ + end2_ + end3_);
  MapRun r0 = At(0);
  EXPECT_TRUE(r0.mapped);
  EXPECT_EQ(r0.seg, 1u);
  EXPECT_EQ(r0.slot, 2u);
  MapRun r1 = At(1);
  EXPECT_TRUE(r1.mapped);
  EXPECT_EQ(r1.seg, 3u);  // written again in segment 3
  EXPECT_EQ(r1.slot, 2u);
  EXPECT_FALSE(At(10).mapped);  // trimmed in segment 2
  // Read-only: no new segment and nothing to log again.
  EXPECT_EQ(out_.new_segment_id, 0u);
  EXPECT_TRUE(out_.relog.empty());
}

TEST_F(RecoveryTest, AMissingMiddleSegmentIsCorruption) {
  TestSegment s1 = Seg(1, 1, 0, 0);
  s1.AddBatch({W::Write(0, 1)});
  TestSegment s2 = Seg(2, s1.next_seq(), 1, s1.bytes().size());
  s2.AddBatch({W::Write(1, 1)});
  TestSegment s3 = Seg(3, s2.next_seq(), 2, s2.bytes().size());
  s3.AddBatch({W::Write(2, 1)});
  Put(1, s1);
  Put(3, s3);  // 2 is missing
  Status s = Recover(false);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

TEST_F(RecoveryTest, ADamagedMiddleSegmentHeaderIsCorruption) {
  TestSegment s1 = Seg(1, 1, 0, 0);
  s1.AddBatch({W::Write(0, 1)});
  TestSegment s2 = Seg(2, s1.next_seq(), 1, s1.bytes().size());
  s2.AddBatch({W::Write(1, 1)});
  TestSegment s3 = Seg(3, s2.next_seq(), 2, s2.bytes().size());
  s3.AddBatch({W::Write(2, 1)});
  s2.bytes()[20] ^= 0x40;  // inside the header's CRC-covered bytes
  Put(1, s1);
  Put(2, s2);
  Put(3, s3);
  Status s = Recover(true);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

// The last segment's batches after its last synced_upto are logged again,
// and the new segment follows that proven position.
TEST_F(RecoveryTest, AnUnprovenTailIsLoggedAgainFromTheLastProvenPosition) {
  TestSegment s1 = Seg(1, 1, 0, 0);
  s1.AddBatch({W::Write(0, 1)});
  const uint64_t end1 = s1.bytes().size();
  TestSegment s2 = Seg(2, s1.next_seq(), 1, end1);
  const uint64_t a = s2.AddBatch({W::Write(1, 1)});  // proven by b's synced_upto
  const uint64_t b_off = s2.bytes().size();
  const uint64_t b = s2.AddBatch({W::Write(2, 1)}, 1, LogPosition{2, b_off});
  const uint64_t c = s2.AddBatch({W::Write(3, 2)}, 1, LogPosition{2, b_off});
  ASSERT_EQ(b, b_off);
  Put(1, s1);
  Put(2, s2);
  Status s = Recover(false);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(out_.segment_ids, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(out_.new_segment_id, 3u);
  EXPECT_EQ(out_.prev, (LogPosition{2, b}));
  EXPECT_EQ(out_.relog_segment, 2u);
  ASSERT_EQ(out_.relog.size(), 2u);
  EXPECT_EQ(out_.relog[0].off, b);
  EXPECT_EQ(out_.relog[1].off, c);
  EXPECT_EQ(out_.relog[0].seq, 3u);  // seqs: s1 1, a 2, b 3, c 4
  EXPECT_EQ(out_.next_seq, 3u);
  EXPECT_FALSE(out_.relog_pending);
  EXPECT_EQ(out_.new_segment_flags, 0u);
  EXPECT_TRUE(out_.orphans.empty());
  (void)a;
  // The map has everything replayed (the relogged batches are written
  // again through the volume later).
  EXPECT_TRUE(At(2).mapped);
  EXPECT_TRUE(At(3).mapped);
}

// Nothing in the last segment is proven (its synced_upto all point into
// the segment before): the new segment takes its place.
TEST_F(RecoveryTest, ANothingProvenLastSegmentIsSkipped) {
  TestSegment s1 = Seg(1, 1, 0, 0);
  s1.AddBatch({W::Write(0, 1)});
  const uint64_t end1 = s1.bytes().size();
  TestSegment s2 = Seg(2, s1.next_seq(), 1, end1);
  const uint64_t a = s2.AddBatch({W::Write(1, 1)}, 1, LogPosition{1, end1});
  s2.AddBatch({W::Write(2, 1)}, 1, LogPosition{1, end1});
  Put(1, s1);
  Put(2, s2);
  Status s = Recover(false);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(out_.prev, (LogPosition{1, end1}));
  EXPECT_EQ(out_.segment_ids, (std::vector<uint64_t>{1}));
  EXPECT_EQ(out_.orphans, (std::set<uint64_t>{2}));
  EXPECT_EQ(out_.new_segment_id, 3u);
  EXPECT_EQ(out_.next_seq, 2u);
  EXPECT_EQ(out_.relog_segment, 2u);
  ASSERT_EQ(out_.relog.size(), 2u);
  EXPECT_EQ(out_.relog[0].off, a);
}

TEST_F(RecoveryTest, ReadOnlyWithAnUnprovenTailNeitherRelogsNorStartsASegment) {
  TestSegment s1 = Seg(1, 1, 0, 0);
  s1.AddBatch({W::Write(0, 1)});
  const uint64_t end1 = s1.bytes().size();
  TestSegment s2 = Seg(2, s1.next_seq(), 1, end1);
  s2.AddBatch({W::Write(1, 1)}, 1, LogPosition{1, end1});
  Put(1, s1);
  Put(2, s2);
  Status s = Recover(true);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(out_.new_segment_id, 0u);
  EXPECT_TRUE(out_.relog.empty());
  EXPECT_EQ(out_.relog_segment, 0u);
  EXPECT_EQ(out_.segment_ids, (std::vector<uint64_t>{1, 2}));
  EXPECT_TRUE(At(1).mapped);  // served as the log says
}

// A CRC-valid batch whose synced_upto points inside a batch (inside the
// data of the last one here) is not a batch boundary. Recovery must not
// index past its tail batches: it either reports the log as damaged or
// logs again from a batch at or before that position.
//
// BUG (disabled until fixed): RecoverLog picks relog_from as the first
// tail batch at or after tail_proven(); when that lies inside the last
// batch there is none, relog_from == tail.size(), and
// `tail[relog_from]` ("exists: proven < last_end") reads past the vector:
// prev.offset and next_seq come out as garbage (seen: prev (2,
// 4123389851770370361), next_seq 33) and the unproven batch is not relogged.
TEST_F(RecoveryTest, SyncedUptoInsideTheLastBatchDoesNotRunPastTheTail) {
  TestSegment s1 = Seg(1, 1, 0, 0);
  s1.AddBatch({W::Write(0, 1)});
  TestSegment s2 = Seg(2, s1.next_seq(), 1, s1.bytes().size());
  const uint64_t a = s2.AddBatch({W::Write(1, 1)});
  const uint64_t b_off = s2.bytes().size();
  // b's data is 3 slots; its synced_upto names its second data slot.
  const uint64_t b = s2.AddBatch({W::Write(2, 3)}, 1, LogPosition{2, b_off + 2 * kSlotSize});
  ASSERT_EQ(b, b_off);
  Put(1, s1);
  Put(2, s2);
  Status s = Recover(false);
  if (s.ok()) {
    ASSERT_FALSE(out_.relog.empty()) << "prev (" << out_.prev.segment_id << ", " << out_.prev.offset
                                     << ") next_seq " << out_.next_seq;
    EXPECT_LE(out_.prev.offset, b_off + 2 * kSlotSize);
    EXPECT_EQ(out_.relog.back().off, b);
    EXPECT_GE(out_.relog.front().off, a);
  } else {
    EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  }
}

}  // namespace
}  // namespace hbiss::volume
