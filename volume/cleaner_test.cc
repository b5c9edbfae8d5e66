#include "volume/cleaner.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace hbiss::volume {
namespace {

using namespace std::chrono_literals;

// A Host that records every call it gets, as one line each, and answers
// from what the test set up.
class FakeHost : public Cleaner::Host {
 public:
  // Guarded by mu: the cleaner's thread and the test both use these.
  std::mutex mu;
  std::deque<uint64_t> victims;               // PickVictim answers, then 0
  std::map<uint64_t, std::vector<MapRun>> live;
  std::set<uint64_t> incomplete;              // LiveRuns says complete=false
  std::set<uint64_t> corrupt;                 // ReadRun fails with Corruption
  std::set<uint64_t> no_space_once;           // the next copy fails with NoSpace
  bool reserve_held = false;
  uint64_t reserve_bytes = 0;
  std::vector<double> thresholds;             // what PickVictim received
  uint64_t copy_calls = 0;                    // CopyStillLive calls that succeeded
  std::vector<std::string> events;
  std::atomic<bool> failed{false};
  std::atomic<bool> stalled{false};
  std::atomic<bool> needs_space{true};

  std::vector<std::string> Events() {
    std::lock_guard<std::mutex> l(mu);
    return events;
  }
  size_t Count(const std::string& e) {
    std::lock_guard<std::mutex> l(mu);
    size_t n = 0;
    for (const std::string& x : events) n += x == e;
    return n;
  }
  void Clear() {
    std::lock_guard<std::mutex> l(mu);
    events.clear();
  }

  uint64_t PickVictim(double threshold, uint64_t below) override {
    std::lock_guard<std::mutex> l(mu);
    thresholds.push_back(threshold);
    uint64_t v = 0;
    if (!victims.empty()) {
      v = victims.front();
      victims.pop_front();
    }
    events.push_back("pick " + std::to_string(below) + " -> " + std::to_string(v));
    return v;
  }
  Result<std::vector<MapRun>> LiveRuns(uint64_t seg, bool* complete) override {
    std::lock_guard<std::mutex> l(mu);
    events.push_back("live " + std::to_string(seg));
    *complete = !incomplete.count(seg);
    return live[seg];
  }
  Status ReadRun(const MapRun& r, std::span<uint8_t> out) override {
    std::lock_guard<std::mutex> l(mu);
    events.push_back("read " + std::to_string(r.seg) + " " + std::to_string(r.lba) + "+" +
                     std::to_string(r.count) + " slot " + std::to_string(r.slot));
    if (out.size() != r.count * kBlockSize) return Status::InvalidArgument("wrong buffer size");
    if (corrupt.count(r.seg)) return Status::Corruption("bad CRC");
    // Fills the buffer so that the copy can check what it was given.
    for (uint64_t i = 0; i < r.count; i++) out[i * kBlockSize] = uint8_t(r.lba + i);
    return Status::OK();
  }
  Result<uint64_t> CopyStillLive(std::span<const MapRun> pieces, const uint8_t* buf) override {
    std::lock_guard<std::mutex> l(mu);
    uint64_t n = 0;
    for (const MapRun& r : pieces) {
      events.push_back("copy " + std::to_string(r.seg) + " " + std::to_string(r.lba) + "+" +
                       std::to_string(r.count));
      if (no_space_once.erase(r.seg)) return Status::NoSpace("full");
      for (uint64_t i = 0; i < r.count; i++, buf += kBlockSize) {
        if (*buf != uint8_t(r.lba + i)) return Status::Corruption("copied wrong data");
      }
      n += r.count;
    }
    copy_calls++;
    return n;
  }
  void SegmentDone(uint64_t seg, uint64_t moved, bool bad, CleanStats* stats) override {
    std::lock_guard<std::mutex> l(mu);
    events.push_back("done " + std::to_string(seg) + " moved " + std::to_string(moved) +
                     (bad ? " bad" : " good"));
    if (!bad) stats->segments_cleaned++;
    stats->blocks_moved += moved;
  }
  Status DeleteDeadSegments(CleanStats* stats) override {
    std::lock_guard<std::mutex> l(mu);
    events.push_back("delete");
    stats->segments_deleted++;
    return Status::OK();
  }
  Status MakeDurable() override {
    std::lock_guard<std::mutex> l(mu);
    events.push_back("durable");
    return Status::OK();
  }
  Status CheckpointNow() override {
    std::lock_guard<std::mutex> l(mu);
    events.push_back("checkpoint");
    return Status::OK();
  }
  void RequestCheckpointIfGarbageWaits() override {
    std::lock_guard<std::mutex> l(mu);
    events.push_back("request checkpoint");
  }
  bool NeedsSpace() override { return needs_space.load(); }
  bool Failed() override { return failed.load(); }
  bool Stalled() override { return stalled.load(); }
  void CleanWhileStalled(double threshold) override {
    std::lock_guard<std::mutex> l(mu);
    events.push_back("stalled " + std::to_string(threshold));
  }
  bool ReleaseReserve(const Status& s) override {
    std::lock_guard<std::mutex> l(mu);
    if (!s.IsNoSpace() || !reserve_held) return false;
    reserve_held = false;
    events.push_back("release reserve");
    return true;
  }
  uint64_t ReserveBytes() override {
    std::lock_guard<std::mutex> l(mu);
    return reserve_bytes;
  }
  void RestoreReserve() override {
    std::lock_guard<std::mutex> l(mu);
    events.push_back("restore reserve");
  }
};

MapRun LiveRun(uint32_t seg, uint64_t lba, uint64_t count, uint32_t slot) {
  return MapRun{lba, count, true, seg, slot};
}

// Waits up to 10 s for pred; returns whether it held.
bool WaitFor(const std::function<bool()>& pred) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

const std::vector<std::string> kFreeCleaned = {"durable", "checkpoint", "checkpoint", "delete"};

std::vector<std::string> Concat(std::vector<std::vector<std::string>> parts) {
  std::vector<std::string> all;
  for (auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

TEST(CleanerTest, CleanCopiesEveryVictimInPiecesThenFreesThem) {
  FakeHost h;
  h.victims = {3, 7};
  // 600 blocks: pieces of 256, 256 and 88, lba and slot advancing together.
  h.live[3] = {LiveRun(3, 1000, 600, 10)};
  h.live[7] = {LiveRun(7, 5, 1, 1), LiveRun(7, 9, 2, 2)};
  Cleaner c(&h, "t", 0);
  auto st = c.Clean(0.5, 42);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->segments_cleaned, 2u);
  EXPECT_EQ(st->blocks_moved, 603u);
  EXPECT_EQ(st->segments_deleted, 1u);
  static_assert(Cleaner::kPieceBlocks == 256);
  const std::vector<std::string> want = Concat({{
      "pick 42 -> 3",
      "live 3",
      "read 3 1000+256 slot 10",  // all read, then all copied in one go
      "read 3 1256+256 slot 266",
      "read 3 1512+88 slot 522",
      "copy 3 1000+256",
      "copy 3 1256+256",
      "copy 3 1512+88",
      "done 3 moved 600 good",
      "pick 42 -> 7",
      "live 7",
      "read 7 5+1 slot 1",
      "read 7 9+2 slot 2",
      "copy 7 5+1",
      "copy 7 9+2",
      "done 7 moved 3 good",
      "pick 42 -> 0",
  }, kFreeCleaned});
  EXPECT_EQ(h.Events(), want);
  EXPECT_EQ(h.thresholds, (std::vector<double>{0.5, 0.5, 0.5}));
  EXPECT_EQ(h.copy_calls, 2u);  // one per victim
}

TEST(CleanerTest, AVictimLargerThanTheCopyBufferIsCopiedInBufferfuls) {
  FakeHost h;
  h.victims = {3};
  h.live[3] = {LiveRun(3, 0, Cleaner::kCopyBlocks + 10, 1)};
  Cleaner c(&h, "t", 0);
  auto st = c.Clean(0.5, 0);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->blocks_moved, Cleaner::kCopyBlocks + 10);
  EXPECT_EQ(h.copy_calls, 2u);
}

TEST(CleanerTest, CleanWithNoVictimStillCheckpointsAndDeletes) {
  FakeHost h;
  Cleaner c(&h, "t", 0);
  auto st = c.Clean(0.95, 0);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->segments_cleaned, 0u);
  EXPECT_EQ(h.Events(), Concat({{"pick 0 -> 0"}, kFreeCleaned}));
  // Clean itself is not capped: only the background pass is.
  EXPECT_EQ(h.thresholds, (std::vector<double>{0.95}));
}

TEST(CleanerTest, ReadCorruptionMarksTheSegmentBadNeverCopiesAndIsReportedLast) {
  FakeHost h;
  h.victims = {4, 5};
  h.live[4] = {LiveRun(4, 0, 2, 1), LiveRun(4, 10, 1, 3)};
  h.live[5] = {LiveRun(5, 20, 1, 1)};
  h.corrupt = {4};
  Cleaner c(&h, "t", 0);
  auto st = c.Clean(0.5, 0);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(st.status().IsCorruption()) << st.status().ToString();
  const std::vector<std::string> want = Concat({{
      "pick 0 -> 4",
      "live 4",
      "read 4 0+2 slot 1",  // corrupt: not copied, the next run is still tried
      "read 4 10+1 slot 3",
      "done 4 moved 0 bad",
      "pick 0 -> 5",  // the others are cleaned
      "live 5",
      "read 5 20+1 slot 1",
      "copy 5 20+1",
      "done 5 moved 1 good",
      "pick 0 -> 0",
  }, kFreeCleaned});
  EXPECT_EQ(h.Events(), want);
}

TEST(CleanerTest, IncompleteLiveRunsMarkTheSegmentBad) {
  FakeHost h;
  h.victims = {6};
  h.live[6] = {LiveRun(6, 0, 1, 1)};
  h.incomplete = {6};
  Cleaner c(&h, "t", 0);
  auto st = c.Clean(0.5, 0);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(st.status().IsCorruption()) << st.status().ToString();
  // The runs it does know are still copied; the segment is never picked again.
  const std::vector<std::string> want = Concat({{
      "pick 0 -> 6",
      "live 6",
      "read 6 0+1 slot 1",
      "copy 6 0+1",
      "done 6 moved 1 bad",
      "pick 0 -> 0",
  }, kFreeCleaned});
  EXPECT_EQ(h.Events(), want);
}

TEST(CleanerTest, NoSpaceWithAReserveMakesDurableAndGoesOn) {
  FakeHost h;
  h.victims = {8, 8, 9};  // the volume offers 8 again: it was not done
  h.live[8] = {LiveRun(8, 0, 1, 1)};
  h.live[9] = {LiveRun(9, 1, 1, 1)};
  h.no_space_once = {8};
  h.reserve_held = true;
  Cleaner c(&h, "t", 0);
  auto st = c.Clean(0.5, 0);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->segments_cleaned, 2u);
  const std::vector<std::string> want = Concat({{
      "pick 0 -> 8",
      "live 8",
      "read 8 0+1 slot 1",
      "copy 8 0+1",  // NoSpace
      "release reserve",
      "durable",
      "pick 0 -> 8",
      "live 8",
      "read 8 0+1 slot 1",
      "copy 8 0+1",
      "done 8 moved 1 good",
      "pick 0 -> 9",
      "live 9",
      "read 9 1+1 slot 1",
      "copy 9 1+1",
      "done 9 moved 1 good",
      "pick 0 -> 0",
  }, kFreeCleaned});
  EXPECT_EQ(h.Events(), want);
}

TEST(CleanerTest, NoSpaceWithoutAReserveEndsThePass) {
  FakeHost h;
  h.victims = {8, 9};
  h.live[8] = {LiveRun(8, 0, 1, 1)};
  h.no_space_once = {8};
  Cleaner c(&h, "t", 0);
  auto st = c.Clean(0.5, 0);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(st.status().IsNoSpace()) << st.status().ToString();
  EXPECT_EQ(h.Count("pick 0 -> 9"), 0u);
  EXPECT_EQ(h.Count("delete"), 0u);
}

TEST(CleanerTest, AReserveFreesTheCleanedSegmentsEveryHalfReserveOfCopies) {
  FakeHost h;
  h.victims = {1, 2, 3};
  for (uint32_t s = 1; s <= 3; s++) h.live[s] = {LiveRun(s, s * 100, 60, 1)};
  h.reserve_bytes = 200 * kBlockSize;  // half: 100 blocks
  Cleaner c(&h, "t", 0);
  auto st = c.Clean(0.5, 0);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->blocks_moved, 180u);
  std::vector<std::string> seen;
  for (const std::string& e : h.Events()) {
    if (e.rfind("done", 0) == 0 || e.rfind("pick", 0) == 0 || e == "durable" ||
        e == "checkpoint" || e == "delete") {
      seen.push_back(e);
    }
  }
  const std::vector<std::string> want = Concat({
      {"pick 0 -> 1", "done 1 moved 60 good", "pick 0 -> 2", "done 2 moved 60 good"},
      kFreeCleaned,  // 120 blocks moved >= 100
      {"pick 0 -> 3", "done 3 moved 60 good", "pick 0 -> 0"},  // 60 since: not yet
      kFreeCleaned,
  });
  EXPECT_EQ(seen, want);
}

TEST(CleanerTest, BackgroundPassDeletesCleansAndAsksForACheckpoint) {
  FakeHost h;
  h.victims = {5};
  h.live[5] = {LiveRun(5, 0, 1, 1)};
  Cleaner c(&h, "t", 0.5);
  c.Start();
  c.Wake();
  // The victim's pass succeeded, so a second pass follows at once.
  ASSERT_TRUE(WaitFor([&] { return h.Count("request checkpoint") >= 2; }));
  c.Stop();
  std::vector<std::string> ev = h.Events();
  ev.resize(std::min<size_t>(ev.size(), 12));
  const std::vector<std::string> want = {
      "restore reserve", "delete",      "pick 0 -> 5",     "live 5",
      "read 5 0+1 slot 1", "copy 5 0+1", "done 5 moved 1 good", "request checkpoint",
      "restore reserve", "delete",      "pick 0 -> 0",     "request checkpoint",
  };
  EXPECT_EQ(ev, want);
  std::lock_guard<std::mutex> l(h.mu);
  EXPECT_EQ(h.thresholds[0], 0.5);
}

TEST(CleanerTest, BackgroundThresholdIsCapped) {
  FakeHost h;
  Cleaner c(&h, "t", 5.0);
  c.Start();
  c.Wake();
  ASSERT_TRUE(WaitFor([&] { return h.Count("pick 0 -> 0") >= 1; }));
  c.Stop();
  std::lock_guard<std::mutex> l(h.mu);
  ASSERT_FALSE(h.thresholds.empty());
  EXPECT_EQ(h.thresholds[0], Cleaner::kMaxBackgroundThreshold);
  EXPECT_EQ(h.thresholds[0], 0.9);
}

TEST(CleanerTest, BackgroundPassCleansWhileStalledInstead) {
  FakeHost h;
  h.victims = {5};
  h.stalled = true;
  Cleaner c(&h, "t", 0.25);
  c.Start();
  c.Wake();
  ASSERT_TRUE(WaitFor([&] { return h.Count("stalled " + std::to_string(0.25)) >= 1; }));
  c.Stop();
  for (const std::string& e : h.Events()) {
    EXPECT_EQ(e.rfind("stalled", 0), 0u) << "a normal pass ran while stalled: " << e;
  }
}

TEST(CleanerTest, BackgroundPassIdlesWhileFailed) {
  FakeHost h;
  h.failed = true;
  h.stalled = true;  // failed wins over stalled too
  Cleaner c(&h, "t", 0.5);
  c.Start();
  c.Wake();
  std::this_thread::sleep_for(200ms);
  c.Wake();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(h.Events(), std::vector<std::string>{});
  // And it comes back once the volume can write.
  h.failed = false;
  h.stalled = false;
  c.Wake();
  EXPECT_TRUE(WaitFor([&] { return h.Count("request checkpoint") >= 1; }));
  c.Stop();
}

TEST(CleanerTest, StopIsPromptAndIdempotent) {
  FakeHost h;
  Cleaner c(&h, "t", 0.5);
  c.Start();
  // Let the thread settle into its idle wait (a second long).
  std::this_thread::sleep_for(50ms);
  const auto t0 = std::chrono::steady_clock::now();
  c.Stop();
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(took, 500ms);
  c.Stop();
  const size_t n = h.Events().size();
  c.Wake();
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(h.Events().size(), n);  // no thread runs passes any more
}

TEST(CleanerTest, StopWithoutStartAndNoThreadForZeroThreshold) {
  FakeHost h;
  Cleaner c(&h, "t", 0);
  c.Start();  // threshold 0: no thread
  c.Wake();
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(h.Events(), std::vector<std::string>{});
  c.Stop();
  c.Stop();
  // Clean still works with no background thread.
  EXPECT_TRUE(c.Clean(0.5, 0).ok());
}

}  // namespace
}  // namespace hbiss::volume
