// Mutex, MutexLock, CondVar, SharedMutex: std:: locks with clang
// thread-safety annotations (util/thread_annotations.h), so that GUARDED_BY,
// REQUIRES and friends are checked by the compiler in the clang build.
//
//   class Queue {
//    public:
//     void Push(int v) EXCLUDES(mu_) {
//       MutexLock l(&mu_);
//       items_.push_back(v);
//       cv_.Signal();
//     }
//     int Pop() EXCLUDES(mu_) {
//       MutexLock l(&mu_);
//       while (items_.empty()) cv_.Wait(&mu_);  // the condition stays checkable
//       int v = items_.front();
//       items_.pop_front();
//       return v;
//     }
//    private:
//     Mutex mu_;
//     CondVar cv_;                            // signalled when items_ grows
//     std::deque<int> items_ GUARDED_BY(mu_);
//   };
//
// None of these types is copyable or movable. Every method may be called from
// any thread; the REQUIRES/ACQUIRE annotations state which lock state each
// expects. In debug builds (no NDEBUG) Mutex records its owner, so
// AssertHeld() checks at run time as well.
#pragma once

#include <atomic>
#include <cassert>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include "util/thread_annotations.h"

namespace hbiss {

class CondVar;

// A non-recursive exclusive lock (std::mutex). Prefer MutexLock to calling
// Lock/Unlock by hand.
class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  // Blocks until this thread holds the lock. REQUIRES: not already held by
  // this thread (it would deadlock).
  void Lock() ACQUIRE() {
    mu_.lock();
    SetOwner();
  }
  // REQUIRES: held by this thread.
  void Unlock() RELEASE() {
    ClearOwner();
    mu_.unlock();
  }
  // Takes the lock if it is free; returns whether it did. Never blocks.
  bool TryLock() TRY_ACQUIRE(true) {
    if (!mu_.try_lock()) return false;
    SetOwner();
    return true;
  }
  // Tells the analysis the lock is held here (e.g. in a callback it cannot
  // follow). In debug builds, aborts if this thread does not hold it.
  void AssertHeld() ASSERT_CAPABILITY(this) {
#ifndef NDEBUG
    assert(owner_.load(std::memory_order_relaxed) == std::this_thread::get_id());
#endif
  }

 private:
  friend class CondVar;

  void SetOwner() {
#ifndef NDEBUG
    owner_.store(std::this_thread::get_id(), std::memory_order_relaxed);
#endif
  }
  void ClearOwner() {
#ifndef NDEBUG
    owner_.store(std::thread::id(), std::memory_order_relaxed);
#endif
  }

  std::mutex mu_;
#ifndef NDEBUG
  std::atomic<std::thread::id> owner_{};
#endif
};

// Holds a Mutex from construction to destruction: the std::lock_guard of
// Mutex. Unlock() and Lock() drop and retake it in the middle of the scope
// (what std::unique_lock's unlock()/lock() did); the destructor unlocks only
// if it is held then.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() RELEASE() {
    if (held_) mu_->Unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  // REQUIRES: held (by this MutexLock).
  void Unlock() RELEASE() {
    assert(held_);
    held_ = false;
    mu_->Unlock();
  }
  // REQUIRES: not held (after Unlock()).
  void Lock() ACQUIRE() {
    assert(!held_);
    mu_->Lock();
    held_ = true;
  }

 private:
  Mutex* const mu_;
  bool held_ = true;
};

// A condition variable for Mutex. Wait in a loop that re-tests the condition
// under the lock (wake-ups may be spurious):
//
//   MutexLock l(&mu_);
//   while (!done_) cv_.Wait(&mu_);
//
// so that the analysis checks the condition's guarded reads (it cannot see
// inside a predicate lambda, which is why there is no Wait(mu, pred)).
class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  // Atomically releases *mu and blocks until signalled (or spuriously woken),
  // then retakes *mu before returning. REQUIRES: this thread holds *mu.
  void Wait(Mutex* mu) REQUIRES(mu) {
    std::unique_lock<std::mutex> l(mu->mu_, std::adopt_lock);
    mu->ClearOwner();
    cv_.wait(l);
    mu->SetOwner();
    l.release();  // *mu stays held; the caller's MutexLock owns it
  }

  // Like Wait, but also returns after `timeout`. Returns false if it
  // returned because the time ran out, true otherwise (signalled or
  // spurious: re-test the condition either way). REQUIRES: this thread holds
  // *mu.
  template <typename Rep, typename Period>
  bool WaitFor(Mutex* mu, std::chrono::duration<Rep, Period> timeout) REQUIRES(mu) {
    return WaitUntil(mu, std::chrono::steady_clock::now() + timeout);
  }

  // Like WaitFor, with an absolute steady_clock deadline.
  bool WaitUntil(Mutex* mu, std::chrono::steady_clock::time_point deadline) REQUIRES(mu) {
    std::unique_lock<std::mutex> l(mu->mu_, std::adopt_lock);
    mu->ClearOwner();
    std::cv_status st = cv_.wait_until(l, deadline);
    mu->SetOwner();
    l.release();
    return st == std::cv_status::no_timeout;
  }

  // Wakes one waiter / every waiter. The lock need not be held, but signal
  // after changing the condition under it, or a waiter may miss the change.
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

// A reader/writer lock (std::shared_mutex): many shared holders or one
// exclusive holder. Use ReaderMutexLock / WriterMutexLock.
class CAPABILITY("shared_mutex") SharedMutex {
 public:
  SharedMutex() = default;
  SharedMutex(const SharedMutex&) = delete;
  SharedMutex& operator=(const SharedMutex&) = delete;

  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }
  void LockShared() ACQUIRE_SHARED() { mu_.lock_shared(); }
  void UnlockShared() RELEASE_SHARED() { mu_.unlock_shared(); }

 private:
  std::shared_mutex mu_;
};

// Holds a SharedMutex shared for its scope.
class SCOPED_CAPABILITY ReaderMutexLock {
 public:
  explicit ReaderMutexLock(SharedMutex* mu) ACQUIRE_SHARED(mu) : mu_(mu) { mu_->LockShared(); }
  ~ReaderMutexLock() RELEASE() { mu_->UnlockShared(); }
  ReaderMutexLock(const ReaderMutexLock&) = delete;
  ReaderMutexLock& operator=(const ReaderMutexLock&) = delete;

 private:
  SharedMutex* const mu_;
};

// Holds a SharedMutex exclusively for its scope.
class SCOPED_CAPABILITY WriterMutexLock {
 public:
  explicit WriterMutexLock(SharedMutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~WriterMutexLock() RELEASE() { mu_->Unlock(); }
  WriterMutexLock(const WriterMutexLock&) = delete;
  WriterMutexLock& operator=(const WriterMutexLock&) = delete;

 private:
  SharedMutex* const mu_;
};

}  // namespace hbiss
