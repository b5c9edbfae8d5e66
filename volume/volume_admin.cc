// Volume's static API: names, create, open, remove, list, stat.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <random>

#include <spdlog/spdlog.h>

#include "volume/checkpoint_set.h"
#include "volume/clone.h"
#include "volume/epoch.h"
#include "volume/layout.h"
#include "volume/snapshot_registry.h"
#include "volume/space_reserve.h"
#include "volume/trash.h"
#include "volume/volume.h"
#include "volume/volume_impl.h"
#include "volume/volume_meta.h"

namespace hbiss::volume {

Status Volume::ValidateName(const std::string& name) {
  if (name.empty() || name.size() > 128) {
    return Status::InvalidArgument("volume name must be 1 to 128 characters");
  }
  if (name[0] == '.' || name[0] == '-') {
    return Status::InvalidArgument("volume name '" + name + "' must not start with '.' or '-'");
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) {
      return Status::InvalidArgument("volume name '" + name +
                                     "' may only contain letters, digits, '.', '_' and '-'");
    }
  }
  return Status::OK();
}

Status Volume::Create(store::Store* store, const std::string& name, const CreateOptions& opts) {
  return CreateVolume(store, name, opts, {});
}

Status CreateVolume(store::Store* store, const std::string& name, const CreateOptions& opts,
                    const std::vector<ParentRef>& parents) {
  HBISS_RETURN_IF_ERROR(Volume::ValidateName(name));
  if (opts.size == 0) return Status::InvalidArgument("volume size must be greater than zero");
  if (opts.size > kMaxVolumeSize) {
    return Status::InvalidArgument("volume size " + std::to_string(opts.size) +
                                   " exceeds the maximum of " + std::to_string(kMaxVolumeSize));
  }
  if (opts.segment_size % kSlotSize != 0 || opts.segment_size / kSlotSize < kMinSegmentSlots ||
      opts.segment_size / kSlotSize > kMaxSegmentSlots) {
    return Status::InvalidArgument("segment size must be a multiple of 4096 between " +
                                   std::to_string(kMinSegmentSlots * kSlotSize) + " and " +
                                   std::to_string(uint64_t(kMaxSegmentSlots) * kSlotSize));
  }
  HBISS_RETURN_IF_ERROR(CheckNameFree(store, name));
  VolumeMeta m;
  m.size = (opts.size + kBlockSize - 1) / kBlockSize * kBlockSize;
  m.segment_size = opts.segment_size;
  m.created = int64_t(std::time(nullptr));
  m.parents = parents;
  if (!parents.empty()) m.version = kCloneMetaVersion;
  std::random_device rd;
  std::mt19937_64 rng((uint64_t(rd()) << 32) ^ rd() ^
                      uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()));
  while (m.id == 0) m.id = rng();
  std::string text = EncodeMeta(m);
  // Leftovers without a meta (a Remove interrupted after deleting the meta)
  // are garbage of an old volume: clear them so the new one starts empty.
  HBISS_RETURN_IF_ERROR(store->DeleteDir(layout::VolDir(name)));
  HBISS_RETURN_IF_ERROR(store->Put(layout::MetaName(name), std::span<const uint8_t>(
                                        reinterpret_cast<const uint8_t*>(text.data()),
                                        text.size())));
  // The space reserve (space_reserve.h); Open writes it when this cannot,
  // and for a clone, whose creation stays O(1) (a reserve is segment_size
  // + 4 MiB of zeros).
  if (!parents.empty()) return Status::OK();
  SpaceReserve reserve(store, layout::ReserveName(name), SpaceReserve::BytesFor(m.segment_size),
                       store->MayRunOutOfSpace());
  if (Status rs = reserve.Ensure(); !rs.ok()) {
    spdlog::warn("volume {}: no space reserve yet: {}", name, rs.ToString());
  }
  return Status::OK();
}

Result<std::unique_ptr<Volume>> OpenSnapshotView(store::Store* store, const std::string& name,
                                                 const std::string& snap, uint64_t id,
                                                 const OpenOptions& opts) {
  HBISS_ASSIGN_OR_RETURN(VolumeMeta meta, ReadMeta(store, name));
  HBISS_ASSIGN_OR_RETURN(CurrentLog cur, ResolveLog(store, name));
  auto v = std::make_unique<VolumeImpl>(store, name, cur.dir, cur.epoch, meta, opts, nullptr);
  v->SetSnapshot(snap, id);
  HBISS_RETURN_IF_ERROR(v->Recover());
  return std::unique_ptr<Volume>(std::move(v));
}

Result<std::unique_ptr<Volume>> Volume::Open(store::Store* store, const std::string& spec,
                                             const OpenOptions& opts) {
  std::string name, snap;
  HBISS_RETURN_IF_ERROR(ParseSpec(spec, &name, &snap));
  if (!snap.empty()) {
    if (!opts.read_only) {
      return Status::InvalidArgument("snapshot " + spec + " is read-only: open it read-only");
    }
    HBISS_RETURN_IF_ERROR(ReadMeta(store, name).status());
    HBISS_RETURN_IF_ERROR(RefuseIfTrashed(store, name));
    return OpenSnapshotView(store, name, snap, 0, opts);
  }
  HBISS_ASSIGN_OR_RETURN(VolumeMeta meta, ReadMeta(store, name));
  std::unique_ptr<store::Lock> lock;
  if (!opts.read_only) {
    auto l = store->TryLock(layout::LockName(name));
    if (!l.ok()) {
      if (l.status().IsBusy()) {
        return Status::Busy("volume " + name + " is already open for writing");
      }
      return l.status().WithContext("volume " + name + ": taking lock");
    }
    lock = std::move(*l);
  }
  // Under the lock for a writer: `hbiss rm --trash` writes the trash object
  // holding it.
  HBISS_RETURN_IF_ERROR(RefuseIfTrashed(store, name));
  CurrentLog cur;
  if (opts.read_only) {
    HBISS_ASSIGN_OR_RETURN(cur, ResolveLog(store, name));
  } else {
    // The fence (epoch.h): from here on nothing a previous holder does
    // under the old epoch's names reaches the volume.
    HBISS_ASSIGN_OR_RETURN(cur.epoch, StartEpoch(store, name, meta, &opts.owner));
    cur.dir = layout::EpochDir(name, cur.epoch);
  }
  auto v = std::make_unique<VolumeImpl>(store, name, cur.dir, cur.epoch, meta, opts,
                                        std::move(lock));
  HBISS_RETURN_IF_ERROR(v->Recover());
  if (!opts.read_only) {
    // With the lock held no Put into these directories can be running: what
    // the store's Put left half-done there is a crash's leftover.
    for (const std::string& dir : {layout::VolDir(name), cur.dir.path, layout::CkptDir(cur.dir),
                                   layout::SumDir(cur.dir), layout::SegDir(cur.dir)}) {
      auto n = store->RemoveTempLeftovers(dir);
      if (!n.ok()) {
        spdlog::warn("volume {}: removing temporary leftovers in {}: {}", name, dir,
                     n.status().ToString());
      } else if (*n > 0) {
        spdlog::info("volume {}: removed {} temporary objects a crashed write left in {}", name,
                     *n, dir);
      }
    }
  }
  HBISS_RETURN_IF_ERROR(v->Start().WithContext("volume " + name));
  return std::unique_ptr<Volume>(std::move(v));
}

Status Volume::Remove(store::Store* store, const std::string& name) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  auto exists = store->Stat(layout::MetaName(name));
  if (!exists.ok()) {
    if (exists.status().IsNotFound()) return Status::NotFound("volume " + name + " does not exist");
    return exists.status();
  }
  auto l = store->TryLock(layout::LockName(name));
  if (!l.ok()) {
    if (l.status().IsBusy()) return Status::Busy("volume " + name + " is open");
    return l.status();
  }
  // Snapshots are data too: removing them is asked for separately (as rbd
  // refuses `rm` of an image with snapshots), or with the trash. A trashed
  // snapshot, or volume, goes only with its last clone.
  HBISS_ASSIGN_OR_RETURN(bool trashed, InTrash(store, name));
  if (trashed) {
    HBISS_ASSIGN_OR_RETURN(std::vector<std::string> kids, ListChildren(store, name, 0));
    if (!kids.empty()) {
      std::string names;
      for (const std::string& k : kids) names += (names.empty() ? "" : ", ") + k;
      return Status::Busy("volume " + name + " is in the trash until its clones (" + names +
                          ") are gone: flatten or remove them (hbiss flatten CLONE, hbiss rm "
                          "CLONE), and it is deleted with the last one");
    }
  } else {
    HBISS_ASSIGN_OR_RETURN(CurrentLog cur, ResolveLog(store, name));
    HBISS_ASSIGN_OR_RETURN(SnapRegistry reg, ReadSnapRegistry(store, cur.dir));
    std::string names;
    uint64_t n = 0;
    for (const SnapshotRecord& r : reg.snaps) {
      if (r.trashed) {
        HBISS_ASSIGN_OR_RETURN(std::vector<std::string> kids, ListChildren(store, name, r.id));
        if (kids.empty()) continue;  // its purge was cut short: it goes with the volume
      }
      names += (names.empty() ? "" : ", ") + r.name + (r.trashed ? " (trashed)" : "");
      n++;
    }
    if (n > 0) {
      return Status::Busy("volume " + name + " has " + std::to_string(n) + " snapshot(s) (" +
                          names + "): remove them first (hbiss snap rm " + name +
                          "@SNAP), or use --trash (hbiss rm --trash " + name +
                          "): snapshots with clones and the volume then wait in the trash "
                          "and are deleted with their last clone");
    }
  }
  HBISS_ASSIGN_OR_RETURN(VolumeMeta meta, ReadMeta(store, name));
  // Meta first: from here on the volume no longer exists for List/Open.
  HBISS_RETURN_IF_ERROR(store->Delete(layout::MetaName(name)));
  HBISS_RETURN_IF_ERROR(store->DeleteDir(layout::VolDir(name)));
  // A clone: its parent's snapshot is free of it (a record left behind by
  // a crash here is stale: its clone is gone).
  if (!meta.parents.empty()) DropChildRecord(store, meta.parents.front().volume, name);
  return Status::OK();
}

Result<std::vector<std::string>> Volume::List(store::Store* store) {
  HBISS_ASSIGN_OR_RETURN(std::vector<std::string> all, ListVolumesWithTrash(store));
  std::vector<std::string> names;
  for (const std::string& n : all) {
    HBISS_ASSIGN_OR_RETURN(bool trashed, InTrash(store, n));
    if (!trashed) names.push_back(n);
  }
  return names;
}

Result<OwnerRecord> Volume::Owner(store::Store* store, const std::string& name) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  // Only whether the volume exists: a reader asks before every read round,
  // and a Stat is one NameNode call where reading the meta also reads a
  // DataNode.
  auto exists = store->Stat(layout::MetaName(name));
  if (!exists.ok()) {
    if (exists.status().IsNotFound()) return Status::NotFound("volume " + name + " does not exist");
    return exists.status().WithContext("volume " + name + ": reading meta");
  }
  HBISS_ASSIGN_OR_RETURN(CurrentLog cur, ResolveLog(store, name));
  OwnerRecord r;
  r.epoch = cur.epoch;
  if (cur.epoch == 0) return r;
  auto text = store->Get(layout::OwnerName(cur.dir), layout::kMaxMetaBytes);
  if (text.ok()) {
    r.owner = std::move(*text);
  } else if (!text.status().IsNotFound()) {
    return text.status().WithContext("volume " + name + ": reading the owner");
  }
  return r;
}

Result<bool> Volume::Locked(store::Store* store, const std::string& name) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  auto l = store->TryLock(layout::LockName(name));
  if (l.ok()) return false;
  if (l.status().IsBusy()) return true;
  return l.status().WithContext("volume " + name + ": trying its lock");
}

Status Volume::BreakLock(store::Store* store, const std::string& name) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  HBISS_ASSIGN_OR_RETURN(VolumeMeta meta, ReadMeta(store, name));
  HBISS_RETURN_IF_ERROR(
      store->BreakLock(layout::LockName(name)).WithContext("volume " + name + ": breaking its lock"));
  auto l = store->TryLock(layout::LockName(name));
  if (!l.ok()) {
    if (l.status().IsBusy()) {
      return Status::Busy("volume " + name + ": its lock is still held by a live holder");
    }
    return l.status().WithContext("volume " + name + ": taking lock");
  }
  // Fence the old holder (a new epoch owned by nobody), then end its writer
  // of the open segment: the newest one (HDFS recovers its lease).
  HBISS_ASSIGN_OR_RETURN(uint64_t epoch, StartEpoch(store, name, meta, nullptr));
  const layout::LogDir dir = layout::EpochDir(name, epoch);
  HBISS_ASSIGN_OR_RETURN(auto segs, ListIds(store, layout::SegDir(dir)));
  if (!segs.empty()) {
    auto r = store->OpenForTakeover(layout::SegName(dir, segs.back().first));
    if (!r.ok() && !r.status().IsNotFound()) {
      return r.status().WithContext("volume " + name + ": taking over its open segment");
    }
  }
  spdlog::info("volume {}: lock broken; epoch {} is owned by nobody", name, epoch);
  return Status::OK();
}

Result<VolumeInfo> Volume::Stat(store::Store* store, const std::string& name) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  HBISS_ASSIGN_OR_RETURN(VolumeMeta meta, ReadMeta(store, name));
  VolumeInfo v;
  v.name = name;
  v.id = meta.id;
  v.size = meta.size;
  v.segment_size = meta.segment_size;
  ExtentMap map(meta.size / kBlockSize);
  CheckpointInfo ck;
  bool found = false;
  HBISS_ASSIGN_OR_RETURN(CurrentLog cur, ResolveLog(store, name));
  HBISS_RETURN_IF_ERROR(LoadNewestCheckpoint(store, cur.dir, meta, &ck, &map, &found, nullptr));
  if (found) {
    v.checkpoint_seq = ck.seq;
    v.mapped_bytes = map.MappedBlocks() * kBlockSize;
    v.map_memory_bytes = map.MemoryUsage();
  }
  HBISS_ASSIGN_OR_RETURN(auto segs, ListIds(store, layout::SegDir(cur.dir)));
  v.segment_count = segs.size();
  for (auto& [id, size] : segs) v.log_bytes += size;
  return v;
}

}  // namespace hbiss::volume
