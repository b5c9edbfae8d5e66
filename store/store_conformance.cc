#include "store/store_conformance.h"
#include "util/bytes.h"
#include "util/test_util.h"

#include <algorithm>
#include <atomic>
#include <random>
#include <mutex>
#include <thread>
#include <vector>

namespace hbiss::store::testing {

std::string ConformanceParamName(const ::testing::TestParamInfo<ConformanceParam>& info) {
  return info.param.name;
}

void StoreConformanceTest::SetUp() {
  auto r = GetParam().make();
  ASSERT_TRUE(r.ok()) << "cannot make a " << GetParam().name << " store: " << r.status().ToString();
  store_ = std::move(r).value();
  ASSERT_NE(store_, nullptr);
}

void StoreConformanceTest::TearDown() { store_.reset(); }

namespace {

using Code = Status::Code;

// Creates `name` and appends `data` in random-sized pieces, then closes it.
void WriteObject(Store& store, const std::string& name, const std::string& data,
                 std::mt19937_64& rng, size_t max_piece = 70000) {
  auto w = store.Create(name);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  size_t off = 0;
  while (off < data.size()) {
    size_t n = std::min<size_t>(data.size() - off, 1 + rng() % max_piece);
    ASSERT_TRUE((*w)->Append(AsBytes(data).subspan(off, n)).ok());
    off += n;
    ASSERT_EQ((*w)->Size(), off);
  }
  ASSERT_TRUE((*w)->Close().ok());
}

// Reads [offset, offset + n) with one ReadAt, which must return all of it
// (short reads are allowed only at the end of the object).
std::string ReadRange(SegmentReader& r, uint64_t offset, size_t n) {
  std::string out(n, '\0');
  auto got = r.ReadAt(offset, std::span(reinterpret_cast<uint8_t*>(out.data()), n));
  EXPECT_TRUE(got.ok()) << got.status().ToString();
  if (!got.ok()) return "";
  out.resize(*got);
  return out;
}

std::vector<std::string> Names(const std::vector<ObjectInfo>& v) {
  std::vector<std::string> out;
  for (const auto& e : v) out.push_back(e.name);
  return out;
}

#define ASSERT_OK(expr)                                  \
  do {                                                   \
    ::hbiss::Status _s = (expr);                         \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s.ToString(); \
  } while (0)

TEST_P(StoreConformanceTest, CreateAppendReadBackAtRandomOffsets) {
  std::mt19937_64 rng(1);
  const std::string data = RandomBytes(rng, 300000);
  WriteObject(store(), "vol/seg/1", data, rng);
  auto size = store().Stat("vol/seg/1");
  ASSERT_TRUE(size.ok()) << size.status().ToString();
  EXPECT_EQ(*size, data.size());
  auto r = store().Open("vol/seg/1");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->Size(), data.size());
  for (int i = 0; i < 300; ++i) {
    uint64_t off = rng() % data.size();
    size_t n = std::min<size_t>(data.size() - off, rng() % 20000);
    ASSERT_EQ(ReadRange(**r, off, n), data.substr(off, n)) << "offset " << off << " len " << n;
  }
  EXPECT_EQ(ReadRange(**r, 0, data.size()), data);
}

TEST_P(StoreConformanceTest, ShortReadAtEndAndNothingPastIt) {
  std::mt19937_64 rng(2);
  const std::string data = RandomBytes(rng, 1000);
  WriteObject(store(), "obj", data, rng);
  auto r = store().Open("obj");
  ASSERT_TRUE(r.ok());
  std::vector<uint8_t> buf(100);
  auto n = (*r)->ReadAt(990, buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 10u);
  EXPECT_EQ(std::string(buf.begin(), buf.begin() + 10), data.substr(990));
  n = (*r)->ReadAt(1000, buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  n = (*r)->ReadAt(5000, buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  n = (*r)->ReadAt(~0ull - 5, buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  n = (*r)->ReadAt(3, std::span<uint8_t>());
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
}

TEST_P(StoreConformanceTest, EmptyObject) {
  auto w = store().Create("empty");
  ASSERT_TRUE(w.ok());
  EXPECT_EQ((*w)->Size(), 0u);
  ASSERT_OK((*w)->Close());
  auto r = store().Open("empty");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->Size(), 0u);
  std::vector<uint8_t> buf(10);
  auto n = (*r)->ReadAt(0, buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  auto g = store().Get("empty");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(*g, "");
  auto s = store().Stat("empty");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, 0u);
}

TEST_P(StoreConformanceTest, CreateExistingIsAlreadyExistsAndKeepsContent) {
  std::mt19937_64 rng(3);
  WriteObject(store(), "d/x", "original", rng);
  auto w = store().Create("d/x");
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), Code::kAlreadyExists) << w.status().ToString();
  auto g = store().Get("d/x");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(*g, "original");
  // Over a Put object too.
  ASSERT_OK(store().Put("d/p", AsBytes("put")));
  w = store().Create("d/p");
  EXPECT_EQ(w.status().code(), Code::kAlreadyExists);
  EXPECT_EQ(store().Get("d/p").value(), "put");
}

TEST_P(StoreConformanceTest, MissingObjectsAreNotFound) {
  for (const std::string name : {"nothing", "no/such/dir/obj"}) {
    EXPECT_EQ(store().Open(name).status().code(), Code::kNotFound) << name;
    EXPECT_EQ(store().Stat(name).status().code(), Code::kNotFound) << name;
    EXPECT_EQ(store().Delete(name).code(), Code::kNotFound) << name;
    EXPECT_EQ(store().Get(name).status().code(), Code::kNotFound) << name;
  }
  // A missing object inside an existing directory.
  ASSERT_OK(store().Put("dir/present", AsBytes("x")));
  EXPECT_EQ(store().Open("dir/absent").status().code(), Code::kNotFound);
  EXPECT_EQ(store().Stat("dir/absent").status().code(), Code::kNotFound);
  EXPECT_EQ(store().Delete("dir/absent").code(), Code::kNotFound);
  // A name below an object is not there either.
  EXPECT_FALSE(store().Open("dir/present/below").ok());
}

TEST_P(StoreConformanceTest, PutReplacesAndGetRoundTrips) {
  std::mt19937_64 rng(4);
  const std::string v1 = RandomBytes(rng, 5000);
  const std::string v2 = RandomBytes(rng, 123);
  ASSERT_OK(store().Put("meta/ckpt", AsBytes(v1)));
  EXPECT_EQ(store().Get("meta/ckpt").value(), v1);
  EXPECT_EQ(store().Stat("meta/ckpt").value(), v1.size());
  ASSERT_OK(store().Put("meta/ckpt", AsBytes(v2)));
  EXPECT_EQ(store().Get("meta/ckpt").value(), v2);
  EXPECT_EQ(store().Stat("meta/ckpt").value(), v2.size());
  ASSERT_OK(store().Put("meta/ckpt", AsBytes("")));
  EXPECT_EQ(store().Get("meta/ckpt").value(), "");
  // Replacing a segment written by a SegmentWriter works too.
  WriteObject(store(), "meta/seg", v1, rng);
  ASSERT_OK(store().Put("meta/seg", AsBytes(v2)));
  EXPECT_EQ(store().Get("meta/seg").value(), v2);
  // The listing holds exactly the two objects: no leftovers of the replaces.
  auto l = store().List("meta");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(Names(*l), (std::vector<std::string>{"ckpt", "seg"}));
}

TEST_P(StoreConformanceTest, GetEnforcesMaxSize) {
  ASSERT_OK(store().Put("big", AsBytes(std::string(1000, 'z'))));
  auto g = store().Get("big", 999);
  EXPECT_EQ(g.status().code(), Code::kInvalidArgument);
  g = store().Get("big", 1000);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(*g, std::string(1000, 'z'));
}

TEST_P(StoreConformanceTest, PutIsAtomicForConcurrentReaders) {
  const std::string a(64 << 10, 'a');
  const std::string b(100 << 10, 'b');
  ASSERT_OK(store().Put("atomic", AsBytes(a)));
  std::atomic<bool> stop{false};
  std::atomic<int> torn{0};
  std::atomic<int> reads{0};
  std::mutex mu;
  std::string first_bad;  // what the first bad Get returned
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        auto g = store().Get("atomic");
        if (!g.ok() || (*g != a && *g != b)) {
          if (torn++ == 0) {
            std::lock_guard<std::mutex> l(mu);
            first_bad = g.ok() ? "a " + std::to_string(g->size()) + "-byte mix"
                               : g.status().ToString();
          }
        }
        ++reads;
      }
    });
  }
  for (int i = 0; i < 40; ++i) {
    ASSERT_OK(store().Put("atomic", AsBytes(i % 2 ? a : b)));
  }
  // Make sure the readers got to run even on a slow machine.
  while (reads.load() < 20) std::this_thread::yield();
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(torn.load(), 0) << "the first: " << first_bad;
}

TEST_P(StoreConformanceTest, ListIsSortedWithDirsAndSizes) {
  std::mt19937_64 rng(5);
  WriteObject(store(), "d/b", std::string(7, 'b'), rng);
  ASSERT_OK(store().Put("d/a", AsBytes(std::string(3, 'a'))));
  ASSERT_OK(store().Put("d/sub/x", AsBytes("xx")));
  WriteObject(store(), "d/c", "", rng);
  ASSERT_OK(store().Put("d/Z", AsBytes("Z")));
  ASSERT_OK(store().Put("dd/other", AsBytes("o")));
  auto l = store().List("d");
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  ASSERT_EQ(Names(*l), (std::vector<std::string>{"Z", "a", "b", "c", "sub"}));
  const auto& v = *l;
  EXPECT_FALSE(v[0].is_dir);
  EXPECT_EQ(v[0].size, 1u);
  EXPECT_EQ(v[1].size, 3u);
  EXPECT_EQ(v[2].size, 7u);
  EXPECT_EQ(v[3].size, 0u);
  EXPECT_FALSE(v[3].is_dir);
  EXPECT_TRUE(v[4].is_dir);
  auto root = store().List("");
  ASSERT_TRUE(root.ok()) << root.status().ToString();
  ASSERT_EQ(Names(*root), (std::vector<std::string>{"d", "dd"}));
  EXPECT_TRUE((*root)[0].is_dir);
  auto sub = store().List("d/sub");
  ASSERT_TRUE(sub.ok());
  ASSERT_EQ(Names(*sub), (std::vector<std::string>{"x"}));
  EXPECT_EQ((*sub)[0].size, 2u);
  EXPECT_EQ(store().List("missing").status().code(), Code::kNotFound);
  EXPECT_EQ(store().List("d/missing").status().code(), Code::kNotFound);
  EXPECT_FALSE(store().List("d/a").ok());  // an object, not a directory
  // A directory stays (empty) after its last object is deleted.
  ASSERT_OK(store().Delete("d/sub/x"));
  sub = store().List("d/sub");
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  EXPECT_TRUE(sub->empty());
}

TEST_P(StoreConformanceTest, ListSeesGrowingSegmentAfterFlush) {
  auto w = store().Create("g/seg");
  ASSERT_TRUE(w.ok());
  ASSERT_OK((*w)->Append(AsBytes(std::string(4096, 'q'))));
  ASSERT_OK((*w)->Flush());
  auto l = store().List("g");
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(Names(*l), (std::vector<std::string>{"seg"}));
  ASSERT_OK((*w)->Close());
  l = store().List("g");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ((*l)[0].size, 4096u);
}

TEST_P(StoreConformanceTest, DeleteAndDeleteDir) {
  std::mt19937_64 rng(6);
  WriteObject(store(), "v/seg/1", "one", rng);
  WriteObject(store(), "v/seg/2", "two", rng);
  ASSERT_OK(store().Put("v/meta", AsBytes("m")));
  ASSERT_OK(store().Put("vv/keep", AsBytes("k")));
  ASSERT_OK(store().Put("v2/keep", AsBytes("k")));

  ASSERT_OK(store().Delete("v/seg/1"));
  EXPECT_EQ(store().Open("v/seg/1").status().code(), Code::kNotFound);
  EXPECT_EQ(store().Delete("v/seg/1").code(), Code::kNotFound);
  EXPECT_EQ(Names(store().List("v/seg").value()), (std::vector<std::string>{"2"}));
  // The name can be created again.
  WriteObject(store(), "v/seg/1", "again", rng);
  EXPECT_EQ(store().Get("v/seg/1").value(), "again");

  ASSERT_OK(store().DeleteDir("v"));
  EXPECT_EQ(store().List("v").status().code(), Code::kNotFound);
  EXPECT_EQ(store().Stat("v/meta").status().code(), Code::kNotFound);
  EXPECT_EQ(store().Open("v/seg/2").status().code(), Code::kNotFound);
  // Siblings sharing the prefix are untouched.
  EXPECT_EQ(store().Get("vv/keep").value(), "k");
  EXPECT_EQ(store().Get("v2/keep").value(), "k");
  EXPECT_EQ(Names(store().List("").value()), (std::vector<std::string>{"v2", "vv"}));
  // Deleting a missing directory is fine.
  ASSERT_OK(store().DeleteDir("v"));
  ASSERT_OK(store().DeleteDir("never/was"));
  // And the directory can be used again.
  ASSERT_OK(store().Put("v/meta", AsBytes("new")));
  EXPECT_EQ(store().Get("v/meta").value(), "new");
}

TEST_P(StoreConformanceTest, RenameDirMovesEverythingAtOnce) {
  std::mt19937_64 rng(61);
  const std::string one = RandomBytes(rng, 5000);
  WriteObject(store(), "vol/epoch/1/seg/1", one, rng);
  ASSERT_OK(store().Put("vol/epoch/1/ckpt/1", AsBytes("c")));
  ASSERT_OK(store().Put("vol/epoch/1x/keep", AsBytes("k")));  // shares the prefix
  ASSERT_OK(store().RenameDir("vol/epoch/1", "vol/epoch/2"));
  EXPECT_EQ(store().List("vol/epoch/1").status().code(), Code::kNotFound);
  EXPECT_EQ(store().Open("vol/epoch/1/seg/1").status().code(), Code::kNotFound);
  EXPECT_EQ(store().Delete("vol/epoch/1/seg/1").code(), Code::kNotFound);
  EXPECT_EQ(store().Get("vol/epoch/2/seg/1").value(), one);
  EXPECT_EQ(store().Get("vol/epoch/2/ckpt/1").value(), "c");
  EXPECT_EQ(Names(store().List("vol/epoch/2").value()),
            (std::vector<std::string>{"ckpt", "seg"}));
  EXPECT_EQ(Names(store().List("vol/epoch").value()), (std::vector<std::string>{"1x", "2"}));
  EXPECT_EQ(store().Get("vol/epoch/1x/keep").value(), "k");
  // To another parent directory, which must exist.
  EXPECT_EQ(store().RenameDir("vol/epoch/2", "nowhere/2").code(), Code::kNotFound);
  ASSERT_OK(store().Put("other/x", AsBytes("x")));
  ASSERT_OK(store().RenameDir("vol/epoch/2", "other/2"));
  EXPECT_EQ(store().Get("other/2/seg/1").value(), one);
  // The old name can be used again, as a new directory.
  ASSERT_OK(store().Put("vol/epoch/2/owner", AsBytes("o")));
  EXPECT_EQ(Names(store().List("vol/epoch/2").value()), (std::vector<std::string>{"owner"}));
}

TEST_P(StoreConformanceTest, RenameDirReplacesNothingAndChecksItsArguments) {
  ASSERT_OK(store().Put("a/1/x", AsBytes("a")));
  ASSERT_OK(store().Put("a/2/y", AsBytes("b")));
  ASSERT_OK(store().Put("a/f", AsBytes("f")));
  EXPECT_EQ(store().RenameDir("a/1", "a/2").code(), Code::kAlreadyExists);
  EXPECT_EQ(store().RenameDir("a/1", "a/f").code(), Code::kAlreadyExists);
  EXPECT_EQ(store().RenameDir("a/f", "a/g").code(), Code::kInvalidArgument);
  EXPECT_EQ(store().RenameDir("a/missing", "a/3").code(), Code::kNotFound);
  EXPECT_EQ(store().RenameDir("a/1", "a/1").code(), Code::kInvalidArgument);
  EXPECT_EQ(store().RenameDir("a/1", "a/1/sub").code(), Code::kInvalidArgument);
  EXPECT_EQ(store().RenameDir("a/1", "../b").code(), Code::kInvalidArgument);
  EXPECT_EQ(store().RenameDir("", "b").code(), Code::kInvalidArgument);
  // Nothing moved.
  EXPECT_EQ(store().Get("a/1/x").value(), "a");
  EXPECT_EQ(store().Get("a/2/y").value(), "b");
  EXPECT_EQ(store().Get("a/f").value(), "f");
  EXPECT_EQ(Names(store().List("a").value()), (std::vector<std::string>{"1", "2", "f"}));
  // "a/1" is no prefix of "a/10": that is another directory.
  ASSERT_OK(store().RenameDir("a/1", "a/10"));
  EXPECT_EQ(store().Get("a/10/x").value(), "a");
}

// A writer and a reader opened before the move go on with the moved object:
// how a fenced holder's open segment behaves (doc/ownership.md).
TEST_P(StoreConformanceTest, RenameDirKeepsOpenWritersAndReaders) {
  std::mt19937_64 rng(62);
  const std::string a = RandomBytes(rng, 3000), b = RandomBytes(rng, 2000);
  WriteObject(store(), "w/1/done", a, rng);
  auto w = store().Create("w/1/open");
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_OK((*w)->Append(AsBytes(a)));
  ASSERT_OK((*w)->Flush());
  auto r = store().Open("w/1/done");
  ASSERT_TRUE(r.ok());
  ASSERT_OK(store().RenameDir("w/1", "w/2"));
  EXPECT_EQ(ReadRange(**r, 1000, 500), a.substr(1000, 500));
  ASSERT_OK((*w)->Append(AsBytes(b)));
  ASSERT_OK((*w)->Close());
  EXPECT_EQ(store().Get("w/2/open").value(), a + b);
  EXPECT_EQ(store().Stat("w/1/open").status().code(), Code::kNotFound);
}

TEST_P(StoreConformanceTest, ReaderOpenBeforeDeleteKeepsReading) {
  std::mt19937_64 rng(7);
  const std::string data = RandomBytes(rng, 10000);
  WriteObject(store(), "r/seg", data, rng);
  auto r = store().Open("r/seg");
  ASSERT_TRUE(r.ok());
  ASSERT_OK(store().Delete("r/seg"));
  // The contract allows readers already open to keep reading; backends where
  // that fails must fail cleanly, never return wrong bytes.
  std::vector<uint8_t> buf(100);
  auto n = (*r)->ReadAt(500, buf);
  if (n.ok()) {
    ASSERT_EQ(*n, 100u);
    EXPECT_EQ(std::string(buf.begin(), buf.end()), data.substr(500, 100));
  }
}

TEST_P(StoreConformanceTest, TryLockIsExclusiveUntilReleased) {
  auto l1 = store().TryLock("vol/lock");
  ASSERT_TRUE(l1.ok()) << l1.status().ToString();
  auto l2 = store().TryLock("vol/lock");
  ASSERT_FALSE(l2.ok());
  EXPECT_EQ(l2.status().code(), Code::kBusy) << l2.status().ToString();
  // Another name is independent.
  auto other = store().TryLock("vol2/lock");
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  l1->reset();
  auto l3 = store().TryLock("vol/lock");
  ASSERT_TRUE(l3.ok()) << l3.status().ToString();
  EXPECT_EQ(store().TryLock("vol/lock").status().code(), Code::kBusy);
  // Contended from several threads: exactly one winner at a time.
  l3->reset();
  std::atomic<int> winners{0};
  std::vector<std::thread> threads;
  std::vector<std::unique_ptr<Lock>> held(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto l = store().TryLock("race/lock");
      if (l.ok()) {
        ++winners;
        held[t] = std::move(l).value();
      } else {
        EXPECT_EQ(l.status().code(), Code::kBusy);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(winners.load(), 1);
}

TEST_P(StoreConformanceTest, ReaderSeesFlushedDataAfterReopen) {
  std::mt19937_64 rng(8);
  const std::string a = RandomBytes(rng, 10000);
  const std::string b = RandomBytes(rng, 7000);
  auto w = store().Create("live/seg");
  ASSERT_TRUE(w.ok());
  ASSERT_OK((*w)->Append(AsBytes(a)));
  ASSERT_OK((*w)->Flush());
  auto r1 = store().Open("live/seg");
  ASSERT_TRUE(r1.ok()) << r1.status().ToString();
  ASSERT_EQ((*r1)->Size(), a.size());
  EXPECT_EQ(ReadRange(**r1, 0, a.size()), a);

  ASSERT_OK((*w)->Append(AsBytes(b)));
  ASSERT_OK((*w)->Sync());
  EXPECT_EQ((*w)->Size(), a.size() + b.size());
  // r1's view is fixed at open.
  EXPECT_EQ((*r1)->Size(), a.size());
  auto r2 = store().Open("live/seg");
  ASSERT_TRUE(r2.ok());
  ASSERT_EQ((*r2)->Size(), a.size() + b.size());
  EXPECT_EQ(ReadRange(**r2, 0, a.size() + b.size()), a + b);
  EXPECT_EQ(store().Stat("live/seg").value(), a.size() + b.size());
  ASSERT_OK((*w)->Close());
  EXPECT_EQ(store().Get("live/seg").value(), a + b);
}

TEST_P(StoreConformanceTest, AbandonedWriterKeepsFlushedData) {
  const std::string a(5000, 'f');
  {
    auto w = store().Create("ab/seg");
    ASSERT_TRUE(w.ok());
    ASSERT_OK((*w)->Append(AsBytes(a)));
    ASSERT_OK((*w)->Flush());
    // Destroyed without Close.
  }
  auto g = store().Get("ab/seg");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  // At least the flushed bytes; nothing else was appended.
  EXPECT_EQ(*g, a);
}

TEST_P(StoreConformanceTest, OpenForTakeoverReadsAnAbandonedWritersFlushedBytes) {
  std::mt19937_64 rng(12);
  const std::string a = RandomBytes(rng, 7777);
  {
    auto w = store().Create("take/seg");
    ASSERT_TRUE(w.ok());
    ASSERT_OK((*w)->Append(AsBytes(a)));
    ASSERT_OK((*w)->Flush());
    // Destroyed without Close: its writer is gone, as after a crash.
  }
  auto r = store().OpenForTakeover("take/seg");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ((*r)->Size(), a.size());
  EXPECT_EQ(ReadRange(**r, 0, a.size()), a);
  // Afterwards the object reads the same through Open, and a closed object
  // is taken over unchanged.
  EXPECT_EQ(store().Get("take/seg").value(), a);
  auto again = store().OpenForTakeover("take/seg");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ((*again)->Size(), a.size());
  EXPECT_EQ(store().OpenForTakeover("take/absent").status().code(), Code::kNotFound);
}

TEST_P(StoreConformanceTest, OpenLeavesAWriterOfThisProcessWriting) {
  // Open, and OpenForTakeover too, never end a writer of this process.
  std::mt19937_64 rng(13);
  const std::string a = RandomBytes(rng, 3000);
  const std::string b = RandomBytes(rng, 5000);
  auto w = store().Create("mine/seg");
  ASSERT_TRUE(w.ok());
  ASSERT_OK((*w)->Append(AsBytes(a)));
  ASSERT_OK((*w)->Flush());
  auto r = store().Open("mine/seg");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(ReadRange(**r, 0, a.size()), a);
  auto t = store().OpenForTakeover("mine/seg");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(ReadRange(**t, 0, a.size()), a);
  ASSERT_OK((*w)->Append(AsBytes(b)));
  ASSERT_OK((*w)->Flush());
  ASSERT_OK((*w)->Close());
  EXPECT_EQ(store().Get("mine/seg").value(), a + b);
}

TEST_P(StoreConformanceTest, LargeObject) {
  std::mt19937_64 rng(9);
  const std::string data = RandomBytes(rng, (6 << 20) + 12345);
  auto w = store().Create("large/seg");
  ASSERT_TRUE(w.ok());
  size_t off = 0;
  while (off < data.size()) {
    size_t n = std::min<size_t>(data.size() - off, (rng() % 2) ? (1 << 20) : 4096 + rng() % 9000);
    ASSERT_OK((*w)->Append(AsBytes(data).subspan(off, n)));
    off += n;
  }
  ASSERT_OK((*w)->Sync());
  ASSERT_OK((*w)->Close());
  auto g = store().Get("large/seg");
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(*g == data);
  auto r = store().Open("large/seg");
  ASSERT_TRUE(r.ok());
  for (int i = 0; i < 50; ++i) {
    uint64_t o = rng() % data.size();
    size_t n = std::min<size_t>(data.size() - o, 1 + rng() % (2 << 20));
    ASSERT_TRUE(ReadRange(**r, o, n) == data.substr(o, n)) << o << "+" << n;
  }
  // A large Put too.
  ASSERT_OK(store().Put("large/put", AsBytes(data)));
  EXPECT_TRUE(store().Get("large/put").value() == data);
}

TEST_P(StoreConformanceTest, InvalidNamesAreRejectedEverywhere) {
  const std::vector<std::string> bad = {
      "",      "/abs",    "a/",         "a//b",  ".",    "..",
      "a/./b", "a/../b",  "a/..",       "../a",  "./a",  std::string("a\0b", 3),
      std::string(256, 'n'), "x/" + std::string(256, 'n'), ".hbiss-tmp-1", "d/.hbiss-x"};
  for (const std::string& name : bad) {
    SCOPED_TRACE("name '" + name + "'");
    EXPECT_EQ(store().Create(name).status().code(), Code::kInvalidArgument);
    EXPECT_EQ(store().Open(name).status().code(), Code::kInvalidArgument);
    EXPECT_EQ(store().Put(name, AsBytes("x")).code(), Code::kInvalidArgument);
    EXPECT_EQ(store().Get(name).status().code(), Code::kInvalidArgument);
    EXPECT_EQ(store().Stat(name).status().code(), Code::kInvalidArgument);
    EXPECT_EQ(store().Delete(name).code(), Code::kInvalidArgument);
    EXPECT_EQ(store().DeleteDir(name).code(), Code::kInvalidArgument);
    EXPECT_EQ(store().TryLock(name).status().code(), Code::kInvalidArgument);
    if (!name.empty()) {
      EXPECT_EQ(store().List(name).status().code(), Code::kInvalidArgument);
    }
  }
  // Nothing was created by any of those calls.
  auto root = store().List("");
  ASSERT_TRUE(root.ok());
  EXPECT_TRUE(root->empty()) << root->front().name;
}

TEST_P(StoreConformanceTest, UnusualButValidNames) {
  std::mt19937_64 rng(10);
  // append, not "n" + std::string(...): GCC 12 -O3 false -Wrestrict (PR 105651).
  const std::vector<std::string> names = {"a b", "x.y-z_1", "caf\xc3\xa9", "...", ".hidden",
                                          std::string("n").append(254, 'm')};
  for (const std::string& n : names) {
    ASSERT_OK(store().Put("u/" + n, AsBytes(n)));
    EXPECT_EQ(store().Get("u/" + n).value(), n);
  }
  auto l = store().List("u");
  ASSERT_TRUE(l.ok());
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(Names(*l), sorted);
}

TEST_P(StoreConformanceTest, ObjectAndDirectoryNamesDoNotMix) {
  ASSERT_OK(store().Put("od/file", AsBytes("f")));
  EXPECT_FALSE(store().Create("od/file/child").ok());
  EXPECT_FALSE(store().Put("od/file/child", AsBytes("c")).ok());
  EXPECT_FALSE(store().Create("od").ok());
  EXPECT_FALSE(store().Put("od", AsBytes("c")).ok());
  EXPECT_FALSE(store().Open("od").ok());
  EXPECT_FALSE(store().Delete("od").ok());
  EXPECT_EQ(store().Get("od/file").value(), "f");
}

TEST_P(StoreConformanceTest, ConcurrentReaders) {
  std::mt19937_64 rng(11);
  const std::string data = RandomBytes(rng, 2 << 20);
  WriteObject(store(), "cr/seg", data, rng, 1 << 20);
  auto shared = store().Open("cr/seg");
  ASSERT_TRUE(shared.ok());
  std::atomic<int> mismatches{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 trng(100 + t);
      auto own = store().Open("cr/seg");
      if (!own.ok()) {
        ++failures;
        return;
      }
      for (int i = 0; i < 300; ++i) {
        SegmentReader& r = (i % 2) ? **shared : **own;
        uint64_t off = trng() % data.size();
        size_t n = std::min<size_t>(data.size() - off, 1 + trng() % 65536);
        std::string buf(n, '\0');
        auto got = r.ReadAt(off, std::span(reinterpret_cast<uint8_t*>(buf.data()), n));
        if (!got.ok()) {
          ++failures;
          continue;
        }
        buf.resize(*got);
        if (*got != n || buf != data.substr(off, n)) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_P(StoreConformanceTest, WriterAfterCloseFails) {
  auto w = store().Create("wc/seg");
  ASSERT_TRUE(w.ok());
  ASSERT_OK((*w)->Append(AsBytes("abc")));
  ASSERT_OK((*w)->Close());
  EXPECT_FALSE((*w)->Append(AsBytes("def")).ok());
  EXPECT_EQ(store().Get("wc/seg").value(), "abc");
}

TEST_P(StoreConformanceTest, UriIsNotEmpty) { EXPECT_FALSE(store().Uri().empty()); }

}  // namespace
}  // namespace hbiss::store::testing
