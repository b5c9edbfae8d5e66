#include "volume/segment_cache.h"

#include <gtest/gtest.h>

#include <sys/resource.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "store/memory_store.h"
#include "store/store_wrapper.h"
#include "volume/layout.h"
#include "volume/test_segment.h"
#include "volume/volume.h"

namespace hbiss::volume {
namespace {

constexpr uint64_t kVolId = 0x77;
constexpr uint32_t kSlots = 64;
const std::string kName = "sc";
const layout::LogDir kDir = layout::EpochDir(kName, 1);

using W = TestSegment;

// Counts segment opens and summary reads.
class CountingStore : public store::StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  Result<std::unique_ptr<store::SegmentReader>> Open(const std::string& name) override {
    opens++;
    return StoreWrapper::Open(name);
  }
  Result<std::string> Get(const std::string& name, uint64_t max_size) override {
    gets++;
    return StoreWrapper::Get(name, max_size);
  }
  std::atomic<int> opens{0};
  std::atomic<int> gets{0};
};

// Segment `id`: blocks [100 * id, 100 * id + 8) in two batches, version id.
TestSegment MakeSegment(uint64_t id) {
  TestSegment seg(kVolId, id, 1);
  seg.AddBatch({W::Write(100 * id, 5)}, id);
  seg.AddBatch({W::Write(100 * id + 5, 3)}, id);
  return seg;
}

// The summary a closed segment gets.
std::string Summary(const TestSegment& seg, uint64_t id) {
  SegmentSummary s;
  s.volume_id = kVolId;
  s.segment_id = id;
  s.segment_bytes = seg.span().size();
  const size_t slots = s.segment_bytes / kSlotSize;
  s.valid.assign(slots, false);
  s.crcs.assign(slots, 0);
  for (size_t i = 2; i < slots; i++) {
    if (i == 7) continue;  // the second batch's header
    s.valid[i] = true;
    s.crcs[i] = DataSlotCrc(seg.span().data() + i * kSlotSize);
  }
  return EncodeSegmentSummary(s);
}

std::span<const uint8_t> AsBytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

class SegmentCacheTest : public ::testing::Test {
 protected:
  void PutSegment(uint64_t id, bool summary = true) {
    TestSegment seg = MakeSegment(id);
    ASSERT_TRUE(mem_.Put(layout::SegName(kDir, id), seg.span()).ok());
    if (summary) {
      ASSERT_TRUE(mem_.Put(layout::SumName(kDir, id), AsBytes(Summary(seg, id))).ok());
    }
  }
  // Run of the 8 blocks of segment `id` (slots 2..6 and 8..10).
  static std::vector<MapRun> Runs(uint64_t id) {
    return {MapRun{100 * id, 5, true, uint32_t(id), 2},
            MapRun{100 * id + 5, 3, true, uint32_t(id), 8}};
  }
  Status ReadAll(SegmentCache* c, uint64_t id, std::string* out) {
    out->assign(8 * kBlockSize, '\0');
    std::span<uint8_t> buf(reinterpret_cast<uint8_t*>(out->data()), out->size());
    for (const MapRun& r : Runs(id)) {
      HBISS_RETURN_IF_ERROR(c->ReadRun(r, 100 * id * kBlockSize, buf));
    }
    return Status::OK();
  }
  static std::string Expected(uint64_t id) {
    std::string s;
    for (uint64_t b = 100 * id; b < 100 * id + 8; b++) s += TestSegment::BlockData(b, id);
    return s;
  }
  // chunk_bytes > 0: through a read cache of that many bytes.
  std::unique_ptr<SegmentCache> NewCache(uint64_t chunk_bytes = 0) {
    ReadCache* rc = nullptr;
    if (chunk_bytes > 0) {
      read_caches_.push_back(std::make_unique<ReadCache>(chunk_bytes));
      rc = read_caches_.back().get();
    }
    return std::make_unique<SegmentCache>(&store_, kDir, kVolId, kSlots, rc, &readers_,
                                          &tables_);
  }

  store::MemoryStore mem_;
  CountingStore store_{&mem_};
  ReaderPool readers_{4};
  CrcTableCache tables_{1 << 20};
  std::vector<std::unique_ptr<ReadCache>> read_caches_;  // live as long as the test
};

TEST_F(SegmentCacheTest, ReadsVerifiedBlocksThroughTheSummary) {
  PutSegment(1);
  for (uint64_t chunk : {uint64_t{0}, uint64_t{1} << 20}) {
    auto c = NewCache(chunk);
    std::string got;
    ASSERT_TRUE(ReadAll(c.get(), 1, &got).ok());
    EXPECT_TRUE(got == Expected(1));
    // A part of a block, at an offset inside the run.
    std::string part(100, '\0');
    ASSERT_TRUE(c->ReadRun(Runs(1)[0], 102 * kBlockSize + 50,
                           {reinterpret_cast<uint8_t*>(part.data()), part.size()})
                    .ok());
    EXPECT_EQ(part, Expected(1).substr(2 * kBlockSize + 50, 100));
  }
}

TEST_F(SegmentCacheTest, CrcMismatchIsCorruptionAndOnlyForThatBlock) {
  TestSegment seg = MakeSegment(1);
  const std::string sum = Summary(seg, 1);
  seg.bytes()[3 * kSlotSize + 9] ^= 4;  // block 101 (slot 3)
  ASSERT_TRUE(mem_.Put(layout::SegName(kDir, 1), seg.span()).ok());
  ASSERT_TRUE(mem_.Put(layout::SumName(kDir, 1), AsBytes(sum)).ok());
  for (uint64_t chunk : {uint64_t{0}, uint64_t{1} << 20}) {
    auto c = NewCache(chunk);
    std::string got(kBlockSize, '\0');
    std::span<uint8_t> buf(reinterpret_cast<uint8_t*>(got.data()), got.size());
    Status s = c->ReadRun(MapRun{101, 1, true, 1, 3}, 101 * kBlockSize, buf);
    EXPECT_TRUE(s.IsCorruption()) << s.ToString();
    s = c->ReadRun(MapRun{100, 5, true, 1, 2}, 100 * kBlockSize, buf);
    EXPECT_TRUE(s.ok()) << "the block before it: " << s.ToString();
    EXPECT_EQ(got, TestSegment::BlockData(100, 1));
    // A slot no header covers (the second batch's header) is never data.
    s = c->ReadRun(MapRun{105, 1, true, 1, 7}, 105 * kBlockSize, buf);
    EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  }
}

// The summary is only a cache: without one, or with one that is damaged or
// describes another object, the cache scans the batch headers instead.
TEST_F(SegmentCacheTest, MissingOrBadSummaryFallsBackToAScan) {
  PutSegment(1, /*summary=*/false);
  PutSegment(2);
  PutSegment(3);
  PutSegment(4);
  std::string s = *mem_.Get(layout::SumName(kDir, 2));
  s[20] ^= 1;  // bad CRC
  ASSERT_TRUE(mem_.Put(layout::SumName(kDir, 2), AsBytes(s)).ok());
  ASSERT_TRUE(mem_.Put(layout::SumName(kDir, 3), AsBytes(*mem_.Get(layout::SumName(kDir, 4))))
                  .ok());  // another segment's
  // One whose table is wrong but well formed is believed: a read then fails
  // its CRC rather than return unchecked data.
  TestSegment seg4 = MakeSegment(4);
  std::string wrong = Summary(seg4, 4);
  auto dec = DecodeSegmentSummary(AsBytes(wrong));
  ASSERT_TRUE(dec.ok());
  dec->crcs[2] ^= 1;
  ASSERT_TRUE(mem_.Put(layout::SumName(kDir, 4), AsBytes(EncodeSegmentSummary(*dec))).ok());
  auto c = NewCache();
  for (uint64_t id = 1; id <= 3; id++) {
    std::string got;
    Status st = ReadAll(c.get(), id, &got);
    ASSERT_TRUE(st.ok()) << id << ": " << st.ToString();
    EXPECT_TRUE(got == Expected(id)) << id;
  }
  std::string got;
  EXPECT_TRUE(ReadAll(c.get(), 4, &got).IsCorruption());
  // The table is cached: a second read of a segment gets no summary again.
  const int gets = store_.gets;
  ASSERT_TRUE(ReadAll(c.get(), 1, &got).ok());
  EXPECT_EQ(store_.gets, gets);
}

// Open readers are bounded by the pool's capacity (one descriptor each on a
// local store), however many segments are read, and the pool is shared by
// every cache using it.
TEST_F(SegmentCacheTest, OpenReadersAreBoundedByThePoolCapacity) {
  constexpr uint64_t kSegs = 12;
  for (uint64_t id = 1; id <= kSegs; id++) PutSegment(id);
  auto a = NewCache();
  auto b =
      std::make_unique<SegmentCache>(&store_, kDir, kVolId, kSlots, nullptr, &readers_, &tables_);
  for (int round = 0; round < 2; round++) {
    for (uint64_t id = 1; id <= kSegs; id++) {
      std::string got;
      ASSERT_TRUE(ReadAll(id % 2 ? a.get() : b.get(), id, &got).ok()) << id;
      EXPECT_TRUE(got == Expected(id)) << id;
      EXPECT_LE(readers_.used(), readers_.capacity());
    }
  }
  EXPECT_EQ(readers_.used(), 4u);
  EXPECT_GT(store_.opens, int(kSegs)) << "evicted readers were reopened";
  // Recently used readers stay: reading them again opens nothing.
  const int opens = store_.opens;
  std::string got;
  ASSERT_TRUE(ReadAll(b.get(), kSegs, &got).ok());
  EXPECT_EQ(store_.opens, opens);
  // Shrinking the pool closes readers at once; a cache going away takes its
  // readers with it.
  readers_.SetCapacity(2);
  EXPECT_LE(readers_.used(), 2u);
  a.reset();
  b.reset();
  EXPECT_EQ(readers_.used(), 0u);
}

// The CRC table cache stays within its byte capacity however many segments
// are read, and evicts the least recently used table first: a table just
// read again survives a newer one's insertion, the one read longest ago does
// not (a summary Get each time a table is loaded again).
TEST_F(SegmentCacheTest, CrcTableCacheIsBoundedInBytesAndEvictsLeastRecentlyUsed) {
  constexpr uint64_t kSegs = 12;
  for (uint64_t id = 1; id <= kSegs; id++) PutSegment(id);
  auto c = NewCache();
  std::string got;
  ASSERT_TRUE(ReadAll(c.get(), 1, &got).ok());
  const uint64_t charge = tables_.used();  // every segment here has the same table size
  ASSERT_GT(charge, 0u);
  tables_.SetCapacity(3 * charge);
  for (uint64_t id = 1; id <= kSegs; id++) {
    ASSERT_TRUE(ReadAll(c.get(), id, &got).ok()) << id;
    EXPECT_TRUE(got == Expected(id)) << id;
    EXPECT_LE(tables_.used(), tables_.capacity()) << "after segment " << id;
  }
  EXPECT_EQ(tables_.used(), 3 * charge);
  // Cached now: 10, 11, 12 (12 the most recent). Touch 10, then load 1.
  auto gets = [&] { return store_.gets.load(); };
  int before = gets();
  ASSERT_TRUE(ReadAll(c.get(), 10, &got).ok());
  EXPECT_EQ(gets(), before) << "segment 10's table was cached";
  ASSERT_TRUE(ReadAll(c.get(), 1, &got).ok());
  EXPECT_EQ(gets(), before + 1) << "segment 1's table was loaded again";
  EXPECT_LE(tables_.used(), tables_.capacity());
  // 11 was the least recently used: gone. 10 (touched) and 12 stay.
  before = gets();
  ASSERT_TRUE(ReadAll(c.get(), 10, &got).ok());
  ASSERT_TRUE(ReadAll(c.get(), 1, &got).ok());
  EXPECT_EQ(gets(), before) << "10 and 1 are cached";
  ASSERT_TRUE(ReadAll(c.get(), 11, &got).ok());
  EXPECT_EQ(gets(), before + 1) << "11, the least recently used, was evicted";
  EXPECT_TRUE(got == Expected(11));
}

// The read cache (64 KiB chunks of closed segments) stays within its byte
// capacity however many segments are read through it.
TEST_F(SegmentCacheTest, ReadCacheIsBoundedInBytes) {
  constexpr uint64_t kSegs = 16;
  for (uint64_t id = 1; id <= kSegs; id++) PutSegment(id);
  const uint64_t seg_bytes = MakeSegment(1).span().size();
  auto c = NewCache(2 * seg_bytes + seg_bytes / 2);
  ReadCache* rc = read_caches_.back().get();
  std::string got;
  for (int round = 0; round < 2; round++) {
    for (uint64_t id = 1; id <= kSegs; id++) {
      ASSERT_TRUE(ReadAll(c.get(), id, &got).ok()) << id;
      EXPECT_TRUE(got == Expected(id)) << id;
      EXPECT_LE(rc->used(), rc->capacity()) << "after segment " << id;
    }
  }
  EXPECT_GT(rc->used(), 0u) << "nothing was cached";
}

// SharedLru against a model (a list, most recent first): after every Insert,
// Find, Erase and SetCapacity of a random sequence, the cache holds exactly
// the model's entries -- the most recently used ones that fit -- and never
// more bytes than its capacity.
TEST(SharedLruTest, HoldsTheMostRecentlyUsedEntriesThatFitAndNeverMoreBytes) {
  struct M {
    int owner;
    uint64_t id, charge;
  };
  std::mt19937_64 rng(5);
  SharedLru<int> lru(1000);
  uint64_t capacity = 1000;
  std::vector<M> model;  // most recent first
  int owners[2];
  auto find = [&](int owner, uint64_t id) {
    for (size_t i = 0; i < model.size(); i++) {
      if (model[i].owner == owner && model[i].id == id) return int(i);
    }
    return -1;
  };
  auto shrink = [&] {
    uint64_t used = 0;
    for (const M& m : model) used += m.charge;
    while (used > capacity && !model.empty()) {
      used -= model.back().charge;
      model.pop_back();
    }
  };
  for (int step = 0; step < 20000; step++) {
    const int owner = int(rng() % 2);
    const uint64_t id = rng() % 40;
    const int what = int(rng() % 100);
    if (what < 45) {
      const uint64_t charge = 1 + rng() % 120;
      lru.Insert(&owners[owner], id, std::make_shared<int>(int(id)), charge);
      int i = find(owner, id);
      if (i >= 0) model.erase(model.begin() + i);
      model.insert(model.begin(), M{owner, id, charge});
      shrink();
    } else if (what < 90) {
      auto v = lru.Find(&owners[owner], id);
      int i = find(owner, id);
      ASSERT_EQ(v != nullptr, i >= 0) << "step " << step << ": (" << owner << ", " << id << ")";
      if (i >= 0) {
        EXPECT_EQ(*v, int(id));
        M m = model[i];
        model.erase(model.begin() + i);
        model.insert(model.begin(), m);
      }
    } else if (what < 97) {
      lru.Erase(&owners[owner], id);
      int i = find(owner, id);
      if (i >= 0) model.erase(model.begin() + i);
    } else {
      capacity = 200 + rng() % 1200;
      lru.SetCapacity(capacity);
      shrink();
    }
    uint64_t used = 0;
    for (const M& m : model) used += m.charge;
    ASSERT_EQ(lru.used(), used) << "step " << step;
    ASSERT_LE(lru.used(), lru.capacity()) << "step " << step;
  }
  lru.EraseOwner(&owners[0]);
  uint64_t used = 0;
  for (const M& m : model) used += m.owner == 1 ? m.charge : 0;
  EXPECT_EQ(lru.used(), used);
}

// The plain cases, spelled out: the least recently used entry goes first (a
// Find makes an entry recent), a value in use outlives its eviction, and an
// entry bigger than the whole capacity is not kept.
TEST(SharedLruTest, EvictsLeastRecentlyUsedFirst) {
  SharedLru<std::string> lru(30);
  int owner = 0;
  lru.Insert(&owner, 1, std::make_shared<std::string>("a"), 10);
  lru.Insert(&owner, 2, std::make_shared<std::string>("b"), 10);
  lru.Insert(&owner, 3, std::make_shared<std::string>("c"), 10);
  std::shared_ptr<std::string> held = lru.Find(&owner, 1);  // 1 is now the most recent
  ASSERT_NE(held, nullptr);
  lru.Insert(&owner, 4, std::make_shared<std::string>("d"), 10);
  EXPECT_EQ(lru.Find(&owner, 2), nullptr) << "2 was the least recently used";
  EXPECT_NE(lru.Find(&owner, 1), nullptr);
  EXPECT_NE(lru.Find(&owner, 3), nullptr);
  EXPECT_NE(lru.Find(&owner, 4), nullptr);
  EXPECT_EQ(lru.used(), 30u);
  // Order now (most recent first): 4, 3, 1. Shrinking drops 1, then 3.
  lru.SetCapacity(10);
  EXPECT_EQ(lru.Find(&owner, 1), nullptr);
  EXPECT_EQ(lru.Find(&owner, 3), nullptr);
  EXPECT_NE(lru.Find(&owner, 4), nullptr);
  EXPECT_EQ(*held, "a") << "an evicted value in use stays alive";
  lru.Insert(&owner, 5, std::make_shared<std::string>("e"), 11);
  EXPECT_EQ(lru.used(), 0u) << "an entry bigger than the capacity is not kept";
  EXPECT_EQ(lru.Find(&owner, 5), nullptr);
}

// The default reader pool is sized from RLIMIT_NOFILE: a quarter of the soft
// limit, between kMinOpenReaders and kMaxOpenReaders.
TEST(ReaderPoolTest, DefaultCapacityIsAQuarterOfTheDescriptorLimit) {
  EXPECT_EQ(OpenReadersFor(1024), 256u);
  EXPECT_EQ(OpenReadersFor(1 << 20), kMaxOpenReaders);
  EXPECT_EQ(OpenReadersFor(400), 100u);
  EXPECT_EQ(OpenReadersFor(64), 16u);
  EXPECT_EQ(OpenReadersFor(8), kMinOpenReaders);
  EXPECT_EQ(OpenReadersFor(0), kMinOpenReaders);
  // In a fresh process (the pool is made on first use) whose soft limit is
  // 200, the process-wide pool keeps at most 50 readers open.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        rlimit nofile{};
        if (getrlimit(RLIMIT_NOFILE, &nofile) != 0 || nofile.rlim_max < 200) std::_Exit(3);
        nofile.rlim_cur = 200;
        if (setrlimit(RLIMIT_NOFILE, &nofile) != 0) std::_Exit(4);
        if (DefaultOpenReaders() != 50) std::_Exit(5);
        std::_Exit(DefaultReaderPool().capacity() == 50 ? 0 : 6);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace hbiss::volume
