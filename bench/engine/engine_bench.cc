// In-process benchmark of the volume engine on the local store (issue #2).
//
// Phase 1, random write: every 4 KiB block of the volume written once, in a
// seeded random order (a fully random fill), with Flush every N writes and at
// the end. Phase 2, random read: R random 4 KiB reads. The same two phases,
// at the same offsets in the same order and with fdatasync at the same
// cadence, then run with pwrite/pread on one raw file in the same directory.
// It prints the configuration, IOPS for each, the ratios, and the extent
// map's memory per mapped block after the random fill.
//
// Not a test: nothing is asserted. Run from a Release/RelWithDebInfo build:
//   build/bench/engine/hbiss_engine_bench [--dir DIR] [--size 256M] [--flush-every 32] ...
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "bench/bench_volume.h"
#include "store/store.h"
#include "util/status.h"
#include "volume/volume.h"

namespace {

using hbiss::bench::Die;
using hbiss::bench::DieErrno;
using hbiss::bench::ParseSizeOrDie;

using hbiss::Status;
using hbiss::volume::kBlockSize;
using Clock = std::chrono::steady_clock;

struct Config {
  std::string dir;  // parent directory for the store and the raw file
  std::string size = "256M";
  uint64_t flush_every = 32;
  uint64_t reads = 0;  // 0: as many as there are blocks
  std::string segment_size = "64M";
  std::string cache = "64M";
  uint64_t seed = 42;
  int threads = 1;
  bool keep = false;
  bool raw_prealloc = false;
};

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Fills a block with bytes that differ per block and per pass.
void FillBlock(std::vector<uint8_t>& buf, uint64_t block, uint64_t pass) {
  uint64_t x = block * 0x9E3779B97F4A7C15ull ^ (pass + 1) * 0xC2B2AE3D27D4EB4Full;
  for (size_t i = 0; i < buf.size(); i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(buf.data() + i, &x, 8);
  }
}

struct PhaseResult {
  double write_secs = 0;
  double read_secs = 0;
};

// Runs fn(begin, end) on `threads` threads at once, over contiguous slices of
// [0, n), and returns the wall time of the whole.
template <typename Fn>
double Parallel(int threads, size_t n, const Fn& fn) {
  auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int i = 0; i < threads; ++i) {
    size_t b = n * i / threads, e = n * (i + 1) / threads;
    ts.emplace_back([&fn, b, e] { fn(b, e); });
  }
  for (std::thread& t : ts) t.join();
  return Seconds(t0, Clock::now());
}

PhaseResult RunEngine(const Config& c, const std::string& store_dir, uint64_t size,
                      const std::vector<uint64_t>& write_order,
                      const std::vector<uint64_t>& read_order, hbiss::volume::VolumeInfo* info) {
  hbiss::volume::OpenOptions oopts;
  oopts.cache_bytes = ParseSizeOrDie(c.cache);
  hbiss::bench::BenchVolume bv =
      hbiss::bench::CreateBenchVolumeOrDie(store_dir, size, ParseSizeOrDie(c.segment_size), oopts);
  std::unique_ptr<hbiss::volume::Volume>& vol = bv.vol;

  PhaseResult r;
  // Each thread flushes after every flush_every of its own writes and at the
  // end of its slice; concurrent flushes are group-committed by the engine.
  r.write_secs = Parallel(c.threads, write_order.size(), [&](size_t begin, size_t end) {
    std::vector<uint8_t> buf(kBlockSize);
    uint64_t n = 0;
    for (size_t i = begin; i < end; ++i) {
      uint64_t b = write_order[i];
      FillBlock(buf, b, 0);
      if (Status st = vol->Write(b * kBlockSize, buf); !st.ok()) Die("write", st);
      if (++n % c.flush_every == 0) {
        if (Status st = vol->Flush(); !st.ok()) Die("flush", st);
      }
    }
    if (Status st = vol->Flush(); !st.ok()) Die("flush", st);
  });
  *info = vol->Info();

  r.read_secs = Parallel(c.threads, read_order.size(), [&](size_t begin, size_t end) {
    std::vector<uint8_t> buf(kBlockSize);
    for (size_t i = begin; i < end; ++i) {
      Status st = vol->Read(read_order[i] * kBlockSize, std::span<uint8_t>(buf));
      if (!st.ok()) Die("read", st);
    }
  });
  // Not timed: the reads return what was written.
  std::vector<uint8_t> buf(kBlockSize), expect(kBlockSize);
  for (size_t i = 0; i < read_order.size(); i += 97) {
    uint64_t b = read_order[i];
    FillBlock(expect, b, 0);
    if (Status st = vol->Read(b * kBlockSize, std::span<uint8_t>(buf)); !st.ok()) Die("read", st);
    if (buf != expect) {
      std::fprintf(stderr, "engine_bench: block %llu read back wrong\n",
                   static_cast<unsigned long long>(b));
      std::exit(1);
    }
  }
  if (Status st = vol->Close(); !st.ok()) Die("close", st);
  return r;
}

PhaseResult RunRaw(const Config& c, const std::string& path, uint64_t size,
                   const std::vector<uint64_t>& write_order,
                   const std::vector<uint64_t>& read_order) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) DieErrno("open " + path);
  if (c.raw_prealloc) {
    if (posix_fallocate(fd, 0, static_cast<off_t>(size)) != 0) DieErrno("fallocate");
  } else if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    DieErrno("ftruncate");
  }
  if (fdatasync(fd) != 0) DieErrno("fdatasync");
  PhaseResult r;
  r.write_secs = Parallel(c.threads, write_order.size(), [&](size_t begin, size_t end) {
    std::vector<uint8_t> buf(kBlockSize);
    uint64_t n = 0;
    for (size_t i = begin; i < end; ++i) {
      uint64_t b = write_order[i];
      FillBlock(buf, b, 0);
      if (pwrite(fd, buf.data(), kBlockSize, static_cast<off_t>(b * kBlockSize)) != kBlockSize) {
        DieErrno("pwrite");
      }
      if (++n % c.flush_every == 0 && fdatasync(fd) != 0) DieErrno("fdatasync");
    }
    if (fdatasync(fd) != 0) DieErrno("fdatasync");
  });
  r.read_secs = Parallel(c.threads, read_order.size(), [&](size_t begin, size_t end) {
    std::vector<uint8_t> buf(kBlockSize);
    for (size_t i = begin; i < end; ++i) {
      if (pread(fd, buf.data(), kBlockSize, static_cast<off_t>(read_order[i] * kBlockSize)) !=
          kBlockSize) {
        DieErrno("pread");
      }
    }
  });
  ::close(fd);
  return r;
}

std::string BuildKind() {
#if defined(NDEBUG) && defined(__OPTIMIZE__)
  return "optimized (NDEBUG, " HBISS_BENCH_BUILD_TYPE ")";
#else
  return "DEBUG or unoptimized (" HBISS_BENCH_BUILD_TYPE ")";
#endif
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  CLI::App app{"hbiss engine benchmark: 4 KiB random write/read, engine vs raw file"};
  app.add_option("--dir", c.dir, "Parent directory for the store and the raw file "
                                 "(default: a new directory under $TMPDIR or /tmp)");
  app.add_option("--size", c.size, "Volume and raw file size")->capture_default_str();
  app.add_option("--flush-every", c.flush_every,
                 "Flush (engine) / fdatasync (raw) after every N writes")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--reads", c.reads, "Random reads (default: one per block)");
  app.add_option("--segment-size", c.segment_size, "Engine segment size")->capture_default_str();
  app.add_option("--cache", c.cache, "Engine read cache (OpenOptions::cache_bytes)")
      ->capture_default_str();
  app.add_option("--seed", c.seed, "Random seed")->capture_default_str();
  app.add_option("--threads", c.threads,
                 "Threads issuing I/O at once, each on its own slice of the offsets and each "
                 "flushing after every --flush-every of its own writes")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_flag("--raw-prealloc", c.raw_prealloc,
               "posix_fallocate the raw file first (default: a sparse file, like a new raw "
               "image)");
  app.add_flag("--keep", c.keep, "Keep the store and raw file afterwards");
  CLI11_PARSE(app, argc, argv);

  const uint64_t size = ParseSizeOrDie(c.size) / kBlockSize * kBlockSize;
  if (size == 0) {
    std::fprintf(stderr, "engine_bench: --size must be at least 4K\n");
    return 2;
  }
  const uint64_t blocks = size / kBlockSize;
  const uint64_t reads = c.reads == 0 ? blocks : c.reads;

  namespace fs = std::filesystem;
  bool made_dir = false;
  if (c.dir.empty()) {
    const char* t = std::getenv("TMPDIR");
    std::string tmpl = std::string(t != nullptr && t[0] != '\0' ? t : "/tmp") +
                       "/hbiss-engine-bench-XXXXXX";
    std::vector<char> b(tmpl.begin(), tmpl.end());
    b.push_back('\0');
    if (mkdtemp(b.data()) == nullptr) DieErrno("mkdtemp");
    c.dir = b.data();
    made_dir = true;
  } else {
    fs::create_directories(c.dir);
  }
  const std::string store_dir = c.dir + "/store";
  const std::string raw_path = c.dir + "/raw.img";
  fs::remove_all(store_dir);
  fs::create_directories(store_dir);

  std::mt19937_64 rng(c.seed);
  std::vector<uint64_t> write_order(blocks);
  std::iota(write_order.begin(), write_order.end(), 0);
  std::shuffle(write_order.begin(), write_order.end(), rng);
  std::vector<uint64_t> read_order(reads);
  std::uniform_int_distribution<uint64_t> pick(0, blocks - 1);
  for (uint64_t& b : read_order) b = pick(rng);

  struct utsname u;
  uname(&u);
  std::printf("hbiss engine benchmark\n");
  std::printf("  build:          %s\n", BuildKind().c_str());
#if !defined(NDEBUG) || !defined(__OPTIMIZE__)
  std::printf("  WARNING: this is a debug/unoptimized build; its numbers mean nothing.\n");
#endif
  std::printf("  machine:        %s %s, %ld CPUs\n", u.sysname, u.release,
              sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("  directory:      %s\n", c.dir.c_str());
  std::printf("  volume size:    %llu MiB (%llu blocks of 4 KiB)\n",
              static_cast<unsigned long long>(size >> 20),
              static_cast<unsigned long long>(blocks));
  std::printf("  writes:         %llu x 4 KiB, every block once in random order (seed %llu)\n",
              static_cast<unsigned long long>(blocks), static_cast<unsigned long long>(c.seed));
  std::printf("  durability:     engine Flush / raw fdatasync every %llu writes of each thread "
              "and at its end\n",
              static_cast<unsigned long long>(c.flush_every));
  std::printf("  threads:        %d (same for both; each takes a contiguous slice of the order)\n",
              c.threads);
  std::printf("  reads:          %llu x 4 KiB at uniformly random blocks (same for both)\n",
              static_cast<unsigned long long>(reads));
  std::printf("  engine:         local store file://%s, segment %s, cache %s\n",
              store_dir.c_str(), c.segment_size.c_str(), c.cache.c_str());
  std::printf("  raw file:       %s, %s, pwrite/pread\n", raw_path.c_str(),
              c.raw_prealloc ? "preallocated" : "sparse");
  std::fflush(stdout);

  hbiss::volume::VolumeInfo info;
  PhaseResult eng = RunEngine(c, store_dir, size, write_order, read_order, &info);
  PhaseResult raw = RunRaw(c, raw_path, size, write_order, read_order);

  auto iops = [](uint64_t n, double s) { return s > 0 ? static_cast<double>(n) / s : 0.0; };
  double ew = iops(blocks, eng.write_secs), rw = iops(blocks, raw.write_secs);
  double er = iops(reads, eng.read_secs), rr = iops(reads, raw.read_secs);
  std::printf("\nresults (IOPS of 4 KiB)\n");
  std::printf("  %-10s %14s %14s\n", "", "engine", "raw file");
  std::printf("  %-10s %14.0f %14.0f   ratio engine/raw %.2fx\n", "randwrite", ew, rw,
              rw > 0 ? ew / rw : 0);
  std::printf("  %-10s %14.0f %14.0f   ratio engine/raw %.2fx\n", "randread", er, rr,
              rr > 0 ? er / rr : 0);
  uint64_t mapped_blocks = info.mapped_bytes / kBlockSize;
  std::printf("\nextent map after the fully random fill\n");
  std::printf("  mapped blocks:  %llu\n", static_cast<unsigned long long>(mapped_blocks));
  std::printf("  map memory:     %llu bytes\n",
              static_cast<unsigned long long>(info.map_memory_bytes));
  std::printf("  bytes/block:    %.2f\n",
              mapped_blocks > 0 ? static_cast<double>(info.map_memory_bytes) / mapped_blocks : 0);
  std::printf("  log:            %llu segments, %llu MiB\n",
              static_cast<unsigned long long>(info.segment_count),
              static_cast<unsigned long long>(info.log_bytes >> 20));

  if (!c.keep) {
    fs::remove_all(store_dir);
    fs::remove(raw_path);
    if (made_dir) fs::remove(c.dir);
  }
  return 0;
}
