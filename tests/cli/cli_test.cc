// Tests of the real hbiss executable: every bad-input case (exit code, one
// line on stderr, store unchanged) and create/ls/info/rm/import/export round
// trips with byte comparison.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "tests/cli/cli_test_util.h"

namespace hbiss::clitest {
namespace {

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = dir_ / "store";
    fs::create_directory(store_);
  }

  // hbiss --store <store_> args...
  RunResult H(std::vector<std::string> args) {
    args.insert(args.begin(), {"--store", store_});
    return Hbiss(args);
  }

  void MustRun(const std::vector<std::string>& args) {
    RunResult r = H(args);
    ASSERT_EQ(r.exit_code, 0) << "hbiss " << ::testing::PrintToString(args) << ": " << r.err;
  }

  nlohmann::json InfoJson(const std::string& name) {
    RunResult r = H({"info", name, "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out);
  }

  // Runs the command, which must fail with one "hbiss: ..." line on stderr,
  // nothing on stdout, and leave `watched` (default: the store) unchanged.
  RunResult ExpectFails(const std::vector<std::string>& args, int code = 1,
                        const std::string& watched = "") {
    const std::string root = watched.empty() ? store_ : watched;
    auto before = Snapshot(root);
    RunResult r = Hbiss(args);
    EXPECT_EQ(r.exit_code, code) << ::testing::PrintToString(args) << " stderr: " << r.err;
    std::vector<std::string> lines = Lines(r.err);
    EXPECT_EQ(lines.size(), 1u) << ::testing::PrintToString(args) << " stderr: " << r.err;
    EXPECT_EQ(r.err.rfind("hbiss: ", 0), 0u) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
    EXPECT_EQ(Snapshot(root), before) << "store changed by " << ::testing::PrintToString(args);
    return r;
  }
  RunResult ExpectFailsInStore(std::vector<std::string> args, int code = 1) {
    args.insert(args.begin(), {"--store", store_});
    return ExpectFails(args, code);
  }

  TempDir dir_;
  std::string store_;
};

// ---- bad input -------------------------------------------------------------------

TEST_F(CliTest, BadVolumeNamesAreRejectedEverywhere) {
  MustRun({"create", "good", "--size", "1M"});
  WriteFile(dir_ / "img", RandomBytes(8192, 1));
  const std::vector<std::string> bad = {"", "..", ".", "a/b", "/abs", std::string(129, 'x'),
                                        "-dash", "sp ace", "tab\tname"};
  for (const std::string& name : bad) {
    SCOPED_TRACE("name=" + name);
    // "--" ends the options, so that "-dash" reaches the name check.
    ExpectFailsInStore({"create", "--size", "1M", "--", name});
    ExpectFailsInStore({"info", "--", name});
    ExpectFailsInStore({"rm", "--", name});
    ExpectFailsInStore({"clean", "--", name});
    ExpectFailsInStore({"import", "--", name, dir_ / "img"});
    ExpectFailsInStore({"export", "--", name, dir_ / "out"});
    EXPECT_FALSE(fs::exists(dir_ / "out"));
  }
  // The longest valid name works.
  MustRun({"create", std::string(128, 'n'), "--size", "4K"});
}

TEST_F(CliTest, BadSizesAreRejected) {
  const std::vector<std::string> bad = {
      "0", "0G", "", "abc", "10X", "1E", "-1", "1.5G", "G", "10 G", "1GG", "0x10",
      "99999999999999999999999",  // overflows u64
      "16777216T",                // overflows after the shift
      "257T",                     // above kMaxVolumeSize (256 TiB)
      "281474976710657",          // 256 TiB + 1 in bytes
  };
  for (const std::string& size : bad) {
    SCOPED_TRACE("size=" + size);
    RunResult r = ExpectFailsInStore({"create", "v", "--size", size});
  }
  RunResult r = H({"ls"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "");
}

TEST_F(CliTest, GoodSizesParse) {
  struct Case {
    std::string text;
    uint64_t bytes;
  };
  const std::vector<Case> cases = {
      {"4096", 4096},        {"8K", 8192},          {"8k", 8192},
      {"3M", 3ull << 20},    {"10G", 10ull << 30},  {"2T", 2ull << 40},
      {"1GiB", 1ull << 30},  {"256T", 256ull << 40}, {"5000", 8192},  // rounded up to 4 KiB
      {"1", 4096},
  };
  int i = 0;
  for (const Case& c : cases) {
    // Not `"literal" + std::string`: GCC 12 -O3 reports a false -Wrestrict for it here
    // (GCC PR 105651).
    SCOPED_TRACE(::testing::Message() << "size=" << c.text);
    std::string name = "v";
    name += std::to_string(i++);
    MustRun({"create", name, "--size", c.text});
    EXPECT_EQ(InfoJson(name)["size"].get<uint64_t>(), c.bytes);
  }
}

TEST_F(CliTest, CreateOfAnExistingVolumeFails) {
  MustRun({"create", "vm", "--size", "1M"});
  RunResult r = ExpectFailsInStore({"create", "vm", "--size", "2M"});
  EXPECT_NE(r.err.find("vm"), std::string::npos) << r.err;
  EXPECT_EQ(InfoJson("vm")["size"].get<uint64_t>(), 1u << 20);
}

TEST_F(CliTest, MissingVolumeFails) {
  MustRun({"create", "other", "--size", "1M"});
  ExpectFailsInStore({"info", "nosuch"});
  ExpectFailsInStore({"info", "nosuch", "--json"});
  ExpectFailsInStore({"rm", "nosuch"});
  ExpectFailsInStore({"clean", "nosuch"});
  ExpectFailsInStore({"export", "nosuch", dir_ / "out"});
  EXPECT_FALSE(fs::exists(dir_ / "out")) << "export of a missing volume created its output";
}

TEST_F(CliTest, MissingStoreFails) {
  const std::string missing = dir_ / "no-such-store";
  WriteFile(dir_ / "img", RandomBytes(4096, 2));
  for (const std::string& uri : {missing, "file://" + missing}) {
    SCOPED_TRACE(uri);
    ExpectFails({"--store", uri, "ls"}, 1, dir_.path());
    ExpectFails({"--store", uri, "create", "vm", "--size", "1M"}, 1, dir_.path());
    ExpectFails({"--store", uri, "info", "vm"}, 1, dir_.path());
    ExpectFails({"--store", uri, "rm", "vm"}, 1, dir_.path());
    ExpectFails({"--store", uri, "import", "vm", dir_ / "img"}, 1, dir_.path());
    ExpectFails({"--store", uri, "export", "vm", dir_ / "out"}, 1, dir_.path());
    EXPECT_FALSE(fs::exists(missing));
  }
  // A store that is a regular file, not a directory.
  WriteFile(dir_ / "plainfile", "x");
  ExpectFails({"--store", dir_ / "plainfile", "create", "vm", "--size", "1M"}, 1, dir_.path());
  // A URI with an unknown scheme.
  ExpectFails({"--store", "bogus://x/y", "ls"}, 1, dir_.path());
}

TEST_F(CliTest, UnwritableStoreFails) {
  MustRun({"create", "vm", "--size", "1M"});
  WriteFile(dir_ / "img", RandomBytes(4096, 3));
  // root may write anywhere, so run hbiss as "nobody" then; otherwise make
  // the store read-only for its owner.
  std::vector<std::string> prefix;
  std::string bin = HBISS_BIN;
  if (geteuid() == 0) {
    ASSERT_EQ(access("/usr/bin/setpriv", X_OK), 0) << "setpriv (util-linux) is needed as root";
    prefix = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"};
    fs::permissions(dir_.path(), fs::perms::others_read | fs::perms::others_exec,
                    fs::perm_options::add);
    fs::permissions(dir_ / "img", fs::perms::others_read, fs::perm_options::add);
    // The build tree may sit where nobody cannot reach it (under /root): run a copy.
    bin = dir_ / "hbiss";
    fs::copy_file(HBISS_BIN, bin);
    fs::permissions(bin, fs::perms::others_read | fs::perms::others_exec, fs::perm_options::add);
    // nobody must be able to run the binary and read the store, not write it.
    ASSERT_EQ(RunArgv({prefix[0], prefix[1], prefix[2], prefix[3], prefix[4], bin, "--help"})
                  .exit_code,
              0)
        << "nobody cannot run " << bin;
  } else {
    fs::permissions(store_, fs::perms::owner_write, fs::perm_options::remove);
  }
  auto run = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = prefix;
    argv.push_back(bin);
    argv.insert(argv.end(), {"--store", store_});
    argv.insert(argv.end(), args.begin(), args.end());
    auto before = Snapshot(store_);
    RunResult r = RunArgv(argv);
    EXPECT_EQ(r.exit_code, 1) << ::testing::PrintToString(args) << ": " << r.err;
    EXPECT_EQ(Lines(r.err).size(), 1u) << r.err;
    EXPECT_EQ(r.err.rfind("hbiss: ", 0), 0u) << r.err;
    EXPECT_EQ(Snapshot(store_), before);
  };
  run({"create", "vm2", "--size", "1M"});
  run({"import", "vm3", dir_ / "img"});
  run({"import", "vm", dir_ / "img"});
  run({"rm", "vm"});
  if (geteuid() != 0) fs::permissions(store_, fs::perms::owner_write, fs::perm_options::add);
  EXPECT_EQ(InfoJson("vm")["size"].get<uint64_t>(), 1u << 20);
}

TEST_F(CliTest, BadImportInputFails) {
  MustRun({"create", "small", "--size", "8K"});
  MustRun({"import", "small", ([&] {
             WriteFile(dir_ / "first", RandomBytes(8192, 4));
             return dir_ / "first";
           })()});
  WriteFile(dir_ / "big", RandomBytes(8193, 5));
  WriteFile(dir_ / "empty", "");
  ExpectFailsInStore({"import", "small", dir_ / "big"});  // larger than the volume
  ExpectFailsInStore({"import", "new", dir_ / "empty"});  // nothing to import
  ExpectFailsInStore({"import", "new", dir_ / "missing-file"});
  ExpectFailsInStore({"import", "new", dir_.path()});  // a directory
  ExpectFailsInStore({"import", "--flush-interval", "0", "new", dir_ / "big"});
  // The volume still holds the first image.
  MustRun({"export", "small", dir_ / "out"});
  EXPECT_EQ(ReadFile(dir_ / "out"), ReadFile(dir_ / "first"));
}

TEST_F(CliTest, BadExportOutputFails) {
  MustRun({"create", "vm", "--size", "1M"});
  ExpectFailsInStore({"export", "vm", dir_ / "no-such-dir/out"});
  ExpectFailsInStore({"export", "vm", dir_.path()});  // a directory
}

TEST_F(CliTest, UsageErrorsAreOneLine) {
  ExpectFailsInStore({}, 2);
  ExpectFailsInStore({"frobnicate"}, 2);
  ExpectFailsInStore({"create", "vm"}, 2);  // no --size
  ExpectFailsInStore({"info"}, 2);
  ExpectFailsInStore({"import", "vm"}, 2);
  ExpectFailsInStore({"ls", "--no-such-flag"}, 2);
  ExpectFailsInStore({"clean"}, 2);
  MustRun({"create", "vm", "--size", "1M"});
  for (const char* t : {"0", "-1", "1.5", "nan", "x"}) {
    SCOPED_TRACE(t);
    RunResult r = H({"clean", "vm", "--threshold", t});
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err, "");
  }
}

// `hbiss clean` reclaims the log of overwritten data and keeps every byte.
TEST_F(CliTest, CleanReclaimsOverwrittenLog) {
  MustRun({"create", "vm", "--size", "4M", "--segment-size", "256K"});
  std::string last;
  for (int i = 0; i < 4; i++) {
    last = RandomBytes(4 << 20, 10 + i);
    WriteFile(dir_ / "img", last);
    MustRun({"import", "vm", dir_ / "img"});
  }
  // import closes with the cleaner on, which already deleted what died.
  const uint64_t before = InfoJson("vm")["log_bytes"].get<uint64_t>();
  RunResult r = H({"clean", "vm", "--threshold", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("deleted"), std::string::npos) << r.out;
  const uint64_t after = InfoJson("vm")["log_bytes"].get<uint64_t>();
  EXPECT_LE(after, (4u << 20) + (1u << 20)) << "before " << before;
  MustRun({"export", "vm", dir_ / "out"});
  EXPECT_TRUE(ReadFile(dir_ / "out") == last);
}

TEST_F(CliTest, HelpWorks) {
  RunResult r = Hbiss({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* cmd : {"create", "ls", "info", "rm", "clean", "import", "export", "--store"}) {
    EXPECT_NE(r.out.find(cmd), std::string::npos) << cmd;
  }
}

// ---- round trips -----------------------------------------------------------------

TEST_F(CliTest, CreateLsInfoRm) {
  RunResult r = H({"ls"});
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "");
  MustRun({"create", "zeta", "--size", "10G"});
  MustRun({"create", "alpha", "--size", "512K"});
  MustRun({"create", "mid.v-1_x", "--size", "1T"});
  r = H({"ls"});
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "alpha\nmid.v-1_x\nzeta\n");

  nlohmann::json j = InfoJson("zeta");
  EXPECT_EQ(j["name"], "zeta");
  EXPECT_EQ(j["size"].get<uint64_t>(), 10ull << 30);
  EXPECT_EQ(j["mapped_bytes"].get<uint64_t>(), 0u);
  EXPECT_EQ(j["block_size"].get<uint64_t>(), 4096u);
  EXPECT_EQ(j["id"].get<std::string>().size(), 16u);
  EXPECT_NE(j["id"], InfoJson("alpha")["id"]);

  r = H({"info", "alpha"});
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("524288"), std::string::npos) << r.out;

  r = H({"ls", "-l"});
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_EQ(Lines(r.out).size(), 3u);
  EXPECT_NE(r.out.find("10.0 GiB"), std::string::npos) << r.out;

  MustRun({"rm", "mid.v-1_x"});
  r = H({"ls"});
  EXPECT_EQ(r.out, "alpha\nzeta\n");
  ExpectFailsInStore({"info", "mid.v-1_x"});
  // The name can be used again.
  MustRun({"create", "mid.v-1_x", "--size", "4K"});
  EXPECT_EQ(InfoJson("mid.v-1_x")["size"].get<uint64_t>(), 4096u);
}

TEST_F(CliTest, GlobalOptionsAfterTheSubcommandAndFileUri) {
  RunResult r = Hbiss({"create", "vm", "--size", "1M", "--store", "file://" + store_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Hbiss({"ls", "--store", store_});
  EXPECT_EQ(r.out, "vm\n");
}

TEST_F(CliTest, DefaultStoreLocation) {
  TempDir home;
  // $HBISS_STORE wins.
  RunResult r = Hbiss({"create", "a", "--size", "1M"},
                      {{"HBISS_STORE", store_}, {"HOME", home.path()}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(H({"ls"}).out, "a\n");
  // Then $XDG_DATA_HOME/hbiss, created on first write.
  r = Hbiss({"create", "b", "--size", "1M"}, {{"HBISS_STORE", "\x01unset"},
                                               {"XDG_DATA_HOME", home / "xdg"},
                                               {"HOME", home.path()}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Hbiss({"--store", home / "xdg/hbiss", "ls"}).out, "b\n");
  // Then ~/.local/share/hbiss.
  r = Hbiss({"create", "c", "--size", "1M"}, {{"HBISS_STORE", "\x01unset"},
                                               {"XDG_DATA_HOME", "\x01unset"},
                                               {"HOME", home.path()}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Hbiss({"--store", home / ".local/share/hbiss", "ls"}).out, "c\n");
  // Reading commands do not create the default store.
  TempDir home2;
  r = Hbiss({"ls"}, {{"HBISS_STORE", "\x01unset"}, {"XDG_DATA_HOME", "\x01unset"},
                     {"HOME", home2.path()}});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_FALSE(fs::exists(home2 / ".local/share/hbiss"));
}

TEST_F(CliTest, ImportExportRoundTripOddSizes) {
  const std::vector<size_t> sizes = {1, 511, 4095, 4096, 4097, 5000, (1 << 20) + 123,
                                     (3 << 20) + 4095, 5 << 20};
  uint64_t seed = 100;
  for (size_t n : sizes) {
    SCOPED_TRACE("size=" + std::to_string(n));
    std::string data = RandomBytes(n, seed++);
    std::string name = "img" + std::to_string(n);
    WriteFile(dir_ / "in", data);
    MustRun({"import", name, dir_ / "in"});
    nlohmann::json j = InfoJson(name);
    EXPECT_EQ(j["size"].get<uint64_t>(), RoundUp4K(n));
    EXPECT_EQ(j["mapped_bytes"].get<uint64_t>(), RoundUp4K(n));
    MustRun({"export", name, dir_ / "out"});
    std::string out = ReadFile(dir_ / "out");
    ASSERT_EQ(out.size(), RoundUp4K(n));
    EXPECT_TRUE(out.compare(0, n, data) == 0) << "data differs";
    EXPECT_EQ(out.substr(n), std::string(RoundUp4K(n) - n, '\0')) << "padding is not zero";
  }
}

TEST_F(CliTest, ExportToStdout) {
  std::string data = RandomBytes(300000, 7);
  WriteFile(dir_ / "in", data);
  MustRun({"import", "vm", dir_ / "in"});
  RunResult r = H({"export", "vm", "-"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(r.out.size(), RoundUp4K(data.size()));
  EXPECT_EQ(r.out.substr(0, data.size()), data);
}

TEST_F(CliTest, SparseImageRoundTrip) {
  // 64 MiB with data islands, an all-zero written block, and holes.
  const uint64_t size = 64ull << 20;
  std::string img(size, '\0');
  std::string a = RandomBytes(3 * 4096 + 100, 8), b = RandomBytes(1 << 20, 9);
  img.replace(0, a.size(), a);
  img.replace(40ull << 20, b.size(), b);
  img.replace(size - 4096, 4096, RandomBytes(4096, 10));
  {
    // Write only the islands so the input file itself is sparse.
    int fd = open((dir_ / "sparse.img").c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
    ASSERT_EQ(pwrite(fd, a.data(), a.size(), 0), static_cast<ssize_t>(a.size()));
    ASSERT_EQ(pwrite(fd, b.data(), b.size(), 40 << 20), static_cast<ssize_t>(b.size()));
    ASSERT_EQ(pwrite(fd, img.data() + size - 4096, 4096, size - 4096), 4096);
    std::string zeros(8192, '\0');  // explicitly written zeros
    ASSERT_EQ(pwrite(fd, zeros.data(), zeros.size(), 20 << 20), 8192);
    close(fd);
  }
  MustRun({"import", "sparse", dir_ / "sparse.img"});
  nlohmann::json j = InfoJson("sparse");
  EXPECT_EQ(j["size"].get<uint64_t>(), size);
  // Only the blocks holding non-zero bytes are mapped.
  EXPECT_EQ(j["mapped_bytes"].get<uint64_t>(), RoundUp4K(a.size()) + b.size() + 4096);

  MustRun({"export", "sparse", dir_ / "out.img"});
  EXPECT_TRUE(ReadFile(dir_ / "out.img") == img) << "exported image differs";
  struct stat st;
  ASSERT_EQ(stat((dir_ / "out.img").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), size);
  // The export is sparse: far less allocated than its size.
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 8ull << 20);
}

TEST_F(CliTest, ImportIntoAnExistingLargerVolume) {
  MustRun({"create", "vm", "--size", "8M"});
  std::string first = RandomBytes(6 << 20, 11);
  WriteFile(dir_ / "first", first);
  MustRun({"import", "vm", dir_ / "first"});

  // The second image is shorter, has a zero block and a hole over old data.
  std::string second = RandomBytes((2 << 20) + 1000, 12);
  second.replace(4096 * 3, 4096 * 2, std::string(4096 * 2, '\0'));
  second.replace(1 << 20, 256 << 10, std::string(256 << 10, '\0'));
  WriteFile(dir_ / "second", second);
  {
    // Punch the 256 KiB of zeros as a real hole in the input file.
    int fd = open((dir_ / "second").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1 << 20, 256 << 10), 0);
    close(fd);
  }
  MustRun({"import", "vm", dir_ / "second"});
  EXPECT_EQ(InfoJson("vm")["size"].get<uint64_t>(), 8u << 20);

  std::string expect = first;
  expect.resize(8 << 20, '\0');
  expect.replace(0, second.size(), second);
  // The partial last block of `second` keeps first's bytes after its end.
  MustRun({"export", "vm", dir_ / "out"});
  std::string out = ReadFile(dir_ / "out");
  ASSERT_EQ(out.size(), expect.size());
  for (size_t i = 0; i < out.size(); i += 4096) {
    ASSERT_TRUE(out.compare(i, 4096, expect, i, 4096) == 0) << "block " << i / 4096 << " differs";
  }
}

TEST_F(CliTest, VerboseImportReportsFlushes) {
  std::string data = RandomBytes((5 << 20) + 10, 13);
  WriteFile(dir_ / "in", data);
  RunResult r = H({"import", "--verbose", "--flush-interval", "1M", "vm", dir_ / "in"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<uint64_t> flushed;
  for (const std::string& line : Lines(r.err)) {
    if (line.rfind("flushed ", 0) == 0) flushed.push_back(std::stoull(line.substr(8)));
  }
  ASSERT_EQ(flushed.size(), 6u) << r.err;
  for (size_t i = 0; i + 1 < flushed.size(); ++i) EXPECT_EQ(flushed[i], (i + 1) << 20);
  EXPECT_EQ(flushed.back(), data.size());
  // No progress bar when stderr is not a terminal.
  EXPECT_EQ(r.err.find('\r'), std::string::npos);
}

TEST_F(CliTest, RmRemovesTheData) {
  WriteFile(dir_ / "in", RandomBytes(1 << 20, 14));
  MustRun({"import", "vm", dir_ / "in"});
  MustRun({"rm", "vm"});
  EXPECT_EQ(H({"ls"}).out, "");
  ExpectFailsInStore({"export", "vm", dir_ / "out"});
  // Nothing of the volume is left in the store directory.
  for (const auto& [path, content] : Snapshot(store_)) {
    EXPECT_EQ(path.find("vm"), std::string::npos) << path << " left behind";
  }
  // A new volume of the same name starts empty.
  MustRun({"create", "vm", "--size", "1M"});
  MustRun({"export", "vm", dir_ / "out"});
  EXPECT_EQ(ReadFile(dir_ / "out"), std::string(1 << 20, '\0'));
}


// ---- snapshots (hbiss snap, doc/snapshots.md) ------------------------------------

class SnapCliTest : public CliTest {
 protected:
  nlohmann::json SnapLs(const std::string& vol) {
    RunResult r = H({"snap", "ls", vol, "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out);
  }
  std::vector<std::string> SnapNames(const std::string& vol) {
    std::vector<std::string> out;
    for (const auto& j : SnapLs(vol)) out.push_back(j["name"].get<std::string>());
    return out;
  }
};

TEST_F(SnapCliTest, CreateLsRenameRemove) {
  MustRun({"create", "vm", "--size", "3M"});
  EXPECT_EQ(SnapLs("vm"), nlohmann::json::array());
  EXPECT_EQ(H({"snap", "ls", "vm"}).out, "");  // no snapshots: nothing, as rbd

  RunResult c = H({"snap", "create", "vm@s1"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_NE(c.out.find("vm@s1"), std::string::npos) << c.out;
  MustRun({"snap", "create", "vm@s2"});

  nlohmann::json ls = SnapLs("vm");
  ASSERT_TRUE(ls.is_array());
  ASSERT_EQ(ls.size(), 2u) << ls.dump();
  EXPECT_EQ(ls[0]["name"], "s1");
  EXPECT_EQ(ls[1]["name"], "s2");
  EXPECT_LT(ls[0]["id"].get<uint64_t>(), ls[1]["id"].get<uint64_t>());
  for (const auto& j : ls) {
    EXPECT_EQ(j["size"].get<uint64_t>(), 3u << 20);  // raw bytes
    EXPECT_TRUE(j["timestamp"].is_string());
    EXPECT_TRUE(j["created"].is_number_integer());
    EXPECT_NEAR(double(j["created"].get<int64_t>()), double(time(nullptr)), 120);
    EXPECT_TRUE(j["materialized"].is_boolean());
  }

  std::vector<std::string> table = Lines(H({"snap", "ls", "vm"}).out);
  ASSERT_EQ(table.size(), 3u);
  EXPECT_NE(table[0].find("SNAPID"), std::string::npos) << table[0];
  EXPECT_NE(table[0].find("NAME"), std::string::npos) << table[0];
  EXPECT_NE(table[1].find("s1"), std::string::npos) << table[1];
  EXPECT_NE(table[1].find(std::to_string(3u << 20)), std::string::npos) << table[1];

  // NEW and VOL@NEW both work.
  MustRun({"snap", "rename", "vm@s1", "first"});
  MustRun({"snap", "rename", "vm@s2", "vm@second"});
  EXPECT_EQ(SnapNames("vm"), (std::vector<std::string>{"first", "second"}));

  MustRun({"snap", "rm", "vm@first"});
  EXPECT_EQ(SnapNames("vm"), (std::vector<std::string>{"second"}));
  MustRun({"snap", "rm", "vm@second"});
  EXPECT_EQ(SnapLs("vm"), nlohmann::json::array());
}

// The CLI cannot overwrite a volume; tests/nbd/snapshot_test.sh rolls back
// over data written through a server.
TEST_F(SnapCliTest, RollbackKeepsTheSnapshotsDataAndTheSnapshot) {
  const std::string a = RandomBytes(1 << 20, 1);
  WriteFile(dir_ / "a", a);
  MustRun({"import", "vm", dir_ / "a"});
  MustRun({"snap", "create", "vm@before"});
  MustRun({"snap", "rollback", "vm@before"});
  MustRun({"export", "vm", dir_ / "out"});
  EXPECT_EQ(ReadFile(dir_ / "out"), a);
  EXPECT_EQ(SnapNames("vm"), (std::vector<std::string>{"before"}));  // the snapshot stays
}

TEST_F(SnapCliTest, RefusalsNameWhatIsWrong) {
  MustRun({"create", "vm", "--size", "1M"});
  MustRun({"snap", "create", "vm@s1"});
  MustRun({"snap", "create", "vm@s2"});

  RunResult r = ExpectFailsInStore({"snap", "create", "vm@s1"});
  EXPECT_NE(r.err.find("s1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("already"), std::string::npos) << r.err;

  for (const char* verb : {"rm", "rollback"}) {
    r = ExpectFailsInStore({"snap", verb, "vm@nosuch"});
    EXPECT_NE(r.err.find("nosuch"), std::string::npos) << verb << ": " << r.err;
  }
  r = ExpectFailsInStore({"snap", "rename", "vm@nosuch", "x"});
  EXPECT_NE(r.err.find("nosuch"), std::string::npos) << r.err;
  r = ExpectFailsInStore({"snap", "rename", "vm@s1", "s2"});
  EXPECT_NE(r.err.find("s2"), std::string::npos) << r.err;
  // A rename to its own name is a no-op, as in the engine: no AlreadyExists.
  for (const char* same : {"s1", "vm@s1"}) {
    RunResult ok = H({"snap", "rename", "vm@s1", same});
    EXPECT_EQ(ok.exit_code, 0) << same << ": " << ok.err;
    EXPECT_NE(ok.out.find("nothing changed"), std::string::npos) << ok.out;
  }
  r = ExpectFailsInStore({"snap", "rename", "vm@nosuch", "nosuch"});
  EXPECT_NE(r.err.find("nosuch"), std::string::npos) << r.err;
  r = ExpectFailsInStore({"snap", "rename", "vm@s1", "other@s3"});
  EXPECT_NE(r.err.find("other"), std::string::npos) << r.err;
  ExpectFailsInStore({"snap", "rename", "vm@s1", "bad/name"});

  // A missing volume is named.
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"snap", "create", "novol@s"},
           {"snap", "rm", "novol@s"},
           {"snap", "rollback", "novol@s"},
           {"snap", "rename", "novol@s", "t"},
           {"snap", "ls", "novol"},
           {"snap", "ls", "novol", "--json"}}) {
    r = ExpectFailsInStore(args);
    EXPECT_NE(r.err.find("novol"), std::string::npos) << r.err;
  }

  // Bad specs.
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"snap", "create", "vm"},        // no snapshot named
           {"snap", "create", "vm@"},
           {"snap", "create", "a@b@c"},
           {"snap", "create", "@s"},
           {"snap", "create", "vm@.hidden"},
           {"snap", "rm", "vm"},
           {"snap", "rollback", "vm"},
           {"snap", "ls", "vm@s1"}}) {
    r = ExpectFailsInStore(args);
    EXPECT_NE(r.err.find(args[2]), std::string::npos) << r.err;
  }
  ExpectFailsInStore({"snap", "create"}, 2);
  ExpectFailsInStore({"snap", "rename", "vm@s1"}, 2);
  ExpectFailsInStore({"snap"}, 2);
  EXPECT_EQ(SnapNames("vm"), (std::vector<std::string>{"s1", "s2"}));
}

// ---- the trash (doc/snapshots.md "Trash") ----------------------------------------

TEST_F(SnapCliTest, TrashKeepsWhatClonesUseAndDeletesItWithTheLastOne) {
  const std::string a = RandomBytes(1 << 20, 7);
  WriteFile(dir_ / "a", a);
  MustRun({"import", "vm", dir_ / "a"});
  MustRun({"snap", "create", "vm@base"});
  MustRun({"snap", "create", "vm@other"});
  MustRun({"clone", "vm@base", "c1"});
  MustRun({"clone", "vm@base", "c2"});

  // Refusals say why and what to do, and change nothing.
  RunResult r = ExpectFailsInStore({"snap", "rm", "vm@base"});
  EXPECT_NE(r.err.find("has 2 clones (c1, c2)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--trash"), std::string::npos) << r.err;
  r = H({"rm", "vm"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("base, other"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("hbiss rm --trash vm"), std::string::npos) << r.err;

  // snap rm --trash: gone from ls, shown by ls --all, its name free.
  r = H({"snap", "rm", "--trash", "vm@base"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("moved snapshot vm@base to the trash"), std::string::npos) << r.out;
  EXPECT_EQ(SnapNames("vm"), std::vector<std::string>{"other"});
  RunResult all = H({"snap", "ls", "--all", "vm", "--json"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  nlohmann::json j = nlohmann::json::parse(all.out);
  ASSERT_EQ(j.size(), 2u) << all.out;
  EXPECT_EQ(j[0]["name"], "base");
  EXPECT_EQ(j[0]["trashed"], true);
  EXPECT_FALSE(j[1].contains("trashed")) << all.out;
  std::vector<std::string> table = Lines(H({"snap", "ls", "--all", "vm"}).out);
  ASSERT_EQ(table.size(), 3u);
  EXPECT_NE(table[0].find("NAMESPACE"), std::string::npos) << table[0];
  EXPECT_NE(table[1].find("trash"), std::string::npos) << table[1];
  r = ExpectFailsInStore({"clone", "vm@base", "c3"});
  EXPECT_NE(r.err.find("trash"), std::string::npos) << r.err;
  MustRun({"snap", "create", "vm@base"});
  MustRun({"snap", "rm", "vm@base"});  // the new one has no clone
  // A snapshot without clones is just removed, --trash or not.
  r = H({"snap", "rm", "--trash", "vm@other"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("removed snapshot vm@other"), std::string::npos) << r.out;

  RunResult ls = H({"trash", "ls", "--json"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  j = nlohmann::json::parse(ls.out);
  ASSERT_EQ(j.size(), 1u) << ls.out;
  EXPECT_EQ(j[0]["volume"], "vm");
  EXPECT_EQ(j[0]["snapshot"], "base");
  EXPECT_EQ(j[0]["children"], (nlohmann::json{"c1", "c2"}));

  // The clones read the trashed snapshot's data.
  MustRun({"export", "c1", dir_ / "c1"});
  EXPECT_EQ(ReadFile(dir_ / "c1"), a);
  // rm --trash of the volume: it goes to the trash with its snapshot.
  r = H({"rm", "--trash", "vm"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("moved volume vm to the trash"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("c1, c2"), std::string::npos) << r.out;
  EXPECT_EQ(Lines(H({"ls"}).out), (std::vector<std::string>{"c1", "c2"}));
  r = ExpectFailsInStore({"create", "vm", "--size", "1M"});
  EXPECT_NE(r.err.find("in the trash"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("cannot be reused"), std::string::npos) << r.err;
  r = ExpectFailsInStore({"snap", "create", "vm@x"});
  EXPECT_NE(r.err.find("trash"), std::string::npos) << r.err;
  ls = H({"trash", "ls"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  table = Lines(ls.out);
  ASSERT_EQ(table.size(), 3u) << ls.out;
  EXPECT_NE(table[0].find("WAITS FOR"), std::string::npos) << table[0];
  EXPECT_EQ(table[1].rfind("vm ", 0), 0u) << table[1];
  EXPECT_NE(table[2].find("vm@base"), std::string::npos) << table[2];

  // The last clone goes: so do the snapshot and the volume.
  MustRun({"rm", "c1"});
  j = nlohmann::json::parse(H({"trash", "ls", "--json"}).out);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["children"], (nlohmann::json{"c2"}));
  MustRun({"flatten", "c2", "--no-progress"});
  EXPECT_EQ(H({"trash", "ls", "--json"}).out, "[]\n");
  EXPECT_FALSE(fs::exists(fs::path(store_) / "volumes" / "vm"));
  MustRun({"export", "c2", dir_ / "c2"});
  EXPECT_EQ(ReadFile(dir_ / "c2"), a);
  MustRun({"create", "vm", "--size", "1M"});  // the name is free again
}

TEST_F(SnapCliTest, TrashRestoreAndPurge) {
  MustRun({"create", "vm", "--size", "1M"});
  MustRun({"snap", "create", "vm@base"});
  MustRun({"clone", "vm@base", "c"});
  MustRun({"rm", "--trash", "vm"});
  RunResult r = ExpectFailsInStore({"trash", "restore", "c"});
  EXPECT_NE(r.err.find("not in the trash"), std::string::npos) << r.err;
  r = H({"trash", "restore", "vm"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("restored volume vm"), std::string::npos) << r.out;
  EXPECT_EQ(Lines(H({"ls"}).out), (std::vector<std::string>{"c", "vm"}));
  // Its snapshot stayed trashed; purge has nothing to do while c uses it.
  MustRun({"trash", "purge"});
  nlohmann::json j = nlohmann::json::parse(H({"trash", "ls", "--json"}).out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["snapshot"], "base");
  MustRun({"rm", "c"});
  EXPECT_EQ(H({"trash", "ls", "--json"}).out, "[]\n");
  EXPECT_EQ(SnapLs("vm"), nlohmann::json::array());
  MustRun({"rm", "vm"});
}

// ---- du and diff (doc/snapshots.md "du", "diff") ---------------------------------

class SpaceCliTest : public CliTest {
 protected:
  nlohmann::json Json(const std::vector<std::string>& args) {
    RunResult r = H(args);
    EXPECT_EQ(r.exit_code, 0) << ::testing::PrintToString(args) << ": " << r.err;
    return nlohmann::json::parse(r.out);
  }
  // vm (1 MiB): all of it written, snapshot s1, then 16 blocks rewritten and
  // 4 after them zeroed.
  void MakeHistory() {
    WriteFile(dir_ / "a", RandomBytes(1 << 20, 21));
    MustRun({"import", "vm", dir_ / "a"});
    MustRun({"snap", "create", "vm@s1"});
    WriteFile(dir_ / "b", RandomBytes(16 * 4096, 22) + std::string(4 * 4096, '\0'));
    MustRun({"import", "vm", dir_ / "b"});
  }
};

TEST_F(SpaceCliTest, DiffListsWhatChanged) {
  MakeHistory();
  std::vector<std::string> table = Lines(H({"diff", "vm@s1"}).out);
  ASSERT_EQ(table.size(), 3u) << ::testing::PrintToString(table);
  EXPECT_EQ(table[0].substr(0, 6), "Offset");
  EXPECT_NE(table[0].find("Length"), std::string::npos);
  EXPECT_NE(table[0].find("Type"), std::string::npos);
  auto fields = [](const std::string& line) {
    std::istringstream in(line);
    std::vector<std::string> f;
    for (std::string w; in >> w;) f.push_back(w);
    return f;
  };
  EXPECT_EQ(fields(table[1]), (std::vector<std::string>{"0", "65536", "data"}));
  EXPECT_EQ(fields(table[2]), (std::vector<std::string>{"65536", "16384", "zero"}));
  // The head named explicitly gives the same; --json as rbd (exists is a string).
  EXPECT_EQ(H({"diff", "vm@s1", "vm"}).out, H({"diff", "vm@s1"}).out);
  nlohmann::json j = Json({"diff", "vm@s1", "--json"});
  EXPECT_EQ(j, nlohmann::json::parse(R"([{"offset":0,"length":65536,"exists":"true"},
                                         {"offset":65536,"length":16384,"exists":"false"}])"));
  MustRun({"snap", "create", "vm@s2"});
  EXPECT_EQ(Json({"diff", "vm@s2", "--json"}), nlohmann::json::array());
  EXPECT_EQ(Json({"diff", "vm@s1", "vm@s2", "--json"}), j);
  EXPECT_EQ(Lines(H({"diff", "vm@s2"}).out).size(), 1u);  // the header only
}

TEST_F(SpaceCliTest, DuReportsEveryRow) {
  MakeHistory();
  nlohmann::json j = Json({"du", "vm", "--json"});
  ASSERT_EQ(j["images"].size(), 2u) << j.dump();
  EXPECT_EQ(j["images"][0]["name"], "vm");
  EXPECT_EQ(j["images"][0]["snapshot"], "s1");
  EXPECT_EQ(j["images"][0]["provisioned_size"].get<uint64_t>(), 1u << 20);
  EXPECT_EQ(j["images"][0]["used_size"].get<uint64_t>(), 1u << 20);
  EXPECT_FALSE(j["images"][1].contains("snapshot"));
  EXPECT_EQ(j["images"][1]["used_size"].get<uint64_t>(), 16u * 4096);
  EXPECT_EQ(j["images"][1]["mapped_size"].get<uint64_t>(), (1u << 20) - 4 * 4096);
  EXPECT_GT(j["images"][1]["store_bytes"].get<uint64_t>(), 1u << 20);
  EXPECT_EQ(j["total_provisioned_size"].get<uint64_t>(), 1u << 20);
  EXPECT_EQ(j["total_used_size"].get<uint64_t>(), (1u << 20) + 16 * 4096);

  std::vector<std::string> table = Lines(H({"du", "vm"}).out);
  ASSERT_EQ(table.size(), 3u) << ::testing::PrintToString(table);
  EXPECT_EQ(table[0].substr(0, 4), "NAME");
  EXPECT_NE(table[0].find("PROVISIONED"), std::string::npos);
  EXPECT_NE(table[0].find("USED"), std::string::npos);
  EXPECT_EQ(table[1].substr(0, 5), "vm@s1");
  EXPECT_EQ(table[2].substr(0, 3), "vm ");

  // Every volume, with a total row once there are two.
  MustRun({"create", "other", "--size", "2M"});
  table = Lines(H({"du"}).out);
  ASSERT_EQ(table.size(), 5u) << ::testing::PrintToString(table);
  EXPECT_EQ(table[1].substr(0, 6), "other ");
  EXPECT_EQ(table[4].substr(0, 7), "<TOTAL>");
  nlohmann::json all = Json({"du", "--json"});
  EXPECT_EQ(all["images"].size(), 3u);
  EXPECT_EQ(all["total_provisioned_size"].get<uint64_t>(), 3u << 20);
}

TEST_F(SpaceCliTest, ErrorsAreOneLine) {
  MakeHistory();
  MustRun({"create", "other", "--size", "1M"});
  RunResult r = ExpectFailsInStore({"diff", "vm"});
  EXPECT_NE(r.err.find("names no snapshot"), std::string::npos) << r.err;
  r = ExpectFailsInStore({"diff", "vm@nope"});
  EXPECT_NE(r.err.find("vm@nope does not exist"), std::string::npos) << r.err;
  ExpectFailsInStore({"diff", "vm@s1", "vm@nope"});
  r = ExpectFailsInStore({"diff", "vm@s1", "other"});
  EXPECT_NE(r.err.find("different volumes"), std::string::npos) << r.err;
  ExpectFailsInStore({"diff", "novol@s1"});
  ExpectFailsInStore({"diff", "vm@@s1"});
  r = ExpectFailsInStore({"du", "novol"});
  EXPECT_NE(r.err.find("novol"), std::string::npos) << r.err;
  ExpectFailsInStore({"du", "vm@s1"});
  ExpectFailsInStore({"diff"}, 2);
}

// `hbiss du` of every volume stopped at the first one it could not read.
// Now that one is reported (stderr, its row, the JSON's errors) and the
// others are still shown; the exit status says something failed.
TEST_F(SpaceCliTest, DuOfEveryVolumeGoesOnPastOneItCannotRead) {
  MakeHistory();
  MustRun({"create", "bad", "--size", "1M"});
  MustRun({"create", "zz", "--size", "2M"});
  WriteFile(store_ + "/volumes/bad/meta", "not json");
  RunResult r = H({"du"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("volume bad"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("1 of 3 volumes"), std::string::npos) << r.err;
  std::vector<std::string> table = Lines(r.out);
  ASSERT_EQ(table.size(), 6u) << r.out;  // header, vm@s1, vm, zz, bad, total
  EXPECT_NE(r.out.find("\nvm@s1 "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nzz "), std::string::npos) << r.out;
  EXPECT_EQ(table[4].substr(0, 4), "bad ") << r.out;
  EXPECT_NE(table[4].find("error"), std::string::npos) << r.out;
  r = H({"du", "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["images"].size(), 3u) << r.out;
  ASSERT_EQ(j["errors"].size(), 1u) << r.out;
  EXPECT_EQ(j["errors"][0]["name"], "bad");
  EXPECT_EQ(j["total_provisioned_size"].get<uint64_t>(), 3u << 20);
  // One volume named: its error, as before.
  ExpectFailsInStore({"du", "bad"});
  EXPECT_EQ(H({"du", "zz"}).exit_code, 0);
}

TEST_F(SpaceCliTest, CloneAgainstItsParentSnapshot) {
  MakeHistory();
  MustRun({"clone", "vm@s1", "c"});
  WriteFile(dir_ / "c", RandomBytes(3 * 4096, 23));
  MustRun({"import", "c", dir_ / "c"});
  nlohmann::json j = Json({"du", "c", "--json"});
  ASSERT_EQ(j["images"].size(), 1u);
  EXPECT_EQ(j["images"][0]["used_size"].get<uint64_t>(), 3u * 4096);
  EXPECT_EQ(j["images"][0]["own_size"].get<uint64_t>(), 3u * 4096);
  EXPECT_EQ(j["images"][0]["shared_size"].get<uint64_t>(), (1u << 20) - 3 * 4096);
  EXPECT_EQ(Json({"diff", "vm@s1", "c", "--json"}),
            nlohmann::json::parse(R"([{"offset":0,"length":12288,"exists":"true"}])"));
}

}  // namespace
}  // namespace hbiss::clitest
