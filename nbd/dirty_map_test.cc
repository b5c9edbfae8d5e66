// DirtyMap: building (checks, merging, coarsening to a bound) and Query
// against a model of one bit per block.
#include "nbd/dirty_map.h"

#include <gtest/gtest.h>

#include <random>

namespace hbiss::nbd {
namespace {

using DirtyRun = DirtyMap::Run;
constexpr uint64_t kB = 4096;

TEST(DirtyMap, BuildMergesTouchingRuns) {
  auto m = DirtyMap::Build(16 * kB, {{0, kB}, {kB, 2 * kB}, {5 * kB, kB}, {15 * kB, kB}});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->runs(), (std::vector<DirtyRun>{{0, 3 * kB}, {5 * kB, kB}, {15 * kB, kB}}));
  EXPECT_EQ(m->dirty_bytes(), 5 * kB);
  EXPECT_EQ(m->granularity(), kB);
  EXPECT_EQ(m->size(), 16 * kB);

  auto empty = DirtyMap::Build(16 * kB, {});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->Query(0, 16 * kB, 10), (std::vector<DirtyExtent>{{0, 16 * kB, false}}));
}

TEST(DirtyMap, BuildRefusesBadRuns) {
  const uint64_t size = 16 * kB;
  EXPECT_FALSE(DirtyMap::Build(size, {{0, 0}}).ok());                // empty run
  EXPECT_FALSE(DirtyMap::Build(size, {{15 * kB, 2 * kB}}).ok());     // past the end
  EXPECT_FALSE(DirtyMap::Build(size, {{size + 1, 1}}).ok());         // starts past it
  EXPECT_FALSE(DirtyMap::Build(size, {{kB, ~0ull}}).ok());           // length overflows
  EXPECT_FALSE(DirtyMap::Build(size, {{0, 2 * kB}, {kB, kB}}).ok());  // overlap
  EXPECT_FALSE(DirtyMap::Build(size, {{4 * kB, kB}, {0, kB}}).ok());  // unsorted
  EXPECT_FALSE(DirtyMap::Build(size, {{0, kB}}, 3000).ok());         // not a power of two
  EXPECT_FALSE(DirtyMap::Build(size, {{0, kB}}, 0).ok());
  EXPECT_FALSE(DirtyMap::Build(size, {{0, kB}}, kB, 0).ok());        // max_runs 0
}

TEST(DirtyMap, QueryEdges) {
  auto m = DirtyMap::Build(10 * kB, {{2 * kB, 2 * kB}, {8 * kB, 2 * kB}});
  ASSERT_TRUE(m.ok());
  // Starting inside a dirty run, ending inside a clean one.
  EXPECT_EQ(m->Query(3 * kB, 3 * kB, 10),
            (std::vector<DirtyExtent>{{3 * kB, kB, true}, {4 * kB, 2 * kB, false}}));
  // Unaligned, within one run.
  EXPECT_EQ(m->Query(2 * kB + 1, 10, 10), (std::vector<DirtyExtent>{{2 * kB + 1, 10, true}}));
  // Up to the very end; then capped at one extent.
  EXPECT_EQ(m->Query(0, 10 * kB, 10),
            (std::vector<DirtyExtent>{{0, 2 * kB, false},
                                      {2 * kB, 2 * kB, true},
                                      {4 * kB, 4 * kB, false},
                                      {8 * kB, 2 * kB, true}}));
  EXPECT_EQ(m->Query(0, 10 * kB, 1), (std::vector<DirtyExtent>{{0, 2 * kB, false}}));
  EXPECT_EQ(m->Query(0, 10 * kB, 0).size(), 1u);  // at least one
  // Outside or empty: nothing.
  EXPECT_TRUE(m->Query(10 * kB, 1, 10).empty());
  EXPECT_TRUE(m->Query(9 * kB, 2 * kB, 10).empty());
  EXPECT_TRUE(m->Query(0, 0, 10).empty());
  EXPECT_TRUE(m->Query(~0ull, 2, 10).empty());
}

// Random maps and queries against one bit per block.
TEST(DirtyMap, QueryMatchesModel) {
  std::mt19937_64 rng(7);
  for (int iter = 0; iter < 200; iter++) {
    const uint64_t blocks = 1 + rng() % 300;
    std::vector<bool> model(blocks);
    std::vector<DirtyRun> runs;
    for (uint64_t b = 0; b < blocks; b++) {
      model[b] = rng() % 3 == 0;
      if (!model[b]) continue;
      // Sometimes split one dirty stretch into touching runs.
      if (!runs.empty() && runs.back().offset + runs.back().length == b * kB && rng() % 2) {
        runs.back().length += kB;
      } else {
        runs.push_back({b * kB, kB});
      }
    }
    auto m = DirtyMap::Build(blocks * kB, runs);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    for (int q = 0; q < 50; q++) {
      const uint64_t off = rng() % (blocks * kB);
      const uint64_t len = 1 + rng() % (blocks * kB - off);
      const size_t max = 1 + rng() % 6;
      auto got = m->Query(off, len, max);
      ASSERT_FALSE(got.empty());
      ASSERT_LE(got.size(), max);
      uint64_t pos = off;
      for (size_t i = 0; i < got.size(); i++) {
        const DirtyExtent& x = got[i];
        ASSERT_EQ(x.offset, pos);
        ASSERT_GT(x.length, 0u);
        if (i > 0) {
          ASSERT_NE(x.dirty, got[i - 1].dirty) << "not merged";
        }
        for (uint64_t b = x.offset / kB; b * kB < x.offset + x.length; b++) {
          ASSERT_EQ(model[b], x.dirty) << "block " << b;
        }
        pos += x.length;
      }
      ASSERT_LE(pos, off + len);
      if (got.size() < max) {
        ASSERT_EQ(pos, off + len) << "stopped short";
      }
    }
  }
}

// Over the bound, the map is coarsened: within it, and never less dirty.
TEST(DirtyMap, CoarsensToTheBoundAndNeverLosesADirtyBlock) {
  std::mt19937_64 rng(11);
  for (size_t max_runs : {1u, 2u, 7u, 100u}) {
    const uint64_t blocks = 1000 + rng() % 100;  // not a power of two
    const uint64_t size = blocks * kB - 123;     // nor block-aligned at the end
    std::vector<bool> model(blocks);
    std::vector<DirtyRun> runs;
    for (uint64_t b = 0; b < blocks; b += 2) {
      if (rng() % 2 == 0) continue;
      model[b] = true;
      runs.push_back({b * kB, std::min(kB, size - b * kB)});
    }
    ASSERT_GT(runs.size(), max_runs);
    auto m = DirtyMap::Build(size, runs, kB, max_runs);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_LE(m->runs().size(), max_runs);
    EXPECT_GT(m->granularity(), kB);
    for (const DirtyRun& r : m->runs()) {
      EXPECT_EQ(r.offset % m->granularity(), 0u);
      const uint64_t end = r.offset + r.length;
      EXPECT_TRUE(end % m->granularity() == 0 || end == size) << end;
    }
    auto all = m->Query(0, size, size_t{1} << 20);
    for (uint64_t b = 0; b < blocks; b++) {
      if (!model[b]) continue;
      bool dirty = false;
      for (const DirtyExtent& x : all) {
        if (x.dirty && x.offset <= b * kB && b * kB < x.offset + x.length) dirty = true;
      }
      EXPECT_TRUE(dirty) << "block " << b << " lost with max_runs " << max_runs;
    }
  }
}

}  // namespace
}  // namespace hbiss::nbd
