#include "volume/space_reserve.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "store/local_store.h"
#include "store/memory_store.h"
#include "store/store_wrapper.h"
#include "volume/layout.h"

namespace hbiss::volume {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr uint64_t kMiB = 1ull << 20;
const std::string kObj = layout::ReserveName("v");

TEST(SpaceReserveTest, SizeIsOneSegmentPlusExtra) {
  EXPECT_EQ(SpaceReserve::BytesFor(64 * kMiB), 68 * kMiB);
  EXPECT_EQ(SpaceReserve::BytesFor(kMiB), 5 * kMiB);
  EXPECT_EQ(SpaceReserve::BytesFor(0), SpaceReserve::kExtraBytes);
}

class LocalReserveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / "hbiss-reserve-XXXXXX").string();
    ASSERT_NE(::mkdtemp(dir_.data()), nullptr);
    auto s = store::LocalStore::Open(dir_, true);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string dir_;
  std::unique_ptr<store::LocalStore> store_;
};

TEST_F(LocalReserveTest, EnsureReleaseAndRestoreOnALocalStore) {
  ASSERT_TRUE(store_->MayRunOutOfSpace());
  SpaceReserve r(store_.get(), kObj, 3 * 4096 + 5, store_->MayRunOutOfSpace());
  EXPECT_TRUE(r.enabled());
  EXPECT_EQ(r.bytes(), 3u * 4096 + 5);
  EXPECT_FALSE(r.held());  // until Ensure
  ASSERT_TRUE(r.Ensure().ok());
  EXPECT_TRUE(r.held());
  auto size = store_->Stat(kObj);
  ASSERT_TRUE(size.ok()) << size.status().ToString();
  EXPECT_EQ(*size, r.bytes());
  auto data = store_->Get(kObj);
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(*data, std::string(r.bytes(), '\0'));
  ASSERT_TRUE(r.Ensure().ok());  // already there

  EXPECT_TRUE(r.Release());
  EXPECT_FALSE(r.held());
  EXPECT_TRUE(store_->Stat(kObj).status().IsNotFound());
  EXPECT_FALSE(r.Release());  // nothing left to give

  // Not restored right after it was given up...
  r.MaybeRestore();
  EXPECT_FALSE(r.held());
  EXPECT_TRUE(store_->Stat(kObj).status().IsNotFound());
  // ...but once kRestoreEvery has passed.
  std::this_thread::sleep_for(SpaceReserve::kRestoreEvery + 50ms);
  r.MaybeRestore();
  EXPECT_TRUE(r.held());
  size = store_->Stat(kObj);
  ASSERT_TRUE(size.ok()) << size.status().ToString();
  EXPECT_EQ(*size, r.bytes());
}

TEST_F(LocalReserveTest, EnsureRewritesAReserveOfTheWrongSize) {
  const std::string junk = "short";
  ASSERT_TRUE(store_
                  ->Put(kObj, std::span<const uint8_t>(
                                  reinterpret_cast<const uint8_t*>(junk.data()), junk.size()))
                  .ok());
  SpaceReserve r(store_.get(), kObj, 8192, true);
  ASSERT_TRUE(r.Ensure().ok());
  auto size = store_->Stat(kObj);
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, 8192u);
}

TEST_F(LocalReserveTest, MaybeRestoreWritesAMissingReserveThatWasNeverTried) {
  SpaceReserve r(store_.get(), kObj, 4096, true);
  r.MaybeRestore();
  EXPECT_TRUE(r.held());
  EXPECT_TRUE(store_->Stat(kObj).ok());
}

TEST(SpaceReserveTest, DisabledOnAMemoryStore) {
  store::MemoryStore store;
  ASSERT_FALSE(store.MayRunOutOfSpace());
  SpaceReserve r(&store, kObj, 4096, store.MayRunOutOfSpace());
  EXPECT_FALSE(r.enabled());
  EXPECT_TRUE(r.Ensure().ok());
  EXPECT_FALSE(r.held());
  EXPECT_TRUE(store.Stat(kObj).status().IsNotFound());  // no-op: nothing written
  r.MaybeRestore();
  EXPECT_TRUE(store.Stat(kObj).status().IsNotFound());
  // Even with an object there, Release gives nothing and deletes nothing.
  const uint8_t b[1] = {0};
  ASSERT_TRUE(store.Put(kObj, b).ok());
  EXPECT_FALSE(r.Release());
  EXPECT_TRUE(store.Stat(kObj).ok());
}

// A store that is full while `full` is set: every Put fails with NoSpace.
class FullStore : public store::StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  std::atomic<bool> full{true};
  Status Put(const std::string& name, std::span<const uint8_t> data) override {
    if (full) return Status::NoSpace("device full");
    return StoreWrapper::Put(name, data);
  }
  bool MayRunOutOfSpace() const override { return true; }
};

TEST(SpaceReserveTest, EnsureOnAFullStoreReturnsNoSpaceAndRetriesOnlyAfterAWhile) {
  store::MemoryStore mem;
  FullStore store(&mem);
  SpaceReserve r(&store, kObj, 4096, store.MayRunOutOfSpace());
  ASSERT_TRUE(r.enabled());
  Status s = r.Ensure();
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_FALSE(r.held());
  EXPECT_FALSE(r.Release());  // there was none

  store.full = false;
  r.MaybeRestore();  // tried just now: not yet
  EXPECT_FALSE(r.held());
  EXPECT_TRUE(mem.Stat(kObj).status().IsNotFound());
  std::this_thread::sleep_for(SpaceReserve::kRestoreEvery + 50ms);
  r.MaybeRestore();
  EXPECT_TRUE(r.held());
  EXPECT_TRUE(mem.Stat(kObj).ok());
}

}  // namespace
}  // namespace hbiss::volume
