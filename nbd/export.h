// The backend the NBD server talks to: an Export is one block device, and an
// ExportProvider names and opens them. The protocol layer (connection.h) only
// sees these interfaces, so it is unit-tested against MemoryExport
// (memory_export.h) and served for real through VolumeExport
// (volume_export.h).
//
// Contract shared by every implementation:
//  * The server validates every request before calling an Export: ranges are
//    inside [0, size()), lengths are nonzero and at most kMaxPayload for Read
//    and Write, and no mutating call reaches a read-only export.
//  * Write/Trim/WriteZeroes return once the change is visible to Read on
//    every connection; they are durable only after a later Flush() returns OK.
//    Flush() makes every write that returned before it was called durable, on
//    every connection sharing the Export (this is what CAN_MULTI_CONN
//    promises).
//  * All methods may be called from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "nbd/dirty_map.h"
#include "util/status.h"

namespace hbiss::nbd {

// One allocation extent, as BlockStatus reports it.
struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool hole = false;  // not allocated in the backend
  bool zero = false;  // reads as zeros
};

class Export {
 public:
  Export() = default;
  Export(const Export&) = delete;
  Export& operator=(const Export&) = delete;
  virtual ~Export() = default;

  virtual const std::string& name() const = 0;
  virtual uint64_t size() const = 0;
  virtual bool read_only() const = 0;
  // True when WriteZeroes is faster than writing zeros (FAST_ZERO succeeds).
  virtual bool can_fast_zero() const { return true; }

  virtual Status Read(uint64_t offset, std::span<uint8_t> out) = 0;
  virtual Status Write(uint64_t offset, std::span<const uint8_t> data) = 0;
  virtual Status Trim(uint64_t offset, uint64_t length) = 0;
  // Makes the range read as zeros. `may_trim` is false when the client set
  // NO_HOLE; an implementation documents what it then does differently.
  virtual Status WriteZeroes(uint64_t offset, uint64_t length, bool may_trim) = 0;
  virtual Status Flush() = 0;
  // A hint that the range will be read soon. The default does nothing.
  virtual Status Cache(uint64_t offset, uint64_t length) { return Status::OK(); }
  // Extents covering [offset, offset+length) in order, starting at offset.
  // May stop short of the end (at least one extent), never goes past it.
  virtual Result<std::vector<Extent>> BlockStatus(uint64_t offset, uint64_t length) = 0;
  // The dirty bitmap `bitmap` (one of the names ExportProvider::DirtyBitmaps
  // gave for this export; served as meta context qemu:dirty-bitmap:BITMAP):
  // the ranges that differ from that earlier state, as of this call: it
  // covers every write acknowledged on any connection before the call, and
  // none that began after it returned. Called once per connection that
  // selected it, when it enters the transmission phase; may take long (it
  // may read the store). The map is immutable and may be shared; it covers
  // size() bytes and has at most kMaxDirtyRuns runs (DirtyMap::Build's
  // default bound). NotFound for a name this export does not offer (the
  // default: none).
  virtual Result<std::shared_ptr<const DirtyMap>> DirtyBitmap(const std::string& bitmap) {
    return Status::NotFound("export " + name() + " has no dirty bitmap '" + bitmap + "'");
  }
};

// Forwards every call to another Export; a decorator (fault injection,
// metrics) overrides only what it changes. Does not own the target.
class ExportWrapper : public Export {
 public:
  explicit ExportWrapper(Export* target) : target_(target) {}
  const std::string& name() const override { return target_->name(); }
  uint64_t size() const override { return target_->size(); }
  bool read_only() const override { return target_->read_only(); }
  bool can_fast_zero() const override { return target_->can_fast_zero(); }
  Status Read(uint64_t o, std::span<uint8_t> out) override { return target_->Read(o, out); }
  Status Write(uint64_t o, std::span<const uint8_t> d) override { return target_->Write(o, d); }
  Status Trim(uint64_t o, uint64_t n) override { return target_->Trim(o, n); }
  Status WriteZeroes(uint64_t o, uint64_t n, bool may_trim) override {
    return target_->WriteZeroes(o, n, may_trim);
  }
  Status Flush() override { return target_->Flush(); }
  Status Cache(uint64_t o, uint64_t n) override { return target_->Cache(o, n); }
  Result<std::vector<Extent>> BlockStatus(uint64_t o, uint64_t n) override {
    return target_->BlockStatus(o, n);
  }
  Result<std::shared_ptr<const DirtyMap>> DirtyBitmap(const std::string& bitmap) override {
    return target_->DirtyBitmap(bitmap);
  }

 protected:
  Export* target() const { return target_; }

 private:
  Export* target_;
};

// What the handshake reports about an export without opening it.
struct ExportInfo {
  std::string name;
  uint64_t size = 0;
  bool read_only = false;
  std::string description;
};

// Names and opens exports. Thread-safe.
class ExportProvider {
 public:
  ExportProvider() = default;
  ExportProvider(const ExportProvider&) = delete;
  ExportProvider& operator=(const ExportProvider&) = delete;
  virtual ~ExportProvider() = default;

  // Names of all exports, sorted.
  virtual Result<std::vector<std::string>> List() = 0;

  // Resolves a client-supplied name (the empty name means the default
  // export, if the provider has one) and describes it. NotFound if there is
  // no such export.
  virtual Result<ExportInfo> Describe(const std::string& name) = 0;

  // Opens the export that Describe(name) named. Every connection to one
  // export shares one open backend; it is closed when the last returned
  // pointer is dropped. NotFound if absent; other errors from the backend.
  virtual Result<std::shared_ptr<Export>> Open(const std::string& name) = 0;

  // The dirty bitmaps export `name` (canonical, as Describe returned it)
  // offers, each a meta context qemu:dirty-bitmap:NAME whose map
  // Export::DirtyBitmap builds once the export is open. Cheap enough to
  // call for every LIST/SET_META_CONTEXT (it must not build any map).
  // Errors from the backend; the default offers none.
  virtual Result<std::vector<std::string>> DirtyBitmaps(const std::string& name) {
    (void)name;
    return std::vector<std::string>{};
  }
};

}  // namespace hbiss::nbd
