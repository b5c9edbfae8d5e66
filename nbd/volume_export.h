// Serves the volumes of a Store as NBD exports: the bridge between the
// protocol layer (export.h) and the volume engine (volume/volume.h).
//
// Every volume is an export named after the volume, and every snapshot a
// read-only export named VOL@SNAP (NBD_FLAG_READ_ONLY; writes get EPERM):
// it is opened with Volume::Open("VOL@SNAP", read-only) directly, never
// through the Opener (a snapshot never changes: no ownership to share).
// Volumes are opened
// lazily on the first NBD_OPT_GO / EXPORT_NAME for them, shared by every
// connection to that export (so a FLUSH on one connection covers writes
// acknowledged on all of them, as CAN_MULTI_CONN promises), and closed
// (flush + checkpoint) when the last connection goes, or by CloseAll().
//
// Dirty bitmaps (doc/snapshots.md "Differences over NBD"): the export of VOL
// offers qemu:dirty-bitmap:SNAP for every snapshot SNAP of VOL, and the
// export of VOL@B for every snapshot of VOL created before B; a clone's
// exports also offer qemu:dirty-bitmap:PARENT@SNAP, the snapshot it was made
// from. Its map is volume::Diff(VOL@SNAP, the export): the blocks whose
// location differs, written, trimmed or zeroed since SNAP (and those the
// cleaner moved: the map may say too much, never too little).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "nbd/export.h"
#include "store/store.h"
#include "util/mutex.h"
#include "util/thread_annotations.h"
#include "volume/volume.h"

namespace hbiss::nbd {

// A server-wide bound on the dirty-bitmap maps being built at once (each
// build loads two whole extent maps: doc/snapshots.md "Differences over
// NBD"). A build takes a slot; when none is free it waits up to max_wait,
// then fails with Busy (retryable), whose message says so. Thread-safe.
class DirtyMapBuilds {
 public:
  static constexpr int kDefaultSlots = 2;
  static constexpr std::chrono::milliseconds kDefaultMaxWait{30000};

  explicit DirtyMapBuilds(int slots = kDefaultSlots,
                          std::chrono::milliseconds max_wait = kDefaultMaxWait)
      : slots_(slots), free_(slots), max_wait_(max_wait) {}
  DirtyMapBuilds(const DirtyMapBuilds&) = delete;
  DirtyMapBuilds& operator=(const DirtyMapBuilds&) = delete;

  // Takes a slot (OK), or Busy after max_wait; `what` names the build in
  // the message. Every OK must be followed by one Release().
  Status Acquire(const std::string& what) EXCLUDES(mu_);
  void Release() EXCLUDES(mu_);
  void set_max_wait(std::chrono::milliseconds w) EXCLUDES(mu_);
  int in_use() EXCLUDES(mu_);

 private:
  const int slots_;
  Mutex mu_;
  CondVar cv_;
  int free_ GUARDED_BY(mu_);
  std::chrono::milliseconds max_wait_ GUARDED_BY(mu_);
};

// One open volume as an Export. Does not own the Volume.
//
// NO_HOLE: the engine is log-structured, so writing zeros would allocate
// fresh log space exactly like unmapping does, and would guarantee nothing
// about later writes (every overwrite appends anew). WriteZeroes therefore
// always unmaps, with or without NO_HOLE, and FAST_ZERO always succeeds: it
// is a metadata-only operation.
class VolumeExport : public Export {
 public:
  // `name` is the export's name (default: the volume's; "VOL@SNAP" for a
  // snapshot). `store` is the store `v` lives in, for dirty bitmaps (none
  // when null); it must outlive the export. `builds` bounds the dirty-bitmap
  // maps built at once (no bound when null); it must outlive the export.
  VolumeExport(volume::Volume* v, bool read_only, std::string name = "",
               store::Store* store = nullptr, DirtyMapBuilds* builds = nullptr)
      : v_(v), name_(name.empty() ? v->name() : std::move(name)),
        read_only_(read_only || v->read_only()), store_(store), builds_(builds) {}

  const std::string& name() const override { return name_; }
  uint64_t size() const override { return v_->size(); }
  bool read_only() const override { return read_only_; }

  // A snapshot export whose snapshot was removed meanwhile (its blocks may
  // be cleaned away) fails with NotFound saying "snapshot VOL@SNAP was
  // removed"; other errors are the engine's.
  Status Read(uint64_t offset, std::span<uint8_t> out) override;
  Status Write(uint64_t offset, std::span<const uint8_t> data) override;
  Status Trim(uint64_t offset, uint64_t length) override;
  Status WriteZeroes(uint64_t offset, uint64_t length, bool may_trim) override;
  Status Flush() override;
  // Reads up to the first 32 MiB of the range, so the engine caches it.
  Status Cache(uint64_t offset, uint64_t length) override;
  Result<std::vector<Extent>> BlockStatus(uint64_t offset, uint64_t length) override;

  // The map of qemu:dirty-bitmap:SNAP (see the file comment). Of the head
  // (export VOL): the volume is flushed first (on a shared volume that this
  // server does not own, the owner is asked to flush and the log is
  // followed: Volume::Refresh), so the map holds every write acknowledged on
  // any connection before the call, none that began after it returned, and
  // maybe some that ran meanwhile. Of a snapshot export: immutable, so
  // connections asking for the same one while it is in use share one map.
  // Costs what `hbiss diff` costs: both states' extent maps are loaded (the
  // head's by a read-only recovery of its log) and compared, then dropped;
  // the map kept has at most kMaxDirtyRuns runs (coarsened beyond,
  // DirtyMap::Build). A build takes a slot of `builds` (a snapshot export's
  // shared map, when in use, takes none): Busy when none came free in time.
  // NotFound for a snapshot it does not offer (removed since the
  // negotiation); the store's or recovery's errors; a flush's error.
  // Thread-safe.
  Result<std::shared_ptr<const DirtyMap>> DirtyBitmap(const std::string& bitmap) override
      EXCLUDES(mu_);

 private:
  // `s`, or for a failed read of a snapshot export whose snapshot no longer
  // exists, a NotFound saying so.
  Status SnapshotGone(Status s);

  volume::Volume* const v_;
  const std::string name_;
  const bool read_only_;
  store::Store* const store_;
  DirtyMapBuilds* const builds_;
  Mutex mu_;
  // Snapshot exports: the maps in use, by "VOL#ID" of the snapshot they
  // start from (ids are never reused, so a name taken again gets a new entry).
  std::map<std::string, std::weak_ptr<const DirtyMap>> shared_maps_ GUARDED_BY(mu_);
};

class VolumeProvider : public ExportProvider {
 public:
  // Opens a volume for the provider (e.g. cluster::Node::Open, a volume
  // shared with other servers). The default is volume::Volume::Open with the
  // provider's options.
  using Opener = std::function<Result<std::unique_ptr<volume::Volume>>(const std::string& name)>;

  // `store` must outlive the provider; the provider must outlive every
  // Export it handed out.
  VolumeProvider(store::Store* store, bool read_only, volume::OpenOptions open_opts = {},
                 Opener opener = nullptr);
  ~VolumeProvider() override;  // CloseAll()

  // Every volume, each followed by its snapshots (VOL@SNAP).
  Result<std::vector<std::string>> List() override;
  // The empty name is the default export when the store has exactly one
  // volume. NotFound, naming what is missing, for a volume or a snapshot
  // that does not exist. Reads only the volume's meta (its size), never a
  // checkpoint, so INFO/LIST/GO cost one small read per volume not open.
  Result<ExportInfo> Describe(const std::string& name) override EXCLUDES(mu_);
  // Opening (or recovering) one volume blocks only the opens of that volume:
  // a second Open of a volume being opened waits for that open and shares
  // it; an Open of a volume being closed (its last connection gone) waits
  // for the close and opens it again. Never two opens of one volume at once.
  Result<std::shared_ptr<Export>> Open(const std::string& name) override EXCLUDES(mu_);
  // For export "VOL": the snapshots of VOL; for "VOL@B": those created
  // before B; in creation order, after "PARENT@SNAP" for a clone (the
  // snapshot it was made from, by its current name). Reads only the meta
  // and snapshot registries. NotFound when the volume or B does not exist.
  Result<std::vector<std::string>> DirtyBitmaps(const std::string& name) override;

  // Flushes every open volume; returns the first error.
  Status FlushAll() EXCLUDES(mu_);
  // Closes every open volume (even ones still referenced: their exports then
  // fail every call). Returns the first error. Call after the server stopped.
  Status CloseAll() EXCLUDES(mu_);
  size_t open_volumes() EXCLUDES(mu_);
  // The server-wide bound on dirty-bitmap builds of this provider's exports.
  DirtyMapBuilds* dirty_map_builds() { return &builds_; }

 private:
  struct Entry {
    enum class State { kOpening, kOpen, kClosing };
    State state = State::kOpening;
    std::unique_ptr<volume::Volume> vol;  // set once kOpen
    std::shared_ptr<VolumeExport> exp;
    int refs = 0;
    bool closed = false;  // by CloseAll, while still referenced
  };
  void Release(const std::string& name) EXCLUDES(mu_);

  store::Store* const store_;
  const bool read_only_;
  const volume::OpenOptions open_opts_;
  const Opener opener_;
  DirtyMapBuilds builds_;
  // Never held across a Volume::Open or Close: an entry in state kOpening or
  // kClosing stands for the one open or close running (outside mu_), and
  // changed_ is signalled when it ends.
  Mutex mu_;
  CondVar changed_;
  std::map<std::string, Entry> open_ GUARDED_BY(mu_);
};

}  // namespace hbiss::nbd
