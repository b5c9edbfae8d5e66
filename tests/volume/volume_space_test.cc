// Diff and GetDiskUsage (volume/space.h) on the memory and local stores,
// against a model that gives every block the number of the write that put
// its data (0: unmapped): two states hold the same data for a block iff the
// numbers are equal, and with the cleaner off that is exactly what Diff
// must report. With the cleaner on, a moved block may be reported too: the
// contents then decide.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>

#include "tests/volume/store_param.h"
#include "volume/space.h"
#include "volume/volume.h"

namespace hbiss::volume {
namespace {

constexpr uint64_t kBlocks = 512;
constexpr uint64_t kVolSize = kBlocks * kBlockSize;
constexpr uint64_t kSegSize = 256 << 10;

using Model = std::vector<uint64_t>;  // per block: the write that put its data, 0: none

class SpaceTest : public StoreParamTest {
 protected:
  void SetUp() override {
    StoreParamTest::SetUp();
    if (HasFatalFailure()) return;
    CreateVolume("v", kVolSize, kSegSize);
    model_.assign(kBlocks, 0);
  }

  std::unique_ptr<Volume> Open(const std::string& name, double clean_threshold = 0) {
    OpenOptions o;
    o.clean_threshold = clean_threshold;
    auto v = Volume::Open(store_, name, o);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? std::move(*v) : nullptr;
  }

  // Blocks [b, b+n) get fresh data (never all zeros) in the volume and the model.
  void Write(Volume* v, uint64_t b, uint64_t n) {
    std::vector<uint8_t> buf(n * kBlockSize);
    for (uint64_t i = 0; i < n; i++) {
      model_[b + i] = ++writes_;
      std::memset(buf.data() + i * kBlockSize, int(writes_ % 251) + 1, kBlockSize);
      std::memcpy(buf.data() + i * kBlockSize, &writes_, sizeof(writes_));
    }
    ASSERT_TRUE(v->Write(b * kBlockSize, buf).ok());
  }
  void Trim(Volume* v, uint64_t b, uint64_t n, bool zeroes = false) {
    Status s = zeroes ? v->WriteZeroes(b * kBlockSize, n * kBlockSize)
                      : v->Trim(b * kBlockSize, n * kBlockSize);
    ASSERT_TRUE(s.ok()) << s.ToString();
    for (uint64_t i = 0; i < n; i++) model_[b + i] = 0;
  }
  void Churn(Volume* v, std::mt19937_64& rng, int ops) {
    for (int i = 0; i < ops; i++) {
      const uint64_t b = rng() % kBlocks;
      const uint64_t n = 1 + rng() % std::min<uint64_t>(24, kBlocks - b);
      switch (rng() % 5) {
        case 0: Trim(v, b, n); break;
        case 1: Trim(v, b, n, /*zeroes=*/true); break;
        default: Write(v, b, n); break;
      }
    }
  }

  // Diff(from, to) against the models of the two states: exact.
  void ExpectExactDiff(const std::string& from, const std::string& to, const Model& a,
                       const Model& b) {
    auto d = Diff(store_, from, to);
    ASSERT_TRUE(d.ok()) << from << " " << to << ": " << d.status().ToString();
    std::vector<int> got(kBlocks, -1);  // -1 not reported, 0 zero, 1 data
    uint64_t prev_end = 0;
    for (size_t i = 0; i < d->size(); i++) {
      const DiffExtent& e = (*d)[i];
      ASSERT_GT(e.length, 0u);
      ASSERT_EQ(e.offset % kBlockSize, 0u);
      ASSERT_EQ(e.length % kBlockSize, 0u);
      ASSERT_GE(e.offset, prev_end) << "extents out of order or overlapping";
      if (i > 0 && e.offset == prev_end) {
        ASSERT_NE(e.data, (*d)[i - 1].data) << "adjacent extents of one type not merged";
      }
      prev_end = e.offset + e.length;
      ASSERT_LE(prev_end, kVolSize);
      for (uint64_t blk = e.offset / kBlockSize; blk < prev_end / kBlockSize; blk++) {
        got[blk] = e.data ? 1 : 0;
      }
    }
    for (uint64_t blk = 0; blk < kBlocks; blk++) {
      const int want = a[blk] == b[blk] ? -1 : (b[blk] != 0 ? 1 : 0);
      ASSERT_EQ(got[blk], want) << from << " -> " << to << ": block " << blk << " (writes "
                                << a[blk] << " -> " << b[blk] << ")";
    }
  }

  // Blocks [0, n) of v written, then snapshot `snap`; v closed.
  void WriteAndSnap(uint64_t n, const std::string& snap) {
    auto v = Open("v");
    ASSERT_NE(v, nullptr);
    Write(v.get(), 0, n);
    ASSERT_TRUE(v->CreateSnapshot(snap).ok());
    ASSERT_TRUE(v->Close().ok());
  }

  static uint64_t ChangedDataBytes(const Model& a, const Model& b) {
    uint64_t n = 0;
    for (uint64_t blk = 0; blk < kBlocks; blk++) n += (a[blk] != b[blk] && b[blk] != 0);
    return n * kBlockSize;
  }
  static uint64_t MappedBytes(const Model& m) {
    uint64_t n = 0;
    for (uint64_t w : m) n += w != 0;
    return n * kBlockSize;
  }

  Model model_;
  uint64_t writes_ = 0;
};

TEST_P(SpaceTest, DiffMatchesTheModelBetweenEveryPairOfStates) {
  std::mt19937_64 rng(20261201);
  auto v = Open("v");
  ASSERT_NE(v, nullptr);
  std::vector<std::string> names;
  std::vector<Model> states;
  for (int k = 0; k < 5; k++) {
    Churn(v.get(), rng, 40);
    if (k % 2 == 0) {
      ASSERT_TRUE(v->Flush().ok());
    }
    names.push_back("s" + std::to_string(k));
    ASSERT_TRUE(v->CreateSnapshot(names.back()).ok());
    states.push_back(model_);
  }
  Churn(v.get(), rng, 40);
  // The head is read by a read-only recovery while v is open: flush so that
  // what it sees is all there is.
  ASSERT_TRUE(v->Flush().ok());
  for (size_t i = 0; i < names.size(); i++) {
    for (size_t j = 0; j < names.size(); j++) {
      ExpectExactDiff("v@" + names[i], "v@" + names[j], states[i], states[j]);
    }
    ExpectExactDiff("v@" + names[i], "v", states[i], model_);
  }

  // du, while the volume is still open for writing.
  auto du = GetDiskUsage(store_, "v");
  ASSERT_TRUE(du.ok()) << du.status().ToString();
  ASSERT_EQ(du->rows.size(), names.size() + 1);
  Model prev(kBlocks, 0);
  for (size_t i = 0; i <= names.size(); i++) {
    const Model& m = i < names.size() ? states[i] : model_;
    EXPECT_EQ(du->rows[i].snapshot, i < names.size() ? names[i] : "");
    EXPECT_EQ(du->rows[i].provisioned, kVolSize);
    EXPECT_EQ(du->rows[i].used, ChangedDataBytes(prev, m)) << "row " << i;
    EXPECT_EQ(du->rows[i].mapped, MappedBytes(m)) << "row " << i;
    prev = m;
  }
  EXPECT_EQ(du->mapped, MappedBytes(model_));
  EXPECT_EQ(du->own, du->mapped);
  EXPECT_EQ(du->shared, 0u);
  EXPECT_GT(du->segment_bytes, 0u);
  EXPECT_EQ(du->store_bytes,
            du->segment_bytes + du->checkpoint_bytes + du->snapshot_map_bytes + du->summary_bytes);
  ASSERT_TRUE(v->Close().ok());

  // The same after a reopen (the head from a checkpoint).
  auto again = Diff(store_, "v@s0", "v");
  ASSERT_TRUE(again.ok());
  ExpectExactDiff("v@s0", "v", states[0], model_);
}

TEST_P(SpaceTest, UnreportedBlocksAreIdenticalAfterCleaning) {
  std::mt19937_64 rng(7);
  auto v = Open("v", /*clean_threshold=*/0.9);
  ASSERT_NE(v, nullptr);
  Churn(v.get(), rng, 200);
  ASSERT_TRUE(v->CreateSnapshot("a").ok());
  const Model a = model_;
  Churn(v.get(), rng, 300);
  ASSERT_TRUE(v->Clean(0.9).ok());
  ASSERT_TRUE(v->Close().ok());
  auto d = Diff(store_, "v@a", "v");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  std::vector<int> got(kBlocks, -1);
  for (const DiffExtent& e : *d) {
    for (uint64_t blk = e.offset / kBlockSize; blk < (e.offset + e.length) / kBlockSize; blk++) {
      got[blk] = e.data ? 1 : 0;
    }
  }
  for (uint64_t blk = 0; blk < kBlocks; blk++) {
    if (got[blk] == -1) {
      EXPECT_EQ(a[blk], model_[blk]) << "block " << blk << " changed but is not reported";
    } else if (got[blk] == 0) {
      EXPECT_EQ(model_[blk], 0u) << "block " << blk << " reported zero but holds data";
      EXPECT_NE(a[blk], 0u) << "block " << blk << " was unmapped in both";
    } else {
      EXPECT_NE(model_[blk], 0u) << "block " << blk << " reported data but is unmapped";
    }
  }
}

// The pattern of doc/snapshots.md "du": exact numbers.
TEST_P(SpaceTest, DuOfAKnownPattern) {
  auto v = Open("v");
  ASSERT_NE(v, nullptr);
  Write(v.get(), 0, 100);
  ASSERT_TRUE(v->CreateSnapshot("one").ok());
  Write(v.get(), 20, 30);
  ASSERT_TRUE(v->CreateSnapshot("two").ok());
  Trim(v.get(), 90, 10);
  Write(v.get(), 200, 5);
  ASSERT_TRUE(v->Close().ok());
  auto du = GetDiskUsage(store_, "v");
  ASSERT_TRUE(du.ok()) << du.status().ToString();
  ASSERT_EQ(du->rows.size(), 3u);
  EXPECT_EQ(du->rows[0].snapshot, "one");
  EXPECT_EQ(du->rows[0].used, 100 * kBlockSize);
  EXPECT_EQ(du->rows[1].snapshot, "two");
  EXPECT_EQ(du->rows[1].used, 30 * kBlockSize);
  EXPECT_EQ(du->rows[1].mapped, 100 * kBlockSize);
  EXPECT_EQ(du->rows[2].snapshot, "");
  EXPECT_EQ(du->rows[2].used, 5 * kBlockSize);  // a trim adds nothing
  EXPECT_EQ(du->rows[2].mapped, 95 * kBlockSize);
  EXPECT_EQ(du->mapped, 95 * kBlockSize);
  EXPECT_EQ(du->provisioned, kVolSize);

  auto d = Diff(store_, "v@two", "v");
  ASSERT_TRUE(d.ok());
  const std::vector<DiffExtent> want = {{90 * kBlockSize, 10 * kBlockSize, false},
                                        {200 * kBlockSize, 5 * kBlockSize, true}};
  EXPECT_EQ(*d, want);
  auto d2 = Diff(store_, "v@one", "v@two");
  ASSERT_TRUE(d2.ok());
  EXPECT_EQ(*d2, (std::vector<DiffExtent>{{20 * kBlockSize, 30 * kBlockSize, true}}));
}

TEST_P(SpaceTest, CloneAddedAndSharedBytes) {
  WriteAndSnap(100, "gold");
  const Model gold = model_;
  ASSERT_TRUE(Volume::Clone(store_, "v@gold", "c").ok());
  {
    auto c = Open("c");
    ASSERT_NE(c, nullptr);
    Write(c.get(), 10, 20);   // overwrites 20 shared blocks
    Write(c.get(), 300, 7);   // 7 new ones
    Trim(c.get(), 50, 5);     // unmaps 5 shared blocks
    ASSERT_TRUE(c->Close().ok());
  }
  auto du = GetDiskUsage(store_, "c");
  ASSERT_TRUE(du.ok()) << du.status().ToString();
  EXPECT_EQ(du->own, 27 * kBlockSize);
  EXPECT_EQ(du->shared, 75 * kBlockSize);
  EXPECT_EQ(du->mapped, 102 * kBlockSize);
  ASSERT_EQ(du->rows.size(), 1u);
  EXPECT_EQ(du->rows[0].used, 27 * kBlockSize);  // against the parent snapshot

  ExpectExactDiff("v@gold", "c", gold, model_);
  auto parent = GetDiskUsage(store_, "v");
  ASSERT_TRUE(parent.ok());
  EXPECT_EQ(parent->mapped, 100 * kBlockSize);
}

TEST_P(SpaceTest, Refusals) {
  WriteAndSnap(4, "s");
  CreateVolume("w", kVolSize, kSegSize);
  EXPECT_TRUE(Diff(store_, "v", "v").status().IsInvalidArgument());        // from: no snapshot
  EXPECT_TRUE(Diff(store_, "v@nope", "v").status().IsNotFound());
  EXPECT_TRUE(Diff(store_, "v@s", "v@nope").status().IsNotFound());
  EXPECT_TRUE(Diff(store_, "nov@s", "nov").status().IsNotFound());
  EXPECT_TRUE(Diff(store_, "v@s", "w").status().IsInvalidArgument());      // unrelated
  EXPECT_TRUE(Diff(store_, "v@@s", "v").status().IsInvalidArgument());
  EXPECT_TRUE(GetDiskUsage(store_, "nov").status().IsNotFound());
  EXPECT_TRUE(GetDiskUsage(store_, "v@s").status().IsInvalidArgument());
  // A clone of another snapshot of its parent's volume.
  WriteAndSnap(2, "t");
  ASSERT_TRUE(Volume::Clone(store_, "v@t", "c").ok());
  EXPECT_TRUE(Diff(store_, "v@s", "c").status().IsInvalidArgument());
  EXPECT_TRUE(Diff(store_, "v@t", "c").ok());
}

// du and diff only read: they work while a writer owns the volume, writes,
// flushes and cleans (segments deleted under them are read again).
TEST_P(SpaceTest, WorksWhileTheOwnerWritesAndCleans) {
  auto v = Open("v", /*clean_threshold=*/0.9);
  ASSERT_NE(v, nullptr);
  std::mt19937_64 rng(99);
  Churn(v.get(), rng, 100);
  ASSERT_TRUE(v->CreateSnapshot("a").ok());
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::mt19937_64 wrng(5);
    std::vector<uint8_t> buf(8 * kBlockSize, 0x5a);
    while (!stop.load()) {
      if (!v->Write((wrng() % (kBlocks - 8)) * kBlockSize, buf).ok()) break;
      if (wrng() % 8 == 0 && !v->Flush().ok()) break;
      if (wrng() % 64 == 0 && !v->Clean(0.9).ok()) break;
    }
  });
  for (int i = 0; i < 30; i++) {
    auto du = GetDiskUsage(store_, "v");
    EXPECT_TRUE(du.ok()) << "round " << i << ": " << du.status().ToString();
    if (du.ok()) {
      EXPECT_EQ(du->rows.size(), 2u);
      EXPECT_LE(du->mapped, kVolSize);
    }
    auto d = Diff(store_, "v@a", "v");
    EXPECT_TRUE(d.ok()) << "round " << i << ": " << d.status().ToString();
  }
  stop = true;
  writer.join();
  ASSERT_TRUE(v->Close().ok());
}

INSTANTIATE_TEST_SUITE_P(Stores, SpaceTest, ::testing::Bool(), StoreParamName);

}  // namespace
}  // namespace hbiss::volume
