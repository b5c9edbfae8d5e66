#include "volume/memory_budget.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "volume/segment_cache.h"

namespace hbiss::volume {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kMiB = 1ull << 20;

bool WaitFor(const std::function<bool()>& pred) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

TEST(MemoryLimitTest, SplitsTheLimitHalfAQuarterAndTwoEighths) {
  SetMemoryLimit(256 * kMiB);
  EXPECT_EQ(MemoryLimit(), 256 * kMiB);
  EXPECT_EQ(DefaultWriteBudget().capacity(), 128 * kMiB);
  EXPECT_EQ(DefaultCrcTableCache().capacity(), 64 * kMiB);
  EXPECT_EQ(DefaultReadCache().capacity(), 32 * kMiB);
  EXPECT_EQ(RequestBufferLimit(), 32 * kMiB);

  // Below the minimum acts as the minimum.
  SetMemoryLimit(kMiB);
  EXPECT_EQ(MemoryLimit(), kMinMemoryLimit);
  EXPECT_EQ(DefaultWriteBudget().capacity(), kMinMemoryLimit / 2);
  EXPECT_EQ(DefaultCrcTableCache().capacity(), kMinMemoryLimit / 4);
  EXPECT_EQ(DefaultReadCache().capacity(), kMinMemoryLimit / 8);
  EXPECT_EQ(RequestBufferLimit(), kMinMemoryLimit / 8);
  SetMemoryLimit(0);
  EXPECT_EQ(MemoryLimit(), kMinMemoryLimit);

  SetMemoryLimit(kDefaultMemoryLimit);
  EXPECT_EQ(MemoryLimit(), kDefaultMemoryLimit);
  EXPECT_EQ(DefaultWriteBudget().capacity(), kDefaultMemoryLimit / 2);
  EXPECT_EQ(DefaultCrcTableCache().capacity(), kDefaultMemoryLimit / 4);
  EXPECT_EQ(DefaultReadCache().capacity(), kDefaultMemoryLimit / 8);
}

TEST(MemoryBudgetTest, AcquireForceReleaseAndPeak) {
  MemoryBudget b(100);
  EXPECT_EQ(b.capacity(), 100u);
  EXPECT_TRUE(b.Acquire(60, 0ms));
  EXPECT_EQ(b.used(), 60u);
  EXPECT_FALSE(b.Acquire(50, 10ms));  // does not fit: times out, takes nothing
  EXPECT_EQ(b.used(), 60u);
  EXPECT_EQ(b.waiters(), 0);
  EXPECT_TRUE(b.Acquire(40, 0ms));  // exactly fits
  EXPECT_EQ(b.used(), 100u);
  b.Force(50);  // over capacity
  EXPECT_EQ(b.used(), 150u);
  EXPECT_EQ(b.peak(), 150u);
  b.Release(120);
  EXPECT_EQ(b.used(), 30u);
  EXPECT_EQ(b.peak(), 150u);  // the peak stays
  b.Release(1000);            // more than used: clamps at 0
  EXPECT_EQ(b.used(), 0u);
  EXPECT_TRUE(b.Acquire(100, 0ms));
  EXPECT_EQ(b.peak(), 150u);
}

TEST(MemoryBudgetTest, AWaiterIsWokenByRelease) {
  MemoryBudget b(100);
  ASSERT_TRUE(b.Acquire(80, 0ms));
  std::atomic<int> got{-1};
  std::thread t([&] { got = b.Acquire(50, 10s) ? 1 : 0; });
  ASSERT_TRUE(WaitFor([&] { return b.waiters() == 1; }));
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(got.load(), -1);  // still waiting
  b.Release(80);
  ASSERT_TRUE(WaitFor([&] { return got.load() != -1; }));
  t.join();
  EXPECT_EQ(got.load(), 1);
  EXPECT_EQ(b.used(), 50u);
  EXPECT_EQ(b.waiters(), 0);
}

TEST(MemoryBudgetTest, AWaiterIsWokenBySetCapacity) {
  MemoryBudget b(100);
  ASSERT_TRUE(b.Acquire(80, 0ms));
  std::atomic<int> got{-1};
  std::thread t([&] { got = b.Acquire(50, 10s) ? 1 : 0; });
  ASSERT_TRUE(WaitFor([&] { return b.waiters() == 1; }));
  b.SetCapacity(130);
  ASSERT_TRUE(WaitFor([&] { return got.load() != -1; }));
  t.join();
  EXPECT_EQ(got.load(), 1);
  EXPECT_EQ(b.used(), 130u);
  EXPECT_EQ(b.capacity(), 130u);
  EXPECT_EQ(b.waiters(), 0);
}

TEST(MemoryBudgetTest, AWaiterGivesUpAtItsTimeout) {
  MemoryBudget b(100);
  ASSERT_TRUE(b.Acquire(100, 0ms));
  std::atomic<int> got{-1};
  std::thread t([&] { got = b.Acquire(1, 50ms) ? 1 : 0; });
  ASSERT_TRUE(WaitFor([&] { return got.load() != -1; }));
  t.join();
  EXPECT_EQ(got.load(), 0);
  EXPECT_EQ(b.waiters(), 0);
  EXPECT_EQ(b.used(), 100u);
}

}  // namespace
}  // namespace hbiss::volume
