// Tests specific to the local backend and to OpenStore's URI handling. The
// behaviour shared by all backends is in the conformance suite.
#include "store/local_store.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "store/memory_store.h"
#include "util/bytes.h"
#include "util/test_util.h"

namespace hbiss::store {
namespace {

namespace fs = std::filesystem;
using Code = Status::Code;

#define ASSERT_OK(expr)                                       \
  do {                                                        \
    ::hbiss::Status _s = (expr);                              \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s.ToString();   \
  } while (0)

class LocalStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / "hbiss-local-XXXXXX").string();
    ASSERT_NE(::mkdtemp(dir_.data()), nullptr);
  }
  void TearDown() override {
    ::chmod(dir_.c_str(), 0755);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::unique_ptr<LocalStore> MustOpen(const std::string& path) {
    auto s = LocalStore::Open(path, true);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(s).value() : nullptr;
  }
  std::string dir_;
};

TEST_F(LocalStoreTest, ObjectsAreFilesUnderTheRoot) {
  auto s = MustOpen(dir_);
  ASSERT_OK(s->Put("volumes/a/meta", AsBytes("meta")));
  auto w = s->Create("volumes/a/seg/1");
  ASSERT_TRUE(w.ok());
  ASSERT_OK((*w)->Append(AsBytes("segment")));
  ASSERT_OK((*w)->Close());
  std::ifstream f(dir_ + "/volumes/a/seg/1", std::ios::binary);
  std::string content((std::istreambuf_iterator<char>(f)), {});
  EXPECT_EQ(content, "segment");
  EXPECT_EQ(s->PathOf("volumes/a/meta"), dir_ + "/volumes/a/meta");
  EXPECT_EQ(s->root(), dir_);
}

TEST_F(LocalStoreTest, PutReplacesByRenameSoOldReadersSeeOldBytes) {
  auto s = MustOpen(dir_);
  const std::string v1(100000, '1'), v2(50, '2');
  ASSERT_OK(s->Put("ckpt", AsBytes(v1)));
  struct stat before;
  ASSERT_EQ(::stat((dir_ + "/ckpt").c_str(), &before), 0);
  auto r = s->Open("ckpt");
  ASSERT_TRUE(r.ok());
  ASSERT_OK(s->Put("ckpt", AsBytes(v2)));
  struct stat after;
  ASSERT_EQ(::stat((dir_ + "/ckpt").c_str(), &after), 0);
  // A new file took the name (rename), the old one was never rewritten in place.
  EXPECT_NE(before.st_ino, after.st_ino);
  std::string buf(v1.size(), '\0');
  auto n = (*r)->ReadAt(0, std::span(reinterpret_cast<uint8_t*>(buf.data()), buf.size()));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, v1.size());
  EXPECT_TRUE(buf == v1);
  EXPECT_EQ(s->Get("ckpt").value(), v2);
  // No temporary file is left behind.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir_)) {
    ++entries;
    EXPECT_EQ(e.path().filename(), "ckpt");
  }
  EXPECT_EQ(entries, 1);
}

TEST_F(LocalStoreTest, LeftoverTemporaryFilesAreHidden) {
  auto s = MustOpen(dir_);
  ASSERT_OK(s->Put("d/real", AsBytes("r")));
  // What a crash in the middle of Put leaves behind.
  std::ofstream(dir_ + "/d/.hbiss-tmp-999-1") << "half a checkpoint";
  auto l = s->List("d");
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(l->size(), 1u);
  EXPECT_EQ((*l)[0].name, "real");
  // And a Put after it works and does not disturb it.
  ASSERT_OK(s->Put("d/real", AsBytes("r2")));
  EXPECT_EQ(s->Get("d/real").value(), "r2");
  // RemoveTempLeftovers deletes the leftover, and nothing else.
  std::ofstream(dir_ + "/d/.hbiss-other") << "another backend file";
  auto n = s->RemoveTempLeftovers("d");
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 1u);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/d/.hbiss-tmp-999-1"));
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/d/.hbiss-other"));
  EXPECT_EQ(s->Get("d/real").value(), "r2");
  EXPECT_EQ(s->RemoveTempLeftovers("d").value(), 0u);
  EXPECT_EQ(s->RemoveTempLeftovers("missing").value(), 0u);
  EXPECT_TRUE(s->RemoveTempLeftovers("../x").status().IsInvalidArgument());
}

TEST_F(LocalStoreTest, MissingDirectoryIsNotFoundUnlessCreated) {
  const std::string missing = dir_ + "/not/there";
  auto s = LocalStore::Open(missing, false);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kNotFound);
  EXPECT_NE(s.status().message().find(missing), std::string::npos) << s.status().ToString();
  EXPECT_FALSE(fs::exists(missing));
  auto t = OpenStore(missing);
  EXPECT_EQ(t.status().code(), Code::kNotFound);
  auto c = OpenStore(missing, /*create_if_missing=*/true);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(fs::is_directory(missing));
  EXPECT_EQ((*c)->Uri(), "file://" + missing);
}

TEST_F(LocalStoreTest, PathThatIsAFileIsInvalidArgument) {
  std::ofstream(dir_ + "/file") << "x";
  auto s = OpenStore(dir_ + "/file");
  EXPECT_EQ(s.status().code(), Code::kInvalidArgument) << s.status().ToString();
}

TEST_F(LocalStoreTest, UnwritableDirectoryIsAClearIOError) {
  if (::geteuid() != 0) {
    ASSERT_EQ(::chmod(dir_.c_str(), 0555), 0);
    auto s = OpenStore(dir_);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), Code::kIOError);
    EXPECT_NE(s.status().message().find(dir_), std::string::npos);
    EXPECT_NE(s.status().message().find("not writable"), std::string::npos)
        << s.status().ToString();
  }
  // Root may write anywhere its mode bits say no, so also use a directory no
  // one can create files in.
  if (fs::is_directory("/proc/self")) {
    auto s = OpenStore("/proc/self");
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), Code::kIOError) << s.status().ToString();
    EXPECT_NE(s.status().message().find("/proc/self"), std::string::npos);
    EXPECT_NE(s.status().message().find("not writable"), std::string::npos)
        << s.status().ToString();
  }
}

TEST_F(LocalStoreTest, ErrorsNameThePath) {
  auto s = MustOpen(dir_);
  ASSERT_OK(s->Put("file", AsBytes("x")));
  auto w = s->Create("file/child");
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find(dir_ + "/file"), std::string::npos)
      << w.status().ToString();
  ASSERT_OK(s->Put("d/x", AsBytes("x")));
  auto r = s->Open("d");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(dir_ + "/d"), std::string::npos) << r.status().ToString();
  auto g = s->Open("nope");
  EXPECT_EQ(g.status().code(), Code::kNotFound);
  EXPECT_NE(g.status().message().find(dir_ + "/nope"), std::string::npos);
}

TEST_F(LocalStoreTest, LockIsExclusiveAcrossStoresAndProcesses) {
  auto a = MustOpen(dir_);
  auto b = MustOpen(dir_);
  auto la = a->TryLock("vol/lock");
  ASSERT_TRUE(la.ok()) << la.status().ToString();
  auto lb = b->TryLock("vol/lock");
  EXPECT_EQ(lb.status().code(), Code::kBusy);
  // Another process is refused while we hold it...
  auto child_try = [&]() -> int {
    pid_t pid = ::fork();
    if (pid == 0) {
      auto s = LocalStore::Open(dir_, false);
      if (!s.ok()) ::_exit(3);
      auto l = (*s)->TryLock("vol/lock");
      ::_exit(l.ok() ? 0 : l.status().IsBusy() ? 1 : 2);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  EXPECT_EQ(child_try(), 1);
  la->reset();
  // ... and gets it once released.
  EXPECT_EQ(child_try(), 0);
  auto again = b->TryLock("vol/lock");
  EXPECT_TRUE(again.ok()) << again.status().ToString();
}

// kill -9 a process in the middle of a stream of Puts and segment appends:
// the checkpoint is always one whole version, and the segment holds exactly
// a prefix of what was appended that covers everything flushed.
// A local lock dies with its holder, so BreakLock never takes one from a
// live holder, and a killed holder's lock needs no breaking.
TEST_F(LocalStoreTest, BreakLockRefusesALiveHolderAndFreesNothingElse) {
  auto a = MustOpen(dir_);
  auto b = MustOpen(dir_);
  EXPECT_TRUE(b->BreakLock("vol/lock").ok()) << "a free lock";
  auto la = a->TryLock("vol/lock");
  ASSERT_TRUE(la.ok());
  Status s = b->BreakLock("vol/lock");
  EXPECT_EQ(s.code(), Code::kBusy) << s.ToString();
  EXPECT_EQ(b->TryLock("vol/lock").status().code(), Code::kBusy) << "still held by a";
  // A holder killed with SIGKILL: the lock is free at once.
  pid_t pid = ::fork();
  if (pid == 0) {
    auto cs = LocalStore::Open(dir_, false);
    if (!cs.ok()) ::_exit(3);
    auto l = (*cs)->TryLock("vol/other");
    if (!l.ok()) ::_exit(4);
    ::raise(SIGKILL);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_TRUE(b->BreakLock("vol/other").ok());
  EXPECT_TRUE(b->TryLock("vol/other").ok());
  EXPECT_EQ(b->BreakLock("../x").code(), Code::kInvalidArgument);
}

TEST_F(LocalStoreTest, KilledWriterLeavesWholePutsAndSegmentPrefix) {
  auto version = [](int i) {
    return std::string(1000 + (i % 7) * 3000, static_cast<char>('a' + i % 26));
  };
  auto chunk = [](int i) { return std::string(4096, static_cast<char>(i)); };
  int progressed = 0;
  for (int iter = 0; iter < 15; ++iter) {
    const std::string root = dir_ + "/kill" + std::to_string(iter);
    {
      auto s = MustOpen(root);
      ASSERT_OK(s->Put("ckpt", AsBytes(version(0))));
    }
    int pipefd[2];
    ASSERT_EQ(::pipe(pipefd), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(pipefd[0]);
      auto s = LocalStore::Open(root, false);
      if (!s.ok()) ::_exit(2);
      auto w = (*s)->Create("seg");
      if (!w.ok()) ::_exit(2);
      for (int i = 1;; ++i) {
        if (!(*s)->Put("ckpt", AsBytes(version(i))).ok()) ::_exit(3);
        if (!(*w)->Append(AsBytes(chunk(i))).ok() || !(*w)->Flush().ok()) ::_exit(3);
        // Tell the parent how many chunks are flushed.
        if (::write(pipefd[1], &i, sizeof(i)) != sizeof(i)) ::_exit(4);
      }
    }
    ::close(pipefd[1]);
    // Let the child get some way (a varying number of rounds), then kill it
    // at a varying moment.
    int flushed = 0, n = 0;
    const int wait_rounds = 1 + (iter * 13) % 40;
    while (flushed < wait_rounds && ::read(pipefd[0], &n, sizeof(n)) == sizeof(n)) flushed = n;
    ::usleep((iter * 7919) % 3000);
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFSIGNALED(status)) << "child exited early with " << WEXITSTATUS(status);
    while (::read(pipefd[0], &n, sizeof(n)) == sizeof(n)) flushed = n;
    ::close(pipefd[0]);
    if (flushed >= wait_rounds) ++progressed;

    auto s = MustOpen(root);
    auto ckpt_r = s->Get("ckpt");
    ASSERT_TRUE(ckpt_r.ok()) << ckpt_r.status().ToString();
    const std::string& ckpt = *ckpt_r;
    bool whole = false;
    for (int i = 0; i <= flushed + 1 && !whole; ++i) whole = ckpt == version(i);
    EXPECT_TRUE(whole) << "torn checkpoint of " << ckpt.size() << " bytes";
    auto got = s->Get("seg");
    if (got.status().IsNotFound()) {  // killed before it created the segment
      EXPECT_EQ(flushed, 0);
      continue;
    }
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    const std::string& seg = *got;
    EXPECT_GE(seg.size(), static_cast<size_t>(flushed) * 4096);
    std::string expect;
    for (int i = 1; expect.size() < seg.size(); ++i) expect += chunk(i);
    EXPECT_TRUE(seg == expect.substr(0, seg.size()));
    // Only the two objects are visible, whatever temporary file was left.
    auto l = s->List("");
    ASSERT_TRUE(l.ok());
    EXPECT_EQ(l->size(), 2u);
  }
  // The child got somewhere before it was killed (else the test shows nothing).
  EXPECT_EQ(progressed, 15);
}

// Pages of `path` in the page cache, by mincore over a mapping of it.
size_t ResidentPages(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return 0;
  struct stat st;
  ::fstat(fd, &st);
  size_t len = size_t(st.st_size);
  void* m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) return 0;
  size_t page = size_t(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> vec((len + page - 1) / page);
  size_t n = 0;
  if (::mincore(m, len, vec.data()) == 0) {
    for (unsigned char c : vec) n += c & 1;
  }
  ::munmap(m, len);
  return n;
}

TEST_F(LocalStoreTest, DropCacheEvictsSyncedPagesAndKeepsTheBytes) {
  struct statfs fsinfo;
  ASSERT_EQ(::statfs(dir_.c_str(), &fsinfo), 0);
  if (fsinfo.f_type == TMPFS_MAGIC) GTEST_SKIP() << "tmpfs keeps its pages";
  auto s = MustOpen(dir_);
  std::mt19937_64 rng(7);
  std::string data = RandomBytes(rng, 1 << 20);
  auto w = s->Create("seg/1");
  ASSERT_TRUE(w.ok());
  ASSERT_OK((*w)->Append(AsBytes(data)));
  ASSERT_OK((*w)->Close());  // syncs, so the pages are clean
  const std::string path = s->PathOf("seg/1");
  ASSERT_GT(ResidentPages(path), 0u) << "the freshly written file is not cached";
  s->DropCache("seg/1");
  EXPECT_EQ(ResidentPages(path), 0u);
  auto got = s->Get("seg/1");
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(*got == data);
  // A hint on a missing or invalid name is ignored.
  s->DropCache("seg/none");
  s->DropCache("../etc/passwd");
  s->DropCache("");
}

TEST_F(LocalStoreTest, RelativePathResolvesAgainstWorkingDirectory) {
  char old[4096];
  ASSERT_NE(::getcwd(old, sizeof(old)), nullptr);
  ASSERT_EQ(::chdir(dir_.c_str()), 0);
  auto s = OpenStore("rel/store", true);
  ASSERT_EQ(::chdir(old), 0);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->Uri(), "file://" + dir_ + "/rel/store");
  EXPECT_TRUE(fs::is_directory(dir_ + "/rel/store"));
}

TEST_F(LocalStoreTest, FileUrisOpenTheSameDirectory) {
  auto plain = MustOpen(dir_);
  ASSERT_OK(plain->Put("x", AsBytes("shared")));
  for (const std::string& uri : {"file://" + dir_, "file://" + dir_ + "/", "FILE://" + dir_,
                                "file://localhost" + dir_}) {
    auto s = OpenStore(uri);
    ASSERT_TRUE(s.ok()) << uri << ": " << s.status().ToString();
    EXPECT_EQ((*s)->Get("x").value(), "shared") << uri;
    EXPECT_EQ((*s)->Uri(), "file://" + dir_) << uri;
  }
}

TEST_F(LocalStoreTest, UriRoundTripsThroughPercentEncoding) {
  const std::string odd = dir_ + "/with space%and#hash?";
  auto s = OpenStore(odd, true);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_OK((*s)->Put("k", AsBytes("v")));
  const std::string uri = (*s)->Uri();
  EXPECT_EQ(uri.find(' '), std::string::npos) << uri;
  EXPECT_NE(uri.find("%20"), std::string::npos) << uri;
  auto again = OpenStore(uri);
  ASSERT_TRUE(again.ok()) << uri << ": " << again.status().ToString();
  EXPECT_EQ((*again)->Get("k").value(), "v");
  EXPECT_TRUE(fs::exists(odd + "/k"));
}

TEST(OpenStoreTest, BadUrisAreInvalidArgument) {
  for (const std::string& uri :
       {std::string(""), std::string("file:"), std::string("file:relative"),
        std::string("file://"), std::string("file://host/x"), std::string("file://relative"),
        std::string("file:///tmp/x%zz"), std::string("file:///tmp/x%4"),
        std::string("file:///tmp/x?query"), std::string("file:///tmp/x%00y"),
        std::string("bogus://x"), std::string("mem://"), std::string("mem://a/b"),
        std::string("mem://bad name"), std::string("hdfs://127.0.0.1:9000/x"),
        std::string("mem:x"), std::string("a\0b", 3)}) {
    auto s = OpenStore(uri, true);
    ASSERT_FALSE(s.ok()) << "'" << uri << "' was accepted";
    EXPECT_EQ(s.status().code(), Code::kInvalidArgument) << uri << ": " << s.status().ToString();
    EXPECT_FALSE(s.status().message().empty());
  }
  // The unknown-scheme message names the scheme.
  auto h = OpenStore("hdfs://127.0.0.1:9000/x");
  EXPECT_NE(h.status().message().find("'hdfs'"), std::string::npos) << h.status().ToString();
}

TEST(OpenStoreTest, MemUrisShareByName) {
  auto a = OpenStore("mem://open-store-test");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ((*a)->Uri(), "mem://open-store-test");
  ASSERT_OK((*a)->Put("k", AsBytes("v")));
  a->reset();  // contents outlive the Store object
  auto b = OpenStore("mem://open-store-test");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)->Get("k").value(), "v");
  auto other = OpenStore("mem://open-store-test-2");
  ASSERT_TRUE(other.ok());
  EXPECT_EQ((*other)->Get("k").status().code(), Code::kNotFound);
  MemoryStore::Drop("open-store-test");
  auto c = OpenStore("mem://open-store-test");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->Get("k").status().code(), Code::kNotFound);
  // A store opened before the drop keeps the old contents.
  EXPECT_EQ((*b)->Get("k").value(), "v");
}

std::string g_factory_uri;
bool g_factory_create = false;

TEST(OpenStoreTest, RegisteredSchemesGetTheWholeUri) {
  RegisterScheme("TestScheme", [](const std::string& uri, bool create) {
    g_factory_uri = uri;
    g_factory_create = create;
    return Result<std::unique_ptr<Store>>(std::make_unique<MemoryStore>());
  });
  auto s = OpenStore("testscheme://host:1/dir", true);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(g_factory_uri, "testscheme://host:1/dir");
  EXPECT_TRUE(g_factory_create);
  // Built-in schemes cannot be taken over.
  RegisterScheme("mem", [](const std::string&, bool) {
    return Result<std::unique_ptr<Store>>(Status::NotSupported("hijacked"));
  });
  EXPECT_TRUE(OpenStore("mem://still-mine").ok());
  RegisterScheme("mem", nullptr);
  RegisterScheme("testscheme", nullptr);
  EXPECT_EQ(OpenStore("testscheme://host:1/dir").status().code(), Code::kInvalidArgument);
}

TEST(ValidateNameTest, AcceptsAndRejects) {
  for (const char* ok : {"a", "a/b/c", "volumes/vm-1/seg/0000000000000001", "...", ".x", "a.b"}) {
    EXPECT_TRUE(ValidateName(ok).ok()) << ok;
  }
  for (const char* bad : {"", "/", "/a", "a/", "a//b", ".", "..", "a/./b", "x/..", ".hbiss-t"}) {
    Status s = ValidateName(bad);
    EXPECT_TRUE(s.IsInvalidArgument()) << bad;
    EXPECT_NE(s.message().find("invalid store name"), std::string::npos);
  }
  EXPECT_TRUE(ValidateName(std::string(255, 'c')).ok());
  EXPECT_FALSE(ValidateName(std::string(256, 'c')).ok());
  std::string long_name;
  while (long_name.size() < 4096) long_name += "abcdefg/";
  EXPECT_FALSE(ValidateName(long_name.substr(0, 4097)).ok());
}

}  // namespace
}  // namespace hbiss::store
