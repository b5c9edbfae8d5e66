#include "volume/read_gate.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <thread>

namespace hbiss::volume {
namespace {

using namespace std::chrono_literals;

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// Runs WaitForEarlierReads in a thread; done says when it returned.
class Waiter {
 public:
  explicit Waiter(ReadGate& g)
      : t_([this, &g] {
          started_ = true;
          g.WaitForEarlierReads();
          done_ = true;
        }) {
    WaitFor([this] { return started_.load(); });
    // Past the start of the call (its first step is the generation bump).
    std::this_thread::sleep_for(50ms);
  }
  ~Waiter() { t_.join(); }
  bool done() const { return done_.load(); }

 private:
  std::atomic<bool> started_{false};
  std::atomic<bool> done_{false};
  std::thread t_;
};

TEST(ReadGateTest, ReturnsAtOnceWithNoPass) {
  ReadGate g;
  Waiter w(g);
  EXPECT_TRUE(WaitFor([&] { return w.done(); }, 5s));
  // A pass made and gone before the call does not hold it either.
  { ReadGate::Pass p(g); }
  Waiter w2(g);
  EXPECT_TRUE(WaitFor([&] { return w2.done(); }, 5s));
}

TEST(ReadGateTest, WaitsForAnEarlierPass) {
  ReadGate g;
  auto p = std::make_unique<ReadGate::Pass>(g);
  Waiter w(g);
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(w.done());
  p.reset();
  EXPECT_TRUE(WaitFor([&] { return w.done(); }, 5s));
}

TEST(ReadGateTest, DoesNotWaitForALaterPass) {
  ReadGate g;
  auto early = std::make_unique<ReadGate::Pass>(g);
  auto w = std::make_unique<Waiter>(g);
  auto late = std::make_unique<ReadGate::Pass>(g);  // made after the wait began
  EXPECT_FALSE(w->done());
  early.reset();
  EXPECT_TRUE(WaitFor([&] { return w->done(); }, 5s));  // `late` still held
  w.reset();
  // The next wait begins after `late`, so it waits for it.
  auto w2 = std::make_unique<Waiter>(g);
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(w2->done());
  late.reset();
  EXPECT_TRUE(WaitFor([&] { return w2->done(); }, 5s));
}

}  // namespace
}  // namespace hbiss::volume
