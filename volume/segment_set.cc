#include "volume/segment_set.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "volume/checkpoint_set.h"
#include "volume/log_format.h"

namespace hbiss::volume {

bool SegmentSet::Contains(uint64_t id) const {
  return std::find(ids_.begin(), ids_.end(), id) != ids_.end();
}

void SegmentSet::Add(uint64_t id) {
  if (!Contains(id)) ids_.push_back(id);
}

void SegmentSet::Adopt(uint64_t id) {
  if (orphans_.erase(id) == 0 || Contains(id)) return;
  ids_.insert(std::upper_bound(ids_.begin(), ids_.end(), id), id);
}
void SegmentSet::Remove(uint64_t id) {
  ids_.erase(std::remove(ids_.begin(), ids_.end(), id), ids_.end());
  orphans_.erase(id);
  live_.erase(id);
  unclean_.erase(id);
  length_.erase(id);
  stamp_.erase(id);
  gen_.erase(id);
}

void SegmentSet::Recount(const ExtentMap& map) {
  live_.clear();
  map.ForEach([&](const MapRun& r) { live_[r.seg] += r.count; });
  drifted_ = false;
}

void SegmentSet::Forget(const std::vector<MapRun>& runs,
                        const std::function<bool(uint64_t)>& closed) {
  for (const MapRun& r : runs) {
    if (!r.mapped) continue;
    auto it = live_.find(r.seg);
    if (it == live_.end() || it->second < r.count) {
      // The counts no longer match the map. Never underflow, and never let
      // this make a segment look dead: deletes wait for a recount.
      if (!drifted_) {
        spdlog::error("live-block count of segment {} is off; recounting before any delete",
                      Hex16(r.seg));
      }
      drifted_ = true;
      continue;
    }
    it->second -= r.count;
    if (it->second == 0) {
      live_.erase(it);
      // Segments still in memory are noted when they are closed.
      if (closed(r.seg)) dead_.push_back(r.seg);
    }
  }
}

uint64_t SegmentSet::live(uint64_t seg) const {
  auto it = live_.find(seg);
  return it == live_.end() ? 0 : it->second;
}

std::vector<uint64_t> SegmentSet::TakeDead() {
  std::vector<uint64_t> d;
  d.swap(dead_);
  return d;
}

void SegmentSet::SetSummarizing(uint64_t seg, bool on) {
  if (on) {
    summarizing_.insert(seg);
  } else {
    summarizing_.erase(seg);
  }
}

uint64_t SegmentSet::DeadSlots() const {
  uint64_t n = 0;
  for (uint64_t id : ids_) {
    auto len = length_.find(id);
    if (len != length_.end() && !live_.count(id)) n += len->second;
  }
  return n;
}

void SegmentSet::NoteWritten(uint64_t seg, uint64_t clock) {
  uint64_t& st = stamp_[seg];
  st = std::max(st, clock);
}

uint64_t SegmentSet::stamp(uint64_t seg) const {
  auto it = stamp_.find(seg);
  return it == stamp_.end() ? 0 : it->second;
}

void SegmentSet::SetGeneration(uint64_t seg, uint32_t gen) {
  if (gen == 0) {
    gen_.erase(seg);
  } else {
    gen_[seg] = gen;
  }
}

uint32_t SegmentSet::generation(uint64_t seg) const {
  auto it = gen_.find(seg);
  return it == gen_.end() ? 0 : it->second;
}

uint64_t SegmentSet::PickVictim(double threshold, uint64_t below_id,
                                const std::function<bool(uint64_t)>& in_memory,
                                CleanPolicy policy, uint64_t now) const {
  uint64_t best = 0;
  double best_score = 0;
  for (uint64_t id : ids_) {
    if (id >= below_id || in_memory(id) || unclean_.count(id)) continue;
    auto it = live_.find(id);
    auto len = length_.find(id);
    const uint32_t slots = len == length_.end() ? seg_slots_ : std::max<uint32_t>(len->second, 2);
    const double data_slots = double(slots - 1);
    if (it == live_.end() || double(it->second) >= threshold * data_slots) continue;
    const double u = std::min(1.0, double(it->second) / data_slots);
    double score;  // higher is better
    if (policy == CleanPolicy::kGreedy) {
      score = -u;
    } else {
      const uint64_t st = stamp(id);
      const double age = double(now > st ? now - st : 0) + 1;
      score = (1 - u) * age / (1 + u);
    }
    if (best == 0 || score > best_score) {
      best = id;
      best_score = score;
    }
  }
  return best;
}

bool SegmentSet::Deletable(uint64_t seg, uint64_t first_open,
                           const std::function<bool(uint64_t)>& in_memory,
                           const CheckpointSet& ckpts) const {
  if (drifted_ || seg >= first_open || in_memory(seg) || live_.count(seg) ||
      summarizing_.count(seg)) {
    return false;
  }
  return ckpts.NeededByNone(seg);
}

std::vector<uint64_t> SegmentSet::DeletableSegments(uint64_t first_open,
                                                    const std::function<bool(uint64_t)>& in_memory,
                                                    const CheckpointSet& ckpts) const {
  std::vector<uint64_t> out;
  for (uint64_t id : ids_) {
    if (Deletable(id, first_open, in_memory, ckpts)) out.push_back(id);
  }
  for (uint64_t id : orphans_) {
    if (Deletable(id, first_open, in_memory, ckpts)) out.push_back(id);
  }
  return out;
}

uint64_t SegmentSet::DeadWaiting(uint64_t pos_seg, uint64_t first_open,
                                 const std::function<bool(uint64_t)>& in_memory,
                                 const CheckpointSet& ckpts) const {
  uint64_t n = 0;
  auto count = [&](uint64_t id) {
    if (id < pos_seg && !in_memory(id) && !live_.count(id) &&
        !Deletable(id, first_open, in_memory, ckpts)) {
      n++;
    }
  };
  for (uint64_t id : ids_) count(id);
  for (uint64_t id : orphans_) count(id);
  return n;
}

std::vector<uint64_t> SegmentSet::NeededBy(uint64_t pos_seg) const {
  std::vector<uint64_t> out;
  for (uint64_t id : ids_) {
    if (id == pos_seg || (id < pos_seg && live_.count(id))) out.push_back(id);
  }
  return out;
}

}  // namespace hbiss::volume
