#include "volume/space.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <utility>

#include "volume/clone.h"
#include "volume/epoch.h"
#include "volume/layout.h"
#include "volume/recovery.h"
#include "volume/snapshot_registry.h"
#include "volume/volume.h"
#include "volume/volume_meta.h"

namespace hbiss::volume {
namespace {

// A writer's cleaner may delete a segment, or a new owner rename the log,
// between listing and reading: a read that fails so is tried again, on the
// log as it is then.
constexpr int kAttempts = 5;

bool MayBeRace(const Status& s) { return s.IsNotFound() || s.IsCorruption(); }

// An error the retries cannot cure (a missing snapshot, unrelated volumes).
struct Final {
  Status status;
};

// Runs `attempt` until it succeeds, fails for good (*final set), or the
// attempts run out.
template <typename Fn>
Status WithRetries(Fn attempt) {
  Status s;
  for (int i = 0; i < kAttempts; i++) {
    bool final = false;
    s = attempt(&final);
    if (s.ok() || final || !MayBeRace(s)) return s;
  }
  return s;
}

// The head's map as a read-only recovery of log `dir` sees it now.
Status LoadHead(store::Store* store, const layout::LogDir& dir, const VolumeMeta& meta,
                ExtentMap* map) {
  map->Reset();
  RecoveredLog rec;
  Status s = RecoverLog(store, dir, meta, /*read_only=*/true, map, &rec);
  if (!s.ok()) map->Reset();
  return s;
}

uint64_t DataBytes(const std::vector<DiffExtent>& d) {
  uint64_t n = 0;
  for (const DiffExtent& e : d) n += e.data ? e.length : 0;
  return n;
}

Status NoSnapshot(const std::string& vol, const std::string& snap) {
  return Status::NotFound("snapshot " + vol + "@" + snap + " does not exist");
}

// The map of state (vol, snap) into *map: snapshot `snap` in `reg`, or the
// head when snap is empty. A missing snapshot is final.
Status LoadState(store::Store* store, const CurrentLog& cur, const VolumeMeta& meta,
                 const SnapRegistry& reg, const std::string& vol, const std::string& snap,
                 ExtentMap* map, bool* final) {
  if (snap.empty()) return LoadHead(store, cur.dir, meta, map);
  const SnapshotRecord* rec = reg.Find(snap);
  if (rec == nullptr) {
    *final = true;
    return NoSnapshot(vol, snap);
  }
  bool materialized = false;
  return LoadSnapshotMap(store, cur.dir, meta, *rec, map, &materialized);
}

}  // namespace

Result<std::vector<DiffExtent>> DiffMaps(const ExtentMap& from, const ExtentMap& to) {
  if (from.blocks() != to.blocks()) {
    return Status::InvalidArgument("the two maps are of different sizes");
  }
  std::vector<MapRun> a, b;
  HBISS_RETURN_IF_ERROR(from.Lookup(0, from.blocks(), &a));
  HBISS_RETURN_IF_ERROR(to.Lookup(0, to.blocks(), &b));
  std::vector<DiffExtent> out;
  auto add = [&](uint64_t lba, uint64_t count, bool data) {
    const uint64_t off = lba * kBlockSize, len = count * kBlockSize;
    if (!out.empty() && out.back().data == data &&
        out.back().offset + out.back().length == off) {
      out.back().length += len;
    } else {
      out.push_back({off, len, data});
    }
  };
  // Both lists cover [0, blocks) in order: walk them together, one piece
  // at a time where neither changes its run.
  size_t i = 0, j = 0;
  uint64_t lba = 0;
  while (i < a.size() && j < b.size()) {
    const MapRun& x = a[i];
    const MapRun& y = b[j];
    const uint64_t end = std::min(x.lba + x.count, y.lba + y.count);
    const uint64_t n = end - lba;
    const bool same = x.mapped == y.mapped &&
                      (!x.mapped || (x.seg == y.seg && x.slot + (lba - x.lba) ==
                                                           y.slot + (lba - y.lba)));
    if (!same) add(lba, n, y.mapped);
    lba = end;
    if (lba == x.lba + x.count) i++;
    if (lba == y.lba + y.count) j++;
  }
  return out;
}

Result<std::vector<DiffExtent>> Diff(store::Store* store, const std::string& from,
                                     const std::string& to) {
  std::string fvol, fsnap, tvol, tsnap;
  HBISS_RETURN_IF_ERROR(Volume::ParseSpec(from, &fvol, &fsnap));
  HBISS_RETURN_IF_ERROR(Volume::ParseSpec(to, &tvol, &tsnap));
  if (fsnap.empty()) {
    return Status::InvalidArgument("'" + from + "' names no snapshot: write VOL@SNAP");
  }
  HBISS_ASSIGN_OR_RETURN(VolumeMeta tmeta, ReadMeta(store, tvol));
  std::optional<VolumeMeta> fmeta;
  if (fvol != tvol) {
    // Only a clone against the snapshot it was made from.
    const bool parent = !tmeta.parents.empty() && tmeta.parents.front().volume == fvol;
    if (!parent) {
      return Status::InvalidArgument(
          "'" + from + "' and '" + to +
          "' are different volumes: diff compares two states of one volume, or a clone "
          "with the snapshot it was made from");
    }
    HBISS_ASSIGN_OR_RETURN(fmeta, ReadMeta(store, fvol));
  }
  const uint64_t blocks = tmeta.size / kBlockSize;
  ExtentMap a(blocks), b(blocks);
  std::vector<DiffExtent> out;
  Status s = WithRetries([&](bool* final) -> Status {
    if (fmeta) {
      HBISS_ASSIGN_OR_RETURN(CurrentLog pcur, ResolveLog(store, fvol));
      HBISS_ASSIGN_OR_RETURN(SnapRegistry preg, ReadSnapRegistry(store, pcur.dir));
      const SnapshotRecord* rec = preg.Find(fsnap);
      if (rec == nullptr) {
        *final = true;
        return NoSnapshot(fvol, fsnap);
      }
      if (rec->id != tmeta.parents.front().snap_id) {
        *final = true;
        return Status::InvalidArgument("'" + to + "' is a clone of " + fvol + "@" +
                                       tmeta.parents.front().snap + ", not of '" + from + "'");
      }
      HBISS_RETURN_IF_ERROR(LoadCloneBase(store, tmeta, &a));
    }
    HBISS_ASSIGN_OR_RETURN(CurrentLog cur, ResolveLog(store, tvol));
    HBISS_ASSIGN_OR_RETURN(SnapRegistry reg, ReadSnapRegistry(store, cur.dir));
    if (!fmeta) HBISS_RETURN_IF_ERROR(LoadState(store, cur, tmeta, reg, fvol, fsnap, &a, final));
    HBISS_RETURN_IF_ERROR(LoadState(store, cur, tmeta, reg, tvol, tsnap, &b, final));
    HBISS_ASSIGN_OR_RETURN(out, DiffMaps(a, b));
    return Status::OK();
  });
  if (!s.ok()) return s;
  return out;
}

Result<DiskUsage> GetDiskUsage(store::Store* store, const std::string& name) {
  if (name.find('@') != std::string::npos) {
    return Status::InvalidArgument("'" + name + "' is a snapshot: du takes a volume");
  }
  HBISS_RETURN_IF_ERROR(Volume::ValidateName(name));
  HBISS_ASSIGN_OR_RETURN(VolumeMeta meta, ReadMeta(store, name));
  const uint64_t blocks = meta.size / kBlockSize;
  DiskUsage du;
  Status s = WithRetries([&](bool* final) -> Status {
    (void)final;
    du = DiskUsage{};
    du.volume = name;
    du.provisioned = meta.size;
    HBISS_ASSIGN_OR_RETURN(CurrentLog cur, ResolveLog(store, name));
    HBISS_ASSIGN_OR_RETURN(SnapRegistry reg, ReadSnapRegistry(store, cur.dir));
    // Each row against the one before; a clone's first against its parent.
    auto prev = std::make_unique<ExtentMap>(blocks);
    auto next = std::make_unique<ExtentMap>(blocks);
    if (!meta.parents.empty()) HBISS_RETURN_IF_ERROR(LoadCloneBase(store, meta, prev.get()));
    // rec: a snapshot (trashed ones too: they still hold what they hold), or
    // null for the head.
    auto row = [&](const SnapshotRecord* rec) -> Status {
      if (rec == nullptr) {
        HBISS_RETURN_IF_ERROR(LoadHead(store, cur.dir, meta, next.get()));
      } else {
        bool materialized = false;
        HBISS_RETURN_IF_ERROR(
            LoadSnapshotMap(store, cur.dir, meta, *rec, next.get(), &materialized));
      }
      HBISS_ASSIGN_OR_RETURN(auto d, DiffMaps(*prev, *next));
      du.rows.push_back({rec == nullptr ? "" : rec->name, meta.size, DataBytes(d),
                         next->MappedBlocks() * kBlockSize, rec != nullptr && rec->trashed});
      std::swap(prev, next);
      return Status::OK();
    };
    for (const SnapshotRecord& r : reg.snaps) HBISS_RETURN_IF_ERROR(row(&r));
    HBISS_RETURN_IF_ERROR(row(nullptr));
    // prev now holds the head.
    prev->ForEach([&](const MapRun& r) {
      (LayerOf(r.seg) == 0 ? du.own : du.shared) += r.count * kBlockSize;
    });
    du.mapped = du.own + du.shared;
    auto sum = [&](const std::string& dir, uint64_t* bytes) -> Status {
      HBISS_ASSIGN_OR_RETURN(auto ids, ListIds(store, dir));
      for (const auto& [id, size] : ids) *bytes += size;
      return Status::OK();
    };
    HBISS_RETURN_IF_ERROR(sum(layout::SegDir(cur.dir), &du.segment_bytes));
    HBISS_RETURN_IF_ERROR(sum(layout::CkptDir(cur.dir), &du.checkpoint_bytes));
    HBISS_RETURN_IF_ERROR(sum(layout::SnapDir(cur.dir), &du.snapshot_map_bytes));
    HBISS_RETURN_IF_ERROR(sum(layout::SumDir(cur.dir), &du.summary_bytes));
    du.store_bytes =
        du.segment_bytes + du.checkpoint_bytes + du.snapshot_map_bytes + du.summary_bytes;
    return Status::OK();
  });
  if (!s.ok()) return s;
  return du;
}

}  // namespace hbiss::volume
