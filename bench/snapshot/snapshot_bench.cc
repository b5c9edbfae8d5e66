// Snapshot and clone creation time against volume size, in process, on the
// local store (a directory): for each size, a thin volume gets DATA bytes
// of 64 KiB writes at random 64 KiB-aligned offsets (so its map has many
// extents), is flushed, and then snapshots and clones are made one after
// the other, each timed on its own (REPEAT times; min, median, max). Also
// timed: how long the snapshot's map object takes to be written in the
// background (until ListSnapshots says materialized), which creation does
// not wait for.
//
// Usage: snapshot_bench DIR [SIZES...]   sizes like 1G 16G 256G 1T
// Env:   DATA (bytes written per volume, default 8G, at most half the size),
//        REPEAT (default 7)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "store/local_store.h"
#include "volume/volume.h"

using namespace hbiss;
using Clock = std::chrono::steady_clock;

namespace {

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Stats {
  double min = 0, med = 0, max = 0;
};
Stats Summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v.front(), v[v.size() / 2], v.back()};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: snapshot_bench DIR [SIZES...]\n");
    return 2;
  }
  const std::string dir = argv[1];
  std::vector<uint64_t> sizes;
  for (int i = 2; i < argc; i++) sizes.push_back(bench::ParseSizeOrDie(argv[i]));
  if (sizes.empty()) sizes = {1ull << 30, 16ull << 30, 256ull << 30, 1ull << 40};
  const char* data_env = std::getenv("DATA");
  const uint64_t data = data_env ? bench::ParseSizeOrDie(data_env) : 8ull << 30;
  const char* rep_env = std::getenv("REPEAT");
  const int repeat = rep_env ? std::max(1, std::atoi(rep_env)) : 7;
  std::printf("# snapshot_bench: local store in %s, 64 MiB segments, 64 KiB random writes, "
              "DATA=%llu bytes (at most half the size), REPEAT=%d\n",
              dir.c_str(), static_cast<unsigned long long>(data), repeat);
  std::printf("%-8s %12s %12s %28s %28s %16s\n", "size", "data", "mapped",
              "snapshot ms (min/med/max)", "clone ms (min/med/max)", "map written ms");
  std::error_code ec;
  for (uint64_t size : sizes) {
    std::filesystem::remove_all(dir, ec);
    auto st = store::OpenLocalStore(dir, true);
    if (!st.ok()) bench::Die("store " + dir, st.status());
    store::Store* s = st->get();
    volume::CreateOptions co;
    co.size = size;
    if (Status c = volume::Volume::Create(s, "v", co); !c.ok()) bench::Die("create", c);
    auto v = volume::Volume::Open(s, "v");
    if (!v.ok()) bench::Die("open", v.status());
    const uint64_t bytes = std::min(data, size / 2);
    const uint64_t piece = 64 << 10;
    std::vector<uint8_t> buf(piece);
    std::mt19937_64 rng(size);
    for (auto& b : buf) b = uint8_t(rng());
    for (uint64_t done = 0; done < bytes; done += piece) {
      const uint64_t off = (rng() % (size / piece)) * piece;
      buf[0] = uint8_t(done >> 16);
      if (Status w = (*v)->Write(off, buf); !w.ok()) bench::Die("write", w);
    }
    if (Status f = (*v)->Flush(); !f.ok()) bench::Die("flush", f);
    std::vector<double> snap_ms, clone_ms, mat_ms;
    for (int i = 0; i < repeat; i++) {
      const std::string name = "s" + std::to_string(i);
      const auto t0 = Clock::now();
      auto r = (*v)->CreateSnapshot(name);
      const auto t1 = Clock::now();
      if (!r.ok()) bench::Die("snapshot", r.status());
      snap_ms.push_back(Ms(t1 - t0));
      // The map object, written in the background.
      for (;;) {
        auto l = volume::Volume::ListSnapshots(s, "v");
        if (!l.ok()) bench::Die("list", l.status());
        if (l->back().materialized) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      mat_ms.push_back(Ms(Clock::now() - t0));
      const auto c0 = Clock::now();
      Status cl = volume::Volume::Clone(s, "v@" + name, "c" + std::to_string(i));
      const auto c1 = Clock::now();
      if (!cl.ok()) bench::Die("clone", cl);
      clone_ms.push_back(Ms(c1 - c0));
    }
    const uint64_t mapped = (*v)->Info().mapped_bytes;
    const Stats a = Summarize(snap_ms), b = Summarize(clone_ms), m = Summarize(mat_ms);
    char sz[32];
    std::snprintf(sz, sizeof sz, "%lluG", static_cast<unsigned long long>(size >> 30));
    std::printf("%-8s %12llu %12llu %10.2f/%7.2f/%7.2f %10.2f/%7.2f/%7.2f %16.1f\n", sz,
                static_cast<unsigned long long>(bytes), static_cast<unsigned long long>(mapped),
                a.min, a.med, a.max, b.min, b.med, b.max, m.med);
    std::fflush(stdout);
    (void)(*v)->Close();
  }
  std::filesystem::remove_all(dir, ec);
  return 0;
}
