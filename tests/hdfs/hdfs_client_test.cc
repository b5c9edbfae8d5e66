// hbiss's native HDFS client against a real cluster: round trips of every interesting size in
// both directions with Java's FsShell, random preads, hflush visibility to a Java reader,
// listing pagination, rename-overwrite, lease recovery of an abandoned writer, errors.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "hdfs/client.h"
#include "tests/hdfs/cluster_env.h"

namespace hbiss::hdfs::testing {
namespace {

constexpr uint64_t kBlock = 1 << 20;

std::string ReadLocal(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void WriteLocal(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), std::streamsize(data.size()));
}

// A local temporary directory, removed when the test ends however it ends.
struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/hbiss-hdfs-test-XXXXXX";
    char* d = ::mkdtemp(tmpl);
    EXPECT_NE(d, nullptr);
    path = d == nullptr ? "" : d;
  }
  ~TempDir() {
    if (!path.empty()) Shell("rm -rf '" + path + "'");
  }
  std::string path;
};

const std::vector<size_t>& Sizes() {
  static const std::vector<size_t> s = {0,      1,          511,         512,
                                        513,    kBlock,     kBlock + 1,  5 * kBlock + 12345};
  return s;
}

TEST(HdfsClientTest, RoundTripAllSizesBothWaysWithJava) {
  HBISS_NEED_CLUSTER(true);
  auto c = ConnectClient();
  ASSERT_NE(c, nullptr);
  std::string dir = UniqueDir("roundtrip");
  ASSERT_TRUE(c->Mkdirs(dir + "/hbiss").ok());
  ASSERT_TRUE(c->Mkdirs(dir + "/java").ok());
  std::mt19937_64 rng(1);
  std::map<std::string, std::string> files;
  TempDir tmp;
  ASSERT_FALSE(tmp.path.empty());
  const std::string& local = tmp.path;
  std::string put_args;
  for (size_t size : Sizes()) {
    std::string name = "f" + std::to_string(size);
    files[name] = RandomBytes(rng, size);
    // Written by hbiss, in pieces that do not line up with chunks or packets.
    ASSERT_TRUE(WriteAll(*c, dir + "/hbiss/" + name, files[name], kBlock, 77777).ok()) << name;
    WriteLocal(local + "/" + name, files[name]);
    put_args += " '" + local + "/" + name + "'";
  }
  // Java reads everything hbiss wrote (one JVM for all files) and writes its own copies.
  std::string uri = Env("HBISS_HDFS_URI");
  ASSERT_EQ(Cluster("dfs", "-get '" + uri + dir + "/hbiss' '" + local + "/by_java'"), 0);
  ASSERT_EQ(Cluster("dfs", "-D dfs.blocksize=" + std::to_string(kBlock) + " -put" + put_args +
                               " '" + uri + dir + "/java/'"),
            0);
  for (const auto& [name, data] : files) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(ReadLocal(local + "/by_java/" + name) == data) << "Java read of hbiss's file";
    auto ours = ReadAll(*c, dir + "/hbiss/" + name);
    ASSERT_TRUE(ours.ok()) << ours.status().ToString();
    EXPECT_TRUE(*ours == data);
    auto theirs = ReadAll(*c, dir + "/java/" + name);
    ASSERT_TRUE(theirs.ok()) << theirs.status().ToString();
    EXPECT_TRUE(*theirs == data) << "hbiss read of Java's file";
    auto st = c->GetFileInfo(dir + "/hbiss/" + name);
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st->length, data.size());
    EXPECT_FALSE(st->is_dir);
    EXPECT_EQ(st->block_size, kBlock);
  }
  EXPECT_TRUE(c->Delete(dir, true).ok());
}

TEST(HdfsClientTest, RandomPreadsAcrossBlocks) {
  HBISS_NEED_CLUSTER(false);
  auto c = ConnectClient();
  ASSERT_NE(c, nullptr);
  std::string path = UniqueDir("pread") + "/f";
  std::mt19937_64 rng(2);
  std::string data = RandomBytes(rng, 3 * kBlock + 777);
  ASSERT_TRUE(WriteAll(*c, path, data, kBlock).ok());
  auto r = c->Open(path);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->length(), data.size());
  for (int i = 0; i < 60; i++) {
    uint64_t off = rng() % (data.size() + 10);
    size_t n = 1 + rng() % (2 * kBlock);
    std::string buf(n, '\0');
    auto got = (*r)->PRead(off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(buf.data()), n));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    size_t expect = off >= data.size() ? 0 : std::min<size_t>(n, data.size() - off);
    ASSERT_EQ(*got, expect) << off << "+" << n;
    if (expect > 0) {
      ASSERT_TRUE(buf.substr(0, expect) == data.substr(off, expect));
    }
  }
  EXPECT_TRUE(c->Delete(path, false).ok());
}

TEST(HdfsClientTest, HflushIsVisibleToJavaReaderBeforeClose) {
  HBISS_NEED_CLUSTER(true);
  auto c = ConnectClient();
  ASSERT_NE(c, nullptr);
  std::string path = UniqueDir("hflush") + "/f";
  std::mt19937_64 rng(3);
  std::string a = RandomBytes(rng, 10000);  // ends mid-chunk
  CreateOptions o;
  o.block_size = kBlock;
  auto w = c->Create(path, o);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_TRUE((*w)->Write(a).ok());
  ASSERT_TRUE((*w)->Hflush().ok());
  std::string uri = Env("HBISS_HDFS_URI");
  std::string seen;
  ASSERT_EQ(Cluster("dfs", "-cat '" + uri + path + "' 2>/dev/null", &seen), 0);
  EXPECT_EQ(seen.size(), a.size());
  EXPECT_TRUE(seen == a) << "Java saw different bytes after hflush";
  // Our own reader sees them too (the length comes from a DataNode).
  auto mine = ReadAll(*c, path);
  ASSERT_TRUE(mine.ok()) << mine.status().ToString();
  EXPECT_TRUE(*mine == a);
  // More bytes, re-sending the partial chunk, then hsync.
  std::string b = RandomBytes(rng, kBlock + 3000);
  ASSERT_TRUE((*w)->Write(b).ok());
  ASSERT_TRUE((*w)->Hsync().ok());
  ASSERT_EQ(Cluster("dfs", "-cat '" + uri + path + "' 2>/dev/null", &seen), 0);
  EXPECT_TRUE(seen == a + b) << "Java saw " << seen.size() << " bytes after hsync";
  // hsync records the length in the NameNode.
  auto st = c->GetFileInfo(path);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->length, a.size() + b.size());
  ASSERT_TRUE((*w)->Close().ok());
  auto all = ReadAll(*c, path);
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(*all == a + b);
}

TEST(HdfsClientTest, ManySmallHflushes) {
  HBISS_NEED_CLUSTER(false);
  auto c = ConnectClient();
  ASSERT_NE(c, nullptr);
  std::string path = UniqueDir("smallflush") + "/f";
  std::mt19937_64 rng(4);
  CreateOptions o;
  o.block_size = 64 * 1024;  // flushes straddle block ends too
  auto w = c->Create(path, o);
  ASSERT_TRUE(w.ok());
  std::string all;
  for (int i = 0; i < 200; i++) {
    std::string piece = RandomBytes(rng, 1 + rng() % 1500);
    all += piece;
    ASSERT_TRUE((*w)->Write(piece).ok());
    ASSERT_TRUE((i % 3 == 0 ? (*w)->Hsync() : (*w)->Hflush()).ok()) << i;
  }
  ASSERT_TRUE((*w)->Close().ok());
  auto got = ReadAll(*c, path);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(*got == all);
}

TEST(HdfsClientTest, ListingPaginatesAndNamespaceOps) {
  HBISS_NEED_CLUSTER(false);
  auto c = ConnectClient();
  ASSERT_NE(c, nullptr);
  std::string dir = UniqueDir("ns");
  // More entries than one getListing page (dfs.ls.limit = 1000).
  const int kN = 1050;
  for (int i = 0; i < kN; i++) {
    ASSERT_TRUE(c->Mkdirs(fmt::format("{}/d{:05d}", dir, i)).ok());
  }
  auto l = c->List(dir);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  ASSERT_EQ(l->size(), size_t(kN));
  for (int i = 0; i < kN; i++) {
    EXPECT_EQ((*l)[size_t(i)].name, fmt::format("d{:05d}", i));
    EXPECT_TRUE((*l)[size_t(i)].is_dir);
  }
  // Missing paths.
  EXPECT_TRUE(c->GetFileInfo(dir + "/nope").status().IsNotFound());
  EXPECT_TRUE(c->List(dir + "/nope").status().IsNotFound());
  EXPECT_TRUE(c->Open(dir + "/nope").status().IsNotFound());
  EXPECT_FALSE(c->Delete(dir + "/nope", false).value());
  // rename2: refuses to replace without overwrite, replaces atomically with it.
  ASSERT_TRUE(WriteAll(*c, dir + "/a", "old", kBlock).ok());
  ASSERT_TRUE(WriteAll(*c, dir + "/b", "new!", kBlock).ok());
  Status st = c->Rename(dir + "/b", dir + "/a", false);
  EXPECT_TRUE(st.IsAlreadyExists()) << st.ToString();
  ASSERT_TRUE(c->Rename(dir + "/b", dir + "/a", true).ok());
  EXPECT_EQ(ReadAll(*c, dir + "/a").value(), "new!");
  EXPECT_TRUE(c->GetFileInfo(dir + "/b").status().IsNotFound());
  // create refuses an existing file unless overwrite.
  CreateOptions o;
  EXPECT_TRUE(c->Create(dir + "/a", o).status().IsAlreadyExists());
  // Error messages name the Java exception.
  auto under_file = c->Create(dir + "/a/child", o);
  ASSERT_FALSE(under_file.ok());
  EXPECT_NE(under_file.status().message().find("Exception"), std::string::npos)
      << under_file.status().ToString();
  EXPECT_TRUE(c->Delete(dir, true).value());
  EXPECT_TRUE(c->GetFileInfo(dir).status().IsNotFound());
}

// A reader opened before a rename replaced its file must not read the new file's blocks once
// the old ones are gone: it fails with NotFound, which HdfsStore::Get answers by reading the
// new file from the start (the store conformance test races Put against Get).
TEST(HdfsClientTest, ReaderOfAReplacedFileFailsWithNotFound) {
  HBISS_NEED_CLUSTER(true);
  auto c = ConnectClient();
  ASSERT_NE(c, nullptr);
  std::string dir = UniqueDir("replaced");
  std::mt19937_64 rng(7);
  const std::string old_bytes = RandomBytes(rng, 2 * kBlock + 100);
  const std::string new_bytes = RandomBytes(rng, 3 * kBlock);
  ASSERT_TRUE(WriteAll(*c, dir + "/f", old_bytes, kBlock).ok());
  ASSERT_TRUE(WriteAll(*c, dir + "/g", new_bytes, kBlock).ok());
  auto r = c->Open(dir + "/f");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::vector<uint64_t> old_ids;
  for (const auto& b : (*r)->blocks()) old_ids.push_back(b.b().block_id());
  ASSERT_EQ(old_ids.size(), 3u);
  ASSERT_TRUE(c->Rename(dir + "/g", dir + "/f", true).ok());
  // The NameNode tells the DataNodes to delete the old replicas on their next heartbeats.
  const std::string cluster_dir = Env("HBISS_HDFS_CLUSTER_DIR");
  bool gone = false;
  for (int i = 0; i < 300 && !gone; i++) {
    std::string found;
    std::string cmd = fmt::format("find '{}' -type f \\( -name 'blk_{}' -o -name 'blk_{}' -o "
                                  "-name 'blk_{}' \\)",
                                  cluster_dir, old_ids[0], old_ids[1], old_ids[2]);
    ASSERT_EQ(Shell(cmd, &found), 0);
    gone = found.empty();
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(gone) << "the replaced file's replicas were not deleted within 30 s";
  std::string out(kBlock, '\0');
  auto n = (*r)->PRead(kBlock, std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()),
                                                   out.size()));
  ASSERT_FALSE(n.ok()) << "read " << *n << " bytes of a deleted block"
                       << (out == new_bytes.substr(kBlock, kBlock) ? " (the new file's)" : "");
  EXPECT_TRUE(n.status().IsNotFound()) << n.status().ToString();
  // A new reader sees the new file whole.
  EXPECT_TRUE(ReadAll(*c, dir + "/f").value() == new_bytes);
  EXPECT_TRUE(c->Delete(dir, true).value());
}

TEST(HdfsClientTest, RecoverLeaseOfAbandonedWriterKeepsFlushedBytes) {
  HBISS_NEED_CLUSTER(false);
  std::string path = UniqueDir("lease") + "/f";
  std::mt19937_64 rng(5);
  std::string a = RandomBytes(rng, 3000);
  auto other = ConnectClient();
  ASSERT_NE(other, nullptr);
  {
    auto c = ConnectClient();
    ASSERT_NE(c, nullptr);
    auto w = c->Create(path, CreateOptions{});
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Write(a).ok());
    ASSERT_TRUE((*w)->Hflush().ok());
    ASSERT_TRUE((*w)->Write("unflushed tail").ok());
    // Another client cannot create it, nor lock it, while the writer lives...
    auto steal = other->Create(path, CreateOptions{});
    EXPECT_TRUE(steal.status().IsBusy()) << steal.status().ToString();
    auto lock = other->TryLockFile(path);
    EXPECT_TRUE(lock.status().IsBusy()) << lock.status().ToString();
    // ...and the writer goes away without closing (as if the process crashed).
  }
  Status st = other->RecoverLeaseAndWait(path, 120000);
  ASSERT_TRUE(st.ok()) << st.ToString();
  auto r = other->Open(path);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE((*r)->under_construction());
  auto got = ReadAll(*other, path);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->substr(0, a.size()) == a);
  EXPECT_GE(got->size(), a.size());
}

TEST(HdfsClientTest, FileLockIsExclusiveAcrossClients) {
  HBISS_NEED_CLUSTER(false);
  auto a = ConnectClient();
  auto b = ConnectClient();
  ASSERT_TRUE(a && b);
  std::string path = UniqueDir("lock") + "/lock";
  auto la = a->TryLockFile(path);
  ASSERT_TRUE(la.ok()) << la.status().ToString();
  auto lb = b->TryLockFile(path);
  EXPECT_TRUE(lb.status().IsBusy()) << lb.status().ToString();
  EXPECT_TRUE(a->TryLockFile(path).status().IsBusy()) << "a lock is not reentrant";
  // A plain create of the held file fails too.
  EXPECT_TRUE(b->Create(path, CreateOptions{}).status().IsBusy());
  ASSERT_TRUE((*la)->Release().ok());
  lb = b->TryLockFile(path);
  ASSERT_TRUE(lb.ok()) << "a released lock is free: " << lb.status().ToString();
  EXPECT_TRUE(a->TryLockFile(path).status().IsBusy());
  lb->reset();
  la = a->TryLockFile(path);
  EXPECT_TRUE(la.ok()) << la.status().ToString();
}

TEST(HdfsClientTest, ServerDefaultsAndUnreachableNameNode) {
  HBISS_NEED_CLUSTER(false);
  auto c = ConnectClient();
  ASSERT_NE(c, nullptr);
  auto d = c->GetServerDefaults();
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->bytes_per_checksum(), 512u);
  EXPECT_EQ(d->checksum_type(), pb::CHECKSUM_CRC32C);
  // A port nobody listens on: a clear, retryable error within the retry deadline.
  ClientOptions o;
  o.rpc_retry_deadline_ms = 1000;
  auto bad = Client::Connect("127.0.0.1", 1, o);
  ASSERT_TRUE(bad.ok());
  auto st = (*bad)->GetFileInfo("/");
  EXPECT_TRUE(st.status().IsIOError()) << st.status().ToString();
  EXPECT_NE(st.status().message().find("127.0.0.1:1"), std::string::npos);
}

}  // namespace
}  // namespace hbiss::hdfs::testing
