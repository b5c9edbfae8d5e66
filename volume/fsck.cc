#include "volume/fsck.h"

#include <algorithm>
#include <memory>
#include <set>

#include <fmt/format.h>

#include "volume/checkpoint.h"
#include "volume/clone.h"
#include "volume/epoch.h"
#include "volume/extent_map.h"
#include "volume/layout.h"
#include "volume/log_reader.h"
#include "volume/recovery.h"
#include "volume/snapshot_registry.h"
#include "volume/volume_impl.h"
#include "volume/volume.h"

namespace hbiss::volume {

void FsckReport::Add(FsckProblem p) {
  if (p.kind == FsckKind::kCorruption) {
    corruptions++;
  } else {
    leaks++;
    leaked_bytes += p.bytes;
  }
  problems.push_back(std::move(p));
}

namespace {

FsckProblem Corrupt(std::string check, uint64_t seg, std::string message) {
  FsckProblem p;
  p.check = std::move(check);
  p.segment = seg;
  p.message = std::move(message);
  return p;
}

// What the batch headers of a segment say about one of its slots.
struct SlotInfo {
  bool covered = false;  // a data slot of a valid batch header
  bool crc_ok = false;   // its bytes match the CRC in that header
  uint64_t lba = 0;      // the block the entry wrote there
  uint32_t crc = 0;      // the CRC in the header
};

// A segment object as its bytes say.
struct SegScan {
  bool header_ok = false;
  std::string header_error;
  std::vector<SlotInfo> slots;  // one per slot of the object
  uint64_t walk_end = 0;        // where the walk of batch headers stopped
  std::string walk_error;       // why, if not at the end of the object
};

// Walks the batch headers of segment `id` as ScanBatchHeaders does (a header
// that parses, of this volume and segment, that fits the segment size) and
// checks every data slot's CRC.
Status ScanSegment(store::Store* store, const layout::LogDir& dir, const VolumeMeta& meta,
                   uint64_t id, FsckReport* report, SegScan* out) {
  const std::string where = "segment " + Hex16(id);
  auto r = store->Open(layout::SegName(dir, id));
  if (!r.ok()) return r.status().WithContext(where);
  store::SegmentReader* reader = r->get();
  const uint64_t size = reader->Size();
  const uint32_t seg_slots = uint32_t(meta.segment_size / kSlotSize);
  out->slots.assign(size / kSlotSize, SlotInfo{});
  // A header is read as recovery reads it: a torn creation may leave less
  // than a slot, which still holds a whole header.
  std::vector<uint8_t> buf(std::min<uint64_t>(size, kSlotSize));
  if (size < kSegmentHeaderBytes) {
    out->header_error = "the object is shorter than a segment header";
    return Status::OK();
  }
  HBISS_RETURN_IF_ERROR(ReadExact(reader, 0, buf, where));
  auto h = DecodeSegmentHeader(buf);
  buf.resize(kSlotSize);
  if (!h.ok()) {
    out->header_error = h.status().ToString();
  } else if (h->volume_id != meta.id || h->segment_id != id) {
    out->header_error = "header of another volume or segment";
  } else {
    out->header_ok = true;
  }
  BatchHeader bh;
  uint64_t off = kSlotSize;
  for (; off + kSlotSize <= size;) {
    HBISS_RETURN_IF_ERROR(ReadExact(reader, off, std::span<uint8_t>(buf.data(), kSlotSize), where));
    Status s = DecodeBatchHeader(buf, &bh);
    if (s.ok() && (bh.volume_id != meta.id || bh.segment_id != id)) {
      s = Status::Corruption("batch header of another volume or segment");
    }
    if (s.ok() && off / kSlotSize + 1 + bh.data_crcs.size() > seg_slots) {
      s = Status::Corruption("batch runs past the volume's segment size");
    }
    if (!s.ok()) {
      out->walk_error = s.ToString();
      break;
    }
    const uint64_t first = off / kSlotSize + 1;
    // Data slots past the end of the object stay uncovered.
    const uint64_t object_slots = out->slots.size();
    const uint64_t present = std::min<uint64_t>(
        bh.data_crcs.size(), object_slots - std::min<uint64_t>(object_slots, first));
    std::vector<uint8_t> data(present * kSlotSize);
    if (present > 0) HBISS_RETURN_IF_ERROR(ReadExact(reader, first * kSlotSize, data, where));
    uint64_t i = 0;
    for (const BatchEntry& e : bh.entries) {
      if (e.type != EntryType::kWrite) continue;
      for (uint32_t k = 0; k < e.count; k++, i++) {
        if (i >= present) continue;
        SlotInfo& si = out->slots[first + i];
        si.covered = true;
        si.lba = e.lba + k;
        si.crc = bh.data_crcs[i];
        si.crc_ok = DataSlotCrc(data.data() + i * kSlotSize) == si.crc;
        report->data_slots_checked++;
      }
    }
    off += kSlotSize * (1 + bh.data_crcs.size());
  }
  out->walk_end = off;
  return Status::OK();
}

// The summary the batch headers of a segment give.
SegmentSummary SummaryOf(const VolumeMeta& meta, uint64_t id, uint64_t bytes, const SegScan& s) {
  SegmentSummary sum;
  sum.volume_id = meta.id;
  sum.segment_id = id;
  sum.segment_bytes = bytes;
  for (const SlotInfo& si : s.slots) {
    sum.valid.push_back(si.covered);
    sum.crcs.push_back(si.covered ? si.crc : 0);
  }
  return sum;
}

// Why a stored summary is not `want` (what the batch headers give); "" when
// it is.
std::string SummaryFault(const std::string& data, const SegmentSummary& want) {
  auto sum = DecodeSegmentSummary(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
  if (!sum.ok()) return sum.status().message();
  if (sum->volume_id != want.volume_id || sum->segment_id != want.segment_id) {
    return "summary of another volume or segment";
  }
  if (sum->segment_bytes != want.segment_bytes) {
    return fmt::format("it describes {} bytes, the segment has {}", sum->segment_bytes,
                       want.segment_bytes);
  }
  for (size_t i = 0; i < want.valid.size(); i++) {
    if (sum->valid[i] != want.valid[i] || sum->crcs[i] != want.crcs[i]) {
      return fmt::format("slot {} (offset {}) differs from the batch headers", i, i * kSlotSize);
    }
  }
  return "";
}

// Mapped runs, merged where adjacent in lba and slot of one segment.
std::vector<MapRun> RunsOf(const ExtentMap& map) {
  std::vector<MapRun> runs;
  map.ForEach([&](const MapRun& r) {
    if (!runs.empty()) {
      MapRun& b = runs.back();
      if (b.seg == r.seg && b.lba + b.count == r.lba && b.slot + b.count == r.slot) {
        b.count += r.count;
        return;
      }
    }
    runs.push_back(r);
  });
  return runs;
}

// Where block `lba` is mapped in `runs` (sorted, mapped runs only), as
// (segment, slot); (0, 0) when it is not.
std::pair<uint32_t, uint64_t> WhereIn(const std::vector<MapRun>& runs, uint64_t lba) {
  auto it = std::upper_bound(runs.begin(), runs.end(), lba,
                             [](uint64_t l, const MapRun& r) { return l < r.lba; });
  if (it == runs.begin()) return {0, 0};
  --it;
  if (lba >= it->lba + it->count) return {0, 0};
  return {it->seg, it->slot + (lba - it->lba)};
}

// The first lba where two maps differ, if any. Between two consecutive run
// boundaries (of either map) both maps are unmapped or move one slot per
// block, so comparing them at each boundary is enough.
std::optional<uint64_t> FirstDifference(const ExtentMap& a, const ExtentMap& b) {
  const std::vector<MapRun> ra = RunsOf(a), rb = RunsOf(b);
  std::vector<uint64_t> edges;
  for (const auto* runs : {&ra, &rb}) {
    for (const MapRun& r : *runs) {
      edges.push_back(r.lba);
      edges.push_back(r.lba + r.count);
    }
  }
  std::sort(edges.begin(), edges.end());
  for (uint64_t lba : edges) {
    if (WhereIn(ra, lba) != WhereIn(rb, lba)) return lba;
  }
  return std::nullopt;
}

struct LoadedCheckpoint {
  CheckpointInfo info;
  std::string data;
};

// Reads and validates every checkpoint in `list` (seq, size), increasing:
// the valid ones go to *valid, the corrupt ones are reported.
Status LoadCheckpoints(store::Store* store, const layout::LogDir& dir, const VolumeMeta& meta,
                       const std::vector<std::pair<uint64_t, uint64_t>>& list,
                       std::vector<LoadedCheckpoint>* valid, FsckReport* report) {
  for (auto& [seq, sz] : list) {
    auto data = store->Get(layout::CkptName(dir, seq), layout::kMaxCheckpointBytes);
    if (!data.ok()) {
      if (data.status().IsNotFound()) continue;  // deleted meanwhile
      return data.status().WithContext("checkpoint " + Hex16(seq));
    }
    LoadedCheckpoint c;
    Status s = DecodeCheckpoint(*data, &c.info, nullptr);
    if (s.ok() && (c.info.volume_id != meta.id || c.info.volume_size != meta.size ||
                   c.info.seq != seq)) {
      s = Status::Corruption("checkpoint of another volume, size or name");
    }
    if (s.IsNotSupported()) return s.WithContext("checkpoint " + Hex16(seq));
    if (!s.ok()) {
      FsckProblem p = Corrupt("checkpoint", 0,
                              fmt::format("checkpoint {} ({}) is corrupt: {}", seq, Hex16(seq),
                                          s.message()));
      p.checkpoint = seq;
      report->Add(std::move(p));
      report->corrupt_checkpoints.push_back(seq);
      if (seq == list.back().first) report->newest_checkpoint_bad = true;
      continue;
    }
    c.data = std::move(*data);
    valid->push_back(std::move(c));
  }
  return Status::OK();
}

// Replays the log from checkpoint `older` up to the position of `newer` and
// compares the result with `newer`'s map. Problems go to *report.
Status CompareCheckpoints(store::Store* store, const layout::LogDir& dir, const VolumeMeta& meta,
                          const std::map<uint64_t, SegHead>& segs, const LoadedCheckpoint& older,
                          const LoadedCheckpoint& newer, FsckReport* report) {
  const std::string name = dir.volume();
  const uint64_t blocks = meta.size / kBlockSize;
  ExtentMap replayed(blocks), expected(blocks);
  CheckpointInfo scratch;
  HBISS_RETURN_IF_ERROR(DecodeCheckpoint(older.data, &scratch, &replayed));
  HBISS_RETURN_IF_ERROR(DecodeCheckpoint(newer.data, &scratch, &expected));
  const LogPosition from = older.info.position;
  const LogPosition to = newer.info.position;
  auto mismatch = [&](const std::string& why) {
    FsckProblem p = Corrupt("checkpoint-mismatch", to.segment_id,
                            fmt::format("checkpoint {} and the log replayed from checkpoint {} "
                                        "disagree: {}",
                                        newer.info.seq, older.info.seq, why));
    p.checkpoint = newer.info.seq;
    report->Add(std::move(p));
    return Status::OK();
  };
  if (to < from) return mismatch("the newer one's position is before the older one's");
  if (from.segment_id != 0 && !segs.count(from.segment_id)) {
    FsckProblem p = Corrupt("missing-segment", from.segment_id,
                            fmt::format("segment {}, where the log after checkpoint {} starts, "
                                        "is missing",
                                        Hex16(from.segment_id), older.info.seq));
    p.checkpoint = older.info.seq;
    report->Add(std::move(p));
    return Status::OK();
  }
  // The segments from the older position on, in log order.
  std::vector<uint64_t> order;
  if (from.segment_id != 0) order.push_back(from.segment_id);
  if (from.segment_id != to.segment_id) {
    auto chain = BuildChain(name, segs, from.segment_id);
    if (!chain.ok()) return mismatch(chain.status().message());
    order.insert(order.end(), chain->begin(), chain->end());
  }
  auto at = std::find(order.begin(), order.end(), to.segment_id);
  if (to.segment_id != 0 && at == order.end()) {
    return mismatch("the newer one's segment " + Hex16(to.segment_id) +
                    " is not on the log after the older one's position");
  }
  if (at != order.end()) order.erase(at + 1, order.end());
  LogReplayer replay(meta.id, uint32_t(meta.segment_size / kSlotSize), name, &replayed);
  uint64_t seq = older.info.next_seq;
  for (size_t i = 0; i < order.size(); i++) {
    const uint64_t id = order[i];
    const SegHead& head = segs.at(id);
    uint64_t start = kSlotSize;
    if (i == 0 && id == from.segment_id) {
      start = from.offset;
    } else {
      if (head.header.first_seq != seq) {
        return mismatch(fmt::format("segment {} starts at batch seq {}, expected {}", Hex16(id),
                                    head.header.first_seq, seq));
      }
      if (head.header.flags & kSegmentDiscardPending) replay.DiscardPending();
    }
    const uint64_t limit =
        id == to.segment_id ? to.offset : segs.at(order[i + 1]).header.prev_segment_end;
    auto r = store->Open(layout::SegName(dir, id));
    if (!r.ok()) return r.status().WithContext("volume " + name + ": opening segment");
    uint64_t end = 0;
    Status s = replay.ReplaySegment(r->get(), id, start, &limit, &seq, &end);
    if (s.IsCorruption()) return mismatch(s.message());
    HBISS_RETURN_IF_ERROR(s);
  }
  if (seq != newer.info.next_seq) {
    return mismatch(fmt::format("the log reaches batch seq {} at its position, it says {}", seq,
                                newer.info.next_seq));
  }
  if (auto lba = FirstDifference(replayed, expected)) {
    FsckProblem p = Corrupt("checkpoint-mismatch", 0,
                            fmt::format("checkpoint {} and the log replayed from checkpoint {} "
                                        "map lba {} differently",
                                        newer.info.seq, older.info.seq, *lba));
    p.lba = *lba;
    p.checkpoint = newer.info.seq;
    report->Add(std::move(p));
  }
  return Status::OK();
}

// Why the log does not back block `lba` mapped to `slot` of a segment
// (scan: its scan, null when it is missing); "" when it does.
std::string BlockFault(const SegScan* scan, uint64_t slot, uint64_t lba) {
  if (scan == nullptr) return "segment is missing";
  if (slot >= scan->slots.size()) return "slot is beyond the end of the segment";
  const SlotInfo& si = scan->slots[slot];
  if (!si.covered) return "no valid batch header covers the slot";
  if (si.lba != lba) return fmt::format("the slot holds lba {}", si.lba);
  if (!si.crc_ok) return "data fails its CRC";
  return "";
}

// Reports the mapped blocks of `runs` (all in segment `id`) that the log
// does not back, one problem per stretch of blocks with the same fault.
void CheckMappedBlocks(uint64_t id, const std::vector<MapRun>& runs, const SegScan* scan,
                       FsckReport* report) {
  for (const MapRun& r : runs) {
    for (uint64_t i = 0; i < r.count;) {
      const uint64_t slot = r.slot + i;
      const std::string fault = BlockFault(scan, slot, r.lba + i);
      uint64_t n = 1;
      if (!fault.empty()) {
        while (i + n < r.count && BlockFault(scan, slot + n, r.lba + i + n) == fault) n++;
        FsckProblem p = Corrupt(scan == nullptr                     ? "missing-segment"
                                : fault == "data fails its CRC" ? "data-crc"
                                                                    : "map",
                                id,
                                fmt::format("lba {}{}: segment {} offset {}: {}", r.lba + i,
                                            n > 1 ? fmt::format(" ({} blocks)", n) : "",
                                            Hex16(id), slot * kSlotSize, fault));
        p.lba = r.lba + i;
        p.offset = slot * kSlotSize;
        report->Add(std::move(p));
      }
      i += n;
    }
  }
}

}  // namespace

Status CheckVolumeReferences(store::Store* store, const VolumeMeta& meta,
                             const std::string& log_dir, FsckReport* report) {
  const layout::LogDir dir{log_dir};
  const std::string name = dir.volume();
  auto reg = ReadSnapRegistry(store, dir);
  if (!reg.ok()) {
    if (!reg.status().IsCorruption()) return reg.status();
    report->Add(Corrupt("references", 0, reg.status().message()));
    return Status::OK();
  }
  std::set<uint64_t> present;
  for (const FsckSegment& u : report->segment_usage) present.insert(u.id);
  std::set<uint64_t> held;  // segments some snapshot needs
  for (const SnapshotRecord& rec : reg->snaps) {
    const std::string label = name + "@" + rec.name;
    ExtentMap map(meta.size / kBlockSize);
    bool materialized = false;
    Status s = LoadSnapshotMap(store, dir, meta, rec, &map, &materialized);
    if (!s.ok()) {
      if (!s.IsCorruption() && !s.IsNotFound()) return s;
      report->Add(Corrupt("references", 0, "snapshot " + label + ": " + s.message()));
      // What it holds is unknown: no segment may be called leaked (repair
      // would delete it).
      report->references_known = false;
      continue;
    }
    std::set<uint64_t> missing;
    map.ForEach([&](const MapRun& r) {
      if (LayerOf(r.seg) != 0) return;  // a parent's (checked below)
      held.insert(r.seg);
      if (!present.count(r.seg)) missing.insert(r.seg);
    });
    for (uint64_t seg : missing) {
      report->Add(Corrupt("references", seg,
                          fmt::format("snapshot {} needs segment {}, which is missing", label,
                                      Hex16(seg))));
    }
    if (!missing.empty()) continue;
    // Every block of the snapshot against its CRC (reads check them).
    OpenOptions ro;
    ro.read_only = true;
    // By id: a trashed snapshot is checked too (its clones read it), and
    // the live one of the same name is another snapshot.
    auto v = OpenSnapshotView(store, name, rec.name, rec.id, ro);
    if (!v.ok()) {
      report->Add(Corrupt("references", 0, "snapshot " + label + ": " + v.status().message()));
      continue;
    }
    std::vector<uint8_t> buf;
    Status bad;
    map.ForEach([&](const MapRun& r) {
      for (uint64_t b = r.lba; b < r.lba + r.count && bad.ok(); b += 256) {
        const uint64_t n = std::min<uint64_t>(256, r.lba + r.count - b);
        buf.resize(n * kBlockSize);
        Status rs = (*v)->Read(b * kBlockSize, buf);
        if (rs.ok()) continue;
        if (!rs.IsCorruption()) {
          bad = rs;
          break;
        }
        // Which blocks: one read each.
        for (uint64_t x = b; x < b + n; x++) {
          Status xs = (*v)->Read(x * kBlockSize, std::span<uint8_t>(buf.data(), kBlockSize));
          if (xs.ok()) continue;
          FsckProblem p = Corrupt("snapshot-data", r.seg,
                                  fmt::format("snapshot {} lba {}: {}", label, x, xs.message()));
          p.lba = x;
          report->Add(std::move(p));
        }
      }
    });
    if (!bad.ok()) return bad;
  }
  // A clone: its parents and their snapshots must be there.
  if (!meta.parents.empty()) {
    ExtentMap base(meta.size / kBlockSize);
    Status b = LoadCloneBase(store, meta, &base);
    if (!b.ok()) {
      if (!b.IsCorruption() && !b.IsNotFound()) return b;
      report->Add(Corrupt("references", 0, "clone " + name + ": " + b.message()));
      report->references_known = false;
    }
  }
  // What a snapshot holds is not leaked.
  for (auto it = report->problems.begin(); it != report->problems.end();) {
    if (it->check == "leaked-segment" && held.count(it->segment)) {
      report->leaks--;
      report->leaked_bytes -= it->bytes;
      it = report->problems.erase(it);
    } else {
      ++it;
    }
  }
  auto& leaked = report->leaked_segments;
  leaked.erase(std::remove_if(leaked.begin(), leaked.end(),
                              [&](uint64_t id) { return held.count(id) != 0; }),
               leaked.end());
  return Status::OK();
}

namespace {

// The epoch and the names and sizes of the log's segments and checkpoints:
// whether a writer changed the log while a check ran.
Result<std::string> LogFingerprint(store::Store* store, const std::string& name) {
  HBISS_ASSIGN_OR_RETURN(CurrentLog cur, ResolveLog(store, name));
  std::string f = cur.dir.path;
  for (const std::string& d : {layout::SegDir(cur.dir), layout::CkptDir(cur.dir)}) {
    HBISS_ASSIGN_OR_RETURN(auto ids, ListIds(store, d));
    f += ";";
    for (auto& [id, size] : ids) f += fmt::format("{}:{},", id, size);
  }
  return f;
}

Result<FsckReport> CheckOnce(store::Store* store, const std::string& name) {
  HBISS_ASSIGN_OR_RETURN(VolumeMeta meta, ReadMeta(store, name));
  HBISS_ASSIGN_OR_RETURN(CurrentLog cur, ResolveLog(store, name));
  const layout::LogDir& dir = cur.dir;
  FsckReport report;
  report.volume = name;
  report.epoch = cur.epoch;
  const uint64_t blocks = meta.size / kBlockSize;

  HBISS_ASSIGN_OR_RETURN(auto sum_list, ListIds(store, layout::SumDir(dir)));
  HBISS_ASSIGN_OR_RETURN(auto ckpt_list, ListIds(store, layout::CkptDir(dir)));
  const std::map<uint64_t, uint64_t> sum_sizes(sum_list.begin(), sum_list.end());
  report.checkpoints = ckpt_list.size();

  // Checkpoints: each one's own validity.
  std::vector<LoadedCheckpoint> valid;  // increasing seq
  HBISS_RETURN_IF_ERROR(LoadCheckpoints(store, dir, meta, ckpt_list, &valid, &report));

  // The map as Open recovers it (read-only); without a recovered log, the
  // newest valid checkpoint's map alone.
  ExtentMap map(blocks);
  RecoveredLog rec;
  Status rs = RecoverLog(store, dir, meta, /*read_only=*/true, &map, &rec);
  if (rs.ok()) {
    report.log_recovers = true;
    if (rec.found_checkpoint) report.checkpoint_seq = rec.checkpoint.seq;
  } else if (rs.IsCorruption()) {
    report.Add(Corrupt("log", 0, "the log does not recover: " + rs.message()));
    map.Reset();
    if (!valid.empty()) {
      CheckpointInfo ci;
      HBISS_RETURN_IF_ERROR(DecodeCheckpoint(valid.back().data, &ci, &map));
      report.checkpoint_seq = ci.seq;
    }
  } else {
    return rs;
  }
  report.mapped_blocks = map.MappedBlocks();
  report.references_known = report.log_recovers;

  // The segments: those recovery listed, so that every segment the map
  // points into is among them even while a writer adds segments.
  std::map<uint64_t, uint64_t> seg_sizes = rec.segment_bytes;
  if (!rs.ok()) {
    HBISS_ASSIGN_OR_RETURN(auto seg_list, ListIds(store, layout::SegDir(dir)));
    seg_sizes.insert(seg_list.begin(), seg_list.end());
  }
  report.segments = seg_sizes.size();
  for (auto& [id, sz] : seg_sizes) report.log_bytes += sz;
  HBISS_ASSIGN_OR_RETURN(auto segs, ReadSegmentHeaders(store, dir, meta, seg_sizes, 0, false));

  // What references segments: each valid checkpoint's list, the segment of
  // its position and the chain after it; with none, the chain from the start.
  std::set<uint64_t> referenced(rec.segment_ids.begin(), rec.segment_ids.end());
  auto add_log_of = [&](const CheckpointInfo* ci) {
    const uint64_t c = ci ? ci->position.segment_id : 0;
    if (c != 0) referenced.insert(c);
    if (ci) {
      for (uint64_t id : ci->segment_ids) {
        referenced.insert(id);
        if (!seg_sizes.count(id)) {
          FsckProblem p = Corrupt("missing-segment", id,
                                  fmt::format("segment {} named by checkpoint {} is missing",
                                              Hex16(id), ci->seq));
          p.checkpoint = ci->seq;
          report.Add(std::move(p));
        }
      }
    }
    auto chain = BuildChain(name, segs, c);
    if (chain.ok()) {
      referenced.insert(chain->begin(), chain->end());
    } else {
      report.references_known = false;
    }
  };
  if (valid.empty()) add_log_of(nullptr);
  for (const LoadedCheckpoint& c : valid) add_log_of(&c.info);

  // The map's runs by segment.
  std::map<uint64_t, std::vector<MapRun>> runs_by_seg;
  for (const MapRun& r : RunsOf(map)) {
    // A clone's blocks in its parents' logs: CheckVolumeReferences.
    if (LayerOf(r.seg) == 0) runs_by_seg[r.seg].push_back(r);
  }
  for (auto& [id, runs] : runs_by_seg) {
    referenced.insert(id);
    if (!seg_sizes.count(id)) CheckMappedBlocks(id, runs, nullptr, &report);
  }

  // Every segment object.
  for (auto& [id, size] : seg_sizes) {
    SegScan scan;
    auto st = ScanSegment(store, dir, meta, id, &report, &scan);
    if (st.IsNotFound()) continue;  // deleted meanwhile (a writer's cleaner)
    HBISS_RETURN_IF_ERROR(st);
    FsckSegment u;
    u.id = id;
    u.bytes = size;
    u.referenced = referenced.count(id) > 0;
    u.summary = sum_sizes.count(id) > 0;
    auto runs = runs_by_seg.find(id);
    std::vector<bool> live(scan.slots.size(), false);
    if (runs != runs_by_seg.end()) {
      for (const MapRun& r : runs->second) {
        u.live_blocks += r.count;
        for (uint64_t k = r.slot; k < r.slot + r.count && k < live.size(); k++) live[k] = true;
      }
      CheckMappedBlocks(id, runs->second, &scan, &report);
    }
    for (size_t k = 0; k < scan.slots.size(); k++) {
      if (scan.slots[k].covered && !scan.slots[k].crc_ok && !live[k]) report.dead_bad_slots++;
    }
    if (u.referenced && !scan.header_ok) {
      report.Add(Corrupt("segment-header", id,
                         fmt::format("segment {} offset 0: bad segment header: {}", Hex16(id),
                                     scan.header_error)));
    }
    if (u.referenced && !scan.walk_error.empty() && runs != runs_by_seg.end()) {
      // Blocks mapped past the bad header are reported above; name the
      // header itself too.
      bool beyond = false;
      for (const MapRun& r : runs->second) beyond |= (r.slot + r.count) * kSlotSize > scan.walk_end;
      if (beyond) {
        FsckProblem p = Corrupt("batch-header", id,
                                fmt::format("segment {} offset {}: bad batch header: {}",
                                            Hex16(id), scan.walk_end, scan.walk_error));
        p.offset = scan.walk_end;
        report.Add(std::move(p));
      }
    }
    if (!u.referenced) {
      FsckProblem p;
      p.kind = FsckKind::kLeak;
      p.check = "leaked-segment";
      p.segment = id;
      p.bytes = size + (u.summary ? sum_sizes.at(id) : 0);
      p.message = fmt::format("segment {}: {} bytes, not referenced by the log or any checkpoint{}",
                              Hex16(id), p.bytes,
                              report.references_known
                                  ? ""
                                  : " (the log is damaged: it may be part of what is lost)");
      report.Add(std::move(p));
      report.leaked_segments.push_back(id);
    } else if (u.summary) {
      // The summary against the batch headers.
      auto data = store->Get(layout::SumName(dir, id), layout::kMaxSummaryBytes);
      if (!data.ok()) {
        if (!data.status().IsNotFound()) return data.status().WithContext("summary " + Hex16(id));
      } else {
        const SegmentSummary want = SummaryOf(meta, id, size, scan);
        const std::string why = SummaryFault(*data, want);
        if (!why.empty()) {
          report.Add(Corrupt("summary", id,
                             fmt::format("summary of segment {} is wrong: {}", Hex16(id), why)));
          if (scan.header_ok) report.summary_fixes.emplace(id, want);
        }
      }
    }
    report.segment_usage.push_back(u);
  }
  for (auto& [id, size] : sum_sizes) {
    // A summary of a missing segment that is referenced is not the problem.
    if (seg_sizes.count(id) || referenced.count(id)) continue;
    FsckProblem p;
    p.kind = FsckKind::kLeak;
    p.check = "leaked-summary";
    p.segment = id;
    p.bytes = size;
    p.message = fmt::format("summary {}: {} bytes, its segment is gone", Hex16(id), size);
    report.Add(std::move(p));
    report.leaked_summaries.push_back(id);
  }

  // Older valid checkpoints against the newest.
  for (size_t i = 0; i + 1 < valid.size(); i++) {
    HBISS_RETURN_IF_ERROR(CompareCheckpoints(store, dir, meta, segs, valid[i], valid.back(),
                                             &report));
  }

  HBISS_RETURN_IF_ERROR(CheckVolumeReferences(store, meta, dir.path, &report));
  return report;
}

}  // namespace

Result<FsckReport> CheckVolume(store::Store* store, const std::string& name) {
  HBISS_RETURN_IF_ERROR(Volume::ValidateName(name));
  // A writer may change the log under a check (its cleaner deletes
  // segments, it appends, it writes checkpoints): a check that found
  // something while the log changed is done again, a few times.
  constexpr int kAttempts = 3;
  for (int attempt = 1;; attempt++) {
    HBISS_ASSIGN_OR_RETURN(std::string before, LogFingerprint(store, name));
    Result<FsckReport> r = CheckOnce(store, name);
    if (attempt == kAttempts || (r.ok() && r->problems.empty())) return r;
    auto after = LogFingerprint(store, name);
    if (!after.ok() || *after == before) return r;
  }
}

Status RepairVolume(store::Store* store, const std::string& name, const FsckReport& found,
                    std::vector<std::string>* actions) {
  const std::string busy =
      "volume " + name + " is open for writing by another process; fsck --repair needs it closed";
  if (found.newest_checkpoint_bad && found.log_recovers) {
    OpenOptions oo;
    oo.clean_threshold = 0;  // only recovery and a fresh checkpoint
    auto v = Volume::Open(store, name, oo);
    if (!v.ok()) {
      if (v.status().IsBusy()) return Status::Busy(busy);
      return v.status().WithContext("opening the volume to write a fresh checkpoint");
    }
    HBISS_RETURN_IF_ERROR((*v)->Close().WithContext("closing the volume"));
    HBISS_ASSIGN_OR_RETURN(VolumeInfo info, Volume::Stat(store, name));
    actions->push_back(fmt::format("wrote checkpoint {} (recovered from the log)",
                                   info.checkpoint_seq));
  }
  auto lock = store->TryLock(layout::LockName(name));
  if (!lock.ok()) {
    if (lock.status().IsBusy()) return Status::Busy(busy);
    return lock.status().WithContext("volume " + name + ": taking lock");
  }
  // Again under the lock: the open above, or a writer before it, changed
  // what there is.
  HBISS_ASSIGN_OR_RETURN(FsckReport now, CheckVolume(store, name));
  HBISS_ASSIGN_OR_RETURN(CurrentLog cur, ResolveLog(store, name));
  const layout::LogDir& dir = cur.dir;
  auto del = [&](const std::string& obj) -> Status {
    Status s = store->Delete(obj);
    return s.IsNotFound() ? Status::OK() : s;
  };
  // With a damaged log, a segment that seems to be referenced by nothing may
  // be the rest of it (after a missing link): it stays.
  if (!now.references_known && !now.leaked_segments.empty()) {
    actions->push_back(fmt::format("kept {} leaked segments: the log is damaged, so what "
                                   "references them is not known",
                                   now.leaked_segments.size()));
    now.leaked_segments.clear();
  }
  for (uint64_t id : now.leaked_segments) {
    HBISS_RETURN_IF_ERROR(del(layout::SumName(dir, id)));
    HBISS_RETURN_IF_ERROR(del(layout::SegName(dir, id)));
    actions->push_back("deleted leaked segment " + Hex16(id));
  }
  for (uint64_t id : now.leaked_summaries) {
    HBISS_RETURN_IF_ERROR(del(layout::SumName(dir, id)));
    actions->push_back("deleted leaked summary " + Hex16(id));
  }
  for (auto& [id, sum] : now.summary_fixes) {
    const std::string data = EncodeSegmentSummary(sum);
    HBISS_RETURN_IF_ERROR(store->Put(
        layout::SumName(dir, id),
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size())));
    actions->push_back("rewrote the summary of segment " + Hex16(id) + " from its batch headers");
  }
  // A corrupt checkpoint below a valid one is never loaded; one above it
  // stays (it would take a fresh checkpoint, above, to go past it).
  const uint64_t newest_valid = now.log_recovers ? now.checkpoint_seq : 0;
  for (uint64_t seq : now.corrupt_checkpoints) {
    if (seq >= newest_valid) continue;
    HBISS_RETURN_IF_ERROR(del(layout::CkptName(dir, seq)));
    actions->push_back(fmt::format("deleted corrupt checkpoint {}", seq));
  }
  return Status::OK();
}

}  // namespace hbiss::volume
