#include "volume/relog.h"

#include <gtest/gtest.h>

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "store/fault_injection_store.h"
#include "store/memory_store.h"
#include "store/store_wrapper.h"
#include "volume/batch_builder.h"
#include "volume/extent_map.h"
#include "volume/layout.h"
#include "volume/log_reader.h"
#include "volume/log_writer.h"
#include "volume/memory_budget.h"
#include "volume/test_segment.h"

namespace hbiss::volume {
namespace {

using store::FaultInjectionStore;
using W = TestSegment;

constexpr uint64_t kVolId = 0x5e1;
const std::string kName = "rl";
const layout::LogDir kDir = layout::EpochDir(kName, 1);
// Two buffer chunks, so that batches can straddle them.
constexpr uint32_t kSlots = 2 * MemSegment::kChunkSlots;
constexpr uint64_t kBlocks = 4096;

// Fails the next `fail_put` Puts with NoSpace (a full device), without
// passing them on.
class FullStore : public store::StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  int fail_put = 0;
  Status Put(const std::string& name, std::span<const uint8_t> data) override {
    if (fail_put > 0) {
      fail_put--;
      return Status::NoSpace("injected: put " + name);
    }
    return StoreWrapper::Put(name, data);
  }
};

// A minimal write path over one MemSegment, as the volume's is: a
// BatchBuilder opens a batch at the next slot, takes the pieces it fits,
// and sealed batches go to `queue`. It records the calls it gets in
// `trace`, and fails the `fail_at`-th Write or Unmap (counting from 1) with
// NoSpace.
class TestPath final : public RelogSink {
 public:
  explicit TestPath(std::shared_ptr<MemSegment> seg, uint64_t first_seq)
      : seg(std::move(seg)), next_seq(first_seq) {}

  void BeginOp() override {
    trace += "B";
    b.BeginOp();
  }
  void EndOp() override {
    trace += "E";
    b.EndOp();
  }
  Status Write(uint64_t lba, uint32_t n, const uint8_t* data, bool last_part) override {
    // Piece by piece: GCC 12 at -O3 warns (-Wrestrict, falsely) on "W" + std::string.
    trace += 'W';
    trace += std::to_string(lba);
    trace += last_part ? '.' : '+';
    if (++calls == fail_at) return Status::NoSpace("injected: write");
    while (n > 0) {
      Open();
      const uint32_t k = b.WriteRoom(lba, n, last_part, seg->slots - seg->used);
      if (k == 0) {
        Seal();
        continue;
      }
      uint64_t reserved = 0;
      HBISS_RETURN_IF_ERROR(seg->Grow(seg->used + k, &reserved));
      HBISS_RETURN_IF_ERROR(b.AddWrite(lba, k, last_part && k == n));
      seg->CopyIn(seg->used, data, k);
      seg->used += k;
      n -= k;
      lba += k;
      data += size_t(k) * kSlotSize;
    }
    return Status::OK();
  }
  Status Unmap(EntryType type, uint64_t lba, uint64_t n, bool last_part) override {
    // Piece by piece: GCC 12 at -O3 warns (-Wrestrict, falsely) on "W" + std::string.
    trace += 'U';
    trace += std::to_string(lba);
    trace += last_part ? '.' : '+';
    if (++calls == fail_at) return Status::NoSpace("injected: unmap");
    while (n > 0) {
      Open();
      const uint64_t k = b.UnmapRoom(type, lba, n, last_part);
      if (k == 0) {
        Seal();
        continue;
      }
      HBISS_RETURN_IF_ERROR(b.AddUnmap(type, lba, k, last_part && k == n));
      n -= k;
      lba += k;
    }
    return Status::OK();
  }
  void SealBatch() override {
    trace += "S";
    Seal();
  }

  std::shared_ptr<MemSegment> seg;
  uint64_t next_seq;
  BatchBuilder b;
  std::deque<QueueItem> queue;
  std::string trace;
  int calls = 0;
  int fail_at = 0;

 private:
  void Open() {
    if (b.active()) return;
    uint64_t reserved = 0;
    EXPECT_TRUE(seg->Grow(seg->used + 1, &reserved).ok());
    b.Start(seg->used++, next_seq++);
  }
  void Seal() {
    if (!b.active()) return;
    queue.push_back(QueueItem::Sealed(seg, b.Seal()));
  }
};

class RelogTest : public ::testing::Test {
 protected:
  RelogTest() : fis_(&mem_, 7), full_(&fis_) {
    // The epoch's owner object, which a re-log checks for after its Put.
    EXPECT_TRUE(mem_.Put(layout::OwnerName(kDir), {}).ok());
  }

  std::shared_ptr<MemSegment> NewSeg(uint64_t id, uint64_t first_seq, LogPosition prev,
                                     uint32_t flags = 0) {
    SegmentHeader h;
    h.volume_id = kVolId;
    h.segment_id = id;
    h.prev_segment_id = prev.segment_id;
    h.prev_segment_end = prev.offset;
    h.first_seq = first_seq;
    h.flags = flags;
    return MemSegment::New(&budget_, kSlots, h);
  }

  // Fills the next slots of `seg` as a sealed batch of `entries` whose
  // WRITE blocks hold BlockData(lba, version), and returns its item.
  static QueueItem AddBatch(const std::shared_ptr<MemSegment>& seg, uint64_t seq,
                            std::vector<BatchEntry> entries, uint64_t version) {
    QueueItem item;
    item.seg = seg;
    item.header_slot = seg->used;
    item.seq = seq;
    for (const BatchEntry& e : entries) {
      if (e.type == EntryType::kWrite) item.data_slots += e.count;
    }
    item.entries = std::move(entries);
    uint64_t reserved = 0;
    EXPECT_TRUE(seg->Grow(seg->used + 1 + item.data_slots, &reserved).ok());
    uint32_t slot = item.header_slot + 1;
    for (const BatchEntry& e : item.entries) {
      if (e.type != EntryType::kWrite) continue;
      for (uint64_t b = e.lba; b < e.lba + e.count; b++) {
        const std::string d = W::BlockData(b, version);
        seg->CopyIn(slot++, reinterpret_cast<const uint8_t*>(d.data()), 1);
      }
    }
    seg->used += 1 + item.data_slots;
    return item;
  }

  std::string Object(uint64_t id) {
    auto r = mem_.Get(layout::SegName(kDir, id));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::string();
  }

  // Every batch header of segment `id` in the store, in order.
  std::vector<BatchHeader> Headers(uint64_t id) {
    std::vector<BatchHeader> out;
    auto r = mem_.Open(layout::SegName(kDir, id));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return out;
    auto scan = ScanBatchHeaders(r->get(), kVolId, id, kSlots, "test",
                                 [&](uint64_t, const BatchHeader& h) { out.push_back(h); });
    EXPECT_TRUE(scan.ok()) << scan.status().ToString();
    if (scan.ok()) {
      EXPECT_TRUE(scan->at_end);
    }
    return out;
  }

  // Replays segment `id` as the last segment, from its first batch
  // `first_seq`, onto a fresh map_; returns its end and keeps the replayer's
  // tail in tail_.
  uint64_t Replay(uint64_t id, uint64_t first_seq, uint64_t* next_seq = nullptr) {
    map_ = std::make_unique<ExtentMap>(kBlocks);
    auto r = mem_.Open(layout::SegName(kDir, id));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return 0;
    LogReplayer rp(kVolId, kSlots, kName, map_.get());
    uint64_t seq = first_seq, end = 0;
    Status s = rp.ReplaySegment(r->get(), id, kSlotSize, nullptr, &seq, &end);
    EXPECT_TRUE(s.ok()) << s.ToString();
    if (next_seq != nullptr) *next_seq = seq;
    tail_proven_ = rp.tail_proven();
    tail_ = rp.TakeTailBatches();
    return end;
  }

  // Where block `lba` is mapped (seg 0: not mapped).
  MapRun Where(uint64_t lba) {
    std::vector<MapRun> runs;
    EXPECT_TRUE(map_->Lookup(lba, 1, &runs).ok());
    return runs.empty() ? MapRun{} : runs[0];
  }
  // Whether the object of segment `id` holds BlockData(lba, version) where
  // the map puts lba.
  void ExpectBlock(uint64_t id, uint64_t lba, uint64_t version) {
    const MapRun r = Where(lba);
    ASSERT_TRUE(r.mapped) << "block " << lba;
    ASSERT_EQ(r.seg, id) << "block " << lba;
    const std::string obj = Object(id);
    ASSERT_GE(obj.size(), (uint64_t(r.slot) + 1) * kSlotSize);
    EXPECT_EQ(obj.substr(uint64_t(r.slot) * kSlotSize, kSlotSize), W::BlockData(lba, version))
        << "block " << lba;
  }

  MemoryBudget budget_{64 << 20};
  store::MemoryStore mem_;
  FaultInjectionStore fis_;
  FullStore full_;  // full_ -> fis_ -> mem_
  std::unique_ptr<ExtentMap> map_;
  std::vector<TailBatch> tail_;
  uint64_t tail_proven_ = 0;
};

// The NoSpace retry's shape: the batches after the durable position are in
// memory (one straddles the chunk boundary, an operation spans two
// batches); they are logged again into a fresh segment that follows the
// durable position, which the log writer appends and syncs. The log reader
// decodes the result: the new segment names the durable position and the
// first seq, the batches are numbered on from it with the same entries and
// continue flags, and the map points at the new copies.
TEST_F(RelogTest, InMemoryBatchesLoggedAgainDecodeWithTheLogReader) {
  const LogPosition durable{3, 9 * kSlotSize};
  auto old = NewSeg(4, 20, durable);
  // Move the next batch across the chunk boundary.
  old->used = MemSegment::kChunkSlots - 3;
  std::vector<QueueItem> items;
  items.push_back(AddBatch(old, 20, {W::Write(100, 6)}, 1));  // straddles chunks
  items.push_back(AddBatch(old, 21, {W::Trim(7, 4), W::Write(200, 2, /*continues=*/true)}, 1));
  items.push_back(AddBatch(old, 22, {W::Write(202, 1), W::Write(300, 1)}, 1));
  std::vector<RelogBatch> batches;
  for (const QueueItem& item : items) batches.push_back(RelogBatch::InMemory(item));

  auto fresh = NewSeg(5, 20, durable);
  TestPath path(fresh, 20);
  auto n = RelogBatches(batches, RelogUpTo::kEverything, "test", &path);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 5u);
  // One operation per complete run of entries; a seal after each old batch.
  EXPECT_EQ(path.trace, "BW100.ESBU7.EBW200+SW202.EBW300.ES");
  ASSERT_EQ(path.queue.size(), 3u);

  LogWriter log(&full_, kDir, kVolId);
  log.Restart(durable, 19);
  for (QueueItem& item : path.queue) ASSERT_TRUE(log.Append(item).ok());
  ASSERT_TRUE(log.Sync().ok());

  const std::string obj = Object(5);
  auto sh = DecodeSegmentHeader(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(obj.data()), kSlotSize));
  ASSERT_TRUE(sh.ok()) << sh.status().ToString();
  EXPECT_EQ(sh->prev_segment_id, durable.segment_id);
  EXPECT_EQ(sh->prev_segment_end, durable.offset);
  EXPECT_EQ(sh->first_seq, 20u);

  const std::vector<BatchHeader> hs = Headers(5);
  ASSERT_EQ(hs.size(), 3u);
  for (size_t i = 0; i < hs.size(); i++) {
    EXPECT_EQ(hs[i].seq, 20 + i);
    EXPECT_EQ(hs[i].synced_upto, durable) << "batch " << i;
    ASSERT_EQ(hs[i].entries.size(), items[i].entries.size()) << "batch " << i;
    for (size_t j = 0; j < hs[i].entries.size(); j++) {
      const BatchEntry& a = hs[i].entries[j];
      const BatchEntry& b = items[i].entries[j];
      EXPECT_EQ(a.type, b.type);
      EXPECT_EQ(a.lba, b.lba);
      EXPECT_EQ(a.count, b.count);
      EXPECT_EQ(a.continues, b.continues) << "batch " << i << " entry " << j;
    }
  }
  uint64_t next = 0;
  EXPECT_EQ(Replay(5, 20, &next), obj.size());
  EXPECT_EQ(next, 23u);
  for (uint64_t b = 100; b < 106; b++) ExpectBlock(5, b, 1);
  ExpectBlock(5, 200, 1);
  ExpectBlock(5, 201, 1);
  ExpectBlock(5, 202, 1);
  ExpectBlock(5, 300, 1);
}

// Recovery's shape: the tail of the last segment, as the replayer kept it,
// is read again from the store, logged again up to its last complete
// operation (the trailing one whose end never arrived is dropped), and
// Put whole as the re-log segment. Every batch of it says the whole segment
// is durable, so a later recovery finds it proven.
TEST_F(RelogTest, StoreTailLoggedAgainIsPutWholeAndProven) {
  TestSegment last(kVolId, 1, 1);
  last.AddBatch({W::Write(0, 2)}, 4);
  last.AddBatch({W::Write(10, 1, /*continues=*/true)}, 4);
  last.AddBatch({W::Write(11, 1), W::Trim(20, 3)}, 4);
  last.AddBatch({W::Write(30, 1, /*continues=*/true)}, 4);  // incomplete
  ASSERT_TRUE(mem_.Put(layout::SegName(kDir, 1), last.span()).ok());
  Replay(1, 1);
  ASSERT_EQ(tail_.size(), 4u);

  auto reader = mem_.Open(layout::SegName(kDir, 1));
  ASSERT_TRUE(reader.ok());
  std::vector<RelogBatch> batches;
  for (const TailBatch& t : tail_) batches.push_back(RelogBatch::InStore(reader->get(), t));
  // Segment 2 continues from the segment before 1 (nothing in 1 proven).
  auto seg = NewSeg(2, 1, LogPosition{0, 0});
  TestPath path(seg, 1);
  const RelogUpTo opts = RelogUpTo::kLastCompleteOperation;
  auto n = RelogBatches(batches, opts, "test", &path);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 4u);
  EXPECT_EQ(path.trace, "BW0.ESBW10+SW11.EBU20.ES");  // batch 4 not reached
  ASSERT_EQ(path.queue.size(), 3u);

  auto put = PutRelogSegment(&full_, kDir, kVolId, seg.get(), &path.queue);
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  const uint64_t end = uint64_t(seg->used) * kSlotSize;
  EXPECT_EQ(*put, end);
  EXPECT_EQ(Object(2).size(), end);
  for (uint32_t s = 2; s < 4; s++) EXPECT_TRUE(seg->valid[s]) << "slot " << s;

  const std::vector<BatchHeader> hs = Headers(2);
  ASSERT_EQ(hs.size(), 3u);
  for (size_t i = 0; i < hs.size(); i++) {
    EXPECT_EQ(hs[i].seq, 1 + i);
    EXPECT_EQ(hs[i].synced_upto, (LogPosition{2, end})) << "batch " << i;
  }
  ASSERT_EQ(hs[1].entries.size(), 1u);
  EXPECT_TRUE(hs[1].entries[0].continues);
  uint64_t next = 0;
  EXPECT_EQ(Replay(2, 1, &next), end);
  EXPECT_EQ(next, 4u);
  EXPECT_EQ(tail_proven_, end);  // a later recovery logs none of it again
  ExpectBlock(2, 0, 4);
  ExpectBlock(2, 1, 4);
  ExpectBlock(2, 10, 4);
  ExpectBlock(2, 11, 4);
  EXPECT_FALSE(Where(20).mapped);
  EXPECT_FALSE(Where(30).mapped);
}

// An operation begun before the first batch (recovery's relog_pending) is
// continued: the sink's operation begins at its first entry here and its
// first complete entry ends it; a list in which nothing ends an operation
// logs nothing.
TEST_F(RelogTest, PendingOperationIsContinuedNotStarted) {
  auto old = NewSeg(4, 8, LogPosition{3, kSlotSize});
  std::vector<QueueItem> items;
  items.push_back(AddBatch(old, 8, {W::Write(50, 1, true)}, 2));
  items.push_back(AddBatch(old, 9, {W::Write(51, 1), W::Write(60, 1)}, 2));
  std::vector<RelogBatch> batches;
  for (const QueueItem& item : items) batches.push_back(RelogBatch::InMemory(item));
  TestPath path(NewSeg(5, 8, LogPosition{3, kSlotSize}), 8);
  const RelogUpTo opts = RelogUpTo::kLastCompleteOperation;
  auto n = RelogBatches(batches, opts, "test", &path);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(path.trace, "BW50+SW51.EBW60.ES");

  // Nothing that ends an operation: nothing is logged, the sink is not called.
  std::vector<RelogBatch> first_only(batches.begin(), batches.begin() + 1);
  TestPath none(NewSeg(6, 8, LogPosition{3, kSlotSize}), 8);
  auto z = RelogBatches(first_only, opts, "test", &none);
  ASSERT_TRUE(z.ok());
  EXPECT_EQ(*z, 0u);
  EXPECT_EQ(none.trace, "");
}

// Bytes read again from the store are checked against the CRCs replay saw:
// a block changed since fails the re-log with Corruption, never logs it.
TEST_F(RelogTest, StoreBatchWhoseDataChangedIsCorruption) {
  TestSegment last(kVolId, 1, 1);
  last.AddBatch({W::Write(0, 3)}, 1);
  ASSERT_TRUE(mem_.Put(layout::SegName(kDir, 1), last.span()).ok());
  Replay(1, 1);
  ASSERT_EQ(tail_.size(), 1u);
  std::string bytes = last.bytes();
  bytes[3 * kSlotSize + 17] ^= 1;  // the second data slot (slot 3)
  ASSERT_TRUE(mem_.Put(layout::SegName(kDir, 1),
                       std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()),
                                                bytes.size()))
                  .ok());
  auto reader = mem_.Open(layout::SegName(kDir, 1));
  ASSERT_TRUE(reader.ok());
  const RelogBatch b = RelogBatch::InStore(reader->get(), tail_[0]);
  TestPath path(NewSeg(2, 1, LogPosition{0, 0}), 1);
  const RelogUpTo opts = RelogUpTo::kLastCompleteOperation;
  auto n = RelogBatches(std::span<const RelogBatch>(&b, 1), opts, "seg 1", &path);
  ASSERT_FALSE(n.ok());
  EXPECT_TRUE(n.status().IsCorruption()) << n.status().ToString();
  EXPECT_NE(n.status().message().find("CRC mismatch re-reading slot 3"), std::string::npos)
      << n.status().ToString();
  EXPECT_TRUE(path.queue.empty());
}

// A NoSpace in the middle of the re-log stops it with the operation ended
// and the old batches untouched, so the retry (a fresh segment) logs them
// all again, the same as a re-log that never failed.
TEST_F(RelogTest, NoSpaceInTheMiddleOfTheRelogLeavesItRetryable) {
  const LogPosition durable{3, 9 * kSlotSize};
  auto old = NewSeg(4, 20, durable);
  std::vector<QueueItem> items;
  items.push_back(AddBatch(old, 20, {W::Write(100, 2)}, 1));
  items.push_back(AddBatch(old, 21, {W::Write(200, 2, true)}, 1));
  items.push_back(AddBatch(old, 22, {W::Write(202, 1)}, 1));
  std::vector<RelogBatch> batches;
  for (const QueueItem& item : items) batches.push_back(RelogBatch::InMemory(item));

  TestPath failing(NewSeg(5, 20, durable), 20);
  failing.fail_at = 3;  // the write of block 202, inside an operation
  auto n = RelogBatches(batches, RelogUpTo::kEverything, "test", &failing);
  ASSERT_FALSE(n.ok());
  EXPECT_TRUE(n.status().IsNoSpace()) << n.status().ToString();
  EXPECT_EQ(failing.trace, "BW100.ESBW200+SW202.E");  // the operation ended
  EXPECT_FALSE(failing.b.op_in_progress());

  auto fresh = NewSeg(6, 20, durable);
  TestPath retry(fresh, 20);
  ASSERT_TRUE(RelogBatches(batches, RelogUpTo::kEverything, "test", &retry).ok());
  EXPECT_EQ(retry.trace, "BW100.ESBW200+SW202.ES");
  ASSERT_EQ(retry.queue.size(), 3u);
  LogWriter log(&full_, kDir, kVolId);
  log.Restart(durable, 19);
  for (QueueItem& item : retry.queue) ASSERT_TRUE(log.Append(item).ok());
  ASSERT_TRUE(log.Sync().ok());
  EXPECT_EQ(Replay(6, 20), Object(6).size());
  ExpectBlock(6, 100, 1);
  ExpectBlock(6, 101, 1);
  ExpectBlock(6, 200, 1);
  ExpectBlock(6, 202, 1);
}

// A NoSpace from the re-log segment's Put leaves nothing in the store and
// the queued batches as they were: the second Put (after the volume gave
// up its space reserve) writes the segment whole, with every entry.
TEST_F(RelogTest, NoSpaceFromThePutLeavesItRetryable) {
  auto seg = NewSeg(2, 5, LogPosition{1, 4 * kSlotSize});
  TestPath path(seg, 5);
  const std::string d0 = W::BlockData(0, 1), d1 = W::BlockData(1, 1);
  path.BeginOp();
  ASSERT_TRUE(path.Write(0, 1, reinterpret_cast<const uint8_t*>(d0.data()), true).ok());
  path.EndOp();
  path.SealBatch();
  path.BeginOp();
  ASSERT_TRUE(path.Unmap(EntryType::kZero, 40, 8, false).ok());
  ASSERT_TRUE(path.Write(1, 1, reinterpret_cast<const uint8_t*>(d1.data()), true).ok());
  path.EndOp();
  path.SealBatch();
  ASSERT_EQ(path.queue.size(), 2u);

  full_.fail_put = 1;
  auto put = PutRelogSegment(&full_, kDir, kVolId, seg.get(), &path.queue);
  ASSERT_FALSE(put.ok());
  EXPECT_TRUE(put.status().IsNoSpace()) << put.status().ToString();
  EXPECT_FALSE(mem_.Stat(layout::SegName(kDir, 2)).ok());
  ASSERT_EQ(path.queue.size(), 2u);
  EXPECT_EQ(path.queue[1].entries.size(), 2u);
  for (uint32_t s = 0; s < kSlots; s++) ASSERT_FALSE(seg->valid[s]) << "slot " << s;

  put = PutRelogSegment(&full_, kDir, kVolId, seg.get(), &path.queue);
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  const std::vector<BatchHeader> hs = Headers(2);
  ASSERT_EQ(hs.size(), 2u);
  EXPECT_EQ(hs[0].seq, 5u);
  EXPECT_EQ(hs[1].seq, 6u);
  ASSERT_EQ(hs[1].entries.size(), 2u);
  EXPECT_EQ(hs[1].entries[0].type, EntryType::kZero);
  Replay(2, 5);
  ExpectBlock(2, 0, 1);
  ExpectBlock(2, 1, 1);
}

// PutRelogSegment writes a whole segment only: a queue that leaves a gap,
// holds a marker or ends before the segment does is refused.
TEST_F(RelogTest, PutRefusesAQueueThatIsNotTheWholeSegment) {
  auto seg = NewSeg(2, 5, LogPosition{1, 4 * kSlotSize});
  TestPath path(seg, 5);
  const std::string d0 = W::BlockData(0, 1);
  for (int i = 0; i < 2; i++) {
    path.BeginOp();
    ASSERT_TRUE(path.Write(uint64_t(i), 1, reinterpret_cast<const uint8_t*>(d0.data()), true)
                    .ok());
    path.EndOp();
    path.SealBatch();
  }
  std::deque<QueueItem> first_only{path.queue[0]};
  auto put = PutRelogSegment(&full_, kDir, kVolId, seg.get(), &first_only);
  EXPECT_TRUE(put.status().IsCorruption()) << put.status().ToString();
  std::deque<QueueItem> second_only{path.queue[1]};
  put = PutRelogSegment(&full_, kDir, kVolId, seg.get(), &second_only);
  EXPECT_TRUE(put.status().IsCorruption()) << put.status().ToString();
  std::deque<QueueItem> empty;
  put = PutRelogSegment(&full_, kDir, kVolId, seg.get(), &empty);
  EXPECT_TRUE(put.status().IsCorruption()) << put.status().ToString();
  EXPECT_FALSE(mem_.Stat(layout::SegName(kDir, 2)).ok());
  ASSERT_TRUE(PutRelogSegment(&full_, kDir, kVolId, seg.get(), &path.queue).ok());
}

}  // namespace
}  // namespace hbiss::volume
