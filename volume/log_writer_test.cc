#include "volume/log_writer.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "store/fault_injection_store.h"
#include "store/memory_store.h"
#include "store/store_wrapper.h"
#include "volume/extent_map.h"
#include "volume/layout.h"
#include "volume/log_reader.h"
#include "volume/memory_budget.h"
#include "volume/test_segment.h"

namespace hbiss::volume {
namespace {

using store::FaultInjectionStore;

constexpr uint64_t kVolId = 0x10c;
const std::string kName = "lw";
const layout::LogDir kDir = layout::EpochDir(kName, 1);
// Two buffer chunks, so that a batch can straddle them.
constexpr uint32_t kSlots = 2 * MemSegment::kChunkSlots;

// Fails the next calls of Create, of a writer's Append, or of its Sync with
// NoSpace (a full device), without passing them on.
class NoSpaceStore : public store::StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;

  int fail_create = 0;
  int fail_append = 0;
  int fail_sync = 0;

  Result<std::unique_ptr<store::SegmentWriter>> Create(const std::string& name) override {
    if (Take(&fail_create)) return Status::NoSpace("injected: create " + name);
    HBISS_ASSIGN_OR_RETURN(auto w, StoreWrapper::Create(name));
    return std::unique_ptr<store::SegmentWriter>(std::make_unique<Writer>(std::move(w), this));
  }

 private:
  static bool Take(int* n) {
    if (*n == 0) return false;
    (*n)--;
    return true;
  }
  class Writer : public store::SegmentWriterWrapper {
   public:
    Writer(std::unique_ptr<store::SegmentWriter> w, NoSpaceStore* s)
        : SegmentWriterWrapper(std::move(w)), s_(s) {}
    Status Append(std::span<const uint8_t> data) override {
      if (Take(&s_->fail_append)) return Status::NoSpace("injected: append");
      return SegmentWriterWrapper::Append(data);
    }
    Status Sync() override {
      if (Take(&s_->fail_sync)) return Status::NoSpace("injected: sync");
      return SegmentWriterWrapper::Sync();
    }

   private:
    NoSpaceStore* const s_;
  };
};

class LogWriterTest : public ::testing::Test {
 protected:
  // The log writer writes through nospace_ -> fis_ -> mem_.
  LogWriterTest() : fis_(&mem_, 1), nospace_(&fis_), log_(&nospace_, kDir, kVolId) {
    log_.Restart(kStart, kStartSeq);
  }

  // A segment that follows segment `prev_id`, ending at `prev_end`.
  std::shared_ptr<MemSegment> NewSeg(uint64_t id, uint64_t first_seq,
                                     LogPosition prev = kStart) {
    SegmentHeader h;
    h.volume_id = kVolId;
    h.segment_id = id;
    h.prev_segment_id = prev.segment_id;
    h.prev_segment_end = prev.offset;
    h.first_seq = first_seq;
    return MemSegment::New(&budget_, kSlots, h);
  }

  // Fills the next 1 + n slots of seg as a sealed batch writing blocks
  // [lba, lba + n) with TestSegment::BlockData(block, seq), as the write
  // path does, and returns its queue item.
  static QueueItem AddBatch(const std::shared_ptr<MemSegment>& seg, uint64_t seq, uint64_t lba,
                            uint32_t n) {
    QueueItem item;
    item.seg = seg;
    item.header_slot = seg->used;
    item.data_slots = n;
    item.seq = seq;
    item.entries = {TestSegment::Write(lba, n)};
    uint64_t reserved = 0;
    EXPECT_TRUE(seg->Grow(seg->used + 1 + n, &reserved).ok());
    for (uint32_t i = 0; i < n; i++) {
      const std::string d = TestSegment::BlockData(lba + i, seq);
      seg->CopyIn(item.header_slot + 1 + i, reinterpret_cast<const uint8_t*>(d.data()), 1);
    }
    seg->used += 1 + n;
    return item;
  }

  static std::string Obj(uint64_t id) { return layout::SegName(kDir, id); }
  std::string Object(uint64_t id) {
    auto r = mem_.Get(Obj(id));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::string();
  }
  static std::span<const uint8_t> SlotOf(const std::string& obj, uint64_t slot) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(obj.data()) + slot * kSlotSize,
                                    kSlotSize);
  }
  // The batch header in slot `slot` of an object, decoded and checked.
  static BatchHeader HeaderAt(const std::string& obj, uint64_t slot) {
    BatchHeader h;
    EXPECT_GE(obj.size(), (slot + 1) * kSlotSize);
    if (obj.size() < (slot + 1) * kSlotSize) return h;
    Status s = DecodeBatchHeader(SlotOf(obj, slot), &h);
    EXPECT_TRUE(s.ok()) << "slot " << slot << ": " << s.ToString();
    return h;
  }
  // Checks that the object holds batch `item` as written: its header with
  // seq, ids, entries and synced_upto, its data slots with their CRCs.
  static void ExpectBatch(const std::string& obj, const QueueItem& item, uint64_t lba,
                          LogPosition synced_upto) {
    const BatchHeader h = HeaderAt(obj, item.header_slot);
    EXPECT_EQ(h.volume_id, kVolId);
    EXPECT_EQ(h.segment_id, item.seg->id);
    EXPECT_EQ(h.seq, item.seq);
    EXPECT_EQ(h.synced_upto, synced_upto) << "batch " << item.seq;
    ASSERT_EQ(h.entries.size(), 1u);
    EXPECT_EQ(h.entries[0].lba, lba);
    EXPECT_EQ(h.entries[0].count, item.data_slots);
    ASSERT_EQ(h.data_crcs.size(), item.data_slots);
    for (uint32_t i = 0; i < item.data_slots; i++) {
      const uint64_t slot = item.header_slot + 1 + i;
      ASSERT_GE(obj.size(), (slot + 1) * kSlotSize);
      EXPECT_EQ(obj.substr(slot * kSlotSize, kSlotSize), TestSegment::BlockData(lba + i, item.seq))
          << "data slot " << slot;
      EXPECT_EQ(h.data_crcs[i], DataSlotCrc(SlotOf(obj, slot).data())) << "data slot " << slot;
    }
  }
  static LogPosition EndOf(const QueueItem& item) {
    return {item.seg->id, uint64_t(item.header_slot + 1 + item.data_slots) * kSlotSize};
  }

  // Segment 2 follows segment 1, which ends at 5 slots; batches up to seq
  // 6 are in it, and durable.
  static constexpr LogPosition kStart{1, 5 * kSlotSize};
  static constexpr uint64_t kStartSeq = 6;

  MemoryBudget budget_{64 << 20};
  store::MemoryStore mem_;
  FaultInjectionStore fis_;
  NoSpaceStore nospace_;
  LogWriter log_;
};

TEST_F(LogWriterTest, WritesTheHeaderSlotThenEachBatchAsTheLogFormatSays) {
  auto seg = NewSeg(2, 7);
  QueueItem a = AddBatch(seg, 7, 100, 3);
  QueueItem b = AddBatch(seg, 8, 200, 1);
  const QueueItem a_copy = a, b_copy = b;
  ASSERT_TRUE(log_.Append(a).ok());
  EXPECT_TRUE(log_.open());
  EXPECT_EQ(log_.segment_id(), 2u);
  ASSERT_TRUE(log_.Append(b).ok());
  EXPECT_EQ(log_.appended_pos(), EndOf(b_copy));
  EXPECT_EQ(log_.appended_seq(), 8u);
  const LogWriter::Appended n = log_.TakeAppended();
  EXPECT_EQ(n.segment_files, 1u);
  EXPECT_EQ(n.bytes, (1 + 4 + 2) * uint64_t{kSlotSize});
  EXPECT_EQ(log_.TakeAppended().bytes, 0u);  // taken

  // A memory store shows appended bytes at once.
  const std::string obj = Object(2);
  ASSERT_EQ(obj.size(), 7u * kSlotSize);
  EXPECT_EQ(obj.substr(0, kSlotSize),
            std::string(reinterpret_cast<const char*>(seg->Slot(0)), kSlotSize));
  auto sh = DecodeSegmentHeader(SlotOf(obj, 0));
  ASSERT_TRUE(sh.ok());
  EXPECT_EQ(sh->segment_id, 2u);
  EXPECT_EQ(sh->prev_segment_id, kStart.segment_id);
  EXPECT_EQ(sh->prev_segment_end, kStart.offset);
  ExpectBatch(obj, a_copy, 100, kStart);
  ExpectBatch(obj, b_copy, 200, kStart);

  // The log reader finds both batches and the object's end.
  auto reader = mem_.Open(Obj(2));
  ASSERT_TRUE(reader.ok());
  std::vector<uint64_t> seqs;
  auto scan = ScanBatchHeaders(reader->get(), kVolId, 2, kSlots, "seg 2",
                               [&](uint64_t, const BatchHeader& h) { seqs.push_back(h.seq); });
  ASSERT_TRUE(scan.ok()) << scan.status().ToString();
  EXPECT_EQ(seqs, (std::vector<uint64_t>{7, 8}));
  EXPECT_TRUE(scan->at_end);
  EXPECT_EQ(scan->offset, obj.size());

  // The segment's CRC table: what its summary and the read side use.
  for (uint32_t s = 0; s < 7; s++) {
    const bool data = s >= 2 && s != 5;
    EXPECT_EQ(seg->valid[s], data) << "slot " << s;
    EXPECT_EQ(seg->crcs[s], data ? DataSlotCrc(seg->Slot(s)) : 0u) << "slot " << s;
  }
  // Appended, not synced: kept, with their entries, for a re-log.
  ASSERT_EQ(log_.unsynced().size(), 2u);
  EXPECT_EQ(log_.unsynced()[0].seq, 7u);
  EXPECT_EQ(log_.unsynced()[1].entries.size(), 1u);
  EXPECT_EQ(log_.durable_pos(), kStart);
}

TEST_F(LogWriterTest, SyncedUptoAdvancesOnlyAfterASync) {
  auto seg = NewSeg(2, 7);
  QueueItem a = AddBatch(seg, 7, 0, 1);
  QueueItem b = AddBatch(seg, 8, 1, 2);
  QueueItem c = AddBatch(seg, 9, 3, 1);
  QueueItem d = AddBatch(seg, 10, 4, 1);
  const QueueItem a_copy = a, b_copy = b, c_copy = c, d_copy = d;
  ASSERT_TRUE(log_.Append(a).ok());
  ASSERT_TRUE(log_.Append(b).ok());
  EXPECT_EQ(log_.durable_pos(), kStart);
  EXPECT_EQ(fis_.Tracked(Obj(2))->synced, 0u);
  ASSERT_TRUE(log_.Sync().ok());
  EXPECT_EQ(log_.durable_pos(), EndOf(b_copy));
  EXPECT_TRUE(log_.unsynced().empty());
  EXPECT_EQ(fis_.Tracked(Obj(2))->synced, EndOf(b_copy).offset);
  ASSERT_TRUE(log_.Append(c).ok());
  ASSERT_TRUE(log_.Append(d).ok());
  EXPECT_EQ(log_.unsynced().size(), 2u);

  const std::string obj = Object(2);
  ExpectBatch(obj, a_copy, 0, kStart);
  ExpectBatch(obj, b_copy, 1, kStart);
  ExpectBatch(obj, c_copy, 3, EndOf(b_copy));
  ExpectBatch(obj, d_copy, 4, EndOf(b_copy));
}

TEST_F(LogWriterTest, BatchSpanningTwoChunksIsWrittenContiguously) {
  auto seg = NewSeg(2, 7);
  // Slots 1..241, then a batch in slots 242..261: chunk 0 ends at slot 255.
  QueueItem a = AddBatch(seg, 7, 0, 240);
  QueueItem b = AddBatch(seg, 8, 1000, 19);
  ASSERT_LT(b.header_slot, MemSegment::kChunkSlots);
  ASSERT_GT(b.header_slot + b.data_slots, MemSegment::kChunkSlots);
  ASSERT_EQ(seg->chunks.size(), 2u);
  const QueueItem a_copy = a, b_copy = b;
  ASSERT_TRUE(log_.Append(a).ok());
  ASSERT_TRUE(log_.Append(b).ok());
  const std::string obj = Object(2);
  ASSERT_EQ(obj.size(), EndOf(b_copy).offset);
  ExpectBatch(obj, a_copy, 0, kStart);
  ExpectBatch(obj, b_copy, 1000, kStart);
}

TEST_F(LogWriterTest, EndSegmentClosesItAndNotesItsSize) {
  auto seg = NewSeg(2, 7);
  QueueItem a = AddBatch(seg, 7, 0, 2);
  const LogPosition end = EndOf(a);
  ASSERT_TRUE(log_.Append(a).ok());
  // The marker of a segment that is not open changes nothing.
  auto other = NewSeg(9, 7);
  ASSERT_TRUE(log_.EndSegment(other.get()).ok());
  EXPECT_EQ(other->closed_bytes, 0u);
  EXPECT_TRUE(log_.open());

  ASSERT_TRUE(log_.EndSegment(seg.get()).ok());
  EXPECT_EQ(seg->closed_bytes, end.offset);
  EXPECT_FALSE(log_.open());
  EXPECT_EQ(log_.segment_id(), 0u);
  EXPECT_EQ(log_.durable_pos(), end);  // Close syncs
  EXPECT_TRUE(log_.unsynced().empty());
  EXPECT_EQ(fis_.Tracked(Obj(2))->synced, end.offset);

  // The next segment is a new object; its batches name the closed end.
  auto next = NewSeg(3, 8, end);
  QueueItem b = AddBatch(next, 8, 5, 1);
  const QueueItem b_copy = b;
  ASSERT_TRUE(log_.Append(b).ok());
  EXPECT_EQ(log_.TakeAppended().segment_files, 2u);
  ExpectBatch(Object(3), b_copy, 5, end);
  auto closed = log_.CloseSegment();
  ASSERT_TRUE(closed.ok());
  EXPECT_EQ(*closed, EndOf(b_copy).offset);
  EXPECT_EQ(next->closed_bytes, 0u);  // CloseSegment leaves the MemSegment alone
  EXPECT_EQ(log_.durable_pos(), EndOf(b_copy));
}

TEST_F(LogWriterTest, NoSpaceOnCreateLeavesTheItemAndNothingOpen) {
  auto seg = NewSeg(2, 7);
  QueueItem a = AddBatch(seg, 7, 0, 1);
  nospace_.fail_create = 1;
  Status s = log_.Append(a);
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_EQ(a.seg, seg);  // still the caller's, whole
  EXPECT_EQ(a.entries.size(), 1u);
  EXPECT_FALSE(log_.open());
  EXPECT_TRUE(log_.unsynced().empty());
  EXPECT_EQ(log_.appended_pos(), kStart);
  EXPECT_EQ(log_.appended_seq(), kStartSeq);
  EXPECT_EQ(log_.durable_pos(), kStart);
  EXPECT_EQ(log_.TakeAppended().segment_files, 0u);
  EXPECT_FALSE(seg->valid[2]);
}

TEST_F(LogWriterTest, NoSpaceOnAppendHandsBackTheUnsyncedBatches) {
  auto seg = NewSeg(2, 7);
  QueueItem a = AddBatch(seg, 7, 0, 1);
  QueueItem b = AddBatch(seg, 8, 1, 1);
  QueueItem c = AddBatch(seg, 9, 2, 1);
  ASSERT_TRUE(log_.Append(a).ok());
  ASSERT_TRUE(log_.Sync().ok());
  const LogPosition durable = log_.durable_pos();
  ASSERT_TRUE(log_.Append(b).ok());
  nospace_.fail_append = 1;
  Status s = log_.Append(c);
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_EQ(c.seg, seg);
  EXPECT_EQ(c.entries.size(), 1u);
  EXPECT_FALSE(seg->valid[c.header_slot + 1]);
  EXPECT_EQ(log_.appended_seq(), 8u);
  EXPECT_EQ(log_.durable_pos(), durable);
  const LogWriter::Appended n = log_.TakeAppended();
  EXPECT_EQ(n.bytes, 5u * kSlotSize);  // header, a and b: not c

  std::vector<QueueItem> back = log_.Abandon();
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].seq, 8u);
  EXPECT_EQ(back[0].entries.size(), 1u);
  EXPECT_FALSE(log_.open());
  EXPECT_EQ(log_.appended_pos(), durable);
  EXPECT_EQ(log_.durable_pos(), durable);
  EXPECT_TRUE(log_.unsynced().empty());
}

TEST_F(LogWriterTest, NoSpaceOnTheHeaderSlotCountsTheObjectOnly) {
  auto seg = NewSeg(2, 7);
  QueueItem a = AddBatch(seg, 7, 0, 1);
  nospace_.fail_append = 1;
  EXPECT_TRUE(log_.Append(a).IsNoSpace());
  const LogWriter::Appended n = log_.TakeAppended();
  EXPECT_EQ(n.segment_files, 1u);  // the object exists, empty
  EXPECT_EQ(n.bytes, 0u);
  EXPECT_EQ(a.entries.size(), 1u);
  EXPECT_TRUE(log_.Abandon().empty());
  EXPECT_EQ(log_.appended_pos(), kStart);
}

TEST_F(LogWriterTest, NoSpaceOnSyncMarksNothingDurable) {
  auto seg = NewSeg(2, 7);
  QueueItem a = AddBatch(seg, 7, 0, 1);
  QueueItem b = AddBatch(seg, 8, 1, 1);
  ASSERT_TRUE(log_.Append(a).ok());
  ASSERT_TRUE(log_.Append(b).ok());
  nospace_.fail_sync = 1;
  Status s = log_.Sync();
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_EQ(log_.durable_pos(), kStart);
  EXPECT_EQ(log_.unsynced().size(), 2u);
  EXPECT_EQ(fis_.Tracked(Obj(2))->synced, 0u);
  std::vector<QueueItem> back = log_.Abandon();
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].seq, 7u);
  EXPECT_EQ(back[1].seq, 8u);
  EXPECT_EQ(log_.appended_pos(), kStart);

  // After a Restart (the retry renumbers the log) a fresh segment follows
  // the durable position.
  log_.Restart(kStart, kStartSeq);
  auto fresh = NewSeg(3, 7);
  QueueItem again = AddBatch(fresh, 7, 0, 1);
  const QueueItem again_copy = again;
  ASSERT_TRUE(log_.Append(again).ok());
  ASSERT_TRUE(log_.Sync().ok());
  ExpectBatch(Object(3), again_copy, 0, kStart);
  EXPECT_EQ(log_.durable_pos(), EndOf(again_copy));
}

// Replays segment 2 as the last segment of the log; returns the end of its
// valid log and fills *map.
uint64_t ReplayLast(store::Store* s, ExtentMap* map) {
  auto r = s->Open(layout::SegName(kDir, 2));
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return 0;
  LogReplayer replay(kVolId, kSlots, kName, map);
  uint64_t seq = 7, end = 0;
  Status st = replay.ReplaySegment(r->get(), 2, kSlotSize, nullptr, &seq, &end);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return end;
}

TEST_F(LogWriterTest, CrashAfterAppendsWithoutSyncLosesOnlyTheUnsyncedTail) {
  bool lost_whole_tail = false;
  for (uint64_t seed = 0; seed < 12; seed++) {
    store::MemoryStore mem;
    FaultInjectionStore fis(&mem, seed);
    LogWriter log(&fis, kDir, kVolId);
    log.Restart(kStart, kStartSeq);
    auto seg = NewSeg(2, 7);
    QueueItem a = AddBatch(seg, 7, 0, 2);
    QueueItem b = AddBatch(seg, 8, 10, 3);
    QueueItem c = AddBatch(seg, 9, 20, 1);
    ASSERT_TRUE(log.Append(a).ok());
    ASSERT_TRUE(log.Sync().ok());
    const LogPosition durable = log.durable_pos();
    ASSERT_TRUE(log.Append(b).ok());
    ASSERT_TRUE(log.Append(c).ok());
    const LogPosition appended = log.appended_pos();
    // The store's view is the writer's: synced up to durable, the rest only
    // appended.
    ASSERT_EQ(fis.Tracked(Obj(2))->synced, durable.offset);
    ASSERT_EQ(fis.Tracked(Obj(2))->appended, appended.offset);
    // The crash hits the sync that would have covered b and c.
    fis.CrashAfter(0);
    EXPECT_FALSE(log.Sync().ok());
    EXPECT_EQ(log.durable_pos(), durable);
    EXPECT_EQ(log.unsynced().size(), 2u);
    ASSERT_TRUE(fis.SimulateCrash(FaultInjectionStore::CrashKind::kPowerLoss).ok());

    ExtentMap map(64);
    const uint64_t end = ReplayLast(&mem, &map);
    EXPECT_GE(end, durable.offset) << "seed " << seed;  // a survives always
    EXPECT_LE(end, appended.offset) << "seed " << seed;
    std::vector<MapRun> runs;
    ASSERT_TRUE(map.Lookup(0, 2, &runs).ok());
    ASSERT_EQ(runs.size(), 1u);
    EXPECT_TRUE(runs[0].mapped) << "seed " << seed;
    if (end == durable.offset) {
      lost_whole_tail = true;
      ASSERT_TRUE(map.Lookup(10, 11, &runs).ok());
      for (const MapRun& r : runs) EXPECT_FALSE(r.mapped) << "seed " << seed;
    }
  }
  // Some seed keeps exactly the synced prefix (a third of crashes do).
  EXPECT_TRUE(lost_whole_tail);
}

}  // namespace
}  // namespace hbiss::volume
