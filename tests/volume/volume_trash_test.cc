// The trash (volume/trash.h, doc/snapshots.md "Trash") on the memory and
// local stores: a trashed snapshot keeps its clones readable byte for byte
// through cleaning and goes, with its space, when the last clone is removed
// or flattened; `rm --trash` of a volume; restore; and a crash between the
// removal of the last clone and the purge, finished by the next opportunity.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "store/fault_injection_store.h"
#include "store/memory_store.h"
#include "tests/volume/store_param.h"
#include "tests/volume/tagged_blocks.h"
#include "volume/fsck.h"
#include "volume/layout.h"
#include "volume/snapshot_registry.h"
#include "volume/space.h"
#include "volume/trash.h"
#include "volume/volume.h"

namespace hbiss::volume {
namespace {

constexpr uint64_t kVolSize = 1 << 20;
constexpr uint64_t kBlocks = kVolSize / kBlockSize;
constexpr uint64_t kSegSize = 64 << 10;

using Model = std::vector<std::vector<uint8_t>>;

void Write(Volume* v, uint64_t first, uint64_t n, uint32_t who, uint32_t ver, Model* model) {
  for (uint64_t b = first; b < first + n; b++) {
    auto d = Block(b, who, ver);
    ASSERT_TRUE(v->Write(b * kBlockSize, d).ok());
    (*model)[b] = d;
  }
}

void Expect(Volume* v, const Model& model, const std::string& what) {
  std::vector<uint8_t> got(kBlockSize);
  for (uint64_t b = 0; b < kBlocks; b++) {
    Status s = v->Read(b * kBlockSize, got);
    ASSERT_TRUE(s.ok()) << what << " block " << b << ": " << s.ToString();
    ASSERT_TRUE(got == model[b]) << what << ": block " << b << " differs";
  }
}

void ExpectClean(store::Store* store, const std::string& vol) {
  auto r = CheckVolume(store, vol);
  ASSERT_TRUE(r.ok()) << vol << ": " << r.status().ToString();
  std::string all;
  for (const auto& p : r->problems) all += p.message + "\n";
  EXPECT_EQ(r->corruptions, 0u) << vol << ":\n" << all;
  EXPECT_EQ(r->leaks, 0u) << vol << ":\n" << all;
}

size_t Trashed(store::Store* store, const std::string& vol) {
  auto all = Volume::ListSnapshots(store, vol, /*include_trashed=*/true);
  EXPECT_TRUE(all.ok()) << all.status().ToString();
  size_t n = 0;
  for (const auto& s : all.ok() ? *all : std::vector<SnapshotInfo>{}) n += s.trashed ? 1 : 0;
  return n;
}

// The registry's "trashed" field: written only when true, and the version
// is 2 only while a snapshot is trashed (older builds refuse it then).
TEST(TrashRegistryTest, TheTrashedFieldRoundTripsAndKeepsVersionOneWithoutIt) {
  SnapRegistry r;
  r.next_id = 3;
  r.snaps.push_back({1, "base", 100, 7, 10, /*trashed=*/true});
  r.snaps.push_back({2, "base", 200, 9, 12, /*trashed=*/false});
  const std::string text = EncodeSnapRegistry(r);
  EXPECT_NE(text.find("\"version\":2"), std::string::npos) << text;
  EXPECT_NE(text.find("\"trashed\":true"), std::string::npos) << text;
  auto back = DecodeSnapRegistry(text, "t");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->snaps.size(), 2u);
  EXPECT_TRUE(back->snaps[0].trashed);
  EXPECT_FALSE(back->snaps[1].trashed);
  ASSERT_NE(back->Find("base"), nullptr);
  EXPECT_EQ(back->Find("base")->id, 2u) << "Find skips trashed snapshots";
  // Nothing trashed: exactly version 1 as before, no field.
  r.snaps.erase(r.snaps.begin());
  const std::string v1 = EncodeSnapRegistry(r);
  EXPECT_NE(v1.find("\"version\":1"), std::string::npos) << v1;
  EXPECT_EQ(v1.find("trashed"), std::string::npos) << v1;
  // Two live snapshots of one name, or a trashed that is not a boolean.
  const std::string dup =
      R"({"format":"hbiss-snapshots","version":2,"next_id":3,"snapshots":[)"
      R"({"id":1,"name":"a","stop_seq":1},{"id":2,"name":"a","stop_seq":2}]})";
  EXPECT_TRUE(DecodeSnapRegistry(dup, "t").status().IsCorruption());
  const std::string bad =
      R"({"format":"hbiss-snapshots","version":2,"next_id":2,"snapshots":[)"
      R"({"id":1,"name":"a","stop_seq":1,"trashed":"yes"}]})";
  EXPECT_TRUE(DecodeSnapRegistry(bad, "t").status().IsCorruption());
  const std::string newer =
      R"({"format":"hbiss-snapshots","version":3,"next_id":1,"snapshots":[]})";
  EXPECT_TRUE(DecodeSnapRegistry(newer, "t").status().IsNotSupported());
}

class TrashTest : public StoreParamTest {
 protected:
  void SetUp() override {
    StoreParamTest::SetUp();
    if (HasFatalFailure()) return;
    CreateVolume("gold", kVolSize, kSegSize);
    base_.assign(kBlocks, std::vector<uint8_t>(kBlockSize, 0));
    auto v = Open("gold");
    ASSERT_NE(v, nullptr);
    Write(v.get(), 0, kBlocks, 1, 1, &base_);
    ASSERT_TRUE(v->CreateSnapshot("base").ok());
    ASSERT_TRUE(v->Close().ok());
  }
  std::unique_ptr<Volume> Open(const std::string& spec, bool ro = false) {
    auto v = Volume::Open(store_, spec, ro ? ReadOnly() : OpenOptions{});
    EXPECT_TRUE(v.ok()) << spec << ": " << v.status().ToString();
    return v.ok() ? std::move(*v) : nullptr;
  }
  Model base_;
};

TEST_P(TrashTest, ATrashedSnapshotServesItsClonesAndGoesWithTheLastOne) {
  ASSERT_TRUE(Volume::Clone(store_, "gold@base", "c1").ok());
  ASSERT_TRUE(Volume::Clone(store_, "gold@base", "c2").ok());
  Model m1 = base_, m2 = base_, head = base_;
  {
    auto c1 = Open("c1");
    auto c2 = Open("c2");
    Write(c1.get(), 0, 16, 2, 1, &m1);
    Write(c2.get(), 100, 16, 3, 1, &m2);
  }
  auto g = Open("gold");
  ASSERT_NE(g, nullptr);
  // Without --trash the refusal says why and what to do.
  Status refused = g->RemoveSnapshot("base");
  EXPECT_TRUE(refused.IsBusy()) << refused.ToString();
  EXPECT_NE(refused.message().find("has 2 clones (c1, c2)"), std::string::npos) << refused.message();
  EXPECT_NE(refused.message().find("--trash"), std::string::npos) << refused.message();
  auto trashed = g->TrashSnapshot("base");
  ASSERT_TRUE(trashed.ok()) << trashed.status().ToString();
  EXPECT_TRUE(*trashed);
  // Gone for users: not listed, not openable, not clonable; its name is free.
  auto live = Volume::ListSnapshots(store_, "gold");
  ASSERT_TRUE(live.ok());
  EXPECT_TRUE(live->empty());
  EXPECT_EQ(Trashed(store_, "gold"), 1u);
  EXPECT_TRUE(Volume::Open(store_, "gold@base", ReadOnly()).status().IsNotFound());
  Status again = Volume::Clone(store_, "gold@base", "c3");
  EXPECT_TRUE(again.IsNotFound()) << again.ToString();
  EXPECT_NE(again.message().find("trash"), std::string::npos) << again.message();
  ASSERT_TRUE(g->CreateSnapshot("base").ok());
  // fsck checks both by id: the trashed one is a reference, not the live
  // one of the same name.
  ExpectClean(store_, "gold");
  ASSERT_TRUE(g->RemoveSnapshot("base").ok()) << "the new one has no clone";
  EXPECT_EQ(Trashed(store_, "gold"), 1u);
  // The parent overwrites everything and cleans: the trashed snapshot's
  // blocks live on only in its pinned segments.
  for (int round = 0; round < 3; round++) {
    Write(g.get(), 0, kBlocks, 1, uint32_t(round + 2), &head);
    ASSERT_TRUE(g->Clean(1.0).ok());
  }
  {
    auto c1 = Open("c1", true);
    auto c2 = Open("c2", true);
    Expect(c1.get(), m1, "c1");
    Expect(c2.get(), m2, "c2");
  }
  for (const char* v : {"gold", "c1", "c2"}) ExpectClean(store_, v);
  // du lists it: it still holds what it holds.
  auto du = GetDiskUsage(store_, "gold");
  ASSERT_TRUE(du.ok()) << du.status().ToString();
  ASSERT_EQ(du->rows.size(), 2u);
  EXPECT_EQ(du->rows[0].snapshot, "base");
  EXPECT_TRUE(du->rows[0].trashed);
  EXPECT_EQ(du->rows[0].used, kVolSize);
  const uint64_t with_trash = g->Info().log_bytes;
  // The route to the owner: here, the open parent itself.
  SnapTrashPurger purger = [&](const std::string& vol) -> Status {
    EXPECT_EQ(vol, "gold");
    return g->PurgeTrash().status();
  };
  // One clone removed: the other still needs it.
  ASSERT_TRUE(Volume::Remove(store_, "c1").ok());
  ASSERT_TRUE(PurgeTrash(store_, "gold", purger).ok());
  EXPECT_EQ(Trashed(store_, "gold"), 1u);
  // The last one flattened: the snapshot goes, and the cleaner gives its
  // space back.
  {
    auto c2 = Open("c2");
    ASSERT_TRUE(c2->Flatten(nullptr).ok());
    Expect(c2.get(), m2, "c2 flattened");
    ASSERT_TRUE(c2->Close().ok());
  }
  ASSERT_TRUE(PurgeTrash(store_, "gold", purger).ok());
  EXPECT_EQ(Trashed(store_, "gold"), 0u);
  ASSERT_TRUE(g->Clean(1.0).ok());
  ASSERT_TRUE(g->Clean(1.0).ok());
  EXPECT_LT(g->Info().log_bytes, with_trash) << "the trashed snapshot's segments stayed";
  Expect(g.get(), head, "gold");
  ASSERT_TRUE(g->Close().ok());
  auto c2 = Open("c2", true);
  Expect(c2.get(), m2, "c2 after the parent let go");
  for (const char* v : {"gold", "c2"}) ExpectClean(store_, v);
}

TEST_P(TrashTest, RemovingAVolumeWithTrashKeepsItForItsClonesOnly) {
  {
    auto g = Open("gold");
    ASSERT_TRUE(g->CreateSnapshot("other").ok());
  }
  ASSERT_TRUE(Volume::Clone(store_, "gold@base", "c").ok());
  Status refused = Volume::Remove(store_, "gold");
  EXPECT_TRUE(refused.IsBusy());
  EXPECT_NE(refused.message().find("base, other"), std::string::npos) << refused.message();
  EXPECT_NE(refused.message().find("--trash"), std::string::npos) << refused.message();
  auto r = TrashVolume(store_, "gold");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->trashed);
  EXPECT_EQ(r->removed_snaps, std::vector<std::string>{"other"});
  EXPECT_EQ(r->trashed_snaps, std::vector<std::string>{"base"});
  EXPECT_EQ(r->children, std::vector<std::string>{"c"});
  // Gone from the list and from every open; its name is taken.
  auto names = Volume::List(store_);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, std::vector<std::string>{"c"});
  EXPECT_TRUE(Volume::Open(store_, "gold").status().IsNotFound());
  EXPECT_TRUE(Volume::Open(store_, "gold", ReadOnly()).status().IsNotFound());
  EXPECT_TRUE(Volume::Open(store_, "gold@base", ReadOnly()).status().IsNotFound());
  CreateOptions co;
  co.size = kVolSize;
  co.segment_size = kSegSize;
  Status taken = Volume::Create(store_, "gold", co);
  EXPECT_TRUE(taken.IsAlreadyExists()) << taken.ToString();
  EXPECT_NE(taken.message().find("in the trash until its clones (c)"), std::string::npos)
      << taken.message();
  EXPECT_NE(taken.message().find("cannot be reused"), std::string::npos) << taken.message();
  Status busy = Volume::Remove(store_, "gold");
  EXPECT_TRUE(busy.IsBusy()) << busy.ToString();
  EXPECT_NE(busy.message().find("(c)"), std::string::npos) << busy.message();
  auto trash = ListTrash(store_);
  ASSERT_TRUE(trash.ok()) << trash.status().ToString();
  ASSERT_EQ(trash->size(), 2u);
  EXPECT_EQ((*trash)[0].volume, "gold");
  EXPECT_EQ((*trash)[0].snap, "");
  EXPECT_EQ((*trash)[0].children, std::vector<std::string>{"c"});
  EXPECT_EQ((*trash)[1].snap, "base");
  EXPECT_EQ((*trash)[1].children, std::vector<std::string>{"c"});
  // The clone reads on, byte for byte, and fsck counts what it needs.
  auto c = Open("c", true);
  Expect(c.get(), base_, "c");
  c.reset();
  ExpectClean(store_, "c");
  ExpectClean(store_, "gold");
  // The last clone goes: so does the volume.
  ASSERT_TRUE(Volume::Remove(store_, "c").ok());
  ASSERT_TRUE(PurgeTrash(store_, "gold", [&](const std::string& v) {
                return PurgeSnapshotTrashHere(store_, v);
              }).ok());
  EXPECT_TRUE(ReadMeta(store_, "gold").status().IsNotFound());
  trash = ListTrash(store_);
  ASSERT_TRUE(trash.ok());
  EXPECT_TRUE(trash->empty());
  EXPECT_TRUE(Volume::Create(store_, "gold", co).ok());
}

TEST_P(TrashTest, ATrashedVolumeCanBeRestoredAndOneWithoutClonesIsJustRemoved) {
  ASSERT_TRUE(Volume::Clone(store_, "gold@base", "c").ok());
  auto r = TrashVolume(store_, "gold");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(r->trashed);
  ASSERT_TRUE(RestoreVolume(store_, "gold").ok());
  EXPECT_TRUE(RestoreVolume(store_, "gold").IsNotFound());
  auto g = Open("gold");
  ASSERT_NE(g, nullptr);
  Expect(g.get(), base_, "restored gold");
  // Its snapshot stays trashed, and goes with its clone through the owner.
  EXPECT_EQ(Trashed(store_, "gold"), 1u);
  ASSERT_TRUE(Volume::Remove(store_, "c").ok());
  ASSERT_TRUE(PurgeTrash(store_, "gold", [&](const std::string&) {
                return g->PurgeTrash().status();
              }).ok());
  EXPECT_EQ(Trashed(store_, "gold"), 0u);
  ASSERT_TRUE(g->Close().ok());
  // Nothing uses it: rm --trash is a plain removal.
  auto plain = TrashVolume(store_, "gold");
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_FALSE(plain->trashed);
  EXPECT_TRUE(ReadMeta(store_, "gold").status().IsNotFound());
}

INSTANTIATE_TEST_SUITE_P(Stores, TrashTest, ::testing::Bool(), StoreParamName);

// A crash at every point of "remove the last clone, then purge its trashed
// parent snapshot": after the restart the clone is either there (and reads
// the snapshot) or gone, and then the parent's next writable open deletes
// the snapshot and its space goes back through the cleaner.
TEST(TrashCrashTest, ACrashBetweenTheLastCloneAndThePurgeIsFinishedByTheNextOpen) {
  int finished_by_open = 0;
  for (uint64_t n = 0; n < 40; n++) {
    store::MemoryStore mem;
    store::FaultInjectionStore fs(&mem, n + 1);
    CreateOptions co;
    co.size = kVolSize;
    co.segment_size = kSegSize;
    ASSERT_TRUE(Volume::Create(&fs, "gold", co).ok());
    Model base(kBlocks, std::vector<uint8_t>(kBlockSize, 0)), head;
    {
      auto v = Volume::Open(&fs, "gold");
      ASSERT_TRUE(v.ok());
      Write(v->get(), 0, kBlocks, 1, 1, &base);
      ASSERT_TRUE((*v)->CreateSnapshot("base").ok());
      head = base;
      Write(v->get(), 0, kBlocks, 1, 2, &head);
      ASSERT_TRUE((*v)->Close().ok());
    }
    ASSERT_TRUE(Volume::Clone(&fs, "gold@base", "c").ok());
    {
      auto v = Volume::Open(&fs, "gold");
      ASSERT_TRUE(v.ok());
      auto t = (*v)->TrashSnapshot("base");
      ASSERT_TRUE(t.ok() && *t);
      ASSERT_TRUE((*v)->Clean(1.0).ok());
      ASSERT_TRUE((*v)->Close().ok());
    }
    fs.CrashAfter(n);
    Status rm = Volume::Remove(&fs, "c");
    Status purge = rm.ok() ? PurgeTrash(&fs, "gold", [&](const std::string& v) {
      return PurgeSnapshotTrashHere(&fs, v);
    })
                           : rm;
    const bool crashed = fs.crashed();
    fs.Disarm();
    ASSERT_TRUE(fs.SimulateCrash().ok());
    fs.ClearFailures();
    if (!crashed) {
      ASSERT_TRUE(purge.ok()) << purge.ToString();
      EXPECT_EQ(Trashed(&fs, "gold"), 0u) << "n=" << n;
      continue;
    }
    const bool clone_left = ReadMeta(&fs, "c").ok();
    if (clone_left) {
      EXPECT_EQ(Trashed(&fs, "gold"), 1u) << "n=" << n;
      auto c = Volume::Open(&fs, "c", ReadOnly());
      ASSERT_TRUE(c.ok()) << c.status().ToString();
      Expect(c->get(), base, "c after a crash");
      continue;
    }
    // The clone is gone: the parent's next writable open finishes the purge.
    const size_t before = Trashed(&fs, "gold");
    auto g = Volume::Open(&fs, "gold");
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    EXPECT_EQ(Trashed(&fs, "gold"), 0u) << "n=" << n;
    finished_by_open += before > 0 ? 1 : 0;
    const uint64_t pinned = (*g)->Info().log_bytes;
    ASSERT_TRUE((*g)->Clean(1.0).ok());
    ASSERT_TRUE((*g)->Clean(1.0).ok());
    EXPECT_LT((*g)->Info().log_bytes, pinned) << "n=" << n << ": nothing given back";
    Expect(g->get(), head, "gold");
    ASSERT_TRUE((*g)->Close().ok());
    ExpectClean(&fs, "gold");
  }
  EXPECT_GT(finished_by_open, 0) << "no crash fell between the removal and the purge";
}

}  // namespace
}  // namespace hbiss::volume
