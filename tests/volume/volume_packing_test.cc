// Batch packing near the header's capacity, through the whole engine: the
// patterns that crashed a served volume (issue 8, C1: the batch header
// outgrew its slot), and random workloads that never flush, checked against
// a model, then after a flush and a reopen. The packing rules themselves are
// unit-tested in volume/batch_builder_test.cc.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "store/memory_store.h"
#include "volume/volume.h"

namespace hbiss::volume {
namespace {

constexpr uint64_t kVolumeBytes = 64ull << 20;

class PackingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CreateOptions co;
    co.size = kVolumeBytes;
    co.segment_size = 4 << 20;
    ASSERT_TRUE(Volume::Create(&store_, "v", co).ok());
    model_.assign(kVolumeBytes, 0);
    Reopen();
  }

  void Reopen() {
    if (v_) {
      ASSERT_TRUE(v_->Close().ok());
    }
    v_.reset();
    auto v = Volume::Open(&store_, "v");
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    v_ = std::move(*v);
  }

  void Write(uint64_t off, uint64_t len) {
    std::vector<uint8_t> d(len);
    for (uint64_t i = 0; i < len; i++) d[i] = uint8_t((off + i) * 131 + ++stamp_);
    Status s = v_->Write(off, d);
    ASSERT_TRUE(s.ok()) << s.ToString();
    std::memcpy(model_.data() + off, d.data(), len);
  }

  void Trim(uint64_t off, uint64_t len) {
    Status s = v_->Trim(off, len);
    ASSERT_TRUE(s.ok()) << s.ToString();
    std::memset(model_.data() + off, 0, len);
  }

  // Reads the whole volume back in 1 MiB pieces and compares with the model.
  void Verify(const char* when) {
    std::vector<uint8_t> got(1 << 20);
    for (uint64_t off = 0; off < kVolumeBytes; off += got.size()) {
      Status s = v_->Read(off, got);
      ASSERT_TRUE(s.ok()) << when << ": " << s.ToString();
      ASSERT_EQ(0, std::memcmp(got.data(), model_.data() + off, got.size()))
          << when << ": data differs in [" << off << ", +1 MiB)";
    }
  }

  void FlushReopenVerify() {
    Verify("before the flush");
    ASSERT_TRUE(v_->Flush().ok());
    Reopen();
    Verify("after reopen");
  }

  store::MemoryStore store_;
  std::unique_ptr<Volume> v_;
  std::vector<uint8_t> model_;
  uint8_t stamp_ = 0;
};

// About 230 scattered 4 KiB writes, a 4 KiB write at block X, then a write of
// 104 KiB or more at block X+1, no flush: this crashed `hbiss serve`.
TEST_F(PackingTest, ScatteredWritesThenWriteNextToTheLastOne) {
  for (uint64_t scattered : {200, 225, 230, 235, 250}) {
    for (uint64_t len : {104 << 10, 128 << 10, 1 << 20}) {
      const uint64_t base = scattered * 8 * 4096;
      for (uint64_t i = 0; i < scattered; i++) Write(base + i * 3 * 4096, 4096);
      const uint64_t x = (base / 4096) + scattered * 3 + 10;
      Write(x * 4096, 4096);
      Write((x + 1) * 4096, len);
      if (HasFatalFailure()) return;
    }
  }
  FlushReopenVerify();
}

// 300 scattered 4 KiB trims, then the same two writes.
TEST_F(PackingTest, ScatteredTrimsThenContiguousWrites) {
  Write(0, 16 << 20);
  ASSERT_TRUE(v_->Flush().ok());
  for (uint64_t scattered : {290, 300, 305, 310}) {
    for (uint64_t i = 0; i < scattered; i++) Trim(i * 2 * 4096, 4096);
    const uint64_t x = 4000 + scattered;
    Write(x * 4096, 4096);
    Write((x + 1) * 4096, 128 << 10);
    if (HasFatalFailure()) return;
  }
  FlushReopenVerify();
}

// Trims whose tail block is partial (an unmap piece that is not the last
// piece of its operation), contiguous with a finished trim, when the header
// is nearly full.
TEST_F(PackingTest, ContiguousTrimsWithPartialTails) {
  Write(0, 8 << 20);
  ASSERT_TRUE(v_->Flush().ok());
  for (uint64_t scattered : {295, 305, 309}) {
    for (uint64_t i = 0; i < scattered; i++) Trim(i * 2 * 4096, 4096);
    const uint64_t at = 1000 * 4096;
    Trim(at, 5 * 4096);
    Trim(at + 5 * 4096, 3 * 4096 + 100);
    Trim(at + 8 * 4096 + 100, 2 * 4096);
    if (HasFatalFailure()) return;
  }
  FlushReopenVerify();
}

// Random workloads that never flush: scattered and contiguous writes and
// trims of 1 B to 2 MiB, aligned and not, checked against the model as they
// go, then after a flush and a reopen.
TEST_F(PackingTest, RandomWorkloadsWithoutFlushes) {
  for (uint32_t seed = 1; seed <= 6; seed++) {
    std::mt19937_64 rng(seed);
    uint64_t next = 0;
    for (int i = 0; i < 1500; i++) {
      const bool contiguous = rng() % 3 == 0;
      uint64_t len = rng() % 4 == 0 ? 1 + rng() % (2 << 20) : 4096 * (1 + rng() % 4);
      if (rng() % 5 == 0) len = 1 + rng() % 8192;
      uint64_t off = contiguous ? next : (rng() % (kVolumeBytes / 4096)) * 4096;
      if (rng() % 4 == 0) off += rng() % 4096;
      if (off >= kVolumeBytes) off = rng() % (kVolumeBytes - 1);
      len = std::min(len, kVolumeBytes - off);
      if (rng() % 4 == 0) {
        Trim(off, len);
      } else {
        Write(off, len);
      }
      if (HasFatalFailure()) {
        ADD_FAILURE() << "seed " << seed << " op " << i;
        return;
      }
      next = off + len;
      if (i % 500 == 499) Verify("in the middle");
    }
    FlushReopenVerify();
    if (HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace hbiss::volume
