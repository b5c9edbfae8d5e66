#include "volume/segment_cache.h"

#include <gtest/gtest.h>

#include <atomic>
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
    ASSERT_TRUE(mem_.Put(layout::SegName(kName, id), seg.span()).ok());
    if (summary) {
      ASSERT_TRUE(mem_.Put(layout::SumName(kName, id), AsBytes(Summary(seg, id))).ok());
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
    return std::make_unique<SegmentCache>(&store_, kName, kVolId, kSlots, rc, &readers_,
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
  ASSERT_TRUE(mem_.Put(layout::SegName(kName, 1), seg.span()).ok());
  ASSERT_TRUE(mem_.Put(layout::SumName(kName, 1), AsBytes(sum)).ok());
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
  std::string s = *mem_.Get(layout::SumName(kName, 2));
  s[20] ^= 1;  // bad CRC
  ASSERT_TRUE(mem_.Put(layout::SumName(kName, 2), AsBytes(s)).ok());
  ASSERT_TRUE(mem_.Put(layout::SumName(kName, 3), AsBytes(*mem_.Get(layout::SumName(kName, 4))))
                  .ok());  // another segment's
  // One whose table is wrong but well formed is believed: a read then fails
  // its CRC rather than return unchecked data.
  TestSegment seg4 = MakeSegment(4);
  std::string wrong = Summary(seg4, 4);
  auto dec = DecodeSegmentSummary(AsBytes(wrong));
  ASSERT_TRUE(dec.ok());
  dec->crcs[2] ^= 1;
  ASSERT_TRUE(mem_.Put(layout::SumName(kName, 4), AsBytes(EncodeSegmentSummary(*dec))).ok());
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
      std::make_unique<SegmentCache>(&store_, kName, kVolId, kSlots, nullptr, &readers_, &tables_);
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

}  // namespace
}  // namespace hbiss::volume
