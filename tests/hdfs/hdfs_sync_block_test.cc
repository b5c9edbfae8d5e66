// "Durable means durable on HDFS" (issue #9): an hsync syncs only the block being written, so
// every block that ended before it must have been fsynced by its DataNodes when it was
// finalized. Java asks for that with CreateFlag.SYNC_BLOCK; ours with
// CreateOptions::sync_block, which the store sets for segments and Put's files.
//
// What these tests can observe: each DataNode's FsyncCount metric (JMX, DataNodeActivity),
// which the DataNode bumps once per fsync of a replica it is receiving. A block that ends
// with syncBlock bumps it on each of its replicas; without it, ending a block does not.
// What they cannot observe: whether the bytes would survive a power cut. kill -9 of every
// DataNode (the last test) loses nothing either way, because the page cache outlives the
// process; that test only shows the file reads back whole after such a restart.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <random>
#include <thread>

#include "hdfs/client.h"
#include "hdfs/hdfs_store.h"
#include "tests/hdfs/cluster_env.h"

namespace hbiss::hdfs::testing {
namespace {

constexpr uint64_t kBlock = 1 << 20;  // the test cluster's block size
constexpr int kDataNodes = 4;         // scripts/hdfs-cluster's default
constexpr int kReplication = 3;

// Sum of FsyncCount over the cluster's DataNodes (their HTTP ports are base + 10 * i + 2).
// A DataNode's JMX values are a cache refreshed at most once per metrics period (Hadoop's
// default is 10 s; scripts/hdfs-cluster sets 1 s), so this first waits out the period since
// the previous call.
int64_t FsyncCount() {
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  int64_t total = 0;
  for (int i = 1; i <= kDataNodes; i++) {
    std::string out;
    std::string url = fmt::format(
        "http://127.0.0.1:{}/jmx?qry=Hadoop:service=DataNode,name=DataNodeActivity-*",
        ClusterUri().port + 10 * i + 2);
    EXPECT_EQ(Shell("curl -sf '" + url + "'", &out), 0) << url;
    // The JMX JSON has `"FsyncCount" : N` (std::regex is avoided: GCC 12 warns inside it
    // under ASan, and warnings fail CI's builds).
    const std::string key = "\"FsyncCount\" : ";
    const size_t at = out.find(key);
    const size_t digits = at == std::string::npos ? 0 : at + key.size();
    if (at == std::string::npos || digits >= out.size() || !std::isdigit(out[digits])) {
      ADD_FAILURE() << "no FsyncCount from DataNode " << i << ": " << out;
      return -1;
    }
    total += std::stoll(out.substr(digits));
  }
  return total;
}

std::span<const uint8_t> Bytes(const std::string& s) {
  return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// Writes two whole blocks and a bit more without any hflush and returns how many fsyncs the
// DataNodes did meanwhile; *w is left open.
int64_t FsyncsWhileFillingTwoBlocks(Client& c, const std::string& path, bool sync_block,
                                    std::unique_ptr<FileWriter>* w) {
  CreateOptions o;
  o.block_size = kBlock;
  o.sync_block = sync_block;
  auto cw = c.Create(path, o);
  EXPECT_TRUE(cw.ok()) << cw.status().ToString();
  if (!cw.ok()) return -1;
  *w = std::move(cw).value();
  std::mt19937_64 rng(sync_block ? 1 : 2);
  const int64_t before = FsyncCount();
  const std::string data = RandomBytes(rng, 2 * kBlock + 1000);
  for (size_t off = 0; off < data.size(); off += 100000) {
    EXPECT_TRUE((*w)->Write(std::string_view(data).substr(off, 100000)).ok());
  }
  return FsyncCount() - before;
}

TEST(HdfsSyncBlockTest, FinishedBlocksAreFsyncedOnlyWithSyncBlock) {
  HBISS_NEED_CLUSTER(false);
  auto c = ConnectClient();
  ASSERT_NE(c, nullptr);
  const std::string dir = UniqueDir("sync-block");
  std::unique_ptr<FileWriter> plain, synced;
  // Writing blocks without syncBlock fsyncs nothing: this is what the test can tell apart.
  EXPECT_EQ(FsyncsWhileFillingTwoBlocks(*c, dir + "/plain", false, &plain), 0)
      << "the cluster fsyncs finished blocks anyway (dfs.datanode.synconclose?)";
  // With it, each DataNode of each finished block's pipeline fsynced the replica before it
  // acknowledged the block's last packet (EndBlock waits for that ack).
  EXPECT_EQ(FsyncsWhileFillingTwoBlocks(*c, dir + "/synced", true, &synced), 2 * kReplication);
  // Hsync adds the block being written.
  int64_t before = FsyncCount();
  ASSERT_TRUE(synced->Hsync().ok());
  EXPECT_EQ(FsyncCount() - before, kReplication);
  ASSERT_TRUE(plain->Close().ok());
  ASSERT_TRUE(synced->Close().ok());
  EXPECT_TRUE(c->Delete(dir, true).ok());
}

// The store's Sync (what a volume's FLUSH comes down to) covers every block of a segment,
// and a Put is durable in every block.
TEST(HdfsSyncBlockTest, StoreSegmentsAndPutsSyncEveryBlock) {
  HBISS_NEED_CLUSTER(false);
  const std::string dir = UniqueDir("sync-block-store");
  auto s = OpenHdfsStore(Env("HBISS_HDFS_URI") + dir, true);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  std::mt19937_64 rng(3);
  const std::string data = RandomBytes(rng, 2 * kBlock + 5000);  // three blocks
  auto w = (*s)->Create("seg/1");
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  int64_t before = FsyncCount();
  ASSERT_TRUE((*w)->Append(Bytes(data)).ok());
  ASSERT_TRUE((*w)->Sync().ok());
  EXPECT_GE(FsyncCount() - before, 3 * kReplication)
      << "a segment's Sync left finished blocks unsynced";
  ASSERT_TRUE((*w)->Close().ok());

  before = FsyncCount();
  ASSERT_TRUE((*s)->Put("ckpt", Bytes(data)).ok());
  EXPECT_GE(FsyncCount() - before, 3 * kReplication) << "a Put left finished blocks unsynced";
  auto got = (*s)->Get("ckpt");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(*got == data);
  s->reset();
  auto c = ConnectClient();
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(c->Delete(dir, true).ok());
}

// A segment synced across several blocks and left open (its writer "crashed"), then every
// DataNode killed with -9 and restarted: a takeover reads every synced byte back. (As said
// above, this cannot tell whether the blocks were fsynced: the page cache survives kill -9.)
// Until the takeover recovers the lease, the replicas of the open block, reloaded by the
// restarted DataNodes, answer "no visible length", and a read-only open fails, as Java's
// does ("Cannot obtain block length"); it must never read short or wrong bytes.
TEST(HdfsSyncBlockTest, SyncedMultiBlockSegmentReadsBackAfterEveryDataNodeRestarts) {
  HBISS_NEED_CLUSTER(true);
  const std::string dir = UniqueDir("sync-block-restart");
  auto s = OpenHdfsStore(Env("HBISS_HDFS_URI") + dir, true);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  std::mt19937_64 rng(4);
  const std::string data = RandomBytes(rng, 2 * kBlock + 123457);
  auto w = (*s)->Create("seg/1");
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_TRUE((*w)->Append(Bytes(data)).ok());
  ASSERT_TRUE((*w)->Sync().ok());
  w->reset();  // the writer is gone, as if its process had been killed
  for (int i = 1; i <= kDataNodes; i++) ASSERT_EQ(Cluster("kill-dn", std::to_string(i)), 0);
  for (int i = 1; i <= kDataNodes; i++) {
    ASSERT_EQ(Cluster("restart-dn", std::to_string(i)), 0) << "restart-dn " << i;
  }
  // Another store (another HDFS client, as another process would be) reads it.
  auto s2 = OpenHdfsStore(Env("HBISS_HDFS_URI") + dir, false);
  ASSERT_TRUE(s2.ok()) << s2.status().ToString();
  auto before = (*s2)->Get("seg/1");
  if (before.ok()) {
    EXPECT_EQ(before->size(), data.size());
    EXPECT_TRUE(*before == data) << "first difference at "
                                 << std::mismatch(before->begin(), before->end(), data.begin())
                                            .first -
                                        before->begin();
  }
  auto r = (*s2)->OpenForTakeover("seg/1");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->Size(), data.size());
  auto got = (*s2)->Get("seg/1");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(*got == data);
  s->reset();
  auto c = ConnectClient();
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(c->Delete(dir, true).ok());
}

}  // namespace
}  // namespace hbiss::hdfs::testing
