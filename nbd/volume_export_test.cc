// VolumeProvider / VolumeExport over an in-memory store: naming, sharing one
// open volume between connections, closing with the last one, and the
// translation of the engine's extents into NBD block status.
#include "nbd/volume_export.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "nbd/connection.h"
#include "nbd/test_util.h"
#include "store/store.h"
#include "store/store_wrapper.h"
#include "util/mutex.h"
#include "volume/space.h"
#include "volume/trash.h"
#include "volume/volume.h"

namespace hbiss::nbd {
namespace {

class VolumeProviderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = store::OpenStore("mem://nbd-volume-export-test-" +
                              std::string(::testing::UnitTest::GetInstance()
                                              ->current_test_info()
                                              ->name()),
                              true);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    ASSERT_TRUE(volume::Volume::Create(store_.get(), "a", {.size = 8 << 20}).ok());
  }
  // Opens volume `name` writable, lets `fn` change it, and closes it.
  void Edit(const std::string& name, const std::function<void(volume::Volume*)>& fn) {
    auto v = volume::Volume::Open(store_.get(), name);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    fn(v->get());
    ASSERT_TRUE((*v)->Close().ok());
  }
  std::unique_ptr<store::Store> store_;
};

// Counts the reads of a store, and can hold every read (or write) of the
// objects under a prefix until Release().
class GatedStore : public store::StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  // Holds reads (writes too when `writes`) of names starting with `prefix`,
  // except `except`.
  void Block(std::string prefix, std::string except, bool writes) {
    MutexLock l(&mu_);
    prefix_ = std::move(prefix);
    except_ = std::move(except);
    writes_ = writes;
  }
  void Release() {
    {
      MutexLock l(&mu_);
      prefix_.clear();
    }
    cv_.SignalAll();
  }
  int held() {
    MutexLock l(&mu_);
    return held_;
  }
  uint64_t reads() const { return reads_.load(); }

  Result<std::unique_ptr<store::SegmentReader>> Open(const std::string& name) override {
    Gate(name, false);
    return StoreWrapper::Open(name);
  }
  Result<std::string> Get(const std::string& name, uint64_t max_size) override {
    Gate(name, false);
    return StoreWrapper::Get(name, max_size);
  }
  Result<std::vector<store::ObjectInfo>> List(const std::string& dir) override {
    Gate(dir, false);
    return StoreWrapper::List(dir);
  }
  Result<uint64_t> Stat(const std::string& name) override {
    Gate(name, false);
    return StoreWrapper::Stat(name);
  }
  Result<std::unique_ptr<store::SegmentWriter>> Create(const std::string& name) override {
    Gate(name, true);
    return StoreWrapper::Create(name);
  }
  Status Put(const std::string& name, std::span<const uint8_t> data) override {
    Gate(name, true);
    return StoreWrapper::Put(name, data);
  }

 private:
  void Gate(const std::string& name, bool write) {
    if (!write) reads_++;
    MutexLock l(&mu_);
    bool counted = false;
    while (!prefix_.empty() && name.starts_with(prefix_) && name != except_ &&
           (!write || writes_)) {
      if (!counted) held_++;
      counted = true;
      cv_.Wait(&mu_);
    }
    if (counted) held_--;
  }

  Mutex mu_;
  CondVar cv_;
  std::string prefix_ GUARDED_BY(mu_);
  std::string except_ GUARDED_BY(mu_);
  bool writes_ GUARDED_BY(mu_) = false;
  int held_ GUARDED_BY(mu_) = 0;
  std::atomic<uint64_t> reads_{0};
};

bool WaitUntil(const std::function<bool()>& pred) {
  for (int i = 0; i < 1000; i++) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

// Runs one connection over a fixed client stream; returns what it sent.
std::string Replay(ExportProvider* p, const std::string& in, uint32_t max_options = 256) {
  auto t = std::make_unique<BufferTransport>(in);
  BufferTransport* bt = t.get();
  ConnectionOptions o;
  o.workers = 1;
  o.max_options = max_options;
  Connection c(std::move(t), p, o);
  (void)c.Run();
  return bt->output();
}

std::string OptionBytes(uint32_t opt, const std::string& data) {
  using namespace ::hbiss::nbd::testing;  // NOLINT: test helpers
  return Be64(kIHaveOpt) + Be32(opt) + Be32(uint32_t(data.size())) + data;
}

std::string InfoBytes(const std::string& name) {
  using namespace ::hbiss::nbd::testing;  // NOLINT: test helpers
  return Be32(uint32_t(name.size())) + name + Be16(0);
}

TEST_F(VolumeProviderTest, NamesAndDefaultExport) {
  VolumeProvider p(store_.get(), false);
  auto info = p.Describe("");
  ASSERT_TRUE(info.ok()) << info.status().ToString();  // the only volume
  EXPECT_EQ(info->name, "a");
  EXPECT_EQ(info->size, 8u << 20);
  EXPECT_FALSE(info->read_only);
  ASSERT_TRUE(volume::Volume::Create(store_.get(), "b", {.size = 1 << 20}).ok());
  EXPECT_TRUE(p.Describe("").status().IsNotFound());  // now ambiguous
  EXPECT_TRUE(p.Describe("nosuch").status().IsNotFound());
  EXPECT_TRUE(p.Describe("../etc").status().IsNotFound());
  EXPECT_TRUE(p.Open("nosuch").status().IsNotFound());
  auto names = p.List();
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, (std::vector<std::string>{"a", "b"}));
}

TEST_F(VolumeProviderTest, ConnectionsShareOneVolumeClosedWithTheLast) {
  VolumeProvider p(store_.get(), false);
  auto e1 = p.Open("a");
  ASSERT_TRUE(e1.ok()) << e1.status().ToString();
  auto e2 = p.Open("a");
  ASSERT_TRUE(e2.ok());
  EXPECT_EQ(p.open_volumes(), 1u);
  std::vector<uint8_t> data(4096, 0x5a), back(4096);
  ASSERT_TRUE((*e1)->Write(4096, data).ok());
  ASSERT_TRUE((*e2)->Flush().ok());  // a flush on one connection covers the other
  ASSERT_TRUE((*e2)->Read(4096, back).ok());
  EXPECT_EQ(back, data);
  e1->reset();
  EXPECT_EQ(p.open_volumes(), 1u);
  e2->reset();
  EXPECT_EQ(p.open_volumes(), 0u);  // closed with the last connection
  auto e3 = p.Open("a");  // and can be opened again (its lock was released)
  ASSERT_TRUE(e3.ok()) << e3.status().ToString();
  ASSERT_TRUE((*e3)->Read(4096, back).ok());
  EXPECT_EQ(back, data);
}

TEST_F(VolumeProviderTest, BlockStatusReportsHolesAsZero) {
  VolumeProvider p(store_.get(), false);
  auto e = p.Open("a");
  ASSERT_TRUE(e.ok());
  std::vector<uint8_t> data(65536, 1);
  ASSERT_TRUE((*e)->Write(0, data).ok());
  ASSERT_TRUE((*e)->Trim(16384, 16384).ok());
  ASSERT_TRUE((*e)->WriteZeroes(49152, 8192, /*may_trim=*/false).ok());
  auto ext = (*e)->BlockStatus(0, 1 << 20);
  ASSERT_TRUE(ext.ok());
  uint64_t pos = 0, data_bytes = 0;
  for (const Extent& x : *ext) {
    EXPECT_EQ(x.offset, pos);
    EXPECT_EQ(x.hole, x.zero);
    if (!x.hole) data_bytes += x.length;
    pos += x.length;
  }
  EXPECT_EQ(pos, 1u << 20);
  EXPECT_EQ(data_bytes, 65536u - 16384 - 8192);
  ASSERT_TRUE((*e)->Cache(0, 1 << 20).ok());
}

TEST_F(VolumeProviderTest, ReadOnlyAndCloseAll) {
  {
    VolumeProvider p(store_.get(), true);
    auto info = p.Describe("a");
    ASSERT_TRUE(info.ok());
    EXPECT_TRUE(info->read_only);
    auto e = p.Open("a");
    ASSERT_TRUE(e.ok());
    EXPECT_TRUE((*e)->read_only());
  }
  VolumeProvider p(store_.get(), false);
  auto e = p.Open("a");
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(p.CloseAll().ok());
  EXPECT_EQ(p.open_volumes(), 1u);  // still referenced, but closed
  std::vector<uint8_t> buf(512);
  EXPECT_FALSE((*e)->Read(0, buf).ok());  // a closed volume refuses calls
  EXPECT_FALSE(p.Open("a").ok());         // shutting down
  e->reset();
  EXPECT_EQ(p.open_volumes(), 0u);
}


// VOL@SNAP: a read-only export of the snapshot's content, listed after its
// volume, opened without the Opener (no ownership: it never changes), and a
// missing one refused by name.
TEST_F(VolumeProviderTest, SnapshotsAreReadOnlyExports) {
  std::vector<uint8_t> before(4096, 0x5a), after(4096, 0xa5), back(4096);
  {
    auto v = volume::Volume::Open(store_.get(), "a");
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    ASSERT_TRUE((*v)->Write(8192, before).ok());
    ASSERT_TRUE((*v)->CreateSnapshot("s1").ok());
    ASSERT_TRUE((*v)->Write(8192, after).ok());
    ASSERT_TRUE((*v)->Close().ok());
  }
  int opener_calls = 0;
  VolumeProvider p(store_.get(), false, {}, [&](const std::string& name) {
    opener_calls++;
    return volume::Volume::Open(store_.get(), name);
  });
  auto names = p.List();
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, (std::vector<std::string>{"a", "a@s1"}));

  auto info = p.Describe("a@s1");
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->name, "a@s1");
  EXPECT_TRUE(info->read_only);
  EXPECT_EQ(info->size, 8u << 20);
  auto missing = p.Describe("a@nosuch");
  EXPECT_TRUE(missing.status().IsNotFound());
  EXPECT_NE(missing.status().message().find("nosuch"), std::string::npos);
  EXPECT_TRUE(p.Describe("b@s1").status().IsNotFound());
  EXPECT_TRUE(p.Describe("a@s1@x").status().IsNotFound());
  EXPECT_TRUE(p.Open("a@nosuch").status().IsNotFound());

  auto snap = p.Open("a@s1");
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  EXPECT_TRUE((*snap)->read_only());
  EXPECT_EQ((*snap)->name(), "a@s1");
  EXPECT_EQ(opener_calls, 0);
  ASSERT_TRUE((*snap)->Read(8192, back).ok());
  EXPECT_EQ(back, before);
  // The volume itself is served alongside, writable, through the Opener.
  auto vol = p.Open("a");
  ASSERT_TRUE(vol.ok()) << vol.status().ToString();
  EXPECT_EQ(opener_calls, 1);
  EXPECT_FALSE((*vol)->read_only());
  ASSERT_TRUE((*vol)->Read(8192, back).ok());
  EXPECT_EQ(back, after);
  const std::vector<uint8_t> third(4096, 0x33);
  ASSERT_TRUE((*vol)->Write(8192, third).ok());
  ASSERT_TRUE((*vol)->Flush().ok());
  ASSERT_TRUE((*snap)->Read(8192, back).ok());
  EXPECT_EQ(back, before);  // writes to the volume never change its snapshots
  EXPECT_EQ(p.open_volumes(), 2u);
}

// The dirty runs of a DirtyMap as (offset, length) pairs.
std::vector<std::pair<uint64_t, uint64_t>> Runs(const DirtyMap& m) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& r : m.runs()) out.emplace_back(r.offset, r.length);
  return out;
}

// qemu:dirty-bitmap:SNAP: offered for the snapshots before the export's
// state, built from volume::Diff, covering writes not yet flushed on the
// head, shared between connections on a snapshot export.
TEST_F(VolumeProviderTest, DirtyBitmapsAreTheDifferenceSinceASnapshot) {
  const uint64_t kB = 4096;
  Edit("a", [&](volume::Volume* v) {
    ASSERT_TRUE(v->Write(0, std::vector<uint8_t>(64 * kB, 1)).ok());
    ASSERT_TRUE(v->CreateSnapshot("s1").ok());
    ASSERT_TRUE(v->Write(4 * kB, std::vector<uint8_t>(2 * kB, 2)).ok());  // blocks 4, 5
    ASSERT_TRUE(v->Trim(10 * kB, kB).ok());                              // block 10
    ASSERT_TRUE(v->CreateSnapshot("s2").ok());
    ASSERT_TRUE(v->Write(100 * kB, std::vector<uint8_t>(kB, 3)).ok());  // block 100
  });
  VolumeProvider p(store_.get(), false);
  using Names = std::vector<std::string>;
  EXPECT_EQ(*p.DirtyBitmaps("a"), (Names{"s1", "s2"}));
  EXPECT_EQ(*p.DirtyBitmaps("a@s2"), (Names{"s1"}));
  EXPECT_EQ(*p.DirtyBitmaps("a@s1"), Names{});
  EXPECT_TRUE(p.DirtyBitmaps("a@nosuch").status().IsNotFound());
  EXPECT_TRUE(p.DirtyBitmaps("nosuch").status().IsNotFound());

  // The head: a write not yet flushed is in the map (it flushes first).
  auto head = p.Open("a");
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  ASSERT_TRUE((*head)->Write(200 * kB + 7, std::vector<uint8_t>(10, 4)).ok());  // block 200
  auto m1 = (*head)->DirtyBitmap("s1");
  ASSERT_TRUE(m1.ok()) << m1.status().ToString();
  using RunList = std::vector<std::pair<uint64_t, uint64_t>>;
  EXPECT_EQ(Runs(**m1), (RunList{{4 * kB, 2 * kB}, {10 * kB, kB}, {100 * kB, kB}, {200 * kB, kB}}));
  EXPECT_EQ((*m1)->size(), 8u << 20);
  auto m2 = (*head)->DirtyBitmap("s2");
  ASSERT_TRUE(m2.ok());
  EXPECT_EQ(Runs(**m2), (RunList{{100 * kB, kB}, {200 * kB, kB}}));
  // It matches volume::Diff, extent for extent, once both are flushed.
  auto diff = volume::Diff(store_.get(), "a@s1", "a");
  ASSERT_TRUE(diff.ok());
  uint64_t dirty = 0;
  for (const auto& d : *diff) dirty += d.length;
  EXPECT_EQ((*m1)->dirty_bytes(), dirty);
  // The head's map is a point in time: a later write is in the next one only.
  ASSERT_TRUE((*head)->Write(300 * kB, std::vector<uint8_t>(kB, 5)).ok());
  EXPECT_EQ(Runs(**m2), (RunList{{100 * kB, kB}, {200 * kB, kB}}));
  auto m2b = (*head)->DirtyBitmap("s2");
  ASSERT_TRUE(m2b.ok());
  EXPECT_EQ(Runs(**m2b), (RunList{{100 * kB, kB}, {200 * kB, kB}, {300 * kB, kB}}));
  EXPECT_TRUE((*head)->DirtyBitmap("nosuch").status().IsNotFound());

  // A snapshot export: only earlier snapshots, and one map shared while in use.
  auto snap = p.Open("a@s2");
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  auto s1 = (*snap)->DirtyBitmap("s1");
  ASSERT_TRUE(s1.ok()) << s1.status().ToString();
  EXPECT_EQ(Runs(**s1), (RunList{{4 * kB, 2 * kB}, {10 * kB, kB}}));
  auto again = (*snap)->DirtyBitmap("s1");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(s1->get(), again->get());
  EXPECT_TRUE((*snap)->DirtyBitmap("s2").status().IsNotFound());  // not earlier than itself
}

// A snapshot export is an open of its own: after `snap rm` the cleaner may
// delete what it reads, and the read failed with a bare store error. It
// now says the snapshot was removed.
TEST_F(VolumeProviderTest, AReadOfARemovedSnapshotSaysSo) {
  const uint64_t kB = 4096;
  Edit("a", [&](volume::Volume* v) {
    ASSERT_TRUE(v->Write(0, std::vector<uint8_t>(256 * kB, 1)).ok());
    ASSERT_TRUE(v->CreateSnapshot("s").ok());
    ASSERT_TRUE(v->Write(0, std::vector<uint8_t>(256 * kB, 2)).ok());
  });
  VolumeProvider p(store_.get(), false);
  auto snap = p.Open("a@s");
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  Edit("a", [&](volume::Volume* v) {
    ASSERT_TRUE(v->RemoveSnapshot("s").ok());
    auto c = v->Clean(1.0);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
  });
  std::vector<uint8_t> b(256 * kB);
  Status r = (*snap)->Read(0, b);
  ASSERT_FALSE(r.ok()) << "the cleaner left the snapshot's segments: the test proves nothing";
  EXPECT_TRUE(r.IsNotFound()) << r.ToString();
  EXPECT_NE(r.message().find("snapshot a@s was removed"), std::string::npos) << r.ToString();
  // The head's reads are untouched.
  auto head = p.Open("a");
  ASSERT_TRUE(head.ok());
  ASSERT_TRUE((*head)->Read(0, b).ok());
  EXPECT_EQ(b[0], 2);
}

// Every GO could build up to 4 maps, each loading two whole extent maps, and
// nothing bounded them server-wide. Now a build takes one of the provider's
// slots (2): one beyond waits for a slot, bounded, then is refused (Busy,
// saying why); a snapshot export's shared map in use takes no slot.
TEST_F(VolumeProviderTest, DirtyMapBuildsAreBoundedServerWide) {
  Edit("a", [&](volume::Volume* v) {
    ASSERT_TRUE(v->Write(0, std::vector<uint8_t>(4096, 1)).ok());
    ASSERT_TRUE(v->CreateSnapshot("s1").ok());
    ASSERT_TRUE(v->CreateSnapshot("s2").ok());
  });
  VolumeProvider p(store_.get(), false);
  DirtyMapBuilds* builds = p.dirty_map_builds();
  builds->set_max_wait(std::chrono::milliseconds(200));
  auto snap = p.Open("a@s2");
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  auto kept = (*snap)->DirtyBitmap("s1");
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_EQ(builds->in_use(), 0) << "a finished build gives its slot back";
  // Two builds in progress elsewhere on this server.
  ASSERT_TRUE(builds->Acquire("test 1").ok());
  ASSERT_TRUE(builds->Acquire("test 2").ok());
  auto head = p.Open("a");
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  auto refused = (*head)->DirtyBitmap("s1");
  ASSERT_TRUE(refused.status().IsBusy()) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("already building 2 dirty-bitmap maps"),
            std::string::npos)
      << refused.status().message();
  // The snapshot export's map in use is shared, not built again.
  auto shared = (*snap)->DirtyBitmap("s1");
  ASSERT_TRUE(shared.ok()) << shared.status().ToString();
  EXPECT_EQ(shared->get(), kept->get());
  // A build waits for a slot that comes free within the bound.
  builds->set_max_wait(std::chrono::milliseconds(20000));
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    builds->Release();
  });
  auto waited = (*head)->DirtyBitmap("s1");
  release.join();
  ASSERT_TRUE(waited.ok()) << waited.status().ToString();
  EXPECT_EQ(builds->in_use(), 1);
  builds->Release();
}

// A clone's exports also offer the parent snapshot it was made from, by its
// current name: the map is what the clone changed.
TEST_F(VolumeProviderTest, ACloneOffersItsParentSnapshot) {
  const uint64_t kB = 4096;
  Edit("a", [&](volume::Volume* v) {
    ASSERT_TRUE(v->Write(0, std::vector<uint8_t>(16 * kB, 1)).ok());
    ASSERT_TRUE(v->CreateSnapshot("base").ok());
    ASSERT_TRUE(v->Write(0, std::vector<uint8_t>(kB, 9)).ok());  // the parent moves on
  });
  ASSERT_TRUE(volume::Volume::Clone(store_.get(), "a@base", "c").ok());
  VolumeProvider p(store_.get(), false);
  using Names = std::vector<std::string>;
  EXPECT_EQ(*p.DirtyBitmaps("c"), (Names{"a@base"}));
  auto c = p.Open("c");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE((*c)->Write(3 * kB, std::vector<uint8_t>(kB, 2)).ok());
  auto m = (*c)->DirtyBitmap("a@base");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  using RunList = std::vector<std::pair<uint64_t, uint64_t>>;
  EXPECT_EQ(Runs(**m), (RunList{{3 * kB, kB}}));
  EXPECT_TRUE((*c)->DirtyBitmap("base").status().IsNotFound());
  c->reset();

  // The clone's own snapshots offer it too, before their own earlier ones.
  Edit("c", [](volume::Volume* v) {
    ASSERT_TRUE(v->CreateSnapshot("c1").ok());
    ASSERT_TRUE(v->CreateSnapshot("c2").ok());
  });
  EXPECT_EQ(*p.DirtyBitmaps("c@c2"), (Names{"a@base", "c1"}));
  auto c2 = p.Open("c@c2");
  ASSERT_TRUE(c2.ok()) << c2.status().ToString();
  m = (*c2)->DirtyBitmap("a@base");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(Runs(**m), (RunList{{3 * kB, kB}}));
  m = (*c2)->DirtyBitmap("c1");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(Runs(**m), RunList{});
  c2->reset();

  // Renamed: offered under the new name (found by id).
  Edit("a", [](volume::Volume* v) { ASSERT_TRUE(v->RenameSnapshot("base", "gold").ok()); });
  EXPECT_EQ(*p.DirtyBitmaps("c"), (Names{"a@gold", "c1", "c2"}));
  c = p.Open("c");
  ASSERT_TRUE(c.ok());
  m = (*c)->DirtyBitmap("a@gold");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(Runs(**m), (RunList{{3 * kB, kB}}));
}

// The trash (doc/snapshots.md "Trash"): a trashed snapshot is no longer an
// export, and neither is a trashed volume, while their clone still is.
TEST_F(VolumeProviderTest, TrashedSnapshotsAndVolumesAreNotExported) {
  {
    auto v = volume::Volume::Open(store_.get(), "a");
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    ASSERT_TRUE((*v)->CreateSnapshot("s1").ok());
    ASSERT_TRUE((*v)->Close().ok());
  }
  ASSERT_TRUE(volume::Volume::Clone(store_.get(), "a@s1", "c").ok());
  {
    auto v = volume::Volume::Open(store_.get(), "a");
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    auto t = (*v)->TrashSnapshot("s1");
    ASSERT_TRUE(t.ok() && *t) << t.status().ToString();
    ASSERT_TRUE((*v)->Close().ok());
  }
  VolumeProvider p(store_.get(), true);
  auto names = p.List();
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, (std::vector<std::string>{"a", "c"}));
  EXPECT_TRUE(p.Describe("a@s1").status().IsNotFound());
  EXPECT_TRUE(p.Open("a@s1").status().IsNotFound());
  auto r = volume::TrashVolume(store_.get(), "a");
  ASSERT_TRUE(r.ok() && r->trashed) << r.status().ToString();
  names = p.List();
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, (std::vector<std::string>{"c"}));
  EXPECT_TRUE(p.Open("a").status().IsNotFound());
  EXPECT_TRUE(p.Open("c").ok());
}


// INFO (and LIST, GO's describe) used to load the newest checkpoint of a
// volume that is not open (Volume::Stat): 256 INFOs cost 256 decodes.
TEST_F(VolumeProviderTest, InfoOnAVolumeNotOpenReadsOnlyItsMeta) {
  Edit("a", [](volume::Volume* v) {
    std::vector<uint8_t> data(1 << 20, 7);
    ASSERT_TRUE(v->Write(0, data).ok());
  });  // closed: a checkpoint is written
  GatedStore gs(store_.get());
  VolumeProvider p(&gs, false);
  std::string in = testing::Be32(kClientFlagFixedNewstyle);
  for (int i = 0; i < 256; i++) in += OptionBytes(kOptInfo, InfoBytes("a"));
  in += OptionBytes(kOptAbort, "");
  const uint64_t before = gs.reads();
  std::string out = Replay(&p, in, 300);
  // hello, then per INFO one INFO_EXPORT reply and an ACK, then ABORT's ACK.
  EXPECT_EQ(out.size(), 18u + 256 * (32 + 20) + 20);
  EXPECT_EQ(gs.reads() - before, 256u) << "one read (the meta) per INFO";
}

TEST_F(VolumeProviderTest, OpeningOneVolumeNeverBlocksAnother) {
  ASSERT_TRUE(volume::Volume::Create(store_.get(), "b", {.size = 8 << 20}).ok());
  GatedStore gs(store_.get());
  std::atomic<int> opens_b{0};
  VolumeProvider p(&gs, false, {}, [&](const std::string& name) {
    if (name == "b") opens_b++;
    return volume::Volume::Open(&gs, name);
  });
  // Every read of b but its meta (which Describe needs) hangs: b's open is stuck.
  gs.Block("volumes/b/", "volumes/b/meta", false);
  Result<std::shared_ptr<Export>> b1 = Status::Aborted("unset"), b2 = Status::Aborted("unset");
  std::atomic<bool> b2_done{false};
  std::thread t1([&] { b1 = p.Open("b"); });
  ASSERT_TRUE(WaitUntil([&] { return gs.held() > 0; }));
  std::thread t2([&] {
    b2 = p.Open("b");  // waits for t1's open, never opens b a second time
    b2_done = true;
  });
  // Meanwhile another volume opens, and INFO on b is answered.
  auto a = p.Open("a");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto info = p.Describe("b");
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->size, 8u << 20);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(b2_done.load());
  gs.Release();
  t1.join();
  t2.join();
  ASSERT_TRUE(b1.ok()) << b1.status().ToString();
  ASSERT_TRUE(b2.ok()) << b2.status().ToString();
  EXPECT_EQ(b1->get(), b2->get());  // one shared open
  EXPECT_EQ(opens_b.load(), 1);
  EXPECT_EQ(p.open_volumes(), 2u);
}

TEST_F(VolumeProviderTest, ClosingOneVolumeNeverBlocksAnotherAndAReopenWaitsForTheClose) {
  ASSERT_TRUE(volume::Volume::Create(store_.get(), "b", {.size = 8 << 20}).ok());
  GatedStore gs(store_.get());
  std::atomic<int> opens_b{0};
  VolumeProvider p(&gs, false, {}, [&](const std::string& name) {
    if (name == "b") opens_b++;
    return volume::Volume::Open(&gs, name);
  });
  auto b = p.Open("b");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  std::vector<uint8_t> data(4096, 9);
  ASSERT_TRUE((*b)->Write(0, data).ok());
  // Its close must write (segment, checkpoint): hold every access to b.
  gs.Block("volumes/b/", "volumes/b/meta", true);
  std::thread closer([&] { b->reset(); });  // the last reference: closes b
  ASSERT_TRUE(WaitUntil([&] { return gs.held() > 0; }));
  std::atomic<bool> reopened{false};
  Result<std::shared_ptr<Export>> again = Status::Aborted("unset");
  std::thread reopen([&] {
    again = p.Open("b");
    reopened = true;
  });
  auto a = p.Open("a");  // not blocked by b's close
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(reopened.load()) << "an open of b waits for b's close";
  gs.Release();
  closer.join();
  reopen.join();
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(opens_b.load(), 2);  // opened anew after the close
  std::vector<uint8_t> back(4096);
  ASSERT_TRUE((*again)->Read(0, back).ok());
  EXPECT_EQ(back, data);
}

TEST_F(VolumeProviderTest, AFailedOpenTellsTheClientNoStorePath) {
  VolumeProvider p(store_.get(), false, {}, [](const std::string& name) {
    return Result<std::unique_ptr<volume::Volume>>(
        Status::IOError("/var/lib/hbiss/store/volumes/" + name + "/lock: Permission denied"));
  });
  std::string in = testing::Be32(kClientFlagFixedNewstyle) + OptionBytes(kOptGo, InfoBytes("a")) +
                   OptionBytes(kOptGo, InfoBytes("nosuch")) + OptionBytes(kOptAbort, "");
  std::string out = Replay(&p, in);
  EXPECT_EQ(out.find("/var/lib"), std::string::npos);
  EXPECT_EQ(out.find("Permission"), std::string::npos);
  EXPECT_NE(out.find("export 'a' could not be opened; see the server log"), std::string::npos);
  EXPECT_NE(out.find("no export named 'nosuch'"), std::string::npos);
}

}  // namespace
}  // namespace hbiss::nbd
