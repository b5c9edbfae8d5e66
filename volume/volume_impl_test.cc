// Tests of VolumeImpl's threads through its test hooks (volume_testing.h,
// util/thread.h): what the flusher holds while it encodes a checkpoint, and
// how Open copes when the OS refuses the engine's threads.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "store/fault_injection_store.h"
#include "store/memory_store.h"
#include "util/thread.h"
#include "volume/epoch.h"
#include "volume/volume.h"
#include "volume/volume_testing.h"

namespace hbiss::volume {
namespace {

using std::chrono::seconds;

constexpr uint64_t kVolSize = 8 << 20;

std::vector<uint8_t> Block(uint64_t block, uint64_t version) {
  std::vector<uint8_t> b(kBlockSize);
  for (size_t i = 0; i < b.size(); i++) b[i] = uint8_t(block * 29 + version * 7 + i / 32);
  std::memcpy(b.data(), &block, 8);
  std::memcpy(b.data() + 8, &version, 8);
  return b;
}

// A gate the flusher's encode hook waits at: the test sees it arrive, does
// its work, and opens it. The flusher waits at most `limit`, so a test that
// fails never leaves it blocked.
class EncodeGate {
 public:
  explicit EncodeGate(std::chrono::steady_clock::duration limit) : limit_(limit) {}

  void Arrive() {
    std::unique_lock<std::mutex> l(mu_);
    arrived_++;
    cv_.notify_all();
    cv_.wait_for(l, limit_, [&] { return open_; });
  }
  bool WaitArrived(std::chrono::steady_clock::duration d) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, d, [&] { return arrived_ > 0; });
  }
  void Open() {
    std::lock_guard<std::mutex> l(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  const std::chrono::steady_clock::duration limit_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  bool open_ = false;
};

class VolumeImplTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CreateOptions co;
    co.size = kVolSize;
    co.segment_size = 256 << 10;
    ASSERT_TRUE(Volume::Create(&store_, "v", co).ok());
  }
  void TearDown() override {
    testing::SetCheckpointEncodeHook(nullptr);
    FailThreadStartsForTest(0);
  }

  store::MemoryStore store_;
};

// Pins: the flusher encoded every checkpoint with the volume mutex held, so
// a big map (a second to encode) stalled every Write, Read and BlockStatus
// for that long. Now it encodes a copy-on-write snapshot outside mu_: all
// three complete while the encode is (held) in progress.
TEST_F(VolumeImplTest, CheckpointEncodeDoesNotHoldTheVolumeMutex) {
  EncodeGate gate(seconds(60));
  testing::SetCheckpointEncodeHook([&] { gate.Arrive(); });
  OpenOptions o;
  o.clean_threshold = 0;
  o.checkpoint_interval = 512 << 10;
  auto v = Volume::Open(&store_, "v", o);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  Volume* vol = v->get();
  // Past the checkpoint interval: the flusher starts a checkpoint.
  // (No Flush: it would wait for the flusher, which encodes first.)
  for (uint64_t b = 0; b < 256; b++) ASSERT_TRUE(vol->Write(b * kBlockSize, Block(b, 1)).ok());
  ASSERT_TRUE(gate.WaitArrived(seconds(30))) << "no checkpoint was encoded";

  // Inside the encode: the volume must still serve I/O (on another thread,
  // so that a regression fails the test instead of hanging it).
  auto io = std::async(std::launch::async, [&]() -> std::string {
    if (Status s = vol->Write(300 * kBlockSize, Block(300, 2)); !s.ok()) return s.ToString();
    std::vector<uint8_t> got(kBlockSize);
    if (Status s = vol->Read(300 * kBlockSize, got); !s.ok()) return s.ToString();
    if (got != Block(300, 2)) return "read back wrong data";
    if (Status s = vol->Read(5 * kBlockSize, got); !s.ok()) return s.ToString();
    if (got != Block(5, 1)) return "read back wrong data";
    auto ext = vol->BlockStatus(0, kVolSize);
    if (!ext.ok()) return ext.status().ToString();
    if (ext->empty() || !ext->front().allocated) return "BlockStatus lost the data";
    return "";
  });
  const bool done = io.wait_for(seconds(20)) == std::future_status::ready;
  gate.Open();  // let the flusher finish whatever happened
  ASSERT_TRUE(done) << "Write/Read/BlockStatus blocked while a checkpoint was encoded";
  EXPECT_EQ(io.get(), "");
  ASSERT_TRUE(vol->Close().ok());
}

// The model-level side of the same change: the checkpoint encoded from the
// snapshot while writes and trims went on must hold the map as of its own
// log position, no later and no earlier. Recovery from that checkpoint
// (the newer one Close wrote deleted) plus roll-forward equals the model.
TEST_F(VolumeImplTest, CheckpointEncodedWhileWritesGoOnRecoversExactly) {
  EncodeGate gate(seconds(60));
  testing::SetCheckpointEncodeHook([&] { gate.Arrive(); });
  OpenOptions o;
  o.clean_threshold = 0;
  o.checkpoint_interval = 512 << 10;
  auto v = Volume::Open(&store_, "v", o);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  Volume* vol = v->get();
  const uint64_t blocks = kVolSize / kBlockSize;
  std::vector<uint64_t> model(blocks, 0);  // version per block, 0: zeros
  auto write = [&](uint64_t b, uint64_t version) {
    model[b] = version;
    ASSERT_TRUE(vol->Write(b * kBlockSize, Block(b, version)).ok());
  };
  // Past the interval (and then less than another interval of log, so the
  // next checkpoint is the one Close writes).
  for (uint64_t b = 0; b < 160; b++) write(b, 1);
  ASSERT_TRUE(gate.WaitArrived(seconds(30))) << "no checkpoint was encoded";
  const uint64_t before = vol->Info().checkpoint_seq;
  // While it is encoded: overwrite, trim and write fresh blocks.
  for (uint64_t b = 0; b < 32; b++) write(b * 3, 2);
  ASSERT_TRUE(vol->Trim(100 * kBlockSize, 20 * kBlockSize).ok());
  for (uint64_t b = 100; b < 120; b++) model[b] = 0;
  for (uint64_t b = 400; b < 420; b++) write(b, 3);
  ASSERT_TRUE(vol->Trim(401 * kBlockSize, kBlockSize).ok());
  model[401] = 0;
  gate.Open();
  ASSERT_TRUE(vol->Flush().ok());
  uint64_t seq = 0;
  for (int i = 0; i < 3000 && (seq = vol->Info().checkpoint_seq) == before; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GT(seq, before) << "the held checkpoint was never written";
  for (uint64_t b = 0; b < 16; b++) write(b * 5, 4);
  ASSERT_TRUE(vol->Close().ok());
  v->reset();

  // Recover from that checkpoint, not from the one Close wrote.
  auto l = store_.List(CurrentLogPath(&store_, "v") + "/ckpt");
  ASSERT_TRUE(l.ok());
  bool found = false;
  for (const auto& obj : *l) {
    uint64_t s = std::stoull(obj.name, nullptr, 16);
    if (s == seq) found = true;
    if (s > seq) {
      ASSERT_TRUE(store_.Delete(CurrentLogPath(&store_, "v") + "/ckpt/" + obj.name).ok());
    }
  }
  ASSERT_TRUE(found) << "checkpoint " << seq << " is gone (another one was written)";
  auto r = Volume::Open(&store_, "v", o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->Info().checkpoint_seq, seq);
  std::vector<uint8_t> got(kBlockSize);
  const std::vector<uint8_t> zeros(kBlockSize, 0);
  for (uint64_t b = 0; b < blocks; b++) {
    ASSERT_TRUE((*r)->Read(b * kBlockSize, got).ok()) << "block " << b;
    ASSERT_TRUE(got == (model[b] == 0 ? zeros : Block(b, model[b])))
        << "block " << b << " version " << model[b];
  }
  ASSERT_TRUE((*r)->Close().ok());
}

// Pins: std::thread's constructor threw when the OS refused the flusher
// thread, and the uncaught exception aborted the whole process (every
// volume it served). Now Open returns a retryable IOError, releases the
// volume's lock and leaves the volume as it was: the next Open works.
TEST_F(VolumeImplTest, RefusedFlusherThreadFailsOpenWithRetryableIOError) {
  {
    auto v = Volume::Open(&store_, "v");
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    for (uint64_t b = 0; b < 100; b++) ASSERT_TRUE((*v)->Write(b * kBlockSize, Block(b, 1)).ok());
    ASSERT_TRUE((*v)->Close().ok());
  }
  FailThreadStartsForTest(1, "volume flusher");
  auto r = Volume::Open(&store_, "v");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kIOError) << r.status().ToString();
  EXPECT_TRUE(r.status().retryable()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("volume flusher"), std::string::npos)
      << r.status().ToString();

  auto v = Volume::Open(&store_, "v");
  ASSERT_TRUE(v.ok()) << "the failed open left the volume unopenable: " << v.status().ToString();
  std::vector<uint8_t> got(kBlockSize);
  for (uint64_t b = 0; b < 100; b++) {
    ASSERT_TRUE((*v)->Read(b * kBlockSize, got).ok());
    ASSERT_TRUE(got == Block(b, 1)) << "block " << b;
  }
  ASSERT_TRUE((*v)->Write(0, Block(0, 2)).ok());
  ASSERT_TRUE((*v)->Close().ok());
}

// The same after a crash, when Open has recovered (and logged the unproven
// tail of the log again) before it starts the flusher: the refused start
// fails Open promptly, and the next Open still finds every flushed write.
TEST_F(VolumeImplTest, RefusedFlusherThreadAfterACrashFailsOpenAndLosesNothing) {
  store::FaultInjectionStore fs(&store_, 42);
  {
    auto v = Volume::Open(&fs, "v");
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    for (uint64_t b = 0; b < 100; b++) ASSERT_TRUE((*v)->Write(b * kBlockSize, Block(b, 1)).ok());
    ASSERT_TRUE((*v)->Flush().ok());
    for (uint64_t b = 0; b < 10; b++) ASSERT_TRUE((*v)->Write(b * kBlockSize, Block(b, 2)).ok());
    fs.CrashAfter(0);  // Close's first store write crashes
  }
  ASSERT_TRUE(fs.SimulateCrash(store::FaultInjectionStore::CrashKind::kProcessCrash).ok());
  FailThreadStartsForTest(1, "volume flusher");
  auto open = std::async(std::launch::async, [&] { return Volume::Open(&fs, "v").status(); });
  if (open.wait_for(seconds(30)) != std::future_status::ready) {
    ADD_FAILURE() << "Open with the flusher refused hangs";
    std::fflush(stdout);
    std::_Exit(1);
  }
  Status s = open.get();
  EXPECT_EQ(s.code(), Status::Code::kIOError) << s.ToString();
  EXPECT_TRUE(s.retryable()) << s.ToString();

  auto v = Volume::Open(&fs, "v");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  std::vector<uint8_t> got(kBlockSize);
  for (uint64_t b = 0; b < 100; b++) {
    ASSERT_TRUE((*v)->Read(b * kBlockSize, got).ok()) << "block " << b;
    // Blocks 0..9 were rewritten but not flushed: either version.
    ASSERT_TRUE(got == Block(b, 1) || (b < 10 && got == Block(b, 2))) << "block " << b;
  }
  ASSERT_TRUE((*v)->Close().ok());
}

// Pins the same abort for the cleaner thread. The volume works without it:
// Open succeeds (and says so in the log), and Clean still cleans.
TEST_F(VolumeImplTest, RefusedCleanerThreadStillOpensAndCleanWorks) {
  FailThreadStartsForTest(1, "volume cleaner");
  OpenOptions o;
  o.clean_threshold = 0.5;
  auto v = Volume::Open(&store_, "v", o);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  Volume* vol = v->get();
  // Three passes over the same 256 blocks: two thirds of the log is dead.
  for (uint64_t version = 1; version <= 3; version++) {
    for (uint64_t b = 0; b < 256; b++) {
      ASSERT_TRUE(vol->Write(b * kBlockSize, Block(b, version)).ok());
    }
    ASSERT_TRUE(vol->Flush().ok());
  }
  auto c = vol->Clean(1.0);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_GT(c->segments_deleted, 0u);
  std::vector<uint8_t> got(kBlockSize);
  for (uint64_t b = 0; b < 256; b++) {
    ASSERT_TRUE(vol->Read(b * kBlockSize, got).ok());
    ASSERT_TRUE(got == Block(b, 3)) << "block " << b;
  }
  ASSERT_TRUE(vol->Close().ok());
}

}  // namespace
}  // namespace hbiss::volume
