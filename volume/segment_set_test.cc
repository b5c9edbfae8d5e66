#include "volume/segment_set.h"

#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "volume/checkpoint_set.h"
#include "volume/extent_map.h"

namespace hbiss::volume {
namespace {

// 64 slots: 63 data slots, so a live fraction of 0.5 is 31.5 blocks.
constexpr uint32_t kSlots = 64;

MapRun MappedRun(uint64_t lba, uint64_t count, uint32_t seg, uint32_t slot = 1) {
  return MapRun{lba, count, true, seg, slot};
}

auto Closed() {
  return [](uint64_t) { return true; };
}
auto NoneInMemory() {
  return [](uint64_t) { return false; };
}

// A checkpoint set with one known checkpoint: replay starts in `pos_seg`,
// and it lists `listed`.
void OneCheckpoint(CheckpointSet* c, uint64_t pos_seg, std::vector<uint64_t> listed = {}) {
  CheckpointInfo ci;
  ci.seq = 1;
  ci.position = LogPosition{pos_seg, 4096};
  ci.segment_ids = std::move(listed);
  c->Added(ci);
}

// Pins: the old ForgetBlocksLocked erased a segment's count when a change
// forgot more blocks than it held, so a segment the map still pointed into
// looked dead and the cleaner deleted it (its blocks then read as lost).
// Now the count is left alone, the set says needs_recount, nothing is
// deletable until Recount, and Recount takes the counts from the map.
TEST(SegmentSetTest, ForgetOfMoreThanTheCountNeverMakesASegmentDeletable) {
  SegmentSet s(kSlots);
  for (uint64_t id = 1; id <= 4; id++) s.Add(id);
  CheckpointSet ck;
  OneCheckpoint(&ck, 4);
  s.AddLive(1, 10);
  s.AddLive(2, 3);
  s.Forget({MappedRun(0, 20, 1)}, Closed());
  EXPECT_TRUE(s.needs_recount());
  EXPECT_EQ(s.live(1), 10u);
  EXPECT_FALSE(s.has_dead());
  EXPECT_FALSE(s.Deletable(1, 4, NoneInMemory(), ck));
  // A forget of a segment with no count at all drifts too.
  s.Forget({MappedRun(0, 1, 3)}, Closed());
  EXPECT_FALSE(s.has_dead());
  // Drifted: not even a segment with no live block is deleted.
  EXPECT_FALSE(s.Deletable(3, 4, NoneInMemory(), ck));
  EXPECT_TRUE(s.DeletableSegments(4, NoneInMemory(), ck).empty());

  ExtentMap map(1000);
  ASSERT_TRUE(map.Set(0, 5, 1, 1).ok());
  ASSERT_TRUE(map.Set(100, 2, 1, 20).ok());
  ASSERT_TRUE(map.Set(200, 3, 2, 1).ok());
  s.Recount(map);
  EXPECT_FALSE(s.needs_recount());
  EXPECT_EQ(s.live(1), 7u);
  EXPECT_EQ(s.live(2), 3u);
  EXPECT_EQ(s.live(3), 0u);
  EXPECT_FALSE(s.Deletable(1, 4, NoneInMemory(), ck));
  EXPECT_FALSE(s.Deletable(2, 4, NoneInMemory(), ck));
  EXPECT_TRUE(s.Deletable(3, 4, NoneInMemory(), ck));
  EXPECT_EQ(s.DeletableSegments(4, NoneInMemory(), ck), std::vector<uint64_t>{3});
}

TEST(SegmentSetTest, ForgetCountsDownAndQueuesClosedSegmentsThatDie) {
  SegmentSet s(kSlots);
  s.Add(1);
  s.Add(2);
  s.AddLive(1, 6);
  s.AddLive(2, 4);
  // Unmapped runs count nothing.
  s.Forget({MappedRun(0, 2, 1), MapRun{10, 5, false, 0, 0}}, Closed());
  EXPECT_EQ(s.live(1), 4u);
  EXPECT_FALSE(s.has_dead());
  s.Forget({MappedRun(0, 4, 1)}, Closed());
  EXPECT_EQ(s.live(1), 0u);
  EXPECT_EQ(s.TakeDead(), std::vector<uint64_t>{1});
  EXPECT_TRUE(s.TakeDead().empty());
  // Still in memory: noted when it is closed instead.
  s.Forget({MappedRun(0, 4, 2)}, [](uint64_t) { return false; });
  EXPECT_EQ(s.live(2), 0u);
  EXPECT_FALSE(s.has_dead());
  EXPECT_FALSE(s.needs_recount());
}

TEST(SegmentSetTest, PickVictimTakesTheFewestLiveUnderTheThreshold) {
  SegmentSet s(kSlots);
  for (uint64_t id = 1; id <= 7; id++) s.Add(id);
  s.AddLive(1, 40);  // 40/63 above 0.5
  s.AddLive(2, 10);
  s.AddLive(3, 5);   // unclean
  s.AddLive(4, 7);   // in memory
  s.AddLive(5, 12);
  s.AddLive(6, 1);   // at or above below_id
  // 7: no live block at all: nothing to copy (deleting it is another rule).
  s.MarkUnclean(3);
  auto in_mem = [](uint64_t id) { return id == 4; };
  EXPECT_EQ(s.PickVictim(0.5, 6, in_mem), 2u);
  EXPECT_TRUE(s.unclean(3));
  EXPECT_FALSE(s.unclean(2));
  EXPECT_EQ(s.PickVictim(0.5, 7, in_mem), 6u);
  EXPECT_EQ(s.PickVictim(0.5, 3, in_mem), 2u);
  EXPECT_EQ(s.PickVictim(0.5, 2, in_mem), 0u);  // only 1, above the threshold
  EXPECT_EQ(s.PickVictim(1.0, 2, in_mem), 1u);
  // Threshold is a live fraction: 10/63 is not below 0.15, 7 is (if it is not in memory).
  EXPECT_EQ(s.PickVictim(0.15, 6, in_mem), 0u);
  EXPECT_EQ(s.PickVictim(0.15, 6, NoneInMemory()), 4u);
  EXPECT_EQ(s.PickVictim(0, 7, NoneInMemory()), 0u);
  // Removed segments are gone, unclean mark included.
  s.Remove(2);
  EXPECT_EQ(s.PickVictim(0.5, 6, in_mem), 5u);
}

// (1 - u) * age / (1 + u) with u = live / 63 and age = now - stamp + 1.
double CostBenefit(uint64_t live, uint64_t stamp, uint64_t now) {
  const double u = double(live) / (kSlots - 1);
  return (1 - u) * double(now - stamp + 1) / (1 + u);
}

TEST(SegmentSetTest, CostBenefitPrefersAnOldFullerSegmentOverAYoungEmptierOne) {
  SegmentSet s(kSlots);
  for (uint64_t id = 1; id <= 3; id++) s.Add(id);
  s.AddLive(1, 30);  // old and fuller: u = 0.48
  s.NoteWritten(1, 100);
  s.AddLive(2, 10);  // young and emptier: u = 0.16
  s.NoteWritten(2, 990);
  s.AddLive(3, 1);   // the emptiest, but the open segment's neighbour: below_id cuts it off
  s.NoteWritten(3, 999);
  const uint64_t now = 1000;
  ASSERT_GT(CostBenefit(30, 100, now), CostBenefit(10, 990, now));
  EXPECT_EQ(s.PickVictim(0.5, 3, NoneInMemory(), CleanPolicy::kCostBenefit, now), 1u);
  // Greedy takes the emptiest whatever its age.
  EXPECT_EQ(s.PickVictim(0.5, 3, NoneInMemory(), CleanPolicy::kGreedy, now), 2u);
  EXPECT_EQ(s.PickVictim(0.5, 4, NoneInMemory(), CleanPolicy::kGreedy, now), 3u);
  // The threshold still bounds both: 30/63 is not below 0.4.
  EXPECT_EQ(s.PickVictim(0.4, 3, NoneInMemory(), CleanPolicy::kCostBenefit, now), 2u);
}

TEST(SegmentSetTest, CostBenefitPrefersTheEmptierSegmentWhenAgesAreClose) {
  SegmentSet s(kSlots);
  s.Add(1);
  s.Add(2);
  s.AddLive(1, 30);
  s.NoteWritten(1, 990);  // age 11
  s.AddLive(2, 10);
  s.NoteWritten(2, 980);  // age 21: older and emptier
  const uint64_t now = 1000;
  ASSERT_LT(CostBenefit(30, 990, now), CostBenefit(10, 980, now));
  EXPECT_EQ(s.PickVictim(0.9, 3, NoneInMemory(), CleanPolicy::kCostBenefit, now), 2u);
  // Now the fuller one is much older: it wins.
  s.Add(3);
  s.AddLive(3, 40);  // u = 0.63
  s.NoteWritten(3, 10);
  ASSERT_GT(CostBenefit(40, 10, now), CostBenefit(10, 980, now));
  EXPECT_EQ(s.PickVictim(0.9, 4, NoneInMemory(), CleanPolicy::kCostBenefit, now), 3u);
}

TEST(SegmentSetTest, GreedyMeasuresAShortSegmentAgainstItsLength) {
  SegmentSet s(kSlots);
  s.Add(1);
  s.Add(2);
  s.SetLength(1, 9);  // 8 data slots, 4 live: u = 0.5
  s.AddLive(1, 4);
  s.AddLive(2, 10);   // 63 data slots: u = 0.16, more blocks but emptier
  EXPECT_EQ(s.PickVictim(0.9, 3, NoneInMemory(), CleanPolicy::kGreedy, 0), 2u);
}

TEST(SegmentSetTest, AStampIsTheYoungestDataNotedAndGoesWithTheSegment) {
  SegmentSet s(kSlots);
  s.Add(1);
  EXPECT_EQ(s.stamp(1), 0u);  // never noted: as old as can be
  s.NoteWritten(1, 50);
  s.NoteWritten(1, 20);  // noted out of order: the segment stays as young as its last write
  EXPECT_EQ(s.stamp(1), 50u);
  s.Remove(1);
  EXPECT_EQ(s.stamp(1), 0u);
}

TEST(SegmentSetTest, AGenerationGoesWithTheSegment) {
  SegmentSet s(kSlots);
  s.Add(1);
  s.Add(2);
  EXPECT_EQ(s.generation(1), 0u);  // client writes, or recovered
  s.SetGeneration(1, 1);
  s.SetGeneration(2, SegmentSet::kCopyGenerations);
  EXPECT_EQ(s.generation(1), 1u);
  EXPECT_EQ(s.generation(2), SegmentSet::kCopyGenerations);
  s.SetGeneration(2, 0);
  EXPECT_EQ(s.generation(2), 0u);
  s.Remove(1);
  EXPECT_EQ(s.generation(1), 0u);
}

TEST(SegmentSetTest, DeletableNeedsNoLiveBlockNoCheckpointNoSummaryAndClosed) {
  SegmentSet s(kSlots);
  for (uint64_t id = 1; id <= 6; id++) s.Add(id);
  s.AddOrphan(9);  // an orphan at or past the open segment is not deleted either
  s.AddOrphan(0x20);
  CheckpointSet none;
  EXPECT_FALSE(s.Deletable(1, 6, NoneInMemory(), none)) << "no checkpoint: replay needs all";

  CheckpointSet ck;
  OneCheckpoint(&ck, 5, {2});
  s.AddLive(3, 1);
  s.SetSummarizing(4, true);
  auto in_mem = [](uint64_t id) { return id == 1; };
  EXPECT_FALSE(s.Deletable(1, 6, in_mem, ck)) << "in memory";
  EXPECT_TRUE(s.Deletable(1, 6, NoneInMemory(), ck));
  EXPECT_FALSE(s.Deletable(2, 6, NoneInMemory(), ck)) << "listed by the checkpoint";
  EXPECT_FALSE(s.Deletable(3, 6, NoneInMemory(), ck)) << "live";
  EXPECT_FALSE(s.Deletable(4, 6, NoneInMemory(), ck)) << "summary being written";
  EXPECT_FALSE(s.Deletable(5, 6, NoneInMemory(), ck)) << "replay starts there";
  EXPECT_FALSE(s.Deletable(6, 6, NoneInMemory(), ck)) << "the open segment";
  s.SetSummarizing(4, false);
  EXPECT_EQ(s.DeletableSegments(6, NoneInMemory(), ck), (std::vector<uint64_t>{1, 4}));

  // Later checkpoints: both kept ones must not need it.
  CheckpointInfo ci;
  ci.seq = 2;
  ci.position = LogPosition{0x30, 4096};
  ck.Added(ci);
  EXPECT_EQ(s.DeletableSegments(0x30, NoneInMemory(), ck), (std::vector<uint64_t>{1, 4}));
  ci.seq = 3;
  ck.Removed(ck.Added(ci).at(0));
  EXPECT_EQ(s.DeletableSegments(0x30, NoneInMemory(), ck),
            (std::vector<uint64_t>{1, 2, 4, 5, 6, 9, 0x20}));
}

TEST(SegmentSetTest, NeededByAndDeadWaiting) {
  SegmentSet s(kSlots);
  for (uint64_t id = 1; id <= 6; id++) s.Add(id);
  s.AddLive(2, 4);
  s.AddLive(5, 1);
  s.AddLive(6, 1);
  EXPECT_EQ(s.NeededBy(4), (std::vector<uint64_t>{2, 4}));
  EXPECT_EQ(s.NeededBy(6), (std::vector<uint64_t>{2, 5, 6}));

  // The kept checkpoint starts replay at 3: dead 1 may go, dead 3 and 4
  // wait for a checkpoint further on. (Live segments and those at or after
  // pos_seg do not count.)
  CheckpointSet ck;
  OneCheckpoint(&ck, 3, {2});
  EXPECT_EQ(s.DeadWaiting(5, 6, NoneInMemory(), ck), 2u);
  EXPECT_EQ(s.DeadWaiting(4, 6, NoneInMemory(), ck), 1u);
  EXPECT_EQ(s.DeadWaiting(5, 6, [](uint64_t id) { return id == 3; }, ck), 1u);
  s.AddOrphan(0x10);  // dead, needed (after every checkpoint's start)
  EXPECT_EQ(s.DeadWaiting(0x11, 0x12, NoneInMemory(), ck), 3u);
}

}  // namespace
}  // namespace hbiss::volume
