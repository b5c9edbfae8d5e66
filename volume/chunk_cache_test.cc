#include "volume/chunk_cache.h"

#include <gtest/gtest.h>

namespace hbiss::volume {
namespace {

ChunkCache::Chunk Make(size_t n, uint8_t fill) {
  return std::make_shared<const std::vector<uint8_t>>(n, fill);
}

TEST(ChunkCacheTest, FindsWhatWasInsertedAndCountsHitsAndMisses) {
  ChunkCache c(1 << 20);
  EXPECT_EQ(c.Find(1, 0), nullptr);
  c.Insert(1, 0, Make(100, 7));
  c.Insert(2, 0, Make(100, 8));
  auto a = c.Find(1, 0);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ((*a)[99], 7);
  EXPECT_EQ((*c.Find(2, 0))[0], 8);
  EXPECT_EQ(c.Find(1, 1), nullptr) << "same segment, other chunk";
  EXPECT_EQ(c.hits(), 2u);
  EXPECT_EQ(c.misses(), 2u);
  EXPECT_EQ(c.bytes(), 200u);
}

TEST(ChunkCacheTest, EvictsLeastRecentlyUsedToStayWithinCapacity) {
  ChunkCache c(300);
  c.Insert(1, 0, Make(100, 1));
  c.Insert(1, 1, Make(100, 2));
  c.Insert(1, 2, Make(100, 3));
  ASSERT_NE(c.Find(1, 0), nullptr);  // 0 is now the most recent; 1 the least
  c.Insert(1, 3, Make(100, 4));
  EXPECT_EQ(c.Find(1, 1), nullptr);
  EXPECT_NE(c.Find(1, 0), nullptr);
  EXPECT_NE(c.Find(1, 2), nullptr);
  EXPECT_NE(c.Find(1, 3), nullptr);
  EXPECT_EQ(c.bytes(), 300u);
  // A chunk of 250 bytes evicts as many as needed.
  c.Insert(2, 0, Make(250, 5));
  EXPECT_LE(c.bytes(), 300u);
  EXPECT_NE(c.Find(2, 0), nullptr);
}

TEST(ChunkCacheTest, ReplacingAChunkKeepsTheByteCountRightAndTooBigIsNotKept) {
  ChunkCache c(1000);
  c.Insert(1, 0, Make(100, 1));
  c.Insert(1, 0, Make(300, 2));
  EXPECT_EQ(c.bytes(), 300u);
  EXPECT_EQ((*c.Find(1, 0))[0], 2);
  c.Insert(1, 1, Make(1001, 3));
  EXPECT_EQ(c.Find(1, 1), nullptr);
  EXPECT_EQ(c.bytes(), 300u);
  ChunkCache none(0);
  none.Insert(1, 0, Make(1, 1));
  EXPECT_EQ(none.Find(1, 0), nullptr);
}

TEST(ChunkCacheTest, AChunkInUseSurvivesItsEviction) {
  ChunkCache c(100);
  c.Insert(1, 0, Make(100, 9));
  auto held = c.Find(1, 0);
  c.Insert(1, 1, Make(100, 1));  // evicts chunk 0
  EXPECT_EQ(c.Find(1, 0), nullptr);
  EXPECT_EQ((*held)[50], 9);
}

}  // namespace
}  // namespace hbiss::volume
