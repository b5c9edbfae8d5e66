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
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "store/fault_injection_store.h"
#include "store/memory_store.h"
#include "volume/volume.h"

namespace hbiss::volume {
namespace {

using store::FaultInjectionStore;

constexpr uint64_t kVolSize = 2 << 20;
constexpr uint64_t kBlocks = kVolSize / kBlockSize;

struct Op {
  enum Kind { kWrite, kTrim, kZero } kind;
  uint64_t off = 0;
  uint64_t len = 0;
  std::vector<uint8_t> data;  // kWrite
};

void Apply(const Op& op, std::vector<uint8_t>* state) {
  if (op.kind == Op::kWrite) {
    std::memcpy(state->data() + op.off, op.data.data(), op.len);
  } else {
    std::memset(state->data() + op.off, 0, op.len);
  }
}

struct Stats {
  uint64_t cycles = 0;
  uint64_t store_crashed_midrun = 0;   // the armed crash point hit during the ops
  uint64_t lost_unflushed = 0;         // recovered prefix shorter than all acked ops
  uint64_t kept_unflushed = 0;         // recovered prefix longer than the flushed one
  uint64_t recovered_everything = 0;
  uint64_t acked_ops = 0;
  uint64_t flushes_ok = 0;
};

// Finds k in [lo, ops.size()] with state(k) == actual, where state(lo) is
// *state on entry. Returns -1 if none. Leaves *state = state(k).
int64_t FindPrefix(std::vector<uint8_t>* state, const std::vector<Op>& ops, size_t lo,
                   const std::vector<uint8_t>& actual) {
  std::vector<bool> bad(kBlocks);
  uint64_t nbad = 0;
  auto check = [&](uint64_t b) {
    bool m = std::memcmp(state->data() + b * kBlockSize, actual.data() + b * kBlockSize,
                         kBlockSize) != 0;
    if (m != bad[b]) {
      bad[b] = m;
      nbad += m ? 1 : uint64_t(-1);
    }
  };
  for (uint64_t b = 0; b < kBlocks; b++) check(b);
  if (nbad == 0) return int64_t(lo);
  for (size_t k = lo; k < ops.size(); k++) {
    Apply(ops[k], state);
    for (uint64_t b = ops[k].off / kBlockSize; b <= (ops[k].off + ops[k].len - 1) / kBlockSize;
         b++) {
      check(b);
    }
    if (nbad == 0) return int64_t(k + 1);
  }
  return -1;
}

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

  for (int cycle = 0; cycle < 3; cycle++) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " cycle " + std::to_string(cycle));
    stats->cycles++;
    auto vr = Volume::Open(&fs, "crash", oo);
    ASSERT_TRUE(vr.ok()) << vr.status().ToString();
    std::unique_ptr<Volume> v = std::move(*vr);
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
      if (rng() % 2) {
        op.off = (rng() % kBlocks) * kBlockSize;
        op.len = std::min<uint64_t>((1 + rng() % 16) * kBlockSize, kVolSize - op.off);
      } else {
        op.off = rng() % kVolSize;
        op.len = 1 + rng() % std::min<uint64_t>(kVolSize - op.off, 64 << 10);
      }
      Status s;
      if (kind < 11) {
        op.kind = Op::kWrite;
        op.data.resize(op.len);
        uint64_t tag = rng();
        for (uint64_t j = 0; j < op.len; j++) op.data[j] = uint8_t((tag >> (j % 8 * 8)) + j);
        s = v->Write(op.off, op.data);
      } else if (kind < 13) {
        op.kind = Op::kTrim;
        s = v->Trim(op.off, op.len);
      } else if (kind < 14) {
        op.kind = Op::kZero;
        s = v->WriteZeroes(op.off, op.len);
      } else if (kind < 17) {
        s = v->Flush();
        if (s.ok()) {
          flushed = acked.size();
          stats->flushes_ok++;
        }
        if (!s.ok()) break;
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
    ASSERT_TRUE((*rr)->Close().ok());
  }
}

TEST(VolumeCrashTest, PrefixOfAcknowledgedOpsSurvives) {
  Stats stats;
  const uint64_t kIterations = 1000;
  for (uint64_t seed = 1; seed <= kIterations; seed++) {
    ASSERT_NO_FATAL_FAILURE(RunIteration(seed, &stats)) << "seed " << seed;
  }
  std::printf("cycles %lu, crashed mid-run %lu, lost unflushed %lu, kept unflushed %lu, "
              "recovered all %lu, acked ops %lu, flushes %lu\n",
              stats.cycles, stats.store_crashed_midrun, stats.lost_unflushed,
              stats.kept_unflushed, stats.recovered_everything, stats.acked_ops,
              stats.flushes_ok);
  // The test must exercise the interesting cases, not only trivial ones.
  EXPECT_GT(stats.store_crashed_midrun, kIterations / 4);
  EXPECT_GT(stats.lost_unflushed, kIterations / 10);
  EXPECT_GT(stats.kept_unflushed, kIterations / 10);
  EXPECT_GT(stats.recovered_everything, 0u);
}

}  // namespace
}  // namespace hbiss::volume
