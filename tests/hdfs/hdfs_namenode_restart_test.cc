// NameNode restarts against the real cluster: between calls the client reconnects on its
// own; during a write the write completes (addBlock/complete are retried until the NameNode
// is back) and nothing already written is lost.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "hdfs/client.h"
#include "tests/hdfs/cluster_env.h"

namespace hbiss::hdfs::testing {
namespace {

constexpr uint64_t kBlock = 1 << 20;

TEST(HdfsNameNodeRestartTest, ReconnectsBetweenCalls) {
  HBISS_NEED_CLUSTER(true);
  auto c = ConnectClient();
  ASSERT_NE(c, nullptr);
  std::string dir = UniqueDir("nnrestart-calls");
  ASSERT_TRUE(c->Mkdirs(dir).ok());
  ASSERT_TRUE(WriteAll(*c, dir + "/before", "written before the restart", kBlock).ok());
  uint64_t connects = c->namenode().connects();
  ASSERT_EQ(Cluster("restart-nn", "--kill > /dev/null"), 0);
  auto st = c->GetFileInfo(dir + "/before");
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_GT(c->namenode().connects(), connects) << "a new connection after the restart";
  EXPECT_EQ(ReadAll(*c, dir + "/before").value(), "written before the restart");
  ASSERT_TRUE(WriteAll(*c, dir + "/after", "and after", kBlock).ok());
  EXPECT_EQ(ReadAll(*c, dir + "/after").value(), "and after");
}

TEST(HdfsNameNodeRestartTest, WriteSpanningARestartCompletesIntact) {
  HBISS_NEED_CLUSTER(true);
  auto c = ConnectClient();
  ASSERT_NE(c, nullptr);
  std::string path = UniqueDir("nnrestart-write") + "/f";
  std::mt19937_64 rng(40);
  const std::string data = RandomBytes(rng, 6 * kBlock + 1234);
  CreateOptions o;
  o.block_size = kBlock;
  auto w = c->Create(path, o);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  std::atomic<size_t> written{0};
  Status writer_status;
  std::thread writer([&] {
    const size_t kPiece = 128 * 1024;
    for (size_t off = 0; off < data.size(); off += kPiece) {
      Status st = (*w)->Write(std::string_view(data).substr(off, kPiece));
      if (st.ok() && (off / kPiece) % 4 == 3) st = (*w)->Hflush();
      if (!st.ok()) {
        writer_status = st;
        return;
      }
      written = std::min(data.size(), off + kPiece);
      std::this_thread::sleep_for(std::chrono::milliseconds(60));
    }
    writer_status = (*w)->Close();
  });
  while (written.load() < 2 * kBlock + kBlock / 3) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  int rc = Cluster("restart-nn", "--kill > /dev/null");
  writer.join();
  ASSERT_EQ(rc, 0);
  ASSERT_TRUE(writer_status.ok()) << writer_status.ToString();
  auto got = ReadAll(*c, path);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->size(), data.size());
  EXPECT_TRUE(*got == data);
}

}  // namespace
}  // namespace hbiss::hdfs::testing
