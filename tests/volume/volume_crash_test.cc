// The durability contract, checked against a model on the fault-injecting
// store (VOLUME_DESIGN.md, "Crash contract test"):
//  * after a crash at any point the volume holds the result of some prefix
//    of the acknowledged operations;
//  * that prefix includes every operation acknowledged before the last
//    completed Flush;
//  * no block returns bytes that were never written to it (implied: the
//    volume must equal the model state after that prefix, byte for byte).
// Each seeded iteration runs several open -> random ops -> crash -> recover
// cycles, so recovery also runs over logs that earlier recoveries extended.
// A second test does the same with several threads on disjoint regions.
// Set CRASH_DEBUG=1 to log recovery (and every replayed entry) and to check
// the live volume against the model before each crash.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>

#include <spdlog/spdlog.h>

#include "store/fault_injection_store.h"
#include "store/memory_store.h"
#include "tests/volume/crash_model.h"
#include "volume/volume.h"

namespace hbiss::volume {
namespace {

using store::FaultInjectionStore;
using crashtest::Apply;
using crashtest::FindPrefix;
using crashtest::Op;
using crashtest::Pattern;
using crashtest::Perform;
using crashtest::RandomRange;

constexpr uint64_t kVolSize = 2 << 20;
constexpr uint64_t kBlocks = kVolSize / kBlockSize;

struct Stats {
  uint64_t cycles = 0;
  uint64_t store_crashed_midrun = 0;   // the armed crash point hit during the ops
  uint64_t lost_unflushed = 0;         // recovered prefix shorter than all acked ops
  uint64_t kept_unflushed = 0;         // recovered prefix longer than the flushed one
  uint64_t recovered_everything = 0;
  uint64_t acked_ops = 0;
  uint64_t flushes_ok = 0;
  uint64_t cleans_ok = 0;
  uint64_t segments_deleted = 0;
};

void RunIteration(uint64_t seed, Stats* stats) {
  std::mt19937_64 rng(seed);
  store::MemoryStore mem;
  FaultInjectionStore fs(&mem, seed * 31 + 7);
  CreateOptions co;
  co.size = kVolSize;
  co.segment_size = (rng() % 2 ? 256 : 64) << 10;  // small: many rollovers
  ASSERT_TRUE(Volume::Create(&fs, "crash", co).ok());
  OpenOptions oo;
  oo.checkpoint_interval = uint64_t(32 + rng() % 512) << 10;
  std::vector<uint8_t> base(kVolSize, 0);  // the state the volume opens with
  std::vector<uint8_t> actual(kVolSize);
  std::vector<uint8_t> buf;

  std::unique_ptr<Volume> recovered;  // kept open into the next cycle, or null
  for (int cycle = 0; cycle < 3; cycle++) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " cycle " + std::to_string(cycle));
    stats->cycles++;
    std::unique_ptr<Volume> v = std::move(recovered);
    if (!v) {
      auto vr = Volume::Open(&fs, "crash", oo);
      ASSERT_TRUE(vr.ok()) << vr.status().ToString();
      v = std::move(*vr);
    }
    if (cycle > 0) {
      ASSERT_TRUE(v->Read(0, actual).ok());
      ASSERT_TRUE(actual == base) << "reopen without a crash in between changed the volume";
    }
    std::vector<Op> acked;
    size_t flushed = 0;  // ops acknowledged before the last completed Flush
    std::vector<uint8_t> model = base;
    fs.CrashAtRandom(1 + rng() % 80);
    int nops = 10 + int(rng() % 60);
    for (int i = 0; i < nops; i++) {
      int kind = int(rng() % 20);
      Op op;
      RandomRange(rng, kVolSize, 16, 64 << 10, &op);
      Status s;
      if (kind < 14) {
        s = Perform(v.get(), kind, 11, 2, rng, &op);
      } else if (kind < 17) {
        s = v->Flush();
        if (s.ok()) {
          flushed = acked.size();
          stats->flushes_ok++;
        }
        if (!s.ok()) break;
        continue;
      } else if (kind == 19) {
        // The cleaner changes where blocks live, never what they hold; its
        // copies, checkpoints and deletes are crash points too.
        auto c = v->Clean(rng() % 2 ? 1.0 : 0.6);
        if (c.ok()) {
          stats->cleans_ok++;
          stats->segments_deleted += c->segments_deleted;
        } else {
          ASSERT_TRUE(fs.crashed()) << c.status().ToString();
          break;
        }
        continue;
      } else {
        // Read back and compare with the model; a read may fail once the
        // store has crashed, but must never return wrong bytes.
        buf.resize(op.len);
        s = v->Read(op.off, buf);
        if (s.ok()) {
          ASSERT_TRUE(std::equal(buf.begin(), buf.end(), model.begin() + op.off))
              << "read during the run returned wrong data at " << op.off;
        } else {
          ASSERT_TRUE(fs.crashed()) << s.ToString();
        }
        continue;
      }
      if (!s.ok()) {
        // Only a store failure may fail an op, and then the volume is failed.
        ASSERT_TRUE(fs.crashed()) << s.ToString();
        break;
      }
      Apply(op, &model);
      acked.push_back(std::move(op));
    }
    if (fs.crashed()) stats->store_crashed_midrun++;
    stats->acked_ops += acked.size();
    if (!fs.crashed()) fs.CrashAfter(0);  // Close's first store write crashes
    v.reset();
    ASSERT_TRUE(fs.SimulateCrash(rng() % 4 ? FaultInjectionStore::CrashKind::kPowerLoss
                                           : FaultInjectionStore::CrashKind::kProcessCrash)
                    .ok());
    auto rr = Volume::Open(&fs, "crash", oo);
    ASSERT_TRUE(rr.ok()) << "recovery failed: " << rr.status().ToString();
    ASSERT_TRUE((*rr)->Read(0, actual).ok());
    // state(flushed) is the lower bound.
    std::vector<uint8_t> state = base;
    for (size_t k = 0; k < flushed; k++) Apply(acked[k], &state);
    int64_t k = FindPrefix(&state, acked, flushed, actual);
    ASSERT_GE(k, 0) << "recovered volume is not the result of any prefix of >= " << flushed
                    << " of the " << acked.size() << " acknowledged ops";
    if (size_t(k) < acked.size()) stats->lost_unflushed++;
    if (size_t(k) > flushed) stats->kept_unflushed++;
    if (size_t(k) == acked.size()) stats->recovered_everything++;
    base = state;  // == actual
    if (rng() % 2) {
      ASSERT_TRUE((*rr)->Close().ok());  // next cycle reopens (from a fresh checkpoint)
    } else {
      recovered = std::move(*rr);  // next cycle goes on writing right after recovery
    }
  }
}

TEST(VolumeCrashTest, PrefixOfAcknowledgedOpsSurvives) {
  if (getenv("CRASH_DEBUG")) spdlog::set_level(spdlog::level::trace);
  Stats stats;
  const uint64_t kIterations = 1000;
  // CRASH_SEED=N runs only seed N (for debugging).
  const uint64_t only = getenv("CRASH_SEED") ? std::strtoull(getenv("CRASH_SEED"), nullptr, 10) : 0;
  for (uint64_t seed = only ? only : 1; seed <= (only ? only : kIterations); seed++) {
    ASSERT_NO_FATAL_FAILURE(RunIteration(seed, &stats)) << "seed " << seed;
  }
  std::printf("cycles %lu, crashed mid-run %lu, lost unflushed %lu, kept unflushed %lu, "
              "recovered all %lu, acked ops %lu, flushes %lu, cleans %lu, segments deleted "
              "%lu\n",
              stats.cycles, stats.store_crashed_midrun, stats.lost_unflushed,
              stats.kept_unflushed, stats.recovered_everything, stats.acked_ops,
              stats.flushes_ok, stats.cleans_ok, stats.segments_deleted);
  // The test must exercise the interesting cases, not only trivial ones.
  if (only) return;
  EXPECT_GT(stats.store_crashed_midrun, kIterations / 4);
  EXPECT_GT(stats.lost_unflushed, kIterations / 10);
  EXPECT_GT(stats.kept_unflushed, kIterations / 10);
  EXPECT_GT(stats.recovered_everything, 0u);
  EXPECT_GT(stats.cleans_ok, kIterations / 10);
  EXPECT_GT(stats.segments_deleted, kIterations / 10);
}

// Several threads write, trim and flush disjoint regions at once while the
// store crashes at a random point. Per region, the recovered data must be a
// prefix of that thread's acknowledged ops that includes every op the
// thread had acknowledged before its last successful Flush.
void RunConcurrentIteration(uint64_t seed, Stats* stats) {
  constexpr int kThreads = 4;
  constexpr uint64_t kRegionBlocks = kBlocks / kThreads;
  std::mt19937_64 rng(seed);
  store::MemoryStore mem;
  FaultInjectionStore fs(&mem, seed * 17 + 3);
  CreateOptions co;
  co.size = kVolSize;
  co.segment_size = 128 << 10;
  ASSERT_TRUE(Volume::Create(&fs, "cc", co).ok());
  OpenOptions oo;
  oo.checkpoint_interval = 256 << 10;
  auto vr = Volume::Open(&fs, "cc", oo);
  ASSERT_TRUE(vr.ok());
  std::unique_ptr<Volume> v = std::move(*vr);
  fs.CrashAtRandom(20 + rng() % 150);
  std::vector<std::vector<Op>> acked(kThreads);
  std::vector<size_t> flushed(kThreads, 0);
  std::vector<Op> failed_op(kThreads);
  std::vector<uint8_t> has_failed_op(kThreads, 0);  // not vector<bool>: threads write it
  std::atomic<bool> unexpected{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t, tseed = rng()] {
      std::mt19937_64 r(tseed);
      const uint64_t base = uint64_t(t) * kRegionBlocks * kBlockSize;
      const uint64_t region = kRegionBlocks * kBlockSize;
      for (int i = 0; i < 60; i++) {
        Op op;
        op.off = r() % region;
        op.len = 1 + r() % std::min<uint64_t>(region - op.off, 40000);
        if (r() % 2) {
          op.off = op.off / kBlockSize * kBlockSize;
          op.len = std::min<uint64_t>((op.len + kBlockSize - 1) / kBlockSize * kBlockSize,
                                      region - op.off);
        }
        op.off += base;
        int kind = int(r() % 10);
        Status s;
        if (kind < 6) {
          op.kind = Op::kWrite;
          op.data = Pattern(op.len, r());
          s = v->Write(op.off, op.data);
        } else if (kind < 7) {
          op.kind = Op::kTrim;
          s = v->Trim(op.off, op.len);
        } else {
          size_t n = acked[t].size();
          s = v->Flush();
          if (s.ok()) flushed[t] = n;
          if (!s.ok()) break;
          continue;
        }
        if (!s.ok()) {
          if (!s.IsIOError()) unexpected = true;
          failed_op[t] = std::move(op);
          has_failed_op[t] = true;
          break;
        }
        acked[t].push_back(std::move(op));
      }
    });
  }
  // And a cleaner that races them: it copies blocks the writers are
  // overwriting, and deletes segments while they write.
  std::atomic<int> writers_left{kThreads};
  std::thread cleaner([&] {
    while (writers_left.load() > 0) {
      auto c = v->Clean(1.0);
      if (!c.ok()) {
        if (!c.status().IsIOError()) unexpected = true;
        break;
      }
      stats->cleans_ok++;
      stats->segments_deleted += c->segments_deleted;
    }
  });
  for (auto& th : threads) {
    th.join();
    writers_left--;
  }
  cleaner.join();
  ASSERT_FALSE(unexpected);
  if (getenv("CRASH_DEBUG")) {
    std::vector<uint8_t> live(kVolSize);
    Status rs = v->Read(0, live);
    std::fprintf(stderr, "live read: %s crashed=%d\n", rs.ToString().c_str(), int(fs.crashed()));
    if (rs.ok()) {
      for (int t = 0; t < kThreads; t++) {
        std::vector<uint8_t> st(kVolSize, 0);
        for (auto& o : acked[t]) Apply(o, &st);
        for (uint64_t b = t * kRegionBlocks; b < (t + 1) * kRegionBlocks; b++) {
          if (std::memcmp(st.data() + b * kBlockSize, live.data() + b * kBlockSize, kBlockSize)) {
            std::fprintf(stderr, "LIVE MISMATCH region %d block %lu\n", t, b);
          }
        }
      }
    }
  }
  if (fs.crashed()) stats->store_crashed_midrun++;
  if (!fs.crashed()) fs.CrashAfter(0);
  v.reset();
  ASSERT_TRUE(fs.SimulateCrash().ok());
  auto rr = Volume::Open(&fs, "cc", oo);
  ASSERT_TRUE(rr.ok()) << "recovery failed: " << rr.status().ToString();
  std::vector<uint8_t> actual(kVolSize);
  ASSERT_TRUE((*rr)->Read(0, actual).ok());
  for (int t = 0; t < kThreads; t++) {
    std::vector<uint8_t> state(kVolSize, 0);
    for (size_t k = 0; k < flushed[t]; k++) Apply(acked[t][k], &state);
    int64_t k = FindPrefix(&state, acked[t], flushed[t], actual, t * kRegionBlocks,
                           (t + 1) * kRegionBlocks);
    if (k < 0) {
      // Diagnostics: which blocks differ from state(flushed), and whose data they hold.
      std::vector<uint8_t> st(kVolSize, 0);
      for (size_t j = 0; j < flushed[t]; j++) Apply(acked[t][j], &st);
      for (size_t kk = flushed[t]; kk <= acked[t].size(); kk++) {
        int shown = 0;
        for (uint64_t b = t * kRegionBlocks; b < (t + 1) * kRegionBlocks && shown < 3; b++) {
          if (std::memcmp(st.data() + b * kBlockSize, actual.data() + b * kBlockSize,
                          kBlockSize) == 0) {
            continue;
          }
          shown++;
          std::string who = "?";
          auto holds = [&](const Op& o) {
            if (o.kind != Op::kWrite) return false;
            uint64_t lo = std::max(o.off, b * kBlockSize);
            uint64_t hi = std::min(o.off + o.len, (b + 1) * kBlockSize);
            return lo < hi && std::memcmp(o.data.data() + (lo - o.off), actual.data() + lo,
                                          hi - lo) == 0;
          };
          for (size_t j = 0; j < acked[t].size(); j++) {
            if (holds(acked[t][j])) who += " acked#" + std::to_string(j);
          }
          if (has_failed_op[t] && holds(failed_op[t])) who += " FAILED-OP";
          bool zero = true;
          for (uint64_t i = 0; i < kBlockSize; i++) zero &= actual[b * kBlockSize + i] == 0;
          ADD_FAILURE() << "k=" << kk << " block " << b << " differs; actual "
                        << (zero ? "zeros" : "data") << " from" << who;
        }
        if (kk < acked[t].size()) Apply(acked[t][kk], &st);
      }
      for (size_t j = 0; j < acked[t].size(); j++) {
        const Op& o = acked[t][j];
        ADD_FAILURE() << "op#" << j << " kind " << o.kind << " off " << o.off << " len "
                      << o.len << " blocks " << o.off / kBlockSize << ".."
                      << (o.off + o.len - 1) / kBlockSize;
      }
      if (has_failed_op[t]) {
        ADD_FAILURE() << "failed op kind " << failed_op[t].kind << " off " << failed_op[t].off
                      << " len " << failed_op[t].len;
      }
    }
    ASSERT_GE(k, 0) << "seed " << seed << " region " << t << ": not a prefix of >= "
                    << flushed[t] << " of " << acked[t].size() << " acknowledged ops";
    stats->acked_ops += acked[t].size();
    if (size_t(k) < acked[t].size()) stats->lost_unflushed++;
    if (size_t(k) > flushed[t]) stats->kept_unflushed++;
  }
}

TEST(VolumeCrashTest, ConcurrentWritersKeepPerThreadPrefixes) {
  if (getenv("CRASH_DEBUG")) spdlog::set_level(spdlog::level::trace);
  Stats stats;
  const uint64_t kIterations = 200;
  for (uint64_t seed = 1; seed <= kIterations; seed++) {
    ASSERT_NO_FATAL_FAILURE(RunConcurrentIteration(seed, &stats)) << "seed " << seed;
  }
  std::printf("concurrent: crashed mid-run %lu, regions lost unflushed %lu, kept unflushed %lu, "
              "acked ops %lu, cleans %lu, segments deleted %lu\n",
              stats.store_crashed_midrun, stats.lost_unflushed, stats.kept_unflushed,
              stats.acked_ops, stats.cleans_ok, stats.segments_deleted);
  EXPECT_GT(stats.store_crashed_midrun, kIterations / 4);
  EXPECT_GT(stats.lost_unflushed, 0u);
  EXPECT_GT(stats.cleans_ok, kIterations / 10);  // how many depends on scheduling
  EXPECT_GT(stats.segments_deleted, 0u);
}

}  // namespace
}  // namespace hbiss::volume
