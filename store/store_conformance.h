// The store conformance suite: one set of tests every Store backend must pass.
//
// The tests (TEST_P on StoreConformanceTest) live in store_conformance.cc,
// built as the CMake OBJECT library `hbiss_store_conformance`. A backend joins
// the suite by instantiating it with a factory that returns a fresh, empty
// store for each test:
//
//   // hdfs/hdfs_conformance_test.cc
//   #include "store/store_conformance.h"
//   namespace hbiss::store::testing {
//   INSTANTIATE_TEST_SUITE_P(
//       Hdfs, StoreConformanceTest,
//       ::testing::Values(ConformanceParam{
//           "hdfs", []() -> Result<std::unique_ptr<Store>> {
//             // e.g. OpenStore("hdfs://127.0.0.1:PORT/test/<unique dir>", true)
//           }}),
//       ConformanceParamName);
//   }  // namespace hbiss::store::testing
//
//   # hdfs/CMakeLists.txt
//   hbiss_test(hdfs_conformance_test hdfs_conformance_test.cc
//              LIBS hbiss_store_conformance hbiss_hdfs)
//
// Linking the OBJECT library pulls in every TEST_P; the INSTANTIATE line
// gives them a store. Each test calls `make` once in SetUp and destroys the
// store in TearDown; a factory that needs cleanup (a temporary directory)
// can return a StoreWrapper whose destructor does it. A factory returning an
// error fails the test (use GTEST_SKIP inside tests of your own if the
// backend is unavailable). The suite takes about a second per backend on a
// local disk and writes at most ~10 MiB per test.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <ostream>
#include <memory>
#include <string>

#include "store/store.h"

namespace hbiss::store::testing {

struct ConformanceParam {
  std::string name;  // [A-Za-z0-9_]+, used in test names
  std::function<Result<std::unique_ptr<Store>>()> make;
};

// Lets gtest print a parameter by name.
inline void PrintTo(const ConformanceParam& p, std::ostream* os) { *os << p.name; }

// For INSTANTIATE_TEST_SUITE_P's name generator argument.
std::string ConformanceParamName(const ::testing::TestParamInfo<ConformanceParam>& info);

class StoreConformanceTest : public ::testing::TestWithParam<ConformanceParam> {
 protected:
  void SetUp() override;
  void TearDown() override;

  // The store under test; valid between SetUp and TearDown.
  Store& store() { return *store_; }

 private:
  std::unique_ptr<Store> store_;
};

}  // namespace hbiss::store::testing
