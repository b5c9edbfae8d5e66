#include "volume/log_follower.h"

#include <map>

#include <spdlog/spdlog.h>

#include "volume/checkpoint_set.h"
#include "volume/clone.h"
#include "volume/layout.h"
#include "volume/recovery.h"

namespace hbiss::volume {

namespace {

// Loads that find the log moving under them (the cleaner deleted what the
// checkpoint they read needed, because a newer one appeared) try again this
// many times before they report the log as damaged.
constexpr int kLoadAttempts = 4;

}  // namespace

LogFollower::LogFollower(store::Store* store, layout::LogDir dir, VolumeMeta meta, ExtentMap* map)
    : store_(store), dir_(std::move(dir)), name_(dir_.volume()), meta_(meta), map_(map) {}

Status LogFollower::Load() {
  Status last;
  for (int attempt = 0; attempt < kLoadAttempts; attempt++) {
    replay_.reset();
    map_->Reset();
    loads_++;
    CheckpointInfo ck;
    bool found = false;
    HBISS_RETURN_IF_ERROR(LoadNewestCheckpoint(store_, dir_, meta_, &ck, map_, &found, nullptr));
    if (!found && !meta_.parents.empty()) {
      HBISS_RETURN_IF_ERROR(LoadCloneBase(store_, meta_, map_).WithContext("volume " + name_));
    }
    ckpt_seq_ = found ? ck.seq : 0;
    end_ = found ? ck.position : LogPosition{};
    seq_ = found ? ck.next_seq : 1;
    replay_ = std::make_unique<LogReplayer>(meta_.id, uint32_t(meta_.segment_size / kSlotSize),
                                            name_, map_);
    bool diverged = false;
    Status s = Advance(&diverged);
    if (s.ok() && !diverged) return Status::OK();
    replay_.reset();
    map_->Reset();
    if (!s.ok()) return s;
    last = Status::Corruption("volume " + name_ + ": the log does not continue from checkpoint " +
                              Hex16(ck.seq) + " at (" + Hex16(end_.segment_id) + ", " +
                              std::to_string(end_.offset) + ")");
  }
  return last;
}

Status LogFollower::CatchUp() {
  if (replay_ == nullptr) return Load();
  bool diverged = false;
  Status s = Advance(&diverged);
  if (!s.ok()) {
    replay_.reset();  // partly applied: the next call loads again
    return s;
  }
  if (diverged) {
    spdlog::info("volume {}: the log no longer continues from ({}, {}); loading it again",
                 name_, Hex16(end_.segment_id), end_.offset);
    return Load();
  }
  return Status::OK();
}

Status LogFollower::Replay(uint64_t id, uint64_t from, const uint64_t* limit) {
  auto r = store_->Open(layout::SegName(dir_, id));
  if (!r.ok()) return r.status().WithContext("volume " + name_ + ": opening segment");
  uint64_t end = from;
  HBISS_RETURN_IF_ERROR(replay_->ReplaySegment(r->get(), id, from, limit, &seq_, &end));
  end_ = {id, end};
  return Status::OK();
}

Status LogFollower::Advance(bool* diverged) {
  *diverged = false;
  HBISS_ASSIGN_OR_RETURN(auto ids, ListIds(store_, layout::SegDir(dir_)));
  const uint64_t c = end_.segment_id;
  std::map<uint64_t, uint64_t> later;
  bool have_c = c == 0;
  for (auto& [id, sz] : ids) {
    if (id > c) later.emplace(id, sz);
    if (id == c) have_c = true;
  }
  if (!have_c) {  // deleted by the cleaner: this follower fell behind a checkpoint
    *diverged = true;
    return Status::OK();
  }
  auto gone = [&](const Status& s) {
    if (s.IsNotFound()) *diverged = true;
    return s.IsNotFound() ? Status::OK() : s;
  };
  HBISS_ASSIGN_OR_RETURN(auto heads, ReadSegmentHeaders(store_, dir_, meta_, later, 0, false));
  auto chain = BuildChain(name_, heads, c);
  if (!chain.ok()) {
    // Not a chain back to c: cut off by a new owner's recovery, or a segment
    // on the way was deleted meanwhile.
    *diverged = true;
    return Status::OK();
  }
  if (chain->empty()) {
    if (c == 0) return Status::OK();  // no log yet
    return gone(Replay(c, end_.offset, nullptr));
  }
  const SegmentHeader& first = heads.at(chain->front()).header;
  if (c != 0) {
    if (first.prev_segment_end < end_.offset) {
      *diverged = true;  // the log was cut before what this follower replayed
      return Status::OK();
    }
    HBISS_RETURN_IF_ERROR(gone(Replay(c, end_.offset, &first.prev_segment_end)));
    if (*diverged) return Status::OK();
  }
  for (size_t i = 0; i < chain->size(); i++) {
    const SegmentHeader& h = heads.at((*chain)[i]).header;
    if (h.first_seq != seq_) {
      *diverged = true;
      return Status::OK();
    }
    if (h.flags & kSegmentDiscardPending) replay_->DiscardPending();
    const uint64_t* limit =
        i + 1 < chain->size() ? &heads.at((*chain)[i + 1]).header.prev_segment_end : nullptr;
    HBISS_RETURN_IF_ERROR(gone(Replay((*chain)[i], kSlotSize, limit)));
    if (*diverged) return Status::OK();
  }
  return Status::OK();
}

}  // namespace hbiss::volume
