// The process-wide memory budget (volume/memory_budget.h): write buffers of
// every volume stay within it, writers wait rather than exceed it, idle
// volumes give their buffers back, and data written under pressure is all
// there afterwards.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "store/memory_store.h"
#include "volume/memory_budget.h"
#include "volume/volume.h"

namespace hbiss::volume {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// Restores the process-wide limit after each test.
class MemoryBudgetTest : public ::testing::Test {
 protected:
  void TearDown() override { SetMemoryLimit(kDefaultMemoryLimit); }

  std::unique_ptr<Volume> Make(const std::string& name, uint64_t size, uint64_t seg) {
    CreateOptions co;
    co.size = size;
    co.segment_size = seg;
    EXPECT_TRUE(Volume::Create(&store_, name, co).ok());
    OpenOptions oo;
    oo.clean_threshold = 0;
    auto v = Volume::Open(&store_, name, oo);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? std::move(*v) : nullptr;
  }

  static uint8_t Byte(int vol, uint64_t block, int pass) {
    return uint8_t(vol * 31 + block * 7 + pass * 3 + 1);
  }

  store::MemoryStore store_;
};

// Four volumes written at once by four writers, each through segments
// bigger than its share of an 8 MiB budget: the budget's peak stays within
// it (plus a chunk of slack per volume for what reservations do not cover),
// writers wait instead of failing, and every block reads back.
TEST_F(MemoryBudgetTest, WriteBuffersOfAllVolumesStayWithinTheBudget) {
  SetMemoryLimit(kMinMemoryLimit);  // the smallest: 32 MiB of write buffers
  MemoryBudget& budget = DefaultWriteBudget();
  budget.SetCapacity(8 * kMiB);
  const uint64_t base = budget.used();
  constexpr int kVolumes = 4;
  constexpr uint64_t kSize = 48 * kMiB;
  std::vector<std::unique_ptr<Volume>> vols;
  for (int i = 0; i < kVolumes; i++) {
    std::string name = "v";  // not "v" + ...: GCC 12 -O3 -Wrestrict false positive
    name += std::to_string(i);
    vols.push_back(Make(name, kSize, 16 * kMiB));
    ASSERT_NE(vols.back(), nullptr);
  }
  std::vector<std::thread> writers;
  std::atomic<int> errors{0};
  for (int i = 0; i < kVolumes; i++) {
    writers.emplace_back([&, i] {
      std::mt19937_64 rng(i);
      std::vector<uint8_t> buf(256 << 10);
      for (uint64_t off = 0; off < kSize; off += buf.size()) {
        for (size_t b = 0; b < buf.size() / 4096; b++) {
          std::memset(buf.data() + b * 4096, Byte(i, off / 4096 + b, 0), 4096);
        }
        if (!vols[i]->Write(off, buf).ok()) errors++;
        if (rng() % 16 == 0 && !vols[i]->Flush().ok()) errors++;
      }
    });
  }
  for (auto& t : writers) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_LE(budget.peak() - base, 8 * kMiB + kVolumes * MemoryBudget::kChunkBytes)
      << "peak " << budget.peak() << " base " << base;
  for (int i = 0; i < kVolumes; i++) {
    ASSERT_TRUE(vols[i]->Flush().ok());
    std::vector<uint8_t> got(4096);
    for (uint64_t block = 0; block < kSize / 4096; block += 97) {
      ASSERT_TRUE(vols[i]->Read(block * 4096, got).ok());
      ASSERT_EQ(got[0], Byte(i, block, 0)) << "volume " << i << " block " << block;
      ASSERT_EQ(got[4095], Byte(i, block, 0));
    }
  }
  for (auto& v : vols) ASSERT_TRUE(v->Close().ok());
  EXPECT_EQ(budget.used(), base) << "closed volumes hold no write buffers";
}

// An open volume that stops writing gives its write buffers back (its open
// segment is closed after kIdleRoll) and still reads and writes afterwards.
TEST_F(MemoryBudgetTest, IdleVolumeGivesItsWriteBuffersBack) {
  MemoryBudget& budget = DefaultWriteBudget();
  const uint64_t base = budget.used();
  auto v = Make("idle", 256 * kMiB, 64 * kMiB);
  ASSERT_NE(v, nullptr);
  std::vector<uint8_t> buf(20 * kMiB, 0x5a);
  ASSERT_TRUE(v->Write(0, buf).ok());
  ASSERT_TRUE(v->Flush().ok());
  EXPECT_GE(budget.used() - base, 20 * kMiB) << "the open segment holds the data";
  const auto deadline = std::chrono::steady_clock::now() + kIdleRoll + std::chrono::seconds(20);
  while (budget.used() - base > 4 * kMiB && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_LE(budget.used() - base, 4 * kMiB) << "an idle volume holds at most 4 MiB of buffers";
  std::vector<uint8_t> got(4096);
  ASSERT_TRUE(v->Read(1234 * 4096, got).ok());
  EXPECT_EQ(got[17], 0x5a);
  ASSERT_TRUE(v->Write(4096, std::vector<uint8_t>(4096, 7)).ok());
  ASSERT_TRUE(v->Read(4096, got).ok());
  EXPECT_EQ(got[0], 7);
  ASSERT_TRUE(v->Close().ok());
}

// A writer that needs buffers while an idle volume holds most of them gets
// them: the idle volume closes its open segment under pressure.
TEST_F(MemoryBudgetTest, WaitingWriterGetsBuffersFromAnIdleVolume) {
  SetMemoryLimit(kMinMemoryLimit);
  MemoryBudget& budget = DefaultWriteBudget();
  budget.SetCapacity(12 * kMiB);
  auto idle = Make("idle", 64 * kMiB, 32 * kMiB);
  auto busy = Make("busy", 64 * kMiB, 32 * kMiB);
  ASSERT_NE(idle, nullptr);
  ASSERT_NE(busy, nullptr);
  // Below kIdleRollMinBytes' worth is not enough to be closed without
  // pressure; 2 MiB of the 12 are held by the idle volume.
  ASSERT_TRUE(idle->Write(0, std::vector<uint8_t>(2 * kMiB, 1)).ok());
  ASSERT_TRUE(idle->Flush().ok());
  std::vector<uint8_t> chunk(1 * kMiB, 2);
  for (uint64_t off = 0; off < 40 * kMiB; off += chunk.size()) {
    ASSERT_TRUE(busy->Write(off, chunk).ok()) << off;
  }
  ASSERT_TRUE(busy->Flush().ok());
  std::vector<uint8_t> got(4096);
  ASSERT_TRUE(idle->Read(4096, got).ok());
  EXPECT_EQ(got[0], 1);
  ASSERT_TRUE(busy->Read(39 * kMiB, got).ok());
  EXPECT_EQ(got[0], 2);
  ASSERT_TRUE(idle->Close().ok());
  ASSERT_TRUE(busy->Close().ok());
}

// Regression (review of issue 8): an operation refused after it reserved
// buffers (a closed or failed volume) kept its reservation, and enough of
// them left every volume of the process waiting for buffers forever.
TEST_F(MemoryBudgetTest, RefusedOperationsGiveTheirReservationBack) {
  MemoryBudget& budget = DefaultWriteBudget();
  const uint64_t base = budget.used();
  auto v = Make("refused", 64 * kMiB, 16 * kMiB);
  ASSERT_NE(v, nullptr);
  std::vector<uint8_t> d(1 * kMiB, 3);
  ASSERT_TRUE(v->Write(0, d).ok());
  ASSERT_TRUE(v->Close().ok());
  EXPECT_EQ(budget.used(), base);
  for (int i = 0; i < 200; i++) {
    EXPECT_FALSE(v->Write(uint64_t(i % 60) * kMiB, d).ok());
    EXPECT_FALSE(v->Trim(0, 4096).ok());
  }
  EXPECT_EQ(budget.used(), base) << "refused writes kept their reservations";
}

TEST(MemoryBudgetUnitTest, AcquireWaitsForReleaseAndTimesOut) {
  MemoryBudget b(10);
  EXPECT_TRUE(b.Acquire(6, std::chrono::milliseconds(0)));
  EXPECT_FALSE(b.Acquire(6, std::chrono::milliseconds(20)));
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    b.Release(6);
  });
  EXPECT_TRUE(b.Acquire(6, std::chrono::seconds(10)));
  t.join();
  EXPECT_EQ(b.used(), 6u);
  b.Force(10);
  EXPECT_EQ(b.used(), 16u);
  EXPECT_EQ(b.peak(), 16u);
  b.Release(16);
  EXPECT_EQ(b.used(), 0u);
  EXPECT_EQ(b.waiters(), 0);
}

}  // namespace
}  // namespace hbiss::volume
