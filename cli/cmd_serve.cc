// hbiss serve: every volume in the store as an NBD export named after the
// volume (nbd/server.h, nbd/volume_export.h). Runs in the foreground, logs
// each connection on stderr, and on SIGTERM or SIGINT stops accepting,
// finishes the requests in flight, flushes and closes every volume, and exits.
#include <signal.h>
#include <sys/resource.h>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <ctime>
#include <string>

#include "cli/commands.h"
#include "cli/log_setup.h"
#include "cluster/node.h"
#include "metrics/serve_metrics.h"
#include "nbd/server.h"
#include "nbd/volume_export.h"
#include "store/store.h"
#include "volume/memory_budget.h"
#include "volume/segment_cache.h"
#include "volume/volume.h"

namespace hbiss::cli {
namespace {

struct ServeArgs {
  std::string listen = "127.0.0.1:10809";
  bool listen_given = false;
  std::string socket;
  bool read_only = false;
  int workers = 8;
  int64_t cache_mb = -1;  // -1: a quarter of the memory limit
  std::string memory_limit = "2G";
  double clean_threshold = 0.5;
  std::string clean_policy = "cost-benefit";
  double clean_space_target = 0;
  std::string server_id;
  std::string peer_listen = "127.0.0.1:0";
  std::string peer_advertise;
  std::string metrics_listen;       // --metrics-listen; empty: no metrics endpoint
  std::string log_format = "text";  // --log-format
  std::string log_level;            // --log-level; empty: info, or debug with -v
};

int Fail(const std::string& context, const Status& s) {
  std::fprintf(stderr, "hbiss: %s: %s\n", context.c_str(), s.ToString().c_str());
  return 1;
}

int RunServe(const GlobalOptions& g, const ServeArgs& a) {
  // Every thread started from here on inherits the blocked mask, so the
  // signals are taken only by sigwait below.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  if (Status ls = SetupServeLogging(a.log_format, a.log_level, g.verbose); !ls.ok()) {
    return Fail("--log-format/--log-level", ls);
  }
  const int64_t start_time = int64_t(std::time(nullptr));

  // Each open volume needs a few descriptors (its lock, its open segment, its
  // clients' sockets; segment readers are shared, at most a quarter of the
  // soft limit and 256 per process, volume::DefaultOpenReaders):
  // take the hard limit, as servers do, rather than the 1024 soft default.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    const rlim_t before = nofile.rlim_cur;
    nofile.rlim_cur = nofile.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &nofile) == 0) {
      spdlog::debug("hbiss serve: descriptor limit raised from {} to {}", before, nofile.rlim_cur);
    }
  }

  std::string uri = g.store_uri.empty() ? DefaultStoreUri() : g.store_uri;
  auto store = store::OpenStore(uri, /*create_if_missing=*/g.store_uri.empty());
  if (!store.ok()) return Fail("store " + uri, store.status());
  auto names = volume::Volume::List(store->get());
  if (!names.ok()) return Fail("listing volumes in " + uri, names.status());

  auto limit = ParseSize(a.memory_limit, uint64_t(1) << 50);
  if (!limit.ok()) return Fail("--memory-limit", limit.status());
  if (*limit < volume::kMinMemoryLimit) {
    return Fail("--memory-limit", Status::InvalidArgument("the memory limit must be at least 64M"));
  }
  volume::SetMemoryLimit(*limit);
  volume::OpenOptions vo;
  if (a.cache_mb >= 0) {
    const uint64_t cache = uint64_t(a.cache_mb) << 20;
    if (cache > *limit / 4) {
      return Fail("--cache-mb", Status::InvalidArgument(
                                    "the read cache may take at most a quarter of --memory-limit (" +
                                    std::to_string(*limit / 4 >> 20) + " MiB)"));
    }
    volume::DefaultReadCache().SetCapacity(cache);
    vo.cache_bytes = cache;
  }
  vo.clean_threshold = a.clean_threshold;
  vo.clean_policy = a.clean_policy == "greedy" ? volume::CleanPolicy::kGreedy
                                               : volume::CleanPolicy::kCostBenefit;
  vo.clean_space_target = a.clean_space_target;
  // This server's part in sharing volumes with other servers (doc/ownership.md).
  cluster::NodeOptions no;
  no.server_id = a.server_id;
  no.peer_listen = a.peer_listen == "none" ? "" : a.peer_listen;
  no.peer_advertise = a.peer_advertise;
  no.open = vo;
  auto node = cluster::Node::Start(store->get(), no);
  if (!node.ok()) return Fail("--peer-listen " + a.peer_listen, node.status());
  cluster::Node* nodep = node->get();
  nbd::VolumeProvider provider(store->get(), a.read_only, vo,
                               [nodep](const std::string& name) { return nodep->Open(name); });
  nbd::ServerOptions so;
  so.listen = (a.socket.empty() || a.listen_given) ? a.listen : "";
  if (so.listen == "none") so.listen.clear();
  so.socket_path = a.socket;
  so.conn.read_only = a.read_only;
  so.conn.workers = a.workers;
  // With metrics on, every export is counted (metrics/export_metrics.h).
  std::unique_ptr<metrics::MeteringProvider> metered;
  if (!a.metrics_listen.empty()) metered = std::make_unique<metrics::MeteringProvider>(&provider);
  nbd::Server server(metered ? static_cast<nbd::ExportProvider*>(metered.get()) : &provider, so);
  Status s = server.Start();
  if (!s.ok()) return Fail("serve", s);

  std::string where;
  if (!so.listen.empty()) {
    std::string host = so.listen.substr(0, so.listen.rfind(':'));
    where = "nbd://" + host + ":" + std::to_string(server.port());
  }
  if (!so.socket_path.empty()) {
    where += (where.empty() ? "" : " and ") + std::string("nbd+unix:///?socket=") + so.socket_path;
  }
  spdlog::info("hbiss serve: store {} ({} volumes){}, listening on {}", store->get()->Uri(),
               names->size(), a.read_only ? ", read-only" : "", where);
  metrics::ServeSources obs_src{metered.get(), nodep, &server, start_time, store->get()->Uri(),
                                where};
  auto obs = metrics::ServeObservability::Start(a.metrics_listen, obs_src);
  if (!obs.ok()) return Fail("--metrics-listen " + a.metrics_listen, obs.status());
  if (!(*obs)->metrics_address().empty()) {
    spdlog::info("hbiss serve: metrics on http://{}/metrics", (*obs)->metrics_address());
  }
  spdlog::info("hbiss serve: server id {}, peer endpoint {}", nodep->server_id(),
               nodep->peer_address().empty() ? "none" : nodep->peer_address());
  spdlog::info("hbiss serve: memory limit {} MiB (write buffers {} MiB, CRC tables {} MiB, read "
               "cache {} MiB)",
               *limit >> 20, volume::DefaultWriteBudget().capacity() >> 20,
               volume::DefaultCrcTableCache().capacity() >> 20,
               volume::DefaultReadCache().capacity() >> 20);

  int sig = 0;
  while (sigwait(&sigs, &sig) != 0) {
  }
  spdlog::info("hbiss serve: {} received; finishing requests and closing volumes",
               sig == SIGINT ? "SIGINT" : "SIGTERM");
  obs->reset();  // no scrape or status call from here on
  server.Stop();
  Status fs = provider.FlushAll();
  Status cs = provider.CloseAll();
  if (!fs.ok()) return Fail("flush", fs);
  if (!cs.ok()) return Fail("close", cs);
  spdlog::info("hbiss serve: all volumes flushed and closed");
  return 0;
}

}  // namespace

void AddServeCommand(CLI::App& app, GlobalOptions& g, int* exit_code) {
  static ServeArgs a;
  CLI::App* serve = app.add_subcommand(
      "serve",
      "Serve every volume in the store over NBD, each as an export named after it, and every "
      "snapshot read-only as VOL@SNAP");
  CLI::Option* listen = serve->add_option(
      "--listen", a.listen,
      "TCP address HOST:PORT (default 127.0.0.1:10809; port 0 picks a free one; \"none\" "
      "disables TCP). With only --socket given, TCP is off.");
  serve->add_option("--socket", a.socket, "Also (or only) listen on this Unix socket path");
  serve->add_flag("--read-only", a.read_only, "Serve every export read-only");
  serve->add_option("--workers", a.workers, "Threads serving each connection (default 8): requests in flight per connection")
      ->check(CLI::Range(1, 64));
  serve->add_option("--memory-limit", a.memory_limit,
                    "Memory for data, shared by every open volume (default 2G, at least 64M): "
                    "half for write buffers (writers wait when they are full), a quarter for "
                    "CRC tables of closed segments, a quarter for the read cache. Extent maps "
                    "come on top (at most 8 bytes per mapped 4 KiB block plus 64 bytes per "
                    "256 MiB of volume size)");
  serve->add_option("--cache-mb", a.cache_mb,
                    "Read cache in MiB shared by every volume, used on stores whose reads are "
                    "not cached on this host (HDFS); at most a quarter of --memory-limit (the "
                    "default); 0 turns it off")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  serve->add_option("--clean-threshold", a.clean_threshold,
                    "The background cleaner copies live data out of segments whose live "
                    "fraction is below this and deletes dead segments (default 0.5); 0 keeps "
                    "every segment; at most 0.9")
      ->check(CLI::Range(0.0, 0.9));
  serve->add_option("--clean-policy", a.clean_policy,
                    "Which of those segments the cleaner copies out first: cost-benefit (the "
                    "highest (1-u)*age/(1+u), the default) or greedy (the lowest live fraction)")
      ->check(CLI::IsMember({"cost-benefit", "greedy"}));
  serve->add_option("--clean-space-target", a.clean_space_target,
                    "When above 0, the cleaner copies only while the log is more than this many "
                    "times the volume's data, and writes wait a little (up to 10 ms each) while "
                    "the log is 5% over it (default 0: it copies whenever a segment is under "
                    "the threshold, and writes never wait)")
      ->check(CLI::Range(0.0, 100.0));
  serve->add_option("--server-id", a.server_id,
                    "This server's id among the servers sharing the store (default: the host "
                    "name); letters, digits, '.', '_' and '-'");
  serve->add_option("--peer-listen", a.peer_listen,
                    "Where other servers reach this one to ask for a volume it owns "
                    "(HOST:PORT, default 127.0.0.1:0, a free port on loopback; \"none\" turns "
                    "it off). On several hosts, listen on an address they can reach");
  serve->add_option("--peer-advertise", a.peer_advertise,
                    "The HOST:PORT other servers are told to use (default: the bound address, "
                    "with the host name for a wildcard host)");
  serve->add_option("--metrics-listen", a.metrics_listen,
                    "Serve Prometheus metrics over HTTP at http://HOST:PORT/metrics (port 0 "
                    "picks a free one; default: off)");
  serve->add_option("--log-format", a.log_format,
                    "text (the default) or json: one JSON object per line on stderr, with time, "
                    "level, logger, message")
      ->check(CLI::IsMember({"text", "json"}));
  serve->add_option("--log-level", a.log_level,
                    "trace, debug, info, warn or error (default info; -v means debug)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  serve->callback([&g, exit_code, listen] {
    a.listen_given = listen->count() > 0;
    *exit_code = RunServe(g, a);
  });
}

}  // namespace hbiss::cli
