// `hbiss fsck` through the real executable on a local store: exit codes as
// qemu-img check (0, 1, 2, 3), the lines naming what is wrong, --json, and
// --repair followed by an export that still matches the imported image.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

#include "tests/cli/cli_test_util.h"

namespace hbiss::clitest {
namespace {

constexpr size_t kImageBytes = 600 * 1024;  // 150 blocks

class FsckCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = dir_ / "store";
    fs::create_directory(store_);
    image_ = RandomBytes(kImageBytes, 42);
    WriteFile(dir_ / "img", image_);
    MustRun({"create", "v", "--size", "1M", "--segment-size", "64K"});
    MustRun({"import", "v", dir_ / "img"});
    // Overwrite part of it and clean, so that segments were deleted.
    MustRun({"import", "v", dir_ / "img"});
    MustRun({"clean", "v", "--threshold", "1"});
  }

  RunResult H(std::vector<std::string> args) {
    args.insert(args.begin(), {"--store", store_});
    return Hbiss(args);
  }
  void MustRun(const std::vector<std::string>& args) {
    RunResult r = H(args);
    ASSERT_EQ(r.exit_code, 0) << ::testing::PrintToString(args) << ": " << r.out << r.err;
  }

  // The current epoch's log directory of volume v.
  std::string Log() {
    std::string best;
    for (const auto& e : fs::directory_iterator(store_ + "/volumes/v/epoch")) {
      best = std::max(best, e.path().string());
    }
    return best;
  }
  std::vector<std::string> Objects(const std::string& sub) {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(Log() + "/" + sub)) {
      names.push_back(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }
  void ExpectExportMatches() {
    MustRun({"export", "v", dir_ / "out"});
    std::string out = ReadFile(dir_ / "out");
    ASSERT_GE(out.size(), image_.size());
    EXPECT_TRUE(out.compare(0, image_.size(), image_) == 0) << "exported data differs";
  }

  TempDir dir_;
  std::string store_;
  std::string image_;
};

TEST_F(FsckCliTest, ACleanVolumeIsConsistent) {
  RunResult r = H({"fsck", "v"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("No errors were found on the volume."), std::string::npos) << r.out;
  EXPECT_TRUE(r.err.empty()) << r.err;
}

TEST_F(FsckCliTest, JsonHasTheStableFields) {
  RunResult r = H({"fsck", "v", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  for (const char* key : {"volume", "check-errors", "corruptions", "leaks", "leaked-bytes",
                          "problems", "segments", "mapped-blocks", "checkpoint"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["volume"], "v");
  EXPECT_EQ(j["corruptions"], 0);
  EXPECT_EQ(j["mapped-blocks"], kImageBytes / 4096);
  EXPECT_TRUE(j["problems"].is_array());
  EXPECT_GT(j["segments"].get<uint64_t>(), 0u);
}

TEST_F(FsckCliTest, AFlippedDataByteIsCorruptionNamingLbaAndSegment) {
  // The first data slot of the newest segment (slot 1 is its batch header).
  const std::string seg = Objects("seg").back();
  std::string data = ReadFile(Log() + "/seg/" + seg);
  ASSERT_GT(data.size(), 3 * 4096u);
  data[2 * 4096 + 5] ^= 0x20;
  WriteFile(Log() + "/seg/" + seg, data);
  RunResult r = H({"fsck", "v"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.out.find("ERROR lba "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("segment " + seg + " offset 8192: data fails its CRC"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("1 errors were found on the volume."), std::string::npos) << r.out;
  RunResult j = H({"fsck", "v", "--json"});
  EXPECT_EQ(j.exit_code, 2);
  nlohmann::json js = nlohmann::json::parse(j.out);
  ASSERT_EQ(js["problems"].size(), 1u);
  EXPECT_EQ(js["problems"][0]["kind"], "corruption");
  EXPECT_EQ(js["problems"][0]["offset"], 8192);
  EXPECT_TRUE(js["problems"][0]["lba"].is_number());
  // --repair keeps the block (and says so): still exit 2.
  RunResult rr = H({"fsck", "v", "--repair"});
  EXPECT_EQ(rr.exit_code, 2) << rr.out << rr.err;
}

TEST_F(FsckCliTest, ACorruptNewestCheckpointIsRewrittenByRepair) {
  const std::string ck = Objects("ckpt").back();
  std::string data = ReadFile(Log() + "/ckpt/" + ck);
  data[data.size() / 2] ^= 0x01;
  WriteFile(Log() + "/ckpt/" + ck, data);
  RunResult r = H({"fsck", "v"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.out.find("ERROR checkpoint "), std::string::npos) << r.out;
  RunResult rr = H({"fsck", "v", "--repair"});
  EXPECT_EQ(rr.exit_code, 0) << rr.out << rr.err;
  EXPECT_NE(rr.out.find("Repairing: wrote checkpoint"), std::string::npos) << rr.out;
  EXPECT_EQ(H({"fsck", "v"}).exit_code, 0);
  ExpectExportMatches();
}

TEST_F(FsckCliTest, AnExtraSegmentIsALeakThatRepairRemoves) {
  const std::string extra = Log() + "/seg/0000000000000fff";
  WriteFile(extra, std::string(8192, 'x'));
  RunResult r = H({"fsck", "v"});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_NE(r.out.find("Leaked segment 0000000000000fff: 8192 bytes"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("1 leaked segments were found (8192 bytes) on the volume."),
            std::string::npos)
      << r.out;
  nlohmann::json j = nlohmann::json::parse(H({"fsck", "v", "--json"}).out);
  EXPECT_EQ(j["leaks"], 1);
  EXPECT_EQ(j["leaked-bytes"], 8192);
  RunResult rr = H({"fsck", "v", "--repair", "--json"});
  EXPECT_EQ(rr.exit_code, 0) << rr.out << rr.err;
  nlohmann::json jr = nlohmann::json::parse(rr.out);
  EXPECT_EQ(jr["leaks"], 0);
  EXPECT_EQ(jr["before"]["leaks"], 1);
  EXPECT_FALSE(fs::exists(extra));
  ExpectExportMatches();
}

TEST_F(FsckCliTest, AMissingSegmentTheMapNeedsIsCorruption) {
  const std::string seg = Objects("seg").back();
  fs::remove(Log() + "/seg/" + seg);
  RunResult r = H({"fsck", "v"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.out.find("segment " + seg), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("segment is missing"), std::string::npos) << r.out;
}

TEST_F(FsckCliTest, WithoutRepairNothingInTheStoreChanges) {
  const std::string seg = Objects("seg").back();
  std::string data = ReadFile(Log() + "/seg/" + seg);
  data[2 * 4096 + 5] ^= 0x20;
  WriteFile(Log() + "/seg/" + seg, data);
  WriteFile(Log() + "/seg/0000000000000fff", std::string(4096, 'x'));
  auto before = Snapshot(store_);
  EXPECT_EQ(H({"fsck", "v"}).exit_code, 2);
  EXPECT_EQ(H({"fsck", "v", "--json"}).exit_code, 2);
  EXPECT_EQ(Snapshot(store_), before) << "a check without --repair changed the store";
}

TEST_F(FsckCliTest, ABadNameCannotBeChecked) {
  RunResult r = H({"fsck", "--", "a/b"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_EQ(r.err.rfind("hbiss: fsck a/b: check not completed: InvalidArgument", 0), 0u) << r.err;
}

TEST_F(FsckCliTest, RepairOfAVolumeOpenForWritingIsRefused) {
  WriteFile(Log() + "/seg/0000000000000fff", std::string(4096, 'x'));
  // Hold the volume's lock as a writer does (the local store's lock is flock).
  const std::string lock = store_ + "/volumes/v/lock";
  int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  RunResult r = H({"fsck", "v"});  // a check takes no lock
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  RunResult rr = H({"fsck", "v", "--repair"});
  EXPECT_EQ(rr.exit_code, 1) << rr.out << rr.err;
  EXPECT_NE(rr.err.find("hbiss: fsck v: repair not completed: Busy: volume v is open for writing"),
            std::string::npos)
      << rr.err;
  EXPECT_TRUE(fs::exists(Log() + "/seg/0000000000000fff"));
  ::close(fd);
  EXPECT_EQ(H({"fsck", "v", "--repair"}).exit_code, 0);
}

// Imports `file` into volume v with hbiss running as a child process, which
// gets SIGKILL after `delay_ms` if it is still running.
void ImportKilledAfter(const std::string& store, const std::string& file, int delay_ms) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_RDWR);
    for (int target : {0, 1, 2}) dup2(devnull, target);
    execl(HBISS_BIN, HBISS_BIN, "--store", store.c_str(), "import", "--flush-interval", "256K",
          "v", file.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  usleep(static_cast<useconds_t>(delay_ms) * 1000);
  kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

// Writes, cleaning, then imports killed at several moments. A kill leaves no
// corruption; it may leave leaks (a segment whose creation it cut, one the
// cleaner emptied but had not deleted yet, the summary of one it had), as
// qemu-img check reports leaked clusters after a crash. --repair removes
// them, and the volume then reads as one of the images.
TEST_F(FsckCliTest, AVolumeAfterKillsDuringImportHasNoCorruptionAndRepairsClean) {
  const std::string image2 = RandomBytes(kImageBytes, 43);
  WriteFile(dir_ / "img2", image2);
  for (int round = 0; round < 4; round++) {
    SCOPED_TRACE("round " + std::to_string(round));
    ImportKilledAfter(store_, round % 2 ? dir_ / "img" : dir_ / "img2", 20 + 40 * round);
    RunResult r = H({"fsck", "v", "--json"});
    EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 3) << r.out << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out)["corruptions"], 0) << r.out;
  }
  MustRun({"import", "v", dir_ / "img"});  // a last import that completes
  RunResult rr = H({"fsck", "v", "--repair"});
  EXPECT_EQ(rr.exit_code, 0) << rr.out << rr.err;
  EXPECT_EQ(H({"fsck", "v"}).exit_code, 0);
  ExpectExportMatches();
}

TEST_F(FsckCliTest, AMissingVolumeCannotBeChecked) {
  RunResult r = H({"fsck", "nope"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_EQ(r.err, "hbiss: fsck nope: check not completed: NotFound: volume nope does not exist\n");
}

}  // namespace
}  // namespace hbiss::clitest
