#include "volume/trash.h"

#include <unistd.h>

#include <algorithm>
#include <ctime>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "util/bytes.h"
#include "volume/clone.h"
#include "volume/epoch.h"
#include "volume/layout.h"
#include "volume/snapshot_registry.h"
#include "volume/volume.h"
#include "volume/volume_meta.h"

namespace hbiss::volume {

namespace {

std::string Join(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// The trashed snapshots of `name`'s registry.
Result<std::vector<SnapshotRecord>> TrashedSnapshots(store::Store* store, const std::string& name) {
  HBISS_ASSIGN_OR_RETURN(CurrentLog cur, ResolveLog(store, name));
  HBISS_ASSIGN_OR_RETURN(SnapRegistry reg, ReadSnapRegistry(store, cur.dir));
  std::vector<SnapshotRecord> out;
  for (const SnapshotRecord& r : reg.snaps) {
    if (r.trashed) out.push_back(r);
  }
  return out;
}

std::string TrashedVolumeMessage(const std::string& name, const std::vector<std::string>& kids) {
  return "volume " + name + " is in the trash until its clones (" + Join(kids) +
         ") are removed or flattened; until then its name cannot be reused (hbiss trash restore " +
         name + " brings it back)";
}

}  // namespace

Result<std::vector<std::string>> ListVolumesWithTrash(store::Store* store) {
  std::vector<std::string> names;
  auto list = store->List("volumes");
  if (!list.ok()) {
    if (list.status().IsNotFound()) return names;
    return list.status();
  }
  for (const auto& o : *list) {
    if (!o.is_dir || !Volume::ValidateName(o.name).ok()) continue;
    if (store->Stat(layout::MetaName(o.name)).ok()) names.push_back(o.name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

Result<bool> InTrash(store::Store* store, const std::string& name) {
  auto st = store->Stat(layout::TrashName(name));
  if (st.ok()) return true;
  if (st.status().IsNotFound()) return false;
  return st.status().WithContext("volume " + name + ": reading its trash object");
}

Status RefuseIfTrashed(store::Store* store, const std::string& name) {
  HBISS_ASSIGN_OR_RETURN(bool trashed, InTrash(store, name));
  if (!trashed) return Status::OK();
  return Status::NotFound("volume " + name +
                          " is in the trash, kept only for its clones (hbiss trash ls shows "
                          "them); hbiss trash restore " + name + " brings it back");
}

Status CheckNameFree(store::Store* store, const std::string& name) {
  auto exists = store->Stat(layout::MetaName(name));
  if (!exists.ok()) return exists.status().IsNotFound() ? Status::OK() : exists.status();
  HBISS_ASSIGN_OR_RETURN(bool trashed, InTrash(store, name));
  if (!trashed) return Status::AlreadyExists("volume " + name + " already exists");
  HBISS_ASSIGN_OR_RETURN(std::vector<std::string> kids, ListChildren(store, name, 0));
  if (!kids.empty()) return Status::AlreadyExists(TrashedVolumeMessage(name, kids));
  // Its last clone went and the purge did not follow (a crash): finish it.
  HBISS_RETURN_IF_ERROR(Volume::Remove(store, name));
  spdlog::info("volume {}: deleted from the trash (no clone uses it any more)", name);
  return Status::OK();
}

Result<TrashVolumeResult> TrashVolume(store::Store* store, const std::string& name) {
  HBISS_RETURN_IF_ERROR(Volume::ValidateName(name));
  HBISS_RETURN_IF_ERROR(ReadMeta(store, name).status());
  TrashVolumeResult out;
  HBISS_ASSIGN_OR_RETURN(bool already, InTrash(store, name));
  if (already) {
    HBISS_ASSIGN_OR_RETURN(out.children, ListChildren(store, name, 0));
    if (!out.children.empty()) return Status::AlreadyExists(TrashedVolumeMessage(name, out.children));
    HBISS_RETURN_IF_ERROR(Volume::Remove(store, name));
    return out;
  }
  OpenOptions oo;
  oo.owner = nlohmann::json{{"server", "hbiss-rm"}, {"pid", int64_t(getpid())},
                            {"since", int64_t(std::time(nullptr))}}
                 .dump();
  oo.clean_threshold = 0;
  auto opened = Volume::Open(store, name, oo);
  if (!opened.ok()) {
    if (opened.status().IsBusy()) {
      return Status::Busy("volume " + name + " is open for writing (hbiss status " + name +
                          " says by whom): stop serving it, then remove it");
    }
    return opened.status();
  }
  std::unique_ptr<Volume> v = std::move(*opened);
  auto snaps = Volume::ListSnapshots(store, name);
  Status s = snaps.status();
  for (size_t i = 0; s.ok() && i < snaps->size(); i++) {
    const std::string& snap = (*snaps)[i].name;
    auto trashed = v->TrashSnapshot(snap);
    s = trashed.status();
    if (s.ok()) (*trashed ? out.trashed_snaps : out.removed_snaps).push_back(snap);
  }
  std::vector<SnapshotRecord> left;
  if (s.ok()) {
    auto t = TrashedSnapshots(store, name);
    s = t.status();
    if (t.ok()) left = std::move(*t);
  }
  if (s.ok() && !left.empty()) {
    // Still under the volume's lock: no writable open can slip in before
    // the trash object, and every one after it refuses the volume.
    const std::string rec =
        nlohmann::json{{"trashed", int64_t(std::time(nullptr))}}.dump() + "\n";
    s = store->Put(layout::TrashName(name), AsBytes(rec))
            .WithContext("volume " + name + ": writing its trash object");
  }
  Status cs = v->Close();
  v.reset();
  HBISS_RETURN_IF_ERROR(s.WithContext("volume " + name));
  HBISS_RETURN_IF_ERROR(cs);
  if (left.empty()) {
    HBISS_RETURN_IF_ERROR(Volume::Remove(store, name));
    return out;
  }
  out.trashed = true;
  HBISS_ASSIGN_OR_RETURN(out.children, ListChildren(store, name, 0));
  spdlog::info("volume {}: moved to the trash; it waits for its clones {}", name,
               Join(out.children));
  return out;
}

Status RestoreVolume(store::Store* store, const std::string& name) {
  HBISS_RETURN_IF_ERROR(Volume::ValidateName(name));
  HBISS_ASSIGN_OR_RETURN(VolumeMeta meta, ReadMeta(store, name));
  HBISS_ASSIGN_OR_RETURN(bool trashed, InTrash(store, name));
  if (!trashed) return Status::NotFound("volume " + name + " is not in the trash");
  auto l = store->TryLock(layout::LockName(name));
  if (!l.ok()) {
    if (l.status().IsBusy()) return Status::Busy("volume " + name + " is being changed; try again");
    return l.status();
  }
  HBISS_RETURN_IF_ERROR(store->Delete(layout::TrashName(name))
                            .WithContext("volume " + name + ": deleting its trash object"));
  spdlog::info("volume {} (id {:016x}): restored from the trash", name, meta.id);
  return Status::OK();
}

Result<std::vector<TrashEntry>> ListTrash(store::Store* store) {
  std::vector<TrashEntry> out;
  HBISS_ASSIGN_OR_RETURN(std::vector<std::string> names, ListVolumesWithTrash(store));
  for (const std::string& name : names) {
    auto meta = ReadMeta(store, name);
    if (!meta.ok()) {
      if (meta.status().IsNotFound()) continue;  // removed meanwhile
      return meta.status();
    }
    HBISS_ASSIGN_OR_RETURN(bool trashed, InTrash(store, name));
    if (trashed) {
      TrashEntry e;
      e.volume = name;
      e.created = meta->created;
      HBISS_ASSIGN_OR_RETURN(e.children, ListChildren(store, name, 0));
      out.push_back(std::move(e));
    }
    auto snaps = TrashedSnapshots(store, name);
    if (!snaps.ok()) {
      // One volume's unreadable registry (hbiss fsck reports it) does not
      // hide the rest of the trash.
      if (!snaps.status().IsCorruption() && !snaps.status().IsNotSupported()) {
        return snaps.status();
      }
      spdlog::warn("volume {}: {}", name, snaps.status().ToString());
      continue;
    }
    for (const SnapshotRecord& r : *snaps) {
      TrashEntry e;
      e.volume = name;
      e.snap = r.name;
      e.snap_id = r.id;
      e.created = r.created;
      HBISS_ASSIGN_OR_RETURN(e.children, ListChildren(store, name, r.id));
      out.push_back(std::move(e));
    }
  }
  return out;
}

Status PurgeSnapshotTrashHere(store::Store* store, const std::string& volume) {
  OpenOptions oo;
  oo.owner = nlohmann::json{{"server", "hbiss-trash"}, {"pid", int64_t(getpid())},
                            {"since", int64_t(std::time(nullptr))}}
                 .dump();
  oo.clean_threshold = 0;
  // The open purges (VolumeImpl::Start); the call says how it went.
  HBISS_ASSIGN_OR_RETURN(std::unique_ptr<Volume> v, Volume::Open(store, volume, oo));
  auto purged = v->PurgeTrash();
  Status cs = v->Close();
  HBISS_RETURN_IF_ERROR(purged.status());
  return cs;
}

Status PurgeTrash(store::Store* store, const std::string& volume, const SnapTrashPurger& purge) {
  std::string name = volume;
  while (!name.empty()) {
    auto meta = ReadMeta(store, name);
    if (!meta.ok()) return meta.status().IsNotFound() ? Status::OK() : meta.status();
    HBISS_ASSIGN_OR_RETURN(bool trashed, InTrash(store, name));
    if (!trashed) {
      HBISS_ASSIGN_OR_RETURN(std::vector<SnapshotRecord> snaps, TrashedSnapshots(store, name));
      bool due = false;
      for (const SnapshotRecord& r : snaps) {
        HBISS_ASSIGN_OR_RETURN(std::vector<std::string> kids, ListChildren(store, name, r.id));
        due |= kids.empty();
      }
      if (!due) return Status::OK();
      return purge(name).WithContext("volume " + name + ": purging its trashed snapshots");
    }
    HBISS_ASSIGN_OR_RETURN(std::vector<std::string> kids, ListChildren(store, name, 0));
    if (!kids.empty()) return Status::OK();
    Status s = Volume::Remove(store, name);
    if (s.IsBusy()) return Status::OK();  // being removed or restored right now
    HBISS_RETURN_IF_ERROR(s);
    spdlog::info("volume {}: deleted from the trash: its last clone is gone", name);
    // It may have been the last clone its own parent waited for.
    name = meta->parents.empty() ? "" : meta->parents.front().volume;
  }
  return Status::OK();
}

Status PurgeAllTrash(store::Store* store, const SnapTrashPurger& purge) {
  HBISS_ASSIGN_OR_RETURN(std::vector<TrashEntry> entries, ListTrash(store));
  Status first;
  std::string last;
  for (const TrashEntry& e : entries) {
    if (e.volume == last || !e.children.empty()) continue;
    last = e.volume;
    Status s = PurgeTrash(store, e.volume, purge);
    if (!s.ok()) {
      spdlog::warn("{}", s.ToString());
      if (first.ok()) first = s;
    }
  }
  return first;
}

}  // namespace hbiss::volume
