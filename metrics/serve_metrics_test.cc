#include "metrics/serve_metrics.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <prometheus/text_serializer.h>

#include "nbd/memory_export.h"

namespace hbiss::metrics {
namespace {

std::string Scrape(const ServeCollector& c) {
  prometheus::TextSerializer ser;
  return ser.Serialize(c.Collect());
}

TEST(ServeCollector, PerVolumeSeriesExistOnlyWhileTheVolumeIsOpen) {
  nbd::MemoryProvider mem;
  mem.Add(std::make_shared<nbd::MemoryExport>("vol1", 1 << 20));
  MeteringProvider p(&mem);
  ServeSources src;
  src.exports = &p;
  src.start_time = 1234;
  ServeCollector c(src);
  {
    auto e = p.Open("vol1");
    ASSERT_TRUE(e.ok());
    std::vector<uint8_t> buf(4096, 1);
    ASSERT_TRUE((*e)->Write(0, buf).ok());
    const std::string text = Scrape(c);
    EXPECT_NE(text.find("hbiss_nbd_requests_total{volume=\"vol1\",command=\"write\"} 1"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("hbiss_nbd_request_bytes_total{volume=\"vol1\",command=\"write\"} 4096"),
              std::string::npos);
    EXPECT_NE(text.find("hbiss_nbd_request_duration_seconds_bucket{volume=\"vol1\",command="
                        "\"write\",le=\"+Inf\"} 1"),
              std::string::npos);
    // No series for commands the volume never received.
    EXPECT_EQ(text.find("command=\"trim\""), std::string::npos);
    EXPECT_NE(text.find("hbiss_memory_used_bytes{pool=\"write_buffers\"}"), std::string::npos);
    EXPECT_NE(text.find("hbiss_start_time_seconds 1234"), std::string::npos);
  }
  const std::string after = Scrape(c);
  EXPECT_EQ(after.find("vol1"), std::string::npos) << after;
}

TEST(StatusJson, IsOneJsonObjectWithinItsBound) {
  nbd::MemoryProvider mem;
  MeteringProvider p(&mem);
  ServeSources src;
  src.exports = &p;
  src.store_uri = "mem://x";
  const std::string s = StatusJson(src, "127.0.0.1:9", 60 << 10);
  auto j = nlohmann::json::parse(s);
  EXPECT_EQ(j["store"], "mem://x");
  EXPECT_EQ(j["metrics"], "127.0.0.1:9");
  EXPECT_TRUE(j["volumes"].is_array());
  EXPECT_TRUE(j["connections"].is_array());
  EXPECT_GT(j["memory"]["limit_bytes"].get<uint64_t>(), 0u);
}

}  // namespace
}  // namespace hbiss::metrics
