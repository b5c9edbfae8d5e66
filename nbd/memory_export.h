// An in-memory Export and ExportProvider, for unit tests and the fuzz target.
// The export tracks allocation per 4 KiB block, so BlockStatus reports holes
// for never-written, trimmed and zeroed blocks like the real engine does, and
// it counts calls so tests can check what reached the backend. It also keeps
// dirty bitmaps like QEMU's: StartDirtyBitmap(NAME) marks every block a later
// Write, Trim or WriteZeroes touches, and qemu:dirty-bitmap:NAME serves them.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nbd/export.h"
#include "util/mutex.h"
#include "util/thread_annotations.h"

namespace hbiss::nbd {

class MemoryExport : public Export {
 public:
  static constexpr uint64_t kBlock = 4096;

  MemoryExport(std::string name, uint64_t size, bool read_only = false);

  const std::string& name() const override { return name_; }
  uint64_t size() const override { return size_; }
  bool read_only() const override { return read_only_; }

  Status Read(uint64_t offset, std::span<uint8_t> out) override;
  Status Write(uint64_t offset, std::span<const uint8_t> data) override;
  Status Trim(uint64_t offset, uint64_t length) override;
  Status WriteZeroes(uint64_t offset, uint64_t length, bool may_trim) override;
  Status Flush() override;
  Result<std::vector<Extent>> BlockStatus(uint64_t offset, uint64_t length) override;

  // Starts (or restarts, cleared) dirty bitmap `bitmap`: every block that a
  // later Write, Trim or WriteZeroes touches is dirty in it.
  void StartDirtyBitmap(const std::string& bitmap) EXCLUDES(mu_);
  // The bitmaps started so far, sorted.
  std::vector<std::string> DirtyBitmapNames() EXCLUDES(mu_);
  // The blocks dirtied since StartDirtyBitmap(bitmap), as of this call; the
  // map's runs are capped at `max_dirty_runs` (DirtyMap::Build coarsens).
  // NotFound for a bitmap never started.
  Result<std::shared_ptr<const DirtyMap>> DirtyBitmap(const std::string& bitmap) override
      EXCLUDES(mu_);
  std::atomic<size_t> max_dirty_runs{kMaxDirtyRuns};

  // Calls that reached the backend, for tests.
  std::atomic<uint64_t> reads{0}, writes{0}, trims{0}, zeroes{0}, flushes{0};
  std::atomic<uint64_t> no_hole_zeroes{0}, dirty_builds{0};

 private:
  // Marks the blocks [offset, offset+length) touches in every dirty bitmap.
  void MarkDirtyLocked(uint64_t offset, uint64_t length) REQUIRES(mu_);

  // Zeroes [offset, offset+length) and, when `unmap`, marks whole blocks in
  // it as holes.
  void ZeroLocked(uint64_t offset, uint64_t length, bool unmap) REQUIRES(mu_);

  const std::string name_;
  const uint64_t size_;
  const bool read_only_;
  Mutex mu_;
  std::vector<uint8_t> data_ GUARDED_BY(mu_);
  std::vector<bool> allocated_ GUARDED_BY(mu_);  // one per kBlock
  std::map<std::string, std::vector<bool>> dirty_ GUARDED_BY(mu_);  // one bit per kBlock
};

// Serves a fixed set of MemoryExports. Open() returns the same shared export
// each time (the provider keeps it alive).
class MemoryProvider : public ExportProvider {
 public:
  void Add(std::shared_ptr<MemoryExport> e);
  Result<std::vector<std::string>> List() override;
  Result<ExportInfo> Describe(const std::string& name) override;
  Result<std::shared_ptr<Export>> Open(const std::string& name) override;
  // The export's DirtyBitmapNames().
  Result<std::vector<std::string>> DirtyBitmaps(const std::string& name) override;

 private:
  Mutex mu_;
  std::map<std::string, std::shared_ptr<MemoryExport>> exports_ GUARDED_BY(mu_);
};

}  // namespace hbiss::nbd
