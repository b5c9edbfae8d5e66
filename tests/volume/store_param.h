// A fixture run once per real store: GetParam() false gives the memory
// store, true a local store in a fresh directory of its own (removed after
// the test). Derived fixtures call StoreParamTest::SetUp() first.
#pragma once

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "store/local_store.h"
#include "store/memory_store.h"
#include "volume/volume.h"

namespace hbiss::volume {

class StoreParamTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (!GetParam()) {
      store_ = &mem_;
      return;
    }
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string test = std::string(info->test_suite_name()) + "_" + info->name();
    for (char& c : test) c = c == '/' ? '_' : c;
    dir_ = ::testing::TempDir() + "/hbiss_" + std::to_string(getpid()) + "_" + test;
    std::filesystem::remove_all(dir_);
    auto s = store::OpenLocalStore(dir_, true);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    local_ = std::move(*s);
    store_ = local_.get();
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // Creates volume `name` in store_; a failure is fatal to the test.
  void CreateVolume(const std::string& name, uint64_t size, uint64_t segment_size) {
    CreateOptions co;
    co.size = size;
    co.segment_size = segment_size;
    Status s = Volume::Create(store_, name, co);
    ASSERT_TRUE(s.ok()) << name << ": " << s.ToString();
  }

  store::MemoryStore mem_;
  std::unique_ptr<store::Store> local_;
  store::Store* store_ = nullptr;
  std::string dir_;
};

// Names the instances "Memory" and "Local".
inline std::string StoreParamName(const ::testing::TestParamInfo<bool>& info) {
  return info.param ? "Local" : "Memory";
}

}  // namespace hbiss::volume
