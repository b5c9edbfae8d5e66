// extent_map_bench: memory (bytes per mapped block, measured three ways) and
// speed (ns per Set / Lookup) of ExtentMap for the fill patterns that matter,
// plus the cost of Snapshot() against EncodeCheckpoint().
//
// Every pattern runs in a forked child, so that its RSS and malloc counters
// start from a clean process. Figures per pattern:
//   usage/blk  ExtentMap::MemoryUsage() / MappedBlocks()
//   malloc/blk delta of mallinfo2() uordblks + hblkhd (bytes in live chunks)
//   rss/blk    delta of anonymous resident pages (RssAnon) after malloc_trim
//
// Usage: extent_map_bench [pattern-substring]
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <algorithm>
#include <vector>

#include "volume/checkpoint.h"
#include "volume/extent_map.h"

namespace hbiss::volume {
namespace {

constexpr uint64_t kTiB = 1ull << 28;  // blocks in 1 TiB
constexpr uint64_t kSegSlots = 16384;  // 64 MiB segments

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Anonymous resident bytes (RssAnon in /proc/self/status): the heap, not
// the pages of code and libraries the pattern happens to run for the first
// time (statm's resident count includes those, and they are not the map's).
uint64_t Rss() {
  malloc_trim(0);
  FILE* f = std::fopen("/proc/self/status", "r");
  uint64_t kb = 0;
  if (f != nullptr) {
    char line[256];
    while (std::fgets(line, sizeof(line), f) != nullptr) {
      if (std::sscanf(line, "RssAnon: %lu kB", &kb) == 1) break;
    }
    std::fclose(f);
  }
  return kb << 10;
}

uint64_t MallocBytes() {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

// Writes like the log does: consecutive slots in write order, a new segment
// every kSegSlots slots.
class Writer {
 public:
  explicit Writer(ExtentMap* m) : m_(m) {}
  void Write(uint64_t lba, uint64_t n) {
    if (slot_ + n > kSegSlots) {
      seg_++;
      slot_ = 0;
    }
    DoSet(m_, lba, n, seg_, slot_);
    slot_ += uint32_t(n);
    ops_++;
  }
  uint64_t ops() const { return ops_; }

 private:
  // Works with Set returning void (old API) or Status.
  template <typename M>
  static void DoSet(M* m, uint64_t lba, uint64_t n, uint32_t seg, uint32_t slot) {
    if constexpr (std::is_void_v<decltype(m->Set(lba, n, seg, slot))>) {
      m->Set(lba, n, seg, slot);
    } else if (!m->Set(lba, n, seg, slot).ok()) {
      std::fprintf(stderr, "Set failed\n");
      std::abort();
    }
  }
  ExtentMap* m_;
  uint32_t seg_ = 1;
  uint32_t slot_ = 0;
  uint64_t ops_ = 0;
};

struct Pattern {
  const char* name;
  uint64_t blocks;
  // Runs one pass of writes; `pass` selects the RNG stream's slot sequence
  // but the same block addresses, so pass 1 overwrites pass 0.
  void (*fill)(Writer* w, uint64_t blocks, uint64_t seed);
};

void RandomFull(Writer* w, uint64_t blocks, uint64_t seed) {
  std::vector<uint32_t> order(blocks);
  for (uint64_t i = 0; i < blocks; i++) order[i] = uint32_t(i);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  for (uint32_t b : order) w->Write(b, 1);
}

void Sequential(Writer* w, uint64_t blocks, uint64_t) {
  for (uint64_t b = 0; b < blocks; b += 256) {
    w->Write(b, 256);
  }
}

void Sequential4K(Writer* w, uint64_t blocks, uint64_t) {
  for (uint64_t b = 0; b < blocks; b++) w->Write(b, 1);
}

template <uint64_t kFraction>
void SparseRandom(Writer* w, uint64_t blocks, uint64_t seed) {
  std::mt19937_64 rng(1234);  // same addresses every pass
  for (uint64_t i = 0; i < blocks / kFraction; i++) w->Write(rng() % blocks, 1);
}

void EveryOther(Writer* w, uint64_t blocks, uint64_t seed) {
  std::vector<uint32_t> order(blocks / 2);
  for (uint64_t i = 0; i < blocks / 2; i++) order[i] = uint32_t(2 * i);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  for (uint32_t b : order) w->Write(b, 1);
}

// 8 GiB in random runs of 2-16 blocks over the volume.
void RandomRuns(Writer* w, uint64_t blocks, uint64_t seed) {
  std::mt19937_64 rng(99);
  uint64_t written = 0;
  while (written < (2ull << 20)) {
    uint64_t n = 2 + rng() % 15;
    uint64_t lba = rng() % (blocks - n);
    w->Write(lba, n);
    written += n;
  }
}

const Pattern kPatterns[] = {
    {"random_full_4GiB", 1ull << 20, RandomFull},
    {"sequential_256_4GiB", 1ull << 20, Sequential},
    {"sequential_4K_4GiB", 1ull << 20, Sequential4K},
    {"sparse_1/32_1TiB", kTiB, SparseRandom<32>},
    {"sparse_1/128_1TiB(8GiB)", kTiB, SparseRandom<128>},
    {"sparse_1/256_1TiB", kTiB, SparseRandom<256>},
    {"sparse_1/1024_1TiB", kTiB, SparseRandom<1024>},
    {"sparse_1/4096_1TiB", kTiB, SparseRandom<4096>},
    {"sparse_1/16384_1TiB", kTiB, SparseRandom<16384>},
    {"sparse_1/65536_1TiB", kTiB, SparseRandom<65536>},
    {"every_other_4GiB", 1ull << 20, EveryOther},
    {"runs_2-16_8GiB_in_1TiB", kTiB, RandomRuns},
};

void Report(const char* name, int pass, const ExtentMap& m, uint64_t rss0, uint64_t mal0,
            double set_ns) {
  uint64_t rss = Rss() - rss0;
  uint64_t mal = MallocBytes() - mal0;
  if (getenv("EMDBG")) {
    struct mallinfo2 mi = mallinfo2();
    std::printf("  malloc: arena=%zu free=%zu keepcost=%zu mmap=%zu\n", mi.arena, mi.fordblks, mi.keepcost, mi.hblkhd);
  }
  double n = double(m.MappedBlocks());
  // Lookup speed: random single-block reads, then 32-block reads.
  std::vector<MapRun> runs;
  std::mt19937_64 rng(7);
  const int kLookups = 1000000;
  double t0 = Now();
  uint64_t sink = 0;
  for (int i = 0; i < kLookups; i++) {
    (void)m.Lookup(rng() % m.blocks(), 1, &runs);
    sink += runs.size();
  }
  double look_ns = (Now() - t0) * 1e9 / kLookups;
  t0 = Now();
  for (int i = 0; i < kLookups; i++) {
    (void)m.Lookup(rng() % (m.blocks() - 32), 32, &runs);
    sink += runs.size();
  }
  double look32_ns = (Now() - t0) * 1e9 / kLookups;
  std::printf("%-26s %-9s mapped=%9.0f usage/blk=%6.2f malloc/blk=%6.2f rss/blk=%6.2f "
              "set=%6.1fns lookup1=%6.1fns lookup32=%6.1fns%s\n",
              name, pass == 0 ? "fill" : "overwrite", n, double(m.MemoryUsage()) / n,
              double(mal) / n, double(rss) / n, set_ns, look_ns, look32_ns,
              sink == 0 ? "!" : "");
  std::fflush(stdout);
}

void RunPattern(const Pattern& p) {
  uint64_t rss0 = Rss();
  uint64_t mal0 = MallocBytes();
  auto m = std::make_unique<ExtentMap>(p.blocks);
  Writer w(m.get());
  for (int pass = 0; pass < 2; pass++) {
    // Patterns that shuffle allocate their order vector inside fill; measure
    // memory only after it is freed.
    uint64_t ops0 = w.ops();
    double t0 = Now();
    p.fill(&w, p.blocks, 1 + pass);
    double set_ns = (Now() - t0) * 1e9 / double(w.ops() - ops0);
    Report(p.name, pass, *m, rss0, mal0, set_ns);
  }
}

template <typename T>
auto Unwrap(T&& r) -> decltype(std::move(*r)) {
  if (!r.ok()) std::abort();
  return std::move(*r);
}

void SnapshotTiming() {
  // 2M random blocks in a 1 TiB volume.
  ExtentMap m(kTiB);
  Writer w(&m);
  std::mt19937_64 rng(42);
  while (m.MappedBlocks() < (2ull << 20)) w.Write(rng() % kTiB, 1);
  CheckpointInfo ci;
  ci.volume_size = kTiB * kSlotSize;
  double t0 = Now();
  std::string enc = EncodeCheckpoint(ci, m);
  double enc_s = Now() - t0;
  const int kSnaps = 20;
  t0 = Now();
  for (int i = 0; i < kSnaps; i++) {
    auto snap = Unwrap(m.Snapshot());
  }
  double snap_s = (Now() - t0) / kSnaps;
  // The cost a snapshot puts on the writer: the first writes after it copy
  // shared nodes.
  auto snap = Unwrap(m.Snapshot());
  t0 = Now();
  for (int i = 0; i < 100000; i++) w.Write(rng() % kTiB, 1);
  double cow_ns = (Now() - t0) * 1e9 / 100000;
  std::printf("snapshot: 2M random blocks in 1 TiB: Snapshot()=%.1f us (+destroy)  "
              "EncodeCheckpoint()=%.1f ms (%zu bytes)  first 100k Sets after snapshot=%.1f "
              "ns/op\n",
              snap_s * 1e6, enc_s * 1e3, enc.size(), cow_ns);
}

}  // namespace
}  // namespace hbiss::volume

int main(int argc, char** argv) {
  using namespace hbiss::volume;
#ifndef NDEBUG
  std::printf("WARNING: assertions are enabled; timings are not representative\n");
#endif
  std::printf("extent_map_bench: 4 KiB blocks, 64 MiB segments (16384 slots), sizes in "
              "blocks; each pattern in a fresh process\n");
  const char* filter = argc > 1 ? argv[1] : "";
  for (const Pattern& p : kPatterns) {
    if (std::strstr(p.name, filter) == nullptr) continue;
    std::fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
      RunPattern(p);
      std::fflush(stdout);
      _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
  }
  if (std::strstr("snapshot", filter) != nullptr || *filter == 0) {
    std::fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
      SnapshotTiming();
      std::fflush(stdout);
      _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
  }
  return 0;
}
