// The observability of `hbiss serve`: its Prometheus metrics (an HTTP
// endpoint of its own, prometheus-cpp's Exposer) and the status report
// `hbiss status` asks for over the peer endpoint (cluster/node.h STATUS).
// This is the only place that knows prometheus-cpp: the layers below expose
// plain counters (nbd::Server, cluster::Node::OpenVolumes, volume/ caches
// and budgets, hdfs/counters.h, export_metrics.h), read at scrape time.
//
// Metric families (README "Metrics" lists them with their meaning):
//  * per volume (label `volume`, the export name): NBD requests, errors,
//    bytes and latency per command (label `command`), unflushed bytes, and
//    for volumes served as heads the engine's state (sizes, write buffers,
//    cleaner, write amplification, checkpoints);
//  * per process: connections, memory against the budget, cache hits and
//    misses, HDFS pipeline recoveries and RPC retries, open volumes.
// Cardinality: the per-volume series exist only while the volume is open
// (they are built from what is open at each scrape, nothing is registered),
// at most 7 commands x (3 counters + 18 histogram series) + 16 others per
// volume, and commands a volume never received have no series.
//
// Thread safety: Collect and StatusJson may run on any thread, concurrently
// with the server; the sources must outlive the ServeObservability.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "cluster/node.h"
#include "metrics/export_metrics.h"
#include "nbd/server.h"
#include "util/status.h"

namespace prometheus {
class Exposer;
}

namespace hbiss::metrics {

// What the metrics and the status are read from. Null members are left out.
struct ServeSources {
  MeteringProvider* exports = nullptr;  // per-export requests (null: metrics off)
  cluster::Node* node = nullptr;        // open volumes
  nbd::Server* server = nullptr;        // connections
  int64_t start_time = 0;               // unix seconds
  std::string store_uri;                // for the status only
  std::string nbd_address;              // "nbd://HOST:PORT ..." as logged
};

// Builds every family from the sources at each Collect.
class ServeCollector : public prometheus::Collectable {
 public:
  explicit ServeCollector(ServeSources sources) : src_(std::move(sources)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const ServeSources src_;
};

// The status report (doc in README "hbiss status"): a JSON object of at
// most max_bytes; connections and volumes beyond what fits are left out
// and counted in "connections_omitted" / "volumes_omitted".
std::string StatusJson(const ServeSources& src, const std::string& metrics_address,
                       size_t max_bytes);

// The metrics endpoint and the status reporter of one `hbiss serve`.
class ServeObservability {
 public:
  // Serves /metrics on `metrics_listen` (HOST:PORT, port 0 picks one; empty:
  // no endpoint), and answers the node's STATUS requests. InvalidArgument
  // or IOError, saying why, when the address cannot be bound.
  static Result<std::unique_ptr<ServeObservability>> Start(const std::string& metrics_listen,
                                                           ServeSources sources);
  // Stops the endpoint and the status reporter, waiting for calls in
  // progress: call it before the sources go.
  ~ServeObservability();
  ServeObservability(const ServeObservability&) = delete;
  ServeObservability& operator=(const ServeObservability&) = delete;

  // "HOST:PORT" the endpoint is bound to, "" without one.
  const std::string& metrics_address() const { return address_; }

 private:
  ServeObservability() = default;
  ServeSources src_;
  std::shared_ptr<ServeCollector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string address_;
};

}  // namespace hbiss::metrics
