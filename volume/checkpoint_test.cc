#include "volume/checkpoint.h"

#include <gtest/gtest.h>

#include <random>

namespace hbiss::volume {
namespace {

std::vector<MapRun> Runs(const ExtentMap& m) {
  std::vector<MapRun> v;
  m.ForEach([&](const MapRun& r) { v.push_back(r); });
  return v;
}

bool SameRuns(const std::vector<MapRun>& a, const std::vector<MapRun>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++) {
    if (a[i].lba != b[i].lba || a[i].count != b[i].count || a[i].seg != b[i].seg ||
        a[i].slot != b[i].slot)
      return false;
  }
  return true;
}

CheckpointInfo SampleInfo(uint64_t blocks) {
  CheckpointInfo ci;
  ci.volume_id = 0xfeedface;
  ci.seq = 17;
  ci.position = {5, 40960};
  ci.next_seq = 321;
  ci.volume_size = blocks * kSlotSize;
  ci.segment_ids = {1, 2, 3, 5, 1000};
  return ci;
}

void FillRandom(ExtentMap* m, uint64_t seed, int ops) {
  std::mt19937_64 rng(seed);
  for (int i = 0; i < ops; i++) {
    uint64_t lba = rng() % m->blocks();
    uint64_t n = 1 + rng() % std::min<uint64_t>(300, m->blocks() - lba);
    if (rng() % 5 == 0) {
      ASSERT_TRUE(m->Clear(lba, n).ok());
    } else {
      ASSERT_TRUE(m->Set(lba, n, uint32_t(1 + rng() % 5), uint32_t(rng() % 60000)).ok());
    }
  }
}

TEST(CheckpointTest, RoundTripEmptyAndFull) {
  for (int ops : {0, 1, 50, 5000}) {
    ExtentMap m(100000);
    FillRandom(&m, ops, ops);
    CheckpointInfo ci = SampleInfo(100000);
    std::string enc = EncodeCheckpoint(ci, m);
    CheckpointInfo d;
    ExtentMap m2(100000);
    ASSERT_TRUE(DecodeCheckpoint(enc, &d, &m2).ok()) << ops;
    EXPECT_EQ(d.volume_id, ci.volume_id);
    EXPECT_EQ(d.seq, 17u);
    EXPECT_EQ(d.position, (LogPosition{5, 40960}));
    EXPECT_EQ(d.next_seq, 321u);
    EXPECT_EQ(d.volume_size, ci.volume_size);
    EXPECT_EQ(d.segment_ids, ci.segment_ids);
    EXPECT_EQ(d.run_count, Runs(m).size());
    EXPECT_TRUE(SameRuns(Runs(m), Runs(m2)));
    EXPECT_EQ(m.MappedBlocks(), m2.MappedBlocks());
  }
}

TEST(CheckpointTest, EveryByteFlipIsDetected) {
  ExtentMap m(5000);
  FillRandom(&m, 3, 40);
  std::string enc = EncodeCheckpoint(SampleInfo(5000), m);
  for (size_t i = 0; i < enc.size(); i++) {
    std::string bad = enc;
    bad[i] ^= 0x10;
    CheckpointInfo d;
    ExtentMap m2(5000);
    EXPECT_TRUE(DecodeCheckpoint(bad, &d, &m2).IsCorruption()) << "byte " << i;
  }
}

TEST(CheckpointTest, TruncationIsDetected) {
  ExtentMap m(5000);
  FillRandom(&m, 4, 40);
  std::string enc = EncodeCheckpoint(SampleInfo(5000), m);
  for (size_t len = 0; len < enc.size(); len += 7) {
    CheckpointInfo d;
    EXPECT_TRUE(DecodeCheckpoint(std::string_view(enc).substr(0, len), &d, nullptr)
                    .IsCorruption())
        << len;
  }
}

TEST(CheckpointTest, SizeMismatchWithMapIsRejected) {
  ExtentMap m(5000);
  std::string enc = EncodeCheckpoint(SampleInfo(5000), m);
  CheckpointInfo d;
  ExtentMap other(4000);
  EXPECT_TRUE(DecodeCheckpoint(enc, &d, &other).IsCorruption());
}

TEST(CheckpointTest, SequentialMapIsSmall) {
  ExtentMap m(262144);  // 1 GiB
  // Sequential data written in batches of 256 blocks into 64 MiB segments.
  for (uint64_t lba = 0; lba < m.blocks(); lba += 256) {
    uint64_t seg = 1 + lba / 16000;
    ASSERT_TRUE(
        m.Set(lba, 256, uint32_t(seg), uint32_t(1 + (lba % 16000) / 256 * 257 % 60000)).ok());
  }
  std::string enc = EncodeCheckpoint(SampleInfo(m.blocks()), m);
  EXPECT_LT(enc.size(), 16u * 1024);
}

// Encoding a snapshot gives the bytes of encoding the map it was taken
// from, however the live map changes afterwards.
TEST(CheckpointTest, SnapshotEncodesLikeTheMapAtSnapshotTime) {
  ExtentMap m(100000);
  FillRandom(&m, 11, 3000);
  CheckpointInfo ci = SampleInfo(100000);
  std::string before = EncodeCheckpoint(ci, m);
  auto snap = m.Snapshot();
  ASSERT_TRUE(snap.ok());
  FillRandom(&m, 12, 3000);
  EXPECT_EQ(EncodeCheckpoint(ci, **snap), before);
  EXPECT_NE(EncodeCheckpoint(ci, m), before);
}

TEST(CheckpointTest, DecodeReportsOutOfMemory) {
  ExtentMap m(100000);
  FillRandom(&m, 13, 3000);
  std::string enc = EncodeCheckpoint(SampleInfo(100000), m);
  CheckpointInfo d;
  ExtentMap m2(100000);
  ExtentMap::TEST_FailAllocationsAfter(20);
  Status s = DecodeCheckpoint(enc, &d, &m2);
  ExtentMap::TEST_FailAllocationsAfter(-1);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
}

}  // namespace
}  // namespace hbiss::volume
