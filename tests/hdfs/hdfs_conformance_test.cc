// The store conformance suite (store/store_conformance.h) over the hdfs:// backend, against
// the real cluster named by HBISS_HDFS_URI. Each test gets a fresh directory, removed after.
#include <gtest/gtest.h>

#include <atomic>
#include <random>

#include "hdfs/hdfs_store.h"
#include "store/store_conformance.h"
#include "store/store_wrapper.h"
#include "tests/hdfs/cluster_env.h"

namespace hbiss::store::testing {
namespace {

// Deletes the store's directory when the test is done with it.
class CleanupStore : public StoreWrapper {
 public:
  CleanupStore(std::unique_ptr<Store> s, std::string path)
      : StoreWrapper(std::move(s)), path_(std::move(path)) {}
  ~CleanupStore() override {
    auto c = hdfs::testing::ConnectClient();
    if (c != nullptr) (void)c->Delete(path_, true);
  }

 private:
  std::string path_;
};

Result<std::unique_ptr<Store>> MakeHdfsStore() {
  static std::atomic<int> n{0};
  static const std::string base = hdfs::testing::UniqueDir("conformance");
  std::string path = base + "/" + std::to_string(n++);
  hdfs::ClientOptions o;
  o.rpc_retry_deadline_ms = 30000;
  HBISS_ASSIGN_OR_RETURN(
      auto s, hdfs::OpenHdfsStore(hdfs::testing::Env("HBISS_HDFS_URI") + path, true, o));
  return std::unique_ptr<Store>(new CleanupStore(std::move(s), path));
}

std::vector<ConformanceParam> Params() {
  if (hdfs::testing::Env("HBISS_HDFS_URI").empty()) return {};
  return {ConformanceParam{"hdfs", MakeHdfsStore}};
}

INSTANTIATE_TEST_SUITE_P(Hdfs, StoreConformanceTest, ::testing::ValuesIn(Params()),
                         ConformanceParamName);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(StoreConformanceTest);

// Without a cluster the suite above has no instances: say so (or fail when required).
TEST(HdfsConformance, ClusterIsConfigured) { HBISS_NEED_CLUSTER(false); }

TEST(HdfsConformance, OpenStoreUsesTheRegisteredScheme) {
  HBISS_NEED_CLUSTER(false);
  hdfs::RegisterStoreScheme();
  std::string uri = hdfs::testing::Env("HBISS_HDFS_URI") + hdfs::testing::UniqueDir("scheme");
  EXPECT_TRUE(OpenStore(uri, false).status().IsNotFound());
  auto s = OpenStore(uri, true);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_TRUE((*s)->Put("x", std::span<const uint8_t>(reinterpret_cast<const uint8_t*>("hi"), 2))
                  .ok());
  EXPECT_EQ((*s)->Get("x").value(), "hi");
  EXPECT_NE((*s)->Uri().find("hdfs://"), std::string::npos);
  auto bad = OpenStore("hdfs://127.0.0.1:notaport/x", true);
  EXPECT_TRUE(bad.status().IsInvalidArgument()) << bad.status().ToString();
}

// What a Put killed half-way leaves on HDFS: a hidden temporary file, maybe still open for
// writing by the dead client. RemoveTempLeftovers deletes it and nothing else.
TEST(HdfsConformance, RemoveTempLeftoversDeletesOnlyTemporaries) {
  HBISS_NEED_CLUSTER(false);
  auto s = MakeHdfsStore();
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  Store& store = **s;
  ASSERT_TRUE(store.Put("d/real", std::span<const uint8_t>(
                                      reinterpret_cast<const uint8_t*>("r"), 1)).ok());
  auto c = hdfs::testing::ConnectClient();
  ASSERT_NE(c, nullptr);
  // The store's directory: its Uri without the scheme and authority.
  std::string uri = store.Uri();
  std::string root = uri.substr(uri.find('/', std::string("hdfs://").size()));
  auto closed = c->Create(root + "/d/.hbiss-tmp-dead-1", hdfs::CreateOptions{});
  ASSERT_TRUE(closed.ok()) << closed.status().ToString();
  ASSERT_TRUE((*closed)->Write("half").ok());
  ASSERT_TRUE((*closed)->Close().ok());
  auto open = c->Create(root + "/d/.hbiss-tmp-dead-2", hdfs::CreateOptions{});
  ASSERT_TRUE(open.ok()) << open.status().ToString();
  ASSERT_TRUE((*open)->Write("never closed").ok());
  ASSERT_TRUE((*open)->Hflush().ok());
  auto other = c->Create(root + "/d/.hbiss-keep", hdfs::CreateOptions{});
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE((*other)->Close().ok());
  auto n = store.RemoveTempLeftovers("d");
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 2u);
  EXPECT_TRUE(c->GetFileInfo(root + "/d/.hbiss-tmp-dead-1").status().IsNotFound());
  EXPECT_TRUE(c->GetFileInfo(root + "/d/.hbiss-tmp-dead-2").status().IsNotFound());
  EXPECT_TRUE(c->GetFileInfo(root + "/d/.hbiss-keep").ok());
  EXPECT_EQ(store.Get("d/real").value(), "r");
  EXPECT_EQ(store.RemoveTempLeftovers("d").value(), 0u);
  EXPECT_EQ(store.RemoveTempLeftovers("missing").value(), 0u);
}

}  // namespace
}  // namespace hbiss::store::testing
