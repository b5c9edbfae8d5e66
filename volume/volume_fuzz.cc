// libFuzzer target over the volume engine. The input decodes into a sequence
// of Volume operations on a small volume over a FaultInjectionStore (over a
// MemoryStore), and every result is checked against the crash tests' model
// (tests/volume/crash_model.h):
//  * Read returns exactly the bytes of the acknowledged operations so far;
//  * BlockStatus tiles the asked range with extents that alternate, and every
//    hole reads as zeros;
//  * a clean Close and reopen changes nothing;
//  * after a crash (now, or at an armed store operation, even in the middle
//    of an op or inside the background threads), the reopened volume equals
//    the result of some prefix of the acknowledged operations that includes
//    every one acknowledged before the last completed Flush (volume.h).
//  * while the store says NoSpace (a full device, injected by opcode 16),
//    Write, Trim, WriteZeroes, Flush and Clean may fail with NoSpace and
//    then change nothing; nothing acknowledged is lost, and once space is
//    back the volume goes on (volume.h, "A full store").
// An operation may fail only once the store has crashed, or with NoSpace
// once NoSpace was injected. A check failure prints what differed, and the
// last operations, on stderr and aborts.
//
// Input format. A missing byte reads as 0; the run ends after the last
// complete opcode. Integers are little-endian.
//   byte 0   geometry: bits 0-1 the volume size (1, 2, 4, 16 MiB), or
//            64 MiB if bit 7 is set (the only size where writes reach the
//            32 MiB the engine promises, volume.h); bits 2-3 the segment
//            size (64 KiB, 256 KiB, 1 MiB, 4 MiB); bit 4 clean_threshold 0.5
//            (else 0: no background cleaner); bits 5-6 checkpoint_interval
//            (64 KiB, 256 KiB, 1 MiB, 8 MiB).
//   byte 1   the fault-injecting store's seed.
//   then operations: one opcode byte, low 4 bits the operation, bit 4 set
//   for a range in whole blocks (opcode 3 with bits 5-7 all set is 16, see
//   below); then its arguments. A range is
//     aligned:   u16 first block (mod the block count), u16 length code
//     unaligned: u32 offset (mod the size), u16 length code
//   where a length code c means ((2048 + (c & 2047)) << e) >> 11, e being
//   (c >> 11) mod 14 (blocks) or mod 26 (bytes): 1 to 2^26 - 1 units, log
//   scale; then clamped to the end of the volume and to 32 MiB.
//     0 Write         range; Pattern bytes tagged by an op counter
//     1 Trim          range
//     2 WriteZeroes   range
//     3 Flush
//     4 Read          range, compared with the model
//     5 BlockStatus   range, checked against the model
//     6 Clean         u8 t: Clean((t mod 11) / 10)
//     7 Close, reopen and compare the whole volume
//     8 Crash now     u8 k: power loss if k is even, else a process crash;
//                     reopen and check the prefix contract
//     9 Crash armed   u8 n, u8 k: the (n+1)-th mutating store operation
//                     from now crashes (CrashAfter(n)); the first operation
//                     that then fails recovers as for 8 with kind k
//    10 N scattered 4 KiB writes   u16 N-1 (mod 1024), u16 first block,
//                                  u8 stride-2: block i is
//                                  (first + i * stride) mod the block count
//    11 N scattered 4 KiB trims    the same arguments
//    12 N sequential writes        u16 N-1 (mod 1024), u16 first block,
//                                  u8 blocks per write - 1 (mod 64)
//    13 Read the whole volume and compare
//    14 BlockStatus of the whole volume
//    15 Info: mapped_bytes <= size
//    16 NoSpace       u8 n: the next n mod 8 + 1 mutating calls of the store
//                     (Create, Append, Sync, Close of a segment, Put) fail
//                     with NoSpace (a writer that failed stays failed, as a
//                     file whose write(2) hit ENOSPC; the store says it may
//                     run out of space, so volumes keep a reserve). Opcodes
//                     0xe3 and 0xf3 are 16.
//   Before a reopen, and at the end, the injection is cleared and the
//   volume given the time to resume (a Flush retried for up to 2 s).
// At the end of the input the volume is closed cleanly, reopened and
// compared. Each input is bounded: 64 MiB written, 512 MiB of bytes touched
// in all (model, reads, compares), 4096 operations, 32 reopens.
//
// HBISS_FUZZ_LOG=1 keeps the engine's log output (off by default).
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "store/fault_injection_store.h"
#include "store/memory_store.h"
#include "store/store_wrapper.h"
#include "tests/volume/crash_model.h"
#include "volume/volume.h"

namespace hbiss::volume {
namespace {

using crashtest::Apply;
using crashtest::FindPrefix;
using crashtest::Op;
using crashtest::Pattern;
using store::FaultInjectionStore;
using CrashKind = FaultInjectionStore::CrashKind;

constexpr uint64_t kMaxIo = 32ull << 20;
constexpr uint64_t kMaxWriteBytes = 64ull << 20;
constexpr uint64_t kMaxWorkBytes = 512ull << 20;
constexpr int kMaxOps = 4096;
constexpr int kMaxReopens = 32;
constexpr size_t kTraceOps = 16;  // operations printed on a failure

// Reads the input from the front; past the end every byte is 0.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  bool empty() const { return p_ >= end_; }
  uint8_t U8() { return p_ < end_ ? *p_++ : 0; }
  uint16_t U16() {
    uint16_t lo = U8();
    return uint16_t(lo | U8() << 8);
  }
  uint32_t U32() {
    uint32_t lo = U16();
    return lo | uint32_t(U16()) << 16;
  }

 private:
  const uint8_t* p_;
  const uint8_t* const end_;
};

// A store that fails the next n mutating calls with NoSpace (opcode 16): a
// device that is full for a while. A segment writer that failed stays
// failed, as a file whose write(2) hit ENOSPC. Thread-safe (the volume's
// background threads call it).
class NoSpaceStore : public store::StoreWrapper {
 public:
  explicit NoSpaceStore(store::Store* target) : StoreWrapper(target) {}

  bool MayRunOutOfSpace() const override { return true; }
  void FailNext(uint64_t n) {
    std::lock_guard<std::mutex> g(st_->mu);
    st_->pending += n;
    st_->ever = true;
  }
  void Clear() {
    std::lock_guard<std::mutex> g(st_->mu);
    st_->pending = 0;
  }
  // Whether NoSpace was ever injected: from then on NoSpace is a valid answer.
  bool ever() const {
    std::lock_guard<std::mutex> g(st_->mu);
    return st_->ever;
  }

  Result<std::unique_ptr<store::SegmentWriter>> Create(const std::string& name) override {
    if (st_->Take()) return Status::NoSpace("injected: create " + name);
    HBISS_ASSIGN_OR_RETURN(auto w, target()->Create(name));
    return std::unique_ptr<store::SegmentWriter>(std::make_unique<Writer>(std::move(w), st_));
  }
  Status Put(const std::string& name, std::span<const uint8_t> data) override {
    if (st_->Take()) return Status::NoSpace("injected: put " + name);
    return target()->Put(name, data);
  }

 private:
  struct State {
    mutable std::mutex mu;
    uint64_t pending = 0;
    bool ever = false;
    bool Take() {
      std::lock_guard<std::mutex> g(mu);
      if (pending == 0) return false;
      pending--;
      return true;
    }
  };
  class Writer : public store::SegmentWriterWrapper {
   public:
    Writer(std::unique_ptr<store::SegmentWriter> t, std::shared_ptr<State> st)
        : SegmentWriterWrapper(std::move(t)), st_(std::move(st)) {}
    Status Append(std::span<const uint8_t> data) override {
      if (Broken()) return Status::NoSpace("injected: append");
      return target()->Append(data);
    }
    Status Sync() override {
      if (Broken()) return Status::NoSpace("injected: sync");
      return target()->Sync();
    }
    Status Close() override {
      if (Broken()) return Status::NoSpace("injected: close");
      return target()->Close();
    }

   private:
    bool Broken() {
      if (!broken_ && st_->Take()) broken_ = true;
      return broken_;
    }
    const std::shared_ptr<State> st_;
    std::atomic<bool> broken_{false};
  };

  const std::shared_ptr<State> st_ = std::make_shared<State>();
};

uint64_t DecodeLength(uint16_t code, int max_exp) {
  int e = (code >> 11) % (max_exp + 1);
  return ((2048ull + (code & 2047)) << e) >> 11;
}

class Runner {
 public:
  Runner(const uint8_t* data, size_t size)
      : in_(data, size), geometry_(in_.U8()), seed_(in_.U8()), fs_(&mem_, seed_), ns_(&fs_) {
    const uint8_t g = geometry_;
    static constexpr uint64_t kSizes[] = {1ull << 20, 2ull << 20, 4ull << 20, 16ull << 20};
    static constexpr uint64_t kSegments[] = {64ull << 10, 256ull << 10, 1ull << 20, 4ull << 20};
    static constexpr uint64_t kCheckpoints[] = {64ull << 10, 256ull << 10, 1ull << 20, 8ull << 20};
    size_ = (g & 0x80) ? 64ull << 20 : kSizes[g & 3];
    blocks_ = size_ / kBlockSize;
    segment_size_ = kSegments[(g >> 2) & 3];
    oo_.clean_threshold = (g & 0x10) ? 0.5 : 0;
    oo_.checkpoint_interval = kCheckpoints[(g >> 5) & 3];
  }

  void Run();

 private:
  struct Range {
    uint64_t off = 0, len = 0;
  };

  [[noreturn]] void Fail(const char* fmt, ...) __attribute__((format(printf, 2, 3)));
  void Note(const char* fmt, ...) __attribute__((format(printf, 2, 3)));
  // An operation failed: fine (recover) if the store crashed; fine (and
  // true: the operation changed nothing) if it is NoSpace after an injected
  // one and the operation may say so; else a bug.
  bool Failed(const char* what, const Status& s, bool may_be_no_space = false);
  // Ends a NoSpace injection and waits until a Flush succeeds (at most 2 s).
  void EndNoSpace();
  void OpenOrFail(const char* when);
  // Simulates a crash now (or completes the one that happened), reopens and
  // checks the prefix contract.
  void Recover(CrashKind kind);
  // Reads the whole volume into actual_. False (after Failed) on an error.
  bool ReadAll();
  void CompareAll(const char* when);
  void Acked(Op op);

  Range DecodeRange(bool aligned);
  // Counts an operation's cost. False (and the run stops) when it would go
  // over a bound: the caller then skips the operation.
  bool Budget(uint64_t write_bytes, uint64_t work_bytes);

  void DoWrite(uint64_t off, uint64_t len);
  void DoUnmap(bool zero, Range r);
  void DoFlush();
  void DoRead(Range r);
  void DoBlockStatus(Range r);
  void DoClean(double threshold);
  void DoReopen();

  Input in_;
  const uint8_t geometry_;
  const uint8_t seed_;
  store::MemoryStore mem_;
  FaultInjectionStore fs_;
  NoSpaceStore ns_;  // the volume's store: over fs_, over mem_
  uint64_t size_ = 0, blocks_ = 0, segment_size_ = 0;
  OpenOptions oo_;
  std::unique_ptr<Volume> v_;
  CrashKind armed_kind_ = CrashKind::kPowerLoss;

  // The model: base_ is what every recovery must show at least (the state
  // after the last completed Flush or clean Close, or the last recovery);
  // acked_ the operations acknowledged since; live_ = base_ + acked_.
  std::vector<uint8_t> base_, live_, actual_;
  std::vector<Op> acked_;

  uint64_t tag_ = 0;
  uint64_t written_ = 0, work_ = 0;
  int ops_ = 0, reopens_ = 0;
  bool stop_ = false;
  std::deque<std::string> trace_;
};

void Runner::Fail(const char* fmt, ...) {
  std::fprintf(stderr,
               "volume_fuzz: CHECK FAILED (volume %llu MiB, segment %llu KiB, clean_threshold "
               "%.1f, checkpoint_interval %llu KiB, op %d): ",
               (unsigned long long)(size_ >> 20), (unsigned long long)(segment_size_ >> 10),
               oo_.clean_threshold, (unsigned long long)(oo_.checkpoint_interval >> 10), ops_);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "\nlast operations (oldest first):\n");
  for (const std::string& t : trace_) std::fprintf(stderr, "  %s\n", t.c_str());
  // A wrong result is often the echo of a memory error in a background
  // thread: give a sanitizer report there the time to finish first.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  std::abort();
}

void Runner::Note(const char* fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  trace_.push_back(std::to_string(ops_) + ": " + buf);
  if (trace_.size() > kTraceOps) trace_.pop_front();
}

bool Runner::Failed(const char* what, const Status& s, bool may_be_no_space) {
  if (s.IsNoSpace() && may_be_no_space && ns_.ever() && !fs_.crashed()) {
    Note("  %s: %s", what, s.ToString().c_str());
    return true;
  }
  if (!fs_.crashed()) {
    Fail("%s failed, but the store has not crashed: %s", what, s.ToString().c_str());
  }
  Note("  %s failed after the injected crash: %s", what, s.ToString().c_str());
  Recover(armed_kind_);
  return false;
}

void Runner::EndNoSpace() {
  ns_.Clear();
  if (!ns_.ever() || !v_ || fs_.crashed()) return;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (;;) {
    Status s = v_->Flush();
    if (s.ok()) {
      base_ = live_;
      acked_.clear();
      return;
    }
    if (!s.IsNoSpace()) {
      Failed("Flush after the store has space again", s);
      return;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      Fail("the volume did not resume within 2 s of space coming back: %s",
           s.ToString().c_str());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void Runner::OpenOrFail(const char* when) {
  auto r = Volume::Open(&ns_, "fuzz", oo_);
  if (!r.ok()) {
    if (fs_.crashed()) {
      Failed("Open", r.status());
      return;
    }
    Fail("Open %s failed: %s", when, r.status().ToString().c_str());
  }
  v_ = std::move(*r);
  if (v_->size() != size_) {
    Fail("Open %s: size %llu, created with %llu", when, (unsigned long long)v_->size(),
         (unsigned long long)size_);
  }
}

bool Runner::ReadAll() {
  Status s = v_->Read(0, actual_);
  if (!s.ok()) {
    Failed("Read of the whole volume", s);
    return false;
  }
  return true;
}

void Runner::CompareAll(const char* when) {
  if (!ReadAll()) return;
  if (actual_ == live_) return;
  uint64_t i = 0;
  while (actual_[i] == live_[i]) i++;
  Fail("%s: the volume differs from the model at byte %llu (block %llu): read 0x%02x, expected "
       "0x%02x",
       when, (unsigned long long)i, (unsigned long long)(i / kBlockSize), actual_[i], live_[i]);
}

void Runner::Recover(CrashKind kind) {
  if (++reopens_ > kMaxReopens) stop_ = true;  // still play this crash out
  Note("crash (%s), recover; %zu unflushed ops", kind == CrashKind::kPowerLoss ? "power loss"
                                                                              : "process crash",
       acked_.size());
  if (!fs_.crashed()) fs_.CrashAfter(0);  // the destructor's Close writes nothing
  v_.reset();
  ns_.Clear();
  Status s = fs_.SimulateCrash(kind);
  if (!s.ok()) Fail("SimulateCrash: %s", s.ToString().c_str());
  OpenOrFail("after a crash");
  s = v_->Read(0, actual_);
  if (!s.ok()) Fail("Read of the whole volume after recovery: %s", s.ToString().c_str());
  work_ += 2 * size_;
  std::vector<uint8_t> state = base_;
  int64_t k = FindPrefix(&state, acked_, 0, actual_);
  if (k < 0) {
    uint64_t i = 0;
    while (i < size_ && actual_[i] == base_[i]) i++;
    uint64_t j = 0;
    while (j < size_ && actual_[j] == live_[j]) j++;
    Fail("the recovered volume is no prefix of the %zu ops acknowledged since the last flush: "
         "first difference from the flushed state at byte %llu (block %llu), from the state "
         "after all ops at byte %llu (block %llu)",
         acked_.size(), (unsigned long long)i, (unsigned long long)(i / kBlockSize),
         (unsigned long long)j, (unsigned long long)(j / kBlockSize));
  }
  Note("  recovered %lld of %zu unflushed ops", (long long)k, acked_.size());
  base_ = std::move(state);
  live_ = base_;
  acked_.clear();
}

void Runner::Acked(Op op) {
  Apply(op, &live_);
  acked_.push_back(std::move(op));
}

Runner::Range Runner::DecodeRange(bool aligned) {
  Range r;
  if (aligned) {
    uint64_t b = in_.U16() % blocks_;
    uint64_t n = std::min(DecodeLength(in_.U16(), 13), blocks_ - b);
    r.off = b * kBlockSize;
    r.len = n * kBlockSize;
  } else {
    r.off = in_.U32() % size_;
    r.len = std::min(DecodeLength(in_.U16(), 25), size_ - r.off);
  }
  r.len = std::min(r.len, kMaxIo);
  return r;
}

bool Runner::Budget(uint64_t write_bytes, uint64_t work_bytes) {
  if (written_ + write_bytes > kMaxWriteBytes || work_ + work_bytes > kMaxWorkBytes) {
    stop_ = true;
    return false;
  }
  written_ += write_bytes;
  work_ += work_bytes;
  return true;
}

void Runner::DoWrite(uint64_t off, uint64_t len) {
  Op op;
  op.kind = Op::kWrite;
  op.off = off;
  op.len = len;
  op.data = Pattern(len, ++tag_ * 0x9E3779B97F4A7C15ull);
  Note("Write(%llu, %llu)", (unsigned long long)off, (unsigned long long)len);
  Status s = v_->Write(off, op.data);
  if (!s.ok()) {
    Failed("Write", s, true);
    return;
  }
  Acked(std::move(op));
}

void Runner::DoUnmap(bool zero, Range r) {
  Op op;
  op.kind = zero ? Op::kZero : Op::kTrim;
  op.off = r.off;
  op.len = r.len;
  Note("%s(%llu, %llu)", zero ? "WriteZeroes" : "Trim", (unsigned long long)r.off,
       (unsigned long long)r.len);
  Status s = zero ? v_->WriteZeroes(r.off, r.len) : v_->Trim(r.off, r.len);
  if (!s.ok()) {
    Failed(zero ? "WriteZeroes" : "Trim", s, true);
    return;
  }
  Acked(std::move(op));
}

void Runner::DoFlush() {
  Note("Flush");
  Status s = v_->Flush();
  if (!s.ok()) {
    Failed("Flush", s, true);
    return;
  }
  base_ = live_;
  acked_.clear();
}

void Runner::DoRead(Range r) {
  Note("Read(%llu, %llu)", (unsigned long long)r.off, (unsigned long long)r.len);
  std::vector<uint8_t> buf(r.len);
  Status s = v_->Read(r.off, buf);
  if (!s.ok()) {
    Failed("Read", s);
    return;
  }
  if (std::memcmp(buf.data(), live_.data() + r.off, r.len) == 0) return;
  for (uint64_t i = 0; i < r.len; i++) {
    if (buf[i] != live_[r.off + i]) {
      Fail("Read(%llu, %llu) differs from the model at byte %llu (block %llu): read 0x%02x, "
           "expected 0x%02x",
           (unsigned long long)r.off, (unsigned long long)r.len,
           (unsigned long long)(r.off + i), (unsigned long long)((r.off + i) / kBlockSize),
           buf[i], live_[r.off + i]);
    }
  }
}

void Runner::DoBlockStatus(Range r) {
  Note("BlockStatus(%llu, %llu)", (unsigned long long)r.off, (unsigned long long)r.len);
  auto res = v_->BlockStatus(r.off, r.len);
  if (!res.ok()) {
    Failed("BlockStatus", res.status());
    return;
  }
  const std::vector<Extent>& ext = *res;
  uint64_t pos = r.off;
  for (size_t i = 0; i < ext.size(); i++) {
    const Extent& e = ext[i];
    if (e.offset != pos || e.length == 0 || e.length > r.off + r.len - pos) {
      Fail("BlockStatus(%llu, %llu): extent %zu is [%llu, +%llu), expected one starting at %llu "
           "inside the range",
           (unsigned long long)r.off, (unsigned long long)r.len, i,
           (unsigned long long)e.offset, (unsigned long long)e.length,
           (unsigned long long)pos);
    }
    if (i > 0 && ext[i - 1].allocated == e.allocated) {
      Fail("BlockStatus(%llu, %llu): extents %zu and %zu are both %s (not merged)",
           (unsigned long long)r.off, (unsigned long long)r.len, i - 1, i,
           e.allocated ? "allocated" : "holes");
    }
    if (!e.allocated) {
      for (uint64_t b = e.offset; b < e.offset + e.length; b++) {
        if (live_[b] != 0) {
          Fail("BlockStatus(%llu, %llu) reports [%llu, +%llu) as a hole, but byte %llu (block "
               "%llu) holds 0x%02x",
               (unsigned long long)r.off, (unsigned long long)r.len,
               (unsigned long long)e.offset, (unsigned long long)e.length,
               (unsigned long long)b, (unsigned long long)(b / kBlockSize), live_[b]);
        }
      }
    }
    pos += e.length;
  }
  if (pos != r.off + r.len) {
    Fail("BlockStatus(%llu, %llu): %zu extents end at %llu, short of the range's end",
         (unsigned long long)r.off, (unsigned long long)r.len, ext.size(),
         (unsigned long long)pos);
  }
}

void Runner::DoClean(double threshold) {
  Note("Clean(%.1f)", threshold);
  auto res = v_->Clean(threshold);
  if (!res.ok()) Failed("Clean", res.status(), true);
}

void Runner::DoReopen() {
  Note("Close, reopen");
  if (++reopens_ > kMaxReopens) {
    stop_ = true;
    return;
  }
  EndNoSpace();
  Status s = v_->Close();
  if (!s.ok()) {
    Failed("Close", s);
    return;
  }
  // A clean Close makes everything acknowledged durable.
  base_ = live_;
  acked_.clear();
  v_.reset();
  OpenOrFail("after a clean Close");  // (recovers if an armed crash hits Open)
  work_ += 2 * size_;
  CompareAll("reopen after a clean Close");
}

void Runner::Run() {
  CreateOptions co;
  co.size = size_;
  co.segment_size = segment_size_;
  Status s = Volume::Create(&ns_, "fuzz", co);
  if (!s.ok()) Fail("Create: %s", s.ToString().c_str());
  base_.assign(size_, 0);
  live_ = base_;
  actual_.resize(size_);
  OpenOrFail("after Create");

  while (!in_.empty() && ops_ < kMaxOps && !stop_) {
    ops_++;
    if (!v_) Fail("no open volume");  // every path above reopens or aborts
    uint8_t opcode = in_.U8();
    bool aligned = opcode & 0x10;
    switch (opcode & 15) {
      case 0: {
        Range r = DecodeRange(aligned);
        if (!Budget(r.len, 2 * r.len)) break;
        DoWrite(r.off, r.len);
        break;
      }
      case 1:
      case 2: {
        Range r = DecodeRange(aligned);
        if (!Budget(0, r.len)) break;
        DoUnmap((opcode & 15) == 2, r);
        break;
      }
      case 3:
        if ((opcode & 0xe0) == 0xe0) {  // 16: NoSpace
          uint64_t n = in_.U8() % 8 + 1;
          Note("NoSpace for the next %llu mutating store calls", (unsigned long long)n);
          ns_.FailNext(n);
          break;
        }
        DoFlush();
        break;
      case 4: {
        Range r = DecodeRange(aligned);
        if (!Budget(0, 2 * r.len)) break;
        DoRead(r);
        break;
      }
      case 5: {
        Range r = DecodeRange(aligned);
        if (!Budget(0, r.len)) break;
        DoBlockStatus(r);
        break;
      }
      case 6:
        if (!Budget(0, size_)) break;
        DoClean((in_.U8() % 11) / 10.0);
        break;
      case 7:
        DoReopen();
        break;
      case 8:
        Recover(in_.U8() % 2 ? CrashKind::kProcessCrash : CrashKind::kPowerLoss);
        break;
      case 9: {
        uint8_t n = in_.U8();
        armed_kind_ = in_.U8() % 2 ? CrashKind::kProcessCrash : CrashKind::kPowerLoss;
        Note("CrashAfter(%u)", n);
        fs_.CrashAfter(n);
        break;
      }
      case 10:
      case 11:
      case 12: {
        uint64_t n = in_.U16() % 1024 + 1;
        uint64_t first = in_.U16() % blocks_;
        uint64_t arg = in_.U8();
        int kind = opcode & 15;
        Note("%llu %s from block %llu, arg %llu", (unsigned long long)n,
             kind == 10   ? "scattered 4 KiB writes"
             : kind == 11 ? "scattered 4 KiB trims"
                          : "sequential writes",
             (unsigned long long)first, (unsigned long long)arg);
        for (uint64_t i = 0; i < n && !stop_; i++) {
          if (kind == 12) {
            uint64_t per = std::min(arg % 64 + 1, blocks_);
            uint64_t b = (first + i * per) % blocks_;
            uint64_t len = std::min(per, blocks_ - b) * kBlockSize;
            if (!Budget(len, 2 * len)) break;
            DoWrite(b * kBlockSize, len);
          } else {
            uint64_t b = (first + i * (arg + 2)) % blocks_;
            if (kind == 10) {
              if (!Budget(kBlockSize, 2 * kBlockSize)) break;
              DoWrite(b * kBlockSize, kBlockSize);
            } else {
              if (!Budget(0, kBlockSize)) break;
              DoUnmap(false, Range{b * kBlockSize, kBlockSize});
            }
          }
        }
        break;
      }
      case 13:
        Note("Read the whole volume");
        if (!Budget(0, 2 * size_)) break;
        CompareAll("Read of the whole volume");
        break;
      case 14:
        if (!Budget(0, size_)) break;
        DoBlockStatus(Range{0, size_});
        break;
      case 15: {
        VolumeInfo info = v_->Info();
        if (info.size != size_ || info.mapped_bytes > size_) {
          Fail("Info: size %llu, mapped_bytes %llu, created with size %llu",
               (unsigned long long)info.size, (unsigned long long)info.mapped_bytes,
               (unsigned long long)size_);
        }
        break;
      }
    }
  }
  if (!v_) Fail("no open volume at the end");
  // A crash armed but not reached is dropped; one that happened is played out.
  if (fs_.crashed()) {
    Recover(armed_kind_);
  } else {
    fs_.Disarm();
    EndNoSpace();
  }
  Note("final Close, reopen");
  s = v_->Close();
  if (!s.ok()) Fail("final Close: %s", s.ToString().c_str());
  v_.reset();
  OpenOrFail("after the final Close");
  CompareAll("final reopen");
  s = v_->Close();
  if (!s.ok()) Fail("Close after the final reopen: %s", s.ToString().c_str());
}

}  // namespace
}  // namespace hbiss::volume

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  if (!std::getenv("HBISS_FUZZ_LOG")) spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  hbiss::volume::Runner r(data, size);
  r.Run();
  return 0;
}
