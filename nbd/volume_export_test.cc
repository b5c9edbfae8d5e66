// VolumeProvider / VolumeExport over an in-memory store: naming, sharing one
// open volume between connections, closing with the last one, and the
// translation of the engine's extents into NBD block status.
#include "nbd/volume_export.h"

#include <gtest/gtest.h>

#include "store/store.h"
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
  std::unique_ptr<store::Store> store_;
};

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

}  // namespace
}  // namespace hbiss::nbd
