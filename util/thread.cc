#include "util/thread.h"

#include <atomic>
#include <string>

#include "util/mutex.h"

namespace hbiss {

namespace {

struct InjectedFailures {
  Mutex mu;
  int remaining GUARDED_BY(mu) = 0;
  std::string prefix GUARDED_BY(mu);
};

InjectedFailures& Injected() {
  static InjectedFailures* f = new InjectedFailures;  // never destroyed: threads may outlive main
  return *f;
}

// Read without the lock first so that the common path (nothing armed) costs
// one relaxed load.
std::atomic<bool> g_armed{false};

}  // namespace

namespace thread_internal {

bool TakeInjectedFailure(std::string_view what) {
  if (!g_armed.load(std::memory_order_relaxed)) return false;
  InjectedFailures& f = Injected();
  MutexLock l(&f.mu);
  if (f.remaining <= 0 || what.substr(0, f.prefix.size()) != f.prefix) return false;
  if (--f.remaining == 0) g_armed = false;
  return true;
}

}  // namespace thread_internal

void FailThreadStartsForTest(int n, std::string_view what_prefix) {
  InjectedFailures& f = Injected();
  MutexLock l(&f.mu);
  f.remaining = n;
  f.prefix = std::string(what_prefix);
  g_armed = n > 0;
}

}  // namespace hbiss
