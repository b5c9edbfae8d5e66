#include "volume/memory_budget.h"

#include <algorithm>
#include <atomic>

#include "volume/segment_cache.h"

namespace hbiss::volume {

namespace {
std::atomic<uint64_t> g_limit{kDefaultMemoryLimit};
}  // namespace

bool MemoryBudget::Acquire(uint64_t bytes, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  MutexLock l(&mu_);
  if (used_ + bytes > capacity_) {
    waiters_++;
    while (used_ + bytes > capacity_) {
      if (!released_.WaitUntil(&mu_, deadline) && used_ + bytes > capacity_) {
        waiters_--;
        return false;
      }
    }
    waiters_--;
  }
  used_ += bytes;
  peak_ = std::max(peak_, used_);
  return true;
}

void MemoryBudget::Force(uint64_t bytes) {
  MutexLock l(&mu_);
  used_ += bytes;
  peak_ = std::max(peak_, used_);
}

void MemoryBudget::Release(uint64_t bytes) {
  {
    MutexLock l(&mu_);
    used_ -= std::min(bytes, used_);
  }
  released_.SignalAll();
}

void MemoryBudget::SetCapacity(uint64_t bytes) {
  {
    MutexLock l(&mu_);
    capacity_ = bytes;
  }
  released_.SignalAll();
}

uint64_t MemoryBudget::capacity() const {
  MutexLock l(&mu_);
  return capacity_;
}

uint64_t MemoryBudget::used() const {
  MutexLock l(&mu_);
  return used_;
}

uint64_t MemoryBudget::peak() const {
  MutexLock l(&mu_);
  return peak_;
}

int MemoryBudget::waiters() const {
  MutexLock l(&mu_);
  return waiters_;
}

MemoryBudget& DefaultWriteBudget() {
  static MemoryBudget* b = new MemoryBudget(kDefaultMemoryLimit / 2);  // outlives every volume
  return *b;
}

void SetMemoryLimit(uint64_t limit) {
  limit = std::max(limit, kMinMemoryLimit);
  g_limit = limit;
  DefaultWriteBudget().SetCapacity(limit / 2);
  DefaultCrcTableCache().SetCapacity(limit / 4);
  DefaultReadCache().SetCapacity(limit / 8);
}

uint64_t MemoryLimit() { return g_limit; }

uint64_t RequestBufferLimit() { return g_limit / 8; }

}  // namespace hbiss::volume
