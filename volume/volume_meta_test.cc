#include "volume/volume_meta.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "volume/log_format.h"
#include "volume/volume.h"

namespace hbiss::volume {
namespace {

VolumeMeta Sample() {
  VolumeMeta m;
  m.id = 0xfeedface12345678;
  m.size = 1ull << 30;
  m.segment_size = 64ull << 20;
  m.created = 1700000000;
  return m;
}

TEST(VolumeMetaTest, RoundTrip) {
  for (VolumeMeta m : {Sample(), VolumeMeta{1, kBlockSize, kMinSegmentSlots * kSlotSize, 0, kMetaVersion, {}},
                       VolumeMeta{~uint64_t{0}, kMaxVolumeSize,
                                  uint64_t(kMaxSegmentSlots) * kSlotSize, -5, kCloneMetaVersion,
                                  {ParentRef{"p", 3, "s"}, ParentRef{"gp", 1, ""}}}}) {
    auto d = DecodeMeta(EncodeMeta(m), "v");
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_EQ(d->id, m.id);
    EXPECT_EQ(d->size, m.size);
    EXPECT_EQ(d->segment_size, m.segment_size);
    EXPECT_EQ(d->created, m.created);
    EXPECT_EQ(d->parents, m.parents);
  }
  // "created" is optional.
  nlohmann::json j = nlohmann::json::parse(EncodeMeta(Sample()));
  j.erase("created");
  auto d = DecodeMeta(j.dump(), "v");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->created, 0);
}

// Every field that is missing, of the wrong type or out of range is
// Corruption naming the volume; nothing malformed decodes.
TEST(VolumeMetaTest, EveryMalformedFieldIsRejected) {
  const std::string good = EncodeMeta(Sample());
  struct Case {
    const char* what;
    std::function<void(nlohmann::json&)> edit;
  };
  const std::vector<Case> cases = {
      {"no format", [](auto& j) { j.erase("format"); }},
      {"wrong format", [](auto& j) { j["format"] = "hbiss-volumes"; }},
      {"no version", [](auto& j) { j.erase("version"); }},
      {"string version", [](auto& j) { j["version"] = "1"; }},
      {"negative version", [](auto& j) { j["version"] = -1; }},
      {"no id", [](auto& j) { j.erase("id"); }},
      {"numeric id", [](auto& j) { j["id"] = 5; }},
      {"short id", [](auto& j) { j["id"] = "feedface"; }},
      {"non-hex id", [](auto& j) { j["id"] = "feedface1234567g"; }},
      {"zero id", [](auto& j) { j["id"] = "0000000000000000"; }},
      {"no size", [](auto& j) { j.erase("size"); }},
      {"string size", [](auto& j) { j["size"] = "1073741824"; }},
      {"negative size", [](auto& j) { j["size"] = -4096; }},
      {"zero size", [](auto& j) { j["size"] = 0; }},
      {"unaligned size", [](auto& j) { j["size"] = 4097; }},
      {"huge size", [](auto& j) { j["size"] = kMaxVolumeSize + kBlockSize; }},
      {"no block size", [](auto& j) { j.erase("block_size"); }},
      {"other block size", [](auto& j) { j["block_size"] = 512; }},
      {"no segment size", [](auto& j) { j.erase("segment_size"); }},
      {"float segment size", [](auto& j) { j["segment_size"] = 65536.5; }},
      {"unaligned segment size", [](auto& j) { j["segment_size"] = 64 * 1024 + 1; }},
      {"small segment size",
       [](auto& j) { j["segment_size"] = (kMinSegmentSlots - 1) * kSlotSize; }},
      {"big segment size",
       [](auto& j) { j["segment_size"] = uint64_t(kMaxSegmentSlots + 1) * kSlotSize; }},
  };
  for (const Case& c : cases) {
    nlohmann::json j = nlohmann::json::parse(good);
    c.edit(j);
    auto d = DecodeMeta(j.dump(), "vol7");
    ASSERT_FALSE(d.ok()) << c.what;
    EXPECT_TRUE(d.status().IsCorruption()) << c.what << ": " << d.status().ToString();
    EXPECT_NE(d.status().message().find("vol7"), std::string::npos) << c.what;
  }
  for (const char* text : {"", "{", "[]", "42", "\"meta\"", "null", "{\"format\":1}"}) {
    auto d = DecodeMeta(text, "v");
    EXPECT_TRUE(d.status().IsCorruption()) << text << ": " << d.status().ToString();
  }
  // A cut-off meta does not parse.
  EXPECT_TRUE(DecodeMeta(good.substr(0, good.size() / 2), "v").status().IsCorruption());
}

// Version 2 is written; version 1 (the log directly in volumes/NAME) still
// decodes, and says so; version 0 is not a version.
TEST(VolumeMetaTest, VersionsOneAndTwoDecode) {
  EXPECT_EQ(nlohmann::json::parse(EncodeMeta(Sample()))["version"], 2);
  EXPECT_EQ(DecodeMeta(EncodeMeta(Sample()), "v")->version, 2u);
  VolumeMeta old = Sample();
  old.version = 1;
  auto d = DecodeMeta(EncodeMeta(old), "v");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->version, 1u);
  old.version = 0;
  EXPECT_TRUE(DecodeMeta(EncodeMeta(old), "v").status().IsCorruption());
}

TEST(VolumeMetaTest, NewerVersionIsNotSupported) {
  nlohmann::json j = nlohmann::json::parse(EncodeMeta(Sample()));
  j["version"] = kCloneMetaVersion + 1;
  auto d = DecodeMeta(j.dump(), "v");
  EXPECT_TRUE(d.status().IsNotSupported()) << d.status().ToString();
  // Even when the rest is something this build cannot read.
  j["block_size"] = 512;
  EXPECT_TRUE(DecodeMeta(j.dump(), "v").status().IsNotSupported());
}

}  // namespace
}  // namespace hbiss::volume
