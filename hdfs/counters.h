// Process-wide counts of what the HDFS client had to recover from, for
// metrics (metrics/ turns them into Prometheus counters). Plain relaxed
// atomics: any thread increments and reads them; they only ever grow.
#pragma once

#include <atomic>
#include <cstdint>

namespace hbiss::hdfs {

struct ClientCounters {
  // FileWriter pipelines rebuilt after a DataNode failed (FileWriter::Recover).
  std::atomic<uint64_t> pipeline_recoveries{0};
  // DataNodes added to a pipeline to replace failed ones.
  std::atomic<uint64_t> pipeline_replacements{0};
  // NameNode RPC attempts that failed and were tried again (RpcClient::Call).
  std::atomic<uint64_t> rpc_retries{0};
};

// The process's counters.
inline ClientCounters& GlobalClientCounters() {
  static ClientCounters counters;
  return counters;
}

}  // namespace hbiss::hdfs
