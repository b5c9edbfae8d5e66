// hbiss serve: every volume in the store as an NBD export named after the
// volume (nbd/server.h, nbd/volume_export.h). Runs in the foreground, logs
// each connection on stderr, and on SIGTERM or SIGINT stops accepting,
// finishes the requests in flight, flushes and closes every volume, and exits.
#include <signal.h>
#include <sys/resource.h>
#include <time.h>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <string>

#include "cli/commands.h"
#include "cli/log_setup.h"
#include "cli/serve_config.h"
#include "cli/serve_tls.h"
#include "cli/systemd.h"
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
  TlsAccessArgs tls;  // cli/serve_tls.h
  // Limits and isolation (nbd/server.h ServerLimits).
  int64_t max_connections = 1024;
  int64_t max_connections_per_export = 16;
  double handshake_timeout = 10;  // seconds, 0: none
  double idle_timeout = 0;        // seconds, 0: none
  int tcp_keepalive = 60;         // seconds idle before probes, 0: off
  std::string socket_mode;
  std::string socket_group;
  std::string metrics_listen;       // --metrics-listen; empty: no metrics endpoint
  std::string log_format = "text";  // --log-format
  std::string log_level;            // --log-level; empty: info, or debug with -v
};

// A number of seconds from 0 to 1e7 ("10", "0.5"); InvalidArgument for
// anything else (NaN, infinities, values out of range, trailing text).
Result<double> ParseSeconds(const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const double x = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE || !std::isfinite(x) ||
      x < 0 || x > 1e7) {
    return Status::InvalidArgument("'" + text + "' is not a number of seconds from 0 to 1e7");
  }
  return x;
}

// The CLI11 check of a seconds flag (its value then reaches ParseSeconds).
CLI::Validator SecondsValidator() {
  return CLI::Validator(
      [](std::string& v) {
        auto x = ParseSeconds(v);
        return x.ok() ? std::string() : x.status().message();
      },
      "SECONDS");
}

// The limits flags as nbd::ServerOptions (socket mode and group parsed).
Status ApplyLimitFlags(const ServeArgs& a, nbd::ServerOptions* so) {
  so->limits.max_connections = size_t(a.max_connections);
  so->limits.max_connections_per_export = size_t(a.max_connections_per_export);
  so->limits.handshake_timeout = std::chrono::milliseconds(int64_t(a.handshake_timeout * 1000));
  so->limits.idle_timeout = std::chrono::milliseconds(int64_t(a.idle_timeout * 1000));
  so->keepalive_idle = a.tcp_keepalive;
  // Worker threads are counted against the request buffers' share of the
  // memory budget: half of it pays for the most workers allowed at once, at
  // nbd::kWorkerThreadCharge each (at most 1024, at least 8), the rest holds
  // request payloads and reply buffers (doc/memory.md).
  const uint64_t share = volume::RequestBufferLimit();
  const uint64_t workers =
      std::clamp<uint64_t>(share / 2 / nbd::kWorkerThreadCharge, 8, 1024);
  so->limits.max_worker_threads = int(workers);
  so->buffer_bytes = share - std::min(share / 2, workers * nbd::kWorkerThreadCharge);
  if (!a.socket_mode.empty()) {
    HBISS_ASSIGN_OR_RETURN(so->socket_mode, nbd::ParseSocketMode(a.socket_mode));
  }
  if (!a.socket_group.empty()) {
    HBISS_ASSIGN_OR_RETURN(so->socket_gid, nbd::ParseSocketGroup(a.socket_group));
  }
  return Status::OK();
}

int Fail(const std::string& context, const Status& s) {
  std::fprintf(stderr, "hbiss: %s: %s\n", context.c_str(), s.ToString().c_str());
  return 1;
}

// --config and its reload on SIGHUP (cli/serve_config.h), and systemd's
// notifications and socket activation (cli/systemd.h).
struct ServeConfigState {
  std::string path;       // --config; empty for none
  std::unique_ptr<ServeReloader> reloader;
  // Run after every SIGHUP whose file (if any) was accepted: they re-read
  // what lives outside the file (TLS certificates and keys rotated in place).
  std::vector<std::function<Status()>> after_reload;
};

ServeConfigState& ConfigState() {
  static ServeConfigState state;
  return state;
}

// Registers --config (--log-level is serve's own flag; log.level sets it).
// Called after every other serve flag is added.
void AddServeConfigFlags(CLI::App* serve) {
  ServeConfigState& c = ConfigState();
  serve->add_option("--config", c.path,
                    "Read serve's settings from this TOML file (doc/serve-config.md); flags "
                    "given on the command line win over it. SIGHUP re-reads it");
  // The file's memory.limit is checked as the flag is, with its line.
  serve->get_option("--memory-limit")
      ->check(CLI::Validator(
          [](std::string& v) {
            auto size = ParseSize(v, uint64_t(1) << 50);
            return size.ok() ? std::string() : size.status().message();
          },
          "SIZE"));
}

// In the serve callback, before the flags' values are used: applies the
// config file to the flags not given on the command line, and sets up its
// reload with the reloadable settings' appliers.
Status SetUpServeConfig(CLI::App* serve, const GlobalOptions& g) {
  ServeConfigState& c = ConfigState();
  std::set<std::string> pinned = PinnedKeys(serve);
  ServeConfig config;
  if (!c.path.empty()) {
    HBISS_ASSIGN_OR_RETURN(config, LoadServeConfig(c.path));
    HBISS_RETURN_IF_ERROR(ApplyServeConfig(config, serve, pinned));
  }
  c.reloader = std::make_unique<ServeReloader>(std::move(config), serve, std::move(pinned));
  // The settings SIGHUP changes on the running server; the others are
  // logged as needing a restart.
  c.reloader->AddApplier(LogLevelApplier(g.verbose ? "debug" : "info"));
  return Status::OK();
}

int FailConfig(const Status& s) { return Fail("config", s); }

// RELOADING=1 for systemd-notify-reload also wants the monotonic clock.
std::string MonotonicUsec() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::to_string(int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000);
}

void RunAfterReload() {
  for (auto& f : ConfigState().after_reload) {
    Status s = f();
    if (!s.ok()) spdlog::error("hbiss serve: reload: {}", OneLine(s));
  }
}

// SIGHUP: re-reads the config file (an invalid one changes nothing), then the
// TLS credential files.
void ReloadServeConfig(const std::string& status) {
  ServeConfigState& c = ConfigState();
  if (c.path.empty()) {
    spdlog::info("hbiss serve: SIGHUP received (no --config): re-reading the TLS credentials");
    RunAfterReload();
    return;
  }
  NotifySystemd("RELOADING=1\nMONOTONIC_USEC=" + MonotonicUsec() + "\nSTATUS=Reloading " +
                c.path);
  spdlog::log(std::max(spdlog::level::info, spdlog::get_level()),
              "hbiss serve: SIGHUP received; reloading {}", c.path);
  Status s = c.reloader->Reload();  // logs what it changed
  if (!s.ok()) {
    spdlog::error("hbiss serve: reload rejected, keeping the running settings: {}",
                  OneLine(s));
  } else {
    RunAfterReload();
  }
  NotifySystemd("READY=1\nSTATUS=" + status);
}

// What SIGHUP changes on the running server besides the log level: the
// connection limits, the access rules and the TLS credentials (re-read from
// their files on every SIGHUP, so certificates rotated in place are taken
// without a config file). Connections already open keep what they started
// with; new ones get the new settings. `a` is serve's settings at startup.
void AddServerReloads(const ServeArgs& a, const nbd::ServerOptions& so, nbd::Server* server) {
  struct Live {
    TlsAccessArgs tls;
    nbd::ServerLimits limits;
    bool limits_changed = false;
  };
  auto live = std::make_shared<Live>();
  live->tls = a.tls;
  live->limits = so.limits;
  ServeConfigState& c = ConfigState();
  auto number = [](const std::vector<std::string>& v, double unset) {
    if (v.empty()) return unset;
    auto x = ParseSeconds(v.back());  // the flag's validator accepted it
    return x.ok() ? *x : unset;
  };
  auto limit = [&c, live, number](const char* key, double unset,
                                  std::function<void(nbd::ServerLimits*, double)> set) {
    ReloadApplier r;
    r.key = key;
    r.apply = [live, number, unset, set](const std::vector<std::string>& v) {
      set(&live->limits, number(v, unset));
      live->limits_changed = true;
    };
    c.reloader->AddApplier(std::move(r));
  };
  const nbd::ServerLimits defaults;
  limit("limits.max-connections", double(defaults.max_connections),
        [](nbd::ServerLimits* l, double x) { l->max_connections = size_t(x); });
  limit("limits.max-connections-per-export", double(defaults.max_connections_per_export),
        [](nbd::ServerLimits* l, double x) { l->max_connections_per_export = size_t(x); });
  limit("limits.handshake-timeout", defaults.handshake_timeout.count() / 1000.0,
        [](nbd::ServerLimits* l, double x) {
          l->handshake_timeout = std::chrono::milliseconds(int64_t(x * 1000));
        });
  limit("limits.idle-timeout", defaults.idle_timeout.count() / 1000.0,
        [](nbd::ServerLimits* l, double x) {
          l->idle_timeout = std::chrono::milliseconds(int64_t(x * 1000));
        });
  auto text = [&c, live](const char* key, std::function<void(TlsAccessArgs*, std::string)> set) {
    ReloadApplier r;
    r.key = key;
    r.apply = [live, set](const std::vector<std::string>& v) {
      set(&live->tls, v.empty() ? std::string() : v.back());
    };
    c.reloader->AddApplier(std::move(r));
  };
  text("tls.certificates", [](TlsAccessArgs* t, std::string v) { t->files.cert_dir = v; });
  text("tls.cert", [](TlsAccessArgs* t, std::string v) { t->files.cert_file = v; });
  text("tls.key", [](TlsAccessArgs* t, std::string v) { t->files.key_file = v; });
  text("tls.ca", [](TlsAccessArgs* t, std::string v) { t->files.ca_file = v; });
  text("tls.psk", [](TlsAccessArgs* t, std::string v) { t->files.psk_file = v; });
  text("tls.verify-peer", [](TlsAccessArgs* t, std::string v) {
    t->files.verify_peer = v == "true" || v == "1";
  });
  ReloadApplier allow;
  allow.key = "access.allow";
  allow.check = [](const std::vector<std::string>& v) {
    return nbd::AccessPolicy::Parse(v).status();
  };
  allow.apply = [live](const std::vector<std::string>& v) { live->tls.allow = v; };
  c.reloader->AddApplier(std::move(allow));
  c.after_reload.push_back([live, server]() -> Status {
    if (live->limits_changed) {
      server->SetLimits(live->limits);  // logs the new limits
      live->limits_changed = false;
    }
    return ReloadTlsAccess(live->tls, server);
  });
}

int RunServe(const GlobalOptions& g, const ServeArgs& a) {
  // Every thread started from here on inherits the blocked mask, so the
  // signals are taken only by sigwait below.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // Socket activation: serve the sockets systemd passed instead of binding.
  // Taken (and LISTEN_* unset) before any other thread runs.
  auto inherited = InheritedListenSockets();

  if (Status ls = SetupServeLogging(a.log_format, a.log_level, g.verbose); !ls.ok()) {
    return Fail("--log-format/--log-level", ls);
  }
  const int64_t start_time = int64_t(std::time(nullptr));
  if (Status s = ConfigState().reloader->ApplyAtStart(); !s.ok()) return Fail("config", s);

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
    if (cache > *limit / 8) {
      return Fail("--cache-mb",
                  Status::InvalidArgument(
                      "the read cache may take at most an eighth of --memory-limit (" +
                      std::to_string(*limit / 8 >> 20) + " MiB)"));
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
  if (!inherited.ok()) return Fail("serve", inherited.status());
  if (!inherited->empty()) {
    so.listen.clear();
    so.socket_path.clear();
    so.listen_fds = *inherited;
  }
  if (Status ts = ApplyTlsAccess(a.tls, &so); !ts.ok()) return Fail("serve", ts);
  if (Status ls = ApplyLimitFlags(a, &so); !ls.ok()) return Fail("serve", ls);
  // With metrics on, every export is counted (metrics/export_metrics.h).
  std::unique_ptr<metrics::MeteringProvider> metered;
  if (!a.metrics_listen.empty()) metered = std::make_unique<metrics::MeteringProvider>(&provider);
  nbd::Server server(metered ? static_cast<nbd::ExportProvider*>(metered.get()) : &provider, so);
  Status s = server.Start();
  if (!s.ok()) return Fail("serve", s);
  AddServerReloads(a, so, &server);

  std::string where;
  if (!so.listen.empty()) {
    std::string host = so.listen.substr(0, so.listen.rfind(':'));
    where = "nbd://" + host + ":" + std::to_string(server.port());
  }
  if (!so.socket_path.empty()) {
    where += (where.empty() ? "" : " and ") + std::string("nbd+unix:///?socket=") + so.socket_path;
  }
  if (!so.listen_fds.empty()) {
    where = std::to_string(so.listen_fds.size()) + " socket(s) passed by systemd" +
            (server.port() != 0 ? " (TCP port " + std::to_string(server.port()) + ")" : "") +
            "; --listen and --socket ignored";
  }
  spdlog::info("hbiss serve: store {} ({} volumes){}, listening on {}", store->get()->Uri(),
               names->size(), a.read_only ? ", read-only" : "", where);
  spdlog::info("hbiss serve: {}", DescribeTlsAccess(so));
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
               "cache {} MiB, NBD request buffers {} MiB)",
               *limit >> 20, volume::DefaultWriteBudget().capacity() >> 20,
               volume::DefaultCrcTableCache().capacity() >> 20,
               volume::DefaultReadCache().capacity() >> 20, so.buffer_bytes >> 20);
  spdlog::info("hbiss serve: at most {} connections, {} per export; handshake timeout {} s, idle "
               "timeout {}",
               so.limits.max_connections, so.limits.max_connections_per_export,
               a.handshake_timeout,
               a.idle_timeout > 0 ? std::to_string(a.idle_timeout) + " s" : std::string("off"));

  const std::string status = "Serving " + std::to_string(names->size()) + " volumes on " + where;
  NotifySystemd("READY=1\nSTATUS=" + status);

  int sig = 0;
  for (;;) {
    if (sigwait(&sigs, &sig) != 0) continue;
    if (sig != SIGHUP) break;
    ReloadServeConfig(status);
  }
  NotifySystemd("STOPPING=1\nSTATUS=Stopping: finishing requests and closing volumes");
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
                    "CRC tables of closed segments, an eighth for the read cache and an eighth "
                    "for NBD request buffers (clients wait when they are full). Extent maps "
                    "come on top (at most 8 bytes per mapped 4 KiB block plus 64 bytes per "
                    "256 MiB of volume size)");
  serve->add_option("--cache-mb", a.cache_mb,
                    "Read cache in MiB shared by every volume, used on stores whose reads are "
                    "not cached on this host (HDFS); at most an eighth of --memory-limit (the "
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
  serve->add_option("--max-connections", a.max_connections,
                    "Clients served at once (default 1024); one more is refused in the "
                    "handshake (NBD_REP_ERR_POLICY, \"too many connections\")")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  serve->add_option("--max-connections-per-export", a.max_connections_per_export,
                    "Clients in one export at once (default 16: multi-conn needs a few, one "
                    "runaway client must not take every slot); one more gets NBD_REP_ERR_POLICY "
                    "on NBD_OPT_GO")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  serve->add_option("--handshake-timeout", a.handshake_timeout,
                    "Seconds a client has for the whole handshake (default 10, like qemu-nbd's "
                    "--handshake-limit; 0: no limit)")
      ->check(SecondsValidator());
  serve->add_option("--idle-timeout", a.idle_timeout,
                    "Close a connection that sent no request for this many seconds (default 0: "
                    "never)")
      ->check(SecondsValidator());
  serve->add_option("--tcp-keepalive", a.tcp_keepalive,
                    "Seconds a TCP connection may be silent before keepalive probes start (every "
                    "10 s, 6 unanswered close it; default 60, 0: off)")
      ->check(CLI::Range(0, 86400));
  serve->add_option("--socket-mode", a.socket_mode,
                    "Permissions of the --socket, in octal (e.g. 0660); set before it is "
                    "reachable (default: as the umask gives)");
  serve->add_option("--socket-group", a.socket_group,
                    "Group (name or gid) of the --socket, set before it is reachable");
  serve->add_option("--metrics-listen", a.metrics_listen,
                    "Serve Prometheus metrics over HTTP at http://HOST:PORT/metrics (port 0 "
                    "picks a free one; default: off)");
  serve->add_option("--log-format", a.log_format,
                    "text (the default) or json: one JSON object per line on stderr, with time, "
                    "level, logger, message")
      ->check(CLI::IsMember({"text", "json"}));
  serve->add_option("--log-level", a.log_level,
                    "trace, debug, info, warn or error (default info; -v means debug)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  AddTlsAccessFlags(serve, &a.tls);
  AddServeConfigFlags(serve);
  serve->callback([&g, exit_code, listen, serve] {
    if (Status s = SetUpServeConfig(serve, g); !s.ok()) {
      *exit_code = FailConfig(s);
      return;
    }
    a.listen_given = listen->count() > 0;
    *exit_code = RunServe(g, a);
  });
}

}  // namespace hbiss::cli
