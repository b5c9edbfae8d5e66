// FaultInjectionStore: a StoreWrapper that simulates crashes and I/O errors,
// for tests only.
//
// It remembers, for every object created through it (until that object is
// deleted, Put over, or a crash has been simulated), three lengths:
//   appended >= flushed >= synced
// updated as its SegmentWriter's Append, Flush and Sync/Close succeed.
// Objects it did not create (or that were written by Put) count as fully
// synced. RenameDir moves what it knows with the objects (a writer opened
// before goes on under the new name).
//
// Crashes. CrashAfter(n) arms a crash: the n mutating operations after the
// call succeed (as far as injection goes), and the (n+1)-th mutating
// operation is the crash point. Mutating operations are Create, Append,
// Flush, Sync, Close (of a writer), Put, Delete, DeleteDir and RenameDir. At the crash
// point the store goes "down": that operation and every later call through
// this store, its writers, readers and locks fail with
// IOError("injected crash: ..."), reads included. The crashing operation
// itself may have partly happened, chosen by the seed, as a real crash would:
//   Append    a random prefix of the data (0..all) reached the target;
//   Create    the empty object may or may not exist;
//   Put       the target holds the old or the new version (never a mix);
//   Delete    the object may or may not be gone;
//   DeleteDir the directory may or may not be gone (as a whole);
//   RenameDir the directory may be under either name (as a whole);
//   Flush, Sync, Close  have no effect (nothing becomes more durable).
// SimulateCrash() then plays the restart: for each tracked object it keeps a
// seeded random length in [synced, appended] (kPowerLoss) or
// [flushed, appended] (kProcessCrash) and drops the rest (each with
// probability 1/3: exactly the lower bound, everything, or a uniform random
// byte length in between), forgets writers,
// readers and locks taken before (their later calls fail; locks are
// released, and their Lock::Check fails from then on; before, Check is the
// target's), and brings the store back up, as a restarted process would see
// it. SimulateCrash may be called without an armed crash too ("crash now").
// It shortens an object on the target by reading the prefix to keep, then
// Delete, Create, Append, Close (so any backend works).
//
// Error injection (the store stays up): FailNext(op, n) fails the next n
// calls of one operation type; SetFailureRate(mask, p) fails each call of
// the types in `mask` with probability p. An injected failure is
// IOError("injected error: ..."). A failed Append may have appended a random
// prefix; a writer that failed any call is broken (every later call fails), as
// the SegmentWriter contract says. A failed Put leaves the old or (chosen by
// the seed) the new version.
//
// Determinism: every random choice comes from one std::mt19937_64 seeded at
// construction, drawn only when a failure, crash or SimulateCrash happens
// (or a failure rate is set). With one thread the same seed and the same call
// sequence give the same result; with several threads the order of draws
// follows the order of calls.
//
// Thread safety: all methods may be called from any thread. Writers, readers
// and locks it hands out share its state, so they may outlive this object
// (calls on them then keep working against the target, which must still be
// alive). The target must outlive the wrapper and everything it handed out;
// it is owned when passed as unique_ptr.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "store/store_wrapper.h"

namespace hbiss::store {

class FaultInjectionStore : public StoreWrapper {
 public:
  // Operation types, for error injection and counters.
  enum class Op : uint8_t {
    kCreate = 0,
    kAppend,
    kFlush,
    kSync,
    kClose,
    kPut,
    kDelete,
    kDeleteDir,
    kRenameDir,
    kOpen,  // Store::Open and OpenForTakeover (also the open inside Get)
    kRead,  // SegmentReader::ReadAt (also inside Get)
    kList,
    kStat,
    kLock,  // TryLock
  };
  static constexpr int kNumOps = 14;
  static constexpr uint32_t Bit(Op op) { return 1u << static_cast<unsigned>(op); }
  // Create .. RenameDir, the first nine Op values.
  static constexpr uint32_t kMutatingOps =
      (1u << (static_cast<unsigned>(Op::kRenameDir) + 1)) - 1;
  static constexpr uint32_t kAllOps = (1u << kNumOps) - 1;
  static const char* OpName(Op op);

  enum class CrashKind {
    kPowerLoss,     // keep a random length in [synced, appended]
    kProcessCrash,  // keep a random length in [flushed, appended]
  };

  struct Counters {
    uint64_t ops = 0;              // every call seen, failed or not
    uint64_t mutating_ops = 0;     // calls of kMutatingOps types
    uint64_t injected_errors = 0;  // failures from FailNext / SetFailureRate
    uint64_t crashes = 0;          // times the store went down (armed crash point reached)
    uint64_t simulated_crashes = 0;  // SimulateCrash calls
    uint64_t objects_truncated = 0;  // objects cut short by SimulateCrash
    uint64_t bytes_dropped = 0;      // bytes cut off by SimulateCrash
  };

  // What the wrapper knows about an object written through it.
  struct ObjectState {
    uint64_t appended = 0;
    uint64_t flushed = 0;
    uint64_t synced = 0;
  };

  // Wraps `target` (owned / borrowed). Nothing is armed at first: the wrapper
  // forwards everything and only counts.
  FaultInjectionStore(std::unique_ptr<Store> target, uint64_t seed);
  FaultInjectionStore(Store* target, uint64_t seed);
  ~FaultInjectionStore() override;

  // --- Crashes ---

  // Arms a crash at the (n+1)-th mutating operation from now (n = 0: the very
  // next one). Replaces any crash armed before. If the store is down already,
  // it stays down until SimulateCrash.
  void CrashAfter(uint64_t n);
  // Arms a crash after a seeded random n in [0, max_ops) and returns that n.
  // REQUIRES: max_ops > 0.
  uint64_t CrashAtRandom(uint64_t max_ops);
  // Cancels an armed crash that has not happened.
  void Disarm();
  // True while the store is down (from the crash point until SimulateCrash).
  bool crashed() const;

  // Drops unsynced (kPowerLoss) or unflushed (kProcessCrash) data at seeded
  // random points, forgets earlier writers/readers/locks, disarms any pending
  // crash and brings the store up. Afterwards every object holds at least its
  // synced (resp. flushed) prefix and at most what was appended. Returns an
  // error only if rewriting an object on the target failed; the store is up
  // in any case. Injected-error settings are kept. Call it while no other
  // thread uses the store.
  Status SimulateCrash(CrashKind kind = CrashKind::kPowerLoss);

  // --- Error injection (the store stays up) ---

  // Fails the next `count` calls of `op` (adds to any pending count).
  void FailNext(Op op, uint64_t count = 1);
  // Fails each call whose type is in `op_mask` (a set of Bit(op)) with
  // probability p in [0, 1]. p = 0 turns it off.
  void SetFailureRate(uint32_t op_mask, double p);
  // Clears FailNext counts and the failure rate.
  void ClearFailures();

  // --- Observation ---
  Counters counters() const;
  // The lengths known for `name`, or nullopt if it is not tracked (never
  // created through this wrapper, deleted, replaced by Put, or a crash has
  // been simulated since).
  std::optional<ObjectState> Tracked(const std::string& name) const;

  // --- Store ---
  Result<std::unique_ptr<SegmentWriter>> Create(const std::string& name) override;
  Result<std::unique_ptr<SegmentReader>> Open(const std::string& name) override;
  // Decided as an Open (Op::kOpen); the target's OpenForTakeover when it goes.
  Result<std::unique_ptr<SegmentReader>> OpenForTakeover(const std::string& name) override;
  Status Put(const std::string& name, std::span<const uint8_t> data) override;
  // Store's default: Open + ReadAt through this wrapper (faults apply).
  Result<std::string> Get(const std::string& name, uint64_t max_size = 64ull << 20) override;
  Result<std::vector<ObjectInfo>> List(const std::string& dir) override;
  Result<uint64_t> Stat(const std::string& name) override;
  Status Delete(const std::string& name) override;
  Status DeleteDir(const std::string& dir) override;
  Status RenameDir(const std::string& from, const std::string& to) override;
  Result<std::unique_ptr<Lock>> TryLock(const std::string& name) override;

  struct Core;  // shared with writers, readers and locks; in the .cc file

 private:
  // Open and OpenForTakeover: one fault decision, then the target's call.
  Result<std::unique_ptr<SegmentReader>> OpenThrough(const std::string& name, bool takeover);

  std::shared_ptr<Core> core_;
};

}  // namespace hbiss::store
