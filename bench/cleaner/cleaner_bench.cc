// In-process benchmark of the cleaner's policy on the local store (issue #10).
//
// For each workload and each clean policy (greedy, cost-benefit; --workloads
// and --policies choose which, and in what order), in one run:
// a fresh volume is filled to --fill of its size with sequential 1 MiB
// writes, then overwritten with 4 KiB writes at random blocks of that live
// part, --write-factor times the volume's size in all, with a Flush every
// --flush-every writes, while the background cleaner runs. Workloads:
//   uniform  every live block equally likely;
//   hot      90% of the writes go to 10% of the live blocks (the first ones).
// It reports, per run:
//   WA           (client blocks + blocks the cleaner copied) / client blocks,
//                over the overwrite phase (data blocks; batch and segment
//                headers are left out);
//   store/live   bytes of every file under the store (segments, checkpoints,
//                summaries, the reserve, meta) / mapped bytes, at the end;
//   log/live max the largest segment bytes / mapped bytes sampled during the
//                second half of the overwrites (steady state).
//
// Not a test: nothing is asserted. Run from a Release/RelWithDebInfo build:
//   build/bench/cleaner/hbiss_cleaner_bench [--size 1G] [--segment-size 16M] ...
#include <sys/utsname.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "bench/bench_util.h"
#include "bench/bench_volume.h"
#include "store/store.h"
#include "util/status.h"
#include "volume/volume.h"

namespace {

using hbiss::Status;
using hbiss::bench::Die;
using hbiss::bench::ParseSizeOrDie;
using hbiss::volume::CleanPolicy;
using hbiss::volume::kBlockSize;
using Clock = std::chrono::steady_clock;

struct Config {
  std::string dir;
  std::string size = "1G";
  std::string segment_size = "16M";
  double fill = 0.9;
  double write_factor = 10;
  uint64_t flush_every = 1024;
  double threshold = 0.9;
  double space_target = 1.35;
  std::string checkpoint_interval;  // empty: a 64th of the volume size
  uint64_t seed = 42;
  std::vector<std::string> workloads = {"uniform", "hot"};
  std::vector<std::string> policies = {"greedy", "cost-benefit"};
};

struct RunResult {
  double wa = 0;
  double store_over_live = 0;
  double max_log_over_live = 0;
  uint64_t segments_deleted = 0;
  double secs = 0;
};

// The volume is still open: a file may go away while it is listed (a
// summary's temporary file is renamed, a dead segment deleted); it counts 0.
uint64_t DirBytes(const std::string& dir) {
  uint64_t n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir, ec)) {
    std::error_code fec;
    if (!e.is_regular_file(fec)) continue;
    const uintmax_t sz = e.file_size(fec);
    if (!fec) n += sz;
  }
  return n;
}

RunResult Run(const Config& c, const std::string& store_dir, bool hot, CleanPolicy policy) {
  std::filesystem::remove_all(store_dir);
  std::filesystem::create_directories(store_dir);
  const uint64_t size = ParseSizeOrDie(c.size) / kBlockSize * kBlockSize;
  hbiss::volume::OpenOptions oopts;
  oopts.clean_threshold = c.threshold;
  oopts.clean_policy = policy;
  oopts.clean_space_target = c.space_target;
  oopts.checkpoint_interval = ParseSizeOrDie(c.checkpoint_interval);
  hbiss::bench::BenchVolume bv =
      hbiss::bench::CreateBenchVolumeOrDie(store_dir, size, ParseSizeOrDie(c.segment_size), oopts);
  hbiss::volume::Volume* vol = bv.vol.get();

  const uint64_t live = uint64_t(double(size / kBlockSize) * c.fill);
  std::vector<uint8_t> big(1 << 20);
  std::mt19937_64 rng(c.seed);
  for (uint64_t b = 0; b < live; b += big.size() / kBlockSize) {
    const uint64_t n = std::min<uint64_t>(big.size() / kBlockSize, live - b);
    for (size_t i = 0; i < big.size(); i += 8) {
      const uint64_t x = rng();
      std::memcpy(big.data() + i, &x, 8);
    }
    if (Status st = vol->Write(b * kBlockSize, std::span(big.data(), n * kBlockSize)); !st.ok()) {
      Die("fill", st);
    }
  }
  if (Status st = vol->Flush(); !st.ok()) Die("flush", st);

  const uint64_t writes = uint64_t(c.write_factor * double(size)) / kBlockSize;
  const uint64_t hot_blocks = std::max<uint64_t>(1, live / 10);
  const uint64_t moved0 = vol->Info().blocks_moved;
  std::vector<uint8_t> buf(kBlockSize);
  RunResult r;
  const auto t0 = Clock::now();
  for (uint64_t i = 0; i < writes; i++) {
    uint64_t b;
    if (hot && rng() % 10 != 0) {
      b = rng() % hot_blocks;
    } else if (hot) {
      b = hot_blocks + rng() % (live - hot_blocks);
    } else {
      b = rng() % live;
    }
    const uint64_t x = rng();
    for (size_t k = 0; k < buf.size(); k += 8) std::memcpy(buf.data() + k, &x, 8);
    std::memcpy(buf.data(), &i, 8);
    if (Status st = vol->Write(b * kBlockSize, buf); !st.ok()) Die("write", st);
    if ((i + 1) % c.flush_every == 0) {
      if (Status st = vol->Flush(); !st.ok()) Die("flush", st);
      if (i >= writes / 2) {
        const auto info = vol->Info();
        r.max_log_over_live =
            std::max(r.max_log_over_live, double(info.log_bytes) / double(info.mapped_bytes));
      }
    }
  }
  if (Status st = vol->Flush(); !st.ok()) Die("flush", st);
  r.secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const auto info = vol->Info();
  r.wa = double(writes + info.blocks_moved - moved0) / double(writes);
  r.segments_deleted = info.segments_deleted;
  r.store_over_live = double(DirBytes(store_dir)) / double(info.mapped_bytes);
  if (Status st = vol->Close(); !st.ok()) Die("close", st);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  CLI::App app{"hbiss cleaner benchmark: greedy against cost-benefit, uniform and hot/cold"};
  app.add_option("--dir", c.dir, "Directory for the store (default: a new one under $TMPDIR or "
                                 "/var/tmp)");
  for (auto [flag, field, help] : {std::tuple{"--size", &c.size, "Volume size"},
                                   {"--segment-size", &c.segment_size, "Segment size"}}) {
    app.add_option(flag, *field, help)->capture_default_str();
  }
  for (auto [flag, field, help] :
       {std::tuple{"--fill", &c.fill, "Live fraction of the volume"},
        {"--write-factor", &c.write_factor, "Overwrite bytes / volume size"},
        {"--threshold", &c.threshold, "OpenOptions::clean_threshold"},
        {"--space-target", &c.space_target, "OpenOptions::clean_space_target"}}) {
    app.add_option(flag, *field, help)->capture_default_str()->check(CLI::NonNegativeNumber);
  }
  app.add_option("--flush-every", c.flush_every, "Flush after every N writes")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--checkpoint-interval", c.checkpoint_interval,
                 "OpenOptions::checkpoint_interval (a segment is deleted after two checkpoints "
                 "leave it out; default: a 64th of the volume size)");
  app.add_option("--seed", c.seed, "Random seed")->capture_default_str();
  app.add_option("--workloads", c.workloads, "Workloads to run, in this order")
      ->capture_default_str()
      ->check(CLI::IsMember({"uniform", "hot"}));
  app.add_option("--policies", c.policies, "Clean policies to run, in this order")
      ->capture_default_str()
      ->check(CLI::IsMember({"greedy", "cost-benefit"}));
  CLI11_PARSE(app, argc, argv);
  if (c.checkpoint_interval.empty()) {
    c.checkpoint_interval = std::to_string(std::max<uint64_t>(ParseSizeOrDie(c.size) / 64, 1));
  }

  if (c.dir.empty()) c.dir = hbiss::bench::MakeTempDirOrDie("hbiss-cleaner-bench-", "/var/tmp");
  struct utsname u;
  uname(&u);
  std::printf("hbiss cleaner benchmark\n");
#if !defined(NDEBUG) || !defined(__OPTIMIZE__)
  std::printf("  WARNING: this is a debug/unoptimized build; its timings mean nothing.\n");
#endif
  std::printf("  build:          %s\n", HBISS_BENCH_BUILD_TYPE);
  std::printf("  machine:        %s %s, %ld CPUs\n", u.sysname, u.release,
              sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("  store:          local, %s\n", c.dir.c_str());
  std::printf("  volume:         %s, segments of %s, %.0f%% live (filled with 1 MiB writes)\n",
              c.size.c_str(), c.segment_size.c_str(), c.fill * 100);
  std::printf("  overwrites:     4 KiB at random live blocks, %.1f x the volume size, "
              "Flush every %llu, one thread, seed %llu\n",
              c.write_factor, static_cast<unsigned long long>(c.flush_every),
              static_cast<unsigned long long>(c.seed));
  std::string runs;
  for (const std::string& w : c.workloads) runs += (runs.empty() ? "" : ", ") + w;
  runs += " x";
  for (const std::string& p : c.policies) runs += " " + p;
  std::printf("  workloads:      %s (hot = 90%% of writes to 10%% of the live blocks)\n",
              runs.c_str());
  std::printf("  cleaner:        background, clean_threshold %.2f, clean_space_target %.2f, "
              "checkpoint_interval %s bytes\n",
              c.threshold, c.space_target, c.checkpoint_interval.c_str());
  std::printf("\n| workload | policy | WA | store / live (end) | log / live (max, 2nd half) | "
              "segments deleted | seconds |\n|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);
  const std::string store_dir = c.dir + "/store";
  for (const std::string& w : c.workloads) {
    const bool hot = w == "hot";
    for (const std::string& pn : c.policies) {
      const CleanPolicy p = pn == "greedy" ? CleanPolicy::kGreedy : CleanPolicy::kCostBenefit;
      const RunResult r = Run(c, store_dir, hot, p);
      std::printf("| %s | %s | %.2f | %.2f | %.2f | %llu | %.0f |\n", hot ? "hot" : "uniform",
                  p == CleanPolicy::kGreedy ? "greedy" : "cost-benefit", r.wa,
                  r.store_over_live, r.max_log_over_live,
                  static_cast<unsigned long long>(r.segments_deleted), r.secs);
      std::fflush(stdout);
    }
  }
  std::filesystem::remove_all(c.dir);
  return 0;
}
