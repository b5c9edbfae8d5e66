// A full store must not wedge a volume (issue 8): when the log's Create,
// Append, Sync or Close fails with NoSpace, writes and flushes fail with
// NoSpace meanwhile, nothing acknowledged is lost, and the log goes on once
// space is back; the reserve lets a checkpoint, recovery's re-log and the
// cleaner proceed on a full store. FullStore below models the full device:
// a capacity in bytes (Append writes what fits, then fails), and switches
// that fail every Create or Sync with NoSpace. Under it a FaultInjectionStore
// simulates crashes, so the crash contract (tests/volume/crash_model.h) is
// checked across stalls too.
#include <gtest/gtest.h>

#include <chrono>
#include <limits>
#include <mutex>
#include <random>
#include <thread>

#include "store/fault_injection_store.h"
#include "store/memory_store.h"
#include "store/store_wrapper.h"
#include "tests/volume/crash_model.h"
#include "volume/volume.h"
#include "volume/volume_testing.h"

namespace hbiss::volume {
namespace {

using crashtest::FindPrefix;
using crashtest::Op;
using crashtest::Pattern;
using store::FaultInjectionStore;

constexpr uint64_t kUnlimited = std::numeric_limits<uint64_t>::max();

class FullStore : public store::StoreWrapper {
 public:
  struct State {
    std::mutex mu;
    uint64_t used = 0;
    uint64_t capacity = kUnlimited;
    bool fail_create = false;
    bool fail_sync = false;
    uint64_t no_space_errors = 0;
    uint64_t seg_puts = 0;  // Puts of segments (recovery's re-log)

    Status NoSpace(const std::string& what) {
      no_space_errors++;
      return Status::NoSpace("injected: device full: " + what);
    }
  };

  explicit FullStore(store::Store* target) : StoreWrapper(target) {}

  bool MayRunOutOfSpace() const override { return true; }

  void SetFree(uint64_t bytes) {
    std::lock_guard<std::mutex> g(st_->mu);
    st_->capacity = st_->used + bytes;
  }
  void Unlimited() {
    std::lock_guard<std::mutex> g(st_->mu);
    st_->capacity = kUnlimited;
    st_->fail_create = st_->fail_sync = false;
  }
  void FailCreate(bool on) {
    std::lock_guard<std::mutex> g(st_->mu);
    st_->fail_create = on;
  }
  void FailSync(bool on) {
    std::lock_guard<std::mutex> g(st_->mu);
    st_->fail_sync = on;
  }
  uint64_t no_space_errors() {
    std::lock_guard<std::mutex> g(st_->mu);
    return st_->no_space_errors;
  }
  uint64_t seg_puts() {
    std::lock_guard<std::mutex> g(st_->mu);
    return st_->seg_puts;
  }
  // After a simulated crash shortened objects: count the bytes again.
  void Recount() {
    uint64_t n = Walk("");
    std::lock_guard<std::mutex> g(st_->mu);
    st_->used = n;
  }

  Result<std::unique_ptr<store::SegmentWriter>> Create(const std::string& name) override {
    {
      std::lock_guard<std::mutex> g(st_->mu);
      if (st_->fail_create || st_->used >= st_->capacity) return st_->NoSpace("create " + name);
    }
    HBISS_ASSIGN_OR_RETURN(auto w, target()->Create(name));
    return std::unique_ptr<store::SegmentWriter>(std::make_unique<Writer>(std::move(w), st_));
  }
  Status Put(const std::string& name, std::span<const uint8_t> data) override {
    auto old = target()->Stat(name);
    const uint64_t old_size = old.ok() ? *old : 0;
    {
      std::lock_guard<std::mutex> g(st_->mu);
      if (st_->used - std::min(old_size, st_->used) + data.size() > st_->capacity) {
        return st_->NoSpace("put " + name);
      }
    }
    HBISS_RETURN_IF_ERROR(target()->Put(name, data));
    std::lock_guard<std::mutex> g(st_->mu);
    st_->used = st_->used - std::min(old_size, st_->used) + data.size();
    if (name.find("/seg/") != std::string::npos) st_->seg_puts++;
    return Status::OK();
  }
  Status Delete(const std::string& name) override {
    auto size = target()->Stat(name);
    HBISS_RETURN_IF_ERROR(target()->Delete(name));
    std::lock_guard<std::mutex> g(st_->mu);
    if (size.ok()) st_->used -= std::min(*size, st_->used);
    return Status::OK();
  }

 private:
  class Writer : public store::SegmentWriterWrapper {
   public:
    Writer(std::unique_ptr<store::SegmentWriter> t, std::shared_ptr<State> st)
        : SegmentWriterWrapper(std::move(t)), st_(std::move(st)) {}
    Status Append(std::span<const uint8_t> data) override {
      uint64_t room = 0;
      {
        std::lock_guard<std::mutex> g(st_->mu);
        if (broken_) return st_->NoSpace("append to a broken writer");
        room = st_->capacity - std::min(st_->used, st_->capacity);
      }
      const size_t n = std::min<uint64_t>(room, data.size());
      if (n > 0) HBISS_RETURN_IF_ERROR(target()->Append(data.first(n)));
      std::lock_guard<std::mutex> g(st_->mu);
      st_->used += n;
      if (n < data.size()) {
        broken_ = true;  // like write(2): the part that fit is in the file
        return st_->NoSpace("append");
      }
      return Status::OK();
    }
    Status Sync() override {
      {
        std::lock_guard<std::mutex> g(st_->mu);
        if (broken_ || st_->fail_sync) {
          broken_ = true;
          return st_->NoSpace("sync");
        }
      }
      return target()->Sync();
    }
    Status Close() override {
      {
        std::lock_guard<std::mutex> g(st_->mu);
        if (broken_ || st_->fail_sync) {
          broken_ = true;
          return st_->NoSpace("close");
        }
      }
      return target()->Close();
    }

   private:
    std::shared_ptr<State> st_;
    bool broken_ = false;  // guarded by st_->mu
  };

  uint64_t Walk(const std::string& dir) {
    uint64_t n = 0;
    auto list = target()->List(dir);
    if (!list.ok()) return 0;
    for (const auto& o : *list) {
      const std::string p = dir.empty() ? o.name : dir + "/" + o.name;
      n += o.is_dir ? Walk(p) : o.size;
    }
    return n;
  }

  std::shared_ptr<State> st_ = std::make_shared<State>();
};

constexpr uint64_t kVolSize = 8 << 20;
constexpr uint64_t kSegSize = 256 << 10;

// The model: every acknowledged operation, and the volume's bytes.
struct Model {
  std::vector<Op> ops;
  std::vector<uint8_t> state = std::vector<uint8_t>(kVolSize, 0);
  size_t flushed = 0;  // ops acknowledged before the last completed Flush

  void Acked(Op op) {
    crashtest::Apply(op, &state);
    ops.push_back(std::move(op));
  }
};

void ExpectEquals(Volume* v, const std::vector<uint8_t>& want, const std::string& when) {
  std::vector<uint8_t> got(kVolSize);
  ASSERT_TRUE(v->Read(0, got).ok()) << when;
  for (uint64_t b = 0; b < kVolSize / kBlockSize; b++) {
    ASSERT_EQ(0, std::memcmp(got.data() + b * kBlockSize, want.data() + b * kBlockSize,
                             kBlockSize))
        << when << ": block " << b << " differs";
  }
}

class NoSpaceTest : public ::testing::Test {
 protected:
  NoSpaceTest() : fis_(&mem_, 42), fs_(&fis_) {}

  void SetUp() override {
    CreateOptions co;
    co.size = kVolSize;
    co.segment_size = seg_size_;
    ASSERT_TRUE(Volume::Create(&fs_, "v", co).ok());
    Open();
  }
  void Open() {
    auto r = Volume::Open(&fs_, "v", oo_);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    v_ = std::move(*r);
  }
  // Writes `len` bytes of fresh data at `off`; records it when acknowledged.
  Status Write(uint64_t off, uint64_t len) {
    Op op;
    op.off = off;
    op.len = len;
    op.data = Pattern(len, rng_());
    Status s = v_->Write(off, op.data);
    if (s.ok()) model_.Acked(std::move(op));
    return s;
  }
  Status Flush() {
    Status s = v_->Flush();
    if (s.ok()) model_.flushed = model_.ops.size();
    return s;
  }
  // Writes 64 KiB pieces until the volume says NoSpace; all but that one
  // are acknowledged. Fails the test on any other error.
  void WriteUntilNoSpace() {
    for (int i = 0; i < 400; i++) {
      Status s = Write((uint64_t(i) * 17 % 120) << 16, 64 << 10);
      if (s.IsNoSpace()) return;
      ASSERT_TRUE(s.ok()) << s.ToString();
      if (i % 8 == 7) {
        s = Flush();
        if (s.IsNoSpace()) return;
        ASSERT_TRUE(s.ok()) << s.ToString();
      }
    }
    FAIL() << "the volume never reported NoSpace";
  }
  // Space is back: writes and a flush go through again (a write asks for a
  // retry at most once per 100 ms).
  void ExpectResumes() {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    Status s = Write(0, 8192);
    ASSERT_TRUE(s.ok()) << "the volume did not resume: " << s.ToString();
    s = Flush();
    ASSERT_TRUE(s.ok()) << s.ToString();
    ExpectEquals(v_.get(), model_.state, "after resuming");
    ASSERT_TRUE(Write(5 << 20, 1 << 20).ok());
    ASSERT_TRUE(Flush().ok());
    ExpectEquals(v_.get(), model_.state, "after more writes");
    // Flush + reopen: everything acknowledged is there.
    ASSERT_TRUE(v_->Close().ok());
    v_.reset();
    Open();
    ExpectEquals(v_.get(), model_.state, "after a reopen");
  }

  uint64_t seg_size_ = kSegSize;
  store::MemoryStore mem_;
  FaultInjectionStore fis_;
  FullStore fs_;
  OpenOptions oo_;
  std::unique_ptr<Volume> v_;
  Model model_;
  std::mt19937_64 rng_{7};
};

TEST_F(NoSpaceTest, AppendNoSpaceStallsThenResumes) {
  ASSERT_TRUE(Write(0, 512 << 10).ok());
  ASSERT_TRUE(Flush().ok());
  fs_.SetFree(300 << 10);  // a segment's worth, and a part of the next
  WriteUntilNoSpace();
  EXPECT_GT(fs_.no_space_errors(), 0u);
  // Stalled: flushes say NoSpace, every acknowledged write reads back.
  Status s = v_->Flush();
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  ExpectEquals(v_.get(), model_.state, "while stalled");
  // A retry on a still-full store fails again and loses nothing.
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  EXPECT_TRUE(v_->Flush().IsNoSpace());
  ExpectEquals(v_.get(), model_.state, "after a failed retry");
  fs_.Unlimited();
  ExpectResumes();
}

TEST_F(NoSpaceTest, SyncNoSpaceStallsThenResumes) {
  ASSERT_TRUE(Write(0, 512 << 10).ok());
  ASSERT_TRUE(Flush().ok());
  ASSERT_TRUE(Write(1 << 20, 100 << 10).ok());
  fs_.FailSync(true);
  Status s = Flush();
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  s = Write(2 << 20, 4096);
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  ExpectEquals(v_.get(), model_.state, "while stalled");
  fs_.FailSync(false);
  ExpectResumes();
}

TEST_F(NoSpaceTest, CreateNoSpaceStallsThenResumes) {
  ASSERT_TRUE(Write(0, 64 << 10).ok());
  ASSERT_TRUE(Flush().ok());
  fs_.FailCreate(true);  // the next segment cannot be created
  WriteUntilNoSpace();
  ExpectEquals(v_.get(), model_.state, "while stalled");
  fs_.FailCreate(false);
  ExpectResumes();
}

// A full store at Close: the checkpoint Put takes the reserve's space.
// Review finding: the store filled up right after CreateSnapshot took the
// snapshot's map (the flusher's append of the batch it sealed failed), and
// the retry that CreateSnapshot's Flush asked for logged that batch again
// into a new segment, numbered the batches again and deleted the old
// segments. Flush said OK, and the snapshot was recorded with a map into
// deleted segments and a stop_seq of the old numbering. Now the creation
// fails with NoSpace and records nothing, or the snapshot reads exactly
// what the volume held.
TEST_F(NoSpaceTest, SnapshotCreatedAcrossANoSpaceRelogIsNotLost) {
  ASSERT_TRUE(Write(0, 1 << 20).ok());
  ASSERT_TRUE(Flush().ok());
  // Acknowledged, not durable: in the open batch.
  ASSERT_TRUE(Write(3 << 20, 64 << 10).ok());
  ASSERT_TRUE(Write(1 << 19, 32 << 10).ok());
  const std::vector<uint8_t> at_snap = model_.state;
  const uint64_t errors_before = fs_.no_space_errors();
  // Full from now on: the next append, of the batch CreateSnapshot seals,
  // fails. Once the log has stalled, space is back.
  fs_.SetFree(0);
  testing::SetSnapshotMapTakenHook([&] {
    for (int i = 0; i < 5000 && fs_.no_space_errors() == errors_before; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the flusher stalls
    fs_.Unlimited();
  });
  auto snap = v_->CreateSnapshot("s");
  testing::SetSnapshotMapTakenHook(nullptr);
  fs_.Unlimited();
  EXPECT_GT(fs_.no_space_errors(), errors_before) << "no append failed: the test missed";
  auto check = [&](const std::string& when) {
    auto list = Volume::ListSnapshots(&fs_, "v");
    ASSERT_TRUE(list.ok()) << when << ": " << list.status().ToString();
    if (!snap.ok()) {
      EXPECT_TRUE(list->empty()) << when << ": a snapshot whose creation failed exists";
      return;
    }
    ASSERT_EQ(list->size(), 1u) << when;
    OpenOptions ro;
    ro.read_only = true;
    auto s = Volume::Open(&fs_, "v@s", ro);
    ASSERT_TRUE(s.ok()) << when << ": " << s.status().ToString();
    ExpectEquals(s->get(), at_snap, when + ": the snapshot");
  };
  if (!snap.ok()) {
    EXPECT_TRUE(snap.status().IsNoSpace()) << snap.status().ToString();
  }
  check("after the creation");
  if (HasFatalFailure()) return;
  ExpectResumes();  // more writes, a close and a reopen: the volume is whole
  if (HasFatalFailure()) return;
  check("after a reopen");
}

TEST_F(NoSpaceTest, CheckpointPutUsesTheReserve) {
  ASSERT_TRUE(Write(0, 1 << 20).ok());
  ASSERT_TRUE(Flush().ok());
  fs_.SetFree(0);
  Status s = v_->Close();
  ASSERT_TRUE(s.ok()) << s.ToString();
  v_.reset();
  EXPECT_TRUE(fs_.Stat("volumes/v/reserve").status().IsNotFound());
  fs_.Unlimited();
  Open();  // puts the reserve back
  EXPECT_TRUE(fs_.Stat("volumes/v/reserve").ok());
  ExpectEquals(v_.get(), model_.state, "after a reopen");
}

// Segments that hold several batches, so that a segment's tail can be
// appended and not synced.
class BigSegmentNoSpaceTest : public NoSpaceTest {
 protected:
  BigSegmentNoSpaceTest() { seg_size_ = 4 << 20; }
};

// After a crash on a full store, recovery's re-log Put takes the reserve's
// space, and the recovered volume is a prefix that includes every flush.
TEST_F(BigSegmentNoSpaceTest, RecoveryRelogUsesTheReserve) {
  uint64_t relogs = 0;
  for (int round = 0; round < 12; round++) {
    SCOPED_TRACE("round " + std::to_string(round));
    ASSERT_TRUE(Write(uint64_t(round % 4) << 20, 256 << 10).ok());
    ASSERT_TRUE(Flush().ok());
    // Batches of 1 MiB are sealed and appended without a sync.
    ASSERT_TRUE(Write(4 << 20, 3 << 20).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    fis_.CrashAfter(0);
    v_.reset();
    ASSERT_TRUE(fis_.SimulateCrash(FaultInjectionStore::CrashKind::kProcessCrash).ok());
    fs_.Recount();
    fs_.SetFree(0);
    const uint64_t puts = fs_.seg_puts();
    Open();
    if (HasFatalFailure()) return;
    relogs += fs_.seg_puts() - puts;
    std::vector<uint8_t> actual(kVolSize);
    ASSERT_TRUE(v_->Read(0, actual).ok());
    std::vector<uint8_t> state(kVolSize, 0);
    for (size_t i = 0; i < model_.flushed; i++) crashtest::Apply(model_.ops[i], &state);
    int64_t k = FindPrefix(&state, model_.ops, model_.flushed, actual);
    ASSERT_GE(k, int64_t(model_.flushed)) << "not a prefix that includes every flush";
    model_.ops.resize(size_t(k));
    model_.state = actual;
    model_.flushed = model_.ops.size();
    ASSERT_TRUE(v_->Close().ok());
    v_.reset();
    fs_.Unlimited();
    Open();
  }
  EXPECT_GT(relogs, 0u) << "no round re-logged a tail on the full store";
}

// Cleaning on a full store: the reserve gives the copies room, and the
// pass deletes the segments it emptied.
TEST_F(NoSpaceTest, CleanOnAFullStore) {
  ASSERT_TRUE(v_->Close().ok());
  oo_.clean_threshold = 0;  // garbage stays until Clean
  Open();
  for (int pass = 0; pass < 3; pass++) {
    for (uint64_t off = 0; off < (2 << 20); off += 256 << 10) {
      ASSERT_TRUE(Write(off, 256 << 10).ok());
    }
  }
  ASSERT_TRUE(Flush().ok());
  ASSERT_TRUE(v_->Close().ok());
  v_.reset();
  fs_.SetFree(0);
  Open();
  auto st = v_->Clean(1.0);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_GT(st->segments_deleted, 0u);
  ExpectEquals(v_.get(), model_.state, "after cleaning");
  ASSERT_TRUE(v_->Close().ok());
  v_.reset();
  fs_.Unlimited();
  Open();
  ExpectEquals(v_.get(), model_.state, "after a reopen");
}

// Random operations while the store fills up and empties again, sometimes
// failing Create or Sync, then a crash: the live volume always equals every
// acknowledged operation, and the recovered one a prefix that includes
// every flush.
TEST(NoSpaceCrashTest, RandomFullAndCrash) {
  for (uint64_t seed = 1; seed <= 8; seed++) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    store::MemoryStore mem;
    FaultInjectionStore fis(&mem, seed);
    FullStore fs(&fis);
    CreateOptions co;
    co.size = kVolSize;
    co.segment_size = kSegSize;
    ASSERT_TRUE(Volume::Create(&fs, "r", co).ok());
    OpenOptions oo;
    oo.checkpoint_interval = 512 << 10;
    auto vr = Volume::Open(&fs, "r", oo);
    ASSERT_TRUE(vr.ok()) << vr.status().ToString();
    std::unique_ptr<Volume> v = std::move(*vr);
    Model m;
    uint64_t stalls = 0;
    for (int i = 0; i < 300; i++) {
      const uint64_t roll = rng() % 100;
      if (roll < 4) {
        fs.SetFree(rng() % (512 << 10));
      } else if (roll < 6) {
        fs.FailSync(true);
      } else if (roll < 8) {
        fs.FailCreate(true);
      } else if (roll < 14) {
        fs.Unlimited();
        std::this_thread::sleep_for(std::chrono::milliseconds(110));
      } else if (roll < 24) {
        Status s = v->Flush();
        if (s.ok()) m.flushed = m.ops.size();
        ASSERT_TRUE(s.ok() || s.IsNoSpace()) << s.ToString();
        stalls += s.IsNoSpace();
      } else {
        Op op;
        crashtest::RandomRange(rng, kVolSize, 64, 100000, &op);
        Status s = crashtest::Perform(v.get(), rng() % 10, 8, 1, rng, &op);
        ASSERT_TRUE(s.ok() || s.IsNoSpace()) << s.ToString();
        if (s.ok()) m.Acked(std::move(op));
      }
    }
    ExpectEquals(v.get(), m.state, "live, with the store as the ops left it");
    if (HasFatalFailure()) return;
    // Space is back for good: the volume must go on and make it all durable.
    fs.Unlimited();
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    Op op;
    op.off = 0;
    op.len = 3 * kBlockSize;
    op.data = Pattern(op.len, rng());
    Status s = v->Write(op.off, op.data);
    ASSERT_TRUE(s.ok()) << "no resume: " << s.ToString();
    m.Acked(std::move(op));
    s = v->Flush();
    ASSERT_TRUE(s.ok()) << "no resume: " << s.ToString();
    m.flushed = m.ops.size();
    ExpectEquals(v.get(), m.state, "live, before the crash");
    if (HasFatalFailure()) return;
    fis.CrashAfter(0);
    v.reset();
    ASSERT_TRUE(fis.SimulateCrash(FaultInjectionStore::CrashKind::kPowerLoss).ok());
    fs.Unlimited();
    vr = Volume::Open(&fs, "r", oo);
    ASSERT_TRUE(vr.ok()) << vr.status().ToString();
    v = std::move(*vr);
    std::vector<uint8_t> actual(kVolSize);
    ASSERT_TRUE(v->Read(0, actual).ok());
    std::vector<uint8_t> state(kVolSize, 0);
    for (size_t i = 0; i < m.flushed; i++) crashtest::Apply(m.ops[i], &state);
    EXPECT_GE(FindPrefix(&state, m.ops, m.flushed, actual), int64_t(m.flushed))
        << "not a prefix that includes every flush (" << stalls << " flushes said NoSpace)";
    ASSERT_TRUE(v->Close().ok());
  }
}

}  // namespace
}  // namespace hbiss::volume
