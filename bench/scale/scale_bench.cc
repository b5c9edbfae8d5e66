// Scale benchmark of the volume engine on the local store (issue #8): a big
// thin volume with gigabytes written at random, through the public API of
// volume/volume.h only.
//
// Phase 1, random writes and checkpoints. A --size (default 1 TiB) thin
// volume gets --write bytes (default 8 GiB) of 4 KiB writes at uniformly
// random blocks, from --threads writers that together issue --rate writes per
// second (open loop: each write has an intended start time, and its response
// latency is counted from that time, so a stall delays every write that was
// due during it, as it would a VM's queue; --rate 0 is a closed loop). Each
// writer calls Flush after every --flush-every of its writes. The engine
// writes a checkpoint every --checkpoint-interval bytes of log. The
// engine encodes a checkpoint from a copy-on-write snapshot of the extent
// map outside the volume lock, so I/O goes on during the encode; the
// checkpoints are seen from outside the engine:
//  * put: inotify on volumes/NAME/ckpt/ sees the store's temporary file
//    created (Put starts) and renamed to its final name (published); the
//    published object's size is the checkpoint's bytes;
//  * encode and write times: a monitor thread calls Volume::Info() every
//    --poll-us; when checkpoints_written grows, checkpoint_encode_us and
//    checkpoint_write_us are the newest checkpoint's encode and write (Put)
//    times as the engine measured them, and checkpoint_seq names it.
// The encode window is placed as [put start - encode_us, put start]. The
// engine takes the snapshot, encodes, then writes and syncs the log batches
// queued meanwhile and only then starts the Put, so the true encode ends up to
// that log write + sync (about one Flush) before the put start: the window
// may sit that much late, but the checkpoint window below covers the gap.
// A checkpoint window is [encode start, publish].
// Writes are then split into those whose [intended start, end] overlaps a
// checkpoint window and those that overlap none, and
// the p50/p99/p99.9/max of both are printed. Then the extent map's memory
// (Info().map_memory_bytes, process RSS and malloc'd heap) per mapped block,
// and the time Close takes (flush + a checkpoint of the whole map).
//
// Phase 2, recovery after kill -9. For each size L in --recovery-logs this
// process starts itself as a child (--mode write-kill) that opens the volume
// with a checkpoint interval too large to be reached and the cleaner off
// (so the log since the newest checkpoint is exactly what it writes), writes
// L bytes of 4 KiB random writes, flushes, and reports; the parent then
// kills it with SIGKILL. Two fresh children (--mode open) then time
// Volume::Open: first read-only after dropping the volume's files from the
// page cache (posix_fadvise DONTNEED on those files only: a host that
// restarted), then writable with a warm cache (the server restarted on the
// same host), which also times the Close that checkpoints the recovered
// map, so that the next L starts from a fresh checkpoint again.
//
// Not a test: nothing is asserted. Run from a Release/RelWithDebInfo build:
//   build/bench/scale/hbiss_scale_bench [--size 1T] [--write 8G] [--json FILE] ...
// bench/scale/run.sh runs it with the figures written to bench/scale/results/.
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "store/store.h"
#include "util/status.h"
#include "volume/volume.h"

extern char** environ;

namespace {

using hbiss::bench::Die;
using hbiss::bench::DieErrno;
using hbiss::bench::ParseSizeOrDie;

namespace fs = std::filesystem;
using hbiss::Status;
using hbiss::volume::kBlockSize;
using hbiss::volume::Volume;
using hbiss::volume::VolumeInfo;
using Json = nlohmann::ordered_json;

constexpr const char* kVolumeName = "big";

struct Config {
  std::string mode = "all";  // all | write-kill | open (the last two are children)
  std::string dir;           // parent of the store
  std::string size = "1T";
  std::string write = "8G";
  std::string segment_size = "64M";
  std::string checkpoint_interval = "1G";
  uint64_t flush_every = 256;
  uint64_t rate = 20000;
  int threads = 1;
  double clean_threshold = 0.5;
  uint64_t seed = 42;
  int poll_us = 500;
  std::string recovery_logs = "0,256M,1G,2G";
  std::string json;
  bool keep = false;
  // Children only.
  std::string log = "0";  // write-kill: bytes to write after the checkpoint
  bool read_only = false;
  bool drop_cache = false;
};

std::vector<std::string> SplitComma(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void SleepUntilNs(int64_t t) {
  struct timespec ts;
  ts.tv_sec = t / 1000000000;
  ts.tv_nsec = t % 1000000000;
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

// VmRSS and VmHWM of this process, in bytes.
struct ProcMem {
  uint64_t rss = 0;
  uint64_t hwm = 0;
};
ProcMem ReadProcMem() {
  ProcMem m;
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    unsigned long long kb = 0;
    if (std::sscanf(line.c_str(), "VmRSS: %llu kB", &kb) == 1) m.rss = kb << 10;
    if (std::sscanf(line.c_str(), "VmHWM: %llu kB", &kb) == 1) m.hwm = kb << 10;
  }
  return m;
}

// Bytes malloc has handed out and not had back (arenas plus mmapped chunks).
uint64_t HeapInUse() {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

std::string BuildKind() {
#if defined(NDEBUG) && defined(__OPTIMIZE__)
  return "optimized (NDEBUG, " HBISS_BENCH_BUILD_TYPE ")";
#else
  return "DEBUG or unoptimized (" HBISS_BENCH_BUILD_TYPE ")";
#endif
}

std::unique_ptr<hbiss::store::Store> OpenStoreOrDie(const std::string& store_dir) {
  auto r = hbiss::store::OpenStore("file://" + store_dir, true);
  if (!r.ok()) Die("open store " + store_dir, r.status());
  return std::move(r).value();
}

std::unique_ptr<Volume> OpenVolumeOrDie(hbiss::store::Store* store,
                                        const hbiss::volume::OpenOptions& o) {
  auto r = Volume::Open(store, kVolumeName, o);
  if (!r.ok()) Die("open volume", r.status());
  return std::move(r).value();
}

// A 4 KiB block of random bytes whose first 16 bytes are stamped per write, so
// that no two writes carry the same data.
struct BlockSource {
  explicit BlockSource(uint64_t seed) : buf(kBlockSize) {
    std::mt19937_64 r(seed);
    for (size_t i = 0; i < buf.size(); i += 8) {
      uint64_t x = r();
      std::memcpy(buf.data() + i, &x, 8);
    }
  }
  std::span<const uint8_t> Stamp(uint64_t a, uint64_t b) {
    std::memcpy(buf.data(), &a, 8);
    std::memcpy(buf.data() + 8, &b, 8);
    return buf;
  }
  std::vector<uint8_t> buf;
};

struct Percentiles {
  size_t n = 0;
  double p50 = 0, p99 = 0, p999 = 0, max = 0;  // microseconds
};
Percentiles Pct(std::vector<int64_t> v) {
  Percentiles p;
  p.n = v.size();
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
    return static_cast<double>(v[std::min(i, v.size() - 1)]) / 1e3;
  };
  p.p50 = at(0.50);
  p.p99 = at(0.99);
  p.p999 = at(0.999);
  p.max = static_cast<double>(v.back()) / 1e3;
  return p;
}
Json PctJson(const Percentiles& p) {
  return Json{{"n", p.n}, {"p50_us", p.p50}, {"p99_us", p.p99}, {"p999_us", p.p999},
              {"max_us", p.max}};
}
void PrintPct(const char* label, const Percentiles& p) {
  std::printf("  %-36s %9zu %10.1f %10.1f %10.1f %11.1f\n", label, p.n, p.p50, p.p99, p.p999,
              p.max);
}

// ---------------------------------------------------------------------------
// Checkpoint observation (phase 1)

struct CkptSeen {
  uint64_t seq = 0;
  int64_t seen = 0;              // when the monitor saw checkpoints_written grow
  uint64_t encode_us = 0;        // Info().checkpoint_encode_us (0: not known)
  uint64_t write_us = 0;         // Info().checkpoint_write_us
  uint64_t info_bytes = 0;       // Info().checkpoint_bytes
  uint64_t mapped_blocks = 0;    // as Info() reported right after the publish
  bool missed = false;           // more than one checkpoint between two polls
  int64_t put_start = 0, put_end = 0;  // inotify; 0: not seen
  uint64_t bytes = 0;                  // size of the published object
  // The encode window [enc_lo, enc_hi] (see the header comment).
  int64_t enc_lo = 0, enc_hi = 0;
};

// Watches the volume with Info() and its ckpt/ directory with inotify until
// Stop(). Not copyable; both threads end in Stop().
class CkptObserver {
 public:
  CkptObserver(Volume* vol, const std::string& ckpt_dir, int poll_us)
      : vol_(vol), dir_(ckpt_dir), poll_us_(poll_us) {
    fs::create_directories(dir_);
    ifd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (ifd_ < 0) DieErrno("inotify_init1");
    if (inotify_add_watch(ifd_, dir_.c_str(), IN_CREATE | IN_MOVED_TO) < 0) {
      DieErrno("inotify_add_watch " + dir_);
    }
    ino_ = std::thread([this] { InotifyLoop(); });
    mon_ = std::thread([this] { MonitorLoop(); });
  }
  CkptObserver(const CkptObserver&) = delete;
  CkptObserver& operator=(const CkptObserver&) = delete;
  ~CkptObserver() { Stop(); }

  // Stops the Info() monitor (call before closing the volume).
  void StopMonitor() {
    stop_mon_ = true;
    if (mon_.joinable()) mon_.join();
  }
  void Stop() {
    StopMonitor();
    stop_ino_ = true;
    if (ino_.joinable()) ino_.join();
    if (ifd_ >= 0) ::close(ifd_);
    ifd_ = -1;
  }

  // The checkpoints seen by the monitor, each matched with its Put. Call
  // after Stop().
  std::vector<CkptSeen> Checkpoints() const {
    std::vector<CkptSeen> out = seen_;
    int64_t prev_end = 0;
    for (CkptSeen& c : out) {
      for (const Published& p : published_) {
        if (p.seq == c.seq) {
          c.put_end = p.t;
          c.bytes = p.bytes;
        }
      }
      // The Put's temporary file: the last one created before the publish
      // (and after the previous checkpoint's).
      for (int64_t t : put_starts_) {
        if (t > prev_end && (c.put_end == 0 ? t <= c.seen : t <= c.put_end)) c.put_start = t;
      }
      // Without the temporary file, the publish less the write time.
      int64_t anchor = c.put_start != 0 ? c.put_start
                       : c.put_end != 0 ? c.put_end - int64_t(c.write_us) * 1000
                                        : c.seen - int64_t(c.write_us) * 1000;
      c.enc_hi = anchor;
      c.enc_lo = anchor - int64_t(c.encode_us) * 1000;
      if (c.put_end == 0) c.put_end = c.seen;  // the monitor saw it later than that
      prev_end = c.put_end;
    }
    return out;
  }
  // Checkpoints published (seen by inotify), including ones the monitor did
  // not see (during Close).
  struct Published {
    uint64_t seq = 0;
    int64_t t = 0;
    uint64_t bytes = 0;
  };
  std::vector<Published> PublishedList() const { return published_; }

 private:
  void MonitorLoop() {
    uint64_t last = vol_->Info().checkpoints_written;
    while (!stop_mon_) {
      VolumeInfo in = vol_->Info();
      int64_t t1 = NowNs();
      if (in.checkpoints_written != last) {
        CkptSeen c;
        c.seq = in.checkpoint_seq;
        c.seen = t1;
        c.encode_us = in.checkpoint_encode_us;
        c.write_us = in.checkpoint_write_us;
        c.info_bytes = in.checkpoint_bytes;
        c.mapped_blocks = in.mapped_bytes / kBlockSize;
        c.missed = in.checkpoints_written - last > 1;
        seen_.push_back(c);
        last = in.checkpoints_written;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(poll_us_));
    }
  }
  void InotifyLoop() {
    alignas(struct inotify_event) char buf[16384];
    while (true) {
      struct pollfd p = {ifd_, POLLIN, 0};
      int r = ::poll(&p, 1, 50);
      if (r <= 0) {
        if (stop_ino_) return;
        continue;
      }
      ssize_t n = ::read(ifd_, buf, sizeof(buf));
      int64_t t = NowNs();
      if (n <= 0) continue;
      for (char* q = buf; q < buf + n;) {
        auto* e = reinterpret_cast<struct inotify_event*>(q);
        q += sizeof(struct inotify_event) + e->len;
        if (e->len == 0) continue;
        std::string name = e->name;
        if ((e->mask & IN_CREATE) && name.rfind(".hbiss-", 0) == 0) {
          put_starts_.push_back(t);
        } else if ((e->mask & IN_MOVED_TO) && name.size() == 16) {
          Published p;
          p.seq = std::strtoull(name.c_str(), nullptr, 16);
          p.t = t;
          struct stat st;
          if (::stat((dir_ + "/" + name).c_str(), &st) == 0) p.bytes = uint64_t(st.st_size);
          published_.push_back(p);
        }
      }
    }
  }

  Volume* const vol_;
  const std::string dir_;
  const int poll_us_;
  int ifd_ = -1;
  std::atomic<bool> stop_mon_{false}, stop_ino_{false};
  // Written by one thread each, read only after Stop().
  std::vector<CkptSeen> seen_;
  std::vector<int64_t> put_starts_;
  std::vector<Published> published_;
  std::thread ino_, mon_;
};

// ---------------------------------------------------------------------------
// Children

// Writes `bytes` of 4 KiB writes at random blocks (closed loop), flushing
// after every flush_every writes and at the end. Returns the seconds taken.
double WriteRandom(Volume* vol, uint64_t bytes, uint64_t flush_every, uint64_t seed) {
  const uint64_t blocks = vol->size() / kBlockSize;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<uint64_t> pick(0, blocks - 1);
  BlockSource src(seed ^ 0x5ca1e);
  const int64_t t0 = NowNs();
  for (uint64_t i = 0; i < bytes / kBlockSize; ++i) {
    uint64_t b = pick(rng);
    if (Status st = vol->Write(b * kBlockSize, src.Stamp(i, b)); !st.ok()) Die("write", st);
    if ((i + 1) % flush_every == 0) {
      if (Status st = vol->Flush(); !st.ok()) Die("flush", st);
    }
  }
  if (Status st = vol->Flush(); !st.ok()) Die("flush", st);
  return static_cast<double>(NowNs() - t0) / 1e9;
}

Json InfoJson(const VolumeInfo& in) {
  return Json{{"mapped_bytes", in.mapped_bytes},   {"segment_count", in.segment_count},
              {"log_bytes", in.log_bytes},         {"checkpoint_seq", in.checkpoint_seq},
              {"map_memory_bytes", in.map_memory_bytes}};
}

// --mode write-kill: writes --log bytes after the newest checkpoint, flushes,
// prints one JSON line and waits to be killed.
int RunWriteKill(const Config& c, const std::string& store_dir) {
  auto store = OpenStoreOrDie(store_dir);
  hbiss::volume::OpenOptions o;
  o.checkpoint_interval = uint64_t(1) << 62;
  o.clean_threshold = 0;
  auto vol = OpenVolumeOrDie(store.get(), o);
  VolumeInfo before = vol->Info();
  double secs = WriteRandom(vol.get(), ParseSizeOrDie(c.log), c.flush_every, c.seed);
  VolumeInfo after = vol->Info();
  Json j{{"mode", "write-kill"},
         {"log_written", ParseSizeOrDie(c.log)},
         {"write_secs", secs},
         {"before", InfoJson(before)},
         {"after", InfoJson(after)}};
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
  for (;;) pause();
}

// Drops the page cache of every file of the volume (only those).
void DropVolumeCache(const std::string& vol_dir) {
  for (const auto& e : fs::recursive_directory_iterator(vol_dir)) {
    if (!e.is_regular_file()) continue;
    int fd = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

// --mode open: times Volume::Open (and Close when writable); prints one JSON
// line.
int RunOpen(const Config& c, const std::string& store_dir) {
  auto store = OpenStoreOrDie(store_dir);
  if (c.drop_cache) DropVolumeCache(store_dir + "/volumes/" + kVolumeName);
  hbiss::volume::OpenOptions o;
  o.read_only = c.read_only;
  o.clean_threshold = c.clean_threshold;
  const ProcMem m0 = ReadProcMem();
  const uint64_t h0 = HeapInUse();
  const int64_t t0 = NowNs();
  auto vol = OpenVolumeOrDie(store.get(), o);
  const int64_t t1 = NowNs();
  const ProcMem m1 = ReadProcMem();
  const uint64_t h1 = HeapInUse();
  VolumeInfo in = vol->Info();
  double close_secs = 0;
  if (!c.read_only) {
    const int64_t tc = NowNs();
    if (Status st = vol->Close(); !st.ok()) Die("close", st);
    close_secs = static_cast<double>(NowNs() - tc) / 1e9;
  }
  Json j{{"mode", "open"},
         {"read_only", c.read_only},
         {"drop_cache", c.drop_cache},
         {"open_secs", static_cast<double>(t1 - t0) / 1e9},
         {"close_secs", close_secs},
         {"rss_before", m0.rss},
         {"rss_after_open", m1.rss},
         {"heap_before", h0},
         {"heap_after_open", h1},
         {"info", InfoJson(in)}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

// Runs this binary with `args`; returns its pid, and its stdout as *out_fd.
pid_t SpawnSelf(const std::vector<std::string>& args, int* out_fd) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) DieErrno("pipe2");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  int r = posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(p[1]);
  if (r != 0) {
    errno = r;
    DieErrno("posix_spawn");
  }
  *out_fd = p[0];
  return pid;
}

// Reads lines from fd until one that starts with '{' (returned) or EOF ("");
// the others (the engine's log lines) are copied to stderr.
std::string ReadJsonLine(int fd) {
  std::string s;
  char ch;
  while (true) {
    ssize_t n = ::read(fd, &ch, 1);
    if (n == 1 && ch != '\n') {
      s.push_back(ch);
      continue;
    }
    if (!s.empty() && s[0] == '{') return s;
    if (!s.empty()) std::fprintf(stderr, "  child: %s\n", s.c_str());
    s.clear();
    if (n != 1) return "";
  }
}

std::string FormatDouble(double d) {
  char b[32];
  std::snprintf(b, sizeof(b), "%g", d);
  return b;
}

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& a : v) s += (s.empty() ? "" : " ") + a;
  return s;
}

Json RunChild(std::vector<std::string> args, bool kill_after_line) {
  int fd = -1;
  pid_t pid = SpawnSelf(args, &fd);
  std::string line = ReadJsonLine(fd);
  if (kill_after_line) ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(fd);
  if (line.empty() || (!kill_after_line && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))) {
    std::fprintf(stderr, "scale_bench: child failed: %s\n", Join(args).c_str());
    std::exit(1);
  }
  return Json::parse(line);
}

// ---------------------------------------------------------------------------
// The whole run

struct Sample {  // one write, times relative to the phase's start
  int64_t intended = 0, start = 0, end = 0;
};

int RunAll(const Config& c, const std::string& store_dir, const std::string& self_cmd,
           Json* out) {
  const uint64_t size = (ParseSizeOrDie(c.size) + kBlockSize - 1) / kBlockSize * kBlockSize;
  const uint64_t nwrites = ParseSizeOrDie(c.write) / kBlockSize;
  const uint64_t ckpt_interval = ParseSizeOrDie(c.checkpoint_interval);
  const std::string vol_dir = store_dir + "/volumes/" + kVolumeName;

  auto store = OpenStoreOrDie(store_dir);
  hbiss::volume::CreateOptions co;
  co.size = size;
  co.segment_size = ParseSizeOrDie(c.segment_size);
  if (Status st = Volume::Create(store.get(), kVolumeName, co); !st.ok()) Die("create", st);
  hbiss::volume::OpenOptions oo;
  oo.checkpoint_interval = ckpt_interval;
  oo.clean_threshold = c.clean_threshold;
  const ProcMem mem_start = ReadProcMem();
  const uint64_t heap_start = HeapInUse();
  auto vol = OpenVolumeOrDie(store.get(), oo);

  std::printf("\nphase 1: %llu random 4 KiB writes (%s) into the %s volume\n",
              static_cast<unsigned long long>(nwrites), c.write.c_str(), c.size.c_str());
  std::fflush(stdout);
  std::vector<Sample> samples(nwrites);
  auto observer = std::make_unique<CkptObserver>(vol.get(), vol_dir + "/ckpt", c.poll_us);
  const uint64_t blocks = size / kBlockSize;
  const int64_t t_begin = NowNs() + 1000000;
  // Writers only write; a separate thread flushes after every flush_every
  // writes (of all writers), as an NBD client's FLUSH runs beside its other
  // requests. Flushes that fall behind are merged into one.
  std::mutex flush_mu;
  std::condition_variable flush_cv;
  uint64_t flush_wanted = 0;  // GUARDED_BY(flush_mu)
  bool writing = true;        // GUARDED_BY(flush_mu)
  std::vector<int64_t> flushes;
  std::thread flusher([&] {
    uint64_t flushed = 0;
    std::unique_lock<std::mutex> l(flush_mu);
    for (;;) {
      flush_cv.wait(l, [&] { return flush_wanted > flushed || !writing; });
      if (flush_wanted == flushed) break;
      flushed = flush_wanted;
      l.unlock();
      int64_t f0 = NowNs();
      if (Status st = vol->Flush(); !st.ok()) Die("flush", st);
      flushes.push_back(NowNs() - f0);
      l.lock();
    }
  });
  std::vector<std::thread> writers;
  std::atomic<uint64_t> done{0};
  for (int j = 0; j < c.threads; ++j) {
    writers.emplace_back([&, j] {
      std::mt19937_64 rng(c.seed * 1000003 + j);
      std::uniform_int_distribution<uint64_t> pick(0, blocks - 1);
      BlockSource src(c.seed + j);
      for (uint64_t i = j; i < nwrites; i += c.threads) {
        Sample& s = samples[i];
        s.intended = c.rate == 0 ? 0
                                 : static_cast<int64_t>(static_cast<double>(i) * 1e9 /
                                                        static_cast<double>(c.rate));
        if (c.rate != 0 && NowNs() < t_begin + s.intended) SleepUntilNs(t_begin + s.intended);
        uint64_t b = pick(rng);
        s.start = NowNs() - t_begin;
        if (c.rate == 0) s.intended = s.start;
        if (Status st = vol->Write(b * kBlockSize, src.Stamp(i, b)); !st.ok()) Die("write", st);
        s.end = NowNs() - t_begin;
        uint64_t d = done.fetch_add(1) + 1;
        if (d % c.flush_every == 0) {
          std::lock_guard<std::mutex> g(flush_mu);
          flush_wanted++;
          flush_cv.notify_one();
        }
        if (d % (nwrites / 8 + 1) == 0) {
          std::printf("  %3.0f%% written, %.1f s\n", 100.0 * double(d) / double(nwrites),
                      double(NowNs() - t_begin) / 1e9);
          std::fflush(stdout);
        }
      }
    });
  }
  for (std::thread& t : writers) t.join();
  {
    std::lock_guard<std::mutex> g(flush_mu);
    writing = false;
    flush_cv.notify_one();
  }
  flusher.join();
  if (Status st = vol->Flush(); !st.ok()) Die("flush", st);
  const int64_t t_written = NowNs();
  observer->StopMonitor();
  const VolumeInfo info = vol->Info();
  const ProcMem mem_written = ReadProcMem();
  const uint64_t heap_written = HeapInUse();
  const int64_t tc = NowNs();
  if (Status st = vol->Close(); !st.ok()) Die("close", st);
  const double close_secs = static_cast<double>(NowNs() - tc) / 1e9;
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the last inotify events
  observer->Stop();
  std::vector<CkptSeen> ckpts = observer->Checkpoints();
  std::vector<CkptObserver::Published> published = observer->PublishedList();
  vol.reset();

  // Classify the writes against the checkpoint windows.
  struct Window {
    int64_t lo, hi, enc_hi;
  };
  std::vector<Window> win;
  for (const CkptSeen& k : ckpts) {
    win.push_back({k.enc_lo - t_begin, k.put_end - t_begin, k.enc_hi - t_begin});
  }
  std::vector<int64_t> resp_all, resp_out, resp_ck, resp_enc, svc_out, svc_ck, svc_enc;
  for (const Sample& s : samples) {
    int64_t resp = s.end - s.intended, svc = s.end - s.start;
    resp_all.push_back(resp);
    bool in_ck = false, in_enc = false;
    for (const Window& w : win) {
      if (s.intended < w.hi && s.end > w.lo) in_ck = true;
      if (s.intended < w.enc_hi && s.end > w.lo) in_enc = true;
    }
    (in_ck ? resp_ck : resp_out).push_back(resp);
    (in_ck ? svc_ck : svc_out).push_back(svc);
    if (in_enc) {
      resp_enc.push_back(resp);
      svc_enc.push_back(svc);
    }
  }
  const double write_secs = static_cast<double>(t_written - t_begin) / 1e9;
  const int64_t backlog = samples.empty() ? 0 : samples.back().start - samples.back().intended;

  std::printf("\n  wrote %llu x 4 KiB in %.1f s: %.0f IOPS (target %s)\n",
              static_cast<unsigned long long>(nwrites), write_secs,
              static_cast<double>(nwrites) / write_secs,
              c.rate == 0 ? "none, closed loop" : std::to_string(c.rate).c_str());
  if (c.rate != 0 && backlog > 1000000000) {
    std::printf("  WARNING: the last write started %.1f s after its intended time: the "
                "engine did not keep up with --rate, so latencies include a growing queue\n",
                static_cast<double>(backlog) / 1e9);
  }
  std::printf("\n  checkpoints during the writes (checkpoint_interval %s of log)\n",
              c.checkpoint_interval.c_str());
  std::printf("  %6s %8s %13s %11s %9s %10s %10s %10s\n", "seq", "at", "mapped blocks",
              "bytes", "B/block", "encode", "write", "put");
  Json jck = Json::array();
  bool any_missed = false;
  for (const CkptSeen& k : ckpts) {
    const double enc = double(k.encode_us) / 1e3, wr = double(k.write_us) / 1e3;
    const double put = k.put_start != 0 ? double(k.put_end - k.put_start) / 1e6 : 0;
    const uint64_t bytes = k.bytes != 0 ? k.bytes : k.info_bytes;
    const double bpb = k.mapped_blocks ? double(bytes) / double(k.mapped_blocks) : 0;
    const double at = double(k.enc_lo - t_begin) / 1e9;
    any_missed = any_missed || k.missed;
    std::printf("  %6llu %6.1f s %13llu %11llu %9.2f %7.1f ms %7.1f ms %7.1f ms%s\n",
                static_cast<unsigned long long>(k.seq), at,
                static_cast<unsigned long long>(k.mapped_blocks),
                static_cast<unsigned long long>(bytes), bpb, enc, wr, put,
                k.missed ? " *" : "");
    jck.push_back(Json{{"seq", k.seq},
                       {"at_s", at},
                       {"mapped_blocks", k.mapped_blocks},
                       {"bytes", bytes},
                       {"info_checkpoint_bytes", k.info_bytes},
                       {"bytes_per_block", bpb},
                       {"encode_ms", enc},
                       {"write_ms", wr},
                       {"put_ms", put},
                       {"put_start_seen", k.put_start != 0},
                       {"window_ms", double(k.put_end - k.enc_lo) / 1e6},
                       {"missed_others", k.missed}});
  }
  std::printf("  (encode, write: Info().checkpoint_encode_us/_write_us; put: inotify, temporary "
              "file to publish; at: encode start)\n");
  if (any_missed) {
    std::printf("  * more than one checkpoint between two Info() polls: the others are not "
                "listed and their writes count as outside a checkpoint\n");
  }
  if (ckpts.empty()) std::printf("  (none: write more than --checkpoint-interval)\n");
  uint64_t final_bytes = 0;
  for (const auto& p : published) {
    if (p.t >= tc) final_bytes = p.bytes;
  }
  const uint64_t mapped_blocks = info.mapped_bytes / kBlockSize;
  std::printf("  Close (flush + checkpoint of the whole map): %.3f s, checkpoint %llu bytes "
              "(%.2f B/mapped block)\n",
              close_secs, static_cast<unsigned long long>(final_bytes),
              mapped_blocks ? double(final_bytes) / double(mapped_blocks) : 0);

  std::printf("\n  4 KiB write latency, us (response: from the intended start; service: the "
              "Write call)\n");
  std::printf("  %-36s %9s %10s %10s %10s %11s\n", "", "writes", "p50", "p99", "p99.9", "max");
  Percentiles p_all = Pct(resp_all), p_out = Pct(resp_out), p_ck = Pct(resp_ck),
              p_enc = Pct(resp_enc), s_out = Pct(svc_out), s_ck = Pct(svc_ck),
              s_enc = Pct(svc_enc), p_fl = Pct(flushes);
  PrintPct("response, all", p_all);
  PrintPct("response, no checkpoint running", p_out);
  PrintPct("response, during a checkpoint", p_ck);
  PrintPct("response, during an encode", p_enc);
  PrintPct("service, no checkpoint running", s_out);
  PrintPct("service, during a checkpoint", s_ck);
  PrintPct("service, during an encode", s_enc);
  PrintPct("Flush (own thread)", p_fl);
  const double p99_ratio = p_out.p99 > 0 ? p_ck.p99 / p_out.p99 : 0;
  std::printf("  p99 during a checkpoint / without: %.3gx (goal: at most 2x)\n", p99_ratio);

  const double bpb_map = mapped_blocks ? double(info.map_memory_bytes) / double(mapped_blocks) : 0;
  std::printf("\n  extent map after the writes: %llu mapped blocks, map_memory_bytes %llu "
              "(%.2f B/block)\n",
              static_cast<unsigned long long>(mapped_blocks),
              static_cast<unsigned long long>(info.map_memory_bytes), bpb_map);
  std::printf("  process: VmRSS %.1f MiB (%.1f MiB before Open), VmHWM %.1f MiB, heap in use "
              "%.1f MiB (%.1f before Open); includes this run's %.1f MiB of latency samples\n",
              double(mem_written.rss) / 1048576, double(mem_start.rss) / 1048576,
              double(mem_written.hwm) / 1048576, double(heap_written) / 1048576,
              double(heap_start) / 1048576,
              double(samples.size() * sizeof(Sample)) / 1048576);
  std::printf("  log: %llu segments, %.1f MiB\n",
              static_cast<unsigned long long>(info.segment_count),
              double(info.log_bytes) / 1048576);
  std::printf("  reproduce: %s\n", self_cmd.c_str());
  std::fflush(stdout);

  Json& p1 = (*out)["phase1"];
  p1["writes"] = nwrites;
  p1["write_secs"] = write_secs;
  p1["iops"] = double(nwrites) / write_secs;
  p1["backlog_at_end_s"] = double(backlog) / 1e9;
  p1["checkpoints"] = jck;
  p1["close_secs"] = close_secs;
  p1["final_checkpoint_bytes"] = final_bytes;
  p1["latency"] = Json{{"response_all", PctJson(p_all)},
                       {"response_no_checkpoint", PctJson(p_out)},
                       {"response_during_checkpoint", PctJson(p_ck)},
                       {"response_during_encode", PctJson(p_enc)},
                       {"service_no_checkpoint", PctJson(s_out)},
                       {"service_during_checkpoint", PctJson(s_ck)},
                       {"service_during_encode", PctJson(s_enc)},
                       {"flush", PctJson(p_fl)}};
  p1["p99_ratio_during_vs_without"] = p99_ratio;
  p1["info"] = InfoJson(info);
  p1["map_bytes_per_block"] = bpb_map;
  p1["rss_before_open"] = mem_start.rss;
  p1["rss_after_writes"] = mem_written.rss;
  p1["hwm_after_writes"] = mem_written.hwm;
  p1["heap_before_open"] = heap_start;
  p1["heap_after_writes"] = heap_written;
  p1["sample_bytes"] = samples.size() * sizeof(Sample);
  samples = {};

  // Phase 2: recovery after kill -9.
  std::printf("\nphase 2: recovery after kill -9, by log written since the newest checkpoint\n");
  std::printf("  %10s %9s %14s %14s %12s %11s %14s\n", "log", "written", "open cold r/o",
              "open warm rw", "s/GiB (rw)", "close rw", "RSS of Open");
  std::fflush(stdout);
  std::vector<std::string> common = {fs::read_symlink("/proc/self/exe").string(), "--dir", c.dir,
                                     "--flush-every", std::to_string(c.flush_every),
                                     "--clean-threshold", FormatDouble(c.clean_threshold)};
  Json rec = Json::array();
  double base_open = -1;
  uint64_t seed = c.seed + 7;
  for (const std::string& l : SplitComma(c.recovery_logs)) {
    std::vector<std::string> wargs = common;
    for (const char* a : {"--mode", "write-kill", "--log"}) wargs.push_back(a);
    wargs.push_back(l);
    wargs.push_back("--seed");
    wargs.push_back(std::to_string(seed++));
    Json w = RunChild(wargs, /*kill_after_line=*/true);
    std::vector<std::string> cold = common;
    for (const char* a : {"--mode", "open", "--read-only", "--drop-cache"}) cold.push_back(a);
    Json oc = RunChild(cold, false);
    std::vector<std::string> warm = common;
    for (const char* a : {"--mode", "open"}) warm.push_back(a);
    Json ow = RunChild(warm, false);
    const uint64_t log_since = w["after"]["log_bytes"].get<uint64_t>() -
                               w["before"]["log_bytes"].get<uint64_t>();
    const double open_w = ow["open_secs"].get<double>();
    if (base_open < 0) base_open = open_w;
    const double gib = double(log_since) / double(1ull << 30);
    const double per_gib = gib > 0 ? (open_w - base_open) / gib : 0;
    const uint64_t rss_open =
        ow["rss_after_open"].get<uint64_t>() - ow["rss_before"].get<uint64_t>();
    char per[32];
    std::snprintf(per, sizeof(per), "%.2f", per_gib);
    std::printf("  %10s %6.0f MiB %12.3f s %12.3f s %12s %9.3f s %10.1f MiB\n", l.c_str(),
                double(log_since) / 1048576, oc["open_secs"].get<double>(), open_w,
                gib > 0 ? per : "-", ow["close_secs"].get<double>(), double(rss_open) / 1048576);
    if (w["before"]["checkpoint_seq"] != w["after"]["checkpoint_seq"]) {
      std::printf("  WARNING: the writer wrote a checkpoint; the log since it is not %s\n",
                  l.c_str());
    }
    std::fflush(stdout);
    rec.push_back(Json{{"log", l},
                       {"log_bytes_since_checkpoint", log_since},
                       {"writer", w},
                       {"open_cold_read_only", oc},
                       {"open_warm_writable", ow},
                       {"open_secs_minus_empty_log_per_gib", per_gib},
                       {"commands",
                        {Join(wargs) + "  # then kill -9", Join(cold), Join(warm)}}});
  }
  if (!rec.empty()) {
    const Json& r0 = rec[0]["open_warm_writable"];
    uint64_t mb = r0["info"]["mapped_bytes"].get<uint64_t>() / kBlockSize;
    uint64_t drss = r0["rss_after_open"].get<uint64_t>() - r0["rss_before"].get<uint64_t>();
    uint64_t dheap = r0["heap_after_open"].get<uint64_t>() - r0["heap_before"].get<uint64_t>();
    std::printf("  a fresh process's Open of %llu mapped blocks (first row): RSS +%.1f MiB "
                "(%.2f B/block; map_memory_bytes says %.2f B/block), heap +%.1f MiB (counts "
                "untouched buffers, such as the open segment's)\n",
                static_cast<unsigned long long>(mb), double(drss) / 1048576,
                mb ? double(drss) / double(mb) : 0,
                mb ? r0["info"]["map_memory_bytes"].get<double>() / double(mb) : 0,
                double(dheap) / 1048576);
    std::printf("  the rows' commands (children of this run; the writer is killed with "
                "SIGKILL after it prints):\n");
    for (const Json& r : rec) {
      for (const Json& cmd : r["commands"]) {
        std::printf("    %s\n", cmd.get<std::string>().c_str());
      }
    }
  }
  (*out)["recovery"] = rec;
  (*out)["recovery_open_secs_empty_log"] = base_open;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  CLI::App app{"hbiss scale benchmark: a big thin volume written at random, checkpoints, "
               "recovery after kill -9"};
  app.add_option("--mode", c.mode, "all (default); write-kill and open are its children")
      ->check(CLI::IsMember({"all", "write-kill", "open"}));
  app.add_option("--dir", c.dir,
                 "Directory for the store (default: a new one under $TMPDIR or /tmp; "
                 "deleted afterwards unless --keep)");
  app.add_option("--size", c.size, "Volume size (thin)")->capture_default_str();
  app.add_option("--write", c.write, "Bytes of 4 KiB random writes in phase 1")
      ->capture_default_str();
  app.add_option("--segment-size", c.segment_size, "Segment size")->capture_default_str();
  app.add_option("--checkpoint-interval", c.checkpoint_interval,
                 "OpenOptions::checkpoint_interval in phase 1")
      ->capture_default_str();
  app.add_option("--flush-every", c.flush_every,
                 "Phase 1: a separate thread calls Flush after every N writes (of all "
                 "writers together), merging flushes that fall behind; the kill -9 writers "
                 "flush after every N of their writes")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--rate", c.rate,
                 "Writes per second of all writers together (0: closed loop, as fast as "
                 "they complete)")
      ->capture_default_str();
  app.add_option("--threads", c.threads, "Writer threads in phase 1")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--clean-threshold", c.clean_threshold, "OpenOptions::clean_threshold")
      ->capture_default_str();
  app.add_option("--seed", c.seed, "Random seed")->capture_default_str();
  app.add_option("--poll-us", c.poll_us, "Interval of the Info() monitor")
      ->capture_default_str();
  app.add_option("--recovery-logs", c.recovery_logs,
                 "Comma-separated log sizes since the newest checkpoint to recover from "
                 "(empty: skip phase 2)")
      ->capture_default_str();
  app.add_option("--json", c.json, "Also write every figure to this JSON file");
  app.add_flag("--keep", c.keep, "Keep the store afterwards");
  app.add_option("--log", c.log, "write-kill: bytes to write");
  app.add_flag("--read-only", c.read_only, "open: read-only");
  app.add_flag("--drop-cache", c.drop_cache, "open: drop the volume's files from the page cache");
  CLI11_PARSE(app, argc, argv);
  prctl(PR_SET_TIMERSLACK, 1UL);

  if (c.mode != "all") {
    if (c.dir.empty()) {
      std::fprintf(stderr, "scale_bench: --mode %s needs --dir\n", c.mode.c_str());
      return 2;
    }
    const std::string store_dir = c.dir + "/store";
    return c.mode == "write-kill" ? RunWriteKill(c, store_dir) : RunOpen(c, store_dir);
  }

  bool made_dir = false;
  if (c.dir.empty()) {
    const char* t = std::getenv("TMPDIR");
    std::string tmpl = std::string(t != nullptr && t[0] != '\0' ? t : "/tmp") +
                       "/hbiss-scale-bench-XXXXXX";
    std::vector<char> b(tmpl.begin(), tmpl.end());
    b.push_back('\0');
    if (mkdtemp(b.data()) == nullptr) DieErrno("mkdtemp");
    c.dir = b.data();
    made_dir = true;
  }
  c.dir = fs::absolute(c.dir).string();
  const std::string store_dir = c.dir + "/store";
  fs::remove_all(store_dir);
  fs::create_directories(store_dir);

  std::string self_cmd;
  for (int i = 0; i < argc; ++i) self_cmd += (i ? " " : "") + std::string(argv[i]);
  struct utsname u;
  uname(&u);
  std::printf("hbiss scale benchmark\n");
  std::printf("  build:            %s\n", BuildKind().c_str());
#if !defined(NDEBUG) || !defined(__OPTIMIZE__)
  std::printf("  WARNING: this is a debug/unoptimized build; its numbers mean nothing.\n");
#endif
  std::printf("  machine:          %s %s, %ld CPUs\n", u.sysname, u.release,
              sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("  command:          %s\n", self_cmd.c_str());
  std::printf("  store:            file://%s\n", store_dir.c_str());
  std::printf("  volume:           %s thin, segment %s\n", c.size.c_str(),
              c.segment_size.c_str());
  std::printf("  phase 1 writes:   %s of 4 KiB at uniformly random blocks (seed %llu), "
              "%d writer thread(s), %s, Flush every %llu writes (own thread)\n",
              c.write.c_str(), static_cast<unsigned long long>(c.seed), c.threads,
              c.rate == 0 ? "closed loop"
                          : ("open loop at " + std::to_string(c.rate) + " writes/s").c_str(),
              static_cast<unsigned long long>(c.flush_every));
  std::printf("  checkpoints:      every %s of log (checkpoint_interval); Info() polled "
              "every %d us for their encode and write times\n",
              c.checkpoint_interval.c_str(), c.poll_us);
  std::printf("  cleaner:          clean_threshold %.2f (phase 1 and the Opens of phase 2; "
              "the kill -9 writers run with 0)\n",
              c.clean_threshold);
  std::printf("  recovery logs:    %s\n",
              c.recovery_logs.empty() ? "(none)" : c.recovery_logs.c_str());
  std::fflush(stdout);

  Json out;
  out["config"] = Json{{"command", self_cmd},
                       {"build", BuildKind()},
                       {"kernel", std::string(u.release)},
                       {"cpus", sysconf(_SC_NPROCESSORS_ONLN)},
                       {"size", c.size},
                       {"write", c.write},
                       {"segment_size", c.segment_size},
                       {"checkpoint_interval", c.checkpoint_interval},
                       {"flush_every", c.flush_every},
                       {"rate", c.rate},
                       {"threads", c.threads},
                       {"clean_threshold", c.clean_threshold},
                       {"seed", c.seed},
                       {"recovery_logs", c.recovery_logs}};
  int rc = RunAll(c, store_dir, self_cmd, &out);
  if (!c.json.empty()) {
    std::ofstream f(c.json);
    f << out.dump(2) << "\n";
  }
  if (!c.keep) {
    fs::remove_all(store_dir);
    if (made_dir) fs::remove(c.dir);
  }
  return rc;
}
