// VolumeImpl on a full store: the log stalls on NoSpace and goes on once
// space is back, losing nothing acknowledged (see volume_impl.h, "A full
// store", and volume.h's contract). The re-log here goes through the same
// unit as recovery's (relog.h): what is not proven durable is logged again
// after the last durable position, and the valid log then ends there on
// disk, like a torn tail.
#include <algorithm>

#include <spdlog/spdlog.h>

#include "volume/clone.h"
#include "volume/layout.h"
#include "volume/volume_impl.h"

namespace hbiss::volume {

namespace {

// How often a stalled log retries by itself, and how soon after a retry a
// write or Flush may ask for another.
constexpr auto kRetryEvery = std::chrono::seconds(1);
constexpr auto kMinRetryGap = std::chrono::milliseconds(100);

}  // namespace

void VolumeImpl::StallLocked(const Status& s, std::deque<QueueItem>* redo,
                             std::vector<std::shared_ptr<MemSegment>>* closed, bool want_ckpt) {
  if (no_space_.ok()) {
    spdlog::warn("volume {}: the store is full; writes and flushes fail with NoSpace until "
                 "space is back (nothing acknowledged is lost): {}",
                 name_, s.ToString());
  } else {
    spdlog::debug("volume {}: retry after NoSpace failed: {}", name_, s.ToString());
  }
  // A writer that failed is broken (store.h): abandon it. The valid log
  // ends at the log writer's durable position; what its segment holds after
  // that is cut off by the header of the segment the retry starts.
  std::vector<QueueItem> unsynced = log_.Abandon();
  // Everything after the durable position, oldest first: appended but not
  // synced, then not written, then sealed since.
  std::deque<QueueItem> q;
  for (QueueItem& item : unsynced) q.push_back(std::move(item));
  for (QueueItem& item : *redo) q.push_back(std::move(item));
  redo->clear();
  for (QueueItem& item : queue_) q.push_back(std::move(item));
  queue_.swap(q);
  // Segments closed in this round are durable (Close syncs).
  for (auto& seg : *closed) RetireSegmentLocked(seg);
  closed->clear();
  if (want_ckpt) ckpt_sched_.Abandoned(s);  // CheckpointNow waiters get the error
  no_space_ = s;
  retry_in_progress_ = false;
  space_attempts_++;
  next_retry_ = std::chrono::steady_clock::now() + kRetryEvery;
  done_cv_.SignalAll();
  cleaner_.Wake();
}

VolumeImpl::RetryStep VolumeImpl::PrepareRetryLocked(Lock& l) {
  while (!stop_ && !retry_now_ && std::chrono::steady_clock::now() < next_retry_) {
    flusher_cv_.WaitUntil(&mu_, next_retry_);
  }
  if (stop_) return RetryStep::kStop;
  if (batch_.op_in_progress()) {
    // An operation that began before the stall completes in memory first.
    flusher_cv_.WaitFor(&mu_, std::chrono::milliseconds(1));
    return RetryStep::kWait;
  }
  retry_now_ = false;
  last_retry_ = std::chrono::steady_clock::now();
  next_retry_ = last_retry_ + kRetryEvery;
  Status s = RelogAfterNoSpaceLocked(l);
  if (!s.ok()) {
    (void)FailLocked(s.WithContext("volume " + name_ + ": logging again after NoSpace"));
    return RetryStep::kWait;
  }
  if (queue_.empty()) {
    // Nothing waited to be made durable: the log goes on in the new segment.
    no_space_ = Status::OK();
    space_attempts_++;
    done_cv_.SignalAll();
    return RetryStep::kWait;
  }
  retry_in_progress_ = true;
  return RetryStep::kRound;
}

Status VolumeImpl::RelogAfterNoSpaceLocked(Lock& l) {
  relogs_++;  // a snapshot whose map was taken before this is not created (CreateSnapshot)
  SealBatchLocked();  // no operation is in progress
  std::deque<QueueItem> old;
  old.swap(queue_);
  uint64_t first_seq = next_seq_;
  for (const QueueItem& item : old) {
    if (!item.end_of_segment) {
      first_seq = item.seq;
      break;
    }
  }
  const LogPosition durable = log_.durable_pos();
  std::vector<std::shared_ptr<MemSegment>> old_segs;
  for (auto& [id, seg] : mem_segs_) old_segs.push_back(seg);
  const uint64_t new_id = cur_->id + 1;  // the open segment is the newest
  if (new_id > kOwnSegMask) {  // above: clone layers (clone.h)
    return Status::NotSupported("volume " + name_ + ": segment ids exhausted");
  }
  // The new segment takes the place of the first one after durable's,
  // so it drops the cut-off operation that one dropped (recovery's flag).
  uint32_t flags = 0;
  for (const auto& seg : old_segs) {
    if (seg->id <= durable.segment_id) continue;
    auto h = DecodeSegmentHeader(std::span<const uint8_t>(seg->Slot(0), kSlotSize));
    if (h.ok()) flags = h->flags & kSegmentDiscardPending;
    break;
  }
  // The batches are numbered again from the first one that is not durable,
  // as the new segment's header says (recovery checks first_seq).
  next_seq_ = first_seq;
  last_sealed_seq_ = first_seq - 1;
  durable_seq_ = std::min(durable_seq_, first_seq - 1);
  log_.Restart(durable, first_seq - 1);
  HBISS_ASSIGN_OR_RETURN(auto fresh,
                         NewMemSegmentLocked(new_id, durable.segment_id, durable.offset, flags));
  cur_ = std::move(fresh);
  // The re-log keeps the batches' order, so cleaner copies and client
  // writes may share this one segment; the next operation of either kind
  // starts a segment of its own again (SegregateLocked).
  open_gen_ = 0;
  // Every batch again, in order, with its entries' continue flags, through
  // the write path (relog.h): the map then points at the new copies, and
  // the live counts move with it.
  std::vector<RelogBatch> batches;
  for (const QueueItem& item : old) {
    if (!item.end_of_segment) batches.push_back(RelogBatch::InMemory(item));
  }
  RelogPath path(this, l);
  HBISS_ASSIGN_OR_RETURN(const size_t relogged,
                         RelogBatches(batches, RelogUpTo::kEverything, "volume " + name_, &path));
  batches.clear();
  old.clear();
  // The old segments leave memory. The one `durable` is in keeps its
  // durable prefix in the store, where reads of it go from now on; the
  // later ones hold nothing durable and no block lives in them any more.
  for (auto& seg : old_segs) {
    if (seg->id <= durable.segment_id) {
      RetireSegmentLocked(seg);
      continue;
    }
    mem_segs_.erase(seg->id);
    if (segs_.live(seg->id) != 0) segs_.MarkDrifted();  // never deleted on a guess
    abandoned_.push_back(seg->id);
  }
  // Old flush targets belong to the old numbering (their waiters got
  // NoSpace); this one makes the round sync what was logged again.
  flush_target_ = last_sealed_seq_;
  spdlog::info("volume {}: retrying after NoSpace: logged {} entries again into segment {}, "
               "after ({}, {})",
               name_, relogged, Hex16(new_id), Hex16(durable.segment_id), durable.offset);
  return Status::OK();
}

void VolumeImpl::DropAbandonedSegments(Lock& l) {
  std::vector<uint64_t> ids;
  ids.swap(abandoned_);
  // mu_ itself, not l: the analysis sees this function REQUIRES(mu_).
  mu_.Unlock();
  for (uint64_t id : ids) {
    // Garbage off the chain: nothing durable, never read from the store,
    // named by no checkpoint (those name segments up to a durable position).
    const std::string obj = layout::SegName(dir_, id);
    auto size = store_->Stat(obj);
    Status d = store_->Delete(obj);
    mu_.Lock();
    if (d.ok() || d.IsNotFound()) {
      segs_.Remove(id);
      if (d.ok()) {
        if (segment_files_ > 0) segment_files_--;
        log_bytes_ -= std::min(size.ok() ? *size : 0, log_bytes_);
      }
    } else {
      // Left to the cleaner's rules (no block lives in it).
      spdlog::warn("volume {}: deleting abandoned segment {}: {}", name_, Hex16(id),
                   d.ToString());
    }
    mu_.Unlock();
  }
  mu_.Lock();
}

Status VolumeImpl::AwaitSpaceLocked() {
  if (no_space_.ok() || !failed_.ok() || stop_) return WritableLocked();
  if (retry_in_progress_ || std::chrono::steady_clock::now() - last_retry_ >= kMinRetryGap) {
    const uint64_t seen = space_attempts_;
    if (!retry_in_progress_) {
      retry_now_ = true;
      flusher_cv_.Signal();
    }
    while (space_attempts_ == seen && !no_space_.ok() && failed_.ok() && !stop_) {
      done_cv_.Wait(&mu_);
    }
  }
  return WritableLocked();
}

void VolumeImpl::SpaceFreedLocked() {
  if (no_space_.ok()) return;
  retry_now_ = true;
  last_retry_ = {};
  flusher_cv_.Signal();
}

bool VolumeImpl::ReleaseReserve(const Status& s) {
  if (!s.IsNoSpace() || !reserve_.Release()) return false;
  Lock l(&mu_);
  SpaceFreedLocked();
  return true;
}

void VolumeImpl::CleanWhileStalled(double threshold) {
  CleanStats st;
  Status s = DeleteDeadSegments(&st);  // needs no space
  if (!s.ok()) spdlog::warn("volume {}: cleaner: {}", name_, s.ToString());
  bool could_clean = false;
  {
    Lock l(&mu_);
    if (st.segments_deleted > 0) SpaceFreedLocked();
    if (no_space_.ok()) return;
    auto in_memory = [&](uint64_t sg) NO_THREAD_SAFETY_ANALYSIS { return InMemoryLocked(sg); };
    could_clean = segs_.PickVictim(threshold, cur_->id, in_memory) != 0;
  }
  // Copies need the log to go on: give it the reserve.
  if (could_clean) ReleaseReserve(Status::NoSpace("cleaning"));
}

}  // namespace hbiss::volume
