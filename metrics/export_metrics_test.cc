#include "metrics/export_metrics.h"

#include <gtest/gtest.h>

#include <vector>

#include "nbd/memory_export.h"

namespace hbiss::metrics {
namespace {

TEST(MeteringProvider, CountsEveryCommandPerExportAndSharesStatsBetweenConnections) {
  nbd::MemoryProvider mem;
  mem.Add(std::make_shared<nbd::MemoryExport>("a", 1 << 20));
  MeteringProvider p(&mem);
  auto c1 = p.Open("a");
  auto c2 = p.Open("a");
  ASSERT_TRUE(c1.ok() && c2.ok());
  std::vector<uint8_t> buf(4096, 7);
  ASSERT_TRUE((*c1)->Write(0, buf).ok());
  ASSERT_TRUE((*c2)->Write(4096, buf).ok());
  ASSERT_TRUE((*c2)->Read(0, buf).ok());
  ASSERT_TRUE((*c1)->Trim(0, 8192).ok());
  auto live = p.Live();
  ASSERT_EQ(live.size(), 1u);
  const ExportStats& s = *live[0];
  EXPECT_EQ(s.name(), "a");
  EXPECT_EQ(s.command(Command::kWrite).requests.load(), 2u);
  EXPECT_EQ(s.command(Command::kWrite).bytes.load(), 8192u);
  EXPECT_EQ(s.command(Command::kRead).bytes.load(), 4096u);
  EXPECT_EQ(s.command(Command::kTrim).bytes.load(), 8192u);
  EXPECT_EQ(s.command(Command::kWrite).latency.Take().count, 2u);
  EXPECT_EQ(s.unflushed_bytes(), 8192u);
  ASSERT_TRUE((*c2)->Flush().ok());
  EXPECT_EQ(s.unflushed_bytes(), 0u);
  EXPECT_GT(s.last_flush_ms(), 0);
  EXPECT_EQ(s.command(Command::kFlush).requests.load(), 1u);
}

TEST(MeteringProvider, FailedCallsCountAsErrorsWithoutBytes) {
  nbd::MemoryProvider mem;
  mem.Add(std::make_shared<nbd::MemoryExport>("a", 4096));
  MeteringProvider p(&mem);
  auto e = p.Open("a");
  ASSERT_TRUE(e.ok());
  std::vector<uint8_t> buf(8192);
  EXPECT_FALSE((*e)->Read(0, buf).ok());  // past the end
  const auto& s = p.Live()[0]->command(Command::kRead);
  EXPECT_EQ(s.requests.load(), 1u);
  EXPECT_EQ(s.errors.load(), 1u);
  EXPECT_EQ(s.bytes.load(), 0u);
}

// Hundreds of volumes opened and closed must not grow what the provider
// keeps: the stats of a closed export are gone.
TEST(MeteringProvider, ForgetsTheStatsOfExportsNoLongerOpen) {
  nbd::MemoryProvider mem;
  for (int i = 0; i < 300; i++) {
    mem.Add(std::make_shared<nbd::MemoryExport>("v" + std::to_string(i), 4096));
  }
  MeteringProvider p(&mem);
  for (int i = 0; i < 300; i++) {
    auto e = p.Open("v" + std::to_string(i));
    ASSERT_TRUE(e.ok());
    std::vector<uint8_t> buf(512);
    ASSERT_TRUE((*e)->Write(0, buf).ok());
  }
  EXPECT_TRUE(p.Live().empty());
  auto keep = p.Open("v7");
  ASSERT_TRUE(keep.ok());
  auto live = p.Live();
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0]->command(Command::kWrite).requests.load(), 0u);  // a fresh start
}

TEST(LatencyHistogram, BucketsByUpperBoundInclusive) {
  LatencyHistogram h;
  h.Observe(std::chrono::microseconds(100));  // exactly the first bound
  h.Observe(std::chrono::microseconds(101));
  h.Observe(std::chrono::seconds(60));  // +Inf
  auto s = h.Take();
  EXPECT_EQ(s.count, 3u);
  EXPECT_EQ(s.buckets[0], 1u);
  EXPECT_EQ(s.buckets[1], 1u);
  EXPECT_EQ(s.buckets[LatencyHistogram::kBuckets - 1], 1u);
  EXPECT_NEAR(s.sum_seconds, 60.000201, 1e-6);
}

}  // namespace
}  // namespace hbiss::metrics
