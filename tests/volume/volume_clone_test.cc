// Clones on the memory and local stores: isolation between a clone, its
// parent, its parent's snapshot and its siblings; chains to the documented
// depth; what refuses to be removed; flatten under writes; a parent whose log
// moves to a new epoch; a crash of a clone before its first checkpoint.
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "store/fault_injection_store.h"
#include "store/local_store.h"
#include "store/memory_store.h"
#include "store/store_wrapper.h"
#include "volume/clone.h"
#include "volume/fsck.h"
#include "volume/layout.h"
#include "tests/volume/store_param.h"
#include "tests/volume/tagged_blocks.h"
#include "volume/volume.h"

namespace hbiss::volume {
namespace {

constexpr uint64_t kVolSize = 2 << 20;
constexpr uint64_t kBlocks = kVolSize / kBlockSize;
constexpr uint64_t kSegSize = 128 << 10;

class CloneTest : public StoreParamTest {
 protected:
  void SetUp() override {
    StoreParamTest::SetUp();
    if (HasFatalFailure()) return;
    CreateVolume("gold", kVolSize, kSegSize);
  }

  std::unique_ptr<Volume> Open(const std::string& spec, bool ro = false) {
    auto v = Volume::Open(store_, spec, ro ? ReadOnly() : OpenOptions{});
    EXPECT_TRUE(v.ok()) << spec << ": " << v.status().ToString();
    return v.ok() ? std::move(*v) : nullptr;
  }
  // Writes every block of gold (as `who` 1, version 1) and takes snapshot
  // gold@base of it; returns that content.
  std::vector<std::vector<uint8_t>> GoldWithBase() {
    auto gold = Zeros();
    auto v = Open("gold");
    Write(v.get(), 0, kBlocks, 1, 1, &gold);
    EXPECT_TRUE(v->CreateSnapshot("base").ok());
    return gold;
  }
  // Writes blocks [first, first+n) of v as `who` version `ver`, into model.
  void Write(Volume* v, uint64_t first, uint64_t n, uint32_t who, uint32_t ver,
             std::vector<std::vector<uint8_t>>* model) {
    for (uint64_t b = first; b < first + n; b++) {
      auto d = Block(b, who, ver);
      ASSERT_TRUE(v->Write(b * kBlockSize, d).ok());
      (*model)[b] = d;
    }
  }
  void Expect(const std::string& spec, const std::vector<std::vector<uint8_t>>& model) {
    auto v = Open(spec, true);
    ASSERT_NE(v, nullptr);
    Expect(v.get(), model, spec);
  }
  void Expect(Volume* v, const std::vector<std::vector<uint8_t>>& model, const std::string& what) {
    std::vector<uint8_t> got(kBlockSize);
    for (uint64_t b = 0; b < kBlocks; b++) {
      ASSERT_TRUE(v->Read(b * kBlockSize, got).ok()) << what << " block " << b;
      ASSERT_TRUE(got == model[b]) << what << ": block " << b << " differs";
    }
  }
  static std::vector<std::vector<uint8_t>> Zeros() {
    return std::vector<std::vector<uint8_t>>(kBlocks, std::vector<uint8_t>(kBlockSize, 0));
  }

};

TEST_P(CloneTest, ClonesShareTheSnapshotAndWritesStayIsolated) {
  auto gold = GoldWithBase();
  ASSERT_TRUE(Volume::Clone(store_, "gold@base", "c1").ok());
  ASSERT_TRUE(Volume::Clone(store_, "gold@base", "c2").ok());
  auto m1 = gold, m2 = gold, head = gold;
  const auto base = gold;
  {
    auto c1 = Open("c1");
    auto c2 = Open("c2");
    auto g = Open("gold");
    Expect(c1.get(), base, "fresh c1");
    Write(c1.get(), 10, 40, 2, 1, &m1);
    Write(c2.get(), 30, 40, 3, 1, &m2);
    Write(g.get(), 0, 20, 1, 2, &head);
    ASSERT_TRUE(c1->Trim(100 * kBlockSize, 8 * kBlockSize).ok());
    for (uint64_t b = 100; b < 108; b++) m1[b].assign(kBlockSize, 0);
    Expect(c1.get(), m1, "c1");
    Expect(c2.get(), m2, "c2");
    Expect(g.get(), head, "gold");
    // A clone's own cleaner and a clone's snapshot.
    ASSERT_TRUE(c1->Clean(1.0).ok());
    ASSERT_TRUE(c1->CreateSnapshot("mine").ok());
    Write(c1.get(), 0, 5, 2, 2, &m1);
  }
  Expect("gold@base", base);
  Expect("gold", head);
  Expect("c1", m1);
  Expect("c2", m2);
  auto mine = m1;
  for (uint64_t b = 0; b < 5; b++) mine[b] = Block(b, 1, 1);
  Expect("c1@mine", mine);
  auto info = Volume::Stat(store_, "c1");
  ASSERT_TRUE(info.ok());
  // fsck: a clone's blocks in its parent are references, not missing
  // segments; the parent's snapshot holds what the clones need.
  for (const char* v : {"c1", "c2", "gold"}) {
    auto r = CheckVolume(store_, v);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    std::string all;
    for (const auto& p : r->problems) all += p.message + "\n";
    EXPECT_EQ(r->corruptions, 0u) << v << ":\n" << all;
  }
}

TEST_P(CloneTest, ChainsWorkToTheDocumentedDepthAndNoFurther) {
  auto model = Zeros();
  std::string parent = "gold";
  {
    auto v = Open(parent);
    Write(v.get(), 0, kBlocks, 1, 1, &model);
    ASSERT_TRUE(v->CreateSnapshot("s").ok());
  }
  for (int depth = 1; depth <= 15; depth++) {
    const std::string name = "c" + std::to_string(depth);
    Status s = Volume::Clone(store_, parent + "@s", name);
    ASSERT_TRUE(s.ok()) << name << ": " << s.ToString();
    auto v = Open(name);
    ASSERT_NE(v, nullptr);
    Write(v.get(), uint64_t(depth) * 3, 3, uint32_t(depth) + 1, 1, &model);
    ASSERT_TRUE(v->CreateSnapshot("s").ok());
    if (depth % 5 == 0) {
      ASSERT_TRUE(v->Close().ok());  // a checkpoint with layers in it
    }
    parent = name;
  }
  Expect("c15", model);
  Expect("c15@s", model);
  Status deep = Volume::Clone(store_, "c15@s", "c16");
  EXPECT_TRUE(deep.IsInvalidArgument()) << deep.ToString();
  EXPECT_NE(deep.message().find("flatten"), std::string::npos) << deep.message();
}

TEST_P(CloneTest, WhatClonesNeedIsNotRemovedAndRefusalsSayWhy) {
  {
    auto v = Open("gold");
    auto m = Zeros();
    Write(v.get(), 0, 64, 1, 1, &m);
    ASSERT_TRUE(v->CreateSnapshot("base").ok());
    ASSERT_TRUE(v->CreateSnapshot("other").ok());
  }
  EXPECT_TRUE(Volume::Clone(store_, "gold@nope", "c").IsNotFound());
  EXPECT_TRUE(Volume::Clone(store_, "gold", "c").IsInvalidArgument());
  EXPECT_TRUE(Volume::Clone(store_, "gold@base", "bad/name").IsInvalidArgument());
  EXPECT_TRUE(Volume::Clone(store_, "none@base", "c").IsNotFound());
  ASSERT_TRUE(Volume::Clone(store_, "gold@base", "c").ok());
  EXPECT_TRUE(Volume::Clone(store_, "gold@base", "c").IsAlreadyExists());
  EXPECT_TRUE(Volume::Clone(store_, "gold@base", "gold").IsAlreadyExists());
  {
    auto v = Open("gold");
    Status rm = v->RemoveSnapshot("base");
    EXPECT_TRUE(rm.IsBusy()) << rm.ToString();
    EXPECT_NE(rm.message().find("(c)"), std::string::npos) << rm.message();
    EXPECT_NE(rm.message().find("hbiss flatten"), std::string::npos) << rm.message();
    EXPECT_TRUE(v->RemoveSnapshot("other").ok());  // no clone of that one
  }
  EXPECT_TRUE(Volume::Remove(store_, "gold").IsBusy());
  ASSERT_TRUE(Volume::Remove(store_, "c").ok());
  {
    auto v = Open("gold");
    EXPECT_TRUE(v->RemoveSnapshot("base").ok()) << "the clone is gone";
  }
  EXPECT_TRUE(Volume::Remove(store_, "gold").ok());
}

// A clone whose meta or child record reads as corrupt was taken for a stale
// record: its parent snapshot was removed and unpinned, and the cleaner
// deleted what the clone still read. Now the removal refuses, naming the
// clone and fsck, and the clone (once its meta is repaired) is intact.
TEST_P(CloneTest, ACloneWithACorruptMetaOrRecordKeepsItsParentSnapshot) {
  const auto base = GoldWithBase();
  ASSERT_TRUE(Volume::Clone(store_, "gold@base", "c").ok());
  auto head = base;
  {
    // gold moves on, so that only the snapshot holds base's blocks.
    auto g = Open("gold");
    Write(g.get(), 0, kBlocks, 1, 2, &head);
  }
  for (const std::string& obj : {layout::MetaName("c"), layout::ChildName("gold", "c")}) {
    auto good = store_->Get(obj, layout::kMaxMetaBytes);
    ASSERT_TRUE(good.ok()) << obj << ": " << good.status().ToString();
    std::string bad = *good;
    bad[0] = '#';  // no longer JSON
    bad[bad.size() / 2] ^= 0x55;
    ASSERT_TRUE(store_->Put(obj, std::span<const uint8_t>(
                                     reinterpret_cast<const uint8_t*>(bad.data()), bad.size()))
                    .ok());
    {
      auto g = Open("gold");
      ASSERT_NE(g, nullptr);
      Status rm = g->RemoveSnapshot("base");
      EXPECT_TRUE(rm.IsCorruption()) << obj << ": " << rm.ToString();
      EXPECT_NE(rm.message().find("clone c"), std::string::npos) << rm.message();
      EXPECT_NE(rm.message().find("hbiss fsck c"), std::string::npos) << rm.message();
      auto cleaned = g->Clean(1.0);
      ASSERT_TRUE(cleaned.ok()) << cleaned.status().ToString();
    }
    auto list = Volume::ListSnapshots(store_, "gold");
    ASSERT_TRUE(list.ok());
    ASSERT_EQ(list->size(), 1u) << obj << ": the snapshot stays";
    ASSERT_TRUE(store_->Put(obj, std::span<const uint8_t>(
                                     reinterpret_cast<const uint8_t*>(good->data()), good->size()))
                    .ok());
    Expect("c", base);
    Expect("gold@base", base);
  }
  Expect("gold", head);
}

TEST_P(CloneTest, FlattenUnderWritesDetachesTheClone) {
  auto gold = GoldWithBase();
  ASSERT_TRUE(Volume::Clone(store_, "gold@base", "c").ok());
  auto model = gold;
  {
    auto c = Open("c");
    Write(c.get(), 0, 50, 2, 1, &model);
    // A writer runs while flatten copies.
    std::atomic<bool> stop{false};
    std::vector<std::vector<uint8_t>> late = model;
    std::thread writer([&] {
      uint32_t ver = 2;
      while (!stop.load()) {
        for (uint64_t b = 200; b < 260 && !stop.load(); b++) {
          auto d = Block(b, 2, ver);
          ASSERT_TRUE(c->Write(b * kBlockSize, d).ok());
          late[b] = d;
        }
        ver++;
      }
    });
    uint64_t last_done = 0, last_total = 0;
    bool monotonic = true;
    auto copied = c->Flatten([&](uint64_t done, uint64_t total) {
      monotonic &= done >= last_done && done <= total;
      last_done = done;
      last_total = total;
      return true;
    });
    stop.store(true);
    writer.join();
    ASSERT_TRUE(copied.ok()) << copied.status().ToString();
    EXPECT_TRUE(monotonic);
    EXPECT_EQ(last_done, last_total);
    EXPECT_GT(*copied, 0u);
    EXPECT_LE(*copied, kBlocks - 50);
    model = late;
    Expect(c.get(), model, "c after flatten");
  }
  // Detached: the parent's snapshot and the parent itself can go.
  {
    auto g = Open("gold");
    ASSERT_TRUE(g->RemoveSnapshot("base").ok());
  }
  ASSERT_TRUE(Volume::Remove(store_, "gold").ok());
  Expect("c", model);
  auto c = Open("c");
  ASSERT_TRUE(c->Clean(1.0).ok());
  Expect(c.get(), model, "c cleaned");
  auto again = c->Flatten(nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 0u);
}

// A flatten whose progress callback says stop (a served clone's server
// giving the volume up) ends with Aborted, leaves the clone whole and still a
// clone, and the next flatten copies only what is still shared.
TEST_P(CloneTest, AStoppedFlattenKeepsWhatItCopiedAndARunAgainFinishes) {
  auto gold = GoldWithBase();
  ASSERT_TRUE(Volume::Clone(store_, "gold@base", "c").ok());
  uint64_t first_total = 0, first_done = 0;
  {
    auto c = Open("c");
    int calls = 0;
    auto r = c->Flatten([&](uint64_t done, uint64_t total) {
      first_total = total;
      first_done = done;
      return ++calls < 2;  // stop after the first piece
    });
    EXPECT_EQ(r.status().code(), Status::Code::kAborted) << r.status().ToString();
    EXPECT_GT(first_done, 0u);
    EXPECT_LT(first_done, first_total);
    Expect(c.get(), gold, "c after a stopped flatten");
  }
  {
    auto g = Open("gold");
    EXPECT_TRUE(g->RemoveSnapshot("base").IsBusy()) << "c still needs it";
  }
  {
    auto c = Open("c");
    uint64_t total = 0;
    auto r = c->Flatten([&](uint64_t, uint64_t t) {
      total = t;
      return true;
    });
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(total, first_total - first_done);
    EXPECT_EQ(*r, total);
  }
  {
    auto g = Open("gold");
    EXPECT_TRUE(g->RemoveSnapshot("base").ok());
  }
  Expect("c", gold);
}

TEST_P(CloneTest, AParentThatMovesToANewEpochKeepsItsClonesReadable) {
  auto gold = GoldWithBase();
  ASSERT_TRUE(Volume::Clone(store_, "gold@base", "c").ok());
  auto c = Open("c");
  Expect(c.get(), gold, "c");
  for (int i = 0; i < 3; i++) {
    auto g = Open("gold");  // a new epoch: the parent's log is renamed
    auto head = gold;
    Write(g.get(), 0, 10, 1, uint32_t(i + 2), &head);
    ASSERT_TRUE(g->Clean(1.0).ok());
    Expect(c.get(), gold, "c after the parent moved");
  }
}

// Volume::Clone re-checks, after writing the clone, that the parent snapshot
// is still there (a removal may have raced it); when that check failed the
// clone was kept silently. Now the clone is removed and the error returned.
TEST_P(CloneTest, ACloneWhoseRecheckFailsIsRemoved) {
  // Fails the reads of gold's snapshot registry once the clone's meta exists.
  class FailRecheckStore : public store::StoreWrapper {
   public:
    using StoreWrapper::StoreWrapper;
    Status Put(const std::string& name, std::span<const uint8_t> data) override {
      Status s = StoreWrapper::Put(name, data);
      if (name == layout::MetaName("c")) failing_ = true;
      return s;
    }
    Result<std::string> Get(const std::string& name, uint64_t max_bytes) override {
      if (failing_ && name.rfind(layout::VolDir("gold") + "/", 0) == 0 &&
          name.size() > 6 && name.compare(name.size() - 6, 6, "/snaps") == 0) {
        return Status::IOError("injected: reading " + name);
      }
      return StoreWrapper::Get(name, max_bytes);
    }
    bool failing_ = false;
  };
  GoldWithBase();
  FailRecheckStore fs(store_);
  Status c = Volume::Clone(&fs, "gold@base", "c");
  ASSERT_TRUE(fs.failing_) << "the clone's meta was never written";
  EXPECT_FALSE(c.ok()) << "a clone whose re-check failed was kept";
  EXPECT_NE(c.ToString().find("injected"), std::string::npos) << c.ToString();
  auto list = Volume::List(store_);
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(*list, std::vector<std::string>{"gold"});
  auto kids = ListChildren(store_, "gold", 0);
  ASSERT_TRUE(kids.ok()) << kids.status().ToString();
  EXPECT_TRUE(kids->empty());
}

INSTANTIATE_TEST_SUITE_P(Stores, CloneTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Local" : "Memory"; });

// A clone crashes before its first checkpoint, and again after one: what it
// flushed survives and the rest of it still reads from the parent.
TEST(CloneCrashTest, FlushedClonesWritesSurviveACrashOnItsBase) {
  for (uint64_t seed = 1; seed <= 8; seed++) {
    store::MemoryStore mem;
    store::FaultInjectionStore fs(&mem, seed);
    CreateOptions co;
    co.size = kVolSize;
    co.segment_size = kSegSize;
    ASSERT_TRUE(Volume::Create(&fs, "gold", co).ok());
    std::vector<std::vector<uint8_t>> model(kBlocks, std::vector<uint8_t>(kBlockSize, 0));
    {
      auto v = Volume::Open(&fs, "gold");
      ASSERT_TRUE(v.ok());
      for (uint64_t b = 0; b < kBlocks; b++) {
        model[b] = Block(b, 1, 1);
        ASSERT_TRUE((*v)->Write(b * kBlockSize, model[b]).ok());
      }
      ASSERT_TRUE((*v)->CreateSnapshot("base").ok());
    }
    ASSERT_TRUE(Volume::Clone(&fs, "gold@base", "c").ok());
    std::mt19937_64 rng(seed);
    for (int round = 0; round < 2; round++) {
      {
        OpenOptions oo;
        oo.checkpoint_interval = round == 0 ? (1ull << 40) : (32 << 10);
        auto v = Volume::Open(&fs, "c", oo);
        ASSERT_TRUE(v.ok()) << v.status().ToString();
        for (int i = 0; i < 100; i++) {
          const uint64_t b = rng() % kBlocks;
          model[b] = Block(b, 2, uint32_t(round * 1000 + i));
          ASSERT_TRUE((*v)->Write(b * kBlockSize, model[b]).ok());
        }
        ASSERT_TRUE((*v)->Flush().ok());
        ASSERT_TRUE(fs.SimulateCrash().ok());
        (void)(*v)->Close();
      }
      fs.ClearFailures();
      auto v = Volume::Open(&fs, "c", ReadOnly());
      ASSERT_TRUE(v.ok()) << v.status().ToString();
      std::vector<uint8_t> got(kBlockSize);
      for (uint64_t b = 0; b < kBlocks; b++) {
        ASSERT_TRUE((*v)->Read(b * kBlockSize, got).ok());
        ASSERT_TRUE(got == model[b]) << "seed " << seed << " round " << round << " block " << b;
      }
    }
  }
}

}  // namespace
}  // namespace hbiss::volume
