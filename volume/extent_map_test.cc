#include "volume/extent_map.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>

namespace hbiss::volume {
namespace {

// The model: block -> (seg, slot) for mapped blocks.
using Model = std::map<uint64_t, std::pair<uint32_t, uint32_t>>;

void CheckLookup(const ExtentMap& m, const Model& model, uint64_t lba, uint64_t count) {
  std::vector<MapRun> runs;
  m.Lookup(lba, count, &runs);
  uint64_t pos = lba;
  for (size_t i = 0; i < runs.size(); i++) {
    const MapRun& r = runs[i];
    ASSERT_EQ(r.lba, pos);
    ASSERT_GT(r.count, 0u);
    for (uint64_t b = r.lba; b < r.lba + r.count; b++) {
      auto it = model.find(b);
      if (r.mapped) {
        ASSERT_NE(it, model.end()) << "block " << b << " mapped but model says hole";
        ASSERT_EQ(it->second.first, r.seg) << b;
        ASSERT_EQ(it->second.second, r.slot + (b - r.lba)) << b;
      } else {
        ASSERT_EQ(it, model.end()) << "block " << b << " is a hole but model maps it";
      }
    }
    if (i > 0) {  // runs are maximal
      const MapRun& p = runs[i - 1];
      bool mergeable = p.mapped == r.mapped &&
                       (!r.mapped || (p.seg == r.seg && p.slot + p.count == r.slot));
      ASSERT_FALSE(mergeable) << "runs " << i - 1 << " and " << i << " should be one";
    }
    pos += r.count;
  }
  ASSERT_EQ(pos, lba + count);
}

void CheckAll(const ExtentMap& m, const Model& model) {
  ASSERT_EQ(m.MappedBlocks(), model.size());
  CheckLookup(m, model, 0, m.blocks());
  uint64_t total = 0;
  uint64_t prev_end = 0;
  m.ForEach([&](const MapRun& r) {
    ASSERT_TRUE(r.mapped);
    ASSERT_GE(r.lba, prev_end);
    for (uint64_t b = r.lba; b < r.lba + r.count; b++) {
      auto it = model.find(b);
      ASSERT_NE(it, model.end());
      ASSERT_EQ(it->second, std::make_pair(r.seg, uint32_t(r.slot + (b - r.lba))));
    }
    total += r.count;
    prev_end = r.lba + r.count;
  });
  ASSERT_EQ(total, model.size());
}

struct Param {
  uint64_t blocks;
  uint32_t max_len;
  uint32_t segs;
};

class ExtentMapRandomTest : public ::testing::TestWithParam<Param> {};

TEST_P(ExtentMapRandomTest, MatchesModel) {
  const Param p = GetParam();
  for (uint64_t seed = 1; seed <= 4; seed++) {
    std::mt19937_64 rng(seed * 7919 + p.blocks);
    ExtentMap m(p.blocks);
    Model model;
    uint32_t next_slot = 1;
    for (int op = 0; op < 4000; op++) {
      uint64_t lba = rng() % p.blocks;
      uint64_t n = 1 + rng() % std::min<uint64_t>(p.max_len, p.blocks - lba);
      int kind = int(rng() % 10);
      if (kind < 2) {
        m.Clear(lba, n);
        for (uint64_t b = lba; b < lba + n; b++) model.erase(b);
      } else {
        uint32_t seg = uint32_t(1 + rng() % p.segs);
        // Mostly increasing slots (like a log), sometimes reused ones, so
        // both merging and splitting happen.
        uint32_t slot;
        if (rng() % 4 == 0) {
          slot = uint32_t(rng() % (ExtentMap::kMaxSlot - n));
        } else {
          if (next_slot + n >= ExtentMap::kMaxSlot) next_slot = 1;
          slot = next_slot;
          next_slot += uint32_t(n);
        }
        m.Set(lba, n, seg, slot);
        for (uint64_t b = lba; b < lba + n; b++) model[b] = {seg, slot + uint32_t(b - lba)};
      }
      if (op % 97 == 0) {
        ASSERT_NO_FATAL_FAILURE(CheckAll(m, model));
      } else {
        uint64_t l2 = rng() % p.blocks;
        uint64_t n2 = 1 + rng() % (p.blocks - l2);
        ASSERT_NO_FATAL_FAILURE(CheckLookup(m, model, l2, std::min<uint64_t>(n2, 2000)));
      }
    }
    ASSERT_NO_FATAL_FAILURE(CheckAll(m, model));
    // Clear everything: all memory of chunks is released.
    m.Clear(0, p.blocks);
    model.clear();
    ASSERT_NO_FATAL_FAILURE(CheckAll(m, model));
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ExtentMapRandomTest,
                         ::testing::Values(Param{1000, 8, 1},      // one segment: merging
                                           Param{1000, 8, 3},
                                           Param{3000, 1, 2},      // single blocks: dense
                                           Param{3000, 600, 2},    // long ranges across chunks
                                           Param{300000, 50, 4},   // sparse over two pages
                                           Param{777, 300, 1}));   // partial last chunk

TEST(ExtentMapTest, EmptyLookupIsOneHole) {
  ExtentMap m(1000);
  std::vector<MapRun> runs;
  m.Lookup(10, 500, &runs);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_FALSE(runs[0].mapped);
  EXPECT_EQ(runs[0].lba, 10u);
  EXPECT_EQ(runs[0].count, 500u);
  EXPECT_EQ(m.MappedBlocks(), 0u);
}

TEST(ExtentMapTest, SequentialIsOneRunAcrossChunks) {
  ExtentMap m(4096);
  for (uint64_t b = 0; b < 1000; b++) m.Set(b, 1, 7, uint32_t(100 + b));
  std::vector<MapRun> runs;
  m.Lookup(0, 1000, &runs);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].seg, 7u);
  EXPECT_EQ(runs[0].slot, 100u);
  int n = 0;
  m.ForEach([&](const MapRun&) { n++; });
  EXPECT_EQ(n, 1);
}

TEST(ExtentMapTest, OverwriteMiddleSplits) {
  ExtentMap m(1000);
  m.Set(0, 100, 1, 0);
  m.Set(40, 10, 2, 500);
  std::vector<MapRun> runs;
  m.Lookup(0, 100, &runs);
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[0].count, 40u);
  EXPECT_EQ(runs[1].seg, 2u);
  EXPECT_EQ(runs[1].slot, 500u);
  EXPECT_EQ(runs[2].lba, 50u);
  EXPECT_EQ(runs[2].slot, 50u);
  EXPECT_EQ(runs[2].seg, 1u);
}

// The memory budget: a fully random fill of 64 MiB (16384 blocks, each its
// own extent) uses <= 8 bytes per mapped block; a sequential fill far less.
TEST(ExtentMapTest, MemoryBudgetRandomFill) {
  const uint64_t kBlocks = 16384;
  ExtentMap m(kBlocks);
  std::vector<uint64_t> order(kBlocks);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(5);
  std::shuffle(order.begin(), order.end(), rng);
  // As the log would place them: consecutive slots in write order, so no two
  // neighbouring blocks have consecutive slots (each its own extent).
  uint32_t seg = 1, slot = 1;
  for (uint64_t b : order) {
    m.Set(b, 1, seg, slot);
    if (++slot == 16384) {
      slot = 1;
      seg++;
    }
  }
  ASSERT_EQ(m.MappedBlocks(), kBlocks);
  uint64_t runs = 0;
  m.ForEach([&](const MapRun&) { runs++; });
  EXPECT_GT(runs, kBlocks * 9 / 10);  // nearly every block its own extent
  double per_block = double(m.MemoryUsage()) / double(kBlocks);
  RecordProperty("random_bytes_per_block", std::to_string(per_block));
  EXPECT_LE(per_block, 8.0);
}

TEST(ExtentMapTest, MemoryBudgetSequentialFill) {
  const uint64_t kBlocks = 16384;
  ExtentMap m(kBlocks);
  // Sequential 4 KiB writes, 256 data slots per batch plus a header slot.
  uint32_t slot = 1;
  for (uint64_t b = 0; b < kBlocks; b++) {
    if (b % 256 == 0) slot++;  // the batch header slot
    m.Set(b, 1, 1, slot++);
  }
  double per_block = double(m.MemoryUsage()) / double(kBlocks);
  RecordProperty("sequential_bytes_per_block", std::to_string(per_block));
  EXPECT_LE(per_block, 0.5);
}

TEST(ExtentMapTest, DenseChunkGoesBackToSparseAfterOverwrite) {
  ExtentMap m(256);
  for (uint32_t b = 0; b < 256; b += 1) m.Set(b, 1, 1, 1000 - b);  // each its own extent
  uint64_t dense = m.MemoryUsage();
  m.Set(0, 256, 2, 0);  // one extent now
  EXPECT_LE(m.MemoryUsage() + 1500, dense);  // a 1584-byte dense chunk became 32 bytes
  std::vector<MapRun> runs;
  m.Lookup(0, 256, &runs);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].seg, 2u);
}

}  // namespace
}  // namespace hbiss::volume
