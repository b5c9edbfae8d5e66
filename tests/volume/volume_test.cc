// Volume engine tests on real stores (memory, local directory): lifecycle,
// any-byte-range I/O against a model, persistence across reopen, Busy,
// concurrency and group commit.
#include "volume/epoch.h"
#include "volume/volume.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "store/fault_injection_store.h"
#include "store/local_store.h"
#include "store/memory_store.h"
#include "store/store_wrapper.h"
#include "volume/log_format.h"

namespace hbiss::volume {
namespace {

std::span<const uint8_t> Bytes(const std::vector<uint8_t>& v) { return {v.data(), v.size()}; }

// Counts Sync calls on writers handed out by the wrapped store.
class CountingStore : public store::StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  std::atomic<uint64_t> syncs{0};

  Result<std::unique_ptr<store::SegmentWriter>> Create(const std::string& name) override {
    auto w = target()->Create(name);
    if (!w.ok()) return w.status();
    return std::unique_ptr<store::SegmentWriter>(new Writer(std::move(*w), &syncs));
  }

 private:
  class Writer : public store::SegmentWriterWrapper {
   public:
    Writer(std::unique_ptr<store::SegmentWriter> t, std::atomic<uint64_t>* n)
        : SegmentWriterWrapper(std::move(t)), n_(n) {}
    Status Sync() override {
      (*n_)++;
      return SegmentWriterWrapper::Sync();
    }

   private:
    std::atomic<uint64_t>* n_;
  };
};

// Records the names given to DropCache.
class DropRecordingStore : public store::StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  // Names from seg/ on: segment ids carry over between epochs.
  void DropCache(const std::string& name) override {
    std::lock_guard<std::mutex> g(mu);
    dropped.push_back(name.substr(name.rfind("/seg/") + 1));
    StoreWrapper::DropCache(name);
  }
  std::set<std::string> Dropped() {
    std::lock_guard<std::mutex> g(mu);
    return {dropped.begin(), dropped.end()};
  }
  std::mutex mu;
  std::vector<std::string> dropped;
};

class VolumeTest : public ::testing::Test {
 protected:
  std::unique_ptr<Volume> MakeVolume(uint64_t size, uint64_t seg = 256 << 10,
                                     const std::string& name = "v") {
    CreateOptions co;
    co.size = size;
    co.segment_size = seg;
    EXPECT_TRUE(Volume::Create(&store_, name, co).ok());
    auto v = Volume::Open(&store_, name);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return std::move(*v);
  }
  store::MemoryStore store_;
};

TEST_F(VolumeTest, CreateListStatRemove) {
  CreateOptions co;
  co.size = 10 << 20;
  ASSERT_TRUE(Volume::Create(&store_, "b", co).ok());
  ASSERT_TRUE(Volume::Create(&store_, "a", co).ok());
  EXPECT_TRUE(Volume::Create(&store_, "a", co).IsAlreadyExists());
  auto names = Volume::List(&store_);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, (std::vector<std::string>{"a", "b"}));
  auto st = Volume::Stat(&store_, "a");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->size, 10u << 20);
  EXPECT_NE(st->id, 0u);
  EXPECT_EQ(st->segment_size, 64u << 20);
  EXPECT_NE(Volume::Stat(&store_, "b")->id, st->id);
  ASSERT_TRUE(Volume::Remove(&store_, "a").ok());
  EXPECT_TRUE(Volume::Remove(&store_, "a").IsNotFound());
  EXPECT_TRUE(Volume::Open(&store_, "a").status().IsNotFound());
  EXPECT_EQ(*Volume::List(&store_), (std::vector<std::string>{"b"}));
}

TEST_F(VolumeTest, CreateClearsLeftoversOfAnInterruptedRemove) {
  CreateOptions co;
  co.size = 1 << 20;
  ASSERT_TRUE(Volume::Create(&store_, "r", co).ok());
  {
    auto v = Volume::Open(&store_, "r");
    ASSERT_TRUE(v.ok());
    std::vector<uint8_t> d(8192, 7);
    ASSERT_TRUE((*v)->Write(0, Bytes(d)).ok());
    ASSERT_TRUE((*v)->Close().ok());
  }
  // Remove deleted the meta, then died before deleting the directory.
  ASSERT_TRUE(store_.Delete("volumes/r/meta").ok());
  EXPECT_TRUE(Volume::List(&store_)->empty());
  ASSERT_TRUE(Volume::Create(&store_, "r", co).ok());
  auto v = Volume::Open(&store_, "r");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  std::vector<uint8_t> back(8192, 1);
  ASSERT_TRUE((*v)->Read(0, back).ok());
  EXPECT_TRUE(back == std::vector<uint8_t>(8192, 0));
  EXPECT_EQ((*v)->Info().segment_count, 0u);
  EXPECT_EQ((*v)->Info().checkpoint_seq, 0u);
}

TEST_F(VolumeTest, BadArgumentsChangeNothing) {
  CreateOptions co;
  co.size = 1 << 20;
  for (std::string bad : std::vector<std::string>{"", "..", ".x", "-x", "a/b", std::string(129, 'a'), "a b"}) {
    EXPECT_TRUE(Volume::Create(&store_, bad, co).IsInvalidArgument()) << bad;
  }
  co.size = 0;
  EXPECT_TRUE(Volume::Create(&store_, "x", co).IsInvalidArgument());
  co.size = kMaxVolumeSize + 1;
  EXPECT_TRUE(Volume::Create(&store_, "x", co).IsInvalidArgument());
  co.size = 1 << 20;
  co.segment_size = 5000;
  EXPECT_TRUE(Volume::Create(&store_, "x", co).IsInvalidArgument());
  co.segment_size = 512ull << 20;
  EXPECT_TRUE(Volume::Create(&store_, "x", co).IsInvalidArgument());
  EXPECT_TRUE(Volume::List(&store_)->empty());
  EXPECT_TRUE(Volume::Open(&store_, "nope").status().IsNotFound());
  EXPECT_TRUE(Volume::Remove(&store_, "nope").IsNotFound());
}

TEST_F(VolumeTest, SizeIsRoundedUpToBlocks) {
  auto v = MakeVolume(10000);
  EXPECT_EQ(v->size(), 12288u);
}

TEST_F(VolumeTest, NeverWrittenReadsZerosAndOutOfRangeIsInvalid) {
  auto v = MakeVolume(1 << 20);
  std::vector<uint8_t> buf(10000, 0xcc);
  ASSERT_TRUE(v->Read(12345, buf).ok());
  for (uint8_t b : buf) ASSERT_EQ(b, 0);
  EXPECT_TRUE(v->Read((1 << 20) - 1, std::span<uint8_t>(buf.data(), 2)).IsInvalidArgument());
  EXPECT_TRUE(v->Read(1 << 20, std::span<uint8_t>(buf.data(), 1)).IsInvalidArgument());
  EXPECT_TRUE(v->Read(~0ull - 5, std::span<uint8_t>(buf.data(), 10)).IsInvalidArgument());
  EXPECT_TRUE(v->Write((1 << 20) - 100, Bytes(buf)).IsInvalidArgument());
  EXPECT_TRUE(v->Trim((1 << 20) - 100, 101).IsInvalidArgument());
  EXPECT_TRUE(v->WriteZeroes(1 << 20, 1).IsInvalidArgument());
  EXPECT_TRUE(v->BlockStatus(0, (1 << 20) + 1).status().IsInvalidArgument());
  // Zero-length at the very end is fine.
  EXPECT_TRUE(v->Read(1 << 20, std::span<uint8_t>(buf.data(), 0)).ok());
  EXPECT_TRUE(v->Write(1 << 20, std::span<const uint8_t>()).ok());
  // The last byte is usable.
  uint8_t one = 7;
  ASSERT_TRUE(v->Write((1 << 20) - 1, std::span<const uint8_t>(&one, 1)).ok());
  uint8_t back = 0;
  ASSERT_TRUE(v->Read((1 << 20) - 1, std::span<uint8_t>(&back, 1)).ok());
  EXPECT_EQ(back, 7);
}

// Random byte-granular writes, trims, zeroes and reads, checked against a
// plain byte array, across flushes, segment rollovers and reopen.
void RunModel(store::Store* store, uint64_t seed, int ops, bool reopen) {
  const uint64_t kSize = 2 << 20;
  CreateOptions co;
  co.size = kSize;
  co.segment_size = 128 << 10;  // many rollovers
  std::string name = "m";
  name += std::to_string(seed);  // not "m" + ...: GCC 12 -O3 false -Wrestrict (PR 105651)
  ASSERT_TRUE(Volume::Create(store, name, co).ok());
  OpenOptions oo;
  oo.checkpoint_interval = 300 << 10;
  auto vr = Volume::Open(store, name, oo);
  ASSERT_TRUE(vr.ok()) << vr.status().ToString();
  std::unique_ptr<Volume> v = std::move(*vr);
  std::vector<uint8_t> model(kSize, 0);
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> buf;
  for (int i = 0; i < ops; i++) {
    uint64_t off, len;
    if (rng() % 2) {  // aligned
      off = (rng() % (kSize / 4096)) * 4096;
      len = std::min<uint64_t>((1 + rng() % 40) * 4096, kSize - off);
    } else {
      off = rng() % kSize;
      len = 1 + rng() % std::min<uint64_t>(kSize - off, 70000);
    }
    int kind = int(rng() % 12);
    if (kind < 6) {
      buf.resize(len);
      for (auto& b : buf) b = uint8_t(rng());
      ASSERT_TRUE(v->Write(off, Bytes(buf)).ok());
      std::copy(buf.begin(), buf.end(), model.begin() + off);
    } else if (kind < 7) {
      ASSERT_TRUE(v->Trim(off, len).ok());
      std::fill(model.begin() + off, model.begin() + off + len, 0);
    } else if (kind < 8) {
      ASSERT_TRUE(v->WriteZeroes(off, len).ok());
      std::fill(model.begin() + off, model.begin() + off + len, 0);
    } else if (kind < 9) {
      ASSERT_TRUE(v->Flush().ok());
    } else if (kind < 10 && reopen) {
      ASSERT_TRUE(v->Close().ok());
      v.reset();
      auto r = Volume::Open(store, name, oo);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      v = std::move(*r);
    } else {
      buf.assign(len, 0xee);
      ASSERT_TRUE(v->Read(off, buf).ok());
      ASSERT_TRUE(std::equal(buf.begin(), buf.end(), model.begin() + off))
          << "op " << i << " read at " << off << " len " << len;
    }
  }
  buf.assign(kSize, 0xee);
  ASSERT_TRUE(v->Read(0, buf).ok());
  ASSERT_TRUE(buf == model);
  // BlockStatus agrees: unallocated extents read as zeros.
  auto ext = v->BlockStatus(0, kSize);
  ASSERT_TRUE(ext.ok());
  uint64_t pos = 0;
  for (const Extent& e : *ext) {
    ASSERT_EQ(e.offset, pos);
    if (!e.allocated) {
      for (uint64_t b = e.offset; b < e.offset + e.length; b++) ASSERT_EQ(model[b], 0);
    }
    pos += e.length;
  }
  ASSERT_EQ(pos, kSize);
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  auto r = Volume::Open(store, name, oo);
  ASSERT_TRUE(r.ok());
  buf.assign(kSize, 0xee);
  ASSERT_TRUE((*r)->Read(0, buf).ok());
  ASSERT_TRUE(buf == model);
  VolumeInfo info = (*r)->Info();
  EXPECT_GT(info.checkpoint_seq, 0u);
  EXPECT_GT(info.segment_count, 1u);
}

TEST_F(VolumeTest, AnyByteRangeMatchesModelMemoryStore) {
  for (uint64_t seed = 1; seed <= 4; seed++) {
    ASSERT_NO_FATAL_FAILURE(RunModel(&store_, seed, 600, seed % 2 == 0));
  }
}

TEST(VolumeLocalStoreTest, AnyByteRangeMatchesModel) {
  std::string dir = ::testing::TempDir() + "/hbiss_volume_test_" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  auto st = store::OpenStore(dir, true);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  ASSERT_NO_FATAL_FAILURE(RunModel(st->get(), 11, 400, true));
  std::filesystem::remove_all(dir);
}

TEST_F(VolumeTest, EdgeCasesOfPartialBlocks) {
  auto v = MakeVolume(64 << 10);
  std::vector<uint8_t> all(64 << 10, 0);
  std::vector<uint8_t> data(9000);
  for (size_t i = 0; i < data.size(); i++) data[i] = uint8_t(i * 13 + 1);
  // Straddles three blocks, unaligned both ends.
  ASSERT_TRUE(v->Write(4000, Bytes(data)).ok());
  std::copy(data.begin(), data.end(), all.begin() + 4000);
  // Inside one block.
  ASSERT_TRUE(v->Write(8200, std::span<const uint8_t>(data.data(), 10)).ok());
  std::copy(data.begin(), data.begin() + 10, all.begin() + 8200);
  // Trim a partial range: the edges are zeroed, the middle unmapped.
  ASSERT_TRUE(v->Trim(4001, 8190).ok());
  std::fill(all.begin() + 4001, all.begin() + 4001 + 8190, 0);
  ASSERT_TRUE(v->WriteZeroes(12000, 3).ok());
  std::fill(all.begin() + 12000, all.begin() + 12003, 0);
  std::vector<uint8_t> back(all.size());
  ASSERT_TRUE(v->Read(0, back).ok());
  EXPECT_TRUE(back == all);
  // Survives a flush + reopen (data now comes from the store).
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  auto r = Volume::Open(&store_, "v");
  ASSERT_TRUE(r.ok());
  std::fill(back.begin(), back.end(), 0xaa);
  ASSERT_TRUE((*r)->Read(0, back).ok());
  EXPECT_TRUE(back == all);
  // Small unaligned reads from the store.
  for (uint64_t off : {0ull, 3999ull, 4000ull, 4095ull, 8191ull, 12999ull, 65535ull}) {
    uint8_t b = 0xaa;
    ASSERT_TRUE((*r)->Read(off, std::span<uint8_t>(&b, 1)).ok());
    EXPECT_EQ(b, all[off]) << off;
  }
}

TEST_F(VolumeTest, TrimmedBlocksAreHolesInBlockStatus) {
  auto v = MakeVolume(1 << 20);
  std::vector<uint8_t> data(64 << 10, 1);
  ASSERT_TRUE(v->Write(0, Bytes(data)).ok());
  ASSERT_TRUE(v->Trim(16384, 16384).ok());
  auto ext = v->BlockStatus(0, 1 << 20);
  ASSERT_TRUE(ext.ok());
  ASSERT_EQ(ext->size(), 4u);
  EXPECT_TRUE((*ext)[0].allocated);
  EXPECT_EQ((*ext)[0].length, 16384u);
  EXPECT_FALSE((*ext)[1].allocated);
  EXPECT_EQ((*ext)[1].length, 16384u);
  EXPECT_TRUE((*ext)[2].allocated);
  EXPECT_FALSE((*ext)[3].allocated);
  EXPECT_EQ(v->Info().mapped_bytes, 48u << 10);
}

TEST_F(VolumeTest, PartialTrimOfZeroBlocksAllocatesNothing) {
  auto v = MakeVolume(1 << 20);
  ASSERT_TRUE(v->Trim(100, 10000).ok());
  ASSERT_TRUE(v->WriteZeroes(5000, 1).ok());
  EXPECT_EQ(v->Info().mapped_bytes, 0u);
  std::vector<uint8_t> d(100, 9);
  ASSERT_TRUE(v->Write(4096 + 50, Bytes(d)).ok());
  ASSERT_TRUE(v->Trim(4096 + 50, 100).ok());  // the block is all zeros again
  EXPECT_EQ(v->Info().mapped_bytes, 0u);
  ASSERT_TRUE(v->Write(4096 + 50, Bytes(d)).ok());
  ASSERT_TRUE(v->Trim(4096 + 50, 50).ok());  // half of the data stays
  EXPECT_EQ(v->Info().mapped_bytes, 4096u);
  std::vector<uint8_t> back(100);
  ASSERT_TRUE(v->Read(4096 + 50, back).ok());
  for (int i = 0; i < 100; i++) ASSERT_EQ(back[i], i < 50 ? 0 : 9) << i;
}

TEST_F(VolumeTest, PeriodicCheckpointsAreWritten) {
  CreateOptions co;
  co.size = 8 << 20;
  co.segment_size = 256 << 10;
  ASSERT_TRUE(Volume::Create(&store_, "p", co).ok());
  OpenOptions oo;
  oo.checkpoint_interval = 512 << 10;
  auto v = Volume::Open(&store_, "p", oo);
  ASSERT_TRUE(v.ok());
  std::vector<uint8_t> d(64 << 10, 3);
  for (int i = 0; i < 64; i++) {
    ASSERT_TRUE((*v)->Write(uint64_t(i) * d.size(), Bytes(d)).ok());
    ASSERT_TRUE((*v)->Flush().ok());
  }
  // 4 MiB of log with a 512 KiB interval: several checkpoints, before Close.
  EXPECT_GE((*v)->Info().checkpoint_seq, 4u);
  // Another reader sees a recent checkpoint while the volume is open.
  EXPECT_GE(Volume::Stat(&store_, "p")->mapped_bytes, 256u << 10);
  ASSERT_TRUE((*v)->Close().ok());
  auto ck = store_.List(CurrentLogPath(&store_, "p") + "/ckpt");
  ASSERT_TRUE(ck.ok());
  EXPECT_EQ(ck->size(), 2u);  // only the newest two are kept
}

// Regression: when an operation found the open batch full and sealed it,
// the last entry of the previous, finished operation was marked CONTINUES,
// so a crash that cut the new operation also dropped the finished (and
// possibly flushed) one. Found by the concurrent crash test.
TEST_F(VolumeTest, SealingByNextOpDoesNotMarkFinishedOpContinuing) {
  auto v = MakeVolume(8 << 20, 4 << 20);
  std::vector<uint8_t> a(256 * 4096, 1);  // exactly one full batch (256 data slots)
  ASSERT_TRUE(v->Write(0, Bytes(a)).ok());
  std::vector<uint8_t> b(4096, 2);
  ASSERT_TRUE(v->Write(4 << 20, Bytes(b)).ok());  // finds the batch full and seals it
  ASSERT_TRUE(v->Close().ok());
  auto seg = store_.Get(CurrentLogPath(&store_, "v") + "/seg/" + Hex16(1));
  ASSERT_TRUE(seg.ok());
  BatchHeader h;
  ASSERT_TRUE(DecodeBatchHeader(std::span<const uint8_t>(
                                    reinterpret_cast<const uint8_t*>(seg->data()) + 4096, 4096),
                                &h)
                  .ok());
  ASSERT_EQ(h.entries.size(), 1u);
  EXPECT_EQ(h.entries[0].count, 256u);
  EXPECT_FALSE(h.entries[0].continues);
}

TEST_F(VolumeTest, SecondOpenForWritingIsBusy) {
  auto v = MakeVolume(1 << 20);
  auto second = Volume::Open(&store_, "v");
  EXPECT_TRUE(second.status().IsBusy()) << second.status().ToString();
  EXPECT_TRUE(Volume::Remove(&store_, "v").IsBusy());
  // Read-only opens and Stat work meanwhile.
  OpenOptions ro;
  ro.read_only = true;
  auto r = Volume::Open(&store_, "v", ro);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE((*r)->read_only());
  uint8_t b = 1;
  EXPECT_FALSE((*r)->Write(0, std::span<const uint8_t>(&b, 1)).ok());
  EXPECT_TRUE(Volume::Stat(&store_, "v").ok());
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  auto third = Volume::Open(&store_, "v");
  EXPECT_TRUE(third.ok());
}

TEST(VolumeLocalStoreTest, SecondOpenForWritingIsBusy) {
  std::string dir = ::testing::TempDir() + "/hbiss_volume_busy_" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  auto st = store::OpenStore(dir, true);
  ASSERT_TRUE(st.ok());
  CreateOptions co;
  co.size = 1 << 20;
  ASSERT_TRUE(Volume::Create(st->get(), "v", co).ok());
  auto a = Volume::Open(st->get(), "v");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(Volume::Open(st->get(), "v").status().IsBusy());
  a->reset();
  EXPECT_TRUE(Volume::Open(st->get(), "v").ok());
  std::filesystem::remove_all(dir);
}

TEST_F(VolumeTest, ClosedVolumeRefusesCalls) {
  auto v = MakeVolume(1 << 20);
  ASSERT_TRUE(v->Close().ok());
  uint8_t b = 0;
  EXPECT_FALSE(v->Read(0, std::span<uint8_t>(&b, 1)).ok());
  EXPECT_FALSE(v->Write(0, std::span<const uint8_t>(&b, 1)).ok());
  EXPECT_FALSE(v->Flush().ok());
  EXPECT_FALSE(v->Close().ok());
}

// Several threads write disjoint regions, read them back and flush, all at
// once; afterwards every region holds its thread's last data, also after
// reopen. Concurrent flushes share syncs (group commit).
TEST(VolumeConcurrencyTest, DisjointWritersReadersAndGroupCommit) {
  store::MemoryStore mem;
  CountingStore store(&mem);
  CreateOptions co;
  co.size = 16 << 20;
  co.segment_size = 1 << 20;
  ASSERT_TRUE(Volume::Create(&store, "c", co).ok());
  auto vr = Volume::Open(&store, "c");
  ASSERT_TRUE(vr.ok());
  Volume* v = vr->get();
  const int kThreads = 6;
  const uint64_t kRegion = co.size / kThreads / 4096 * 4096;
  std::atomic<uint64_t> flush_calls{0};
  std::atomic<bool> failed{false};
  std::vector<std::vector<uint8_t>> expect(kThreads, std::vector<uint8_t>(kRegion, 0));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t + 100);
      std::vector<uint8_t> buf;
      const uint64_t base = uint64_t(t) * kRegion;
      for (int i = 0; i < 1500 && !failed; i++) {
        uint64_t off = rng() % kRegion;
        uint64_t len = 1 + rng() % std::min<uint64_t>(kRegion - off, 20000);
        if (rng() % 3) {
          off = off / 4096 * 4096;
          len = std::min<uint64_t>((len + 4095) / 4096 * 4096, kRegion - off);
        }
        int kind = int(rng() % 10);
        if (kind < 6) {
          buf.resize(len);
          for (auto& b : buf) b = uint8_t(rng());
          if (!v->Write(base + off, Bytes(buf)).ok()) failed = true;
          std::copy(buf.begin(), buf.end(), expect[t].begin() + off);
        } else if (kind < 7) {
          if (!v->Trim(base + off, len).ok()) failed = true;
          std::fill(expect[t].begin() + off, expect[t].begin() + off + len, 0);
        } else if (kind < 9) {
          buf.resize(len);
          if (!v->Read(base + off, buf).ok() ||
              !std::equal(buf.begin(), buf.end(), expect[t].begin() + off)) {
            failed = true;
          }
        } else {
          flush_calls++;
          if (!v->Flush().ok()) failed = true;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_FALSE(failed);
  // A burst of concurrent flushes after concurrent writes.
  const uint64_t syncs_before = store.syncs;
  const uint64_t calls_before = flush_calls;
  threads.clear();
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> buf(4096, uint8_t(t));
      for (int i = 0; i < 50; i++) {
        if (!v->Write(uint64_t(t) * kRegion, Bytes(buf)).ok()) failed = true;
        std::copy(buf.begin(), buf.end(), expect[t].begin());
        flush_calls++;
        if (!v->Flush().ok()) failed = true;
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_FALSE(failed);
  uint64_t burst_syncs = store.syncs - syncs_before;
  uint64_t burst_calls = flush_calls - calls_before;
  EXPECT_LT(burst_syncs, burst_calls) << "flushes were not group-committed";
  EXPECT_LT(store.syncs.load(), flush_calls.load());
  RecordProperty("flush_calls", std::to_string(flush_calls.load()));
  RecordProperty("syncs", std::to_string(store.syncs.load()));
  std::vector<uint8_t> buf(kRegion);
  for (int t = 0; t < kThreads; t++) {
    ASSERT_TRUE(v->Read(uint64_t(t) * kRegion, buf).ok());
    ASSERT_TRUE(buf == expect[t]) << "region " << t;
  }
  ASSERT_TRUE(v->Close().ok());
  vr->reset();
  auto again = Volume::Open(&store, "c");
  ASSERT_TRUE(again.ok());
  for (int t = 0; t < kThreads; t++) {
    ASSERT_TRUE((*again)->Read(uint64_t(t) * kRegion, buf).ok());
    ASSERT_TRUE(buf == expect[t]) << "region " << t << " after reopen";
  }
}

TEST_F(VolumeTest, FlushWithNothingNewDoesNotSync) {
  CountingStore store(&store_);
  CreateOptions co;
  co.size = 1 << 20;
  ASSERT_TRUE(Volume::Create(&store, "f", co).ok());
  auto v = Volume::Open(&store, "f");
  ASSERT_TRUE(v.ok());
  std::vector<uint8_t> b(4096, 1);
  ASSERT_TRUE((*v)->Write(0, Bytes(b)).ok());
  ASSERT_TRUE((*v)->Flush().ok());
  uint64_t n = store.syncs;
  EXPECT_GE(n, 1u);
  for (int i = 0; i < 10; i++) ASSERT_TRUE((*v)->Flush().ok());
  EXPECT_EQ(store.syncs.load(), n);
}

// Large writes span many batches and segments and still round-trip.
TEST_F(VolumeTest, LargeWriteSpansSegments) {
  auto v = MakeVolume(8 << 20, 64 << 10);
  std::vector<uint8_t> data(5 << 20);
  std::mt19937 rng(3);
  for (auto& b : data) b = uint8_t(rng());
  ASSERT_TRUE(v->Write(4096 * 3 + 17, Bytes(data)).ok());
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  auto r = Volume::Open(&store_, "v");
  ASSERT_TRUE(r.ok());
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE((*r)->Read(4096 * 3 + 17, back).ok());
  EXPECT_TRUE(back == data);
  EXPECT_GT((*r)->Info().segment_count, 80u);
}

TEST_F(VolumeTest, MapMemoryIsReported) {
  auto v = MakeVolume(64 << 20, 64 << 20);
  std::vector<uint8_t> b(4096, 1);
  for (uint64_t i = 0; i < 16384; i += 2) ASSERT_TRUE(v->Write(i * 4096, Bytes(b)).ok());
  VolumeInfo info = v->Info();
  EXPECT_EQ(info.mapped_bytes, 8192u * 4096);
  EXPECT_GT(info.map_memory_bytes, 0u);
  // Every other block: each its own extent in a half-full chunk, the
  // sparse form's worst case (8 bytes per extent plus growth slack).
  EXPECT_LE(info.map_memory_bytes, 8192u * 10);
}

// A store I/O error in the log fails the Flush that needed it, and the
// volume then refuses writes and flushes instead of pretending; a reopen
// recovers what was flushed before.
TEST(VolumeErrorTest, StoreErrorsFailFlushAndTheVolume) {
  using store::FaultInjectionStore;
  for (auto op : {FaultInjectionStore::Op::kSync, FaultInjectionStore::Op::kAppend,
                  FaultInjectionStore::Op::kCreate}) {
    SCOPED_TRACE(FaultInjectionStore::OpName(op));
    store::MemoryStore mem;
    FaultInjectionStore fs(&mem, 5);
    CreateOptions co;
    co.size = 1 << 20;
    co.segment_size = 64 << 10;
    ASSERT_TRUE(Volume::Create(&fs, "e", co).ok());
    std::vector<uint8_t> a(8192, 0xaa), b(8192, 0xbb), back(8192);
    {
      auto v = Volume::Open(&fs, "e");
      ASSERT_TRUE(v.ok());
      ASSERT_TRUE((*v)->Write(0, Bytes(a)).ok());
      ASSERT_TRUE((*v)->Flush().ok());
      ASSERT_TRUE((*v)->Close().ok());
    }
    auto v = Volume::Open(&fs, "e");
    ASSERT_TRUE(v.ok());
    fs.FailNext(op);
    ASSERT_TRUE((*v)->Write(8192, Bytes(b)).ok());  // in memory: succeeds
    Status s = (*v)->Flush();
    EXPECT_TRUE(s.IsIOError()) << s.ToString();
    EXPECT_TRUE((*v)->Write(0, Bytes(b)).IsIOError());
    EXPECT_TRUE((*v)->Trim(0, 4096).IsIOError());
    EXPECT_TRUE((*v)->Flush().IsIOError());
    // Reads still work and show what was acknowledged.
    ASSERT_TRUE((*v)->Read(8192, back).ok());
    EXPECT_TRUE(back == b);
    EXPECT_FALSE((*v)->Close().ok());
    v->reset();
    auto r = Volume::Open(&fs, "e");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_TRUE((*r)->Read(0, back).ok());
    EXPECT_TRUE(back == a);  // flushed before the failure
    ASSERT_TRUE((*r)->Read(8192, back).ok());
    std::vector<uint8_t> zeros(8192, 0);
    EXPECT_TRUE(back == b || back == zeros);  // unflushed: all or nothing
  }
}

TEST(VolumeErrorTest, FailedCheckpointOnCloseLosesNothingFlushed) {
  using store::FaultInjectionStore;
  store::MemoryStore mem;
  FaultInjectionStore fs(&mem, 6);
  CreateOptions co;
  co.size = 1 << 20;
  ASSERT_TRUE(Volume::Create(&fs, "p", co).ok());
  std::vector<uint8_t> a(20000, 0x5a), back(20000);
  auto v = Volume::Open(&fs, "p");
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE((*v)->Write(100, Bytes(a)).ok());
  fs.FailNext(FaultInjectionStore::Op::kPut);
  EXPECT_FALSE((*v)->Close().ok());
  v->reset();
  EXPECT_EQ(Volume::Stat(&fs, "p")->checkpoint_seq, 0u);
  auto r = Volume::Open(&fs, "p");
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->Read(100, back).ok());
  EXPECT_TRUE(back == a);
}

}  // namespace
}  // namespace hbiss::volume

namespace hbiss::volume {
namespace {

// The segment objects of volume `v` in `store`, as "seg/<id>" (the epoch
// directory changes at every writable open; the ids carry over).
std::set<std::string> SegmentNames(store::Store* store, const std::string& v) {
  std::set<std::string> out;
  auto list = store->List(CurrentLogPath(store, v) + "/seg");
  EXPECT_TRUE(list.ok());
  if (list.ok()) {
    for (const auto& o : *list) out.insert("seg/" + o.name);
  }
  return out;
}

// A closed segment whose every block was overwritten or trimmed is handed to
// Store::DropCache (once); a segment with one live block left is not, also
// after a reopen rebuilt the counts from the checkpoint and the log.
TEST(VolumeLiveBlocksTest, DeadSegmentsAreDroppedFromTheCacheAndLiveOnesAreNot) {
  store::MemoryStore mem;
  DropRecordingStore store(&mem);
  CreateOptions co;
  co.size = 4 << 20;
  co.segment_size = 256 << 10;
  ASSERT_TRUE(Volume::Create(&store, "v", co).ok());
  std::vector<uint8_t> chunk(64 << 10, 0xa5);
  auto fill = [&](Volume* v, uint64_t from) {
    for (uint64_t off = from; off < co.size; off += chunk.size()) {
      ASSERT_TRUE(v->Write(off, Bytes(chunk)).ok());
    }
  };
  {
    auto v = Volume::Open(&store, "v");
    ASSERT_TRUE(v.ok());
    fill(v->get(), 0);
    ASSERT_TRUE((*v)->Close().ok());
  }
  EXPECT_TRUE(store.Dropped().empty()) << "every segment of the first fill is live";
  const std::set<std::string> first = SegmentNames(&store, "v");
  ASSERT_GE(first.size(), 16u);
  {
    // Block 0 of the second fill stays live: its segment must not be dropped.
    auto v = Volume::Open(&store, "v");
    ASSERT_TRUE(v.ok());
    fill(v->get(), 0);
    ASSERT_TRUE((*v)->Close().ok());
  }
  EXPECT_EQ(store.Dropped(), first);
  EXPECT_EQ(store.dropped.size(), first.size()) << "a segment was dropped twice";
  std::set<std::string> second;
  for (const auto& n : SegmentNames(&store, "v")) {
    if (!first.count(n)) second.insert(n);
  }
  {
    auto v = Volume::Open(&store, "v");
    ASSERT_TRUE(v.ok());
    std::vector<uint8_t> one(4096, 1);
    ASSERT_TRUE((*v)->Write(4096, Bytes(one)).ok());  // block 1; block 0 keeps its segment
    ASSERT_TRUE((*v)->Trim(8192, co.size - 8192).ok());
    fill(v->get(), 64 << 10);  // everything but the first 64 KiB again
    ASSERT_TRUE((*v)->Close().ok());
  }
  // The second fill's segments are dead now except the one holding block 0
  // (block 1 was rewritten, blocks 2.. were trimmed, 16.. rewritten).
  std::set<std::string> dropped = store.Dropped();
  size_t second_dropped = 0;
  for (const auto& n : second) second_dropped += dropped.count(n);
  EXPECT_EQ(second_dropped + 1, second.size());
  std::string holder;
  for (const auto& n : second) {
    if (!dropped.count(n)) holder = n;
  }
  {
    auto v = Volume::Open(&store, "v");
    ASSERT_TRUE(v.ok());
    std::vector<uint8_t> head(64 << 10, 2);
    ASSERT_TRUE((*v)->Write(0, Bytes(head)).ok());  // the last live blocks of `holder`
    ASSERT_TRUE((*v)->Close().ok());
  }
  EXPECT_TRUE(store.Dropped().count(holder)) << holder;
  // The data is intact whatever was dropped.
  auto v = Volume::Open(&store, "v");
  ASSERT_TRUE(v.ok());
  std::vector<uint8_t> got(co.size);
  ASSERT_TRUE((*v)->Read(0, got).ok());
  EXPECT_EQ(got[0], 2);
  EXPECT_EQ(got[(64 << 10) - 1], 2);
  EXPECT_EQ(got[64 << 10], 0xa5);
  EXPECT_EQ(got[co.size - 1], 0xa5);
}

}  // namespace
}  // namespace hbiss::volume

namespace hbiss::volume {
namespace {

// A store whose volume locks look held by a dead host's writer (as on HDFS
// before the lease's soft limit) until BreakLock is called.
class StaleLockStore : public store::StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  Result<std::unique_ptr<store::Lock>> TryLock(const std::string& name) override {
    if (!broken) return Status::Busy(name + " is held by a lease of a dead writer");
    return StoreWrapper::TryLock(name);
  }
  Status BreakLock(const std::string& name) override {
    breaks++;
    if (!break_result.ok()) return break_result;
    broken = true;
    return StoreWrapper::BreakLock(name);
  }
  bool broken = false;
  int breaks = 0;
  Status break_result;
};

TEST(VolumeBreakLockTest, BreakLockTakesOverAVolumeWhoseHolderIsGone) {
  store::MemoryStore mem;
  CreateOptions co;
  co.size = 1 << 20;
  ASSERT_TRUE(Volume::Create(&mem, "v", co).ok());
  std::vector<uint8_t> data(8192, 0x5c);
  {
    auto v = Volume::Open(&mem, "v");
    ASSERT_TRUE(v.ok());
    ASSERT_TRUE((*v)->Write(4096, Bytes(data)).ok());
    ASSERT_TRUE((*v)->Flush().ok());
    // A live holder is never broken on a store whose locks die with it.
    EXPECT_TRUE(Volume::BreakLock(&mem, "v").IsBusy());
    auto second = Volume::Open(&mem, "v");
    EXPECT_TRUE(second.status().IsBusy()) << second.status().ToString();
    ASSERT_TRUE((*v)->Close().ok());
  }
  StaleLockStore stale(&mem);
  auto plain = Volume::Open(&stale, "v");
  EXPECT_TRUE(plain.status().IsBusy()) << plain.status().ToString();
  EXPECT_EQ(stale.breaks, 0) << "an open never breaks a lock";

  stale.break_result = Status::IOError("namenode unreachable");
  Status failed = Volume::BreakLock(&stale, "v");
  EXPECT_TRUE(failed.IsIOError()) << failed.ToString();

  stale.break_result = Status::OK();
  ASSERT_TRUE(Volume::BreakLock(&stale, "v").ok());
  auto v = Volume::Open(&stale, "v");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(stale.breaks, 2);
  std::vector<uint8_t> got(8192);
  ASSERT_TRUE((*v)->Read(4096, got).ok());
  EXPECT_EQ(got, data);
  ASSERT_TRUE((*v)->Close().ok());
}

}  // namespace
}  // namespace hbiss::volume

namespace hbiss::volume {
namespace {

// Looks like a remote store (no local read cache) and counts reads.
class RemoteCountingStore : public store::StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  bool CachesReadsLocally() const override { return false; }
  Result<std::unique_ptr<store::SegmentReader>> Open(const std::string& name) override {
    auto r = StoreWrapper::Open(name);
    if (!r.ok()) return r.status();
    return std::unique_ptr<store::SegmentReader>(new Reader(std::move(*r), this));
  }
  std::atomic<uint64_t> reads{0};
  std::atomic<uint64_t> read_bytes{0};

 private:
  class Reader : public store::SegmentReaderWrapper {
   public:
    Reader(std::unique_ptr<store::SegmentReader> t, RemoteCountingStore* s)
        : SegmentReaderWrapper(std::move(t)), s_(s) {}
    Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
      s_->reads++;
      auto n = SegmentReaderWrapper::ReadAt(offset, out);
      if (n.ok()) s_->read_bytes += *n;
      return n;
    }

   private:
    RemoteCountingStore* s_;
  };
};

// On a store without a local cache, small reads of closed segments fill the
// volume's chunk cache (64 KiB chunks) and are then served from it; big reads
// go around it; cache_bytes = 0 turns it off; what is read always matches a
// model.
TEST(VolumeChunkCacheTest, SmallReadsAreServedFromTheCacheOnRemoteStores) {
  store::MemoryStore mem;
  CreateOptions co;
  co.size = 8 << 20;
  co.segment_size = 1 << 20;
  ASSERT_TRUE(Volume::Create(&mem, "v", co).ok());
  std::mt19937_64 rng(11);
  std::vector<uint8_t> model(co.size);
  for (auto& b : model) b = uint8_t(rng());
  {
    auto v = Volume::Open(&mem, "v");
    ASSERT_TRUE(v.ok());
    for (uint64_t off = 0; off < co.size; off += 256 << 10) {
      ASSERT_TRUE((*v)->Write(off, std::span<const uint8_t>(model.data() + off, 256 << 10)).ok());
    }
    ASSERT_TRUE((*v)->Close().ok());
  }
  RemoteCountingStore remote(&mem);
  auto v = Volume::Open(&remote, "v");
  ASSERT_TRUE(v.ok());
  std::vector<uint8_t> buf(4096);
  auto read = [&](uint64_t off, size_t len) {
    buf.resize(len);
    ASSERT_TRUE((*v)->Read(off, buf).ok());
    ASSERT_TRUE(std::equal(buf.begin(), buf.end(), model.begin() + off)) << off << "+" << len;
  };
  read(100 << 12, 4096);  // warms the segment's CRC table, then one chunk
  uint64_t after_first = remote.reads;
  read(100 << 12, 4096);
  read(101 << 12, 100);  // same 64 KiB chunk (blocks are laid out in order)
  EXPECT_EQ(remote.reads, after_first) << "hits must not reach the store";
  uint64_t before = remote.reads;
  read(3 << 20, 4096);  // another segment's chunk: its CRC table and one chunk
  EXPECT_GT(remote.reads, before);
  before = remote.read_bytes;
  read(1 << 20, 512 << 10);  // big: around the cache, exactly what was asked
  EXPECT_GE(remote.read_bytes - before, uint64_t(512) << 10);
  // Random small reads everywhere, checked against the model.
  for (int i = 0; i < 2000; i++) {
    uint64_t off = rng() % (co.size - 20000);
    read(off, 1 + rng() % 20000);
  }
  ASSERT_TRUE((*v)->Close().ok());

  // Without the cache every small read goes to the store.
  OpenOptions no_cache;
  no_cache.cache_bytes = 0;
  auto w = Volume::Open(&remote, "v", no_cache);
  ASSERT_TRUE(w.ok());
  std::vector<uint8_t> one(4096);
  ASSERT_TRUE((*w)->Read(100 << 12, one).ok());
  before = remote.reads;
  ASSERT_TRUE((*w)->Read(100 << 12, one).ok());
  EXPECT_EQ(remote.reads, before + 1);
  EXPECT_TRUE(std::equal(one.begin(), one.end(), model.begin() + (100 << 12)));
}

}  // namespace
}  // namespace hbiss::volume
