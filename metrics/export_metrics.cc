#include "metrics/export_metrics.h"

#include <chrono>

namespace hbiss::metrics {

const char* CommandName(Command c) {
  switch (c) {
    case Command::kRead:
      return "read";
    case Command::kWrite:
      return "write";
    case Command::kTrim:
      return "trim";
    case Command::kWriteZeroes:
      return "write_zeroes";
    case Command::kFlush:
      return "flush";
    case Command::kCache:
      return "cache";
    case Command::kBlockStatus:
      return "block_status";
  }
  return "unknown";
}

uint64_t ExportStats::unflushed_bytes() const {
  const uint64_t written = command(Command::kWrite).bytes.load(std::memory_order_relaxed);
  const uint64_t flushed = flushed_mark_.load(std::memory_order_relaxed);
  return written > flushed ? written - flushed : 0;
}

uint64_t ExportStats::FlushBegins() const {
  return command(Command::kWrite).bytes.load(std::memory_order_relaxed);
}

void ExportStats::FlushSucceeded(uint64_t mark) {
  uint64_t cur = flushed_mark_.load(std::memory_order_relaxed);
  while (cur < mark && !flushed_mark_.compare_exchange_weak(cur, mark)) {
  }
  last_flush_ms_.store(std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count(),
                       std::memory_order_relaxed);
}

namespace {

// Times one call and counts it in `c` when it goes out of scope.
class Timed {
 public:
  Timed(CommandStats& c, uint64_t bytes)
      : c_(c), bytes_(bytes), start_(std::chrono::steady_clock::now()) {}
  ~Timed() {
    c_.latency.Observe(std::chrono::steady_clock::now() - start_);
    c_.bytes.fetch_add(bytes_, std::memory_order_relaxed);
    c_.requests.fetch_add(1, std::memory_order_relaxed);
    if (failed_) c_.errors.fetch_add(1, std::memory_order_relaxed);
  }
  // A failed call counts no bytes.
  Status Done(Status s) {
    failed_ = !s.ok();
    if (failed_) bytes_ = 0;
    return s;
  }
  template <typename T>
  Result<T> Done(Result<T> r) {
    failed_ = !r.ok();
    if (failed_) bytes_ = 0;
    return r;
  }

 private:
  CommandStats& c_;
  uint64_t bytes_;
  const std::chrono::steady_clock::time_point start_;
  bool failed_ = false;
};

}  // namespace

MeteredExport::MeteredExport(std::shared_ptr<nbd::Export> target,
                             std::shared_ptr<ExportStats> stats)
    : nbd::ExportWrapper(target.get()), owned_(std::move(target)), stats_(std::move(stats)) {}

Status MeteredExport::Read(uint64_t offset, std::span<uint8_t> out) {
  Timed t(stats_->command(Command::kRead), out.size());
  return t.Done(ExportWrapper::Read(offset, out));
}

Status MeteredExport::Write(uint64_t offset, std::span<const uint8_t> data) {
  CommandStats& c = stats_->command(Command::kWrite);
  Status s;
  {
    Timed t(c, 0);
    s = t.Done(ExportWrapper::Write(offset, data));
  }
  // Bytes only once acknowledged, so unflushed_bytes never counts a failed
  // write.
  if (s.ok()) c.bytes.fetch_add(data.size(), std::memory_order_relaxed);
  return s;
}

Status MeteredExport::Trim(uint64_t offset, uint64_t length) {
  Timed t(stats_->command(Command::kTrim), length);
  return t.Done(ExportWrapper::Trim(offset, length));
}

Status MeteredExport::WriteZeroes(uint64_t offset, uint64_t length, bool may_trim) {
  Timed t(stats_->command(Command::kWriteZeroes), length);
  return t.Done(ExportWrapper::WriteZeroes(offset, length, may_trim));
}

Status MeteredExport::Flush() {
  const uint64_t mark = stats_->FlushBegins();
  Status s;
  {
    Timed t(stats_->command(Command::kFlush), 0);
    s = t.Done(ExportWrapper::Flush());
  }
  if (s.ok()) stats_->FlushSucceeded(mark);
  return s;
}

Status MeteredExport::Cache(uint64_t offset, uint64_t length) {
  Timed t(stats_->command(Command::kCache), length);
  return t.Done(ExportWrapper::Cache(offset, length));
}

Result<std::vector<nbd::Extent>> MeteredExport::BlockStatus(uint64_t offset, uint64_t length) {
  Timed t(stats_->command(Command::kBlockStatus), length);
  return t.Done(ExportWrapper::BlockStatus(offset, length));
}

Result<std::shared_ptr<nbd::Export>> MeteringProvider::Open(const std::string& name) {
  HBISS_ASSIGN_OR_RETURN(std::shared_ptr<nbd::Export> exp, target_->Open(name));
  std::shared_ptr<ExportStats> stats;
  {
    MutexLock l(&mu_);
    std::weak_ptr<ExportStats>& slot = live_[exp->name()];
    stats = slot.lock();
    if (!stats) {
      stats = std::make_shared<ExportStats>(exp->name());
      slot = stats;
    }
    // Forget dead entries, so the map holds only exports open now.
    for (auto it = live_.begin(); it != live_.end();) {
      it = it->second.expired() ? live_.erase(it) : std::next(it);
    }
  }
  return std::shared_ptr<nbd::Export>(std::make_shared<MeteredExport>(std::move(exp), stats));
}

std::vector<std::shared_ptr<const ExportStats>> MeteringProvider::Live() {
  std::vector<std::shared_ptr<const ExportStats>> out;
  MutexLock l(&mu_);
  for (auto it = live_.begin(); it != live_.end();) {
    if (auto s = it->second.lock()) {
      out.push_back(std::move(s));
      ++it;
    } else {
      it = live_.erase(it);
    }
  }
  return out;
}

}  // namespace hbiss::metrics
