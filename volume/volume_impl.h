// VolumeImpl: the engine behind Volume (volume.h), a facade over the units
// that do the work:
//   BatchBuilder   the open batch: fit, extension, sealing (batch_builder.h)
//   LogReplayer    reading segments back, replay rules (log_reader.h)
//   RecoverLog     checkpoint + roll-forward at open (recovery.h)
//   CheckpointSet  which checkpoints exist and what they need (checkpoint_set.h)
//   SegmentSet     segments, live counts, victim and delete rules (segment_set.h)
//   SegmentCache   reads of closed segments, CRC tables, readers (segment_cache.h)
//   ReadGate       deletes wait for reads that looked the map up (read_gate.h)
//   MemSegment     an in-memory segment and the queue of sealed batches
//                  (mem_segment.h)
//   LogWriter      appends sealed batches, closes segments, group-commit
//                  sync; the appended / durable positions; the one batch
//                  header encoder of the writing side (log_writer.h)
//   RelogBatches   logging batches again after the last durable position,
//                  for recovery and for the NoSpace retry, through the
//                  write path; PutRelogSegment, recovery's whole-segment
//                  Put (relog.h)
//   CheckpointSchedule  when a checkpoint is due, tickets for CheckpointNow,
//                  forced-checkpoint rate (checkpoint_schedule.h)
//   Cleaner        the cleaning pass and its thread (cleaner.h)
// What stays here: the write path (Write/Trim with read-modify-write of
// partial blocks, and RelogPath, the same path for a re-log), the in-memory
// segments, and the flusher thread's loop:
// wait for work, take the queue, append it through the LogWriter, one sync,
// retire the closed segments, write a due checkpoint, then the summaries.
//
// Threads and locks (checked by clang's -Wthread-safety):
//  * write_mu_ serialises writers (Write/Trim/WriteZeroes and cleaner
//    copies), so the read-modify-write of partial edge blocks is atomic.
//  * mu_ guards the extent map, the in-memory segments, the open batch, the
//    queue of sealed batches, the segment set, the flush state and the
//    checkpoint schedule.
//    Lock order: cleaner pass -> write_mu_ -> mu_ -> (CheckpointSet, caches).
//  * The flusher thread owns the LogWriter (log_): the store SegmentWriter,
//    the appended / durable positions and the unsynced batches (no lock;
//    recovery sets them before the thread starts and Close uses them after
//    it ends). It encodes and appends sealed batches outside mu_: a sealed
//    batch's slots never change, and the segment's CRC table (crcs, valid)
//    is only the flusher's (mem_segment.h). What a round appended is added
//    to segment_files_, log_bytes_ and the checkpoint schedule under mu_
//    when the round's appends and sync are done (LogWriter::TakeAppended),
//    before any segment of the round is retired: Info() sees it then, not
//    batch by batch; the checkpoint decision, taken under mu_ between
//    rounds, sees it as soon as before.
//  * Reads look the map up under mu_ inside a ReadGate pass, copy from
//    in-memory segments under mu_, and read closed segments outside it.
//  * The Cleaner (cleaner.h: its thread, and Clean callers, one pass at a
//    time) copies live blocks through the write path (CopyStillLive) and
//    deletes dead segments after ReadGate::WaitForEarlierReads.
//  * A full store (volume_no_space.cc): when the flusher's Create, Append,
//    Sync or Close fails with NoSpace, the log stalls (no_space_) instead of
//    failing. The flusher abandons its writer, keeps every batch that is not
//    durable (the log writer's unsynced batches and the unwritten queue) and
//    retries about every kRetryEvery, or sooner when a write or Flush
//    arrives: under mu_ it logs those batches again, through the write path,
//    into a fresh segment that follows the log writer's durable position,
//    and writes and syncs them. New operations and flushes fail with
//    NoSpace meanwhile; an operation already in progress completes in
//    memory (past the in-memory segment limit by at most its own size).
//    The reserve (space_reserve.h) is given up when a NoSpace stops
//    recovery's re-log, a checkpoint or the cleaner.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "store/store.h"
#include "util/mutex.h"
#include "util/status.h"
#include "volume/batch_builder.h"
#include "volume/checkpoint.h"
#include "volume/checkpoint_schedule.h"
#include "volume/checkpoint_set.h"
#include "volume/cleaner.h"
#include "volume/extent_map.h"
#include "volume/layout.h"
#include "volume/log_format.h"
#include "volume/log_follower.h"
#include "volume/log_writer.h"
#include "volume/mem_segment.h"
#include "volume/memory_budget.h"
#include "volume/read_gate.h"
#include "volume/recovery.h"
#include "volume/relog.h"
#include "volume/segment_cache.h"
#include "volume/segment_set.h"
#include "volume/snapshot_registry.h"
#include "volume/space_reserve.h"
#include "volume/volume.h"
#include "volume/volume_meta.h"

namespace hbiss::volume {

struct BlockSpan;

// Runs the test hook of volume_testing.h (SetCheckpointEncodeHook), if set.
void RunCheckpointEncodeHook();
// Runs the test hook of volume_testing.h (SetSnapshotMapTakenHook), if set.
void RunSnapshotMapTakenHook();

// A read-only view of snapshot `snap` of volume `name` (Volume::Open of
// "VOL@SNAP" without the trash check), or, when `id` is not 0, of the
// snapshot with that id, trashed or not: fsck reads trashed snapshots too.
Result<std::unique_ptr<Volume>> OpenSnapshotView(store::Store* store, const std::string& name,
                                                 const std::string& snap, uint64_t id,
                                                 const OpenOptions& opts);

class VolumeImpl final : public Volume, private Cleaner::Host {
 public:
  // Works in log directory `dir` of epoch `epoch` (epoch.h): a writable
  // open's new epoch (it holds `lock`), or the current one a reader
  // resolved (it follows later ones: Refresh).
  VolumeImpl(store::Store* store, std::string name, layout::LogDir dir, uint64_t epoch,
             VolumeMeta meta, OpenOptions opts, std::unique_ptr<store::Lock> lock);
  ~VolumeImpl() override;

  // Open's steps: recover the log (and, writable, log the unproven tail
  // again), then start the threads.
  Status Recover();
  Status Start();

  uint64_t size() const override { return meta_.size; }
  const std::string& name() const override { return name_; }
  bool read_only() const override { return opts_.read_only; }

  Status Read(uint64_t offset, std::span<uint8_t> out) override;
  Status Write(uint64_t offset, std::span<const uint8_t> data) override;
  Status Trim(uint64_t offset, uint64_t length) override {
    return Unmap(offset, length, EntryType::kTrim);
  }
  Status WriteZeroes(uint64_t offset, uint64_t length) override {
    return Unmap(offset, length, EntryType::kZero);
  }
  Status Flush() override;
  Status Refresh() override;
  Result<std::vector<Extent>> BlockStatus(uint64_t offset, uint64_t length) override;
  VolumeInfo Info() const override;
  uint64_t epoch() const override { return epoch_.load(std::memory_order_relaxed); }
  Status Owned() const override EXCLUDES(mu_);
  Result<CleanStats> Clean(double threshold) override;
  Status Close() override;
  Result<uint64_t> Flatten(const std::function<bool(uint64_t, uint64_t)>& progress) override
      EXCLUDES(snap_mu_, write_mu_, mu_);

  // Snapshots (volume_snapshot.cc, doc/snapshots.md).
  Result<SnapshotInfo> CreateSnapshot(const std::string& snap) override
      EXCLUDES(snap_mu_, write_mu_, mu_);
  Status RemoveSnapshot(const std::string& snap) override EXCLUDES(snap_mu_, write_mu_, mu_);
  Result<bool> TrashSnapshot(const std::string& snap) override EXCLUDES(snap_mu_, write_mu_, mu_);
  Result<uint64_t> PurgeTrash() override EXCLUDES(snap_mu_, write_mu_, mu_);
  Status RenameSnapshot(const std::string& from, const std::string& to) override
      EXCLUDES(snap_mu_, write_mu_, mu_);
  Status Rollback(const std::string& snap) override EXCLUDES(snap_mu_, write_mu_, mu_);
  // Before Recover: this read-only open shows snapshot `snap` (its map is
  // fixed; reads follow the volume's epochs): the live one of that name, or,
  // when `id` is not 0, the one with that id, trashed or not (`snap` then
  // only names it in messages).
  void SetSnapshot(std::string snap, uint64_t id = 0) {
    snap_ = std::move(snap);
    snap_id_ = id;
  }

 private:
  using Lock = MutexLock;

  Status CheckRange(uint64_t offset, uint64_t length) const;
  Status WritableLocked() const REQUIRES(mu_);
  // WritableLocked without the no-space stall: closed, read-only, failed.
  Status UsableLocked() const REQUIRES(mu_);
  Status Unmap(uint64_t offset, uint64_t length, EntryType type);
  // Reserves write buffers for an operation of `blocks` blocks (waiting while
  // the budget is full), to be handed to the open segment by TakeReserve
  // under mu_. Returns the bytes reserved. REQUIRES: write_mu_ held (one
  // operation at a time), mu_ not held.
  uint64_t Reserve(uint64_t blocks) REQUIRES(write_mu_) EXCLUDES(mu_);
  void GiveBackReserveLocked() REQUIRES(mu_);
  // Closes the open segment of an idle volume so that its buffers go back to
  // the budget (memory_budget.h); the flusher calls it.
  bool IdleRollDueLocked(std::chrono::steady_clock::time_point now) const REQUIRES(mu_);
  void RollIdleLocked() REQUIRES(mu_);
  // Reads the partly covered edge blocks of `b` into head / tail.
  Status ReadEdges(const BlockSpan& b, uint8_t* head, uint8_t* tail);
  // Appends one whole operation over the blocks of `b`: the partial edge
  // blocks as writes of `head` / `tail`, and the full blocks between them
  // through middle(first_lba, count, is_last_part).
  template <typename MiddleFn>
  Status AppendOpLocked(Lock& l, const BlockSpan& b, const uint8_t* head, const uint8_t* tail,
                        const MiddleFn& middle) REQUIRES(write_mu_, mu_);

  // --- write path ---
  Status OpenBatchLocked(Lock& l) REQUIRES(mu_);
  void SealBatchLocked() REQUIRES(mu_);
  Status RollSegmentLocked(Lock& l) REQUIRES(mu_);
  // Cleaner copies and client operations never share a segment, nor do
  // copies of different generations (SegmentSet::generation): before
  // appending generation `gen` (0: client operations), closes the open
  // segment if it holds another. REQUIRES: no operation in progress.
  Status SegregateLocked(Lock& l, uint32_t gen) REQUIRES(mu_);
  Status AppendWriteLocked(Lock& l, uint64_t lba, uint64_t n, const uint8_t* src,
                           bool last_part) REQUIRES(mu_);
  Status AppendUnmapLocked(Lock& l, EntryType type, uint64_t lba, uint64_t n, bool last_part)
      REQUIRES(mu_);
  // Takes the old locations of blocks [lba, lba+n) off the live counts;
  // before the map changes them.
  Status ForgetBlocksLocked(uint64_t lba, uint64_t n) REQUIRES(mu_);
  // The map or the open batch could not take a change the write path had
  // begun (out of memory): the in-memory state no longer matches the log, so
  // the volume fails (writes and flushes return `s` from now on; what was
  // flushed before stays) and the live counts are not trusted again.
  Status FailLocked(Status s) REQUIRES(mu_);
  // Self-fencing (doc/ownership.md): `s` unless it is OK and the lock can no
  // longer be trusted (store::Lock::Check), which fails the volume for good.
  // Called before acknowledging a write, trim or flush.
  Status AckLocked(Status s) REQUIRES(mu_);
  // Read-only: resolves the current epoch and, when it moved, points the
  // follower and the segment cache at its directory; then loads (`load`) or
  // catches up there. A rename during the replay (a new owner) makes the
  // follower find its directory gone, which reads as an empty log: so the
  // epoch is resolved again afterwards and, if it moved, the replay is done
  // again in the new directory (under mu_: no read sees the map between).
  Status FollowLocked(bool load) REQUIRES(mu_);
  // FollowLocked's first part: true if the epoch moved.
  Result<bool> FollowEpochLocked() REQUIRES(mu_);
  Status MapSetLocked(uint64_t lba, uint64_t n, uint32_t seg, uint32_t slot) REQUIRES(mu_);
  Status MapClearLocked(uint64_t lba, uint64_t n) REQUIRES(mu_);
  bool InMemoryLocked(uint64_t seg) const REQUIRES(mu_) { return mem_segs_.count(seg) != 0; }
  Result<std::shared_ptr<MemSegment>> NewMemSegmentLocked(uint64_t id, uint64_t prev_id,
                                                          uint64_t prev_end, uint32_t flags = 0)
      REQUIRES(mu_);
  // A segment that is now closed in the store (synced): its CRC table goes to
  // the read side, reads go to the store from now on, its length is noted
  // for the victim rule, and it is noted dead when no block lives in it; its
  // buffers go back to the budget with the last reference. REQUIRES: seg is
  // not cur_.
  void RetireSegmentLocked(const std::shared_ptr<MemSegment>& seg) REQUIRES(mu_);
  // Recovery's re-log (relog.h): logs the complete operations of
  // `rec.relog` again into the new segment, then PutRelogSegmentLocked
  // writes that segment whole and the log goes on in a fresh one after it.
  // Before Start only.
  Status RelogTail(const RecoveredLog& rec) EXCLUDES(mu_);
  Status PutRelogSegmentLocked(Lock& l) REQUIRES(mu_);
  // The write path as a re-log drives it (relog.h), under mu_.
  class RelogPath;
  LogPosition SealedEndLocked() const REQUIRES(mu_);
  // The header of the next checkpoint: it covers the log up to the end of the
  // last sealed batch.
  CheckpointInfo NextCheckpointInfoLocked() REQUIRES(mu_);

  // --- flusher ---
  void FlusherLoop() EXCLUDES(mu_);
  // Appends the items of *work (then cleared) through log_, in order; the
  // segments whose end they reach go to *closed. On NoSpace the items not
  // written (the failed one first) go to *redo. Flusher thread only.
  Status AppendWork(std::deque<QueueItem>* work, std::vector<std::shared_ptr<MemSegment>>* closed,
                    std::deque<QueueItem>* redo) EXCLUDES(mu_);
  // A checkpoint the flusher begins in a round and writes at its end.
  struct PendingCheckpoint {
    bool wanted = false;  // one was begun (the rest is empty otherwise)
    CheckpointInfo info;
    std::unique_ptr<ExtentMap> snapshot;  // of the map, encoded outside mu_
    std::string data;
    std::chrono::steady_clock::duration encode_time{};
  };
  // Begins a checkpoint if one is due and can be taken now (ckpt_sched_):
  // its header, and a copy-on-write snapshot of the map to encode outside
  // mu_ (without memory for one, it encodes in place, under mu_).
  void BeginCheckpointLocked(PendingCheckpoint* c) REQUIRES(mu_);
  // Encodes c's snapshot, if it has one.
  void EncodeCheckpointSnapshot(PendingCheckpoint* c) EXCLUDES(mu_);
  // Writes the begun checkpoint c (the log up to its position is durable
  // now), outside mu_, and notes how it went.
  void FinishCheckpointLocked(PendingCheckpoint* c) REQUIRES(mu_);
  // Puts checkpoint `data` (of `ci`), then deletes all but the newest two.
  Status WriteCheckpoint(const std::string& data, const CheckpointInfo& ci) EXCLUDES(mu_);
  // Stores the CRC table of closed segment `seg` (`bytes` long) as its
  // summary; a failure only costs a scan when the segment is next read.
  void PutSummary(const MemSegment& seg, uint64_t bytes) EXCLUDES(mu_);

  // --- Cleaner::Host (cleaner.h) ---
  uint64_t PickVictim(double threshold, uint64_t below) override EXCLUDES(mu_);
  Result<std::vector<MapRun>> LiveRuns(uint64_t seg, bool* complete) override EXCLUDES(mu_);
  Status ReadRun(const MapRun& r, std::span<uint8_t> out) override EXCLUDES(mu_);
  Result<uint64_t> CopyStillLive(std::span<const MapRun> pieces, const uint8_t* buf) override
      EXCLUDES(mu_, write_mu_);
  void SegmentDone(uint64_t seg, uint64_t moved, bool bad, CleanStats* stats) override
      EXCLUDES(mu_);
  Status DeleteDeadSegments(CleanStats* stats) override EXCLUDES(mu_);
  Status MakeDurable() override { return Flush(); }
  // --- a full store (volume_no_space.cc; see the top) ---
  // The flusher's round failed with NoSpace: abandons the writer, puts the
  // batches that are not durable (log_'s unsynced, then `redo`, then queue_) back
  // on queue_, retires the segments `closed` in the round and stalls the
  // log until the next retry. Flusher thread only.
  void StallLocked(const Status& s, std::deque<QueueItem>* redo,
                   std::vector<std::shared_ptr<MemSegment>>* closed, bool want_ckpt)
      REQUIRES(mu_);
  enum class RetryStep { kRound, kWait, kStop };
  // While stalled: waits for the next retry (kWait: look again; kStop: the
  // volume is closing), then logs the batches that are not durable again
  // (kRound: write them now). Flusher thread only.
  RetryStep PrepareRetryLocked(Lock& l) REQUIRES(mu_);
  // Logs every batch on queue_ (all after log_'s durable position) again
  // into a fresh segment whose predecessor is that position; the old
  // in-memory segments leave memory, and those after its segment are noted in
  // abandoned_ for the flusher to delete. REQUIRES: no operation in progress.
  Status RelogAfterNoSpaceLocked(Lock& l) REQUIRES(mu_);
  // Deletes the segment objects in abandoned_ (garbage off the chain).
  void DropAbandonedSegments(Lock& l) REQUIRES(mu_);
  // For a write or Flush that finds the log stalled: asks for a retry now
  // (at most one per kMinRetryGap) and waits for it. OK when the log is not
  // (or no longer) stalled, else WritableLocked's error.
  Status AwaitSpaceLocked() REQUIRES(mu_);
  // Space was given back (the reserve, dead segments): retry soon.
  void SpaceFreedLocked() REQUIRES(mu_);
  // Deletes the reserve when a NoSpace stopped a write that gives space
  // back; true if there was one (retry the write).
  bool ReleaseReserve(const Status& s) override EXCLUDES(mu_);
  // The background cleaner's step while the log is stalled: deletes dead
  // segments and, when cleaning could give space back, the reserve.
  void CleanWhileStalled(double threshold) override EXCLUDES(mu_);

  // Has the flusher write a checkpoint now and waits for it.
  Status CheckpointNow() override EXCLUDES(mu_);
  void RequestCheckpointIfGarbageWaits() override EXCLUDES(mu_);
  bool NeedsSpace() override EXCLUDES(mu_);
  // With a space target (OpenOptions::clean_space_target): while the log is
  // more than kBehindFactor times the target and the cleaner has a victim
  // (cleaner_behind_, set by NeedsSpace on each background pass), a write,
  // trim or zero waits up to kMaxYield before it starts, so that the
  // cleaner catches up instead of the log outgrowing it. Nothing changes
  // without a target.
  void YieldToCleaner() EXCLUDES(mu_, write_mu_);
  static constexpr double kBehindFactor = 1.05;
  static constexpr auto kMaxYield = std::chrono::milliseconds(10);
  bool Failed() override EXCLUDES(mu_);
  bool Stalled() override EXCLUDES(mu_);
  uint64_t ReserveBytes() override { return reserve_.enabled() ? reserve_.bytes() : 0; }
  void RestoreReserve() override { reserve_.MaybeRestore(); }

  // --- snapshots (volume_snapshot.cc) ---
  // A snapshot whose map object is not written yet: its map (a
  // copy-on-write snapshot of map_), written by the flusher once its record
  // is in the registry (recorded). No checkpoint is written while one
  // waits, so the log its map could be rebuilt from stays.
  struct PendingSnap {
    uint64_t id = 0;
    uint64_t stop_seq = 0;
    LogPosition position;
    std::unique_ptr<ExtentMap> map;  // null while the flusher writes it
    bool recorded = false;
  };
  // Snapshot view (SetSnapshot): loads its map (Recover's part).
  Status RecoverSnapshotView() EXCLUDES(mu_);
  // Writable open, before Start: reads the registry, writes the map object of
  // every pending snapshot (rebuilt from the log) and pins what each needs.
  // A pending snapshot whose map cannot be rebuilt fails the open when the
  // error may pass (anything but Corruption and NotFound): the open would
  // write checkpoints and delete the ones the rebuild needs. Otherwise (and
  // for a map object that cannot be read) the open goes on and the cleaner
  // deletes nothing (CheckpointSet::PinAll), so the snapshot can be removed.
  Status LoadSnapshots() EXCLUDES(snap_mu_, mu_);
  // Loads the map of snapshot `rec` in log directory `dir` into *map (empty):
  // its map object, or rebuilt from the log if it has none yet.
  Status LoadSnapMap(const layout::LogDir& dir, const SnapshotRecord& rec, ExtentMap* map,
                     bool* materialized);
  // Writes `map` as the map object of snapshot `id` (every batch < stop_seq,
  // ending at `pos`) and pins the segments it needs.
  Status MaterializeSnap(uint64_t id, uint64_t stop_seq, LogPosition pos, const ExtentMap& map)
      EXCLUDES(mu_);
  bool SnapsToMaterializeLocked() const REQUIRES(mu_);
  // Writes the map objects of recorded pending snapshots. Returns false if
  // one failed.
  bool MaterializePendingLocked(Lock& l) REQUIRES(mu_);
  // The snapshot writer's thread (started by CreateSnapshot when none runs):
  // materializes until nothing is pending, retrying every second after a
  // failure, until the volume closes or fails. Not the flusher: a map
  // object of a big map takes a while to write, and flushes go on meanwhile.
  void SnapWriterLoop() EXCLUDES(mu_);
  // Waits until no snapshot is pending (after a failure: at most `wait`).
  Status AwaitMaterializedLocked() REQUIRES(mu_);
  void DropPendingLocked(uint64_t id) REQUIRES(mu_);
  std::string SnapLabel(const std::string& snap) const { return name_ + "@" + snap; }
  // The record of `snap` for an operation that changes it: InvalidArgument
  // for a bad name, NotSupported on a read-only open, NotFound.
  Result<const SnapshotRecord*> FindToChangeLocked(const std::string& snap) REQUIRES(snap_mu_);
  // Drops snapshot `id` (named `snap`) from the registry, unpins it and
  // deletes its map object; Busy, keeping it, if a clone of it appeared
  // while the registry was written.
  Status DropSnapshotLocked(uint64_t id, const std::string& snap) REQUIRES(snap_mu_)
      EXCLUDES(mu_);
  // PurgeTrash's work.
  Result<uint64_t> PurgeTrashLocked() REQUIRES(snap_mu_) EXCLUDES(mu_);

  // --- clones (volume_snapshot.cc) ---
  // Opens a reader of each parent's log (layers_), before recovery.
  Status OpenLayers();

  // --- reads ---
  // Reads run r from its segment: the volume's own, or a parent's (clone.h).
  Status ReadFromStore(const MapRun& r, uint64_t offset, std::span<uint8_t> out);
  // Read's work, once; a read-only volume retries it after a Refresh when
  // a segment it needed was gone.
  Status ReadOnce(uint64_t offset, std::span<uint8_t> out);
  // Read-only: the segment objects and their bytes, for Info.
  Status CountSegmentsLocked() REQUIRES(mu_);

  store::Store* const store_;
  const std::string name_;
  const VolumeMeta meta_;
  const OpenOptions opts_;
  // The log directory this open was made in. A writer never changes it; a
  // reader's current one is follower_->dir().
  const layout::LogDir dir_;
  std::atomic<uint64_t> epoch_;
  std::unique_ptr<store::Lock> lock_;
  const uint32_t seg_slots_;
  MemoryBudget* const budget_;

  // Serialises snapshot operations (create, remove, rename, rollback) and
  // guards the registry. Lock order: snap_mu_ -> write_mu_ -> mu_.
  Mutex snap_mu_ ACQUIRED_BEFORE(write_mu_);
  SnapRegistry registry_ GUARDED_BY(snap_mu_);
  std::string snap_;  // a snapshot view's snapshot (SetSnapshot), else empty
  uint64_t snap_id_ = 0;  // a snapshot view by id (SetSnapshot), else 0
  std::thread snap_writer_ GUARDED_BY(snap_mu_);
  Mutex write_mu_ ACQUIRED_BEFORE(mu_);        // serialises writers (RMW atomicity)
  mutable Mutex mu_;
  CondVar flusher_cv_;  // wakes the flusher
  CondVar done_cv_;     // durability / space / failure / checkpoint changes

  ExtentMap map_ GUARDED_BY(mu_);
  std::map<uint64_t, std::shared_ptr<MemSegment>> mem_segs_ GUARDED_BY(mu_);
  std::shared_ptr<MemSegment> cur_ GUARDED_BY(mu_);
  // Write-buffer bytes reserved in budget_ for the operation in progress
  // (Reserve), used as it grows the open segment; the rest is given back
  // when it ends.
  uint64_t op_reserved_ GUARDED_BY(mu_) = 0;
  std::chrono::steady_clock::time_point last_write_ GUARDED_BY(mu_){};
  SegmentSet segs_ GUARDED_BY(mu_);
  // What the open segment holds (SegregateLocked): client operations only
  // (0) or cleaner copies of that generation only (1 to
  // SegmentSet::kCopyGenerations). Either kind is stamped with the batch
  // clock as it fills (SegmentSet::NoteWritten).
  uint32_t open_gen_ GUARDED_BY(mu_) = 0;
  bool cleaner_behind_ GUARDED_BY(mu_) = false;  // see YieldToCleaner
  BatchBuilder batch_ GUARDED_BY(mu_);
  std::vector<MapRun> old_runs_ GUARDED_BY(mu_);  // scratch of ForgetBlocksLocked
  uint64_t next_seq_ GUARDED_BY(mu_) = 1;
  uint64_t last_sealed_seq_ GUARDED_BY(mu_) = 0;
  std::deque<QueueItem> queue_ GUARDED_BY(mu_);
  uint64_t flush_target_ GUARDED_BY(mu_) = 0;  // a Flush waits for batches <= this seq
  uint64_t durable_seq_ GUARDED_BY(mu_) = 0;   // batches <= this are synced
  uint64_t log_bytes_ GUARDED_BY(mu_) = 0;     // bytes in all segment files (as appended)
  uint64_t segment_files_ GUARDED_BY(mu_) = 0;  // segment objects in the store
  // When the flusher writes a checkpoint, and how the last ones went.
  CheckpointSchedule ckpt_sched_ GUARDED_BY(mu_);
  CleanStats clean_totals_ GUARDED_BY(mu_);
  bool cleaner_stop_ GUARDED_BY(mu_) = false;
  Status failed_ GUARDED_BY(mu_);  // set once the flusher failed
  // A full store (see the top): set while the log is stalled.
  Status no_space_ GUARDED_BY(mu_);
  uint64_t space_attempts_ GUARDED_BY(mu_) = 0;  // stalls + retries finished
  bool retry_now_ GUARDED_BY(mu_) = false;       // a retry is wanted now
  bool retry_in_progress_ GUARDED_BY(mu_) = false;  // its round is being written
  std::chrono::steady_clock::time_point next_retry_ GUARDED_BY(mu_){};
  std::chrono::steady_clock::time_point last_retry_ GUARDED_BY(mu_){};
  std::vector<uint64_t> abandoned_ GUARDED_BY(mu_);  // segment objects to delete
  // NoSpace re-logs begun so far (RelogAfterNoSpaceLocked). A re-log moves
  // what was not durable into a new segment, numbers the batches again and
  // deletes the old segments: a copy of the map taken before it (a snapshot
  // being created) points into segments that are gone.
  uint64_t relogs_ GUARDED_BY(mu_) = 0;
  std::vector<PendingSnap> pending_snaps_ GUARDED_BY(mu_);
  bool snap_write_failed_ GUARDED_BY(mu_) = false;  // the last map object write failed
  bool snap_writer_running_ GUARDED_BY(mu_) = false;
  bool stop_ GUARDED_BY(mu_) = false;
  bool closed_ GUARDED_BY(mu_) = false;
  bool started_ = false;  // set by Start before any other thread runs

  // Read-only opens: the map follows the log (log_follower.h); null otherwise.
  std::unique_ptr<LogFollower> follower_ GUARDED_BY(mu_);
  // A snapshot view: the log directory it reads now (it follows epochs).
  layout::LogDir view_dir_ GUARDED_BY(mu_);

  SpaceReserve reserve_;
  CheckpointSet ckpts_;
  SegmentCache cache_;
  // A clone's parents' logs, layers_[L-1] for layer L (clone.h); set before
  // any thread runs, then only read (each cache locks itself).
  std::vector<std::unique_ptr<SegmentCache>> layers_;
  ReadGate read_gate_;
  std::thread flusher_;

  // Flusher-owned (see the top): the store writer of the open segment, the
  // appended and durable positions, the batches not yet synced.
  LogWriter log_;

  Cleaner cleaner_;  // last: stopped (destroyed) before what it uses
};

// The write path as RelogBatches (relog.h) drives it: each call is the
// write path's under mu_, which the re-log's caller holds throughout (`l`
// is its lock).
class VolumeImpl::RelogPath final : public RelogSink {
 public:
  RelogPath(VolumeImpl* v, VolumeImpl::Lock& l) : v_(v), l_(l) {}

  void BeginOp() override REQUIRES(v_->mu_) { v_->batch_.BeginOp(); }
  void EndOp() override REQUIRES(v_->mu_) { v_->batch_.EndOp(); }
  Status Write(uint64_t lba, uint32_t n, const uint8_t* data, bool last_part) override
      REQUIRES(v_->mu_) {
    return v_->AppendWriteLocked(l_, lba, n, data, last_part);
  }
  Status Unmap(EntryType type, uint64_t lba, uint64_t n, bool last_part) override
      REQUIRES(v_->mu_) {
    return v_->AppendUnmapLocked(l_, type, lba, n, last_part);
  }
  void SealBatch() override REQUIRES(v_->mu_) { v_->SealBatchLocked(); }

 private:
  VolumeImpl* const v_;
  VolumeImpl::Lock& l_;
};

}  // namespace hbiss::volume
