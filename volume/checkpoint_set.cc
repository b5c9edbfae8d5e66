#include "volume/checkpoint_set.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "volume/layout.h"

namespace hbiss::volume {

Status LoadNewestCheckpoint(store::Store* store, const layout::LogDir& dir, const VolumeMeta& meta,
                            CheckpointInfo* info, ExtentMap* map, bool* found,
                            std::vector<uint64_t>* all_seqs, uint64_t max_next_seq) {
  *found = false;
  const std::string name = dir.volume();
  HBISS_ASSIGN_OR_RETURN(auto ids, ListIds(store, layout::CkptDir(dir)));
  if (all_seqs) {
    for (auto& [id, size] : ids) all_seqs->push_back(id);
  }
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
    std::string obj = layout::CkptName(dir, it->first);
    auto data = store->Get(obj, layout::kMaxCheckpointBytes);
    if (!data.ok()) {
      if (data.status().IsNotFound()) continue;
      return data.status().WithContext("volume " + name + ": reading " + obj);
    }
    if (map) map->Reset();
    Status s = DecodeCheckpoint(*data, info, map);
    if (s.ok() && (info->volume_id != meta.id || info->volume_size != meta.size ||
                   info->seq != it->first)) {
      s = Status::Corruption("checkpoint belongs to another volume or name");
    }
    if (s.ok() && info->next_seq > max_next_seq) continue;
    if (s.ok()) {
      *found = true;
      return Status::OK();
    }
    if (!s.IsCorruption()) return s.WithContext("volume " + name + ": " + obj);
    spdlog::warn("volume {}: skipping checkpoint {}: {}", name, obj, s.ToString());
  }
  if (map) map->Reset();
  return Status::OK();
}

void CheckpointSet::Init(const std::vector<uint64_t>& existing) {
  MutexLock l(&mu_);
  seqs_ = existing;
  std::sort(seqs_.begin(), seqs_.end());
  if (!seqs_.empty()) {
    next_ = std::max(next_, seqs_.back() + 1);
    newest_ = std::max(newest_, seqs_.back());
  }
}

void CheckpointSet::NoteLoaded(const CheckpointInfo& ci) {
  MutexLock l(&mu_);
  known_[ci.seq] = Needs{ci.position.segment_id, ci.segment_ids};
  newest_ = std::max(newest_, ci.seq);
  next_ = std::max(next_, ci.seq + 1);
}

uint64_t CheckpointSet::NextSeq() {
  MutexLock l(&mu_);
  return next_++;
}

uint64_t CheckpointSet::newest() const {
  MutexLock l(&mu_);
  return newest_;
}

std::vector<uint64_t> CheckpointSet::Added(const CheckpointInfo& ci) {
  MutexLock l(&mu_);
  seqs_.insert(std::upper_bound(seqs_.begin(), seqs_.end(), ci.seq), ci.seq);
  known_[ci.seq] = Needs{ci.position.segment_id, ci.segment_ids};
  newest_ = std::max(newest_, ci.seq);
  std::vector<uint64_t> old;
  if (seqs_.size() > kKeep) old.assign(seqs_.begin(), seqs_.end() - kKeep);
  return old;
}

void CheckpointSet::Removed(uint64_t seq) {
  MutexLock l(&mu_);
  seqs_.erase(std::remove(seqs_.begin(), seqs_.end(), seq), seqs_.end());
  known_.erase(seq);
}

void CheckpointSet::Pin(uint64_t snap, std::vector<uint64_t> segs) {
  MutexLock l(&mu_);
  auto& mine = pins_[snap];
  for (uint64_t seg : mine) {
    if (--pinned_[seg] == 0) pinned_.erase(seg);
  }
  mine = std::move(segs);
  for (uint64_t seg : mine) pinned_[seg]++;
}

void CheckpointSet::Unpin(uint64_t snap) {
  MutexLock l(&mu_);
  auto it = pins_.find(snap);
  if (it == pins_.end()) return;
  for (uint64_t seg : it->second) {
    if (--pinned_[seg] == 0) pinned_.erase(seg);
  }
  pins_.erase(it);
}

bool CheckpointSet::Pinned(uint64_t seg) const {
  MutexLock l(&mu_);
  return pin_all_ || pinned_.count(seg) != 0;
}

void CheckpointSet::PinAll() {
  MutexLock l(&mu_);
  pin_all_ = true;
}

bool CheckpointSet::NeededByNone(uint64_t seg) const {
  MutexLock l(&mu_);
  if (pin_all_ || pinned_.count(seg)) return false;
  // No checkpoint: replay starts at the beginning of the log, which needs
  // every segment.
  if (seqs_.empty()) return false;
  for (uint64_t s : seqs_) {
    auto it = known_.find(s);
    if (it == known_.end() || seg >= it->second.pos_seg ||
        std::binary_search(it->second.listed.begin(), it->second.listed.end(), seg)) {
      return false;
    }
  }
  return true;
}

}  // namespace hbiss::volume
