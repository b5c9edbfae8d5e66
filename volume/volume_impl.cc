// The engine behind Volume; see volume_impl.h for the units and the locks,
// volume.h for the contract and doc/ for the formats.
#include "volume/volume_impl.h"

#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "util/thread.h"
#include "volume/clone.h"
#include "volume/epoch.h"
#include "volume/layout.h"
#include "volume/log_reader.h"
#include "volume/volume_testing.h"

namespace hbiss::volume {

namespace {

constexpr size_t kMaxInMemorySegments = 3;  // open + being closed
// Trims of huge, fragmented ranges forget blocks in slices of this many.
constexpr uint64_t kForgetSlice = 1 << 16;
// An idle volume's open segment is closed (its buffers freed) once it holds
// this much; under pressure whatever it holds. With the CRC vectors of the
// open segment, an idle volume then holds under 4 MiB besides its map.
constexpr uint64_t kIdleRollMinBytes = 3 << 20;
// How long a writer waits for write buffers between checks.
constexpr auto kReserveWait = std::chrono::milliseconds(100);

std::span<const uint8_t> AsBytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// volume_testing.h: the hooks, by kind.
enum class Hook { kCheckpointEncode, kSnapshotMapTaken, kCount };
Mutex g_hook_mu;
std::function<void()>* g_hooks[int(Hook::kCount)] GUARDED_BY(g_hook_mu) = {};

void RunHook(Hook h) {
  std::function<void()> hook;
  {
    MutexLock l(&g_hook_mu);
    if (g_hooks[int(h)] == nullptr) return;
    hook = *g_hooks[int(h)];
  }
  hook();
}

void SetHook(Hook h, std::function<void()> hook) {
  auto next = hook ? std::make_unique<std::function<void()>>(std::move(hook)) : nullptr;
  MutexLock l(&g_hook_mu);
  delete g_hooks[int(h)];
  g_hooks[int(h)] = next.release();
}

}  // namespace

void RunCheckpointEncodeHook() { RunHook(Hook::kCheckpointEncode); }
void RunSnapshotMapTakenHook() { RunHook(Hook::kSnapshotMapTaken); }

namespace testing {

void SetCheckpointEncodeHook(std::function<void()> hook) {
  SetHook(Hook::kCheckpointEncode, std::move(hook));
}
void SetSnapshotMapTakenHook(std::function<void()> hook) {
  SetHook(Hook::kSnapshotMapTaken, std::move(hook));
}

}  // namespace testing

// The volume blocks [first, last] that the byte range [offset, offset + len)
// touches, and which edge blocks it covers only in part (those need
// read-modify-write). REQUIRES: len > 0.
struct BlockSpan {
  uint64_t first = 0;
  uint64_t last = 0;
  bool head_partial = false;
  bool tail_partial = false;

  static BlockSpan Of(uint64_t offset, uint64_t len) {
    const uint64_t end = offset + len;
    BlockSpan b;
    b.first = offset / kBlockSize;
    b.last = (end - 1) / kBlockSize;
    b.head_partial = offset % kBlockSize != 0 || (b.first == b.last && end % kBlockSize != 0);
    b.tail_partial = b.last != b.first && end % kBlockSize != 0;
    return b;
  }
};

VolumeImpl::VolumeImpl(store::Store* store, std::string name, layout::LogDir dir, uint64_t epoch,
                       VolumeMeta meta, OpenOptions opts, std::unique_ptr<store::Lock> lock)
    : store_(store),
      name_(std::move(name)),
      meta_(meta),
      opts_(opts),
      dir_(std::move(dir)),
      epoch_(epoch),
      lock_(std::move(lock)),
      seg_slots_(uint32_t(meta.segment_size / kSlotSize)),
      budget_(&DefaultWriteBudget()),
      map_(meta.size / kBlockSize),
      segs_(seg_slots_),
      ckpt_sched_(opts.checkpoint_interval),
      reserve_(store, layout::ReserveName(name_), SpaceReserve::BytesFor(meta.segment_size),
               store->MayRunOutOfSpace() && !opts.read_only),
      // Not for a reader: the segment its writer still appends to grows, and
      // a cached chunk of it could be short (Refresh drops only the readers
      // and CRC tables of a grown segment).
      cache_(store, dir_, meta.id, seg_slots_,
             opts.cache_bytes > 0 && !store->CachesReadsLocally() && !opts.read_only
                 ? &DefaultReadCache()
                 : nullptr),
      log_(store, dir_, meta.id),
      cleaner_(this, name_, opts.read_only ? 0 : opts.clean_threshold) {}

VolumeImpl::~VolumeImpl() {
  Status s = Close();
  if (!s.ok() && s.code() != Status::Code::kAborted) {
    spdlog::warn("volume {}: close on destruction: {}", name_, s.ToString());
  }
}

Status VolumeImpl::CheckRange(uint64_t offset, uint64_t length) const {
  if (offset > meta_.size || length > meta_.size - offset) {
    return Status::InvalidArgument("range [" + std::to_string(offset) + ", +" +
                                   std::to_string(length) + ") is outside volume " + name_ +
                                   " of " + std::to_string(meta_.size) + " bytes");
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Open

Status VolumeImpl::Recover() {
  if (Status rs = reserve_.Ensure(); !rs.ok()) {
    // Open goes on: the reserve only matters on the next full device.
    spdlog::warn("volume {}: no space reserve: {}", name_, rs.ToString());
  }
  HBISS_RETURN_IF_ERROR(OpenLayers());
  if (!snap_.empty()) return RecoverSnapshotView();
  if (opts_.read_only) {
    // A reader follows the log, which another process may be writing.
    Lock l(&mu_);
    follower_ = std::make_unique<LogFollower>(store_, dir_, meta_, &map_);
    HBISS_RETURN_IF_ERROR(FollowLocked(/*load=*/true));
    if (follower_->checkpoint_seq() != 0) ckpts_.Init({follower_->checkpoint_seq()});
    return CountSegmentsLocked();
  }
  RecoveredLog rec;
  {
    Lock l(&mu_);  // nothing else runs yet; held for the analysis
    HBISS_RETURN_IF_ERROR(RecoverLog(store_, dir_, meta_, opts_.read_only, &map_, &rec));
  }
  ckpts_.Init(rec.ckpt_seqs);
  if (rec.found_checkpoint) ckpts_.NoteLoaded(rec.checkpoint);
  {
    Lock l(&mu_);
    log_bytes_ = rec.log_bytes;
    segment_files_ = rec.segment_files;
  }
  if (opts_.read_only) return Status::OK();
  {
    Lock l(&mu_);
    for (uint64_t id : rec.segment_ids) segs_.Add(id);
    for (const auto& [id, bytes] : rec.segment_bytes) {
      segs_.SetLength(id, uint32_t(std::min<uint64_t>(bytes / kSlotSize, seg_slots_)));
    }
    for (uint64_t id : rec.orphans) segs_.AddOrphan(id);
    segs_.Recount(map_);
    next_seq_ = rec.next_seq;
    last_sealed_seq_ = durable_seq_ = flush_target_ = rec.next_seq - 1;
    log_.Restart(rec.prev, rec.next_seq - 1);
    HBISS_ASSIGN_OR_RETURN(cur_, NewMemSegmentLocked(rec.new_segment_id, rec.prev.segment_id,
                                                     rec.prev.offset, rec.new_segment_flags));
  }
  if (!rec.relog.empty()) HBISS_RETURN_IF_ERROR(RelogTail(rec));
  return LoadSnapshots();
}

// Logs the operations of rec.relog again, into the new segment, up to the
// last complete one (RecoverLog cut the list there), one new batch per old
// one: they need no more slots than the old batches (same data, no more
// entries), so the re-log always fits in the new segment, which starts no
// later in its segment than the tail did.
Status VolumeImpl::RelogTail(const RecoveredLog& rec) {
  auto r = store_->Open(layout::SegName(dir_, rec.relog_segment));
  if (!r.ok()) return r.status().WithContext("volume " + name_ + ": reopening segment");
  std::vector<RelogBatch> batches;
  batches.reserve(rec.relog.size());
  for (const TailBatch& t : rec.relog) batches.push_back(RelogBatch::InStore(r->get(), t));
  // No other thread runs before Start(): the re-reads happen under mu_.
  Lock l(&mu_);
  RelogPath path(this, l);
  HBISS_ASSIGN_OR_RETURN(
      const size_t relogged,
      RelogBatches(batches, RelogUpTo::kLastCompleteOperation,
                   "volume " + name_ + " segment " + Hex16(rec.relog_segment), &path));
  if (relogged == 0) return Status::OK();
  spdlog::info("volume {}: logged {} entries again from the unproven tail of segment {}", name_,
               relogged, Hex16(rec.relog_segment));
  return PutRelogSegmentLocked(l);
}

// The re-log segment is written whole with the store's atomic, durable Put
// (PutRelogSegment), so a crash leaves it complete or absent, never a header
// with part of the re-logged batches (which would cut the tail off the
// chain: the operations a recovery had shown would be lost). Its batches say
// the whole segment is durable, so a later recovery never logs it again. The
// live log then goes on in a fresh segment after it.
Status VolumeImpl::PutRelogSegmentLocked(Lock& l) {
  std::shared_ptr<MemSegment> seg = cur_;
  if (batch_.active() || mem_segs_.size() != 1) {
    // RelogTail seals one batch per old one into a segment that starts no
    // later than the old one did, so this cannot happen; refuse rather than
    // write a re-log that is not atomic. (PutRelogSegment checks the queue.)
    return Status::Corruption("volume " + name_ + ": the re-log of the log's tail does not fit "
                              "one segment");
  }
  if (seg->id + 1 > kOwnSegMask) {
    return Status::NotSupported("volume " + name_ + ": segment ids exhausted");
  }
  std::deque<QueueItem> items;
  items.swap(queue_);
  // No other thread runs before Start(); the Put may take a while. (mu_
  // itself, not l: the analysis sees this function REQUIRES(mu_).)
  mu_.Unlock();
  auto put = PutRelogSegment(store_, dir_, meta_.id, seg.get(), &items);
  if (!put.ok() && ReleaseReserve(put.status())) {
    put = PutRelogSegment(store_, dir_, meta_.id, seg.get(), &items);
  }
  mu_.Lock();
  if (!put.ok()) {
    queue_.swap(items);
    return put.status();
  }
  const uint64_t end = *put;
  log_bytes_ += end;
  ckpt_sched_.AddLog(end);
  segment_files_++;
  log_.Restart(LogPosition{seg->id, end}, last_sealed_seq_);
  durable_seq_ = flush_target_ = last_sealed_seq_;
  cur_.reset();
  RetireSegmentLocked(seg);
  HBISS_ASSIGN_OR_RETURN(cur_, NewMemSegmentLocked(seg->id + 1, seg->id, end));
  return Status::OK();
}

Status VolumeImpl::Start() {
  if (opts_.read_only) return Status::OK();
  started_ = true;
  HBISS_ASSIGN_OR_RETURN(flusher_, StartThread("volume flusher", [this] { FlusherLoop(); }));
  cleaner_.Start();
  // Trashed snapshots whose last clone went while this volume was not open
  // (or whose purge a crash cut short): deleted now, by the owner.
  if (auto purged = PurgeTrash(); !purged.ok()) {
    spdlog::warn("volume {}: purging its trash: {}", name_, purged.status().ToString());
  } else if (*purged > 0) {
    spdlog::info("volume {}: deleted {} trashed snapshot(s) no clone uses any more", name_,
                 *purged);
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Write path

Status VolumeImpl::WritableLocked() const {
  HBISS_RETURN_IF_ERROR(UsableLocked());
  if (!no_space_.ok()) {
    return Status::NoSpace("volume " + name_ + ": the store is full: " + no_space_.message());
  }
  return Status::OK();
}

Status VolumeImpl::UsableLocked() const {
  if (closed_) return Status::Aborted("volume " + name_ + " is closed");
  if (opts_.read_only) return Status::NotSupported("volume " + name_ + " is open read-only");
  if (!failed_.ok()) {
    if (failed_.IsNoSpace()) {
      return Status::NoSpace("volume " + name_ + " failed earlier: " + failed_.message());
    }
    return Status::IOError("volume " + name_ + " failed earlier: " + failed_.message());
  }
  return Status::OK();
}

CheckpointInfo VolumeImpl::NextCheckpointInfoLocked() {
  if (segs_.needs_recount()) segs_.Recount(map_);
  CheckpointInfo ci;
  ci.volume_id = meta_.id;
  ci.seq = ckpts_.NextSeq();
  ci.position = SealedEndLocked();
  ci.next_seq = next_seq_;
  ci.volume_size = meta_.size;
  // Segments before the position's with no live block are left out: no run
  // of this checkpoint points into them and replay starts after them, so
  // once every kept checkpoint leaves a segment out it may be deleted.
  ci.segment_ids = segs_.NeededBy(ci.position.segment_id);
  return ci;
}

LogPosition VolumeImpl::SealedEndLocked() const {
  // REQUIRES: no open batch. A segment with no batches yet is equivalent to
  // the end of its predecessor (and may not exist in the store).
  if (cur_->used == 1) {
    SegmentHeader h = *DecodeSegmentHeader(std::span<const uint8_t>(cur_->Slot(0), kSlotSize));
    return {h.prev_segment_id, h.prev_segment_end};
  }
  return {cur_->id, uint64_t(cur_->used) * kSlotSize};
}

void VolumeImpl::SealBatchLocked() {
  if (!batch_.active()) return;
  SealedBatch b = batch_.Seal();
  last_sealed_seq_ = b.seq;
  const bool was_empty = queue_.empty();
  queue_.push_back(QueueItem::Sealed(cur_, std::move(b)));
  if (was_empty) flusher_cv_.Signal();
}

Status VolumeImpl::RollSegmentLocked(Lock& l) {
  SealBatchLocked();
  QueueItem marker;
  marker.seg = cur_;
  marker.end_of_segment = true;
  const bool was_empty = queue_.empty();
  queue_.push_back(std::move(marker));
  if (was_empty) flusher_cv_.Signal();
  // While the log is stalled for space the operation in progress completes
  // in memory: it is either refused before it starts or done whole.
  while (mem_segs_.size() >= kMaxInMemorySegments && failed_.ok() && no_space_.ok()) {
    done_cv_.Wait(&mu_);
  }
  HBISS_RETURN_IF_ERROR(UsableLocked());
  if (cur_->id + 1 > kOwnSegMask) {
    return Status::NoSpace("volume " + name_ + ": segment ids exhausted");
  }
  HBISS_ASSIGN_OR_RETURN(
      cur_, NewMemSegmentLocked(cur_->id + 1, cur_->id, uint64_t(cur_->used) * kSlotSize));
  return Status::OK();
}

Status VolumeImpl::SegregateLocked(Lock& l, uint32_t gen) {
  if (open_gen_ == gen) return Status::OK();
  if (cur_->used > 1) HBISS_RETURN_IF_ERROR(RollSegmentLocked(l));
  open_gen_ = gen;
  return Status::OK();
}

Status VolumeImpl::OpenBatchLocked(Lock& l) {
  if (batch_.active()) return Status::OK();
  if (cur_->used + 2 > cur_->slots) HBISS_RETURN_IF_ERROR(RollSegmentLocked(l));
  Status g = cur_->Grow(cur_->used + 1, &op_reserved_);
  if (!g.ok()) return FailLocked(g.WithContext("volume " + name_));
  batch_.Start(cur_->used++, next_seq_++);
  return Status::OK();
}

Status VolumeImpl::AckLocked(Status s) {
  if (!s.ok() || lock_ == nullptr) return s;
  if (!failed_.ok()) return UsableLocked();
  Status c = lock_->Check();
  if (c.ok()) return s;
  spdlog::error("volume {}: fenced itself: {}; no write is acknowledged from now on", name_,
                c.ToString());
  failed_ = Status::IOError("lost ownership: " + c.message());
  done_cv_.SignalAll();
  flusher_cv_.Signal();
  return UsableLocked();
}

Status VolumeImpl::Owned() const {
  if (opts_.read_only) return Status::OK();
  Lock l(&mu_);
  if (closed_) return Status::Aborted("volume " + name_ + " is closed");
  if (!failed_.ok()) return UsableLocked();
  if (lock_ != nullptr) {
    Status c = lock_->Check();
    if (!c.ok()) return Status::IOError("volume " + name_ + ": lost ownership: " + c.message());
  }
  return Status::OK();
}

Status VolumeImpl::FailLocked(Status s) {
  spdlog::error("volume {}: the write path failed, volume is now failed: {}", name_,
                s.ToString());
  if (failed_.ok()) failed_ = s;
  segs_.MarkDrifted();
  done_cv_.SignalAll();
  flusher_cv_.Signal();
  return s;
}

Status VolumeImpl::MapSetLocked(uint64_t lba, uint64_t n, uint32_t seg, uint32_t slot) {
  return map_.Set(lba, n, seg, slot).WithContext("volume " + name_ + ": extent map");
}

Status VolumeImpl::MapClearLocked(uint64_t lba, uint64_t n) {
  return map_.Clear(lba, n).WithContext("volume " + name_ + ": extent map");
}

Status VolumeImpl::AppendWriteLocked(Lock& l, uint64_t lba, uint64_t n, const uint8_t* src,
                                     bool last_part) {
  while (n > 0) {
    HBISS_RETURN_IF_ERROR(OpenBatchLocked(l));
    const uint32_t k = batch_.WriteRoom(lba, n, last_part, cur_->slots - cur_->used);
    if (k == 0) {
      SealBatchLocked();
      continue;
    }
    const uint32_t slot = cur_->used;
    Status s = cur_->Grow(slot + k, &op_reserved_);
    if (s.ok()) s = ForgetBlocksLocked(lba, k);
    if (s.ok()) s = MapSetLocked(lba, k, uint32_t(cur_->id), slot);
    if (s.ok()) s = batch_.AddWrite(lba, k, last_part && k == n);
    if (!s.ok()) return FailLocked(s);
    cur_->CopyIn(slot, src, k);
    segs_.AddLive(cur_->id, k);
    segs_.NoteWritten(cur_->id, next_seq_);
    segs_.SetGeneration(cur_->id, open_gen_);
    cur_->used += k;
    n -= k;
    lba += k;
    src += size_t(k) * kSlotSize;
  }
  return Status::OK();
}

Status VolumeImpl::AppendUnmapLocked(Lock& l, EntryType type, uint64_t lba, uint64_t n,
                                     bool last_part) {
  while (n > 0) {
    HBISS_RETURN_IF_ERROR(OpenBatchLocked(l));
    const uint64_t k = batch_.UnmapRoom(type, lba, n, last_part);
    if (k == 0) {
      SealBatchLocked();
      continue;
    }
    Status s = ForgetBlocksLocked(lba, k);
    if (s.ok()) s = MapClearLocked(lba, k);
    if (s.ok()) s = batch_.AddUnmap(type, lba, k, last_part && k == n);
    if (!s.ok()) return FailLocked(s);
    n -= k;
    lba += k;
  }
  return Status::OK();
}

Status VolumeImpl::ForgetBlocksLocked(uint64_t lba, uint64_t n) {
  while (n > 0) {
    const uint64_t k = std::min(n, kForgetSlice);
    HBISS_RETURN_IF_ERROR(map_.Lookup(lba, k, &old_runs_));
    segs_.Forget(old_runs_, [&](uint64_t seg) NO_THREAD_SAFETY_ANALYSIS {
      return !InMemoryLocked(seg);
    });
    lba += k;
    n -= k;
  }
  return Status::OK();
}

Result<std::shared_ptr<MemSegment>> VolumeImpl::NewMemSegmentLocked(uint64_t id, uint64_t prev_id,
                                                                     uint64_t prev_end,
                                                                     uint32_t flags) {
  SegmentHeader h;
  h.volume_id = meta_.id;
  h.segment_id = id;
  h.prev_segment_id = prev_id;
  h.prev_segment_end = prev_end;
  h.first_seq = next_seq_;
  h.flags = flags;
  auto s = MemSegment::New(budget_, seg_slots_, h);
  mem_segs_[id] = s;
  segs_.Add(id);
  return s;
}

void VolumeImpl::RetireSegmentLocked(const std::shared_ptr<MemSegment>& seg) {
  // The table is cached before the segment leaves memory, so no read finds
  // neither.
  auto table = std::make_shared<CrcTable>();
  table->crcs = seg->crcs;
  table->valid = seg->valid;
  cache_.Insert(seg->id, std::move(table));
  mem_segs_.erase(seg->id);
  segs_.SetLength(seg->id, seg->used);
  if (segs_.live(seg->id) == 0) segs_.NoteDead(seg->id);
  // The log grew: with a space target, the cleaner may be due.
  if (opts_.clean_space_target > 0) cleaner_.Wake();
  // Its buffers go back to the budget when the last reference goes (the
  // flusher may still hold one for its summary).
}

Status VolumeImpl::ReadEdges(const BlockSpan& b, uint8_t* head, uint8_t* tail) {
  if (b.head_partial) {
    HBISS_RETURN_IF_ERROR(Read(b.first * kBlockSize, std::span<uint8_t>(head, kBlockSize)));
  }
  if (b.tail_partial) {
    HBISS_RETURN_IF_ERROR(Read(b.last * kBlockSize, std::span<uint8_t>(tail, kBlockSize)));
  }
  return Status::OK();
}

template <typename MiddleFn>
Status VolumeImpl::AppendOpLocked(Lock& l, const BlockSpan& b, const uint8_t* head,
                                  const uint8_t* tail, const MiddleFn& middle) {
  // The operation's reservation goes back however it ends (a refused
  // operation must not keep buffers: the budget is shared by every volume).
  struct GiveBack {
    VolumeImpl* v;
    ~GiveBack() NO_THREAD_SAFETY_ANALYSIS { v->GiveBackReserveLocked(); }
  } give_back{this};
  HBISS_RETURN_IF_ERROR(AwaitSpaceLocked());
  HBISS_RETURN_IF_ERROR(WritableLocked());
  HBISS_RETURN_IF_ERROR(AckLocked(Status::OK()));  // nothing is logged after a fence
  HBISS_RETURN_IF_ERROR(SegregateLocked(l, /*gen=*/0));
  batch_.BeginOp();
  last_write_ = std::chrono::steady_clock::now();
  Status s;
  const uint64_t mid_first = b.head_partial ? b.first + 1 : b.first;
  const uint64_t mid_last = b.tail_partial ? b.last : b.last + 1;  // exclusive
  if (b.head_partial) s = AppendWriteLocked(l, b.first, 1, head, b.first == b.last);
  if (s.ok() && mid_last > mid_first) s = middle(mid_first, mid_last - mid_first, !b.tail_partial);
  if (s.ok() && b.tail_partial) s = AppendWriteLocked(l, b.last, 1, tail, true);
  batch_.EndOp();
  return s;
}

Status VolumeImpl::Write(uint64_t offset, std::span<const uint8_t> data) {
  HBISS_RETURN_IF_ERROR(CheckRange(offset, data.size()));
  if (data.empty()) return Status::OK();
  YieldToCleaner();
  Lock wl(&write_mu_);
  const uint64_t end = offset + data.size();
  if (offset % kBlockSize != 0 || end % kBlockSize != 0) {
    Lock l(&mu_);
    HBISS_RETURN_IF_ERROR(AwaitSpaceLocked());
    HBISS_RETURN_IF_ERROR(WritableLocked());
  }
  const BlockSpan b = BlockSpan::Of(offset, data.size());
  // Edge blocks that are only partly written: read-modify-write.
  alignas(64) static thread_local uint8_t head[kBlockSize];
  alignas(64) static thread_local uint8_t tail[kBlockSize];
  HBISS_RETURN_IF_ERROR(ReadEdges(b, head, tail));
  if (b.head_partial) {
    const size_t in = offset % kBlockSize;
    std::memcpy(head + in, data.data(), std::min<uint64_t>(data.size(), kBlockSize - in));
  }
  if (b.tail_partial) {
    std::memcpy(tail, data.data() + (b.last * kBlockSize - offset), end % kBlockSize);
  }
  const uint64_t reserved = Reserve(b.last - b.first + 1);
  Lock l(&mu_);
  op_reserved_ += reserved;
  return AckLocked(
      AppendOpLocked(l, b, head, tail,
                     [&](uint64_t lba, uint64_t n, bool last_part) NO_THREAD_SAFETY_ANALYSIS {
                       const uint8_t* src = data.data() + (lba * kBlockSize - offset);
                       return AppendWriteLocked(l, lba, n, src, last_part);
                     }));
}

Status VolumeImpl::Unmap(uint64_t offset, uint64_t length, EntryType type) {
  HBISS_RETURN_IF_ERROR(CheckRange(offset, length));
  if (length == 0) return Status::OK();
  YieldToCleaner();
  Lock wl(&write_mu_);
  {
    Lock l(&mu_);
    HBISS_RETURN_IF_ERROR(AwaitSpaceLocked());
    HBISS_RETURN_IF_ERROR(WritableLocked());
  }
  const uint64_t end = offset + length;
  BlockSpan b = BlockSpan::Of(offset, length);
  alignas(64) static thread_local uint8_t head[kBlockSize];
  alignas(64) static thread_local uint8_t tail[kBlockSize];
  HBISS_RETURN_IF_ERROR(ReadEdges(b, head, tail));
  if (b.head_partial) {
    const size_t in = offset % kBlockSize;
    std::memset(head + in, 0, std::min<uint64_t>(length, kBlockSize - in));
  }
  if (b.tail_partial) std::memset(tail, 0, end % kBlockSize);
  // An edge block that is all zeros afterwards is unmapped whole instead of
  // written, so unmapping never allocates space for zeros.
  auto all_zero = [](const uint8_t* p) {
    for (size_t i = 0; i < kBlockSize; i++) {
      if (p[i] != 0) return false;
    }
    return true;
  };
  if (b.head_partial && all_zero(head)) b.head_partial = false;
  if (b.tail_partial && all_zero(tail)) b.tail_partial = false;
  const uint64_t reserved = Reserve(2);  // edge blocks and a batch header
  Lock l(&mu_);
  op_reserved_ += reserved;
  return AckLocked(
      AppendOpLocked(l, b, head, tail,
                     [&](uint64_t lba, uint64_t n, bool last_part) NO_THREAD_SAFETY_ANALYSIS {
                       return AppendUnmapLocked(l, type, lba, n, last_part);
                     }));
}

uint64_t VolumeImpl::Reserve(uint64_t blocks) {
  // Data slots, a header per batch, and a chunk of slack: the chunks the
  // operation can make the open segment (or the next one) allocate.
  const uint64_t slots = blocks + blocks / kMaxBatchDataSlots + 2;
  uint64_t bytes = (slots * kSlotSize + MemoryBudget::kChunkBytes - 1) /
                       MemoryBudget::kChunkBytes * MemoryBudget::kChunkBytes +
                   MemoryBudget::kChunkBytes;
  // A writer never asks for more than half the buffers (long writes take the
  // rest as they go, forced), so that it can always be given what it asks.
  bytes = std::min(bytes, std::max<uint64_t>(budget_->capacity() / 2, MemoryBudget::kChunkBytes));
  while (!budget_->Acquire(bytes, kReserveWait)) {
    // Waiting: the flushers of idle volumes close their open segments and
    // give buffers back (memory_budget.h). Stop waiting if this volume can
    // no longer write; the operation then fails.
    Lock l(&mu_);
    // A closing volume (its cleaner is told to stop first) goes on without
    // a reservation: what it still writes is forced, and small.
    if (closed_ || cleaner_stop_ || stop_ || !failed_.ok()) return 0;
    flusher_cv_.Signal();
  }
  return bytes;
}

void VolumeImpl::GiveBackReserveLocked() {
  if (op_reserved_ > 0) budget_->Release(op_reserved_);
  op_reserved_ = 0;
}

bool VolumeImpl::IdleRollDueLocked(std::chrono::steady_clock::time_point now) const {
  if (!cur_ || cur_->used <= 1 || batch_.op_in_progress() || !failed_.ok() || stop_ ||
      mem_segs_.size() >= kMaxInMemorySegments || cur_->id + 1 > kOwnSegMask) {
    return false;
  }
  const bool pressure = budget_->waiters() > 0;
  if (!pressure && cur_->charged < kIdleRollMinBytes) return false;
  return now - last_write_ >= (pressure ? std::chrono::steady_clock::duration(kIdleRollUnderPressure)
                                        : std::chrono::steady_clock::duration(kIdleRoll));
}

void VolumeImpl::RollIdleLocked() {
  SealBatchLocked();
  QueueItem marker;
  marker.seg = cur_;
  marker.end_of_segment = true;
  queue_.push_back(std::move(marker));
  auto next = NewMemSegmentLocked(cur_->id + 1, cur_->id, uint64_t(cur_->used) * kSlotSize);
  if (!next.ok()) {
    (void)FailLocked(next.status());
    return;
  }
  cur_ = std::move(*next);
}

Status VolumeImpl::Flush() {
  Lock l(&mu_);
  if (closed_) return Status::Aborted("volume " + name_ + " is closed");
  if (opts_.read_only) return Status::OK();
  if (!failed_.ok()) return WritableLocked();
  HBISS_RETURN_IF_ERROR(AwaitSpaceLocked());
  HBISS_RETURN_IF_ERROR(AckLocked(Status::OK()));
  const uint64_t target = batch_.active() ? batch_.seq() : last_sealed_seq_;
  if (target <= durable_seq_) return Status::OK();
  if (target > flush_target_) {
    flush_target_ = target;
    flusher_cv_.Signal();
  }
  // A stall wakes this with NoSpace: the log is numbered again on retry.
  while (durable_seq_ < target && failed_.ok() && no_space_.ok()) done_cv_.Wait(&mu_);
  if (durable_seq_ >= target) return AckLocked(Status::OK());
  return WritableLocked();
}

// ---------------------------------------------------------------------------
// Flusher

void VolumeImpl::PutSummary(const MemSegment& seg, uint64_t bytes) {
  SegmentSummary sum;
  sum.volume_id = meta_.id;
  sum.segment_id = seg.id;
  sum.segment_bytes = bytes;
  const uint64_t n = bytes / kSlotSize;
  {
    Lock l(&mu_);
    sum.crcs.assign(seg.crcs.begin(), seg.crcs.begin() + n);
    sum.valid.assign(seg.valid.begin(), seg.valid.begin() + n);
  }
  Status s = store_->Put(layout::SumName(dir_, seg.id), AsBytes(EncodeSegmentSummary(sum)));
  if (!s.ok()) spdlog::warn("volume {}: segment summary: {}", name_, s.ToString());
}

Status VolumeImpl::WriteCheckpoint(const std::string& data, const CheckpointInfo& ci) {
  Status ps = store_->Put(layout::CkptName(dir_, ci.seq), AsBytes(data));
  if (ReleaseReserve(ps)) ps = store_->Put(layout::CkptName(dir_, ci.seq), AsBytes(data));
  HBISS_RETURN_IF_ERROR(ps.WithContext("volume " + name_ + ": writing checkpoint"));
  // Keep the newest two. The others stay counted as kept until they are gone
  // from the store, so the cleaner never deletes a segment one of them names.
  for (uint64_t o : ckpts_.Added(ci)) {
    Status s = store_->Delete(layout::CkptName(dir_, o));
    if (!s.ok() && !s.IsNotFound()) {
      spdlog::warn("volume {}: deleting old checkpoint: {}", name_, s.ToString());
      continue;
    }
    ckpts_.Removed(o);
  }
  return Status::OK();
}

Status VolumeImpl::AppendWork(std::deque<QueueItem>* work,
                              std::vector<std::shared_ptr<MemSegment>>* closed,
                              std::deque<QueueItem>* redo) {
  Status s;
  for (size_t i = 0; i < work->size(); i++) {
    QueueItem& item = (*work)[i];
    if (item.end_of_segment) {
      s = log_.EndSegment(item.seg.get());
      if (s.ok()) closed->push_back(item.seg);
    } else {
      s = log_.Append(item);
    }
    if (!s.ok()) {
      if (s.IsNoSpace()) {
        redo->assign(std::make_move_iterator(work->begin() + i),
                     std::make_move_iterator(work->end()));
      }
      break;
    }
  }
  work->clear();
  return s;
}

void VolumeImpl::BeginCheckpointLocked(PendingCheckpoint* c) {
  // A checkpoint needs the map to match a batch boundary that is not in the
  // middle of an operation.
  // None while a snapshot's map object is not written: the log since the
  // newest checkpoint is what its map would be rebuilt from after a crash.
  if (!pending_snaps_.empty()) return;
  if (!ckpt_sched_.TryBegin(stop_, batch_.op_in_progress(), batch_.active())) return;
  c->wanted = true;
  c->info = NextCheckpointInfoLocked();
  // The checkpoint is encoded from a copy-on-write snapshot of the map,
  // outside mu_, so reads and writes go on meanwhile (a big map takes a
  // second to encode). Without memory for a snapshot, encode in place.
  auto snap = map_.Snapshot();
  if (snap.ok()) {
    c->snapshot = std::move(*snap);
    return;
  }
  spdlog::warn("volume {}: encoding the checkpoint under the lock: {}", name_,
               snap.status().ToString());
  const auto t0 = std::chrono::steady_clock::now();
  RunCheckpointEncodeHook();
  c->data = EncodeCheckpoint(c->info, map_);
  c->encode_time = std::chrono::steady_clock::now() - t0;
}

void VolumeImpl::EncodeCheckpointSnapshot(PendingCheckpoint* c) {
  if (!c->snapshot) return;
  const auto t0 = std::chrono::steady_clock::now();
  RunCheckpointEncodeHook();
  c->data = EncodeCheckpoint(c->info, *c->snapshot);
  c->snapshot.reset();
  c->encode_time = std::chrono::steady_clock::now() - t0;
}

void VolumeImpl::FinishCheckpointLocked(PendingCheckpoint* c) {
  // Flush callers were released before this; a failed checkpoint loses
  // nothing (the log has it all), so it is retried after the next interval.
  // (mu_ itself: the analysis sees this function REQUIRES(mu_).)
  mu_.Unlock();
  const auto t0 = std::chrono::steady_clock::now();
  Status cs = WriteCheckpoint(c->data, c->info);
  const auto write_time = std::chrono::steady_clock::now() - t0;
  mu_.Lock();
  ckpt_sched_.Finished(cs, c->encode_time, write_time, c->data.size());
  if (!cs.ok()) spdlog::warn("volume {}: periodic checkpoint: {}", name_, cs.ToString());
  done_cv_.SignalAll();
  cleaner_.Wake();  // segments may have become deletable
}

void VolumeImpl::FlusherLoop() {
  Lock l(&mu_);
  std::deque<QueueItem> work;
  std::deque<QueueItem> redo;  // the items of `work` a NoSpace left unwritten
  for (;;) {
    bool retrying = false;
    if (!no_space_.ok() && failed_.ok()) {
      const RetryStep step = PrepareRetryLocked(l);
      if (step == RetryStep::kStop) break;
      if (step == RetryStep::kWait) continue;
      retrying = true;
    }
    if (!abandoned_.empty()) DropAbandonedSegments(l);
    // Wait for work: sealed batches, a flush, dead segments, a checkpoint.
    while (!stop_ && queue_.empty() && flush_target_ <= durable_seq_ && !segs_.has_dead() &&
           (!ckpt_sched_.Due(stop_) || !pending_snaps_.empty())) {
      const auto now = std::chrono::steady_clock::now();
      if (IdleRollDueLocked(now)) {
        RollIdleLocked();
        continue;
      }
      flusher_cv_.WaitFor(&mu_, budget_->waiters() > 0
                                    ? std::chrono::milliseconds(kIdleRollUnderPressure)
                                    : std::chrono::milliseconds(500));
    }
    (void)AckLocked(Status::OK());  // a fenced owner writes no more
    if (!failed_.ok()) {
      // Nothing more can be made durable; wake everyone and wait for stop.
      queue_.clear();
      done_cv_.SignalAll();
      while (!stop_) flusher_cv_.Wait(&mu_);
      break;
    }
    if (stop_ && queue_.empty() && flush_target_ <= durable_seq_ && !segs_.has_dead()) break;

    // Take the queue: the open batch too when a flush or a checkpoint wants it.
    if ((flush_target_ > last_sealed_seq_ || ckpt_sched_.Due(stop_)) &&
        !batch_.op_in_progress()) {
      SealBatchLocked();
    }
    PendingCheckpoint ckpt;
    BeginCheckpointLocked(&ckpt);
    work.swap(queue_);
    std::vector<uint64_t> dead = segs_.TakeDead();
    const uint64_t sync_target = std::max(flush_target_, ckpt.wanted ? last_sealed_seq_ : 0);
    const uint64_t durable_before = durable_seq_;
    l.Unlock();

    // Append, then one sync for every batch appended (group commit).
    EncodeCheckpointSnapshot(&ckpt);
    std::vector<std::shared_ptr<MemSegment>> closed;
    Status s = AppendWork(&work, &closed, &redo);
    // Closed segments are synced, so their cached bytes may go: the pages
    // then serve new log instead of data nobody reads.
    for (uint64_t id : dead) store_->DropCache(layout::SegName(dir_, id));
    bool synced = false;
    if (s.ok() && sync_target > durable_before && log_.open()) {
      s = log_.Sync();
      synced = s.ok();
    }
    l.Lock();
    // What the round put in the store counts from now on (Info, the
    // checkpoint interval), failed or not; before any segment it wrote is
    // retired, so none is deleted before its bytes were counted.
    const LogWriter::Appended appended = log_.TakeAppended();
    segment_files_ += appended.segment_files;
    log_bytes_ += appended.bytes;
    ckpt_sched_.AddLog(appended.bytes);
    if (s.IsNoSpace() && failed_.ok()) {
      StallLocked(s, &redo, &closed, ckpt.wanted);
      continue;
    }
    if (!s.ok()) {
      spdlog::error("volume {}: log write failed, volume is now failed: {}", name_, s.ToString());
      failed_ = s;
      done_cv_.SignalAll();
      continue;
    }
    // Everything appended is durable after a Sync; segments that were closed
    // are durable too (Close syncs). With a segment still open and not
    // synced, the log writer's durable position marks the end of the last
    // closed one only.
    if (synced || (!log_.open() && !closed.empty())) {
      durable_seq_ = std::max(durable_seq_, log_.appended_seq());
    }
    // Retire the closed segments: reads go to the store from now on.
    for (auto& seg : closed) {
      RetireSegmentLocked(seg);
      if (seg->closed_bytes > 0) segs_.SetSummarizing(seg->id, true);  // not deleted before its Put
    }
    if (retrying) {  // the re-logged batches are written and synced
      spdlog::info("volume {}: space is back; the log goes on", name_);
      no_space_ = Status::OK();
      retry_in_progress_ = false;
      space_attempts_++;
    }
    done_cv_.SignalAll();
    // The checkpoint, once the log up to its position is durable.
    if (ckpt.wanted) FinishCheckpointLocked(&ckpt);
    // Summaries last too: nobody waits for them (on HDFS a Put takes a while).
    l.Unlock();
    for (auto& seg : closed) {
      if (seg->closed_bytes > 0) PutSummary(*seg, seg->closed_bytes);
    }
    if (reserve_.enabled() && !reserve_.held()) reserve_.MaybeRestore();
    l.Lock();
    for (auto& seg : closed) segs_.SetSummarizing(seg->id, false);
  }
  done_cv_.SignalAll();
}

// ---------------------------------------------------------------------------
// Reads

Status VolumeImpl::ReadFromStore(const MapRun& r, uint64_t offset, std::span<uint8_t> out) {
  const uint32_t layer = LayerOf(r.seg);
  if (layer == 0) return cache_.ReadRun(r, offset, out);
  if (layer > layers_.size()) {
    return Status::Corruption("volume " + name_ + ": the map points into layer " +
                              std::to_string(layer) + ", beyond its " +
                              std::to_string(layers_.size()) + " parents");
  }
  MapRun own = r;
  own.seg = BaseSeg(r.seg);
  SegmentCache& c = *layers_[layer - 1];
  Status s = c.ReadRun(own, offset, out);
  if (!s.IsNotFound()) return s;
  // The parent's log moved to a new epoch (a writable open of it).
  HBISS_ASSIGN_OR_RETURN(CurrentLog cur, ResolveLog(store_, meta_.parents[layer - 1].volume));
  c.SetDir(cur.dir);
  return c.ReadRun(own, offset, out);
}

Status VolumeImpl::CountSegmentsLocked() {
  HBISS_ASSIGN_OR_RETURN(auto segs, ListIds(store_, layout::SegDir(follower_ ? follower_->dir() : dir_)));
  segment_files_ = segs.size();
  log_bytes_ = 0;
  for (auto& [id, bytes] : segs) log_bytes_ += bytes;
  return Status::OK();
}

Status VolumeImpl::Refresh() {
  Lock l(&mu_);
  if (closed_) return Status::Aborted("volume " + name_ + " is closed");
  if (!snap_.empty()) {
    // A snapshot's map never changes; its segments may have moved to a new
    // epoch's directory.
    HBISS_ASSIGN_OR_RETURN(CurrentLog cur, ResolveLog(store_, name_));
    if (cur.dir != view_dir_) {
      view_dir_ = cur.dir;
      cache_.SetDir(cur.dir);
      epoch_.store(cur.epoch, std::memory_order_relaxed);
    }
    return Status::OK();
  }
  if (!follower_) return Status::OK();
  const LogPosition before = follower_->end();
  const uint64_t loads = follower_->loads();
  HBISS_RETURN_IF_ERROR(FollowLocked(/*load=*/false));
  // The segment where the last replay stopped may have grown since its CRC
  // table and reader were cached (it was the writer's open segment); after
  // a new load anything cached may belong to a log cut since.
  if (follower_->loads() != loads) {
    cache_.DropAll();
  } else if (follower_->end() != before && before.segment_id != 0) {
    cache_.Drop(before.segment_id);
  }
  if (follower_->checkpoint_seq() != 0) ckpts_.Init({follower_->checkpoint_seq()});
  return CountSegmentsLocked();
}

Status VolumeImpl::FollowLocked(bool load) {
  HBISS_RETURN_IF_ERROR(FollowEpochLocked().status());
  for (int attempt = 0;; attempt++) {
    // A segment gone under the replay (NotFound) may have been renamed too.
    Status s = load ? follower_->Load() : follower_->CatchUp();
    if (!s.ok() && !s.IsNotFound()) return s;
    HBISS_ASSIGN_OR_RETURN(const bool moved, FollowEpochLocked());
    if (!moved) return s;
    if (attempt == 9) {
      return Status::IOError("volume " + name_ + ": the log moved to a new epoch " +
                             "during every replay");
    }
  }
}

Result<bool> VolumeImpl::FollowEpochLocked() {
  HBISS_ASSIGN_OR_RETURN(CurrentLog cur, ResolveLog(store_, name_));
  if (cur.dir == follower_->dir()) return false;
  // A new owner renamed the log (doc/ownership.md): the same segments, under
  // new names. What is cached stays valid (readers are held by inode).
  spdlog::debug("volume {}: following the log into epoch {}", name_, cur.epoch);
  follower_->SetDir(cur.dir);
  cache_.SetDir(cur.dir);
  epoch_.store(cur.epoch, std::memory_order_relaxed);
  return true;
}

Status VolumeImpl::Read(uint64_t offset, std::span<uint8_t> out) {
  Status s = ReadOnce(offset, out);
  // A reader: the writer's cleaner deleted a segment this map still names.
  // Catch up (the blocks were copied elsewhere first) and read again.
  for (int i = 0; i < 3 && s.IsNotFound() && opts_.read_only; i++) {
    HBISS_RETURN_IF_ERROR(Refresh());
    s = ReadOnce(offset, out);
  }
  return s;
}

Status VolumeImpl::ReadOnce(uint64_t offset, std::span<uint8_t> out) {
  HBISS_RETURN_IF_ERROR(CheckRange(offset, out.size()));
  if (out.empty()) return Status::OK();
  const uint64_t end = offset + out.size();
  const uint64_t first = offset / kBlockSize;
  const uint64_t last = (end - 1) / kBlockSize;
  ReadGate::Pass pass(read_gate_);  // the locations looked up stay readable
  static thread_local std::vector<MapRun> runs;
  static thread_local std::vector<MapRun> from_store;
  from_store.clear();
  {
    Lock l(&mu_);
    if (closed_) return Status::Aborted("volume " + name_ + " is closed");
    HBISS_RETURN_IF_ERROR(map_.Lookup(first, last - first + 1, &runs));
    for (const MapRun& r : runs) {
      const uint64_t bs = std::max(r.lba * kBlockSize, offset);
      const uint64_t be = std::min((r.lba + r.count) * kBlockSize, end);
      uint8_t* dst = out.data() + (bs - offset);
      if (!r.mapped) {
        std::memset(dst, 0, be - bs);
        continue;
      }
      auto it = mem_segs_.find(r.seg);
      if (it != mem_segs_.end()) {
        it->second->CopyOut(uint32_t(r.slot), bs - r.lba * kBlockSize, dst, be - bs);
      } else {
        from_store.push_back(r);
      }
    }
  }
  for (const MapRun& r : from_store) {
    // Split long runs so the scratch buffer for unaligned reads stays small.
    MapRun piece = r;
    while (piece.count > 0) {
      MapRun p = piece;
      p.count = std::min<uint64_t>(piece.count, SegmentCache::kMaxRunBlocks);
      HBISS_RETURN_IF_ERROR(ReadFromStore(p, offset, out));
      piece.lba += p.count;
      piece.slot += uint32_t(p.count);
      piece.count -= p.count;
    }
  }
  return Status::OK();
}

Result<std::vector<Extent>> VolumeImpl::BlockStatus(uint64_t offset, uint64_t length) {
  HBISS_RETURN_IF_ERROR(CheckRange(offset, length));
  std::vector<Extent> out;
  if (length == 0) return out;
  const uint64_t end = offset + length;
  std::vector<MapRun> runs;
  {
    Lock l(&mu_);
    if (closed_) return Status::Aborted("volume " + name_ + " is closed");
    HBISS_RETURN_IF_ERROR(
        map_.Lookup(offset / kBlockSize, (end - 1) / kBlockSize - offset / kBlockSize + 1, &runs));
  }
  for (const MapRun& r : runs) {
    const uint64_t bs = std::max(r.lba * kBlockSize, offset);
    const uint64_t be = std::min((r.lba + r.count) * kBlockSize, end);
    if (!out.empty() && out.back().allocated == r.mapped) {
      out.back().length += be - bs;
    } else {
      out.push_back(Extent{bs, be - bs, r.mapped});
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Cleaner

Result<std::vector<MapRun>> VolumeImpl::LiveRuns(uint64_t seg, bool* complete) {
  // Where the segment's batches put each written block; the map decides
  // which of those are still the block's current copy.
  struct Written {
    uint64_t lba;
    uint32_t count;
    uint32_t slot;
  };
  std::vector<Written> written;
  HBISS_ASSIGN_OR_RETURN(ScanEnd scan, cache_.Scan(seg, [&](uint64_t off, const BatchHeader& h) {
    uint32_t slot = uint32_t(off / kSlotSize) + 1;
    for (const BatchEntry& e : h.entries) {
      if (e.type != EntryType::kWrite) continue;
      written.push_back(Written{e.lba, e.count, slot});
      slot += e.count;
    }
  }));
  std::vector<MapRun> live;
  std::vector<MapRun> runs;
  Lock l(&mu_);
  uint64_t found = 0;
  for (const Written& w : written) {
    if (w.lba >= map_.blocks() || w.count > map_.blocks() - w.lba) continue;
    HBISS_RETURN_IF_ERROR(map_.Lookup(w.lba, w.count, &runs));
    for (const MapRun& r : runs) {
      if (r.mapped && r.seg == seg && r.slot == w.slot + (r.lba - w.lba)) {
        live.push_back(r);
        found += r.count;
      }
    }
  }
  // A damaged batch header hides the blocks after it: the scan then finds
  // fewer live blocks than the map has in the segment. (Stopping before the
  // object's end is not damage by itself: a segment whose torn tail the
  // next segment cut off ends in garbage.)
  (void)scan;
  *complete = found >= segs_.live(seg);
  return live;
}

uint64_t VolumeImpl::PickVictim(double threshold, uint64_t below) {
  Lock l(&mu_);
  if (below == 0) below = cur_->id;
  // A segment a snapshot needs stays whole: copying its live blocks out
  // would not let it be deleted.
  return segs_.PickVictim(
      threshold, below,
      [&](uint64_t s) NO_THREAD_SAFETY_ANALYSIS { return InMemoryLocked(s) || ckpts_.Pinned(s); },
      opts_.clean_policy, next_seq_);
}

Status VolumeImpl::ReadRun(const MapRun& r, std::span<uint8_t> out) {
  ReadGate::Pass pass(read_gate_);
  return ReadFromStore(r, r.lba * kBlockSize, out);
}

Result<uint64_t> VolumeImpl::CopyStillLive(std::span<const MapRun> pieces,
                                           const uint8_t* buf) {
  Lock wl(&write_mu_);  // held throughout: no client write comes between the pieces
  uint64_t moved = 0;
  for (const MapRun& p : pieces) {
    const uint8_t* data = buf;
    buf += p.count * kBlockSize;
    const uint64_t reserved = Reserve(p.count);
    Lock l(&mu_);
    op_reserved_ += reserved;
    struct GiveBack {
      VolumeImpl* v;
      ~GiveBack() NO_THREAD_SAFETY_ANALYSIS { v->GiveBackReserveLocked(); }
    } give_back{this};
    HBISS_RETURN_IF_ERROR(WritableLocked());
    // Close waits for the cleaner: stop between pieces, not after 32 MiB.
    if (cleaner_stop_) return Status::Aborted("volume " + name_ + " is closing");
    std::vector<MapRun> now;
    auto still_live = [&](const MapRun& r) {
      return r.mapped && r.seg == p.seg && r.slot == p.slot + (r.lba - p.lba);
    };
    HBISS_RETURN_IF_ERROR(map_.Lookup(p.lba, p.count, &now));
    if (std::none_of(now.begin(), now.end(), still_live)) continue;
    // A segment of copies of this generation only. Closing the open one may
    // wait (mu_ is let go): the map is looked up again after.
    const uint32_t gen = std::min(segs_.generation(p.seg) + 1, SegmentSet::kCopyGenerations);
    HBISS_RETURN_IF_ERROR(SegregateLocked(l, gen));
    HBISS_RETURN_IF_ERROR(map_.Lookup(p.lba, p.count, &now));
    for (const MapRun& r : now) {
      if (!still_live(r)) continue;
      batch_.BeginOp();
      Status s = AppendWriteLocked(l, r.lba, r.count, data + (r.lba - p.lba) * kBlockSize, true);
      batch_.EndOp();
      HBISS_RETURN_IF_ERROR(s);
      moved += r.count;
    }
  }
  return moved;
}

void VolumeImpl::SegmentDone(uint64_t seg, uint64_t moved, bool bad, CleanStats* stats) {
  Lock l(&mu_);
  clean_totals_.blocks_moved += moved;
  stats->blocks_moved += moved;
  if (bad) {
    segs_.MarkUnclean(seg);
    return;
  }
  clean_totals_.segments_cleaned++;
  stats->segments_cleaned++;
}

bool VolumeImpl::NeedsSpace() {
  if (opts_.clean_space_target <= 0) return true;
  Lock l(&mu_);
  const uint64_t dead = segs_.DeadSlots() * kSlotSize;
  const double log = double(log_bytes_ > dead ? log_bytes_ - dead : 0);
  const double target = opts_.clean_space_target * double(map_.MappedBlocks() * kBlockSize);
  // Behind: well over the target with something to clean (see YieldToCleaner).
  const bool behind =
      log > target * kBehindFactor &&
      segs_.PickVictim(
          std::min(opts_.clean_threshold, Cleaner::kMaxBackgroundThreshold), cur_->id,
          [&](uint64_t sg) NO_THREAD_SAFETY_ANALYSIS { return InMemoryLocked(sg); }) != 0;
  if (cleaner_behind_ && !behind) done_cv_.SignalAll();
  cleaner_behind_ = behind;
  return log > target;
}

void VolumeImpl::YieldToCleaner() {
  if (opts_.clean_space_target <= 0) return;
  Lock l(&mu_);
  const auto until = std::chrono::steady_clock::now() + kMaxYield;
  while (cleaner_behind_ && failed_.ok() && no_space_.ok() && !closed_ && !cleaner_stop_ &&
         std::chrono::steady_clock::now() < until) {
    done_cv_.WaitUntil(&mu_, until);
  }
}

bool VolumeImpl::Failed() {
  Lock l(&mu_);
  return !failed_.ok();
}

bool VolumeImpl::Stalled() {
  Lock l(&mu_);
  return !no_space_.ok();
}

void VolumeImpl::RequestCheckpointIfGarbageWaits() {
  Lock l(&mu_);
  const auto now = std::chrono::steady_clock::now();
  // A checkpoint now would start replay in (about) the open segment; dead
  // ones at or after it wait for more log, not for a checkpoint.
  const uint64_t pos_seg = cur_->used > 1 ? cur_->id : cur_->id - 1;
  if (ckpt_sched_.MayForce(now) &&
      segs_.DeadWaiting(pos_seg, cur_->id,
                        [&](uint64_t sg) NO_THREAD_SAFETY_ANALYSIS { return InMemoryLocked(sg); },
                        ckpts_) > 0) {
    ckpt_sched_.Force(now);
    flusher_cv_.Signal();
  }
}

Result<CleanStats> VolumeImpl::Clean(double threshold) {
  uint64_t below = 0;
  {
    Lock l(&mu_);
    HBISS_RETURN_IF_ERROR(WritableLocked());
    below = cur_->id;
  }
  return cleaner_.Clean(threshold, below);
}

Status VolumeImpl::DeleteDeadSegments(CleanStats* stats) {
  std::vector<uint64_t> victims;
  {
    Lock l(&mu_);
    if (segs_.needs_recount()) segs_.Recount(map_);
    victims = segs_.DeletableSegments(
        cur_->id, [&](uint64_t s) NO_THREAD_SAFETY_ANALYSIS { return InMemoryLocked(s); },
        ckpts_);
  }
  if (victims.empty()) return Status::OK();
  // The map no longer points into the victims; wait out reads that looked
  // it up before it stopped.
  read_gate_.WaitForEarlierReads();
  Status first;
  for (uint64_t id : victims) {
    const std::string obj = layout::SegName(dir_, id);
    auto size = store_->Stat(obj);
    Status s = store_->Delete(obj);
    if (!s.ok() && !s.IsNotFound()) {
      if (first.ok()) first = s.WithContext("volume " + name_ + ": deleting dead segment");
      continue;
    }
    Status ss = store_->Delete(layout::SumName(dir_, id));
    if (!ss.ok() && !ss.IsNotFound()) {
      spdlog::warn("volume {}: deleting the summary of segment {}: {}", name_, Hex16(id),
                   ss.ToString());
    }
    cache_.Drop(id);
    Lock l(&mu_);
    segs_.Remove(id);
    if (s.ok()) {
      const uint64_t bytes = size.ok() ? *size : 0;
      log_bytes_ -= std::min(bytes, log_bytes_);
      if (segment_files_ > 0) segment_files_--;
      stats->segments_deleted++;
      stats->bytes_deleted += bytes;
      clean_totals_.segments_deleted++;
      clean_totals_.bytes_deleted += bytes;
    }
  }
  spdlog::debug("volume {}: deleted {} dead segments", name_, victims.size());
  return first;
}

Status VolumeImpl::CheckpointNow() {
  Lock l(&mu_);
  HBISS_RETURN_IF_ERROR(WritableLocked());
  // Checkpoints are encoded and written in order by the flusher: the first
  // encoded after this request is the one to wait for.
  const uint64_t ticket = ckpt_sched_.Request();
  flusher_cv_.Signal();
  // No checkpoint is written while a snapshot's map object waits (volume_snapshot.cc):
  // give up when that cannot be written now.
  auto snap_stuck = [&]() REQUIRES(mu_) {
    return !pending_snaps_.empty() && (snap_write_failed_ || !snap_writer_running_);
  };
  while (!ckpt_sched_.Done(ticket) && failed_.ok() && no_space_.ok() && !stop_ && !snap_stuck()) {
    done_cv_.Wait(&mu_);
  }
  if (ckpt_sched_.Done(ticket)) return ckpt_sched_.last_status();
  if (snap_stuck()) {
    return Status::IOError("volume " + name_ +
                           ": no checkpoint until a snapshot's map is written, which failed");
  }
  HBISS_RETURN_IF_ERROR(WritableLocked());
  return Status::Aborted("volume " + name_ + " is closing");
}

// ---------------------------------------------------------------------------
// Info and Close

VolumeInfo VolumeImpl::Info() const {
  Lock l(&mu_);
  VolumeInfo v;
  v.name = name_;
  v.id = meta_.id;
  v.size = meta_.size;
  v.segment_size = meta_.segment_size;
  v.mapped_bytes = map_.MappedBlocks() * kBlockSize;
  v.segment_count = segment_files_;
  v.log_bytes = log_bytes_;
  v.checkpoint_seq = ckpts_.newest();
  v.map_memory_bytes = map_.MemoryUsage();
  v.segments_cleaned = clean_totals_.segments_cleaned;
  v.segments_deleted = clean_totals_.segments_deleted;
  v.blocks_moved = clean_totals_.blocks_moved;
  v.checkpoints_written = ckpt_sched_.written();
  v.checkpoint_bytes = ckpt_sched_.bytes();
  v.checkpoint_encode_us = uint64_t(
      std::chrono::duration_cast<std::chrono::microseconds>(ckpt_sched_.encode_time()).count());
  v.checkpoint_write_us = uint64_t(
      std::chrono::duration_cast<std::chrono::microseconds>(ckpt_sched_.write_time()).count());
  for (const auto& [id, seg] : mem_segs_) v.buffer_bytes += seg->charged;
  return v;
}

Status VolumeImpl::Close() {
  Lock sl(&snap_mu_);  // no snapshot operation is in progress
  {
    Lock l(&mu_);
    if (closed_) return Status::Aborted("volume " + name_ + " is already closed");
  }
  Status result;
  if (!opts_.read_only && started_) {
    {
      Lock l(&mu_);
      cleaner_stop_ = true;
    }
    cleaner_.Stop();      // no cleaning pass runs from here on
    Lock wl(&write_mu_);  // no writer is mid-operation
    result = Flush();
    {
      Lock l(&mu_);
      stop_ = true;
      flusher_cv_.Signal();
    }
    if (flusher_.joinable()) flusher_.join();
    if (snap_writer_.joinable()) snap_writer_.join();  // stop_ ends its retries
    Lock l(&mu_);
    if (result.ok() && (!failed_.ok() || !no_space_.ok())) result = WritableLocked();
    std::shared_ptr<MemSegment> last;  // closed here: gets a summary
    uint64_t last_bytes = 0;
    if (result.ok() && log_.open()) {
      const uint64_t seg = log_.segment_id();
      auto bytes = log_.CloseSegment();
      if (bytes.ok()) {
        last_bytes = *bytes;
        if (seg == cur_->id) last = cur_;
      } else {
        result = bytes.status().WithContext("volume " + name_ + ": closing segment");
        (void)log_.Abandon();
      }
    }
    // Snapshots whose map objects the flusher did not write: now, or the
    // next open rebuilds them (no checkpoint then: it would cut their log).
    if (result.ok() && SnapsToMaterializeLocked()) (void)MaterializePendingLocked(l);
    if (result.ok() && !batch_.active() && queue_.empty() && pending_snaps_.empty()) {
      // Everything is durable: publish a checkpoint of the final map.
      CheckpointInfo ci = NextCheckpointInfoLocked();
      std::string data = EncodeCheckpoint(ci, map_);
      l.Unlock();
      result = WriteCheckpoint(data, ci);
      // A clean close deletes what the checkpoints no longer need.
      if (result.ok() && opts_.clean_threshold > 0) {
        CleanStats ignored;
        Status d = DeleteDeadSegments(&ignored);
        if (!d.ok()) spdlog::warn("volume {}: deleting dead segments: {}", name_, d.ToString());
      }
      l.Lock();
    }
    if (last) {
      l.Unlock();
      PutSummary(*last, last_bytes);
      l.Lock();
    }
    closed_ = true;
    // Reads and writes fail from now on: the buffers go back to the budget.
    for (auto& [id, seg] : mem_segs_) seg->FreeBuffers();
    if (cur_) cur_->FreeBuffers();
    GiveBackReserveLocked();
  } else {
    Lock l(&mu_);
    closed_ = true;
  }
  if (lock_ != nullptr) {
    // Owned by nobody from here on (Volume::Owner); best effort. A fenced
    // open's directory is gone: nothing to delete.
    Status d = store_->Delete(layout::OwnerName(dir_));
    if (!d.ok() && !d.IsNotFound()) {
      spdlog::warn("volume {}: deleting the owner object: {}", name_, d.ToString());
    }
  }
  lock_.reset();
  return result;
}

}  // namespace hbiss::volume
