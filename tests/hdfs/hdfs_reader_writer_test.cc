// A reader in another process and a live writer of the same HDFS file, through the store
// (hdfs/hdfs_store.h): the read-only open that `hbiss export` does must leave the writer
// writing (issue #9: it used to recover the writer's lease, and the server's next write
// failed for good), while a takeover open (a writable volume open) must fence it.
// The reader is a separate process (hdfs_store_read) because HDFS leases belong to clients
// and the store recognises its own process's writers.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fstream>
#include <iterator>
#include <random>
#include <thread>

#include "hdfs/hdfs_store.h"
#include "tests/hdfs/cluster_env.h"
#include "tests/hdfs/pattern.h"

namespace hbiss::hdfs::testing {
namespace {

std::span<const uint8_t> Bytes(const std::string& s) {
  return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// Runs hdfs_store_read MODE on `name`; returns its exit status and what it copied.
int ReadInOtherProcess(const std::string& mode, const std::string& uri, const std::string& name,
                       std::string* data, std::string* output) {
  std::string out_file = fmt::format("/tmp/hbiss-store-read-{}-{}", ::getpid(), name.size());
  int rc = Shell(fmt::format("'{}' {} '{}' '{}' '{}' 2>&1", HBISS_STORE_READ, mode, uri, name,
                             out_file),
                 output);
  std::ifstream in(out_file, std::ios::binary);
  data->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  ::unlink(out_file.c_str());
  return rc;
}

struct StoreDir {
  std::string uri;
  std::unique_ptr<store::Store> store;
  std::string path;
  ~StoreDir() {
    store.reset();
    auto c = ConnectClient();
    if (c != nullptr) (void)c->Delete(path, true);
  }
};

void OpenStoreDir(const std::string& what, StoreDir* d) {
  d->path = UniqueDir(what);
  d->uri = Env("HBISS_HDFS_URI") + d->path;
  auto s = OpenHdfsStore(d->uri, true);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  d->store = std::move(s).value();
}

TEST(HdfsReaderWriterTest, ReadOnlyOpenInAnotherProcessLeavesTheWriterWriting) {
  HBISS_NEED_CLUSTER(false);
  StoreDir d;
  ASSERT_NO_FATAL_FAILURE(OpenStoreDir("ro-open", &d));
  std::mt19937_64 rng(91);
  // More than a block (the test cluster's is 1 MiB), so the reader also meets finished blocks.
  const std::string a = RandomBytes(rng, (1 << 20) + 300000);
  auto w = d.store->Create("seg/1");
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_TRUE((*w)->Append(Bytes(a)).ok());
  ASSERT_TRUE((*w)->Flush().ok());
  std::string expect = a;
  for (int round = 0; round < 3; round++) {
    std::string got, output;
    ASSERT_EQ(ReadInOtherProcess("open", d.uri, "seg/1", &got, &output), 0) << output;
    EXPECT_EQ(got.size(), expect.size()) << "round " << round << ": every hflushed byte";
    EXPECT_TRUE(got == expect) << "round " << round;
    // The writer is undisturbed: the next append and hflush succeed.
    const std::string more = RandomBytes(rng, 5000 + 1000 * round);
    Status st = (*w)->Append(Bytes(more));
    if (st.ok()) st = (*w)->Flush();
    ASSERT_TRUE(st.ok()) << "round " << round << ": the writer failed after a read-only open "
                         << "in another process: " << st.ToString();
    expect += more;
  }
  ASSERT_TRUE((*w)->Close().ok());
  auto all = d.store->Get("seg/1");
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_TRUE(*all == expect);
}

TEST(HdfsReaderWriterTest, TakeoverOpenInAnotherProcessFencesTheWriter) {
  HBISS_NEED_CLUSTER(false);
  StoreDir d;
  ASSERT_NO_FATAL_FAILURE(OpenStoreDir("takeover-open", &d));
  std::mt19937_64 rng(92);
  const std::string a = RandomBytes(rng, 200000);
  auto w = d.store->Create("seg/1");
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_TRUE((*w)->Append(Bytes(a)).ok());
  ASSERT_TRUE((*w)->Flush().ok());
  std::string got, output;
  ASSERT_EQ(ReadInOtherProcess("takeover", d.uri, "seg/1", &got, &output), 0) << output;
  EXPECT_TRUE(got == a) << "the takeover reads every hflushed byte (" << got.size() << " of "
                        << a.size() << ")";
  // The file is closed now: the old writer can add nothing.
  Status st = (*w)->Append(Bytes(RandomBytes(rng, 1000)));
  if (st.ok()) st = (*w)->Flush();
  EXPECT_FALSE(st.ok()) << "the old writer still writes after a takeover";
  w->reset();
  auto all = d.store->Get("seg/1");
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_TRUE(*all == a);
}

// The last "flushed N" line of a writer's output file, 0 when none.
uint64_t LastFlushed(const std::string& file) {
  std::ifstream in(file);
  std::string word;
  uint64_t n = 0, last = 0;
  while (in >> word) {
    if (word == "flushed" && in >> n) last = n;
  }
  return last;
}

// A writer killed mid-write leaves its replicas at different lengths (the last packets
// reached some DataNodes only). A reader took the length of whichever replica answered
// first, so two opens of the segment could disagree, and a volume that parsed records from
// one length read their data through a reader of a shorter one: "Corruption: ... segment
// ends at X, before the N bytes at X" (vm_host_crash in CI, a reader of a dead owner's
// log). Every open must now see one length, served by every replica, that holds every
// hflushed byte.
TEST(HdfsReaderWriterTest, AWriterKilledMidWriteLeavesOneLengthThatEveryOpenReads) {
  HBISS_NEED_CLUSTER(false);
  StoreDir d;
  ASSERT_NO_FATAL_FAILURE(OpenStoreDir("killed-writer", &d));
  std::mt19937_64 rng(93);
  for (int round = 0; round < 3; round++) {
    const std::string name = fmt::format("seg/{}", round + 1);
    const std::string out_file = fmt::format("/tmp/hbiss-killed-writer-{}-{}", ::getpid(), round);
    std::string pid;
    ASSERT_EQ(Shell(fmt::format("'{}' write '{}' '{}' > '{}' 2>&1 & echo $!", HBISS_STORE_READ,
                                d.uri, name, out_file),
                    &pid),
              0);
    // Several blocks (the test cluster's are 1 MiB), then a kill at a random moment.
    const uint64_t want = (4 + rng() % 4) << 20;
    for (int i = 0; i < 600 && LastFlushed(out_file) < want; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 200));
    ASSERT_EQ(Shell("kill -9 " + pid), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const uint64_t flushed = LastFlushed(out_file);
    ::unlink(out_file.c_str());
    ASSERT_GE(flushed, want) << "round " << round << ": the writer did not get going";
    std::string first;
    for (int open = 0; open < 6; open++) {
      std::string got, output;
      ASSERT_EQ(ReadInOtherProcess("open", d.uri, name, &got, &output), 0)
          << "round " << round << " open " << open << ": " << output;
      ASSERT_GE(got.size(), flushed) << "round " << round << ": every hflushed byte";
      if (open == 0) first = got;
      ASSERT_EQ(got.size(), first.size()) << "round " << round << " open " << open
                                          << ": two opens of a dead writer's file disagree";
      for (size_t i = 0; i < got.size(); i++) {
        ASSERT_EQ(uint8_t(got[i]), PatternByte(i)) << "round " << round << " byte " << i;
      }
    }
  }
}

}  // namespace
}  // namespace hbiss::hdfs::testing
