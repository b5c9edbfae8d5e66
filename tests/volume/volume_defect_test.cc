// Regression tests for engine defects found by reading the code (issue 8),
// through the public Volume API on a local-directory store:
//  * the cleaner spun forever on a segment whose batch header is damaged;
//  * open segment readers (file descriptors) were bounded per volume, not
//    per process.
#include <gtest/gtest.h>

#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "store/local_store.h"
#include "volume/epoch.h"
#include "volume/log_format.h"
#include "volume/segment_cache.h"
#include "volume/volume.h"

namespace hbiss::volume {
namespace {

using std::chrono::seconds;

std::vector<uint8_t> Block(uint64_t block, uint64_t version) {
  std::vector<uint8_t> b(kBlockSize);
  for (size_t i = 0; i < b.size(); i++) b[i] = uint8_t(block * 11 + version * 67 + i / 8);
  std::memcpy(b.data(), &block, 8);
  std::memcpy(b.data() + 8, &version, 8);
  return b;
}

// Runs fn on a thread and waits up to `limit` for it. A call still running
// then is a hang: the test fails and the process exits at once, since the
// stuck thread still uses the volume (a hung test must not hang CI).
template <typename T>
T WithinOrDie(std::chrono::steady_clock::duration limit, const char* what, std::function<T()> fn) {
  auto f = std::async(std::launch::async, std::move(fn));
  if (f.wait_for(limit) != std::future_status::ready) {
    ADD_FAILURE() << what << " did not return within the time limit (it hangs)";
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(1);
  }
  return f.get();
}

// Descriptors this process has open.
int OpenFds() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  int n = 0;
  while (struct dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') n++;
  }
  closedir(d);
  return n - 1;  // the directory stream itself
}

double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

class DefectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/hbiss_defect_test_" + std::to_string(getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    auto s = store::OpenLocalStore(dir_, true);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Volume> Open(const std::string& name, double clean_threshold) {
    OpenOptions o;
    o.clean_threshold = clean_threshold;
    auto v = Volume::Open(store_.get(), name, o);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? std::move(*v) : nullptr;
  }

  void WriteBlocks(Volume* v, uint64_t first, uint64_t n, uint64_t version) {
    std::vector<uint8_t> all;
    for (uint64_t b = first; b < first + n; b++) {
      auto p = Block(b, version);
      all.insert(all.end(), p.begin(), p.end());
    }
    ASSERT_TRUE(v->Write(first * kBlockSize, all).ok());
  }
  void ExpectBlocks(Volume* v, uint64_t first, uint64_t n, uint64_t version) {
    std::vector<uint8_t> got(kBlockSize);
    for (uint64_t b = first; b < first + n; b++) {
      Status s = v->Read(b * kBlockSize, got);
      ASSERT_TRUE(s.ok()) << "block " << b << ": " << s.ToString();
      ASSERT_TRUE(got == Block(b, version)) << "block " << b << " version " << version;
    }
  }

  std::string Get(const std::string& obj) {
    auto r = store_->Get(obj);
    EXPECT_TRUE(r.ok()) << obj << ": " << r.status().ToString();
    return r.ok() ? *r : std::string();
  }
  void Put(const std::string& obj, const std::string& d) {
    ASSERT_TRUE(
        store_->Put(obj, {reinterpret_cast<const uint8_t*>(d.data()), d.size()}).ok());
  }

  std::string dir_;
  std::unique_ptr<store::Store> store_;
};

// --- The cleaner and a damaged batch header ---------------------------------

constexpr char kCv[] = "cv";
// Segment `id` of volume kCv in `s`'s current epoch.
std::string SegObj(store::Store* s, uint64_t id) {
  return CurrentLogPath(s, kCv) + "/seg/" + Hex16(id);
}

// Segment 1 of volume kCv (256 KiB: 64 slots) holds 12 batches of 4 blocks
// (blocks 0..47; batch i's header at slot 1 + 5i). Blocks 0..39 are then
// overwritten elsewhere, so it is 8/62 live: a victim at threshold 0.5. The
// header of batch 11 (blocks 44..47) is damaged; its summary object still
// has the CRCs, so reads of 44..47 succeed, but a scan of the segment's
// batch headers stops before them.
class DamagedHeaderTest : public DefectTest {
 protected:
  void SetUp() override {
    DefectTest::SetUp();
    CreateOptions co;
    co.size = 4 << 20;
    co.segment_size = 256 << 10;
    ASSERT_TRUE(Volume::Create(store_.get(), kCv, co).ok());
    auto v = Open(kCv, 0);
    ASSERT_TRUE(v != nullptr);
    for (uint64_t i = 0; i < 40; i++) {
      WriteBlocks(v.get(), i * 4, 4, 1);
      ASSERT_TRUE(v->Flush().ok());
    }
    WriteBlocks(v.get(), 0, 40, 2);
    ASSERT_TRUE(v->Close().ok());
    v.reset();
    std::string seg = Get(SegObj(store_.get(), 1));
    const uint64_t header11 = uint64_t(kSlotSize) * (1 + 11 * 5);
    // The layout this test relies on: block 44 right after that header.
    ASSERT_GE(seg.size(), header11 + 2 * kSlotSize);
    auto b44 = Block(44, 1);
    ASSERT_EQ(std::memcmp(seg.data() + header11 + kSlotSize, b44.data(), kBlockSize), 0);
    seg[header11] ^= 0x40;  // the batch magic
    Put(SegObj(store_.get(), 1), seg);
  }

  void ExpectAll(Volume* v) {
    ExpectBlocks(v, 0, 40, 2);
    ExpectBlocks(v, 40, 120, 1);
  }
};

// Pins: the cleaner found fewer live blocks in the segment than its live
// count said (the scan stopped at the damaged header), copied what it found,
// returned OK, and picked the same victim again, forever: Clean never
// returned. Now the segment is marked unclean and Clean returns Corruption;
// its blocks stay readable and the segment is kept.
TEST_F(DamagedHeaderTest, CleanDoesNotSpinOnSegmentWithDamagedBatchHeader) {
  auto v = Open(kCv, 0);
  ASSERT_TRUE(v != nullptr);
  Volume* vol = v.get();
  auto c = WithinOrDie<Result<CleanStats>>(seconds(30), "Clean",
                                           [vol] { return vol->Clean(0.5); });
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(c.status().IsCorruption()) << c.status().ToString();
  ExpectAll(vol);
  const uint64_t moved = vol->Info().blocks_moved;
  EXPECT_LE(moved, 8u);
  EXPECT_TRUE(store_->Stat(SegObj(store_.get(), 1)).ok()) << "a segment with live blocks was deleted";

  // That segment is not tried again: nothing copied, and no error either.
  const auto t0 = std::chrono::steady_clock::now();
  auto c2 = WithinOrDie<Result<CleanStats>>(seconds(30), "the second Clean",
                                            [vol] { return vol->Clean(0.5); });
  EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(10));
  ASSERT_TRUE(c2.ok()) << c2.status().ToString();
  EXPECT_EQ(c2->blocks_moved, 0u);
  EXPECT_EQ(vol->Info().blocks_moved, moved);
  ExpectAll(vol);
  ASSERT_TRUE(vol->Close().ok());
  v.reset();
  EXPECT_TRUE(store_->Stat(SegObj(store_.get(), 1)).ok()) << "a segment with live blocks was deleted";
  v = Open(kCv, 0);
  ASSERT_TRUE(v != nullptr);
  ExpectAll(v.get());
}

// Pins the same spin in the background cleaner: it took the copy-nothing
// pass as progress and went round again at once, burning a core and
// re-reading the segment for as long as the volume was open. Now it gives
// the segment up: the process goes idle and blocks_moved stops growing.
TEST_F(DamagedHeaderTest, BackgroundCleanerDoesNotBusyLoopOnDamagedBatchHeader) {
  auto v = Open(kCv, 0.5);
  ASSERT_TRUE(v != nullptr);
  // Its first pass copies the blocks the scan does see (40..43).
  for (int i = 0; i < 300 && v->Info().blocks_moved < 4; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_GE(v->Info().blocks_moved, 4u) << "the background cleaner never ran";
  std::this_thread::sleep_for(seconds(2));
  const uint64_t moved = v->Info().blocks_moved;
  const double cpu0 = ProcessCpuSeconds();
  std::this_thread::sleep_for(seconds(3));
  const double cpu = ProcessCpuSeconds() - cpu0;
  EXPECT_LT(cpu, 0.5) << "the idle volume used " << cpu << " s of CPU in 3 s";
  EXPECT_EQ(v->Info().blocks_moved, moved);
  ExpectAll(v.get());
  EXPECT_TRUE(store_->Stat(SegObj(store_.get(), 1)).ok()) << "a segment with live blocks was deleted";
  ASSERT_TRUE(v->Close().ok());
}

// --- Descriptors -------------------------------------------------------------

// Pins: each volume kept up to 512 segment readers open (a descriptor each
// on the local store), so a process serving many volumes ran out of
// descriptors. Now readers of every volume share one ReaderPool: with its
// capacity at 32, reading 4 volumes of 100+ closed segments each keeps the
// process within 32 descriptors (plus a few per volume: its lock, its open
// segment) of where it started, and every byte still verifies.
TEST_F(DefectTest, OpenDescriptorsAreBoundedPerProcessNotPerVolume) {
  constexpr uint64_t kCapacity = 32;
  constexpr int kVolumes = 4;
  constexpr uint64_t kData = 8 << 20;    // ~146 segments of 64 KiB each
  constexpr uint64_t kChunk = 64 << 10;  // bytes per write / read
  const uint64_t saved = DefaultReaderPool().capacity();
  DefaultReaderPool().SetCapacity(kCapacity);
  struct Restore {
    uint64_t c;
    ~Restore() { DefaultReaderPool().SetCapacity(c); }
  } restore{saved};

  auto name = [](int i) { return "fd" + std::to_string(i); };
  auto chunk = [](int vol, uint64_t off) {
    std::vector<uint8_t> d;
    for (uint64_t b = off / kBlockSize; b < (off + kChunk) / kBlockSize; b++) {
      auto p = Block(b, 100 + vol);
      d.insert(d.end(), p.begin(), p.end());
    }
    return d;
  };
  for (int i = 0; i < kVolumes; i++) {
    CreateOptions co;
    co.size = kData;
    co.segment_size = 64 << 10;
    ASSERT_TRUE(Volume::Create(store_.get(), name(i), co).ok());
    auto v = Open(name(i), 0);
    ASSERT_TRUE(v != nullptr);
    for (uint64_t off = 0; off < kData; off += kChunk) {
      ASSERT_TRUE(v->Write(off, chunk(i, off)).ok());
    }
    ASSERT_TRUE(v->Close().ok());
    auto segs = store_->List(CurrentLogPath(store_.get(), name(i)) + "/seg");
    ASSERT_TRUE(segs.ok());
    ASSERT_GE(segs->size(), 100u);
  }

  const int baseline = OpenFds();
  ASSERT_GT(baseline, 0);
  const int limit = baseline + int(kCapacity) + 4 * kVolumes;
  // Reopened, every read goes to the store.
  std::vector<std::unique_ptr<Volume>> vols;
  for (int i = 0; i < kVolumes; i++) {
    vols.push_back(Open(name(i), 0));
    ASSERT_TRUE(vols.back() != nullptr);
  }
  int most = OpenFds();
  std::vector<uint8_t> got(kChunk);
  for (uint64_t off = 0; off < kData; off += kChunk) {
    for (int i = 0; i < kVolumes; i++) {
      Status s = vols[i]->Read(off, got);
      ASSERT_TRUE(s.ok()) << name(i) << " at " << off << ": " << s.ToString();
      ASSERT_TRUE(got == chunk(i, off)) << name(i) << " at " << off;
    }
    most = std::max(most, OpenFds());
  }
  EXPECT_LT(most, limit) << "baseline " << baseline << " descriptors";
  for (auto& v : vols) ASSERT_TRUE(v->Close().ok());
}

}  // namespace
}  // namespace hbiss::volume
