// hbiss's side of the HDFS client benchmark: the native client (hdfs/client.h) measuring
// exactly what bench/hdfs/java/HdfsBench.java measures for the stock Java client.
//
//   write   Streams N MiB sequentially into a new file (1 MiB writes), close included.
//   read    Reads the file back sequentially (--read-size bytes per PRead, default 8 MiB);
//           the bytes must match what was written.
//   hflush  Appends 4 KiB records to a new file, each followed by Hflush(); reports the
//           latency of write+hflush (p50, p99, max) after a warm-up.
//
// Each result is one JSON line on stdout, e.g.
//   {"client":"hbiss","op":"write","bytes":1073741824,"seconds":9.1,"mib_per_s":112.5}
// The configuration goes to stderr first; a debug build is flagged there.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "bench/bench_util.h"
#include "hdfs/client.h"

namespace {

using Clock = std::chrono::steady_clock;
using hbiss::Status;
namespace h = hbiss::hdfs;
using hbiss::bench::Die;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "hdfs_bench: %s\nusage: hdfs_bench --uri hdfs://HOST:PORT [--path /bench/hbiss] "
               "[--mib 1024]\n  [--ops write,read,hflush] [--hflush-count 2000] "
               "[--hflush-warmup 200]\n  [--blocksize BYTES] [--read-size BYTES] [--packet BYTES] [--keep]\n",
               why.c_str());
  std::exit(2);
}

// The pattern written and verified: cheap to generate, different in every 8 bytes.
void Fill(uint64_t offset, uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = (offset + i) * 0x9E3779B97F4A7C15ull;
    std::memcpy(p + i, &v, std::min<size_t>(8, n - i));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string uri, path = "/bench/hbiss", ops = "write,read,hflush";
  uint64_t mib = 1024, block_size = 0, read_size = 8u << 20;
  int hflush_count = 2000, hflush_warmup = 200;
  bool keep = false;
  uint32_t packet = 126 * 512;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Usage("missing value for " + a);
      return argv[++i];
    };
    if (a == "--uri") uri = next();
    else if (a == "--path") path = next();
    else if (a == "--mib") mib = std::stoull(next());
    else if (a == "--ops") ops = next();
    else if (a == "--hflush-count") hflush_count = std::stoi(next());
    else if (a == "--hflush-warmup") hflush_warmup = std::stoi(next());
    else if (a == "--blocksize") block_size = std::stoull(next());
    else if (a == "--read-size") read_size = std::stoull(next());
    else if (a == "--keep") keep = true;
    else if (a == "--packet") packet = uint32_t(std::stoul(next()));
    else Usage("unknown argument " + a);
  }
  if (uri.empty()) Usage("--uri is required");
  if (read_size == 0 || read_size % 8 != 0) Usage("--read-size must be a positive multiple of 8");
  auto u = h::ParseHdfsUri(uri);
  if (!u.ok()) Die("uri", u.status());
  h::ClientOptions co;
  co.write_packet_bytes = packet;
  auto c = h::Client::Connect(u->host, u->port, co);
  if (!c.ok()) Die("connect", c.status());
  auto& client = **c;
  auto defaults = client.GetServerDefaults();
  if (!defaults.ok()) Die("getServerDefaults", defaults.status());
#ifdef NDEBUG
  const char* build = "release";
#else
  const char* build = "DEBUG (numbers are not representative)";
#endif
  std::fprintf(stderr,
               "hdfs_bench: client=hbiss build=%s uri=%s path=%s mib=%llu ops=%s blocksize=%llu "
               "replication=%u read_size=%llu hflush_count=%d warmup=%d packet=%u\n",
               build, uri.c_str(), path.c_str(), (unsigned long long)mib, ops.c_str(),
               (unsigned long long)(block_size ? block_size : defaults->block_size()),
               defaults->replication(), (unsigned long long)read_size, hflush_count,
               hflush_warmup, packet);
  const uint64_t bytes = mib << 20;
  std::string file = path + "/data";
  (void)client.Mkdirs(path);

  if (ops.find("write") != std::string::npos) {
    (void)client.Delete(file, false);
    h::CreateOptions o;
    o.block_size = block_size;
    auto w = client.Create(file, o);
    if (!w.ok()) Die("create", w.status());
    std::vector<uint8_t> buf(1 << 20);
    auto t0 = Clock::now();
    for (uint64_t off = 0; off < bytes; off += buf.size()) {
      Fill(off, buf.data(), buf.size());
      Status st = (*w)->Write(buf);
      if (!st.ok()) Die("write", st);
    }
    Status st = (*w)->Close();
    if (!st.ok()) Die("close", st);
    double s = Seconds(t0, Clock::now());
    std::printf("{\"client\":\"hbiss\",\"op\":\"write\",\"bytes\":%llu,\"seconds\":%.3f,"
                "\"mib_per_s\":%.1f}\n",
                (unsigned long long)bytes, s, double(bytes) / 1048576 / s);
    std::fflush(stdout);
  }
  if (ops.find("read") != std::string::npos) {
    auto t0 = Clock::now();
    auto r = client.Open(file);
    if (!r.ok()) Die("open", r.status());
    if ((*r)->length() != bytes) {
      Die("read", Status::Corruption(fmt::format("length {} != {}", (*r)->length(), bytes)));
    }
    std::vector<uint8_t> buf(read_size), expect(read_size);
    for (uint64_t off = 0; off < bytes;) {
      auto n = (*r)->PRead(off, buf);
      if (!n.ok()) Die("read", n.status());
      if (*n == 0) Die("read", Status::IOError("short file"));
      Fill(off, expect.data(), *n);
      if (std::memcmp(buf.data(), expect.data(), *n) != 0) {
        Die("read", Status::Corruption(fmt::format("wrong bytes near {}", off)));
      }
      off += *n;
    }
    double s = Seconds(t0, Clock::now());
    std::printf("{\"client\":\"hbiss\",\"op\":\"read\",\"bytes\":%llu,\"seconds\":%.3f,"
                "\"mib_per_s\":%.1f}\n",
                (unsigned long long)bytes, s, double(bytes) / 1048576 / s);
    std::fflush(stdout);
  }
  if (ops.find("hflush") != std::string::npos) {
    std::string hf = path + "/hflush";
    (void)client.Delete(hf, false);
    auto w = client.Create(hf, h::CreateOptions{});
    if (!w.ok()) Die("create", w.status());
    std::vector<uint8_t> rec(4096);
    std::vector<double> lat;
    for (int i = 0; i < hflush_warmup + hflush_count; i++) {
      Fill(uint64_t(i) * rec.size(), rec.data(), rec.size());
      auto t0 = Clock::now();
      Status st = (*w)->Write(rec);
      if (st.ok()) st = (*w)->Hflush();
      if (!st.ok()) Die("hflush", st);
      if (i >= hflush_warmup) lat.push_back(Seconds(t0, Clock::now()) * 1e6);
    }
    Status st = (*w)->Close();
    if (!st.ok()) Die("close", st);
    std::sort(lat.begin(), lat.end());
    auto pct = [&](double p) { return lat[std::min(lat.size() - 1, size_t(p * lat.size()))]; };
    std::printf("{\"client\":\"hbiss\",\"op\":\"hflush\",\"count\":%zu,\"record_bytes\":4096,"
                "\"p50_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f}\n",
                lat.size(), pct(0.50), pct(0.99), lat.back());
    std::fflush(stdout);
    if (!keep) (void)client.Delete(hf, false);
  }
  if (!keep) (void)client.Delete(file, false);
  return 0;
}
