// Snapshots of a volume (doc/snapshots.md): VolumeImpl's part. The registry
// and object names are in snapshot_registry.h; rebuilding a pending
// snapshot's map from the log is ReplayLogTo (recovery.h).
//
// Creating one: under write_mu_ and mu_ (no operation in progress) seal the
// open batch, note the next batch seq (stop_seq: the snapshot is every batch
// before it) and take a copy-on-write snapshot of the map (one directory
// copy). Then flush (a NoSpace re-log meanwhile makes the creation fail:
// the map points into the old log), and write the record into the
// registry: from then on the snapshot exists. The flusher writes its map
// object afterwards, and writes no checkpoint before that, so a crash in
// between loses nothing:
// the next writable open rebuilds the map from the log (which no checkpoint
// has yet let the cleaner delete) and writes it.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <set>

#include <spdlog/spdlog.h>

#include "util/bytes.h"
#include "util/thread.h"
#include "volume/checkpoint.h"
#include "volume/clone.h"
#include "volume/epoch.h"
#include "volume/recovery.h"
#include "volume/volume_impl.h"

namespace hbiss::volume {

namespace {

// The segments the runs of `map` point into, increasing.
std::vector<uint64_t> SegmentsOf(const ExtentMap& map) {
  std::set<uint64_t> segs;
  map.ForEach([&](const MapRun& r) {
    if (LayerOf(r.seg) == 0) segs.insert(r.seg);  // a parent's: pinned by its snapshot
  });
  return {segs.begin(), segs.end()};
}

// Whether any block of `map` lives in a parent's log (clone.h).
bool UsesParents(const ExtentMap& map) {
  bool uses = false;
  map.ForEach([&](const MapRun& r) { uses |= LayerOf(r.seg) != 0; });
  return uses;
}

Status ValidateSnapName(const std::string& snap) {
  Status s = Volume::ValidateName(snap);
  if (s.ok()) return s;
  std::string m = s.message();
  if (m.rfind("volume name", 0) == 0) m.replace(0, 11, "snapshot name");
  return Status::InvalidArgument(m);
}

}  // namespace

Status Volume::ParseSpec(const std::string& spec, std::string* volume, std::string* snap) {
  const size_t at = spec.find('@');
  if (at == std::string::npos) {
    HBISS_RETURN_IF_ERROR(ValidateName(spec));
    *volume = spec;
    snap->clear();
    return Status::OK();
  }
  const std::string v = spec.substr(0, at), s = spec.substr(at + 1);
  HBISS_RETURN_IF_ERROR(ValidateName(v));
  HBISS_RETURN_IF_ERROR(ValidateSnapName(s));
  *volume = v;
  *snap = s;
  return Status::OK();
}

Result<std::vector<SnapshotInfo>> Volume::ListSnapshots(store::Store* store,
                                                        const std::string& name,
                                                        bool include_trashed) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  HBISS_ASSIGN_OR_RETURN(VolumeMeta meta, ReadMeta(store, name));
  HBISS_ASSIGN_OR_RETURN(CurrentLog cur, ResolveLog(store, name));
  HBISS_ASSIGN_OR_RETURN(SnapRegistry reg, ReadSnapRegistry(store, cur.dir));
  HBISS_ASSIGN_OR_RETURN(auto objs, ListIds(store, layout::SnapDir(cur.dir)));
  std::vector<SnapshotInfo> out;
  for (const SnapshotRecord& r : reg.snaps) {
    if (r.trashed && !include_trashed) continue;
    SnapshotInfo i;
    i.id = r.id;
    i.name = r.name;
    i.created = r.created;
    i.size = meta.size;
    i.mapped_bytes = r.mapped_blocks * kBlockSize;
    i.materialized = std::any_of(objs.begin(), objs.end(), [&](auto& o) { return o.first == r.id; });
    i.trashed = r.trashed;
    out.push_back(std::move(i));
  }
  return out;
}

// ---------------------------------------------------------------------------
// Loading

Status VolumeImpl::LoadSnapMap(const layout::LogDir& dir, const SnapshotRecord& rec,
                               ExtentMap* map, bool* materialized) {
  return LoadSnapshotMap(store_, dir, meta_, rec, map, materialized);
}

Status VolumeImpl::RecoverSnapshotView() {
  Lock l(&mu_);
  view_dir_ = dir_;
  for (int attempt = 0;; attempt++) {
    HBISS_ASSIGN_OR_RETURN(SnapRegistry reg, ReadSnapRegistry(store_, view_dir_));
    const SnapshotRecord* rec = reg.Find(snap_);
    if (snap_id_ != 0) {
      rec = nullptr;
      for (const SnapshotRecord& r : reg.snaps) {
        if (r.id == snap_id_) rec = &r;
      }
    }
    Status s;
    if (rec == nullptr) {
      s = Status::NotFound("snapshot " + SnapLabel(snap_) + " does not exist");
    } else {
      bool materialized = false;
      s = LoadSnapMap(view_dir_, *rec, &map_, &materialized);
    }
    if (s.ok()) return s;
    // A new owner may have renamed the log (a new epoch) under the reads.
    HBISS_ASSIGN_OR_RETURN(CurrentLog cur, ResolveLog(store_, name_));
    if (cur.dir == view_dir_ || attempt == 4) return s;
    view_dir_ = cur.dir;
    cache_.SetDir(cur.dir);
    epoch_.store(cur.epoch, std::memory_order_relaxed);
  }
}

Status VolumeImpl::MaterializeSnap(uint64_t id, uint64_t stop_seq, LogPosition pos,
                                   const ExtentMap& map) {
  CheckpointInfo ci;
  ci.volume_id = meta_.id;
  ci.seq = id;
  ci.position = pos;
  ci.next_seq = stop_seq;
  ci.volume_size = meta_.size;
  ci.segment_ids = SegmentsOf(map);
  RunCheckpointEncodeHook();
  const std::string data = EncodeCheckpoint(ci, map);
  Status s = store_->Put(layout::SnapName(dir_, id), AsBytes(data));
  if (ReleaseReserve(s)) s = store_->Put(layout::SnapName(dir_, id), AsBytes(data));
  HBISS_RETURN_IF_ERROR(s.WithContext("volume " + name_ + ": writing snapshot map " + Hex16(id)));
  ckpts_.Pin(id, std::move(ci.segment_ids));
  return Status::OK();
}

Status VolumeImpl::LoadSnapshots() {
  Lock sl(&snap_mu_);
  HBISS_ASSIGN_OR_RETURN(registry_, ReadSnapRegistry(store_, dir_));
  HBISS_ASSIGN_OR_RETURN(auto objs, ListIds(store_, layout::SnapDir(dir_)));
  std::set<uint64_t> have;
  for (auto& [id, size] : objs) have.insert(id);
  for (const SnapshotRecord& rec : registry_.snaps) {
    ExtentMap m(meta_.size / kBlockSize);
    bool materialized = false;
    if (Status ls = LoadSnapMap(dir_, rec, &m, &materialized); !ls.ok()) {
      if (have.count(rec.id) == 0 && !ls.IsCorruption() && !ls.IsNotFound()) {
        // Pending, and the error may pass (IOError, Busy, ...): this open
        // would write checkpoints and delete the old ones, which are what
        // its map is rebuilt from, and the snapshot would be lost for good.
        // The open fails instead; the next one tries again.
        return ls.WithContext("volume " + name_ + ": snapshot " + SnapLabel(rec.name) +
                              " has no map object yet and cannot be rebuilt now (retry the "
                              "open)");
      }
      // Its map object cannot be read, or the log cannot give its map back
      // (Corruption, NotFound: the log really lacks it). The volume opens
      // (so that it can be removed); nothing is deleted from its log from
      // now on (the snapshot may need any of it). hbiss fsck reports it.
      spdlog::error("volume {}: snapshot {} cannot be read: {}; the cleaner deletes nothing "
                    "while this open lasts (hbiss fsck reports it; hbiss snap rm removes it)",
                    name_, SnapLabel(rec.name), ls.ToString());
      ckpts_.PinAll();
      continue;
    }
    if (materialized) {
      ckpts_.Pin(rec.id, SegmentsOf(m));
      continue;
    }
    // Created just before a crash: write its map now, before any checkpoint
    // can let the cleaner delete the log it was rebuilt from.
    LogPosition pos;  // informational in a snapshot's map object
    HBISS_RETURN_IF_ERROR(MaterializeSnap(rec.id, rec.stop_seq, pos, m));
    spdlog::info("volume {}: wrote the map of snapshot {}, rebuilt from the log", name_,
                 SnapLabel(rec.name));
  }
  // Map objects of no snapshot: a removal or a creation a crash cut short.
  for (uint64_t id : have) {
    if (std::none_of(registry_.snaps.begin(), registry_.snaps.end(),
                     [&](const SnapshotRecord& r) { return r.id == id; })) {
      Status d = store_->Delete(layout::SnapName(dir_, id));
      if (!d.ok() && !d.IsNotFound()) {
        spdlog::warn("volume {}: deleting an unused snapshot map: {}", name_, d.ToString());
      }
    }
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------
// The flusher's part

bool VolumeImpl::SnapsToMaterializeLocked() const {
  return std::any_of(pending_snaps_.begin(), pending_snaps_.end(),
                     [](const PendingSnap& p) { return p.recorded && p.map != nullptr; });
}

bool VolumeImpl::MaterializePendingLocked(Lock& l) {
  bool all_ok = true;
  for (;;) {
    auto it = std::find_if(pending_snaps_.begin(), pending_snaps_.end(),
                           [](const PendingSnap& p) { return p.recorded && p.map != nullptr; });
    if (it == pending_snaps_.end()) break;
    const uint64_t id = it->id, stop = it->stop_seq;
    const LogPosition pos = it->position;
    std::unique_ptr<ExtentMap> map = std::move(it->map);
    // (mu_ itself, not l: the analysis sees this function REQUIRES(mu_).)
    mu_.Unlock();
    Status s = MaterializeSnap(id, stop, pos, *map);
    mu_.Lock();
    auto again = std::find_if(pending_snaps_.begin(), pending_snaps_.end(),
                              [&](const PendingSnap& p) { return p.id == id; });
    if (s.ok()) {
      if (again != pending_snaps_.end()) pending_snaps_.erase(again);
      snap_write_failed_ = false;
    } else {
      spdlog::warn("{}; retried later (no checkpoint is written meanwhile)", s.ToString());
      if (again != pending_snaps_.end()) again->map = std::move(map);
      snap_write_failed_ = true;
      all_ok = false;
      break;
    }
  }
  done_cv_.SignalAll();
  return all_ok;
}

void VolumeImpl::SnapWriterLoop() {
  Lock l(&mu_);
  while (!stop_ && failed_.ok() && SnapsToMaterializeLocked()) {
    if (!MaterializePendingLocked(l)) done_cv_.WaitFor(&mu_, std::chrono::seconds(1));
  }
  snap_writer_running_ = false;
  flusher_cv_.Signal();  // checkpoints may go on
  done_cv_.SignalAll();
}

Status VolumeImpl::AwaitMaterializedLocked() {
  while (!pending_snaps_.empty() && failed_.ok() && !stop_ && !snap_write_failed_) {
    done_cv_.Wait(&mu_);
  }
  if (pending_snaps_.empty()) return Status::OK();
  HBISS_RETURN_IF_ERROR(UsableLocked());
  return Status::IOError("volume " + name_ + ": a snapshot's map could not be written yet");
}

void VolumeImpl::DropPendingLocked(uint64_t id) {
  pending_snaps_.erase(std::remove_if(pending_snaps_.begin(), pending_snaps_.end(),
                                      [&](const PendingSnap& p) { return p.id == id; }),
                       pending_snaps_.end());
  done_cv_.SignalAll();
}

// ---------------------------------------------------------------------------
// Clones

Status VolumeImpl::OpenLayers() {
  for (const ParentRef& p : meta_.parents) {
    auto pm = ReadMeta(store_, p.volume);
    if (!pm.ok()) {
      return Status::Corruption("volume " + name_ + ": its parent " + p.volume +
                                " cannot be read: " + pm.status().ToString());
    }
    HBISS_ASSIGN_OR_RETURN(CurrentLog cur, ResolveLog(store_, p.volume));
    layers_.push_back(
        std::make_unique<SegmentCache>(store_, cur.dir, pm->id, seg_slots_, nullptr));
  }
  return Status::OK();
}

Result<uint64_t> VolumeImpl::Flatten(const std::function<bool(uint64_t, uint64_t)>& progress) {
  Lock sl(&snap_mu_);
  {
    Lock l(&mu_);
    HBISS_RETURN_IF_ERROR(WritableLocked());
  }
  if (meta_.parents.empty()) return uint64_t{0};
  {
    Lock l(&mu_);
    HBISS_RETURN_IF_ERROR(AwaitMaterializedLocked());
  }
  // What the clone still shares, from a copy of the map; each piece is
  // copied only if the map still points there (a write since wins), like
  // the cleaner's copies.
  std::unique_ptr<ExtentMap> now;
  {
    Lock l(&mu_);
    HBISS_ASSIGN_OR_RETURN(now, map_.Snapshot());
  }
  std::vector<MapRun> shared;
  uint64_t total = 0;
  now->ForEach([&](const MapRun& r) {
    if (LayerOf(r.seg) == 0) return;
    shared.push_back(r);
    total += r.count;
  });
  now.reset();
  uint64_t done = 0, copied = 0;
  std::vector<uint8_t> buf;
  const auto stopped = [&] {
    return Status::Aborted("volume " + name_ + ": flatten stopped after " +
                           std::to_string(done) + " of " + std::to_string(total) + " blocks");
  };
  if (progress && !progress(0, total)) return stopped();
  for (const MapRun& r : shared) {
    for (uint64_t off = 0; off < r.count; off += Cleaner::kPieceBlocks) {
      MapRun piece = r;
      piece.lba = r.lba + off;
      piece.slot = uint32_t(r.slot + off);
      piece.count = std::min<uint64_t>(Cleaner::kPieceBlocks, r.count - off);
      buf.resize(piece.count * kBlockSize);
      HBISS_RETURN_IF_ERROR(ReadRun(piece, buf).WithContext("volume " + name_ + ": flatten"));
      HBISS_ASSIGN_OR_RETURN(uint64_t moved,
                             CopyStillLive(std::span<const MapRun>(&piece, 1), buf.data()));
      copied += moved;
      done += piece.count;
      if (progress && !progress(done, total)) return stopped();
    }
  }
  HBISS_RETURN_IF_ERROR(Flush());
  {
    Lock l(&mu_);
    if (UsesParents(map_)) {
      return Status::IOError("volume " + name_ + ": flatten left shared blocks");
    }
  }
  // Its own snapshots may still share blocks with the parents: then the
  // parents stay (what rbd's deep-flatten would copy too is not copied).
  for (const SnapshotRecord& rec : registry_.snaps) {
    // A snapshot that cannot be read may use them: the flatten stops here.
    ExtentMap m(meta_.size / kBlockSize);
    bool materialized = false;
    HBISS_RETURN_IF_ERROR(LoadSnapMap(dir_, rec, &m, &materialized));
    if (UsesParents(m)) {
      spdlog::info("volume {}: flattened; its snapshot {} still uses its parents, which stay",
                   name_, SnapLabel(rec.name));
      return copied;
    }
  }
  // No kept checkpoint may point into a parent any more: write two, then
  // the meta without parents; then the parent may let its snapshot go.
  HBISS_RETURN_IF_ERROR(CheckpointNow());
  HBISS_RETURN_IF_ERROR(CheckpointNow());
  // Those checkpoints are the volume's only if nobody took it meanwhile.
  HBISS_RETURN_IF_ERROR(CheckEpochStillOurs(store_, dir_));
  VolumeMeta m = meta_;
  m.parents.clear();
  m.version = kMetaVersion;
  HBISS_RETURN_IF_ERROR(store_->Put(layout::MetaName(name_), AsBytes(EncodeMeta(m)))
                            .WithContext("volume " + name_ + ": writing its meta"));
  DropChildRecord(store_, meta_.parents.front().volume, name_);
  spdlog::info("volume {}: flattened ({} blocks copied); it no longer depends on {}@{}", name_,
               copied, meta_.parents.front().volume, meta_.parents.front().snap);
  return copied;
}

// ---------------------------------------------------------------------------
// Operations

Result<SnapshotInfo> VolumeImpl::CreateSnapshot(const std::string& snap) {
  HBISS_RETURN_IF_ERROR(ValidateSnapName(snap));
  Lock sl(&snap_mu_);
  {
    Lock l(&mu_);
    HBISS_RETURN_IF_ERROR(UsableLocked());
  }
  if (!snap_.empty()) return Status::NotSupported("snapshot " + SnapLabel(snap_) + " is read-only");
  if (registry_.Find(snap) != nullptr) {
    return Status::AlreadyExists("snapshot " + SnapLabel(snap) + " already exists");
  }
  if (registry_.snaps.size() >= kMaxSnapshots) {
    return Status::NoSpace("volume " + name_ + " has " + std::to_string(registry_.snaps.size()) +
                           " snapshots, the most a volume may have (" +
                           std::to_string(kMaxSnapshots) + "): remove some (hbiss snap rm)");
  }
  SnapshotRecord rec;
  rec.id = registry_.next_id;
  rec.name = snap;
  rec.created = int64_t(std::time(nullptr));
  uint64_t relogs_at_map = 0;
  {
    // No operation is in progress under write_mu_: the map holds exactly
    // the operations that were acknowledged (or are about to be, having
    // been applied), and the sealed batches hold them all.
    Lock wl(&write_mu_);
    Lock l(&mu_);
    HBISS_RETURN_IF_ERROR(WritableLocked());
    SealBatchLocked();
    PendingSnap p;
    p.id = rec.id;
    p.stop_seq = rec.stop_seq = next_seq_;
    p.position = SealedEndLocked();
    HBISS_ASSIGN_OR_RETURN(p.map, map_.Snapshot());
    rec.mapped_blocks = map_.MappedBlocks();
    relogs_at_map = relogs_;
    pending_snaps_.push_back(std::move(p));
    flusher_cv_.Signal();
  }
  RunSnapshotMapTakenHook();
  // An id is never given twice, whatever happens below: a record whose Put
  // reported failure may still have reached the store.
  registry_.next_id = rec.id + 1;
  auto abandon = [&](Status s) {
    Lock l(&mu_);
    DropPendingLocked(rec.id);
    return s.WithContext("snapshot " + SnapLabel(snap));
  };
  // Every batch before stop_seq durable, then the record: the snapshot exists.
  if (Status f = Flush(); !f.ok()) return abandon(f);
  bool relogged = false;
  {
    Lock l(&mu_);
    relogged = relogs_ != relogs_at_map;
  }
  if (relogged) {
    // The store was full meanwhile and a retry logged what was not durable
    // again (volume_no_space.cc): into a new segment, with batches numbered
    // again, and the old segments deleted. Flush then says OK, but the map
    // and stop_seq taken above point into the old log. Nothing is recorded;
    // the caller may try again. (Once this passes, a later re-log touches
    // nothing of the snapshot: all of it is before the durable position.)
    return abandon(Status::NoSpace("volume " + name_ +
                                   ": the store was full while the snapshot was taken; it was "
                                   "not created (try again)"));
  }
  SnapRegistry next = registry_;
  next.snaps.push_back(rec);
  Status recorded = WriteSnapRegistry(store_, dir_, next);
  // A Put into an epoch renamed away recreates it: the fence's check.
  if (recorded.ok()) recorded = CheckEpochStillOurs(store_, dir_);
  if (!recorded.ok()) {
    // The record may be in the store all the same: its map object is
    // still written (so that no open ever finds a record whose log is
    // gone); the next registry write drops the record, and the next
    // writable open the object.
    spdlog::warn("volume {}: snapshot {}: {}", name_, SnapLabel(snap), recorded.ToString());
  } else {
    registry_ = std::move(next);
  }
  bool start = false;
  {
    Lock l(&mu_);
    for (PendingSnap& p : pending_snaps_) {
      if (p.id == rec.id) p.recorded = true;
    }
    start = !snap_writer_running_;
    snap_writer_running_ = true;
    done_cv_.SignalAll();  // a writer in its retry wait looks again
  }
  if (start) {
    if (snap_writer_.joinable()) snap_writer_.join();  // it has ended
    auto t = StartThread("snapshot writer", [this] { SnapWriterLoop(); });
    if (t.ok()) {
      snap_writer_ = std::move(*t);
    } else {
      // The snapshot exists; its map object is written by Close or, after a
      // crash, by the next open.
      spdlog::warn("volume {}: {}", name_, t.status().ToString());
      Lock l(&mu_);
      snap_writer_running_ = false;
    }
  }
  if (!recorded.ok()) return recorded.WithContext("snapshot " + SnapLabel(snap));
  spdlog::info("volume {}: snapshot {} created (id {}, batches before {})", name_,
               SnapLabel(snap), rec.id, rec.stop_seq);
  SnapshotInfo info;
  info.id = rec.id;
  info.name = rec.name;
  info.created = rec.created;
  info.size = meta_.size;
  info.mapped_bytes = rec.mapped_blocks * kBlockSize;
  return info;
}

Result<const SnapshotRecord*> VolumeImpl::FindToChangeLocked(const std::string& snap) {
  HBISS_RETURN_IF_ERROR(ValidateSnapName(snap));
  if (!snap_.empty() || opts_.read_only) {
    return Status::NotSupported("volume " + name_ + " is open read-only");
  }
  const SnapshotRecord* rec = registry_.Find(snap);
  if (rec == nullptr) return Status::NotFound("snapshot " + SnapLabel(snap) + " does not exist");
  return rec;
}

Status VolumeImpl::RemoveSnapshot(const std::string& snap) {
  Lock sl(&snap_mu_);
  HBISS_ASSIGN_OR_RETURN(const SnapshotRecord* rec, FindToChangeLocked(snap));
  const uint64_t id = rec->id;
  HBISS_ASSIGN_OR_RETURN(std::vector<std::string> children, ListChildren(store_, name_, id));
  if (!children.empty()) return SnapshotHasClones(SnapLabel(snap), children);
  return DropSnapshotLocked(id, snap);
}

Result<bool> VolumeImpl::TrashSnapshot(const std::string& snap) {
  Lock sl(&snap_mu_);
  HBISS_ASSIGN_OR_RETURN(const SnapshotRecord* rec, FindToChangeLocked(snap));
  const uint64_t id = rec->id;
  HBISS_ASSIGN_OR_RETURN(std::vector<std::string> children, ListChildren(store_, name_, id));
  if (children.empty()) {
    HBISS_RETURN_IF_ERROR(DropSnapshotLocked(id, snap));
    return false;
  }
  {
    Lock l(&mu_);
    HBISS_RETURN_IF_ERROR(UsableLocked());
  }
  // Only the record changes: its map object, its pins and its id stay.
  SnapRegistry next = registry_;
  for (SnapshotRecord& r : next.snaps) {
    if (r.id == id) r.trashed = true;
  }
  HBISS_RETURN_IF_ERROR(WriteSnapRegistry(store_, dir_, next));
  HBISS_RETURN_IF_ERROR(CheckEpochStillOurs(store_, dir_));
  registry_ = std::move(next);
  spdlog::info("volume {}: snapshot {} (id {}) moved to the trash; {} clone(s) use it", name_,
               SnapLabel(snap), id, children.size());
  // Its last clone may have gone while the registry was written: that
  // removal's purge may have looked before the record was trashed.
  if (auto purged = PurgeTrashLocked(); !purged.ok()) {
    spdlog::warn("volume {}: purging its trash: {}", name_, purged.status().ToString());
  }
  return true;
}

Result<uint64_t> VolumeImpl::PurgeTrash() {
  Lock sl(&snap_mu_);
  if (!snap_.empty() || opts_.read_only) {
    return Status::NotSupported("volume " + name_ + " is open read-only");
  }
  {
    Lock l(&mu_);
    HBISS_RETURN_IF_ERROR(UsableLocked());
  }
  return PurgeTrashLocked();
}

Result<uint64_t> VolumeImpl::PurgeTrashLocked() {
  std::vector<std::pair<uint64_t, std::string>> trashed;
  for (const SnapshotRecord& r : registry_.snaps) {
    if (r.trashed) trashed.emplace_back(r.id, r.name);
  }
  uint64_t purged = 0;
  for (const auto& [id, snap] : trashed) {
    HBISS_ASSIGN_OR_RETURN(std::vector<std::string> children, ListChildren(store_, name_, id));
    if (!children.empty()) continue;
    Status s = DropSnapshotLocked(id, snap);
    if (s.IsBusy()) continue;  // a clone made from it just before it was trashed
    HBISS_RETURN_IF_ERROR(s);
    purged++;
  }
  return purged;
}

Status VolumeImpl::DropSnapshotLocked(uint64_t id, const std::string& snap) {
  {
    // Its map object is being written by the snapshot writer: let it finish first.
    Lock l(&mu_);
    HBISS_RETURN_IF_ERROR(UsableLocked());
    HBISS_RETURN_IF_ERROR(AwaitMaterializedLocked());
  }
  SnapRegistry next = registry_;
  next.snaps.erase(std::remove_if(next.snaps.begin(), next.snaps.end(),
                                  [&](const SnapshotRecord& r) { return r.id == id; }),
                   next.snaps.end());
  HBISS_RETURN_IF_ERROR(WriteSnapRegistry(store_, dir_, next));
  HBISS_RETURN_IF_ERROR(CheckEpochStillOurs(store_, dir_));
  // A clone made meanwhile (Volume::Clone writes its record, then checks
  // the snapshot is there): one of the two sees the other. If it is this
  // one, the snapshot comes back.
  HBISS_ASSIGN_OR_RETURN(std::vector<std::string> children, ListChildren(store_, name_, id));
  if (!children.empty()) {
    HBISS_RETURN_IF_ERROR(WriteSnapRegistry(store_, dir_, registry_));
    return Status::Busy("snapshot " + SnapLabel(snap) + " got a clone (" + children.front() +
                        ") while it was being removed: it stays");
  }
  registry_ = std::move(next);
  ckpts_.Unpin(id);
  // Garbage from here on; the next writable open deletes it if this fails.
  Status d = store_->Delete(layout::SnapName(dir_, id));
  if (!d.ok() && !d.IsNotFound()) {
    spdlog::warn("volume {}: deleting the map of snapshot {}: {}", name_, SnapLabel(snap),
                 d.ToString());
  }
  spdlog::info("volume {}: snapshot {} (id {}) removed", name_, SnapLabel(snap), id);
  cleaner_.Wake();  // what only the snapshot held can go now
  return Status::OK();
}

Status VolumeImpl::RenameSnapshot(const std::string& from, const std::string& to) {
  HBISS_RETURN_IF_ERROR(ValidateSnapName(from));
  HBISS_RETURN_IF_ERROR(ValidateSnapName(to));
  Lock sl(&snap_mu_);
  if (!snap_.empty() || opts_.read_only) {
    return Status::NotSupported("volume " + name_ + " is open read-only");
  }
  {
    Lock l(&mu_);
    HBISS_RETURN_IF_ERROR(UsableLocked());
  }
  SnapRegistry next = registry_;
  SnapshotRecord* rec = next.Find(from);
  if (rec == nullptr) return Status::NotFound("snapshot " + SnapLabel(from) + " does not exist");
  if (from == to) return Status::OK();
  if (next.Find(to) != nullptr) {
    return Status::AlreadyExists("snapshot " + SnapLabel(to) + " already exists");
  }
  rec->name = to;
  HBISS_RETURN_IF_ERROR(WriteSnapRegistry(store_, dir_, next));
  HBISS_RETURN_IF_ERROR(CheckEpochStillOurs(store_, dir_));
  registry_ = std::move(next);
  return Status::OK();
}

Status VolumeImpl::Rollback(const std::string& snap) {
  Lock sl(&snap_mu_);
  HBISS_ASSIGN_OR_RETURN(const SnapshotRecord* rec, FindToChangeLocked(snap));
  {
    Lock l(&mu_);
    HBISS_RETURN_IF_ERROR(UsableLocked());
    HBISS_RETURN_IF_ERROR(AwaitMaterializedLocked());
  }
  ExtentMap target(meta_.size / kBlockSize);
  bool materialized = false;
  HBISS_RETURN_IF_ERROR(LoadSnapMap(dir_, *rec, &target, &materialized));
  const std::vector<uint64_t> segs = SegmentsOf(target);
  // Writers wait until the rollback is durable: a write acknowledged (and
  // flushed) after it must never survive a crash without it.
  Lock wl(&write_mu_);
  {
    Lock l(&mu_);
    HBISS_RETURN_IF_ERROR(WritableLocked());
    SealBatchLocked();
    map_.Reset();
    Status s;
    target.ForEach([&](const MapRun& r) NO_THREAD_SAFETY_ANALYSIS {  // mu_ is held
      if (s.ok()) s = map_.Set(r.lba, r.count, r.seg, r.slot);
    });
    if (!s.ok()) return FailLocked(s.WithContext("volume " + name_ + ": rollback"));
    for (uint64_t seg : segs) segs_.Adopt(seg);
    segs_.Recount(map_);
    for (uint64_t seg : segs_.ids()) {
      if (segs_.live(seg) == 0 && !InMemoryLocked(seg)) segs_.NoteDead(seg);
    }
  }
  // The new map reaches the store as checkpoints (both kept ones, so that
  // recovery never falls back to one from before the rollback). Until then
  // it is only in memory: if that fails, the volume fails (writes on top of
  // it would survive a crash without it).
  Status durable = Flush();
  for (int i = 0; i < 2 && durable.ok(); i++) durable = CheckpointNow();
  // A Put into an epoch renamed away recreates it: the fence's check. A
  // fenced holder's rollback reached nobody; it fails like any fenced write.
  if (durable.ok()) durable = CheckEpochStillOurs(store_, dir_);
  if (!durable.ok()) {
    Lock l(&mu_);
    return FailLocked(durable.WithContext("volume " + name_ + ": rollback not made durable"));
  }
  spdlog::info("volume {}: rolled back to snapshot {}", name_, SnapLabel(snap));
  cleaner_.Wake();
  return Status::OK();
}

}  // namespace hbiss::volume
