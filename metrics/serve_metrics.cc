#include "metrics/serve_metrics.h"

#include <unistd.h>

#include <ctime>
#include <exception>
#include <limits>
#include <map>

#include <nlohmann/json.hpp>
#include <prometheus/client_metric.h>
#include <prometheus/exposer.h>
#include <spdlog/spdlog.h>

#include "volume/memory_budget.h"
#include "volume/segment_cache.h"
#include "volume/volume.h"
#ifdef HBISS_HAVE_HDFS_COUNTERS
#include "hdfs/counters.h"
#endif

namespace hbiss::metrics {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

// The families of one Collect, in the order they were first named.
class Families {
 public:
  MetricFamily& Get(const std::string& name, const std::string& help, MetricType type) {
    auto it = index_.find(name);
    if (it != index_.end()) return out_[it->second];
    index_[name] = out_.size();
    out_.push_back(MetricFamily{name, help, type, {}});
    return out_.back();
  }
  void Counter(const std::string& name, const std::string& help, Labels labels, double v) {
    ClientMetric m;
    m.label = std::move(labels);
    m.counter.value = v;
    Get(name, help, MetricType::Counter).metric.push_back(std::move(m));
  }
  void Gauge(const std::string& name, const std::string& help, Labels labels, double v) {
    ClientMetric m;
    m.label = std::move(labels);
    m.gauge.value = v;
    Get(name, help, MetricType::Gauge).metric.push_back(std::move(m));
  }
  void Histogram(const std::string& name, const std::string& help, Labels labels,
                 const LatencyHistogram::Snapshot& s) {
    ClientMetric m;
    m.label = std::move(labels);
    m.histogram.sample_count = s.count;
    m.histogram.sample_sum = s.sum_seconds;
    uint64_t cumulative = 0;
    for (size_t i = 0; i < LatencyHistogram::kBuckets; i++) {
      cumulative += s.buckets[i];
      ClientMetric::Bucket b;
      b.cumulative_count = cumulative;
      b.upper_bound = i < LatencyHistogram::kBounds.size()
                          ? LatencyHistogram::kBounds[i]
                          : std::numeric_limits<double>::infinity();
      m.histogram.bucket.push_back(b);
    }
    Get(name, help, MetricType::Histogram).metric.push_back(std::move(m));
  }
  std::vector<MetricFamily> Take() { return std::move(out_); }

 private:
  std::vector<MetricFamily> out_;
  std::map<std::string, size_t> index_;
};

int64_t Now() { return int64_t(std::time(nullptr)); }

}  // namespace

std::vector<MetricFamily> ServeCollector::Collect() const {
  Families f;
  f.Gauge("hbiss_start_time_seconds", "When this hbiss serve started, unix seconds", {},
          double(src_.start_time));

  // Connections.
  if (src_.server != nullptr) {
    f.Gauge("hbiss_nbd_connections_open", "NBD connections open now", {},
            double(src_.server->connections()));
    f.Counter("hbiss_nbd_connections_accepted_total", "NBD connections accepted", {},
              double(src_.server->accepted()));
    f.Counter("hbiss_nbd_connections_refused_total",
              "NBD connections accepted and then closed at once, not served", {},
              double(src_.server->refused()));
  }

  // Per-export NBD requests.
  std::map<std::string, uint64_t> written;  // export -> bytes written, for write amplification
  if (src_.exports != nullptr) {
    for (const auto& e : src_.exports->Live()) {
      for (size_t i = 0; i < kCommands; i++) {
        const Command c = Command(i);
        const CommandStats& s = e->command(c);
        const uint64_t requests = s.requests.load(std::memory_order_relaxed);
        if (requests == 0) continue;  // no series for commands never received
        Labels l = {{"volume", e->name()}, {"command", CommandName(c)}};
        f.Counter("hbiss_nbd_requests_total", "NBD requests served, by volume and command", l,
                  double(requests));
        f.Counter("hbiss_nbd_request_errors_total",
                  "NBD requests that failed, by volume and command", l,
                  double(s.errors.load(std::memory_order_relaxed)));
        f.Counter("hbiss_nbd_request_bytes_total",
                  "Bytes covered by successful NBD requests (read or written; trimmed, zeroed, "
                  "cached or queried ranges), by volume and command",
                  l, double(s.bytes.load(std::memory_order_relaxed)));
        f.Histogram("hbiss_nbd_request_duration_seconds",
                    "Time the volume took to serve an NBD request (flush: FLUSH and FUA), by "
                    "volume and command",
                    l, s.latency.Take());
      }
      f.Gauge("hbiss_nbd_unflushed_bytes",
              "Bytes written to the volume that no flush has covered yet", {{"volume", e->name()}},
              double(e->unflushed_bytes()));
      written[e->name()] = e->command(Command::kWrite).bytes.load(std::memory_order_relaxed);
    }
  }

  // The engine's state of each open volume.
  if (src_.node != nullptr) {
    const auto vols = src_.node->OpenVolumes();
    f.Gauge("hbiss_volumes_open", "Volumes this server has open", {}, double(vols.size()));
    for (const auto& v : vols) {
      const volume::VolumeInfo& i = v.info;
      const Labels l = {{"volume", v.name}};
      f.Gauge("hbiss_volume_owner", "1 if this server owns the volume (may write it), else 0", l,
              v.owner ? 1 : 0);
      f.Gauge("hbiss_volume_size_bytes", "The volume's size", l, double(i.size));
      f.Gauge("hbiss_volume_mapped_bytes", "Bytes of the volume that hold data", l,
              double(i.mapped_bytes));
      f.Gauge("hbiss_volume_log_bytes", "Bytes of the volume's segments in the store", l,
              double(i.log_bytes));
      f.Gauge("hbiss_volume_segments", "Segments of the volume's log", l,
              double(i.segment_count));
      f.Gauge("hbiss_volume_write_buffer_bytes",
              "Write buffers the volume's in-memory segments hold (not yet in a closed segment)",
              l, double(i.buffer_bytes));
      f.Gauge("hbiss_volume_map_memory_bytes", "Heap bytes of the volume's extent map", l,
              double(i.map_memory_bytes));
      f.Counter("hbiss_volume_cleaner_segments_cleaned_total",
                "Segments whose live blocks the cleaner copied out, since the volume was opened",
                l, double(i.segments_cleaned));
      f.Counter("hbiss_volume_cleaner_segments_deleted_total",
                "Segments the cleaner deleted, since the volume was opened", l,
                double(i.segments_deleted));
      const double copied = double(i.blocks_moved) * volume::kBlockSize;
      f.Counter("hbiss_volume_cleaner_copied_bytes_total",
                "Bytes the cleaner copied to the head of the log, since the volume was opened",
                l, copied);
      auto w = written.find(v.name);
      if (w != written.end() && w->second > 0) {
        f.Gauge("hbiss_volume_write_amplification_ratio",
                "(bytes written by clients + bytes the cleaner copied) / bytes written by "
                "clients, since the volume was opened",
                l, (double(w->second) + copied) / double(w->second));
      }
      f.Counter("hbiss_volume_checkpoints_written_total",
                "Checkpoints written since the volume was opened", l,
                double(i.checkpoints_written));
      if (i.checkpoints_written > 0) {
        f.Gauge("hbiss_volume_checkpoint_last_bytes", "Size of the newest checkpoint written", l,
                double(i.checkpoint_bytes));
        f.Gauge("hbiss_volume_checkpoint_last_encode_seconds",
                "How long the newest checkpoint took to encode", l,
                double(i.checkpoint_encode_us) * 1e-6);
        f.Gauge("hbiss_volume_checkpoint_last_write_seconds",
                "How long the newest checkpoint took to write to the store", l,
                double(i.checkpoint_write_us) * 1e-6);
      }
    }
  }

  // Memory against the budget (volume/memory_budget.h).
  f.Gauge("hbiss_memory_limit_bytes", "The memory limit for data (--memory-limit)", {},
          double(volume::MemoryLimit()));
  struct Pool {
    const char* name;
    uint64_t used, capacity;
  };
  const Pool pools[] = {
      {"write_buffers", volume::DefaultWriteBudget().used(),
       volume::DefaultWriteBudget().capacity()},
      {"crc_tables", volume::DefaultCrcTableCache().used(),
       volume::DefaultCrcTableCache().capacity()},
      {"read_cache", volume::DefaultReadCache().used(), volume::DefaultReadCache().capacity()},
  };
  for (const Pool& p : pools) {
    f.Gauge("hbiss_memory_used_bytes", "Memory in use, by pool of the memory limit",
            {{"pool", p.name}}, double(p.used));
  }
  for (const Pool& p : pools) {
    f.Gauge("hbiss_memory_capacity_bytes", "The share of the memory limit of each pool",
            {{"pool", p.name}}, double(p.capacity));
  }
  f.Gauge("hbiss_memory_write_buffers_peak_bytes", "The most write buffers ever in use at once",
          {}, double(volume::DefaultWriteBudget().peak()));

  // Caches.
  f.Counter("hbiss_cache_hits_total", "Lookups that found their data in the cache, by cache",
            {{"cache", "read"}}, double(volume::DefaultReadCache().hits()));
  f.Counter("hbiss_cache_hits_total", "", {{"cache", "crc_table"}},
            double(volume::DefaultCrcTableCache().hits()));
  f.Counter("hbiss_cache_misses_total", "Lookups that did not find their data in the cache",
            {{"cache", "read"}}, double(volume::DefaultReadCache().misses()));
  f.Counter("hbiss_cache_misses_total", "", {{"cache", "crc_table"}},
            double(volume::DefaultCrcTableCache().misses()));

#ifdef HBISS_HAVE_HDFS_COUNTERS
  const hdfs::ClientCounters& h = hdfs::GlobalClientCounters();
  f.Counter("hbiss_hdfs_pipeline_recoveries_total",
            "HDFS write pipelines rebuilt after a DataNode failed", {},
            double(h.pipeline_recoveries.load(std::memory_order_relaxed)));
  f.Counter("hbiss_hdfs_pipeline_replacements_total",
            "DataNodes added to HDFS write pipelines to replace failed ones", {},
            double(h.pipeline_replacements.load(std::memory_order_relaxed)));
  f.Counter("hbiss_hdfs_rpc_retries_total", "NameNode RPCs that failed and were tried again", {},
            double(h.rpc_retries.load(std::memory_order_relaxed)));
#endif
  return f.Take();
}

std::string StatusJson(const ServeSources& src, const std::string& metrics_address,
                       size_t max_bytes) {
  using nlohmann::ordered_json;
  ordered_json j;
  const int64_t now = Now();
  j["server"] = src.node != nullptr ? src.node->server_id() : "";
  j["pid"] = int64_t(getpid());
  j["started"] = src.start_time;
  j["uptime_seconds"] = now - src.start_time;
  j["store"] = src.store_uri;
  j["nbd"] = src.nbd_address;
  j["peer"] = src.node != nullptr ? src.node->peer_address() : "";
  j["metrics"] = metrics_address;

  ordered_json mem;
  mem["limit_bytes"] = volume::MemoryLimit();
  mem["write_buffers"] = {{"used_bytes", volume::DefaultWriteBudget().used()},
                          {"capacity_bytes", volume::DefaultWriteBudget().capacity()},
                          {"peak_bytes", volume::DefaultWriteBudget().peak()}};
  mem["crc_tables"] = {{"used_bytes", volume::DefaultCrcTableCache().used()},
                       {"capacity_bytes", volume::DefaultCrcTableCache().capacity()}};
  mem["read_cache"] = {{"used_bytes", volume::DefaultReadCache().used()},
                       {"capacity_bytes", volume::DefaultReadCache().capacity()},
                       {"hits", volume::DefaultReadCache().hits()},
                       {"misses", volume::DefaultReadCache().misses()}};
  j["memory"] = std::move(mem);

  std::vector<nbd::ConnectionInfo> conns;
  if (src.server != nullptr) {
    conns = src.server->ConnectionInfos();
    j["connections_accepted"] = src.server->accepted();
    j["connections_refused"] = src.server->refused();
  }
  std::map<std::string, int> per_export;
  for (const auto& c : conns) per_export[c.export_name]++;

  std::map<std::string, std::shared_ptr<const ExportStats>> stats;
  if (src.exports != nullptr) {
    for (auto& e : src.exports->Live()) stats[e->name()] = e;
  }

  ordered_json vols = ordered_json::array();
  if (src.node != nullptr) {
    for (const auto& v : src.node->OpenVolumes()) {
      const volume::VolumeInfo& i = v.info;
      ordered_json o;
      o["name"] = v.name;
      o["owner"] = v.owner;
      o["size_bytes"] = i.size;
      o["mapped_bytes"] = i.mapped_bytes;
      o["log_bytes"] = i.log_bytes;
      o["segments"] = i.segment_count;
      o["write_buffer_bytes"] = i.buffer_bytes;
      o["connections"] = per_export.count(v.name) ? per_export[v.name] : 0;
      auto s = stats.find(v.name);
      if (s != stats.end()) {
        o["unflushed_bytes"] = s->second->unflushed_bytes();
        o["last_flush_ms"] = s->second->last_flush_ms();
      }
      o["cleaner"] = {{"segments_cleaned", i.segments_cleaned},
                      {"segments_deleted", i.segments_deleted},
                      {"copied_bytes", i.blocks_moved * volume::kBlockSize}};
      o["checkpoints"] = {{"written", i.checkpoints_written},
                          {"newest_seq", i.checkpoint_seq},
                          {"last_bytes", i.checkpoint_bytes},
                          {"last_encode_us", i.checkpoint_encode_us},
                          {"last_write_us", i.checkpoint_write_us}};
      vols.push_back(std::move(o));
    }
  }

  ordered_json cs = ordered_json::array();
  for (const auto& c : conns) {
    cs.push_back({{"id", c.id},
                  {"peer", c.peer},
                  {"export", c.export_name},
                  {"requests", c.requests},
                  {"since", c.since}});
  }

  // What fits: the header first, then volumes and connections while they fit.
  size_t budget = max_bytes > 512 ? max_bytes - 512 : 0;
  size_t used = j.dump().size();
  auto take = [&](ordered_json& all, const char* key, const char* omitted) {
    ordered_json kept = ordered_json::array();
    size_t dropped = 0;
    for (auto& x : all) {
      const size_t n = x.dump().size() + 1;
      if (dropped == 0 && used + n <= budget) {
        used += n;
        kept.push_back(std::move(x));
      } else {
        dropped++;
      }
    }
    j[key] = std::move(kept);
    j[omitted] = dropped;
  };
  take(vols, "volumes", "volumes_omitted");
  take(cs, "connections", "connections_omitted");
  return j.dump();
}

Result<std::unique_ptr<ServeObservability>> ServeObservability::Start(
    const std::string& metrics_listen, ServeSources sources) {
  std::unique_ptr<ServeObservability> o(new ServeObservability());
  o->src_ = std::move(sources);
  if (!metrics_listen.empty()) {
    const size_t colon = metrics_listen.rfind(':');
    if (colon == std::string::npos || colon + 1 == metrics_listen.size() ||
        metrics_listen.find_first_not_of("0123456789", colon + 1) != std::string::npos) {
      return Status::InvalidArgument("bad metrics address '" + metrics_listen +
                                     "': want HOST:PORT");
    }
    o->collector_ = std::make_shared<ServeCollector>(o->src_);
    try {
      // One thread: a scrape is cheap, and Prometheus scrapes one at a time.
      o->exposer_ = std::make_unique<prometheus::Exposer>(metrics_listen, 1);
    } catch (const std::exception& e) {
      return Status::IOError("cannot listen for metrics on " + metrics_listen + ": " + e.what());
    }
    o->exposer_->RegisterCollectable(o->collector_);
    const auto ports = o->exposer_->GetListeningPorts();
    o->address_ = metrics_listen.substr(0, colon) + ":" +
                  (ports.empty() ? metrics_listen.substr(colon + 1) : std::to_string(ports[0]));
  }
  if (o->src_.node != nullptr) {
    ServeObservability* self = o.get();
    // A peer frame carries at most 64 KiB (cluster/peer_wire.h).
    o->src_.node->SetStatusReporter(
        [self] { return StatusJson(self->src_, self->address_, 60 << 10); });
  }
  return o;
}

ServeObservability::~ServeObservability() {
  if (src_.node != nullptr) src_.node->SetStatusReporter(nullptr);
  exposer_.reset();  // stops serving scrapes, waits for the one in progress
}

}  // namespace hbiss::metrics
