// A writer that sits idle for longer than the NameNode's lease soft limit (60 s) and the
// DataNodes' read timeout (60 s) keeps both its lease (background renewer) and its pipeline
// (heartbeat packets): another client still cannot take the file, and the writer then
// finishes without any pipeline recovery. Takes about 70 s.
#include <gtest/gtest.h>

#include <thread>

#include "hdfs/client.h"
#include "tests/hdfs/cluster_env.h"

namespace hbiss::hdfs::testing {
namespace {

TEST(HdfsIdleWriterTest, LeaseAndPipelineSurviveSeventySecondsIdle) {
  HBISS_NEED_CLUSTER(false);
  auto c = ConnectClient();
  auto other = ConnectClient();
  ASSERT_TRUE(c && other);
  std::string path = UniqueDir("idle") + "/f";
  std::mt19937_64 rng(50);
  std::string a = RandomBytes(rng, 100000), b = RandomBytes(rng, 50000);
  auto w = c->Create(path, CreateOptions{});
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Write(a).ok());
  ASSERT_TRUE((*w)->Hflush().ok());
  std::this_thread::sleep_for(std::chrono::seconds(70));
  // Had the lease expired, this create would start lease recovery (RecoveryInProgress) and
  // the writer would lose the file; a live lease answers AlreadyBeingCreatedException.
  auto steal = other->Create(path, CreateOptions{});
  ASSERT_TRUE(steal.status().IsBusy()) << steal.status().ToString();
  EXPECT_NE(steal.status().message().find("AlreadyBeingCreatedException"), std::string::npos)
      << steal.status().ToString();
  ASSERT_TRUE((*w)->Write(b).ok());
  Status st = (*w)->Close();
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ((*w)->recoveries(), 0) << "heartbeats kept the pipeline alive";
  auto got = ReadAll(*other, path);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(*got == a + b);
}

}  // namespace
}  // namespace hbiss::hdfs::testing
