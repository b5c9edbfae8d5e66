#include "util/mutex.h"

#include <gtest/gtest.h>

#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <thread>
#include <vector>

#include "util/thread.h"

namespace hbiss {
namespace {

using namespace std::chrono_literals;

// A small annotated class: the clang build checks these lock rules.
class Counter {
 public:
  void Add(int n) EXCLUDES(mu_) {
    MutexLock l(&mu_);
    value_ += n;
    cv_.SignalAll();
  }
  // Waits until the value reaches `target`, or `timeout`; returns the value.
  int WaitFor(int target, std::chrono::milliseconds timeout) EXCLUDES(mu_) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    MutexLock l(&mu_);
    while (value_ < target) {
      if (!cv_.WaitUntil(&mu_, deadline)) break;
    }
    return value_;
  }
  int value() EXCLUDES(mu_) {
    MutexLock l(&mu_);
    return value_;
  }
  // Unlocks in the middle of the scope, as code that did unique_lock::unlock.
  int AddOutsideTheLock(int n) EXCLUDES(mu_) {
    MutexLock l(&mu_);
    int before = value_;
    l.Unlock();
    Add(n);
    l.Lock();
    return value_ - before;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  int value_ GUARDED_BY(mu_) = 0;
};

TEST(Mutex, ExcludesOtherThreads) {
  Counter c;
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; i++) {
    threads.emplace_back([&c] {
      for (int j = 0; j < 10000; j++) c.Add(1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.value(), 40000);
}

TEST(Mutex, TryLockAndAssertHeld) {
  Mutex mu;
  if (!mu.TryLock()) {
    FAIL() << "TryLock of a free mutex failed";
  }
  mu.AssertHeld();
  bool other_got_it = true;
  std::thread([&] {
    other_got_it = false;
    if (mu.TryLock()) {
      other_got_it = true;
      mu.Unlock();
    }
  }).join();
  EXPECT_FALSE(other_got_it);
  mu.Unlock();
  std::thread([&] {
    other_got_it = false;
    if (mu.TryLock()) {
      other_got_it = true;
      mu.Unlock();
    }
  }).join();
  EXPECT_TRUE(other_got_it);
}

TEST(MutexLock, UnlockAndRelockInTheMiddle) {
  Counter c;
  EXPECT_EQ(c.AddOutsideTheLock(5), 5);
  EXPECT_EQ(c.value(), 5);
}

TEST(MutexLock, DestructorAfterUnlockDoesNotUnlockAgain) {
  Mutex mu;
  {
    MutexLock l(&mu);
    l.Unlock();
  }
  // Still usable: neither double-unlocked nor left held.
  bool got = false;
  if (mu.TryLock()) {
    got = true;
    mu.Unlock();
  }
  EXPECT_TRUE(got);
}

TEST(CondVar, WaitSeesTheSignalledCondition) {
  Counter c;
  std::thread t([&c] {
    std::this_thread::sleep_for(20ms);
    c.Add(3);
  });
  EXPECT_EQ(c.WaitFor(3, 10s), 3);
  t.join();
}

TEST(CondVar, WaitForTimesOut) {
  Mutex mu;
  CondVar cv;
  MutexLock l(&mu);
  auto start = std::chrono::steady_clock::now();
  bool timed_out = false;
  // Spurious wake-ups return true; loop until the deadline reports false.
  while (std::chrono::steady_clock::now() - start < 5s) {
    if (!cv.WaitFor(&mu, 30ms)) {
      timed_out = true;
      break;
    }
  }
  EXPECT_TRUE(timed_out);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);
  mu.AssertHeld();  // retaken after the wait
}

TEST(CondVar, SignalAllWakesEveryWaiter) {
  Mutex mu;
  CondVar cv;
  bool go = false;  // guarded by mu (a local: not annotatable)
  std::atomic<int> woke{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; i++) {
    threads.emplace_back([&] {
      MutexLock l(&mu);
      while (!go) cv.Wait(&mu);
      woke++;
    });
  }
  std::this_thread::sleep_for(20ms);
  {
    MutexLock l(&mu);
    go = true;
  }
  cv.SignalAll();
  for (auto& t : threads) t.join();
  EXPECT_EQ(woke.load(), 3);
}

TEST(SharedMutex, ReadersShareWritersExclude) {
  SharedMutex mu;
  int v = 0;
  {
    ReaderMutexLock r1(&mu);
    std::thread([&mu] { ReaderMutexLock r2(&mu); }).join();  // a second reader gets in
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; i++) {
    threads.emplace_back([&] {
      for (int j = 0; j < 1000; j++) {
        WriterMutexLock w(&mu);
        v++;
      }
    });
  }
  for (auto& t : threads) t.join();
  ReaderMutexLock r(&mu);
  EXPECT_EQ(v, 4000);
}

TEST(StartThread, RunsTheFunction) {
  std::atomic<bool> ran{false};
  auto t = StartThread("test", [&ran] { ran = true; });
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  t->join();
  EXPECT_TRUE(ran.load());
}

TEST(StartThread, InjectedFailureIsARetryableIOError) {
  FailThreadStartsForTest(1, "victim");
  std::atomic<int> ran{0};
  // Another name is not affected.
  auto other = StartThread("bystander", [&ran] { ran++; });
  ASSERT_TRUE(other.ok());
  other->join();
  auto failed = StartThread("victim 1", [&ran] { ran++; });
  ASSERT_FALSE(failed.ok());
  EXPECT_TRUE(failed.status().IsIOError());
  EXPECT_TRUE(failed.status().retryable());
  EXPECT_NE(failed.status().message().find("start thread victim 1"), std::string::npos);
  // Only the next one failed.
  auto again = StartThread("victim 2", [&ran] { ran++; });
  ASSERT_TRUE(again.ok());
  again->join();
  EXPECT_EQ(ran.load(), 2);
}

TEST(StartThread, RealOsRefusalIsAStatus) {
#ifdef HBISS_SANITIZED
  GTEST_SKIP() << "ASan reserves the address space this test limits";
#else
  // RLIMIT_NPROC does not bind root, so refuse threads another way: in a
  // child, cap the address space a little above what it uses now, so that the
  // next few thread stacks (8 MiB each) cannot be mapped. The child exits 0
  // only if the refusal came back as a retryable IOError (an escaped
  // std::system_error would abort it instead).
  auto child = [] {
    long pages = 0;
    if (FILE* f = std::fopen("/proc/self/statm", "r")) {
      if (std::fscanf(f, "%ld", &pages) != 1) pages = 0;
      std::fclose(f);
    }
    if (pages <= 0) std::_Exit(2);
    rlim_t cur = rlim_t(pages) * rlim_t(sysconf(_SC_PAGESIZE));
    struct rlimit rl = {cur + (64u << 20), cur + (64u << 20)};
    if (setrlimit(RLIMIT_AS, &rl) != 0) std::_Exit(3);
    std::vector<std::thread> keep;
    Status last;
    for (int i = 0; i < 64; i++) {
      auto t = StartThread("flood", [] { std::this_thread::sleep_for(60s); });
      if (!t.ok()) {
        last = t.status();
        break;
      }
      keep.push_back(std::move(*t));
    }
    std::_Exit(last.IsIOError() && last.retryable() ? 0 : 1);
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
#endif
}

}  // namespace
}  // namespace hbiss
