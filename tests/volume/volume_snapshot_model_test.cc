// A model-based randomized test of volumes, snapshots and clones on the
// fault-injecting store: thousands of seeded steps (writes, trims, zeroes,
// flushes, snapshots, clones, rollbacks, removals, flattens, clean passes,
// reopens and crashes), each checked against an in-memory model of every
// volume and snapshot:
//  * a volume reads exactly its model; after a crash, some prefix of the
//    operations acknowledged since its last flush (crash_model.h);
//  * a snapshot reads exactly the volume's content when it was taken, forever
//    (across cleaning, crashes, rollbacks, clones and their flattening);
//  * a clone starts as its snapshot and only its own writes change it;
//  * removals are refused exactly when something depends on what is removed.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>

#include "store/fault_injection_store.h"
#include "store/memory_store.h"
#include "tests/volume/crash_model.h"
#include "volume/clone.h"
#include "volume/volume.h"

namespace hbiss::volume {
namespace {

using crashtest::Op;
using store::FaultInjectionStore;

constexpr uint64_t kSize = 1 << 20;  // 256 blocks
constexpr uint64_t kSegSize = 64 << 10;
constexpr size_t kMaxVolumes = 6;

struct VolModel {
  std::vector<uint8_t> durable;  // as of the last flush (a crash keeps at least this)
  std::vector<Op> since;         // acknowledged since then
  std::vector<uint8_t> now;      // durable + since
  std::map<std::string, std::vector<uint8_t>> snaps;
  std::unique_ptr<Volume> v;     // open, or null
  std::string parent;            // "VOL@SNAP" while it depends on it (a clone), else ""
};

class Model {
 public:
  explicit Model(uint64_t seed) : fs_(&mem_, seed), rng_(seed) {}

  void Run(int steps) {
    CreateOptions co;
    co.size = kSize;
    co.segment_size = kSegSize;
    ASSERT_TRUE(Volume::Create(&fs_, "v0", co).ok());
    NewModel("v0", std::vector<uint8_t>(kSize, 0));
    for (step_ = 0; step_ < steps; step_++) {
      Step();
      if (::testing::Test::HasFatalFailure()) return;
    }
    for (auto& [name, m] : vols_) {
      VerifyVolume(name);
      for (auto& [s, bytes] : m.snaps) VerifySnapshot(name, s);
    }
    for (auto& [name, m] : vols_) {
      if (m.v) {
        ASSERT_TRUE(m.v->Close().ok()) << Where();
      }
    }
  }
  int crashes() const { return crashes_; }
  int clones() const { return clones_; }

 private:
  std::string Where() const { return "step " + std::to_string(step_); }

  void NewModel(const std::string& name, std::vector<uint8_t> content) {
    VolModel& m = vols_[name];
    m.durable = content;
    m.now = std::move(content);
  }

  VolModel& Pick(std::string* name) {
    auto it = vols_.begin();
    std::advance(it, rng_() % vols_.size());
    *name = it->first;
    return it->second;
  }

  Volume* OpenVol(const std::string& name, VolModel& m) {
    if (!m.v) {
      OpenOptions oo;
      oo.checkpoint_interval = 64 << 10;  // checkpoints often, pending snapshots or not
      oo.clean_threshold = 0.6;
      auto v = Volume::Open(&fs_, name, oo);
      EXPECT_TRUE(v.ok()) << Where() << " open " << name << ": " << v.status().ToString();
      if (!v.ok()) return nullptr;
      m.v = std::move(*v);
    }
    return m.v.get();
  }

  void Flushed(VolModel& m) {
    m.durable = m.now;
    m.since.clear();
  }

  // Whether anything depends on snapshot VOL@S (a clone that was not
  // detached).
  bool HasClones(const std::string& spec) const {
    for (auto& [n, m] : vols_) {
      if (m.parent == spec) return true;
    }
    return false;
  }

  void Step() {
    std::string name;
    VolModel& m = Pick(&name);
    const uint64_t roll = rng_() % 100;
    if (roll < 45) {  // I/O
      Volume* v = OpenVol(name, m);
      ASSERT_NE(v, nullptr);
      Op op;
      crashtest::RandomRange(rng_, kSize, 8, 9000, &op);
      ASSERT_TRUE(crashtest::Perform(v, rng_() % 10, 7, 2, rng_, &op).ok()) << Where();
      crashtest::Apply(op, &m.now);
      m.since.push_back(std::move(op));
    } else if (roll < 52) {
      Volume* v = OpenVol(name, m);
      ASSERT_NE(v, nullptr);
      ASSERT_TRUE(v->Flush().ok()) << Where();
      Flushed(m);
    } else if (roll < 60) {  // snapshot
      Volume* v = OpenVol(name, m);
      ASSERT_NE(v, nullptr);
      const std::string s = "s" + std::to_string(next_snap_++);
      auto r = v->CreateSnapshot(s);
      ASSERT_TRUE(r.ok()) << Where() << ": " << r.status().ToString();
      Flushed(m);  // creation flushes
      m.snaps[s] = m.now;
    } else if (roll < 65) {  // clone
      if (m.snaps.empty() || vols_.size() >= kMaxVolumes) return;
      auto it = m.snaps.begin();
      std::advance(it, rng_() % m.snaps.size());
      const std::string spec = name + "@" + it->first;
      const std::string c = "v" + std::to_string(next_vol_++);
      Status s = Volume::Clone(&fs_, spec, c);
      if (s.IsInvalidArgument()) return;  // too deep
      ASSERT_TRUE(s.ok()) << Where() << " clone " << spec << ": " << s.ToString();
      std::vector<uint8_t> content = it->second;
      NewModel(c, std::move(content));
      vols_[c].parent = spec;
      clones_++;
    } else if (roll < 68) {  // rollback
      if (m.snaps.empty()) return;
      auto it = m.snaps.begin();
      std::advance(it, rng_() % m.snaps.size());
      Volume* v = OpenVol(name, m);
      ASSERT_NE(v, nullptr);
      Status s = v->Rollback(it->first);
      ASSERT_TRUE(s.ok()) << Where() << ": " << s.ToString();
      m.now = it->second;
      Flushed(m);
    } else if (roll < 73) {  // remove a snapshot
      if (m.snaps.empty()) return;
      auto it = m.snaps.begin();
      std::advance(it, rng_() % m.snaps.size());
      Volume* v = OpenVol(name, m);
      ASSERT_NE(v, nullptr);
      Status s = v->RemoveSnapshot(it->first);
      if (HasClones(name + "@" + it->first)) {
        ASSERT_TRUE(s.IsBusy()) << Where() << ": " << s.ToString();
      } else {
        ASSERT_TRUE(s.ok()) << Where() << ": " << s.ToString();
        m.snaps.erase(it);
      }
    } else if (roll < 76) {  // flatten
      if (m.parent.empty()) return;
      Volume* v = OpenVol(name, m);
      ASSERT_NE(v, nullptr);
      auto r = v->Flatten(nullptr);
      ASSERT_TRUE(r.ok()) << Where() << ": " << r.status().ToString();
      // Detached unless one of its own snapshots still uses a parent's
      // block; with none, it must be.
      std::string pv, ps;
      ASSERT_TRUE(Volume::ParseSpec(m.parent, &pv, &ps).ok());
      auto kids = ListChildren(&fs_, pv, 0);
      ASSERT_TRUE(kids.ok());
      const bool still = std::find(kids->begin(), kids->end(), name) != kids->end();
      ASSERT_FALSE(still && m.snaps.empty()) << Where() << ": " << name << " not detached";
      if (!still) m.parent.clear();
    } else if (roll < 79) {  // remove a volume
      if (vols_.size() == 1) return;
      if (m.v) {
        ASSERT_TRUE(m.v->Close().ok()) << Where();
        m.v.reset();
        Flushed(m);
      }
      Status s = Volume::Remove(&fs_, name);
      if (!m.snaps.empty()) {
        ASSERT_TRUE(s.IsBusy()) << Where() << ": " << s.ToString();
        return;
      }
      ASSERT_TRUE(s.ok()) << Where() << ": " << s.ToString();
      vols_.erase(name);
    } else if (roll < 84) {  // clean
      Volume* v = OpenVol(name, m);
      ASSERT_NE(v, nullptr);
      auto r = v->Clean(rng_() % 2 ? 1.0 : 0.5);
      ASSERT_TRUE(r.ok()) << Where() << ": " << r.status().ToString();
    } else if (roll < 88) {  // close (then reopened on demand)
      if (!m.v) return;
      ASSERT_TRUE(m.v->Close().ok()) << Where();
      m.v.reset();
      Flushed(m);
    } else if (roll < 96) {  // verify something
      if (!m.snaps.empty() && rng_() % 2) {
        auto it = m.snaps.begin();
        std::advance(it, rng_() % m.snaps.size());
        VerifySnapshot(name, it->first);
      } else {
        VerifyVolume(name);
      }
    } else {
      Crash();
    }
  }

  std::vector<uint8_t> ReadAll(Volume* v, const std::string& what) {
    std::vector<uint8_t> got(kSize);
    Status s = v->Read(0, got);
    EXPECT_TRUE(s.ok()) << Where() << " read " << what << ": " << s.ToString();
    return got;
  }

  void VerifyVolume(const std::string& name) {
    VolModel& m = vols_[name];
    Volume* v = OpenVol(name, m);
    ASSERT_NE(v, nullptr);
    ASSERT_TRUE(ReadAll(v, name) == m.now) << Where() << ": volume " << name << " differs";
  }

  void VerifySnapshot(const std::string& name, const std::string& snap) {
    OpenOptions ro;
    ro.read_only = true;
    auto s = Volume::Open(&fs_, name + "@" + snap, ro);
    ASSERT_TRUE(s.ok()) << Where() << " " << name << "@" << snap << ": " << s.status().ToString();
    ASSERT_TRUE(ReadAll(s->get(), name + "@" + snap) == vols_[name].snaps[snap])
        << Where() << ": snapshot " << name << "@" << snap << " differs";
  }

  void Crash() {
    crashes_++;
    ASSERT_TRUE(fs_.SimulateCrash(rng_() % 2 ? FaultInjectionStore::CrashKind::kPowerLoss
                                             : FaultInjectionStore::CrashKind::kProcessCrash)
                    .ok());
    for (auto& [name, m] : vols_) {
      if (m.v) (void)m.v->Close();  // fails: the store went down
      m.v.reset();
    }
    fs_.ClearFailures();
    for (auto& [name, m] : vols_) {
      Volume* v = OpenVol(name, m);
      ASSERT_NE(v, nullptr);
      const std::vector<uint8_t> got = ReadAll(v, name);
      std::vector<uint8_t> state = m.durable;
      const int64_t k = crashtest::FindPrefix(&state, m.since, 0, got);
      ASSERT_GE(k, 0) << Where() << ": volume " << name
                      << " after a crash is no prefix of its acknowledged operations";
      m.now = got;
      Flushed(m);
    }
  }

  store::MemoryStore mem_;
  FaultInjectionStore fs_;
  std::mt19937_64 rng_;
  std::map<std::string, VolModel> vols_;
  int step_ = 0;
  int next_snap_ = 1;
  int next_vol_ = 1;
  int crashes_ = 0;
  int clones_ = 0;
};

TEST(SnapshotModelTest, RandomStepsMatchTheModel) {
  int crashes = 0, clones = 0;
  for (uint64_t seed = 1; seed <= 30; seed++) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Model model(seed);
    model.Run(500);
    if (::testing::Test::HasFatalFailure()) return;
    crashes += model.crashes();
    clones += model.clones();
  }
  // The run exercised what it is about.
  EXPECT_GT(crashes, 100);
  EXPECT_GT(clones, 40);
}

}  // namespace
}  // namespace hbiss::volume
