// Per-export request metrics for the NBD server, kept without touching the
// connection loop: MeteringProvider decorates the server's ExportProvider
// (nbd/export.h), and every export it opens is a MeteredExport, an
// ExportWrapper that counts each call (requests, errors, bytes) and times it
// into a LatencyHistogram, per command. A FLUSH and the flush a FUA write
// implies both count as command "flush".
//
// Lifetime (what keeps Prometheus series bounded): the counters of export E
// are one ExportStats, shared by every MeteredExport of E open at once and
// owned by them only. When the last connection to E goes (the moment the
// provider closes its volume), the ExportStats goes with it, and E's series
// vanish from the next scrape; if E is opened again, its counters start
// from zero (a counter reset, which Prometheus's rate() handles). The
// provider remembers only live stats: memory grows with the exports open at
// once, never with how many were ever opened.
//
// Thread safety: everything here is safe to call from any thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "metrics/latency_histogram.h"
#include "nbd/export.h"
#include "util/mutex.h"
#include "util/thread_annotations.h"

namespace hbiss::metrics {

// The Export calls that are counted, one per NBD command that reaches an
// export.
enum class Command { kRead, kWrite, kTrim, kWriteZeroes, kFlush, kCache, kBlockStatus };
inline constexpr size_t kCommands = 7;
// The Prometheus label value: "read", "write", "trim", "write_zeroes",
// "flush", "cache", "block_status".
const char* CommandName(Command c);

struct CommandStats {
  std::atomic<uint64_t> requests{0};  // calls that returned, OK or not
  std::atomic<uint64_t> errors{0};    // of those, calls that failed
  // Bytes the calls covered: data read or written, the range trimmed,
  // zeroed, cached or queried; 0 for flush.
  std::atomic<uint64_t> bytes{0};
  LatencyHistogram latency;  // of every call, OK or not
};

// The counters of one export, while it is open (see the file comment).
class ExportStats {
 public:
  explicit ExportStats(std::string name) : name_(std::move(name)) {}
  ExportStats(const ExportStats&) = delete;
  ExportStats& operator=(const ExportStats&) = delete;

  const std::string& name() const { return name_; }
  CommandStats& command(Command c) { return commands_[size_t(c)]; }
  const CommandStats& command(Command c) const { return commands_[size_t(c)]; }

  // Bytes written (WRITE payloads) that no FLUSH (or FUA) has made durable
  // yet, as far as this server's counters tell: writes acknowledged minus
  // those acknowledged before the last successful flush began.
  uint64_t unflushed_bytes() const;
  // When the last successful flush returned, unix milliseconds; 0 if none.
  int64_t last_flush_ms() const { return last_flush_ms_.load(std::memory_order_relaxed); }

  // MeteredExport's bookkeeping for a flush: the written-bytes mark when it
  // began, and its success.
  uint64_t FlushBegins() const;
  void FlushSucceeded(uint64_t mark);

 private:
  const std::string name_;
  std::array<CommandStats, kCommands> commands_;
  std::atomic<uint64_t> flushed_mark_{0};  // write bytes covered by a flush
  std::atomic<int64_t> last_flush_ms_{0};
};

// An export whose calls are counted in an ExportStats. Owns its target
// through `target` (shared with the other connections to the export).
class MeteredExport : public nbd::ExportWrapper {
 public:
  MeteredExport(std::shared_ptr<nbd::Export> target, std::shared_ptr<ExportStats> stats);

  Status Read(uint64_t offset, std::span<uint8_t> out) override;
  Status Write(uint64_t offset, std::span<const uint8_t> data) override;
  Status Trim(uint64_t offset, uint64_t length) override;
  Status WriteZeroes(uint64_t offset, uint64_t length, bool may_trim) override;
  Status Flush() override;
  Status Cache(uint64_t offset, uint64_t length) override;
  Result<std::vector<nbd::Extent>> BlockStatus(uint64_t offset, uint64_t length) override;

 private:
  std::shared_ptr<nbd::Export> owned_;
  std::shared_ptr<ExportStats> stats_;
};

// Decorates an ExportProvider: Open returns a MeteredExport; everything else
// is forwarded. `target` must outlive it.
class MeteringProvider : public nbd::ExportProvider {
 public:
  explicit MeteringProvider(nbd::ExportProvider* target) : target_(target) {}

  Result<std::vector<std::string>> List() override { return target_->List(); }
  Result<nbd::ExportInfo> Describe(const std::string& name) override {
    return target_->Describe(name);
  }
  Result<std::shared_ptr<nbd::Export>> Open(const std::string& name) override EXCLUDES(mu_);
  Result<std::vector<std::string>> DirtyBitmaps(const std::string& name) override {
    return target_->DirtyBitmaps(name);
  }

  // The stats of every export open now, sorted by name. The caller's
  // references keep them alive (briefly: do not hold them across scrapes).
  std::vector<std::shared_ptr<const ExportStats>> Live() EXCLUDES(mu_);

 private:
  nbd::ExportProvider* const target_;
  Mutex mu_;
  // Export name -> its stats while some MeteredExport holds them. Entries
  // whose stats died are dropped by Open and Live.
  std::map<std::string, std::weak_ptr<ExportStats>> live_ GUARDED_BY(mu_);
};

}  // namespace hbiss::metrics
