#include "volume/log_follower.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "store/fault_injection_store.h"
#include "store/memory_store.h"
#include "store/store_wrapper.h"
#include "util/bytes.h"
#include "util/test_util.h"
#include "volume/epoch.h"
#include "volume/layout.h"
#include "volume/volume.h"

namespace hbiss::volume {
namespace {

#define ASSERT_OK(expr)                                        \
  do {                                                         \
    ::hbiss::Status _s = (expr);                               \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s.ToString();    \
  } while (0)

constexpr uint64_t kBlocks = 256;  // a 1 MiB volume

// The bytes of block `lba` as the follower's map says: zeros when unmapped,
// else the slot it names, read from the store.
std::string BlockViaMap(store::Store* s, const std::string& name, const ExtentMap& map,
                        uint64_t lba) {
  std::vector<MapRun> runs;
  EXPECT_TRUE(map.Lookup(lba, 1, &runs).ok());
  if (runs.size() != 1 || !runs[0].mapped) return std::string(kBlockSize, '\0');
  auto r = s->Open(layout::SegName(ResolveLog(s, name).value().dir, runs[0].seg));
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return "";
  std::string out(kBlockSize, '\0');
  auto n = (*r)->ReadAt(uint64_t(runs[0].slot) * kBlockSize,
                        std::span(reinterpret_cast<uint8_t*>(out.data()), out.size()));
  EXPECT_TRUE(n.ok() && *n == kBlockSize);
  return out;
}

class LogFollowerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CreateOptions co;
    co.size = kBlocks * kBlockSize;
    co.segment_size = 64 << 10;  // 15 data slots a segment: many segments
    ASSERT_OK(Volume::Create(&mem_, "v", co));
    meta_ = ReadMeta(&mem_, "v").value();
  }

  // The current log directory (the writer's epoch).
  layout::LogDir Dir() { return ResolveLog(&mem_, "v").value().dir; }

  void OpenWriter(store::Store* s, double clean = 0, uint64_t ckpt_interval = 1ull << 30) {
    OpenOptions o;
    o.clean_threshold = clean;
    o.checkpoint_interval = ckpt_interval;
    auto v = Volume::Open(s, "v", o);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    writer_ = std::move(*v);
  }

  // Writes block lba (all bytes one random value), in the model too.
  void WriteBlock(uint64_t lba) {
    std::string b(kBlockSize, char(rng_()));
    b[0] = char(lba);
    ASSERT_OK(writer_->Write(lba * kBlockSize, AsBytes(b)));
    model_[lba] = b;
  }

  void ExpectMatchesModel(store::Store* s, const ExtentMap& map) {
    for (uint64_t lba = 0; lba < kBlocks; lba++) {
      auto it = model_.find(lba);
      const std::string want = it == model_.end() ? std::string(kBlockSize, '\0') : it->second;
      ASSERT_EQ(BlockViaMap(s, "v", map, lba), want) << "block " << lba;
    }
  }

  store::MemoryStore mem_;
  VolumeMeta meta_;
  std::unique_ptr<Volume> writer_;
  std::map<uint64_t, std::string> model_;
  std::mt19937_64 rng_{11};
};

TEST_F(LogFollowerTest, EmptyVolume) {
  ExtentMap map(kBlocks);
  LogFollower f(&mem_, Dir(), meta_, &map);
  ASSERT_OK(f.Load());
  EXPECT_EQ(map.MappedBlocks(), 0u);
  EXPECT_EQ(f.end(), LogPosition{});
  ASSERT_OK(f.CatchUp());
  EXPECT_EQ(f.loads(), 1u);
}

// The follower keeps up with a writer across many segments, flush by flush,
// and only ever replays what the log gained (one load in all).
TEST_F(LogFollowerTest, FollowsAWriterAcrossSegments) {
  ASSERT_NO_FATAL_FAILURE(OpenWriter(&mem_));
  ExtentMap map(kBlocks);
  LogFollower f(&mem_, Dir(), meta_, &map);
  ASSERT_OK(f.Load());
  for (int round = 0; round < 40; round++) {
    for (int i = 0; i < 7; i++) ASSERT_NO_FATAL_FAILURE(WriteBlock(rng_() % kBlocks));
    if (round % 5 == 0) ASSERT_OK(writer_->Trim((rng_() % kBlocks) * kBlockSize, 3 * kBlockSize));
    if (round % 5 == 0) {
      // Trims change the model too: re-read what the writer says.
      for (uint64_t lba = 0; lba < kBlocks; lba++) {
        std::string b(kBlockSize, '\0');
        ASSERT_OK(writer_->Read(lba * kBlockSize, std::span(reinterpret_cast<uint8_t*>(b.data()),
                                                            b.size())));
        if (b == std::string(kBlockSize, '\0')) {
          model_.erase(lba);
        } else {
          model_[lba] = b;
        }
      }
    }
    ASSERT_OK(writer_->Flush());
    const LogPosition before = f.end();
    ASSERT_OK(f.CatchUp());
    EXPECT_GT(f.end(), before) << "round " << round;
    ASSERT_NO_FATAL_FAILURE(ExpectMatchesModel(&mem_, map));
  }
  EXPECT_EQ(f.loads(), 1u);
  EXPECT_GT(f.end().segment_id, 10u);
  EXPECT_EQ(map.MappedBlocks(), model_.size());
}

// Shows only the first `limit` bytes of one segment to readers, as a reader
// of an HDFS file being written sees its visible length.
class PartialStore : public store::StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  void Limit(std::string name, uint64_t bytes) {
    name_ = std::move(name);
    bytes_ = bytes;
  }
  void NoLimit() { name_.clear(); }
  Result<std::unique_ptr<store::SegmentReader>> Open(const std::string& name) override {
    HBISS_ASSIGN_OR_RETURN(auto r, target()->Open(name));
    if (name != name_) return r;
    return std::unique_ptr<store::SegmentReader>(new Cut(std::move(r), bytes_));
  }

 private:
  class Cut : public store::SegmentReader {
   public:
    Cut(std::unique_ptr<store::SegmentReader> r, uint64_t n) : r_(std::move(r)), n_(n) {}
    Result<size_t> ReadAt(uint64_t off, std::span<uint8_t> out) override {
      if (off >= n_) return size_t{0};
      return r_->ReadAt(off, out.first(std::min<uint64_t>(out.size(), n_ - off)));
    }
    uint64_t Size() const override { return std::min(n_, r_->Size()); }

   private:
    std::unique_ptr<store::SegmentReader> r_;
    uint64_t n_;
  };
  std::string name_;
  uint64_t bytes_ = 0;
};

// An operation whose batches are only partly visible has no effect until
// its last batch is visible, and then all of it.
TEST_F(LogFollowerTest, AnOperationTakesEffectWholeOrNotAtAll) {
  ASSERT_NO_FATAL_FAILURE(OpenWriter(&mem_));
  ASSERT_NO_FATAL_FAILURE(WriteBlock(200));
  ASSERT_OK(writer_->Flush());
  PartialStore view(&mem_);
  ExtentMap map(kBlocks);
  LogFollower f(&view, Dir(), meta_, &map);
  ASSERT_OK(f.CatchUp());
  const LogPosition start = f.end();
  // One write of 40 blocks: more than a segment holds, so its batches span
  // three segments, linked by `continues`.
  std::string big(40 * kBlockSize, '\0');
  for (size_t i = 0; i < big.size(); i++) big[i] = char(rng_());
  ASSERT_OK(writer_->Write(0, AsBytes(big)));
  ASSERT_OK(writer_->Flush());
  for (uint64_t i = 0; i < 40; i++) model_[i] = big.substr(i * kBlockSize, kBlockSize);
  // See only the segment where the follower stopped, whole, and nothing
  // after it: the op is incomplete there.
  auto ids = ListIds(&mem_, layout::SegDir(Dir())).value();
  ASSERT_GE(ids.size(), 3u);
  view.Limit(layout::SegName(Dir(), start.segment_id), ids[0].second + (1ull << 30));
  class HideLater : public store::StoreWrapper {
   public:
    HideLater(store::Store* t, uint64_t last, std::string seg_dir)
        : StoreWrapper(t), last_(last), seg_dir_(std::move(seg_dir)) {}
    Result<std::vector<store::ObjectInfo>> List(const std::string& dir) override {
      HBISS_ASSIGN_OR_RETURN(auto v, target()->List(dir));
      if (dir != seg_dir_) return v;
      std::vector<store::ObjectInfo> out;
      for (auto& o : v) {
        if (std::stoull(o.name, nullptr, 16) <= last_) out.push_back(o);
      }
      return out;
    }
    uint64_t last_;
    std::string seg_dir_;
  } hide(&view, start.segment_id, layout::SegDir(Dir()));
  ExtentMap map2(kBlocks);
  LogFollower g(&hide, Dir(), meta_, &map2);
  ASSERT_OK(g.CatchUp());
  EXPECT_TRUE(g.op_pending());
  for (uint64_t lba = 0; lba < 40; lba++) {
    EXPECT_EQ(BlockViaMap(&mem_, "v", map2, lba), std::string(kBlockSize, '\0')) << lba;
  }
  // Now everything is visible: the whole op at once.
  hide.last_ = ~0ull;
  ASSERT_OK(g.CatchUp());
  EXPECT_FALSE(g.op_pending());
  EXPECT_EQ(g.loads(), 1u);
  ASSERT_NO_FATAL_FAILURE(ExpectMatchesModel(&mem_, map2));
}

// The cleaner deletes segments the follower had not reached (after a newer
// checkpoint): the follower loads again and is right.
TEST_F(LogFollowerTest, ReloadsWhenTheCleanerDeletedWhatItNeeded) {
  ASSERT_NO_FATAL_FAILURE(OpenWriter(&mem_, 0.5, 256 << 10));
  ExtentMap map(kBlocks);
  LogFollower f(&mem_, Dir(), meta_, &map);
  ASSERT_NO_FATAL_FAILURE(WriteBlock(1));
  ASSERT_OK(writer_->Flush());
  ASSERT_OK(f.CatchUp());
  const uint64_t first_seg = f.end().segment_id;
  // Overwrite the same few blocks many times: old segments die and go.
  for (int i = 0; i < 400; i++) {
    ASSERT_NO_FATAL_FAILURE(WriteBlock(rng_() % 8));
    if (i % 10 == 0) ASSERT_OK(writer_->Flush());
  }
  ASSERT_OK(writer_->Flush());
  ASSERT_TRUE(writer_->Clean(0.9).ok());
  ASSERT_OK(writer_->Flush());
  ASSERT_TRUE(mem_.Stat(layout::SegName(Dir(), first_seg)).status().IsNotFound())
      << "the test needs the cleaner to have deleted the follower's segment";
  ASSERT_OK(f.CatchUp());
  EXPECT_EQ(f.loads(), 2u);
  ASSERT_NO_FATAL_FAILURE(ExpectMatchesModel(&mem_, map));
}

// A writer's last batches reach the store but their sync fails, and it
// crashes; the next writer's recovery cuts them off the chain (or logs them
// again). The follower, which had replayed them, notices that the log no
// longer continues from where it stopped, loads again, and agrees with the
// volume as recovered.
TEST_F(LogFollowerTest, ReloadsWhenANewOwnerCutsTheTail) {
  store::FaultInjectionStore fs(&mem_, 5);
  ASSERT_NO_FATAL_FAILURE(OpenWriter(&fs));
  for (int i = 0; i < 20; i++) ASSERT_NO_FATAL_FAILURE(WriteBlock(i));
  ASSERT_OK(writer_->Flush());
  ExtentMap map(kBlocks);
  LogFollower f(&fs, Dir(), meta_, &map);
  ASSERT_OK(f.CatchUp());
  ASSERT_EQ(map.MappedBlocks(), 20u);
  for (int i = 0; i < 10; i++) ASSERT_NO_FATAL_FAILURE(WriteBlock(100 + i));
  fs.FailNext(store::FaultInjectionStore::Op::kSync);
  EXPECT_FALSE(writer_->Flush().ok());  // appended, not synced: the volume failed
  ASSERT_OK(f.CatchUp());
  ASSERT_EQ(map.MappedBlocks(), 30u) << "the follower sees what was appended";
  const LogPosition seen = f.end();
  writer_.reset();
  ASSERT_OK(fs.SimulateCrash(store::FaultInjectionStore::CrashKind::kPowerLoss));
  ASSERT_NO_FATAL_FAILURE(OpenWriter(&fs));
  // The recovered volume: the first 20 blocks, and whatever survived of the
  // other 10.
  std::map<uint64_t, std::string> recovered;
  for (uint64_t lba = 0; lba < kBlocks; lba++) {
    std::string b(kBlockSize, '\0');
    ASSERT_OK(writer_->Read(lba * kBlockSize,
                            std::span(reinterpret_cast<uint8_t*>(b.data()), b.size())));
    if (b != std::string(kBlockSize, '\0')) recovered[lba] = b;
  }
  ASSERT_GE(recovered.size(), 20u);
  ASSERT_NO_FATAL_FAILURE(WriteBlock(250));  // the new owner writes on
  ASSERT_OK(writer_->Flush());
  recovered[250] = model_[250];
  f.SetDir(Dir());  // the new owner renamed the log into a new epoch
  ASSERT_OK(f.CatchUp());
  EXPECT_EQ(f.loads(), 2u) << "the log was cut at or before (" << seen.segment_id << ", "
                           << seen.offset << "): the follower must load again";
  model_ = recovered;
  ASSERT_NO_FATAL_FAILURE(ExpectMatchesModel(&fs, map));
  writer_.reset();  // before fs goes
}

// A read-only Volume follows the writer through Refresh, and a read that
// finds a segment deleted by the writer's cleaner refreshes by itself.
TEST_F(LogFollowerTest, ReadOnlyVolumeRefreshesAndSurvivesTheCleaner) {
  ASSERT_NO_FATAL_FAILURE(OpenWriter(&mem_, 0.5, 256 << 10));
  for (int i = 0; i < 10; i++) ASSERT_NO_FATAL_FAILURE(WriteBlock(i));
  ASSERT_OK(writer_->Flush());
  OpenOptions ro;
  ro.read_only = true;
  auto reader = Volume::Open(&mem_, "v", ro);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  auto read_block = [&](uint64_t lba) {
    std::string b(kBlockSize, '\0');
    Status s = (*reader)->Read(lba * kBlockSize,
                               std::span(reinterpret_cast<uint8_t*>(b.data()), b.size()));
    EXPECT_TRUE(s.ok()) << s.ToString();
    return b;
  };
  EXPECT_TRUE(read_block(3) == model_[3]);
  // New data is not seen before a Refresh, and is after one.
  const std::string old7 = model_[7];
  ASSERT_NO_FATAL_FAILURE(WriteBlock(7));
  ASSERT_NO_FATAL_FAILURE(WriteBlock(50));
  ASSERT_OK(writer_->Flush());
  EXPECT_TRUE(read_block(7) == old7);
  EXPECT_TRUE(read_block(50) == std::string(kBlockSize, '\0'));
  ASSERT_OK((*reader)->Refresh());
  EXPECT_TRUE(read_block(7) == model_[7]);
  EXPECT_TRUE(read_block(50) == model_[50]);
  // The writer rewrites block 3 many times over, cleans and deletes the
  // segments the reader's map still names; the reader's next read of block
  // 1 (never rewritten, so moved by the cleaner) still works.
  // A second reader opened now has read nothing, so it holds no open reader
  // of the segments about to go.
  auto fresh = Volume::Open(&mem_, "v", ro);
  ASSERT_TRUE(fresh.ok());
  const std::string block1 = model_[1];
  for (int i = 0; i < 300; i++) {
    ASSERT_NO_FATAL_FAILURE(WriteBlock(3));
    if (i % 10 == 0) ASSERT_OK(writer_->Flush());
  }
  ASSERT_OK(writer_->Flush());
  ASSERT_TRUE(writer_->Clean(0.9).ok());
  ASSERT_OK(writer_->Flush());
  ASSERT_TRUE(mem_.Stat(layout::SegName(Dir(), 1)).status().IsNotFound());
  {
    std::string b(kBlockSize, '\0');
    Status s = (*fresh)->Read(kBlockSize, std::span(reinterpret_cast<uint8_t*>(b.data()), b.size()));
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_TRUE(b == block1);
  }
  for (uint64_t lba = 0; lba < 10; lba++) {
    if (lba == 3) continue;
    EXPECT_TRUE(read_block(lba) == model_[lba]) << lba;
  }
  EXPECT_TRUE(read_block(50) == model_[50]);
  // Block 3 was rewritten since: the reader sees the new bytes after a Refresh.
  ASSERT_OK((*reader)->Refresh());
  EXPECT_TRUE(read_block(3) == model_[3]);
  // Writes are refused, Refresh of a writable volume does nothing.
  EXPECT_FALSE((*reader)->Write(0, AsBytes(std::string(kBlockSize, 'x'))).ok());
  ASSERT_OK(writer_->Refresh());
}

}  // namespace
}  // namespace hbiss::volume
