// A latency histogram with fixed bucket bounds, updated without a lock: the
// engine-side half of a Prometheus histogram (collector.h turns a Snapshot
// into one). Any thread may Observe and Take at once; Take's count is the
// sum of its buckets, so a snapshot is always a valid histogram (its sum may
// lag an observation in progress by that one observation).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace hbiss::metrics {

class LatencyHistogram {
 public:
  // Upper bounds in seconds, from 100 us (an NBD request served from memory)
  // to 10 s (an HDFS pipeline recovery under a flush); +Inf is implied.
  static constexpr std::array<double, 15> kBounds = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   10.0};
  static constexpr size_t kBuckets = kBounds.size() + 1;  // the last is +Inf

  struct Snapshot {
    std::array<uint64_t, kBuckets> buckets{};  // per bucket, not cumulative
    uint64_t count = 0;
    double sum_seconds = 0;
  };

  LatencyHistogram() = default;
  LatencyHistogram(const LatencyHistogram&) = delete;
  LatencyHistogram& operator=(const LatencyHistogram&) = delete;

  void Observe(std::chrono::nanoseconds d) {
    const double s = std::chrono::duration<double>(d).count();
    size_t i = 0;
    while (i < kBounds.size() && s > kBounds[i]) i++;
    buckets_[i].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(uint64_t(d.count() < 0 ? 0 : d.count()), std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
  }

  Snapshot Take() const {
    Snapshot s;
    for (size_t i = 0; i < kBuckets; i++) s.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
    s.count = 0;
    for (uint64_t b : s.buckets) s.count += b;  // consistent with the buckets
    s.sum_seconds = double(sum_ns_.load(std::memory_order_relaxed)) * 1e-9;
    return s;
  }

  uint64_t count() const { return count_.load(std::memory_order_relaxed); }

 private:
  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
  std::atomic<uint64_t> sum_ns_{0};
  std::atomic<uint64_t> count_{0};
};

}  // namespace hbiss::metrics
