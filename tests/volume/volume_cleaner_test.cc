// The cleaner on real stores (memory, local directory): it bounds the log of
// a volume that is overwritten again and again, moves data without changing
// it, deletes exactly the segments no checkpoint needs, keeps reads working
// while it deletes under them, and does nothing at all when turned off.
// (Crash safety: tests/volume/volume_crash_test.cc cleans at random points;
// corrupt data: volume_corruption_test.cc.)
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "store/local_store.h"
#include "store/memory_store.h"
#include "tests/volume/store_param.h"
#include "volume/epoch.h"
#include "volume/log_format.h"
#include "volume/log_reader.h"
#include "volume/volume.h"

namespace hbiss::volume {
namespace {

constexpr uint64_t kVolSize = 4 << 20;
constexpr uint64_t kSegSize = 256 << 10;

// Blocks whose bytes say which block and which version they are.
std::vector<uint8_t> Block(uint64_t block, uint64_t version) {
  std::vector<uint8_t> b(kBlockSize);
  for (size_t i = 0; i < b.size(); i++) b[i] = uint8_t(block * 13 + version * 101 + i / 16);
  std::memcpy(b.data(), &block, 8);
  std::memcpy(b.data() + 8, &version, 8);
  return b;
}

class CleanerTest : public StoreParamTest {
 protected:
  void SetUp() override {
    StoreParamTest::SetUp();
    if (HasFatalFailure()) return;
    CreateVolume("v", kVolSize, kSegSize);
    model_.assign(kVolSize / kBlockSize, 0);
  }

  std::unique_ptr<Volume> Open(double threshold) {
    OpenOptions o;
    o.clean_threshold = threshold;
    auto v = Volume::Open(store_, "v", o);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? std::move(*v) : nullptr;
  }

  // Writes `n` random single blocks (and, first, the whole volume once).
  void Overwrite(Volume* v, int n, std::mt19937_64& rng) {
    for (int i = 0; i < n; i++) {
      uint64_t b = rng() % model_.size();
      model_[b]++;
      ASSERT_TRUE(v->Write(b * kBlockSize, Block(b, model_[b])).ok());
    }
  }
  void FillOnce(Volume* v) {
    for (uint64_t b = 0; b < model_.size(); b++) {
      model_[b] = 1;
      ASSERT_TRUE(v->Write(b * kBlockSize, Block(b, 1)).ok());
    }
  }
  void ExpectModel(Volume* v) {
    std::vector<uint8_t> got(kBlockSize);
    for (uint64_t b = 0; b < model_.size(); b++) {
      Status s = v->Read(b * kBlockSize, got);
      ASSERT_TRUE(s.ok()) << "block " << b << ": " << s.ToString();
      ASSERT_TRUE(got == Block(b, model_[b])) << "block " << b;
    }
  }
  // Segment objects in the store and their total size.
  std::pair<uint64_t, uint64_t> StoredSegments() {
    auto l = store_->List(CurrentLogPath(store_, "v") + "/seg");
    EXPECT_TRUE(l.ok());
    uint64_t n = 0, bytes = 0;
    for (const auto& o : *l) {
      n++;
      bytes += o.size;
    }
    return {n, bytes};
  }

  std::vector<uint64_t> model_;  // version of each block
};

INSTANTIATE_TEST_SUITE_P(Stores, CleanerTest, ::testing::Bool(),
                         [](const auto& p) { return p.param ? "Local" : "Memory"; });

TEST_P(CleanerTest, CleanBoundsTheLogAndKeepsEveryByte) {
  std::mt19937_64 rng(11);
  auto v = Open(0);  // no background cleaning: only Clean
  FillOnce(v.get());
  Overwrite(v.get(), 3000, rng);  // 12 MiB more log over 4 MiB of data
  ASSERT_TRUE(v->Flush().ok());
  const VolumeInfo before = v->Info();
  EXPECT_GT(before.log_bytes, 3 * kVolSize);

  auto c = v->Clean(0.5);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  VolumeInfo after = v->Info();
  EXPECT_GT(c->segments_cleaned, 0u);
  EXPECT_GT(c->segments_deleted, c->segments_cleaned / 2);
  EXPECT_EQ(after.segments_deleted, c->segments_deleted);
  EXPECT_EQ(after.blocks_moved, c->blocks_moved);
  // Every closed segment left is at least half live: the log is at most
  // about twice the data, plus the segments being written.
  EXPECT_LE(after.log_bytes, 2 * kVolSize + 4 * kSegSize) << before.log_bytes;
  auto [n, bytes] = StoredSegments();
  EXPECT_EQ(n, after.segment_count);
  EXPECT_EQ(bytes, after.log_bytes);
  ExpectModel(v.get());

  // 1.0 copies every closed segment: the log shrinks to about the data.
  c = v->Clean(1.0);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  after = v->Info();
  EXPECT_LE(after.log_bytes, kVolSize + kVolSize / 8 + 3 * kSegSize);
  ExpectModel(v.get());
  ASSERT_TRUE(v->Close().ok());
  v.reset();

  v = Open(0);
  ExpectModel(v.get());
  auto st = StoredSegments();
  EXPECT_EQ(v->Info().log_bytes, st.second);
  EXPECT_EQ(v->Info().segment_count, st.first);
}

// Which block ranges each segment object in the store has write entries
// for: (segment id, whether it writes any block below `split`, any at or
// above it).
struct SegmentKinds {
  uint64_t id;
  bool low;
  bool high;
};
std::vector<SegmentKinds> WrittenRanges(store::Store* store, uint64_t volume_id, uint64_t split) {
  const std::string dir = CurrentLogPath(store, "v") + "/seg";
  auto l = store->List(dir);
  EXPECT_TRUE(l.ok());
  std::vector<SegmentKinds> out;
  for (const auto& o : *l) {
    SegmentKinds k{std::stoull(o.name, nullptr, 16), false, false};
    auto r = store->Open(dir + "/" + o.name);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) continue;
    auto scan = ScanBatchHeaders(r->get(), volume_id, k.id, kSegSize / kSlotSize, o.name,
                                 [&](uint64_t, const BatchHeader& h) {
                                   for (const BatchEntry& e : h.entries) {
                                     if (e.type != EntryType::kWrite) continue;
                                     (e.lba < split ? k.low : k.high) = true;
                                   }
                                 });
    EXPECT_TRUE(scan.ok()) << scan.status().ToString();
    out.push_back(k);
  }
  return out;
}

// Cold blocks (the lower half, written once) are made mostly dead; a client
// writes the upper half, the cleaner runs, the client writes again: the
// client's segments before and after hold no copy (only copies are of the
// lower half: the client never writes it again), the cleaner wrote some, and
// every byte survives the cleaning and a reopen. (The phases are in turn, not
// at once: writes and copies are serialised by the writers' lock anyway, and
// with a writer running during Clean, the cleaner may copy upper-half blocks
// too, which the store cannot tell from the client's.)
TEST_P(CleanerTest, CleanerCopiesNeverShareASegmentWithClientWrites) {
  const uint64_t blocks = model_.size(), half = blocks / 2;
  auto v = Open(0);  // no background cleaning: only Clean
  FillOnce(v.get());
  // Leave about a quarter of the lower half live where it was first written.
  for (uint64_t b = 0; b < half; b++) {
    if (b % 4 == 0) continue;
    model_[b]++;
    ASSERT_TRUE(v->Write(b * kBlockSize, Block(b, model_[b])).ok());
  }
  ASSERT_TRUE(v->Flush().ok());
  auto last_segment = [&] {
    uint64_t last = 0;
    for (const SegmentKinds& k : WrittenRanges(store_, v->Info().id, half)) {
      last = std::max(last, k.id);
    }
    return last;
  };
  const uint64_t setup_end = last_segment();
  std::mt19937_64 rng(21);
  auto client_writes = [&](int n) {
    for (int i = 0; i < n; i++) {
      const uint64_t b = half + rng() % (blocks - half);
      model_[b]++;
      ASSERT_TRUE(v->Write(b * kBlockSize, Block(b, model_[b])).ok());
    }
    ASSERT_TRUE(v->Flush().ok());
  };
  ASSERT_NO_FATAL_FAILURE(client_writes(300));
  const uint64_t before_clean = last_segment();
  auto c = v->Clean(0.5);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_GT(c->blocks_moved, 0u);
  ASSERT_TRUE(v->Flush().ok());
  const uint64_t after_clean = last_segment();
  ASSERT_NO_FATAL_FAILURE(client_writes(300));
  ExpectModel(v.get());

  int copies = 0;
  for (const SegmentKinds& k : WrittenRanges(store_, v->Info().id, half)) {
    if (k.id <= setup_end) continue;
    const bool client = k.id <= before_clean || k.id > after_clean;
    if (client) {
      EXPECT_FALSE(k.low) << "segment " << k.id << " mixes cleaner copies and client writes";
    } else {
      copies += k.low;
    }
  }
  EXPECT_GT(copies, 0);
  ASSERT_TRUE(v->Close().ok());
  v = Open(0);
  ExpectModel(v.get());
}

// Copies of copies (the lower quarter, cleaned twice) and first copies (the
// next quarter, cleaned once) are made in the same Clean: no segment it
// writes holds both generations, and every byte survives that and a reopen.
TEST_P(CleanerTest, CopiesOfCopiesNeverShareASegmentWithFirstCopies) {
  const uint64_t q = model_.size() / 4;
  auto v = Open(0);  // no background cleaning: only Clean
  FillOnce(v.get());
  auto write = [&](uint64_t b) {
    model_[b]++;
    ASSERT_TRUE(v->Write(b * kBlockSize, Block(b, model_[b])).ok());
  };
  // The first quarter's fill segments about a quarter live: its blocks
  // b % 4 == 0 are copied once.
  for (uint64_t b = 0; b < q; b++) {
    if (b % 4 != 0) write(b);
  }
  auto c = v->Clean(0.5);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_GT(c->blocks_moved, 0u);
  // Those copies about a quarter live, and so are the second quarter's fill
  // segments.
  for (uint64_t b = 0; b < q; b += 4) {
    if (b % 16 != 0) write(b);
  }
  for (uint64_t b = q; b < 2 * q; b++) {
    if (b % 4 != 0) write(b);
  }
  ASSERT_TRUE(v->Flush().ok());
  uint64_t last_before = 0;
  for (const SegmentKinds& k : WrittenRanges(store_, v->Info().id, q)) {
    last_before = std::max(last_before, k.id);
  }
  c = v->Clean(0.5);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ExpectModel(v.get());

  int second = 0, first = 0;
  for (const SegmentKinds& k : WrittenRanges(store_, v->Info().id, q)) {
    if (k.id <= last_before) continue;
    EXPECT_FALSE(k.low && k.high)
        << "segment " << k.id << " mixes copies of copies and first copies";
    second += k.low;
    first += k.high;
  }
  EXPECT_GT(second, 0);
  EXPECT_GT(first, 0);
  ASSERT_TRUE(v->Close().ok());
  v = Open(0);
  ExpectModel(v.get());
}

TEST_P(CleanerTest, BackgroundCleanerBoundsTheLog) {
  std::mt19937_64 rng(12);
  auto v = Open(0.5);
  FillOnce(v.get());
  for (int round = 0; round < 4; round++) {
    Overwrite(v.get(), 1000, rng);
    ASSERT_TRUE(v->Flush().ok());
  }
  // The background thread cleans a segment per pass and asks for
  // checkpoints every few seconds; give it time (no speed is asserted).
  const uint64_t bound = 2 * kVolSize + 6 * kSegSize;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (v->Info().log_bytes > bound && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  VolumeInfo info = v->Info();
  EXPECT_LE(info.log_bytes, bound);
  EXPECT_GT(info.segments_deleted, 0u);
  EXPECT_GT(info.blocks_moved, 0u);
  ExpectModel(v.get());
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  v = Open(0.5);
  ExpectModel(v.get());
}

// Even asked to clean everything, the background cleaner settles: the
// segments it writes are dense and never qualify again.
TEST_P(CleanerTest, BackgroundCleanerSettlesAtAnyThreshold) {
  std::mt19937_64 rng(14);
  auto v = Open(1.0);
  FillOnce(v.get());
  Overwrite(v.get(), 1000, rng);
  ASSERT_TRUE(v->Flush().ok());
  // Wait until it has moved nothing for 3 s (at most 60 s).
  uint64_t moved = v->Info().blocks_moved;
  int still = 0;
  for (int i = 0; i < 600 && still < 30; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    uint64_t now = v->Info().blocks_moved;
    still = now == moved ? still + 1 : 0;
    moved = now;
  }
  EXPECT_EQ(still, 30) << "still moving blocks after 60 s: " << moved;
  EXPECT_LT(moved, 4 * model_.size()) << "the cleaner rewrote the volume over and over";
  ExpectModel(v.get());
}

TEST_P(CleanerTest, TurnedOffItKeepsEverySegment) {
  std::mt19937_64 rng(13);
  auto v = Open(0);
  FillOnce(v.get());
  Overwrite(v.get(), 2000, rng);
  ASSERT_TRUE(v->Close().ok());
  const auto before = StoredSegments();
  v = Open(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // a cleaner pass, were it on
  ASSERT_TRUE(v->Close().ok());
  EXPECT_EQ(StoredSegments(), before);
  // The first segments hold nothing live, yet they are all still there.
  EXPECT_TRUE(store_->Stat(CurrentLogPath(store_, "v") + "/seg/0000000000000001").ok());
}

// Reads run all the time while the cleaner moves their blocks and deletes
// the segments they were in, and a writer writes elsewhere: no read fails
// and none returns anything but the block's data.
TEST_P(CleanerTest, ReadsNeverFailWhileSegmentsAreDeleted) {
  auto v = Open(0);
  FillOnce(v.get());
  ASSERT_TRUE(v->Flush().ok());
  const uint64_t half = model_.size() / 2;  // readers: [0, half); writer: the rest
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0}, bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; t++) {
    readers.emplace_back([&, t] {
      std::mt19937_64 r(100 + t);
      std::vector<uint8_t> got(8 * kBlockSize);
      while (!stop) {
        uint64_t b = r() % (half - 8);
        Status s = v->Read(b * kBlockSize, got);
        bool ok = s.ok();
        for (uint64_t i = 0; ok && i < 8; i++) {
          auto want = Block(b + i, 1);
          ok = std::equal(want.begin(), want.end(), got.begin() + i * kBlockSize);
        }
        if (!ok) {
          bad++;
          ADD_FAILURE() << "read of blocks " << b << "+8: " << s.ToString();
        }
        reads++;
      }
    });
  }
  std::thread writer([&] {
    std::mt19937_64 r(7);
    // Paced: a writer flat out gives each Clean(1.0) ever more to copy (tens
    // of seconds on a slow disk) without testing anything more.
    for (uint64_t n = 0; !stop; n++) {
      uint64_t b = half + r() % (model_.size() - half);
      if (!v->Write(b * kBlockSize, Block(b, 2)).ok()) bad++;
      if (n % 64 == 63) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  uint64_t deleted = 0;
  for (int i = 0; i < 6; i++) {
    auto c = v->Clean(1.0);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    deleted += c->segments_deleted;
  }
  stop = true;
  for (auto& t : readers) t.join();
  writer.join();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_GT(reads.load(), 100u);
  EXPECT_GT(deleted, 6u);
  ASSERT_TRUE(v->Close().ok());
}

// A crash in the middle of a Put (checkpoint, summary, re-log segment)
// leaves a hidden temporary object; a writable Open deletes those in the
// volume's directories, a read-only one leaves them.
TEST_P(CleanerTest, WritableOpenRemovesTemporaryLeftovers) {
  if (!GetParam()) GTEST_SKIP() << "the memory store's Put leaves nothing behind";
  auto v = Open(0);
  FillOnce(v.get());
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  const std::string vol = dir_ + "/" + CurrentLogPath(store_, "v");
  const std::vector<std::string> leftovers = {vol + "/ckpt/.hbiss-tmp-999-1",
                                              vol + "/sum/.hbiss-tmp-999-2",
                                              vol + "/.hbiss-tmp-999-3"};
  for (const auto& f : leftovers) std::ofstream(f) << "half a put";
  std::ofstream(vol + "/ckpt/.hbiss-other") << "not ours";
  OpenOptions ro;
  ro.read_only = true;
  auto r = Volume::Open(store_, "v", ro);
  ASSERT_TRUE(r.ok());
  r->reset();
  for (const auto& f : leftovers) EXPECT_TRUE(std::filesystem::exists(f)) << f;
  v = Open(0);
  ASSERT_TRUE(v != nullptr);
  // The open moved the log into a new epoch directory, leftovers and all.
  const std::string now = dir_ + "/" + CurrentLogPath(store_, "v");
  ASSERT_NE(now, vol);
  for (const auto& f : leftovers) {
    EXPECT_FALSE(std::filesystem::exists(now + f.substr(vol.size()))) << f;
  }
  EXPECT_TRUE(std::filesystem::exists(now + "/ckpt/.hbiss-other"));
  ExpectModel(v.get());
}

TEST(CleanerArgsTest, ReadOnlyVolumeRefusesClean) {
  store::MemoryStore mem;
  CreateOptions co;
  co.size = 1 << 20;
  ASSERT_TRUE(Volume::Create(&mem, "r", co).ok());
  OpenOptions o;
  o.read_only = true;
  auto v = Volume::Open(&mem, "r", o);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE((*v)->Clean(0.5).status().IsNotSupported());
}

}  // namespace
}  // namespace hbiss::volume
