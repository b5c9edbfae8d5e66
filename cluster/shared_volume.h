// A volume that several servers have open, of which this one may or may not
// own the writes (doc/ownership.md). It is a volume::Volume, so the NBD
// layer serves it like any other.
//
// Roles and moves:
//   reader --(a client writes: Acquire)--> owner
//   owner  --(RELEASE from another server, or Close)--> reader
// As a reader it holds a read-only Volume that follows the log; as the
// owner, a writable one (whose open starts a new epoch and so fences the
// previous owner). A move swaps the inner Volume under an exclusive lock:
// I/O of this server waits meanwhile (its clients see latency, not errors).
//
// Acquire: take the volume's lock by opening it writable. While another
// server holds it: ask that server (its owner record names it) to RELEASE,
// and try again; if it does not answer, try again every second until its
// lock expires (automatic takeover) or is broken (`hbiss lock break`), up to
// NodeOptions::acquire_timeout_ms. The write that asked for ownership is
// served before a RELEASE can take it away again, so every acquire makes
// progress. A server that has just released waits (up to 2 s) for the asker
// to take the volume before it acquires it back, so ownership does not
// bounce back to the releaser while the asker waits.
//
// Coherent reads as a reader: SYNC to the owner (it flushes), then Refresh;
// reads that arrive while a sync is out wait for the next one, so one round
// serves them all. A reader never serves what may be stale: when the owner
// does not answer (within the peer timeout) the read waits while the owner
// still holds the volume's lock (it may be alive: partitioned, stopped,
// busy), retrying, up to NodeOptions::acquire_timeout_ms, then fails (EIO).
// Once that lock is free (the owner died and its HDFS lease expired, or a
// lock break), the log is all there is: reads are served from it, and that
// owner is not asked again for 2 s. A log that cannot be read fails the read.

// Failures: an owner that finds itself fenced (Volume::Owned fails) keeps
// failing writes and flushes, never acknowledging one more; reads go on.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "cluster/node.h"
#include "util/mutex.h"
#include "util/thread_annotations.h"
#include "volume/volume.h"

namespace hbiss::cluster {

class SharedVolume : public volume::Volume {
 public:
  // Opens `name` read-only; Register()s with `node`.
  static Result<std::unique_ptr<SharedVolume>> Open(Node* node, const std::string& name);
  ~SharedVolume() override;

  uint64_t size() const override { return size_; }
  const std::string& name() const override { return name_; }
  bool read_only() const override { return false; }

  Status Read(uint64_t offset, std::span<uint8_t> out) override;
  Status Write(uint64_t offset, std::span<const uint8_t> data) override;
  Status Trim(uint64_t offset, uint64_t length) override;
  Status WriteZeroes(uint64_t offset, uint64_t length) override;
  Status Flush() override;
  Status Refresh() override;
  Result<std::vector<volume::Extent>> BlockStatus(uint64_t offset, uint64_t length) override;
  volume::VolumeInfo Info() const override;
  Result<volume::CleanStats> Clean(double threshold) override;
  Status Close() override;
  // Snapshot operations change the volume: this server takes ownership
  // first, as for a write (doc/snapshots.md "Served volumes").
  Result<volume::SnapshotInfo> CreateSnapshot(const std::string& snap) override;
  Status RemoveSnapshot(const std::string& snap) override;
  Result<bool> TrashSnapshot(const std::string& snap) override;
  Result<uint64_t> PurgeTrash() override;
  Status RenameSnapshot(const std::string& from, const std::string& to) override;
  Status Rollback(const std::string& snap) override;
  // Flatten takes ownership first (holding mu_ exclusively for that only),
  // then copies with mu_ held shared: this server's I/O goes on. A RELEASE
  // or Close that arrives meanwhile stops it within one piece (Aborted,
  // saying so; what was copied stays), so neither waits for the whole
  // flatten (only for the piece, or for its last steps once everything is
  // copied: a flush, two checkpoints, the meta). Snapshot operations on
  // the volume wait for it (the engine serializes them).
  Result<uint64_t> Flatten(const std::function<bool(uint64_t, uint64_t)>& progress) override
      EXCLUDES(mu_);
  uint64_t epoch() const override;
  Status Owned() const override;

  // Never waits (a role change may be under way).
  bool owner() const;
  // Owner, or opening the volume to become it (PING reports both as
  // owning: a lock break must not take the volume from a server that holds
  // its lock but has not written its owner record yet). A server waiting
  // between attempts for a dead owner's lock is neither.
  bool owner_or_acquiring() const { return owner_flag_.load() || acquiring_.load(); }

  // The peer requests, called by Node::Handle.
  pb::Reply HandleRelease(const pb::Request& req) EXCLUDES(mu_);
  pb::Reply HandleSync(const pb::Request& req) EXCLUDES(mu_);

  // Counters for tests and status.
  struct Stats {
    uint64_t acquired = 0;  // times this server became the owner
    uint64_t released = 0;  // times it gave ownership up on request
    uint64_t syncs = 0;     // SYNC rounds sent as a reader
    uint64_t replays = 0;   // of which replayed the log (the others found it final)
  };
  Stats stats() const EXCLUDES(stats_mu_);

 private:
  SharedVolume(Node* node, std::string name) : node_(node), name_(std::move(name)) {}

  // Runs `op` on the inner volume as the owner, acquiring ownership first
  // if needed.
  template <typename Op>
  Status AsOwner(Op op) EXCLUDES(mu_);
  // Runs `op` on the inner volume as a reader: directly as the owner, else
  // after SyncForRead (reopening the inner volume if a release left none).
  template <typename R, typename Op>
  R AsReader(Op op) EXCLUDES(mu_);
  // A RELEASE or SYNC of this volume at `epoch` from this server.
  pb::Request PeerRequest(pb::Request::Type type, uint64_t epoch, int attempt) const;
  // Makes this server the owner. Called with mu_ held exclusively.
  Status AcquireLocked() REQUIRES(mu_);
  // Makes reads see every write the owner acknowledged before now.
  Status SyncForRead() EXCLUDES(sync_mu_, mu_);
  Status DoSync() EXCLUDES(mu_);
  // Waits while a role change is waiting or under way (see gate_).
  void PassGate() EXCLUDES(gate_, mu_);
  // Reopens the inner volume read-only (after a release, or a failure).
  Status OpenReaderLocked() REQUIRES(mu_);

  Node* const node_;
  const std::string name_;
  uint64_t size_ = 0;

  // Shared: I/O; exclusive: changing role. Whoever wants it exclusively
  // holds gate_ while it waits and works, and I/O passes gate_ before taking
  // mu_ shared: a release is not starved by a stream of I/O (the shared
  // mutex alone prefers readers).
  Mutex gate_ ACQUIRED_BEFORE(mu_);
  mutable SharedMutex mu_;
  std::unique_ptr<volume::Volume> v_ GUARDED_BY(mu_);
  bool owner_ GUARDED_BY(mu_) = false;
  // owner_, readable without mu_ (PING must not wait for a role change).
  std::atomic<bool> owner_flag_{false};
  std::atomic<bool> acquiring_{false};
  bool closed_ GUARDED_BY(mu_) = false;
  // Role changes (RELEASE, Close) waiting for mu_ exclusively: a running
  // Flatten, which holds mu_ shared for minutes, stops for them.
  std::atomic<int> role_changes_waiting_{0};
  // The epoch this server last released on request, and when: its own next
  // acquire waits until another server took a later epoch, up to
  // kYieldAfterReleaseMs.
  static constexpr int kYieldAfterReleaseMs = 2000;
  uint64_t released_epoch_ GUARDED_BY(mu_) = 0;
  std::chrono::steady_clock::time_point released_at_ GUARDED_BY(mu_);
  // Set when a release could not make every acknowledged write durable:
  // this open then fails every write and flush, so no loss goes unseen.
  Status lost_ GUARDED_BY(mu_);

  Mutex sync_mu_;
  CondVar sync_cv_;
  bool sync_running_ GUARDED_BY(sync_mu_) = false;
  uint64_t sync_done_ GUARDED_BY(sync_mu_) = 0;
  // An owner that did not answer a SYNC, skipped until silent_until_.
  std::string silent_peer_ GUARDED_BY(sync_mu_);
  uint64_t silent_epoch_ GUARDED_BY(sync_mu_) = 0;
  // The epoch of the last replay that found the volume's lock free before
  // it read the log (0: none): that epoch's log was final, so while the
  // owner record still shows it, a sync round needs no replay.
  uint64_t idle_epoch_ GUARDED_BY(sync_mu_) = 0;
  uint64_t idle_id_ GUARDED_BY(sync_mu_) = 0;  // the volume id it was read under
  uint64_t opened_id_ GUARDED_BY(sync_mu_) = 0;  // the volume id when first opened
  std::chrono::steady_clock::time_point silent_until_ GUARDED_BY(sync_mu_);

  mutable Mutex stats_mu_;
  Stats stats_ GUARDED_BY(stats_mu_);
};

}  // namespace hbiss::cluster
