// Runs the store conformance suite (store_conformance.cc) over the memory and
// local backends, and over the fault-injecting wrapper (nothing armed) on
// top of each.
#include <stdlib.h>

#include <atomic>
#include <filesystem>

#include "store/fault_injection_store.h"
#include "store/local_store.h"
#include "store/memory_store.h"
#include "store/store_conformance.h"
#include "store/store_wrapper.h"

namespace hbiss::store::testing {
namespace {

// A LocalStore in a fresh temporary directory, removed on destruction.
class TempLocalStore final : public StoreWrapper {
 public:
  TempLocalStore(std::unique_ptr<Store> s, std::string dir)
      : StoreWrapper(std::move(s)), dir_(std::move(dir)) {}
  ~TempLocalStore() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

 private:
  std::string dir_;
};

Result<std::unique_ptr<Store>> MakeTempLocal() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "hbiss-conf-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) return Status::FromErrno("mkdtemp", errno);
  // A subdirectory that does not exist yet: also exercises create_if_missing.
  HBISS_ASSIGN_OR_RETURN(std::unique_ptr<Store> s, OpenStore(tmpl + "/store", true));
  // Wrapping the destruction-time cleanup must not take the tmp dir before
  // the inner store goes away: StoreWrapper destroys its target first.
  return std::unique_ptr<Store>(std::make_unique<TempLocalStore>(std::move(s), tmpl));
}

std::atomic<uint64_t> g_seed{1};

INSTANTIATE_TEST_SUITE_P(
    Backends, StoreConformanceTest,
    ::testing::Values(
        ConformanceParam{"memory",
                         []() -> Result<std::unique_ptr<Store>> {
                           return std::unique_ptr<Store>(std::make_unique<MemoryStore>());
                         }},
        ConformanceParam{"local", MakeTempLocal},
        ConformanceParam{"fault_over_memory",
                         []() -> Result<std::unique_ptr<Store>> {
                           return std::unique_ptr<Store>(std::make_unique<FaultInjectionStore>(
                               std::make_unique<MemoryStore>(), g_seed++));
                         }},
        ConformanceParam{"fault_over_local", []() -> Result<std::unique_ptr<Store>> {
                           HBISS_ASSIGN_OR_RETURN(std::unique_ptr<Store> local, MakeTempLocal());
                           return std::unique_ptr<Store>(std::make_unique<FaultInjectionStore>(
                               std::move(local), g_seed++));
                         }}),
    ConformanceParamName);

}  // namespace
}  // namespace hbiss::store::testing
