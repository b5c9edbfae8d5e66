// Epoch directories through the Volume API (doc/ownership.md "Fencing"):
// owners and epochs, readers that follow a change of owner, fencing a holder
// whose lock was broken, self-fencing when the lock can no longer be
// trusted, and crashes during the rename and the version-1 move.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "store/fault_injection_store.h"
#include "store/memory_store.h"
#include "store/store_wrapper.h"
#include "util/bytes.h"
#include "volume/epoch.h"
#include "volume/layout.h"
#include "volume/volume.h"
#include "volume/volume_meta.h"

namespace hbiss::volume {
namespace {

constexpr uint64_t kSize = 4 << 20;

std::vector<uint8_t> Block(uint8_t v, size_t n = kBlockSize) { return std::vector<uint8_t>(n, v); }

void Create(store::Store* s, const std::string& name = "v") {
  CreateOptions co;
  co.size = kSize;
  co.segment_size = 256 << 10;
  ASSERT_TRUE(Volume::Create(s, name, co).ok());
}

std::unique_ptr<Volume> OpenRW(store::Store* s, const std::string& owner = "",
                               double clean = 0) {
  OpenOptions o;
  o.owner = owner;
  o.clean_threshold = clean;
  auto v = Volume::Open(s, "v", o);
  EXPECT_TRUE(v.ok()) << v.status().ToString();
  return v.ok() ? std::move(*v) : nullptr;
}

std::unique_ptr<Volume> OpenRO(store::Store* s) {
  OpenOptions o;
  o.read_only = true;
  auto v = Volume::Open(s, "v", o);
  EXPECT_TRUE(v.ok()) << v.status().ToString();
  return v.ok() ? std::move(*v) : nullptr;
}

uint8_t ByteAt(Volume* v, uint64_t lba) {
  std::vector<uint8_t> b(kBlockSize);
  Status s = v->Read(lba * kBlockSize, b);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return b[0];
}

TEST(VolumeEpochTest, EveryWritableOpenStartsAnEpochAndOwnerFollowsIt) {
  store::MemoryStore mem;
  Create(&mem);
  auto r = Volume::Owner(&mem, "v");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->epoch, 0u);
  EXPECT_EQ(r->owner, "");
  EXPECT_TRUE(Volume::Owner(&mem, "nope").status().IsNotFound());
  for (uint64_t e = 1; e <= 3; e++) {
    auto v = OpenRW(&mem, "{\"server\":\"h" + std::to_string(e) + "\"}");
    ASSERT_TRUE(v != nullptr);
    EXPECT_EQ(v->epoch(), e);
    EXPECT_TRUE(v->Owned().ok());
    ASSERT_TRUE(v->Write(e * kBlockSize, Block(uint8_t(e))).ok());
    auto o = Volume::Owner(&mem, "v");
    ASSERT_TRUE(o.ok());
    EXPECT_EQ(o->epoch, e);
    EXPECT_EQ(o->owner, "{\"server\":\"h" + std::to_string(e) + "\"}");
    ASSERT_TRUE(v->Close().ok());
    o = Volume::Owner(&mem, "v");
    EXPECT_EQ(o->epoch, e);
    EXPECT_EQ(o->owner, "") << "a clean close releases the volume";
    // Only the current epoch directory is left.
    EXPECT_EQ(ListEpochs(&mem, "v").value(), std::vector<uint64_t>{e});
  }
  auto v = OpenRO(&mem);
  ASSERT_TRUE(v != nullptr);
  EXPECT_EQ(v->epoch(), 3u);
  for (uint64_t e = 1; e <= 3; e++) EXPECT_EQ(ByteAt(v.get(), e), e);
  auto st = Volume::Stat(&mem, "v");
  ASSERT_TRUE(st.ok());
  EXPECT_GE(st->segment_count, 1u);
  EXPECT_EQ(st->mapped_bytes, 3 * kBlockSize);
  EXPECT_EQ(Volume::List(&mem).value(), std::vector<std::string>{"v"});
  v.reset();
  ASSERT_TRUE(Volume::Remove(&mem, "v").ok());
  EXPECT_TRUE(mem.List("volumes/v").status().IsNotFound());
}

// A reader open across two changes of owner: Refresh follows the log into
// each new epoch and reads the newest data.
TEST(VolumeEpochTest, AReaderFollowsTheLogIntoANewEpoch) {
  store::MemoryStore mem;
  Create(&mem);
  {
    auto a = OpenRW(&mem);
    ASSERT_TRUE(a->Write(0, Block(1)).ok());
    ASSERT_TRUE(a->Close().ok());
  }
  auto reader = OpenRO(&mem);
  ASSERT_TRUE(reader != nullptr);
  EXPECT_EQ(reader->epoch(), 1u);
  EXPECT_EQ(ByteAt(reader.get(), 0), 1);
  {
    auto a = OpenRW(&mem);
    ASSERT_TRUE(a->Write(0, Block(2)).ok());
    ASSERT_TRUE(a->Write(kBlockSize, Block(2)).ok());
    ASSERT_TRUE(a->Flush().ok());
    ASSERT_TRUE(a->Close().ok());
  }
  auto b = OpenRW(&mem);
  ASSERT_TRUE(b != nullptr);
  EXPECT_EQ(b->epoch(), 3u);
  ASSERT_TRUE(b->Write(2 * kBlockSize, Block(3)).ok());
  ASSERT_TRUE(b->Flush().ok());
  ASSERT_TRUE(reader->Refresh().ok());
  EXPECT_EQ(reader->epoch(), 3u);
  EXPECT_EQ(ByteAt(reader.get(), 0), 2);
  EXPECT_EQ(ByteAt(reader.get(), 1), 2);
  EXPECT_EQ(ByteAt(reader.get(), 2), 3);
  ASSERT_TRUE(b->Close().ok());
}

// A store that renames the log right after the reader opens a segment by
// name for the first time: the reader's read finds it gone (NotFound),
// resolves the epoch again and reads it under its new name.
class RenameOnOpenStore : public store::StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  Result<std::unique_ptr<store::SegmentReader>> Open(const std::string& name) override {
    if (armed.exchange(false)) {
      auto w = Volume::Open(target(), "v");  // a new owner renames E -> E+1
      EXPECT_TRUE(w.ok());
      if (w.ok()) {
        EXPECT_TRUE((*w)->Close().ok());
      }
    }
    return StoreWrapper::Open(name);
  }
  std::atomic<bool> armed{false};
};

TEST(VolumeEpochTest, AReadThatRacesTheRenameResolvesTheEpochAgain) {
  store::MemoryStore mem;
  Create(&mem);
  {
    auto a = OpenRW(&mem);
    ASSERT_TRUE(a->Write(0, Block(7, 64 << 10)).ok());
    ASSERT_TRUE(a->Close().ok());
  }
  RenameOnOpenStore racing(&mem);
  auto reader = OpenRO(&racing);
  ASSERT_TRUE(reader != nullptr);
  EXPECT_EQ(reader->epoch(), 1u);
  racing.armed = true;
  EXPECT_EQ(ByteAt(reader.get(), 3), 7);
  EXPECT_FALSE(racing.armed);
  EXPECT_EQ(reader->epoch(), 2u);
  EXPECT_EQ(ByteAt(reader.get(), 15), 7);
}

// Locks that a break can take from a live holder (an HDFS lease whose
// holder is partitioned away): the holder's Lock object lives on, unaware.
class StealableLockStore : public store::StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  class StolenLock : public store::Lock {
   public:
    StolenLock(StealableLockStore* s, std::unique_ptr<store::Lock> inner)
        : store_(s), inner_(std::move(inner)) {}
    ~StolenLock() override {
      std::lock_guard<std::mutex> g(store_->mu_);
      if (store_->holder_ == this) store_->holder_ = nullptr;
    }
    Status Check() const override { return store_->check_; }
    StealableLockStore* store_;
    std::unique_ptr<store::Lock> inner_;
  };
  Result<std::unique_ptr<store::Lock>> TryLock(const std::string& name) override {
    HBISS_ASSIGN_OR_RETURN(auto inner, StoreWrapper::TryLock(name));
    auto l = std::make_unique<StolenLock>(this, std::move(inner));
    std::lock_guard<std::mutex> g(mu_);
    holder_ = l.get();
    return std::unique_ptr<store::Lock>(std::move(l));
  }
  Status BreakLock(const std::string& name) override {
    std::lock_guard<std::mutex> g(mu_);
    if (holder_ != nullptr) {
      holder_->inner_.reset();  // the lease is recovered; the holder is not told
      holder_ = nullptr;
    }
    return Status::OK();
  }
  // What every lock's Check returns (self-fencing tests).
  void SetCheck(Status s) { check_ = std::move(s); }

 private:
  std::mutex mu_;
  StolenLock* holder_ = nullptr;
  Status check_;
};

TEST(VolumeEpochTest, BreakLockFencesAHolderThatStillRuns) {
  store::MemoryStore mem;
  Create(&mem);
  StealableLockStore s(&mem);
  auto a = OpenRW(&s, "a", /*clean=*/0.5);
  ASSERT_TRUE(a != nullptr);
  ASSERT_EQ(a->epoch(), 1u);
  ASSERT_TRUE(a->Write(0, Block(0xa1, 64 << 10)).ok());
  ASSERT_TRUE(a->Flush().ok());
  EXPECT_TRUE(Volume::Open(&s, "v").status().IsBusy());

  ASSERT_TRUE(Volume::BreakLock(&s, "v").ok());
  auto o = Volume::Owner(&s, "v");
  EXPECT_EQ(o->epoch, 2u);
  EXPECT_EQ(o->owner, "") << "a break leaves the volume owned by nobody";
  auto b = OpenRW(&s, "b");
  ASSERT_TRUE(b != nullptr);
  EXPECT_EQ(b->epoch(), 3u) << "break +1, open +1";
  EXPECT_EQ(ByteAt(b.get(), 0), 0xa1) << "what A flushed before the break is B's";
  ASSERT_TRUE(b->Write(64 << 10, Block(0xb1, 64 << 10)).ok());
  ASSERT_TRUE(b->Flush().ok());

  // A goes on as if it still owned the volume: writes that roll segments,
  // flushes, a clean pass, a close with its checkpoint.
  for (uint64_t off = 0; off < (1 << 20); off += 64 << 10) {
    (void)a->Write(off, Block(0xa2, 64 << 10));
  }
  // Nothing written after the break may be acknowledged as durable.
  EXPECT_FALSE(a->Flush().ok()) << "the fenced holder acknowledged a flush";
  EXPECT_FALSE(a->Owned().ok());
  (void)a->Clean(1.0);
  (void)a->Close();
  a.reset();

  auto o2 = Volume::Owner(&s, "v");
  EXPECT_EQ(o2->epoch, 3u);
  EXPECT_EQ(o2->owner, "b");
  EXPECT_EQ(ByteAt(b.get(), 0), 0xa1);
  EXPECT_EQ(ByteAt(b.get(), 16), 0xb1);
  auto reader = OpenRO(&mem);
  ASSERT_TRUE(reader != nullptr);
  EXPECT_EQ(reader->epoch(), 3u);
  EXPECT_EQ(ByteAt(reader.get(), 0), 0xa1) << "A's late writes reach nobody";
  EXPECT_EQ(ByteAt(reader.get(), 16), 0xb1);
  EXPECT_EQ(ByteAt(reader.get(), 40), 0);
  reader.reset();
  ASSERT_TRUE(b->Close().ok());
  b.reset();
  auto c = OpenRW(&mem);
  ASSERT_TRUE(c != nullptr);
  EXPECT_EQ(c->epoch(), 4u);
  EXPECT_EQ(ByteAt(c.get(), 0), 0xa1);
  EXPECT_EQ(ByteAt(c.get(), 16), 0xb1);
  EXPECT_EQ(ByteAt(c.get(), 40), 0);
  EXPECT_EQ(ListEpochs(&mem, "v").value(), std::vector<uint64_t>{4})
      << "the stale epoch A wrote into is deleted by the next open";
}

TEST(VolumeEpochTest, AHolderBrokenRightAfterItsOpenAcknowledgesNothing) {
  // The holder has no open segment yet when the break fences it: its first
  // segment is created in a directory nobody reads, which it must notice.
  store::MemoryStore mem;
  Create(&mem);
  StealableLockStore s(&mem);
  auto a = OpenRW(&s, "a");
  ASSERT_TRUE(a != nullptr);
  ASSERT_TRUE(Volume::BreakLock(&s, "v").ok());
  (void)a->Write(0, Block(0xa3, 64 << 10));
  EXPECT_FALSE(a->Flush().ok()) << "a flush acknowledged into a renamed-away epoch";
  EXPECT_FALSE(a->Owned().ok());
  (void)a->Close();
  a.reset();
  auto reader = OpenRO(&mem);
  ASSERT_TRUE(reader != nullptr);
  EXPECT_EQ(ByteAt(reader.get(), 0), 0);
}

// Rollback wrote its two checkpoints (Puts: they recreate a renamed-away
// epoch) and returned OK without checking the fence: a holder whose lock is
// broken while its rollback runs must see the rollback fail, its volume
// fail, and nobody see the rollback.
TEST(VolumeEpochTest, ARollbackFencedWhileItRunsFailsAndReachesNobody) {
  // Breaks the lock just before the first checkpoint Put once armed.
  class BreakAtCheckpointStore : public StealableLockStore {
   public:
    using StealableLockStore::StealableLockStore;
    Status Put(const std::string& name, std::span<const uint8_t> data) override {
      // Name first: a background Put of another object must not disarm it.
      if (name.find("/ckpt/") != std::string::npos && armed_.exchange(false)) {
        Status b = Volume::BreakLock(this, "v");
        EXPECT_TRUE(b.ok()) << b.ToString();
      }
      return StealableLockStore::Put(name, data);
    }
    std::atomic<bool> armed_{false};
  };
  store::MemoryStore mem;
  Create(&mem);
  BreakAtCheckpointStore s(&mem);
  auto a = OpenRW(&s, "a");
  ASSERT_TRUE(a != nullptr);
  ASSERT_TRUE(a->Write(0, Block(0xa1, 64 << 10)).ok());
  ASSERT_TRUE(a->CreateSnapshot("s").ok());
  ASSERT_TRUE(a->Write(0, Block(0xa2, 64 << 10)).ok());
  ASSERT_TRUE(a->Flush().ok());
  s.armed_ = true;
  Status r = a->Rollback("s");
  EXPECT_FALSE(s.armed_) << "no checkpoint was written";
  EXPECT_FALSE(r.ok()) << "a fenced holder acknowledged a rollback";
  EXPECT_NE(r.ToString().find("taken over"), std::string::npos) << r.ToString();
  EXPECT_FALSE(a->Owned().ok()) << "the fenced holder's volume did not fail";
  EXPECT_FALSE(a->Write(0, Block(0xa3)).ok()) << "the fenced volume went on writing";
  (void)a->Close();
  a.reset();
  auto reader = OpenRO(&mem);
  ASSERT_TRUE(reader != nullptr);
  EXPECT_EQ(ByteAt(reader.get(), 0), 0xa2) << "the fenced rollback reached a reader";
}

TEST(VolumeEpochTest, BreakLockOfAFreeVolumeFencesToo) {
  store::MemoryStore mem;
  Create(&mem);
  ASSERT_TRUE(Volume::BreakLock(&mem, "v").ok());
  EXPECT_EQ(Volume::Owner(&mem, "v")->epoch, 1u);
  {
    auto v = OpenRW(&mem, "x");
    ASSERT_TRUE(v->Write(0, Block(4)).ok());
    ASSERT_TRUE(v->Close().ok());
  }
  ASSERT_TRUE(Volume::BreakLock(&mem, "v").ok());
  EXPECT_EQ(Volume::Owner(&mem, "v")->epoch, 3u);
  EXPECT_EQ(Volume::Owner(&mem, "v")->owner, "");
  auto v = OpenRW(&mem);
  EXPECT_EQ(ByteAt(v.get(), 0), 4);
  EXPECT_TRUE(Volume::BreakLock(&mem, "v").IsBusy()) << "a live holder here is never broken";
  EXPECT_TRUE(Volume::BreakLock(&mem, "nope").IsNotFound());
}

// Self-fencing: once the lock's Check fails, nothing more is acknowledged,
// for good; what was flushed before survives.
TEST(VolumeEpochTest, ALockThatCanNoLongerBeTrustedFailsEveryLaterWrite) {
  store::MemoryStore mem;
  Create(&mem);
  StealableLockStore s(&mem);
  auto v = OpenRW(&s);
  ASSERT_TRUE(v != nullptr);
  ASSERT_TRUE(v->Write(0, Block(1, 64 << 10)).ok());
  ASSERT_TRUE(v->Flush().ok());
  EXPECT_TRUE(v->Owned().ok());
  s.SetCheck(Status::IOError("no lease renewal for 41 s"));
  EXPECT_TRUE(v->Owned().IsIOError());
  EXPECT_TRUE(v->Write(0, Block(2)).IsIOError());
  EXPECT_TRUE(v->Trim(0, kBlockSize).IsIOError());
  EXPECT_TRUE(v->WriteZeroes(0, kBlockSize).IsIOError());
  EXPECT_TRUE(v->Flush().IsIOError());
  s.SetCheck(Status::OK());  // renewals work again: the open stays failed
  Status owned = v->Owned();
  EXPECT_TRUE(owned.IsIOError());
  EXPECT_NE(owned.ToString().find("no lease renewal"), std::string::npos) << owned.ToString();
  EXPECT_TRUE(v->Write(kBlockSize * 20, Block(3)).IsIOError());
  EXPECT_TRUE(v->Flush().IsIOError());
  EXPECT_EQ(ByteAt(v.get(), 0), 1);
  (void)v->Close();
  v.reset();
  auto again = OpenRW(&mem);
  ASSERT_TRUE(again != nullptr);
  for (uint64_t lba = 0; lba < 16; lba++) EXPECT_EQ(ByteAt(again.get(), lba), 1) << lba;
  EXPECT_EQ(ByteAt(again.get(), 20), 0);
  EXPECT_TRUE(again->Owned().ok());
}

// A failure of the log (here a sync) fails the open for good, and Owned()
// says so.
TEST(VolumeEpochTest, OwnedReportsAFailedLog) {
  store::MemoryStore mem;
  Create(&mem);
  store::FaultInjectionStore fs(&mem, 3);
  auto v = OpenRW(&fs);
  ASSERT_TRUE(v != nullptr);
  ASSERT_TRUE(v->Write(0, Block(1)).ok());
  fs.FailNext(store::FaultInjectionStore::Op::kSync);
  EXPECT_FALSE(v->Flush().ok());
  Status owned = v->Owned();
  EXPECT_TRUE(owned.IsIOError()) << owned.ToString();
  EXPECT_TRUE(v->Write(0, Block(2)).IsIOError());
  (void)v->Close();
  EXPECT_EQ(v->Owned().code(), Status::Code::kAborted);
}

// A reader that reads and refreshes without pause while writers open (each a
// new epoch), write, flush and close one after another: it never fails and
// never goes back in time (each round writes a higher value).
TEST(VolumeEpochTest, AReaderKeepsUpWithManyChangesOfOwner) {
  store::MemoryStore mem;
  Create(&mem);
  {
    auto w = OpenRW(&mem);
    ASSERT_TRUE(w->Write(0, Block(1, 64 << 10)).ok());
    ASSERT_TRUE(w->Close().ok());
  }
  auto reader = OpenRO(&mem);
  ASSERT_TRUE(reader != nullptr);
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::atomic<int> refreshes{0};
  std::thread t([&] {
    uint8_t seen = 1;
    std::vector<uint8_t> b(64 << 10);
    while (!stop) {
      Status s = reader->Refresh();
      if (s.ok()) s = reader->Read(0, b);
      if (!s.ok()) {
        ADD_FAILURE() << s.ToString();
        errors++;
        continue;
      }
      refreshes++;
      for (size_t i = 0; i < b.size(); i += kBlockSize) {
        if (b[i] < seen || b[i] == 0) {
          ADD_FAILURE() << "block " << i / kBlockSize << " went back to " << int(b[i]);
          errors++;
        }
      }
      seen = b[0];
    }
  });
  for (int round = 2; round < 40 && errors == 0; round++) {
    auto w = OpenRW(&mem);
    ASSERT_TRUE(w != nullptr);
    ASSERT_TRUE(w->Write(0, Block(uint8_t(round), 64 << 10)).ok());
    ASSERT_TRUE(w->Flush().ok());
    ASSERT_TRUE(w->Close().ok());
    // Owners change much more rarely than this; a reader gives up (IOError,
    // retryable) only when the log moved during ten replays in a row.
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  stop = true;
  t.join();
  EXPECT_EQ(errors, 0);
  EXPECT_GT(refreshes, 0);
  ASSERT_TRUE(reader->Refresh().ok());
  EXPECT_EQ(ByteAt(reader.get(), 15), 39);
  EXPECT_EQ(reader->epoch(), 39u);
}

// Turns a volume written in epoch 1 back into the version-1 layout: the log
// directly under volumes/v, meta version 1.
void MakeVersion1(store::Store* s) {
  const std::string e1 = layout::EpochDir("v", 1).path;
  for (const char* sub : {"seg", "sum", "ckpt"}) {
    if (s->List(e1 + "/" + sub).ok()) {
      ASSERT_TRUE(s->RenameDir(e1 + "/" + sub, "volumes/v/" + std::string(sub)).ok());
    }
  }
  ASSERT_TRUE(s->DeleteDir(layout::EpochsDir("v")).ok());
  VolumeMeta m = ReadMeta(s, "v").value();
  m.version = 1;
  std::string text = EncodeMeta(m);
  ASSERT_TRUE(s->Put(layout::MetaName("v"), AsBytes(text)).ok());
}

// Writes blocks 0..63 (value 1) and 64..79 (value 2), flushed, in epoch 1.
void WriteBase(store::Store* s) {
  auto v = OpenRW(s);
  ASSERT_TRUE(v != nullptr);
  ASSERT_TRUE(v->Write(0, Block(1, 256 << 10)).ok());
  ASSERT_TRUE(v->Flush().ok());
  ASSERT_TRUE(v->Write(256 << 10, Block(2, 64 << 10)).ok());
  ASSERT_TRUE(v->Flush().ok());
  v.reset();  // no clean close: recovery replays the log
}

void ExpectBase(Volume* v) {
  for (uint64_t lba = 0; lba < 80; lba++) {
    ASSERT_EQ(ByteAt(v, lba), lba < 64 ? 1 : 2) << "block " << lba;
  }
}

TEST(VolumeEpochTest, AVersion1VolumeIsMovedIntoEpochsByItsFirstWritableOpen) {
  store::MemoryStore mem;
  Create(&mem);
  WriteBase(&mem);
  ASSERT_NO_FATAL_FAILURE(MakeVersion1(&mem));
  EXPECT_EQ(Volume::Owner(&mem, "v")->epoch, 0u);
  {
    auto r = OpenRO(&mem);  // readers read the version-1 layout
    ASSERT_TRUE(r != nullptr);
    EXPECT_EQ(r->epoch(), 0u);
    ExpectBase(r.get());
    EXPECT_EQ(Volume::Stat(&mem, "v")->mapped_bytes, 80 * kBlockSize);
  }
  auto v = OpenRW(&mem);
  ASSERT_TRUE(v != nullptr);
  EXPECT_EQ(v->epoch(), 1u);
  ExpectBase(v.get());
  EXPECT_EQ(ReadMeta(&mem, "v")->version, 2u);
  for (const char* sub : {"seg", "sum", "ckpt"}) {
    EXPECT_TRUE(mem.List("volumes/v/" + std::string(sub)).status().IsNotFound()) << sub;
  }
  EXPECT_EQ(ListEpochs(&mem, "v").value(), std::vector<uint64_t>{1});
}

// A crash at every step of a writable open (the move of a version-1 log,
// the fence's rename, the owner Put, the deletes of old epochs, recovery):
// the volume still opens with every flushed write, then and after more.
void CrashEveryStepOfOpen(bool version1) {
  for (uint64_t n = 0;; n++) {
    SCOPED_TRACE("crash after " + std::to_string(n) + " mutating operations");
    store::MemoryStore mem;
    Create(&mem);
    WriteBase(&mem);
    if (version1) {
      ASSERT_NO_FATAL_FAILURE(MakeVersion1(&mem));
    }
    store::FaultInjectionStore fs(&mem, n + 1);
    fs.CrashAfter(n);
    bool crashed;
    {
      OpenOptions o;
      o.clean_threshold = 0;
      auto v = Volume::Open(&fs, "v", o);
      crashed = fs.crashed();
      if (v.ok() && !crashed) {
        fs.Disarm();
        ExpectBase(v->get());
        ASSERT_TRUE((*v)->Close().ok());
      }
    }
    ASSERT_TRUE(fs.SimulateCrash().ok());
    // A move of a version-1 log that a crash interrupted leaves part of it in
    // epoch/0000000000000000, which readers ignore: they can read the
    // volume again once a writable open finished the move (epoch.h).
    const bool move_interrupted = ListEpochs(&fs, "v").value() == std::vector<uint64_t>{0};
    if (!move_interrupted) {
      auto r = OpenRO(&fs);
      ASSERT_TRUE(r != nullptr);
      ASSERT_NO_FATAL_FAILURE(ExpectBase(r.get()));
    }
    auto v = OpenRW(&fs);
    ASSERT_TRUE(v != nullptr);
    ASSERT_NO_FATAL_FAILURE(ExpectBase(v.get()));
    ASSERT_TRUE(v->Close().ok());
    v = OpenRW(&fs);
    ASSERT_TRUE(v != nullptr);
    ASSERT_NO_FATAL_FAILURE(ExpectBase(v.get()));
    EXPECT_EQ(ListEpochs(&fs, "v").value().size(), 1u);
    if (!crashed) break;
    ASSERT_LT(n, 200u);
  }
}

TEST(VolumeEpochCrashTest, ACrashDuringTheFenceLosesNothingFlushed) {
  CrashEveryStepOfOpen(false);
}

TEST(VolumeEpochCrashTest, ACrashDuringTheVersion1MoveLosesNothingFlushed) {
  CrashEveryStepOfOpen(true);
}

}  // namespace
}  // namespace hbiss::volume
