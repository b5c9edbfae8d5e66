// Byte-surgery tests on a volume's stored objects: flip chosen bytes in
// segments and checkpoints, or cut segments short, and assert exactly what
// survives (shared/STYLE.md practice 10; leveldb db/corruption_test.cc).
#include <gtest/gtest.h>

#include <cstring>

#include "store/memory_store.h"
#include "store/store_wrapper.h"
#include "volume/epoch.h"
#include "volume/log_format.h"
#include "volume/volume.h"

namespace hbiss::volume {
namespace {

const std::string kName = "cv";

// The memory store, seen by the volume as a store that does not cache reads
// (as HDFS) when `remote`: the volume then reads closed segments through its
// chunk cache, and every check below must hold there too.
class MaybeRemoteStore : public store::StoreWrapper {
 public:
  MaybeRemoteStore(store::Store* target, bool remote) : StoreWrapper(target), remote_(remote) {}
  bool CachesReadsLocally() const override { return !remote_; }

 private:
  const bool remote_;
};


class CorruptionTest : public ::testing::TestWithParam<bool> {
 protected:
  // Objects of the current epoch's log (epoch.h).
  std::string Log() { return CurrentLogPath(&store_, kName); }
  std::string SegObj(uint64_t id) { return Log() + "/seg/" + Hex16(id); }
  std::string SumObj(uint64_t id) { return Log() + "/sum/" + Hex16(id); }
  void SetUp() override {
    CreateOptions co;
    co.size = 4 << 20;
    co.segment_size = 256 << 10;
    ASSERT_TRUE(Volume::Create(&store_, kName, co).ok());
  }

  // These tests delete checkpoints to replay the whole log, so the cleaner
  // must not delete segments (the cleaner tests below turn it on).
  static OpenOptions NoCleaner() {
    OpenOptions o;
    o.clean_threshold = 0;
    return o;
  }

  std::unique_ptr<Volume> Open() {
    auto v = Volume::Open(&store_, kName, NoCleaner());
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? std::move(*v) : nullptr;
  }

  // A block whose every byte says which block it is and which version.
  static std::vector<uint8_t> Pattern(uint64_t block, uint8_t version) {
    std::vector<uint8_t> b(kBlockSize);
    for (size_t i = 0; i < b.size(); i++) b[i] = uint8_t(block * 7 + version * 31 + i / 64);
    std::memcpy(b.data(), &block, 8);
    b[8] = version;
    return b;
  }

  void WriteBlocks(Volume* v, uint64_t first, uint64_t n, uint8_t version) {
    std::vector<uint8_t> all;
    for (uint64_t b = first; b < first + n; b++) {
      auto p = Pattern(b, version);
      all.insert(all.end(), p.begin(), p.end());
    }
    ASSERT_TRUE(v->Write(first * kBlockSize, all).ok());
  }

  // Expects each block in [first, first+n) to hold Pattern(b, version), or
  // zeros when version == 0.
  void ExpectBlocks(Volume* v, uint64_t first, uint64_t n, uint8_t version) {
    std::vector<uint8_t> got(kBlockSize);
    for (uint64_t b = first; b < first + n; b++) {
      Status s = v->Read(b * kBlockSize, got);
      ASSERT_TRUE(s.ok()) << "block " << b << ": " << s.ToString();
      std::vector<uint8_t> want =
          version == 0 ? std::vector<uint8_t>(kBlockSize, 0) : Pattern(b, version);
      ASSERT_TRUE(got == want) << "block " << b << " version " << int(version);
    }
  }

  std::string Get(const std::string& name) {
    auto r = store_.Get(name);
    EXPECT_TRUE(r.ok()) << name << ": " << r.status().ToString();
    return r.ok() ? *r : std::string();
  }
  void Replace(const std::string& name, const std::string& data) {
    ASSERT_TRUE(store_.Put(name, std::span<const uint8_t>(
                                     reinterpret_cast<const uint8_t*>(data.data()),
                                     data.size()))
                    .ok());
  }
  void FlipByte(const std::string& name, uint64_t offset, uint8_t mask = 0x40) {
    std::string d = Get(name);
    ASSERT_LT(offset, d.size());
    d[offset] = char(d[offset] ^ mask);
    Replace(name, d);
  }
  // Offset of the slot holding Pattern(block, version) in a segment.
  uint64_t FindBlock(const std::string& seg, uint64_t block, uint8_t version) {
    std::string d = Get(seg);
    auto p = Pattern(block, version);
    for (uint64_t off = 0; off + kBlockSize <= d.size(); off += kBlockSize) {
      if (std::memcmp(d.data() + off, p.data(), kBlockSize) == 0) return off;
    }
    ADD_FAILURE() << "block " << block << " not found in " << seg;
    return 0;
  }
  std::vector<std::string> Checkpoints() {
    std::vector<std::string> out;
    auto l = store_.List(Log() + "/ckpt");
    if (!l.ok()) return out;
    for (auto& o : *l) out.push_back(Log() + "/ckpt/" + o.name);
    return out;
  }
  void DeleteCheckpoints() {
    for (auto& c : Checkpoints()) ASSERT_TRUE(store_.Delete(c).ok());
  }

  store::MemoryStore mem_;
  MaybeRemoteStore store_{&mem_, GetParam()};
};

INSTANTIATE_TEST_SUITE_P(Stores, CorruptionTest, ::testing::Bool(),
                         [](const auto& p) { return p.param ? "ChunkCache" : "NoCache"; });

// The layout of a segment whose batches are each `n` data blocks (written
// then flushed one at a time): batch i's header is at 4096 * (1 + i*(n+1)).
uint64_t BatchHeaderOffset(int i, int n) { return uint64_t(kSlotSize) * (1 + i * (n + 1)); }

// The cleaner copies only data that passes its CRC: a corrupt live block
// is never given a fresh, valid CRC in a new segment. It stays where it is
// (still failing its read), its segment is kept, and Clean says Corruption.
TEST_P(CorruptionTest, CleanerNeverCopiesACorruptBlock) {
  auto v = Open();
  WriteBlocks(v.get(), 0, 60, 1);                 // segment 1 (62 data slots)
  WriteBlocks(v.get(), 0, 50, 2);                 // most of it dead again
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  uint64_t off = FindBlock(SegObj(1), 55, 1);     // live: never overwritten
  FlipByte(SegObj(1), off + 100);
  v = Open();
  ASSERT_TRUE(v != nullptr);
  auto c = v->Clean(0.5);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(c.status().IsCorruption()) << c.status().ToString();
  std::vector<uint8_t> got(kBlockSize);
  EXPECT_TRUE(v->Read(55 * kBlockSize, got).IsCorruption());
  ExpectBlocks(v.get(), 50, 5, 1);                // the good blocks still read fine
  ExpectBlocks(v.get(), 56, 4, 1);
  ExpectBlocks(v.get(), 0, 50, 2);
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  EXPECT_TRUE(store_.Stat(SegObj(1)).ok()) << "the segment with the corrupt block was deleted";
  v = Open();
  ASSERT_TRUE(v != nullptr);
  EXPECT_TRUE(v->Read(55 * kBlockSize, got).IsCorruption()) << "corrupt data was laundered";
  ExpectBlocks(v.get(), 50, 5, 1);
  ExpectBlocks(v.get(), 56, 4, 1);
}

// After the cleaner deleted segments, falling back from a damaged newest
// checkpoint to the older kept one still recovers everything: neither needs
// a deleted segment. With no checkpoint left, the volume does not open (the
// log's start is gone) rather than open wrong.
TEST_P(CorruptionTest, OlderCheckpointNeedsNoDeletedSegment) {
  auto v = Open();
  for (uint8_t round = 1; round <= 6; round++) WriteBlocks(v.get(), 0, 100, round);
  WriteBlocks(v.get(), 200, 30, 9);
  auto c = v->Clean(0.5);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_GT(c->segments_deleted, 3u);
  EXPECT_FALSE(store_.Stat(SegObj(1)).ok());
  WriteBlocks(v.get(), 300, 10, 7);
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  auto ckpts = Checkpoints();
  ASSERT_EQ(ckpts.size(), 2u);
  FlipByte(ckpts[1], 40);
  v = Open();
  ASSERT_TRUE(v != nullptr);
  ExpectBlocks(v.get(), 0, 100, 6);
  ExpectBlocks(v.get(), 200, 30, 9);
  ExpectBlocks(v.get(), 300, 10, 7);
  ExpectBlocks(v.get(), 100, 100, 0);
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  DeleteCheckpoints();
  auto r = Volume::Open(&store_, kName, NoCleaner());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
}

TEST_P(CorruptionTest, FlippedDataBlockFailsOnlyThatRead) {
  auto v = Open();
  WriteBlocks(v.get(), 0, 40, 1);
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  uint64_t off = FindBlock(SegObj(1), 17, 1);
  FlipByte(SegObj(1), off + 1000);
  v = Open();
  ASSERT_TRUE(v != nullptr);
  std::vector<uint8_t> buf(kBlockSize);
  Status s = v->Read(17 * kBlockSize, buf);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  // A read of one byte of the block, and a read spanning it, fail too.
  EXPECT_TRUE(v->Read(17 * kBlockSize + 4095, std::span<uint8_t>(buf.data(), 1)).IsCorruption());
  std::vector<uint8_t> big(10 * kBlockSize);
  EXPECT_TRUE(v->Read(12 * kBlockSize, big).IsCorruption());
  // Every other block is intact.
  ExpectBlocks(v.get(), 0, 17, 1);
  ExpectBlocks(v.get(), 18, 22, 1);
  // Overwriting the bad block heals it.
  WriteBlocks(v.get(), 17, 1, 2);
  ExpectBlocks(v.get(), 17, 1, 2);
}

TEST_P(CorruptionTest, FlippedDataBlockInReplayedSegmentFailsOnlyThatRead) {
  // Same, but the segment is rolled forward at open (no checkpoint).
  auto v = Open();
  WriteBlocks(v.get(), 0, 100, 1);  // > 1 segment of 64 slots
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  DeleteCheckpoints();
  uint64_t off = FindBlock(SegObj(1), 3, 1);
  FlipByte(SegObj(1), off + 5);
  v = Open();
  ASSERT_TRUE(v != nullptr);
  std::vector<uint8_t> buf(kBlockSize);
  EXPECT_TRUE(v->Read(3 * kBlockSize, buf).IsCorruption());
  ExpectBlocks(v.get(), 0, 3, 1);
  ExpectBlocks(v.get(), 4, 96, 1);
}

TEST_P(CorruptionTest, FlippedNewestCheckpointFallsBackToOlderAndRollsForward) {
  auto v = Open();
  WriteBlocks(v.get(), 0, 30, 1);
  ASSERT_TRUE(v->Close().ok());  // checkpoint 1
  v = Open();
  WriteBlocks(v.get(), 20, 30, 2);
  ASSERT_TRUE(v->Trim(0, 5 * kBlockSize).ok());
  ASSERT_TRUE(v->Close().ok());  // checkpoint 2
  v.reset();
  auto ckpts = Checkpoints();
  ASSERT_EQ(ckpts.size(), 2u);
  ASSERT_EQ(Volume::Stat(&store_, kName)->checkpoint_seq, 2u);
  std::string newest = ckpts.back();
  FlipByte(newest, Get(newest).size() / 2);
  // Stat now sees checkpoint 1 as the newest valid one.
  EXPECT_EQ(Volume::Stat(&store_, kName)->checkpoint_seq, 1u);
  v = Open();
  ASSERT_TRUE(v != nullptr);
  ExpectBlocks(v.get(), 0, 5, 0);
  ExpectBlocks(v.get(), 5, 15, 1);
  ExpectBlocks(v.get(), 20, 30, 2);
  ExpectBlocks(v.get(), 50, 10, 0);
  // Both checkpoints bad: roll forward from the start of the log.
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  for (auto& c : Checkpoints()) FlipByte(c, 20);
  v = Open();
  ASSERT_TRUE(v != nullptr);
  ExpectBlocks(v.get(), 0, 5, 0);
  ExpectBlocks(v.get(), 5, 15, 1);
  ExpectBlocks(v.get(), 20, 30, 2);
}

TEST_P(CorruptionTest, FlippedBatchHeaderInNonLastSegmentIsCorruption) {
  auto v = Open();
  for (int i = 0; i < 40; i++) {  // batches of 4 blocks; 12 of them fill a 64-slot segment
    WriteBlocks(v.get(), uint64_t(i) * 4, 4, 1);
    ASSERT_TRUE(v->Flush().ok());
  }
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  DeleteCheckpoints();
  ASSERT_TRUE(store_.Stat(SegObj(4)).ok());  // segments 1..4 at least
  // Segment 1 is followed by segment 2: its log must be whole up to the end
  // segment 2 names.
  for (uint64_t byte : {0ull, 20ull, 60ull}) {  // magic, seq, an entry
    std::string saved = Get(SegObj(1));
    FlipByte(SegObj(1), BatchHeaderOffset(2, 4) + byte);
    auto r = Volume::Open(&store_, kName, NoCleaner());
    EXPECT_TRUE(r.status().IsCorruption()) << byte << ": " << r.status().ToString();
    EXPECT_NE(r.status().message().find(Hex16(1)), std::string::npos) << r.status().message();
    Replace(SegObj(1), saved);
  }
  // A damaged segment header in the middle of the chain is corruption too.
  FlipByte(SegObj(2), 30);
  EXPECT_TRUE(Volume::Open(&store_, kName, NoCleaner()).status().IsCorruption());
  FlipByte(SegObj(2), 30);
  // Intact again: everything is there.
  v = Open();
  ASSERT_TRUE(v != nullptr);
  ExpectBlocks(v.get(), 0, 160, 1);
}

TEST_P(CorruptionTest, TornTailIsTheEndOfTheLog) {
  auto v = Open();
  WriteBlocks(v.get(), 0, 4, 1);
  ASSERT_TRUE(v->Flush().ok());
  WriteBlocks(v.get(), 4, 4, 1);
  ASSERT_TRUE(v->Flush().ok());
  WriteBlocks(v.get(), 8, 4, 1);
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  DeleteCheckpoints();
  std::string seg = Get(SegObj(1));
  ASSERT_EQ(seg.size(), BatchHeaderOffset(3, 4));
  // Cut inside the third batch's data: batches 1 and 2 survive, 3 is gone.
  Replace(SegObj(1), seg.substr(0, BatchHeaderOffset(2, 4) + 2 * kSlotSize + 100));
  v = Open();
  ASSERT_TRUE(v != nullptr);
  ExpectBlocks(v.get(), 0, 8, 1);
  ExpectBlocks(v.get(), 8, 4, 0);
  // Writing on continues in a new segment; the torn bytes stay ignored.
  WriteBlocks(v.get(), 8, 2, 2);
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  DeleteCheckpoints();
  v = Open();
  ASSERT_TRUE(v != nullptr);
  ExpectBlocks(v.get(), 0, 8, 1);
  ExpectBlocks(v.get(), 8, 2, 2);
  ExpectBlocks(v.get(), 10, 2, 0);
}

// An operation cut off by the end of the log must stay dropped when the log
// goes on after recovery (the new segment says: discard the pending op),
// instead of being completed by the next operation's entries.
TEST_P(CorruptionTest, OperationCutOffByTornTailStaysDropped) {
  auto v = Open();
  WriteBlocks(v.get(), 0, 100, 1);  // 62 blocks in segment 1, the rest in segment 2
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  DeleteCheckpoints();
  // Tear segment 2 right after its header: the write's second half is gone.
  Replace(SegObj(2), Get(SegObj(2)).substr(0, kSlotSize));
  v = Open();
  ASSERT_TRUE(v != nullptr);
  ExpectBlocks(v.get(), 0, 100, 0);  // the whole write is gone, not half of it
  WriteBlocks(v.get(), 500, 1, 2);
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  DeleteCheckpoints();  // replay everything again, through the cut
  v = Open();
  ASSERT_TRUE(v != nullptr);
  ExpectBlocks(v.get(), 0, 100, 0);
  ExpectBlocks(v.get(), 500, 1, 2);
}

TEST_P(CorruptionTest, BadDataInLastBatchOfLastSegmentIsATornTail) {
  auto v = Open();
  WriteBlocks(v.get(), 0, 4, 1);
  ASSERT_TRUE(v->Flush().ok());
  WriteBlocks(v.get(), 4, 4, 1);
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  DeleteCheckpoints();
  FlipByte(SegObj(1), BatchHeaderOffset(1, 4) + kSlotSize * 3 + 7);
  v = Open();
  ASSERT_TRUE(v != nullptr);
  ExpectBlocks(v.get(), 0, 4, 1);
  ExpectBlocks(v.get(), 4, 4, 0);  // the whole torn batch is dropped, never half of it
}

TEST_P(CorruptionTest, BadBatchBeforeALaterSyncedBatchIsCorruption) {
  auto v = Open();
  WriteBlocks(v.get(), 0, 4, 1);
  ASSERT_TRUE(v->Flush().ok());  // batch 0 synced
  WriteBlocks(v.get(), 4, 4, 1);
  ASSERT_TRUE(v->Flush().ok());  // batch 1 says: log synced up to the end of batch 0
  WriteBlocks(v.get(), 8, 4, 1);
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  DeleteCheckpoints();
  // Damage batch 0's header: batch 1 (and 2) prove it had been synced.
  FlipByte(SegObj(1), BatchHeaderOffset(0, 4) + 30);
  auto r = Volume::Open(&store_, kName, NoCleaner());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  FlipByte(SegObj(1), BatchHeaderOffset(0, 4) + 30);
  // Damage only the last batch's header: nothing later proves it synced, so
  // it is a torn tail.
  FlipByte(SegObj(1), BatchHeaderOffset(2, 4) + 30);
  v = Open();
  ASSERT_TRUE(v != nullptr);
  ExpectBlocks(v.get(), 0, 8, 1);
  ExpectBlocks(v.get(), 8, 4, 0);
}

TEST_P(CorruptionTest, CorruptMetaIsReported) {
  Replace(Log() + "/meta", "{not json");
  EXPECT_TRUE(Volume::Open(&store_, kName, NoCleaner()).status().IsCorruption());
  EXPECT_TRUE(Volume::Stat(&store_, kName).status().IsCorruption());
}

TEST_P(CorruptionTest, SegmentOfAnotherVolumeIsNotReplayed) {
  // A segment copied from another volume (different id) in place of ours
  // has a header that fails the volume-id check: as the only segment it is
  // ignored (like a torn creation) and the volume reads as empty rather
  // than serving foreign data.
  CreateOptions co;
  co.size = 4 << 20;
  co.segment_size = 256 << 10;
  ASSERT_TRUE(Volume::Create(&store_, "other", co).ok());
  {
    auto o = Volume::Open(&store_, "other", NoCleaner());
    ASSERT_TRUE(o.ok());
    WriteBlocks(o->get(), 0, 4, 9);
    ASSERT_TRUE((*o)->Close().ok());
  }
  Replace(SegObj(1), Get(CurrentLogPath(&store_, "other") + "/seg/" + Hex16(1)));
  auto v = Open();
  ASSERT_TRUE(v != nullptr);
  ExpectBlocks(v.get(), 0, 4, 0);
}


// Closed segments get a summary (their CRC table); reads use it. A summary
// with a flipped byte, or one that describes another segment, is ignored
// (the segment is scanned instead); one whose CRC table is wrong makes the
// reads it misleads fail as Corruption, never return bytes as good.
TEST_P(CorruptionTest, SegmentSummariesAreUsedAndBadOnesIgnored) {
  auto v = Open();
  WriteBlocks(v.get(), 0, 200, 1);
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  auto sums = store_.List(Log() + "/sum");
  ASSERT_TRUE(sums.ok());
  auto segs = store_.List(Log() + "/seg");
  ASSERT_TRUE(segs.ok());
  ASSERT_GE(segs->size(), 4u);
  EXPECT_EQ(sums->size(), segs->size()) << "every closed segment has a summary";
  for (uint64_t id = 1; id <= 3; id++) {
    auto d = Get(SumObj(id));
    auto sum = DecodeSegmentSummary(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(d.data()), d.size()));
    ASSERT_TRUE(sum.ok()) << sum.status().ToString();
    EXPECT_EQ(sum->segment_id, id);
    EXPECT_EQ(sum->segment_bytes, Get(SegObj(id)).size());
  }
  const std::string good1 = Get(SumObj(1));
  FlipByte(SumObj(1), 100);
  Replace(SumObj(2), Get(SumObj(3)));
  v = Open();
  ExpectBlocks(v.get(), 0, 200, 1);
  ASSERT_TRUE(v->Close().ok());
  v.reset();

  // A summary with a good CRC but a wrong table entry for block 5's slot.
  auto sum = DecodeSegmentSummary(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(good1.data()), good1.size()));
  ASSERT_TRUE(sum.ok());
  const uint64_t slot = FindBlock(SegObj(1), 5, 1) / kSlotSize;
  ASSERT_TRUE(sum->valid[slot]);
  sum->crcs[slot] ^= 1;
  Replace(SumObj(1), EncodeSegmentSummary(*sum));
  v = Open();
  std::vector<uint8_t> buf(kBlockSize);
  Status s = v->Read(5 * kBlockSize, buf);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  ExpectBlocks(v.get(), 0, 5, 1);
  ExpectBlocks(v.get(), 6, 194, 1);
}

}  // namespace
}  // namespace hbiss::volume
