// MemoryStore: a Store kept entirely in process memory.
//
// Used by tests and by `mem://NAME` URIs. Every byte appended is visible to
// readers opened afterwards at once, so Flush and Sync only check the writer
// is healthy; nothing survives the process. Use FaultInjectionStore on top of
// it to model what a crash would drop.
//
// Directories are tracked explicitly, like a file system: creating "a/b/c"
// makes "a" and "a/b", and they stay after their last object is deleted, until
// DeleteDir removes them. A name is either an object or a directory, never
// both (creating an object under an object, or over a directory, fails).
//
// Thread safety: as for every Store (see store/store.h). Readers keep the
// bytes they opened alive: a reader of an object that is later replaced by
// Put or deleted keeps reading the version it opened.
#pragma once

#include <memory>
#include <string>

#include "store/store.h"

namespace hbiss::store {

class MemoryStore final : public Store {
 public:
  // A private, empty store, not reachable through OpenStore. Its Uri() is
  // "mem:private" and names nothing.
  MemoryStore();

  // The process-wide store registered as `name` (made empty on first use);
  // every MemoryStore with the same name shares its contents, which live until
  // Drop(name) or process exit. Uri() is "mem://<name>". `name` must be
  // non-empty (use OpenStore to get a clear error for bad names).
  explicit MemoryStore(const std::string& name);

  ~MemoryStore() override;

  // Forgets the shared store `name`: later MemoryStore(name) start empty.
  // Stores already holding it keep their (now private) contents.
  static void Drop(const std::string& name);

  Result<std::unique_ptr<SegmentWriter>> Create(const std::string& name) override;
  Result<std::unique_ptr<SegmentReader>> Open(const std::string& name) override;
  Status Put(const std::string& name, std::span<const uint8_t> data) override;
  Result<std::vector<ObjectInfo>> List(const std::string& dir) override;
  Result<uint64_t> Stat(const std::string& name) override;
  Status Delete(const std::string& name) override;
  Status DeleteDir(const std::string& dir) override;
  Status RenameDir(const std::string& from, const std::string& to) override;
  Result<std::unique_ptr<Lock>> TryLock(const std::string& name) override;
  std::string Uri() const override;
  bool CachesReadsLocally() const override { return true; }

  struct State;  // shared contents; defined in memory_store.cc

 private:
  std::shared_ptr<State> state_;
  std::string uri_;
};

}  // namespace hbiss::store
