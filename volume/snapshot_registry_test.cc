#include "volume/snapshot_registry.h"

#include <gtest/gtest.h>

#include <string>

namespace hbiss::volume {
namespace {

TEST(SnapRegistryTest, RoundTripIsCompact) {
  SnapRegistry r;
  r.next_id = 3;
  r.snaps.push_back({1, "a", 1700000000, 5, 7});
  r.snaps.push_back({2, "b.c_d-e", -1, 9, 0});
  const std::string text = EncodeSnapRegistry(r);
  EXPECT_EQ(text.find('\n'), text.size() - 1) << "one line: " << text;
  EXPECT_EQ(text.find(": "), std::string::npos) << text;
  auto back = DecodeSnapRegistry(text, "test");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->next_id, 3u);
  ASSERT_EQ(back->snaps.size(), 2u);
  EXPECT_EQ(back->snaps[1].name, "b.c_d-e");
  EXPECT_EQ(back->snaps[1].created, -1);
  EXPECT_EQ(back->snaps[0].mapped_blocks, 7u);
}

// The registry is read whole with a limit of kMaxMetaBytes: at the snapshot
// cap, with the longest names and the largest numbers, it stays well under.
TEST(SnapRegistryTest, TheCapKeepsTheRegistryFarBelowTheReadLimit) {
  SnapRegistry r;
  r.next_id = ~uint64_t{0};
  for (size_t i = 0; i < kMaxSnapshots; i++) {
    std::string name = std::to_string(i);
    name = name + std::string(128 - name.size(), 'n');
    r.snaps.push_back({r.next_id - 1 - i, name, INT64_MIN, ~uint64_t{0}, ~uint64_t{0}});
  }
  const std::string text = EncodeSnapRegistry(r);
  EXPECT_LT(text.size(), 160u << 10);
  EXPECT_LT(text.size(), layout::kMaxMetaBytes / 4);
  auto back = DecodeSnapRegistry(text, "test");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->snaps.size(), kMaxSnapshots);
}

}  // namespace
}  // namespace hbiss::volume
