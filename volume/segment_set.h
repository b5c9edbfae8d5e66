// SegmentSet: the segments of an open, writable volume and how much of each
// is still live, with the rules built on that: which closed segment the
// cleaner copies out next, and which segments may be deleted.
//
//  * ids: the segments of the log as recovered or written since, increasing;
//    orphans: segment objects outside it (left out of a checkpoint as dead,
//    or cut off the chain by recovery), deleted by the same rule.
//  * live counts: for each segment, how many blocks the extent map points
//    into it. The volume keeps them in step with the map: AddLive when it
//    maps blocks into a segment, Forget before it changes blocks mapped
//    elsewhere. A count that would go below zero means the counts drifted
//    from the map (a bug): then nothing is deleted until the volume recounts
//    them from the map (needs_recount, Recount). A guess never deletes.
//  * a segment is deletable when it holds no live block, is closed and out
//    of memory, its summary is not being written, and no kept checkpoint
//    needs it (CheckpointSet::NeededByNone).
//
// Thread-compatible: the volume calls it under its mutex.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <unordered_map>
#include <vector>

#include "volume/extent_map.h"
#include "volume/volume.h"

namespace hbiss::volume {

class CheckpointSet;

class SegmentSet {
 public:
  explicit SegmentSet(uint32_t seg_slots) : seg_slots_(seg_slots) {}
  SegmentSet(const SegmentSet&) = delete;
  SegmentSet& operator=(const SegmentSet&) = delete;

  const std::vector<uint64_t>& ids() const { return ids_; }
  bool Contains(uint64_t id) const;
  // Appends a segment of the log (ids grow).
  void Add(uint64_t id);
  void Remove(uint64_t id);
  void AddOrphan(uint64_t id) { orphans_.insert(id); }
  // Makes orphan `id` a segment of the log again, in id order (a rollback
  // maps blocks into it again). No-op unless it is an orphan.
  void Adopt(uint64_t id);
  const std::set<uint64_t>& orphans() const { return orphans_; }

  // Live-block accounting (see the top).
  void Recount(const ExtentMap& map);
  void AddLive(uint64_t seg, uint64_t n) { live_[seg] += n; }
  // Takes the blocks of `runs` (as Lookup returns them) off the counts of
  // the segments they are mapped to. Segments whose count drops to zero
  // and that `closed(seg)` says are out of memory are queued for TakeDead.
  void Forget(const std::vector<MapRun>& runs, const std::function<bool(uint64_t)>& closed);
  uint64_t live(uint64_t seg) const;
  bool needs_recount() const { return drifted_; }
  // The counts can no longer be trusted (the map changed without them).
  void MarkDrifted() { drifted_ = true; }

  // Segments whose last live block went away since the last call (the store
  // may drop their cached bytes).
  std::vector<uint64_t> TakeDead();
  bool has_dead() const { return !dead_.empty(); }
  void NoteDead(uint64_t seg) { dead_.push_back(seg); }

  // Segments whose summary Put is in progress: not deleted before it ends.
  void SetSummarizing(uint64_t seg, bool on);
  // Segments where cleaning met corruption or lost track of live blocks:
  // never picked again.
  void MarkUnclean(uint64_t seg) { unclean_.insert(seg); }
  bool unclean(uint64_t seg) const { return unclean_.count(seg) != 0; }

  // The slots a closed segment holds (header included), when known. A
  // segment closed early (an idle volume's, a re-log) is shorter than
  // seg_slots: its live fraction is measured against what it holds, so that
  // a short, fully live segment is never a victim (the cleaner would copy
  // the same blocks into another short segment again and again).
  void SetLength(uint64_t seg, uint32_t slots) { length_[seg] = slots; }

  // Slots of the closed segments of the log (length known) with no live
  // block: garbage that waits only to be deleted.
  uint64_t DeadSlots() const;

  // The age clock (a batch sequence number, see CleanPolicy): `seg` had
  // blocks written into it at `clock`. The stamp is the largest clock noted,
  // when its last block was written: a segment of cleaner copies is as young
  // as the copying, not as the data it copied, since its live fraction has
  // been falling only since then. (Stamps inherited from the victims made
  // every segment of old copies look older than any client segment, and
  // cost-benefit cleaned them at a live fraction near 0.75 while client
  // segments sat at their floor: bench/cleaner.) A segment never stamped
  // (recovered at open) counts as written at 0.
  void NoteWritten(uint64_t seg, uint64_t clock);
  uint64_t stamp(uint64_t seg) const;

  // The generation of what `seg` holds: 0, client operations (and a segment
  // recovered at open: generations are not stored); n > 0, cleaner copies
  // of data the cleaner had copied n - 1 times before, the last generation
  // (kCopyGenerations) standing for every older one too. Copies out of a
  // client segment still hold some hot blocks that die soon; copies of
  // copies have outlived two cleanings and are mostly cold. The volume
  // writes each generation into segments of their own, so that the coldest
  // data is not mixed with the next hot block to die.
  static constexpr uint32_t kCopyGenerations = 2;
  void SetGeneration(uint64_t seg, uint32_t gen);
  uint32_t generation(uint64_t seg) const;

  // Among the closed segments (below `below_id`, not in memory, not
  // unclean) with some live blocks and a live fraction u (of the segment's
  // data slots: its length when known, else seg_slots) below `threshold`:
  // kGreedy, the one with the lowest u (the fewest live blocks for what it
  // holds: a short segment is not taken for an empty one); kCostBenefit, the one with
  // the highest (1 - u) * age / (1 + u), age = now - stamp + 1 (ties: the
  // lower id). 0 if none.
  uint64_t PickVictim(double threshold, uint64_t below_id,
                      const std::function<bool(uint64_t)>& in_memory,
                      CleanPolicy policy = CleanPolicy::kGreedy, uint64_t now = 0) const;

  // Whether `seg` may be deleted now (see the top). `first_open` is the
  // first segment that is not closed (the open one).
  bool Deletable(uint64_t seg, uint64_t first_open, const std::function<bool(uint64_t)>& in_memory,
                 const CheckpointSet& ckpts) const;
  // Every segment (log and orphans) Deletable says yes to.
  std::vector<uint64_t> DeletableSegments(uint64_t first_open,
                                          const std::function<bool(uint64_t)>& in_memory,
                                          const CheckpointSet& ckpts) const;
  // Dead segments before `pos_seg` that wait for a checkpoint to become
  // deletable.
  uint64_t DeadWaiting(uint64_t pos_seg, uint64_t first_open,
                       const std::function<bool(uint64_t)>& in_memory,
                       const CheckpointSet& ckpts) const;

  // The segments a checkpoint at position segment `pos_seg` needs listed:
  // that one, and those before it with a live block.
  std::vector<uint64_t> NeededBy(uint64_t pos_seg) const;

 private:
  const uint32_t seg_slots_;
  std::vector<uint64_t> ids_;
  std::set<uint64_t> orphans_;
  std::unordered_map<uint64_t, uint64_t> live_;  // absent: none
  std::unordered_map<uint64_t, uint32_t> length_;  // absent: seg_slots_
  std::unordered_map<uint64_t, uint64_t> stamp_;   // absent: 0
  std::unordered_map<uint64_t, uint32_t> gen_;     // absent: 0
  std::vector<uint64_t> dead_;
  std::set<uint64_t> unclean_;
  std::set<uint64_t> summarizing_;
  bool drifted_ = false;
};

}  // namespace hbiss::volume
