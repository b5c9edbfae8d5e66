#include "volume/epoch.h"

#include <gtest/gtest.h>

#include "store/memory_store.h"
#include "store/store_wrapper.h"
#include "util/bytes.h"
#include "volume/layout.h"

namespace hbiss::volume {
namespace {

VolumeMeta Meta() {
  VolumeMeta m;
  m.id = 0x1234;
  m.size = 1 << 20;
  m.segment_size = 256 << 10;
  return m;
}

void PutSeg(store::Store* s, const layout::LogDir& d, uint64_t id) {
  ASSERT_TRUE(s->Put(layout::SegName(d, id), AsBytes("x")).ok());
}

TEST(EpochTest, TheHighestEpochFromOneOnIsCurrent) {
  store::MemoryStore mem;
  auto c = ResolveLog(&mem, "v").value();
  EXPECT_EQ(c.epoch, 0u);
  EXPECT_EQ(c.dir, layout::V1LogDir("v"));
  // A move in progress (epoch 0) and names that are not epochs are ignored.
  PutSeg(&mem, layout::EpochDir("v", 0), 1);
  ASSERT_TRUE(mem.Put("volumes/v/epoch/not-an-epoch/x", AsBytes("x")).ok());
  EXPECT_EQ(ResolveLog(&mem, "v")->epoch, 0u);
  PutSeg(&mem, layout::EpochDir("v", 2), 1);
  PutSeg(&mem, layout::EpochDir("v", 0x11), 1);
  c = ResolveLog(&mem, "v").value();
  EXPECT_EQ(c.epoch, 0x11u);
  EXPECT_EQ(c.dir.path, "volumes/v/epoch/0000000000000011");
  EXPECT_EQ(c.dir.volume(), "v");
  EXPECT_EQ(CurrentLogPath(&mem, "v"), c.dir.path);
  EXPECT_EQ(ListEpochs(&mem, "v").value(), (std::vector<uint64_t>{0, 2, 0x11}));
}

TEST(EpochTest, StartEpochRenamesWritesTheOwnerAndDeletesLowerEpochs) {
  store::MemoryStore mem;
  const VolumeMeta m = Meta();
  const std::string a = "{\"server\":\"a\"}";
  ASSERT_EQ(StartEpoch(&mem, "v", m, &a).value(), 1u);
  PutSeg(&mem, layout::EpochDir("v", 1), 7);
  EXPECT_EQ(*mem.Get(layout::OwnerName(layout::EpochDir("v", 1))), a);
  PutSeg(&mem, layout::EpochDir("v", 0), 1);  // garbage of some crash
  ASSERT_EQ(StartEpoch(&mem, "v", m, nullptr).value(), 2u);
  EXPECT_TRUE(mem.Stat(layout::SegName(layout::EpochDir("v", 2), 7)).ok()) << "moved";
  EXPECT_TRUE(mem.Stat(layout::OwnerName(layout::EpochDir("v", 2))).status().IsNotFound())
      << "owned by nobody: the old owner object does not come along";
  EXPECT_EQ(ListEpochs(&mem, "v").value(), std::vector<uint64_t>{2});
}

// Two renames race: the loser resolves again and takes the next epoch.
class RaceStore : public store::StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  Status RenameDir(const std::string& from, const std::string& to) override {
    if (races > 0) {
      races--;
      // Someone else's fence wins first.
      HBISS_RETURN_IF_ERROR(StoreWrapper::RenameDir(from, to));
      return Status::NotFound(from + ": gone");
    }
    return StoreWrapper::RenameDir(from, to);
  }
  int races = 0;
};

TEST(EpochTest, ALostRaceResolvesAgain) {
  store::MemoryStore mem;
  RaceStore s(&mem);
  const std::string o = "me";
  ASSERT_EQ(StartEpoch(&s, "v", Meta(), &o).value(), 1u);
  s.races = 2;
  EXPECT_EQ(StartEpoch(&s, "v", Meta(), &o).value(), 4u);
  EXPECT_EQ(*mem.Get(layout::OwnerName(layout::EpochDir("v", 4))), o);
  s.races = 100;
  EXPECT_FALSE(StartEpoch(&s, "v", Meta(), &o).ok()) << "gives up after a few";
}

TEST(EpochTest, AVersion1LogIsMovedAndTheMetaRewritten) {
  store::MemoryStore mem;
  VolumeMeta m = Meta();
  m.version = 1;
  ASSERT_TRUE(mem.Put(layout::MetaName("v"), AsBytes(EncodeMeta(m))).ok());
  PutSeg(&mem, layout::V1LogDir("v"), 3);
  ASSERT_TRUE(mem.Put(layout::CkptName(layout::V1LogDir("v"), 1), AsBytes("c")).ok());
  ASSERT_EQ(StartEpoch(&mem, "v", m, nullptr).value(), 1u);
  EXPECT_EQ(ReadMeta(&mem, "v")->version, 2u);
  const layout::LogDir e1 = layout::EpochDir("v", 1);
  EXPECT_TRUE(mem.Stat(layout::SegName(e1, 3)).ok());
  EXPECT_TRUE(mem.Stat(layout::CkptName(e1, 1)).ok());
  EXPECT_TRUE(mem.List("volumes/v/seg").status().IsNotFound());
  EXPECT_TRUE(mem.List("volumes/v/ckpt").status().IsNotFound());
  EXPECT_TRUE(mem.Stat(layout::MetaName("v")).ok());
}

}  // namespace
}  // namespace hbiss::volume
