#include "volume/checkpoint_set.h"

#include <gtest/gtest.h>

#include <vector>

namespace hbiss::volume {
namespace {

CheckpointInfo Ckpt(uint64_t seq, uint64_t pos_seg, std::vector<uint64_t> listed = {}) {
  CheckpointInfo ci;
  ci.seq = seq;
  ci.position = LogPosition{pos_seg, 4096};
  ci.segment_ids = std::move(listed);
  return ci;
}

TEST(CheckpointSetTest, EmptyNeedsEverySegment) {
  CheckpointSet c;
  EXPECT_EQ(c.newest(), 0u);
  EXPECT_EQ(c.NextSeq(), 1u);
  EXPECT_EQ(c.NextSeq(), 2u);  // taking a seq reserves it
  EXPECT_FALSE(c.NeededByNone(1)) << "without a checkpoint replay starts at the log's start";
}

TEST(CheckpointSetTest, NextSeqIsAboveEveryExistingCheckpoint) {
  CheckpointSet c;
  c.Init({9, 4, 7});  // 9 may be a corrupt one that was not loaded
  c.NoteLoaded(Ckpt(7, 3));
  EXPECT_EQ(c.newest(), 9u);
  EXPECT_EQ(c.NextSeq(), 10u);
  EXPECT_EQ(c.NextSeq(), 11u);
  CheckpointSet d;
  d.Init({});
  d.NoteLoaded(Ckpt(5, 3));
  EXPECT_EQ(d.newest(), 5u);
  EXPECT_EQ(d.NextSeq(), 6u);
}

// A checkpoint object whose needs are unknown (found at open but not the one
// loaded: corrupt, or of an older run) might need any segment: while it
// exists nothing may be deleted.
TEST(CheckpointSetTest, UnknownCheckpointBlocksEveryDelete) {
  CheckpointSet c;
  c.Init({3, 7});
  c.NoteLoaded(Ckpt(7, 10, {2, 4}));
  for (uint64_t seg : {1, 2, 5, 9, 10, 20}) EXPECT_FALSE(c.NeededByNone(seg)) << seg;
  c.Removed(3);
  EXPECT_TRUE(c.NeededByNone(1));
  EXPECT_FALSE(c.NeededByNone(2)) << "listed";
  EXPECT_TRUE(c.NeededByNone(3));
  EXPECT_FALSE(c.NeededByNone(4)) << "listed";
  EXPECT_TRUE(c.NeededByNone(9));
  EXPECT_FALSE(c.NeededByNone(10)) << "replay starts there";
  EXPECT_FALSE(c.NeededByNone(11)) << "after the replay start";
}

TEST(CheckpointSetTest, AddedKeepsTheNewestTwo) {
  CheckpointSet c;
  c.Init({});
  EXPECT_TRUE(c.Added(Ckpt(c.NextSeq(), 5, {1})).empty());
  EXPECT_TRUE(c.Added(Ckpt(c.NextSeq(), 8)).empty());
  EXPECT_EQ(c.newest(), 2u);
  // Both kept ones must not need a segment: 1 is listed by checkpoint 1.
  EXPECT_FALSE(c.NeededByNone(1));
  EXPECT_TRUE(c.NeededByNone(2));
  EXPECT_FALSE(c.NeededByNone(5));
  EXPECT_EQ(c.Added(Ckpt(c.NextSeq(), 9)), std::vector<uint64_t>{1});
  // Until its Delete succeeded, checkpoint 1 still counts as kept.
  EXPECT_FALSE(c.NeededByNone(1));
  EXPECT_EQ(c.Added(Ckpt(c.NextSeq(), 9)), (std::vector<uint64_t>{1, 2}));
  c.Removed(1);
  EXPECT_TRUE(c.NeededByNone(1));
  EXPECT_TRUE(c.NeededByNone(5));
  EXPECT_FALSE(c.NeededByNone(8)) << "checkpoint 2 (replay from 8) is still there";
  c.Removed(2);
  EXPECT_TRUE(c.NeededByNone(8));
  EXPECT_FALSE(c.NeededByNone(9));
  EXPECT_EQ(c.newest(), 4u);
  // An older seq added late (out of order) is the one to drop.
  EXPECT_EQ(c.Added(Ckpt(2, 9)), std::vector<uint64_t>{2});
}

}  // namespace
}  // namespace hbiss::volume
