#include "store/fault_injection_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "store/local_store.h"
#include "store/memory_store.h"
#include "util/bytes.h"
#include "util/test_util.h"

namespace hbiss::store {
namespace {

using Op = FaultInjectionStore::Op;
using Code = Status::Code;

bool IsInjectedCrash(const Status& s) {
  return s.IsIOError() && s.message().find("injected crash") != std::string::npos;
}

#define ASSERT_OK(expr)                                       \
  do {                                                        \
    ::hbiss::Status _s = (expr);                              \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s.ToString();   \
  } while (0)

TEST(FaultInjectionStoreTest, CrashAfterFailsThatOpAndEverythingLater) {
  FaultInjectionStore fs(std::make_unique<MemoryStore>(), 1);
  ASSERT_OK(fs.Put("before", AsBytes("b")));
  fs.CrashAfter(2);  // Create and Append pass; the Flush is the crash point.
  auto w = fs.Create("seg");
  ASSERT_TRUE(w.ok());
  // Reads do not count as mutating operations.
  ASSERT_TRUE(fs.Get("before").ok());
  ASSERT_TRUE(fs.List("").ok());
  ASSERT_OK((*w)->Append(AsBytes("abc")));
  EXPECT_FALSE(fs.crashed());
  Status s = (*w)->Flush();
  EXPECT_TRUE(IsInjectedCrash(s)) << s.ToString();
  EXPECT_TRUE(fs.crashed());
  // Dead: everything fails, reads included.
  EXPECT_TRUE(IsInjectedCrash(fs.Get("before").status()));
  EXPECT_TRUE(IsInjectedCrash(fs.Open("before").status()));
  EXPECT_TRUE(IsInjectedCrash(fs.List("").status()));
  EXPECT_TRUE(IsInjectedCrash(fs.Stat("before").status()));
  EXPECT_TRUE(IsInjectedCrash(fs.Put("x", AsBytes("x"))));
  EXPECT_TRUE(IsInjectedCrash(fs.Delete("before")));
  EXPECT_TRUE(IsInjectedCrash(fs.TryLock("l").status()));
  EXPECT_TRUE(IsInjectedCrash((*w)->Append(AsBytes("d"))));
  EXPECT_EQ(fs.counters().crashes, 1u);
  // Nothing the dead process attempted reached the target.
  EXPECT_EQ(fs.target()->Stat("x").status().code(), Code::kNotFound);
  EXPECT_TRUE(fs.target()->Stat("before").ok());
}

TEST(FaultInjectionStoreTest, CrashAfterZeroIsTheNextMutatingOp) {
  FaultInjectionStore fs(std::make_unique<MemoryStore>(), 2);
  fs.CrashAfter(0);
  EXPECT_TRUE(fs.List("").ok());
  EXPECT_FALSE(fs.crashed());
  EXPECT_TRUE(IsInjectedCrash(fs.DeleteDir("anything")));
  EXPECT_TRUE(fs.crashed());
}

TEST(FaultInjectionStoreTest, CrashAtRandomCrashesAtTheChosenOp) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    FaultInjectionStore fs(std::make_unique<MemoryStore>(), seed);
    uint64_t n = fs.CrashAtRandom(50);
    ASSERT_LT(n, 50u);
    auto w = fs.Create("s");  // op 1
    ASSERT_EQ(w.ok(), n >= 1);
    if (!w.ok()) continue;
    uint64_t ops = 1;
    while ((*w)->Append(AsBytes("x")).ok()) ++ops;
    EXPECT_EQ(ops, n) << "seed " << seed;  // the (n+1)-th mutating op failed
    EXPECT_EQ(fs.counters().mutating_ops, n + 1);
  }
}

TEST(FaultInjectionStoreTest, DisarmCancelsACrash) {
  FaultInjectionStore fs(std::make_unique<MemoryStore>(), 3);
  fs.CrashAfter(1);
  fs.Disarm();
  for (int i = 0; i < 5; ++i) ASSERT_OK(fs.Put("p", AsBytes("x")));
  EXPECT_FALSE(fs.crashed());
}

TEST(FaultInjectionStoreTest, TrackedLengthsFollowAppendFlushSync) {
  FaultInjectionStore fs(std::make_unique<MemoryStore>(), 4);
  auto w = fs.Create("t");
  ASSERT_TRUE(w.ok());
  ASSERT_OK((*w)->Append(AsBytes("12345")));
  auto st = fs.Tracked("t");
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->appended, 5u);
  EXPECT_EQ(st->flushed, 0u);
  EXPECT_EQ(st->synced, 0u);
  ASSERT_OK((*w)->Flush());
  ASSERT_OK((*w)->Append(AsBytes("678")));
  st = fs.Tracked("t");
  EXPECT_EQ(st->appended, 8u);
  EXPECT_EQ(st->flushed, 5u);
  ASSERT_OK((*w)->Sync());
  st = fs.Tracked("t");
  EXPECT_EQ(st->synced, 8u);
  ASSERT_OK(fs.Delete("t"));
  EXPECT_FALSE(fs.Tracked("t").has_value());
}

// The model of one seeded run: a segment written with random appends,
// flushes and syncs, plus a checkpoint object replaced by Put, until the
// armed crash stops the "process".
struct RunResult {
  std::string attempted;        // every byte any Append was called with
  uint64_t synced = 0;          // length at the last successful Sync/Close
  uint64_t flushed = 0;         // length at the last successful Flush/Sync
  std::set<std::string> puts;   // versions whose Put was attempted
  std::string last_acked_put;   // the last Put that returned OK
  bool created = false;         // Create returned OK
  std::string after_seg;        // segment content after SimulateCrash
  bool seg_exists = false;
  std::string after_put;        // checkpoint content after SimulateCrash
};

RunResult RunAndCrash(Store* target, uint64_t seed, FaultInjectionStore::CrashKind kind) {
  FaultInjectionStore fs(target, seed);
  std::mt19937_64 rng(seed * 7919 + 1);
  RunResult r;
  r.last_acked_put = "v0";
  r.puts.insert("v0");
  EXPECT_TRUE(fs.Put("vol/ckpt", AsBytes("v0")).ok());
  fs.CrashAtRandom(60);
  auto w = fs.Create("vol/seg");
  if (w.ok()) {
    r.created = true;
    for (int i = 0; i < 100; ++i) {
      uint64_t action = rng() % 10;
      Status s;
      if (action < 6) {
        std::string data = RandomBytes(rng, 1 + rng() % 3000);
        r.attempted += data;
        s = (*w)->Append(AsBytes(data));
      } else if (action < 7) {
        s = (*w)->Flush();
        if (s.ok()) r.flushed = (*w)->Size();
      } else if (action < 9) {
        s = (*w)->Sync();
        if (s.ok()) r.synced = r.flushed = (*w)->Size();
      } else {
        std::string v = "v" + std::to_string(i) + std::string(rng() % 5000, 'p');
        r.puts.insert(v);
        s = fs.Put("vol/ckpt", AsBytes(v));
        if (s.ok()) r.last_acked_put = v;
      }
      if (!s.ok()) {
        EXPECT_TRUE(IsInjectedCrash(s)) << s.ToString();
        break;
      }
    }
  }
  EXPECT_TRUE(fs.crashed() || (w.ok() && !fs.crashed()));
  EXPECT_TRUE(fs.SimulateCrash(kind).ok());
  EXPECT_FALSE(fs.crashed());
  auto seg = fs.Get("vol/seg");
  r.seg_exists = seg.ok();
  if (seg.ok()) r.after_seg = *seg;
  auto ckpt = fs.Get("vol/ckpt");
  EXPECT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  if (ckpt.ok()) r.after_put = *ckpt;
  return r;
}

void CheckRun(const RunResult& r, uint64_t floor, uint64_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  if (r.created) {
    ASSERT_TRUE(r.seg_exists);
  }
  if (r.seg_exists) {
    // Never more than was appended, and exactly those bytes.
    ASSERT_LE(r.after_seg.size(), r.attempted.size());
    EXPECT_TRUE(r.after_seg == r.attempted.substr(0, r.after_seg.size()));
    // At least the durable prefix.
    EXPECT_GE(r.after_seg.size(), floor);
  }
  // Put is never torn: the last acknowledged version or a later attempted one.
  EXPECT_TRUE(r.puts.count(r.after_put)) << "torn or unknown checkpoint of "
                                         << r.after_put.size() << " bytes";
}

// RenameDir moves the tracked lengths with the objects, and a writer opened
// before it goes on updating them under the new name.
TEST(FaultInjectionStoreTest, RenameDirMovesTrackedLengthsAndCrashesWhole) {
  FaultInjectionStore fs(std::make_unique<MemoryStore>(), 3);
  auto w = fs.Create("v/e1/seg");
  ASSERT_TRUE(w.ok());
  ASSERT_OK((*w)->Append(AsBytes("0123456789")));
  ASSERT_OK((*w)->Sync());
  ASSERT_OK(fs.RenameDir("v/e1", "v/e2"));
  EXPECT_FALSE(fs.Tracked("v/e1/seg").has_value());
  ASSERT_TRUE(fs.Tracked("v/e2/seg").has_value());
  EXPECT_EQ(fs.Tracked("v/e2/seg")->synced, 10u);
  ASSERT_OK((*w)->Append(AsBytes("abcdef")));
  EXPECT_EQ(fs.Tracked("v/e2/seg")->appended, 16u);
  EXPECT_EQ(fs.Tracked("v/e2/seg")->synced, 10u);
  ASSERT_OK(fs.SimulateCrash(FaultInjectionStore::CrashKind::kPowerLoss));
  std::string kept = fs.Get("v/e2/seg").value();
  EXPECT_GE(kept.size(), 10u);
  EXPECT_EQ(kept, std::string("0123456789abcdef").substr(0, kept.size()));

  // A crash at the rename leaves the directory under one name, whole.
  std::set<std::string> seen;
  for (uint64_t seed = 0; seed < 16; seed++) {
    FaultInjectionStore f(std::make_unique<MemoryStore>(), seed);
    ASSERT_OK(f.Put("d/a/x", AsBytes("x")));
    ASSERT_OK(f.Put("d/a/y", AsBytes("y")));
    f.CrashAfter(0);
    EXPECT_TRUE(IsInjectedCrash(f.RenameDir("d/a", "d/b")));
    ASSERT_OK(f.SimulateCrash());
    const bool moved = f.Stat("d/b/x").ok();
    EXPECT_EQ(f.Stat("d/b/y").ok(), moved);
    EXPECT_EQ(f.Stat("d/a/x").ok(), !moved);
    EXPECT_EQ(f.Stat("d/a/y").ok(), !moved);
    seen.insert(moved ? "moved" : "stayed");
  }
  EXPECT_EQ(seen.size(), 2u) << "both outcomes should occur over 16 seeds";
}

TEST(FaultInjectionStoreTest, PowerLossKeepsSyncedPrefixAndNeverMoreThanAppended) {
  int dropped_all_unsynced = 0, kept_some_unsynced = 0, kept_all = 0;
  for (uint64_t seed = 0; seed < 300; ++seed) {
    MemoryStore mem;
    RunResult r = RunAndCrash(&mem, seed, FaultInjectionStore::CrashKind::kPowerLoss);
    CheckRun(r, r.synced, seed);
    if (!r.seg_exists || r.attempted.size() <= r.synced) continue;
    if (r.after_seg.size() == r.synced) ++dropped_all_unsynced;
    else if (r.after_seg.size() < r.attempted.size()) ++kept_some_unsynced;
    else ++kept_all;
  }
  // The seed decides: across seeds every outcome happens.
  EXPECT_GT(dropped_all_unsynced, 0);
  EXPECT_GT(kept_some_unsynced, 0);
  EXPECT_GT(kept_all, 0);
}

TEST(FaultInjectionStoreTest, ProcessCrashKeepsFlushedPrefix) {
  int lost_unflushed = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    MemoryStore mem;
    RunResult r = RunAndCrash(&mem, seed, FaultInjectionStore::CrashKind::kProcessCrash);
    CheckRun(r, r.flushed, seed);
    if (r.seg_exists && r.after_seg.size() < r.attempted.size()) ++lost_unflushed;
  }
  EXPECT_GT(lost_unflushed, 0);
}

TEST(FaultInjectionStoreTest, SameSeedSameOutcome) {
  for (uint64_t seed : {5u, 17u, 42u}) {
    MemoryStore m1, m2;
    RunResult a = RunAndCrash(&m1, seed, FaultInjectionStore::CrashKind::kPowerLoss);
    RunResult b = RunAndCrash(&m2, seed, FaultInjectionStore::CrashKind::kPowerLoss);
    EXPECT_EQ(a.after_seg, b.after_seg);
    EXPECT_EQ(a.after_put, b.after_put);
  }
}

TEST(FaultInjectionStoreTest, SimulateCrashOnLocalStoreTruncatesFiles) {
  std::string dir = (std::filesystem::temp_directory_path() / "hbiss-fault-XXXXXX").string();
  ASSERT_NE(::mkdtemp(dir.data()), nullptr);
  int truncated = 0;
  for (uint64_t seed = 0; seed < 30; ++seed) {
    auto local = LocalStore::Open(dir + "/s" + std::to_string(seed), true);
    ASSERT_TRUE(local.ok()) << local.status().ToString();
    RunResult r = RunAndCrash(local->get(), seed, FaultInjectionStore::CrashKind::kPowerLoss);
    CheckRun(r, r.synced, seed);
    if (r.seg_exists) {
      // The bytes on disk are what Get returned.
      EXPECT_EQ(std::filesystem::file_size((*local)->PathOf("vol/seg")), r.after_seg.size());
      if (r.after_seg.size() < r.attempted.size()) ++truncated;
    }
  }
  EXPECT_GT(truncated, 0);
  std::filesystem::remove_all(dir);
}

TEST(FaultInjectionStoreTest, HandlesFromBeforeACrashFailAndLocksAreReleased) {
  MemoryStore mem;
  FaultInjectionStore fs(&mem, 6);
  ASSERT_OK(fs.Put("obj", AsBytes("hello")));
  auto w = fs.Create("seg");
  ASSERT_TRUE(w.ok());
  ASSERT_OK((*w)->Append(AsBytes("unsynced")));
  auto r = fs.Open("obj");
  ASSERT_TRUE(r.ok());
  auto lock = fs.TryLock("vol/lock");
  ASSERT_TRUE(lock.ok());
  EXPECT_EQ(fs.TryLock("vol/lock").status().code(), Code::kBusy);

  ASSERT_OK(fs.SimulateCrash());  // "crash now", nothing armed
  EXPECT_FALSE(fs.crashed());
  EXPECT_TRUE(IsInjectedCrash((*w)->Append(AsBytes("more"))));
  EXPECT_TRUE(IsInjectedCrash((*w)->Sync()));
  std::vector<uint8_t> buf(5);
  EXPECT_TRUE(IsInjectedCrash((*r)->ReadAt(0, buf).status()));
  // The dead process's lock is gone: a restarted one can take it.
  auto relock = fs.TryLock("vol/lock");
  ASSERT_TRUE(relock.ok()) << relock.status().ToString();
  lock->reset();  // destroying the stale handle does not release the new lock
  EXPECT_EQ(fs.TryLock("vol/lock").status().code(), Code::kBusy);
  // The store works again.
  EXPECT_EQ(fs.Get("obj").value(), "hello");
  auto seg = fs.Get("seg");
  ASSERT_TRUE(seg.ok());
  EXPECT_TRUE(std::string("unsynced").starts_with(*seg));
  auto w2 = fs.Create("seg2");
  ASSERT_TRUE(w2.ok());
  ASSERT_OK((*w2)->Append(AsBytes("new")));
  ASSERT_OK((*w2)->Close());
  EXPECT_EQ(fs.Get("seg2").value(), "new");
  EXPECT_EQ(fs.counters().simulated_crashes, 1u);
}

TEST(FaultInjectionStoreTest, SyncedDataSurvivesEveryCrash) {
  for (uint64_t seed = 0; seed < 50; ++seed) {
    MemoryStore mem;
    FaultInjectionStore fs(&mem, seed);
    auto w = fs.Create("s");
    ASSERT_TRUE(w.ok());
    ASSERT_OK((*w)->Append(AsBytes("durable")));
    ASSERT_OK((*w)->Close());
    ASSERT_OK(fs.SimulateCrash());
    EXPECT_EQ(fs.Get("s").value(), "durable");
  }
}

TEST(FaultInjectionStoreTest, FailNextInjectsIOErrorsWithoutKillingTheStore) {
  FaultInjectionStore fs(std::make_unique<MemoryStore>(), 7);
  ASSERT_OK(fs.Put("obj", AsBytes("data")));
  fs.FailNext(Op::kRead, 2);
  for (int i = 0; i < 2; ++i) {
    auto g = fs.Get("obj");
    ASSERT_FALSE(g.ok());
    EXPECT_TRUE(g.status().IsIOError());
    EXPECT_NE(g.status().message().find("injected error"), std::string::npos);
  }
  EXPECT_EQ(fs.Get("obj").value(), "data");
  EXPECT_FALSE(fs.crashed());
  EXPECT_EQ(fs.counters().injected_errors, 2u);

  fs.FailNext(Op::kStat);
  EXPECT_TRUE(fs.Stat("obj").status().IsIOError());
  EXPECT_TRUE(fs.Stat("obj").ok());
  fs.FailNext(Op::kOpen);
  EXPECT_TRUE(fs.Open("obj").status().IsIOError());
  fs.FailNext(Op::kList);
  EXPECT_TRUE(fs.List("").status().IsIOError());
  fs.FailNext(Op::kLock);
  EXPECT_TRUE(fs.TryLock("l").status().IsIOError());
  EXPECT_TRUE(fs.TryLock("l").ok());
  fs.FailNext(Op::kCreate);
  EXPECT_TRUE(fs.Create("c").status().IsIOError());
  EXPECT_EQ(fs.Stat("c").status().code(), Code::kNotFound);
  fs.FailNext(Op::kDelete);
  EXPECT_TRUE(fs.Delete("obj").IsIOError());
  fs.FailNext(Op::kDeleteDir);
  EXPECT_TRUE(fs.DeleteDir("d").IsIOError());
  EXPECT_FALSE(fs.crashed());
}

TEST(FaultInjectionStoreTest, FailedAppendBreaksTheWriterAndLeavesAPrefix) {
  std::mt19937_64 rng(8);
  int partial = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    FaultInjectionStore fs(std::make_unique<MemoryStore>(), seed);
    auto w = fs.Create("seg");
    ASSERT_TRUE(w.ok());
    const std::string a = RandomBytes(rng, 100), b = RandomBytes(rng, 1000);
    ASSERT_OK((*w)->Append(AsBytes(a)));
    fs.FailNext(Op::kAppend);
    Status s = (*w)->Append(AsBytes(b));
    ASSERT_TRUE(s.IsIOError());
    // Broken for good, even though only one failure was asked for.
    EXPECT_FALSE((*w)->Append(AsBytes("x")).ok());
    EXPECT_FALSE((*w)->Sync().ok());
    EXPECT_FALSE((*w)->Close().ok());
    std::string got = fs.Get("seg").value();
    ASSERT_GE(got.size(), a.size());
    EXPECT_TRUE(got == (a + b).substr(0, got.size()));
    if (got.size() > a.size()) ++partial;
  }
  EXPECT_GT(partial, 0);
}

TEST(FaultInjectionStoreTest, FailedSyncAndFlushBreakTheWriter) {
  for (Op op : {Op::kFlush, Op::kSync, Op::kClose}) {
    FaultInjectionStore fs(std::make_unique<MemoryStore>(), 9);
    auto w = fs.Create("seg");
    ASSERT_TRUE(w.ok());
    ASSERT_OK((*w)->Append(AsBytes("abc")));
    fs.FailNext(op);
    Status s = op == Op::kFlush ? (*w)->Flush() : op == Op::kSync ? (*w)->Sync() : (*w)->Close();
    EXPECT_TRUE(s.IsIOError()) << FaultInjectionStore::OpName(op);
    EXPECT_FALSE((*w)->Append(AsBytes("d")).ok());
    // Nothing became durable.
    EXPECT_EQ(fs.Tracked("seg")->synced, 0u);
  }
}

TEST(FaultInjectionStoreTest, FailedPutLeavesOldOrNewNeverTorn) {
  int old_kept = 0, new_written = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    FaultInjectionStore fs(std::make_unique<MemoryStore>(), seed);
    const std::string v1(3000, '1'), v2(5000, '2');
    ASSERT_OK(fs.Put("ckpt", AsBytes(v1)));
    fs.FailNext(Op::kPut);
    EXPECT_TRUE(fs.Put("ckpt", AsBytes(v2)).IsIOError());
    std::string got = fs.Get("ckpt").value();
    ASSERT_TRUE(got == v1 || got == v2) << got.size();
    (got == v1 ? old_kept : new_written)++;
  }
  EXPECT_GT(old_kept, 0);
  EXPECT_GT(new_written, 0);
}

TEST(FaultInjectionStoreTest, FailureRateFailsAboutThatFractionOfChosenOps) {
  FaultInjectionStore fs(std::make_unique<MemoryStore>(), 10);
  ASSERT_OK(fs.Put("obj", AsBytes("payload")));
  auto r = fs.Open("obj");
  ASSERT_TRUE(r.ok());
  fs.SetFailureRate(FaultInjectionStore::Bit(Op::kRead), 0.3);
  int failed = 0;
  std::vector<uint8_t> buf(7);
  for (int i = 0; i < 2000; ++i) {
    auto n = (*r)->ReadAt(0, buf);
    if (!n.ok()) {
      EXPECT_TRUE(n.status().IsIOError());
      ++failed;
    } else {
      EXPECT_EQ(std::string(buf.begin(), buf.end()), "payload");
    }
    // Other operation types are not affected.
    ASSERT_TRUE(fs.Stat("obj").ok());
  }
  EXPECT_GT(failed, 450);
  EXPECT_LT(failed, 750);
  EXPECT_EQ(fs.counters().injected_errors, static_cast<uint64_t>(failed));
  fs.ClearFailures();
  for (int i = 0; i < 100; ++i) ASSERT_TRUE((*r)->ReadAt(0, buf).ok());
}

TEST(FaultInjectionStoreTest, CountersCountOps) {
  FaultInjectionStore fs(std::make_unique<MemoryStore>(), 11);
  ASSERT_OK(fs.Put("a", AsBytes("1")));
  ASSERT_TRUE(fs.Stat("a").ok());
  ASSERT_TRUE(fs.List("").ok());
  auto c = fs.counters();
  EXPECT_EQ(c.ops, 3u);
  EXPECT_EQ(c.mutating_ops, 1u);
  EXPECT_EQ(c.crashes, 0u);
}

TEST(FaultInjectionStoreTest, HandlesMayOutliveTheWrapper) {
  MemoryStore mem;
  std::unique_ptr<SegmentWriter> w;
  {
    FaultInjectionStore fs(&mem, 12);
    auto r = fs.Create("seg");
    ASSERT_TRUE(r.ok());
    w = std::move(r).value();
  }
  ASSERT_OK(w->Append(AsBytes("late")));
  ASSERT_OK(w->Close());
  EXPECT_EQ(mem.Get("seg").value(), "late");
}

}  // namespace
}  // namespace hbiss::store
