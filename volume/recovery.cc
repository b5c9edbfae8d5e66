#include "volume/recovery.h"

#include <algorithm>
#include <map>

#include <spdlog/spdlog.h>

#include "volume/checkpoint_set.h"
#include "volume/clone.h"
#include "volume/layout.h"

namespace hbiss::volume {

Result<std::map<uint64_t, SegHead>> ReadSegmentHeaders(store::Store* store,
                                                       const layout::LogDir& dir,
                                                       const VolumeMeta& meta,
                                                       const std::map<uint64_t, uint64_t>& sizes,
                                                       uint64_t c, bool takeover) {
  const std::string name = dir.volume();
  std::map<uint64_t, SegHead> segs;
  std::vector<uint8_t> slot(kSlotSize);
  for (auto& [id, sz] : sizes) {
    if (id < c) continue;
    SegHead s;
    // Readers are not kept: there may be many segments to look at.
    const std::string seg = layout::SegName(dir, id);
    auto r = takeover ? store->OpenForTakeover(seg) : store->Open(seg);
    if (!r.ok()) return r.status().WithContext("volume " + name + ": opening segment");
    auto n = (*r)->ReadAt(0, slot);
    if (!n.ok()) return n.status().WithContext("volume " + name + ": reading segment header");
    if (*n >= kSegmentHeaderBytes) {
      auto h = DecodeSegmentHeader(std::span<const uint8_t>(slot.data(), *n));
      if (h.status().IsNotSupported()) return h.status();
      if (h.ok() && h->volume_id == meta.id && h->segment_id == id) {
        s.header = *h;
        s.valid = true;
      }
    }
    segs.emplace(id, std::move(s));
  }
  return segs;
}

Result<std::vector<uint64_t>> BuildChain(const std::string& name,
                                         const std::map<uint64_t, SegHead>& segs, uint64_t c) {
  std::vector<uint64_t> chain;
  for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
    if (it->first > c && it->second.valid) {
      chain.push_back(it->first);
      break;
    }
  }
  while (!chain.empty()) {
    const SegmentHeader& h = segs.at(chain.back()).header;
    if (h.prev_segment_id == c) break;
    if (h.prev_segment_id < c || h.prev_segment_id >= chain.back()) {
      return Status::Corruption("volume " + name + ": segment " + Hex16(chain.back()) +
                                " follows segment " + Hex16(h.prev_segment_id) +
                                ", which is not in the log after the checkpoint");
    }
    auto p = segs.find(h.prev_segment_id);
    if (p == segs.end() || !p->second.valid) {
      return Status::Corruption("volume " + name + ": segment " + Hex16(h.prev_segment_id) +
                                " (before segment " + Hex16(chain.back()) +
                                ") is missing or has a damaged header");
    }
    chain.push_back(h.prev_segment_id);
  }
  std::reverse(chain.begin(), chain.end());
  return chain;
}

namespace {

// RecoverLog's work; with stop_seq (read-only only) the replay starts from a
// checkpoint at or before that batch and stops there.
Status Recover(store::Store* store, const layout::LogDir& dir, const VolumeMeta& meta,
               bool read_only, uint64_t stop_seq, ExtentMap* map, RecoveredLog* out) {
  const std::string name = dir.volume();
  CheckpointInfo& ck = out->checkpoint;
  HBISS_RETURN_IF_ERROR(LoadNewestCheckpoint(store, dir, meta, &ck, map, &out->found_checkpoint,
                                             &out->ckpt_seqs,
                                             stop_seq != 0 ? stop_seq : UINT64_MAX));
  // A clone's log before its first checkpoint builds on its parent snapshot.
  if (!out->found_checkpoint && !meta.parents.empty()) {
    HBISS_RETURN_IF_ERROR(LoadCloneBase(store, meta, map).WithContext("volume " + name));
  }
  LogPosition pos{0, 0};
  uint64_t seq = 1;
  if (out->found_checkpoint) {
    pos = ck.position;
    seq = ck.next_seq;
    out->segment_ids = ck.segment_ids;
  }
  HBISS_ASSIGN_OR_RETURN(auto seg_list, ListIds(store, layout::SegDir(dir)));
  std::map<uint64_t, uint64_t> seg_sizes(seg_list.begin(), seg_list.end());
  for (uint64_t id : out->segment_ids) {
    if (!seg_sizes.count(id)) {
      return Status::Corruption("volume " + name + ": segment " + Hex16(id) +
                                " named by checkpoint " + Hex16(ck.seq) + " is missing");
    }
  }
  for (auto& [id, sz] : seg_sizes) out->log_bytes += sz;
  out->segment_bytes = seg_sizes;
  out->segment_files = seg_sizes.size();
  out->max_segment_id = seg_list.empty() ? 0 : seg_list.back().first;
  const uint64_t c = pos.segment_id;

  HBISS_ASSIGN_OR_RETURN(auto segs,
                         ReadSegmentHeaders(store, dir, meta, seg_sizes, c, !read_only));
  HBISS_ASSIGN_OR_RETURN(std::vector<uint64_t> chain, BuildChain(name, segs, c));

  LogReplayer replay(meta.id, uint32_t(meta.segment_size / kSlotSize), name, map);
  replay.StopAt(stop_seq);
  uint64_t last_id = c;
  uint64_t last_end = pos.offset;
  if (c != 0) {
    auto it = segs.find(c);
    if (it == segs.end() || !it->second.valid) {
      return Status::Corruption("volume " + name + ": segment " + Hex16(c) +
                                " of the checkpoint is missing or has a damaged header");
    }
    const uint64_t* limit = nullptr;
    if (!chain.empty()) {
      limit = &segs[chain[0]].header.prev_segment_end;
      if (*limit < pos.offset) {
        return Status::Corruption("volume " + name + ": segment " + Hex16(chain[0]) +
                                  " says segment " + Hex16(c) +
                                  " ends before the checkpoint's position");
      }
    }
    auto r = store->Open(layout::SegName(dir, c));
    if (!r.ok()) return r.status().WithContext("volume " + name + ": opening segment");
    HBISS_RETURN_IF_ERROR(replay.ReplaySegment(r->get(), c, pos.offset, limit, &seq, &last_end));
  }
  for (size_t i = 0; i < chain.size(); i++) {
    if (replay.stopped()) break;
    SegHead& s = segs[chain[i]];
    if (s.header.first_seq != seq) {
      return Status::Corruption("volume " + name + ": segment " + Hex16(chain[i]) +
                                " starts at batch seq " + std::to_string(s.header.first_seq) +
                                ", expected " + std::to_string(seq));
    }
    if (s.header.flags & kSegmentDiscardPending) replay.DiscardPending();
    const uint64_t* limit =
        i + 1 < chain.size() ? &segs[chain[i + 1]].header.prev_segment_end : nullptr;
    auto r = store->Open(layout::SegName(dir, chain[i]));
    if (!r.ok()) return r.status().WithContext("volume " + name + ": opening segment");
    HBISS_RETURN_IF_ERROR(
        replay.ReplaySegment(r->get(), chain[i], kSlotSize, limit, &seq, &last_end));
    last_id = chain[i];
    if (std::find(out->segment_ids.begin(), out->segment_ids.end(), chain[i]) ==
        out->segment_ids.end()) {
      out->segment_ids.push_back(chain[i]);
    }
  }
  spdlog::debug("volume {}: recovered from checkpoint {} at ({}, {}); chain of {} segments; "
                "log ends at ({}, {}) next seq {}; op cut off: {}",
                name, out->found_checkpoint ? ck.seq : 0, pos.segment_id, pos.offset,
                chain.size(), last_id, last_end, seq, replay.has_pending());
  if (stop_seq != 0) {
    if (seq != stop_seq || replay.has_pending()) {
      return Status::Corruption("volume " + name + ": the log ends at batch " +
                                std::to_string(seq) + ", before the snapshot's end at batch " +
                                std::to_string(stop_seq));
    }
    return Status::OK();
  }
  // An operation cut off by the end of the log never happened.
  const bool cut_off = replay.has_pending();
  replay.DiscardPending();
  if (out->max_segment_id + 1 > kOwnSegMask) {  // above: clone layers (clone.h)
    return Status::NotSupported("volume " + name + ": segment ids exhausted");
  }
  if (read_only) return Status::OK();

  std::vector<TailBatch> tail = replay.TakeTailBatches();
  LogPosition prev{last_id, last_end};
  uint64_t next = seq;
  size_t relog_from = tail.size();
  bool pending = cut_off;
  uint32_t inherited_flags = 0;
  if (last_id != 0 && !tail.empty()) {
    uint64_t proven = replay.tail_proven();
    if (last_id == c) proven = std::max(proven, pos.offset);
    if (proven < last_end) {
      relog_from = 0;
      while (relog_from < tail.size() && tail[relog_from].off < proven) relog_from++;
      // A synced_upto that is not a batch boundary (the writer never makes
      // one; a damaged or foreign header can) proves only part of the batch
      // it falls in: log that batch again whole, from its start.
      if (relog_from > 0 && (relog_from == tail.size() || tail[relog_from].off > proven)) {
        relog_from--;
      }
      const TailBatch& t = tail[relog_from];
      next = t.seq;
      pending = t.pending_before;
      if (proven >= kSlotSize) {
        prev = {last_id, t.off};
      } else {
        // Nothing in the last segment is proven durable, not even its
        // header: skip it entirely (it becomes garbage off the chain).
        const SegmentHeader& lh = segs[last_id].header;
        prev = {lh.prev_segment_id, lh.prev_segment_end};
        // The new segment takes its place, so it must drop what it dropped.
        inherited_flags = lh.flags & kSegmentDiscardPending;
        out->segment_ids.erase(
            std::remove(out->segment_ids.begin(), out->segment_ids.end(), last_id),
            out->segment_ids.end());
      }
    }
  }
  // Whether anything after relog_from completes an operation.
  bool completes = false;
  for (size_t i = relog_from; i < tail.size() && !completes; i++) {
    for (const BatchEntry& e : tail[i].entries) completes |= !e.continues;
  }
  out->next_seq = next;
  out->prev = prev;
  out->new_segment_id = std::max(out->max_segment_id, c) + 1;
  out->new_segment_flags = (pending && !completes) ? kSegmentDiscardPending : inherited_flags;
  // Segment objects outside the log as recovered: left out of the
  // checkpoint as dead, or cut off the chain.
  for (auto& [id, sz] : seg_sizes) {
    if (std::find(out->segment_ids.begin(), out->segment_ids.end(), id) ==
        out->segment_ids.end()) {
      out->orphans.insert(id);
    }
  }
  if (relog_from < tail.size() && completes) {
    out->relog_segment = last_id;
    out->relog_pending = pending;
    out->relog.assign(std::make_move_iterator(tail.begin() + relog_from),
                      std::make_move_iterator(tail.end()));
  }
  return Status::OK();
}

}  // namespace

Status RecoverLog(store::Store* store, const layout::LogDir& dir, const VolumeMeta& meta,
                  bool read_only, ExtentMap* map, RecoveredLog* out) {
  return Recover(store, dir, meta, read_only, 0, map, out);
}

Status ReplayLogTo(store::Store* store, const layout::LogDir& dir, const VolumeMeta& meta,
                   uint64_t stop_seq, ExtentMap* map, uint64_t* from_ckpt) {
  if (stop_seq == 0) return Status::InvalidArgument("ReplayLogTo: stop_seq must be above 0");
  RecoveredLog rec;
  HBISS_RETURN_IF_ERROR(Recover(store, dir, meta, /*read_only=*/true, stop_seq, map, &rec));
  *from_ckpt = rec.found_checkpoint ? rec.checkpoint.seq : 0;
  return Status::OK();
}

}  // namespace hbiss::volume
