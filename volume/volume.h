// A Volume is one virtual disk kept as a log-structured set of segments in a
// Store (see doc/log_format.md and doc/checkpoint_format.md).
//
// Public contract, relied on by nbd/ and cli/:
//  * Any byte range inside [0, size()) may be read or written. 4 KiB-aligned
//    I/O is the fast path; unaligned I/O does read-modify-write.
//  * Never-written, trimmed and zeroed ranges read as zeros.
//  * Write/Trim/WriteZeroes return once the change is visible to Read on any
//    thread. They are durable only after a later Flush() returns OK.
//  * Flush() makes every write acknowledged before it was called survive a
//    crash and power loss (store Sync). Concurrent flushes are group-committed.
//  * After a crash, Open() yields the result of some prefix of acknowledged
//    writes that includes every write acknowledged before the last completed
//    Flush. A block never returns bytes that were never written to it.
//  * Data that fails its CRC is never returned: Read fails with Corruption.
//  * All methods are safe to call from many threads at once.
//  * Space: the cleaner (OpenOptions::clean_threshold, Clean) copies live
//    data out of mostly-dead segments and deletes dead ones, so the log
//    stays within about 1 / clean_threshold of the live data plus a few
//    segments. Other processes that read the volume (Open read-only, Stat)
//    while a writer has it open may fail with NotFound or Corruption when
//    a segment they were about to read is deleted; they may retry.
//  * Memory: the data an open volume holds in memory (its open segment and
//    up to two more while they are being closed, in 1 MiB chunks, CRC tables
//    and cached reads of closed segments) comes out of one process-wide
//    budget shared by every volume (memory_budget.h, SetMemoryLimit;
//    doc/memory.md); writers wait while the write buffers are full. An idle
//    volume gives its write buffers back within a few seconds. Its extent
//    map comes on top (Info().map_memory_bytes, at most 8 bytes per mapped
//    block plus 64 bytes per 256 MiB of volume size: extent_map.h). Open file descriptors for segment reads are bounded per
//    process (segment_cache.h), not per volume.
//  * A full store: when the log cannot be written for lack of space, the
//    volume stalls instead of failing. Writes, trims and flushes then fail
//    with NoSpace (NBD ENOSPC) and change nothing; nothing acknowledged is
//    lost (reads return it, and the crash contract above holds). The log
//    goes on by itself once space is back: it retries every second, and at
//    once when a write or Flush arrives (at most every 100 ms). Meanwhile
//    the not yet durable data stays in memory, up to one segment more than
//    the limit above. Other store errors fail the volume for good, as
//    before (writes and flushes return IOError).
//  * Reserve: on a store that can run out of space
//    (Store::MayRunOutOfSpace), each volume keeps a reserve object of
//    segment_size + 4 MiB (doc/volume_meta.md), given up when a NoSpace
//    stops recovery's re-log, a checkpoint or cleaning, so that Open, Close
//    and Clean work on a full device; it is written again once space is
//    back.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "store/store.h"
#include "util/status.h"

namespace hbiss::volume {

inline constexpr uint32_t kBlockSize = 4096;
inline constexpr uint64_t kMaxVolumeSize = 1ull << 48;  // 256 TiB

struct CreateOptions {
  uint64_t size = 0;                     // bytes; rounded up to kBlockSize
  uint64_t segment_size = 64ull << 20;   // bytes per segment file
};

// How the cleaner picks its next victim among the closed segments whose live
// fraction is below the threshold (doc/checkpoint_format.md, "Choosing a
// victim"). u is a segment's live fraction, age how long ago the segment
// was written (for cleaner copies: copied), counted in batch sequence
// numbers (a logical clock: the log's batches, not wall time).
enum class CleanPolicy {
  kCostBenefit,  // the highest (1 - u) * age / (1 + u) (Sprite LFS)
  kGreedy,       // the lowest u (the fewest live blocks for its length)
};

struct OpenOptions {
  bool read_only = false;
  // Write a checkpoint after this many bytes of log since the last one.
  uint64_t checkpoint_interval = 1ull << 30;
  // Whether reads of closed segments go through the process-wide read cache
  // (0 = no, else yes; its size is set by SetMemoryLimit or
  // DefaultReadCache().SetCapacity), used only on stores that do not cache
  // reads themselves (Store::CachesReadsLocally: HDFS). Reads shorter than
  // 256 KiB fill it in 64 KiB chunks; longer ones bypass it.
  uint64_t cache_bytes = 64ull << 20;
  // Writable opens: who opens it, as opaque text (JSON by convention: the
  // cluster layer writes {"server", "peer", "since", "pid"}), stored as the
  // new epoch's owner object for other servers and `hbiss status`
  // (doc/ownership.md). Read back by Volume::Owner.
  std::string owner;
  // The cleaner. A background thread copies the live blocks of each closed
  // segment whose live fraction (live blocks / blocks a segment holds) is
  // below this to the head of the log, so that whole segments become
  // garbage, and deletes segments with no live block left once neither kept
  // checkpoint needs them (see doc/checkpoint_format.md), asking for a
  // checkpoint when garbage waits on one. A clean Close deletes them too.
  // 0 turns all of it off: the log keeps everything ever written (Clean
  // still works when called). Values above 0.9 act as 0.9, so that the
  // cleaner never rewrites the segments it has just written.
  double clean_threshold = 0.5;
  // Which of those segments the cleaner copies out first.
  CleanPolicy clean_policy = CleanPolicy::kCostBenefit;
  // When above 0, the background cleaner copies only while the log (less
  // the segments with no live block left, which wait only for a
  // checkpoint) is more than this many times the mapped data, so that
  // segments die further before they are cleaned (fewer copies); it still
  // takes only segments under clean_threshold. While the log is more than
  // 5% over the target and the cleaner has a segment to clean, each write,
  // trim and zero waits up to 10 ms before it starts, so that the cleaner
  // keeps up. 0: it cleans every segment under clean_threshold as soon as it
  // can, and writes never wait for it.
  double clean_space_target = 0;
};

// What a cleaning pass did (Volume::Clean).
struct CleanStats {
  uint64_t segments_cleaned = 0;  // segments whose live blocks were copied out
  uint64_t blocks_moved = 0;      // blocks copied to the head of the log
  uint64_t segments_deleted = 0;  // segment objects deleted from the store
  uint64_t bytes_deleted = 0;     // their bytes
};

// Who owns a volume, as the store records it (doc/ownership.md).
struct OwnerRecord {
  // The current epoch: the highest epoch directory, 0 for a volume that was
  // never opened for writing since it was created (and for a version-1
  // volume not yet moved into epochs).
  uint64_t epoch = 0;
  // The owner object of that epoch, as OpenOptions::owner gave it; empty
  // when nobody owns the volume (a clean Close released it, a lock break
  // took it, or it was never opened for writing).
  std::string owner;
};

// A snapshot of a volume (doc/snapshots.md).
struct SnapshotInfo {
  uint64_t id = 0;    // fixed at creation, never reused in the volume
  std::string name;   // the volume-name rules (Volume::ValidateName)
  int64_t created = 0;  // seconds since the epoch
  uint64_t size = 0;    // bytes: the volume's size
  uint64_t mapped_bytes = 0;  // bytes of the snapshot that hold data
  // Its map object is written (false for a moment after creation, or
  // until the owner's next open after a crash: its map is then rebuilt
  // from the log whenever it is read).
  bool materialized = false;
  // In the trash (doc/snapshots.md "Trash"): removed while clones used it,
  // kept for them only; its name is free, it cannot be opened or cloned.
  bool trashed = false;
};

// One allocation extent, as reported by BlockStatus.
struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool allocated = false;  // false: a hole that reads as zeros
};

struct VolumeInfo {
  std::string name;
  uint64_t id = 0;              // random, fixed at create
  uint64_t size = 0;            // bytes
  uint64_t segment_size = 0;
  uint64_t mapped_bytes = 0;    // bytes of volume space that hold data
  uint64_t segment_count = 0;
  uint64_t log_bytes = 0;       // bytes in all segment files
  uint64_t checkpoint_seq = 0;  // newest checkpoint, 0 if none
  uint64_t map_memory_bytes = 0;  // heap bytes of the extent map (ExtentMap::MemoryUsage)
  // Cleaner totals since this process opened the volume (0 from Stat).
  uint64_t segments_cleaned = 0;  // segments whose live blocks were copied out
  uint64_t segments_deleted = 0;
  uint64_t blocks_moved = 0;
  // Checkpoints this process wrote (0 from Stat), and the newest one's size
  // and how long it took to encode (from a snapshot of the map, while I/O
  // went on) and to write.
  uint64_t checkpoints_written = 0;
  uint64_t checkpoint_bytes = 0;
  uint64_t checkpoint_encode_us = 0;
  uint64_t checkpoint_write_us = 0;
  // Write buffers the volume's in-memory segments hold now (memory_budget.h).
  uint64_t buffer_bytes = 0;
};

class Volume {
 public:
  Volume(const Volume&) = delete;
  Volume& operator=(const Volume&) = delete;
  virtual ~Volume() = default;  // closes as Close() would, ignoring errors

  // Validates a volume name: 1..128 bytes of [A-Za-z0-9._-], not starting
  // with '.' or '-'.
  static Status ValidateName(const std::string& name);

  // Creates an empty volume. AlreadyExists if it exists; InvalidArgument for
  // a bad name or size (zero, or above kMaxVolumeSize). Nothing is written
  // when it fails.
  static Status Create(store::Store* store, const std::string& name, const CreateOptions& opts);

  // `name` may be "VOL@SNAP": a snapshot, opened read-only (InvalidArgument
  // unless opts.read_only); its map never changes, and its reads follow the
  // volume's epochs. NotFound if the snapshot does not exist.
  //
  // Opens a volume, recovering from a crash if needed. NotFound if absent;
  // Busy if another process has it open for writing; Corruption if the log
  // is damaged before its tail. A writable open also fails with the store's
  // error (IOError, ...) when it cannot rebuild the map of a snapshot whose
  // map object a crash kept from being written and the error may pass: try
  // again (doc/snapshots.md). `store` must outlive the Volume.
  //
  // A writable open takes the volume's lock, then starts a new epoch: it
  // renames the current epoch directory E to E+1 (the fence: nothing the
  // previous holder does under E can reach the volume any more), writes
  // OpenOptions::owner as E+1's owner object, and recovers the log, taking
  // over the last segment (Store::OpenForTakeover) so a previous holder that
  // is still alive can no longer append to it. Close (and the destructor)
  // deletes the owner object and drops the lock. A read-only open follows
  // the current epoch: Refresh and reads that find a segment gone resolve it
  // again, so a reader keeps working across changes of owner.
  static Result<std::unique_ptr<Volume>> Open(store::Store* store, const std::string& name,
                                              const OpenOptions& opts = {});

  // Makes volume `name` a clone of snapshot `spec` ("VOL@SNAP"): writable,
  // of the same size, sharing every block it does not overwrite with the
  // snapshot (doc/snapshots.md "Clones"). O(1): it writes the clone's meta
  // and a record in the parent. Clones of clones work to kMaxCloneDepth (15)
  // parents. NotFound if the snapshot does not exist; AlreadyExists if
  // `name` does; InvalidArgument for a bad spec or a chain too deep.
  static Status Clone(store::Store* store, const std::string& spec, const std::string& name);

  // Deletes a volume and all its data. NotFound if absent, Busy if open, if
  // it has snapshots, or if it is in the trash and clones still use it (the
  // message names them and says what to do). A trashed volume whose clones
  // are all gone, and trashed snapshots no clone uses, are deleted with it.
  // The volume's own parent is not told (PurgeTrash in trash.h does that).
  static Status Remove(store::Store* store, const std::string& name);

  // Names of all volumes in the store, sorted.
  static Result<std::vector<std::string>> List(store::Store* store);

  // The current epoch and its owner (see OwnerRecord). Never takes a lock.
  // NotFound if the volume does not exist.
  static Result<OwnerRecord> Owner(store::Store* store, const std::string& name);

  // Whether a writer holds the volume's lock now. Takes the lock and lets it
  // go at once when it is free (a writable open racing this one may see Busy
  // for that moment, and retries). For a reader whose owner does not answer:
  // a free lock means the owner is gone (or released), so what the log
  // holds is all there is.
  static Result<bool> Locked(store::Store* store, const std::string& name);

  // Takes the volume away from a holder that is gone (`hbiss lock break`,
  // like `rbd lock rm`): breaks its lock (Store::BreakLock), fences its
  // epoch (renames E to E+1 and takes over its last segment, so nothing it
  // still does can reach the volume), and leaves the volume owned by
  // nobody, so the next writable open needs no wait. The caller must know
  // the holder does not answer any more. OK if nobody held it (the epoch is
  // fenced all the same). NotFound if the volume does not exist; Busy if the
  // lock is still held after the break (a live holder on a store whose locks
  // cannot be broken: local, memory); the store's error if breaking failed.
  static Status BreakLock(store::Store* store, const std::string& name);

  // "VOL@SNAP": splits it into *volume and *snap (both validated);
  // InvalidArgument for anything else. A spec without '@' gives an empty
  // *snap.
  static Status ParseSpec(const std::string& spec, std::string* volume, std::string* snap);

  // The volume's snapshots, in creation order; reads only (works while a
  // server owns the volume). Trashed ones only with `include_trashed`.
  // NotFound if the volume does not exist.
  static Result<std::vector<SnapshotInfo>> ListSnapshots(store::Store* store,
                                                         const std::string& name,
                                                         bool include_trashed = false);

    // Reads info without opening for write (works while another process has
  // it open; mapped_bytes then reflects the newest checkpoint only).
  static Result<VolumeInfo> Stat(store::Store* store, const std::string& name);

  virtual uint64_t size() const = 0;
  virtual const std::string& name() const = 0;
  virtual bool read_only() const = 0;

  // InvalidArgument if the range is not inside the volume.
  virtual Status Read(uint64_t offset, std::span<uint8_t> out) = 0;
  virtual Status Write(uint64_t offset, std::span<const uint8_t> data) = 0;
  // Unmaps a range; it then reads as zeros. Partial blocks at the edges are
  // zeroed by read-modify-write.
  virtual Status Trim(uint64_t offset, uint64_t length) = 0;
  // Makes a range read as zeros (same effect as Trim in this engine).
  virtual Status WriteZeroes(uint64_t offset, uint64_t length) = 0;
  virtual Status Flush() = 0;

  // Read-only opens: replays what the log gained since the open or the last
  // Refresh (another process writes the volume), so that later reads see
  // at least what its writer had flushed (on HDFS: hflushed) when Refresh
  // began.
  // Never touches the writer's files (no lease recovery). A read that finds
  // a segment gone (the writer's cleaner deleted it) refreshes by itself and
  // tries again. Writable opens: nothing to do, OK.
  virtual Status Refresh() = 0;

  // Allocation status of [offset, offset+length), as extents covering the
  // whole range in order, merged where adjacent extents agree.
  virtual Result<std::vector<Extent>> BlockStatus(uint64_t offset, uint64_t length) = 0;

  virtual VolumeInfo Info() const = 0;

  // The epoch this open works in: the one a writable open started, the
  // current one a read-only open last resolved.
  virtual uint64_t epoch() const = 0;

  // OK while a writable open still owns the volume. An error (IOError,
  // naming the cause) once it learned it lost it: its lock's lease was not
  // renewed for kLeaseSelfFenceSeconds (store::Lock::Check), or the store
  // refused its writes because another process took the volume over. From
  // then on every write and flush fails with that error; nothing more is
  // acknowledged. Read-only opens: always OK. Aborted after Close.
  virtual Status Owned() const = 0;

  // Snapshots (doc/snapshots.md); writable opens only (NotSupported
  // otherwise). CreateSnapshot captures the volume atomically with respect
  // to writes: every write, trim and zeroing acknowledged before the call
  // is in the snapshot, none that began after it returned. It flushes, and
  // returns once the snapshot is durable; its cost does not grow with the
  // volume's size or data (the map object is written in the background).
  // AlreadyExists for a taken name, InvalidArgument for a bad one; NoSpace
  // (nothing created; try again) when the store is full, also when it
  // filled up while the snapshot was being taken.
  virtual Result<SnapshotInfo> CreateSnapshot(const std::string& snap) = 0;
  // Removes a snapshot; the cleaner then gives back the space only it held.
  // NotFound if there is none of that name; Busy, naming them, if clones
  // use it.
  virtual Status RemoveSnapshot(const std::string& snap) = 0;
  // rbd clone v2's removal of a snapshot in use (doc/snapshots.md "Trash"):
  // as RemoveSnapshot when no clone uses it (returns false); else moves it
  // to the trash (returns true): its name is free at once, it can no longer
  // be opened, exported or cloned, and it keeps what it holds until the last
  // of its clones is removed or flattened and PurgeTrash runs.
  virtual Result<bool> TrashSnapshot(const std::string& snap) = 0;
  // Deletes the trashed snapshots no clone uses any more, as RemoveSnapshot
  // would (the cleaner then gives their space back). Returns how many. A
  // writable open does it too, once started.
  virtual Result<uint64_t> PurgeTrash() = 0;
  virtual Status RenameSnapshot(const std::string& from, const std::string& to) = 0;
  // Makes the volume's content that of the snapshot (the snapshot stays).
  // Writes in progress are ordered before it; it is durable on return.
  virtual Status Rollback(const std::string& snap) = 0;

  // A clone: copies every block it still shares with its parents into its
  // own log, while I/O goes on, then, when none of its own snapshots needs
  // them either, drops its parents (the clone is then a volume of its own
  // and its parent snapshot can be removed). `progress(done, total)` is
  // called now and then, in blocks, in the caller's thread; when it returns
  // false the flatten stops there with Aborted (what it copied stays: a
  // flatten run again copies only what is still shared). Returns the
  // blocks copied. A volume that is not a clone: OK, nothing to do.
  // NotSupported read-only.
  virtual Result<uint64_t> Flatten(const std::function<bool(uint64_t, uint64_t)>& progress) = 0;

  // Cleans now, in the caller's thread, whatever the background cleaner is
  // doing: copies out the live blocks of every segment that was closed when
  // it started and whose live fraction is below `threshold` (1.0: every
  // closed segment with any garbage), makes that durable, writes two
  // checkpoints and deletes every segment no checkpoint needs any more.
  // Data is verified (CRC) before it is copied: a block that fails stays
  // where it is, its segment is kept, and Clean returns Corruption after
  // finishing the rest. NotSupported on a read-only volume.
  virtual Result<CleanStats> Clean(double threshold) = 0;

  // Flushes, writes a checkpoint and releases the volume. Further calls fail.
  virtual Status Close() = 0;

 protected:
  Volume() = default;
};

}  // namespace hbiss::volume
