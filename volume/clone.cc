#include "volume/clone.h"

#include <algorithm>
#include <ctime>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "util/bytes.h"
#include "volume/epoch.h"
#include "volume/layout.h"
#include "volume/snapshot_registry.h"
#include "volume/trash.h"
#include "volume/volume.h"

namespace hbiss::volume {

namespace {

// The record of clone `child` in its parent, or NotFound.
Result<uint64_t> ReadChildRecord(store::Store* store, const std::string& parent,
                                 const std::string& child) {
  HBISS_ASSIGN_OR_RETURN(std::string text,
                         store->Get(layout::ChildName(parent, child), layout::kMaxMetaBytes));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("snap_id") ||
      !j["snap_id"].is_number_unsigned()) {
    return Status::Corruption("volume " + parent + ": bad child record " + child);
  }
  return j["snap_id"].get<uint64_t>();
}

}  // namespace

Status LoadCloneBase(store::Store* store, const VolumeMeta& meta, ExtentMap* map) {
  const ParentRef& p = meta.parents.front();
  const std::string label = p.volume + "@" + (p.snap.empty() ? std::to_string(p.snap_id) : p.snap);
  auto gone = [&](const Status& s) {
    return Status::Corruption("the parent snapshot " + label + " of this clone cannot be read: " +
                              s.ToString());
  };
  auto pm = ReadMeta(store, p.volume);
  if (!pm.ok()) return pm.status().IsNotFound() ? gone(pm.status()) : pm.status();
  if (pm->size != meta.size || pm->segment_size != meta.segment_size) {
    return Status::Corruption("the parent " + p.volume + " does not match this clone's size");
  }
  HBISS_ASSIGN_OR_RETURN(CurrentLog cur, ResolveLog(store, p.volume));
  HBISS_ASSIGN_OR_RETURN(SnapRegistry reg, ReadSnapRegistry(store, cur.dir));
  const SnapshotRecord* rec = nullptr;
  for (const SnapshotRecord& r : reg.snaps) {
    if (r.id == p.snap_id) rec = &r;
  }
  if (rec == nullptr) return gone(Status::NotFound("no such snapshot"));
  ExtentMap parent(meta.size / kBlockSize);
  bool materialized = false;
  HBISS_RETURN_IF_ERROR(LoadSnapshotMap(store, cur.dir, *pm, *rec, &parent, &materialized));
  map->Reset();
  Status s;
  parent.ForEach([&](const MapRun& r) {
    if (!s.ok()) return;
    const uint32_t layer = LayerOf(r.seg) + 1;
    if (layer > kMaxCloneDepth || layer > meta.parents.size()) {
      s = Status::Corruption("the parent snapshot " + label + " has layers beyond this clone's chain");
      return;
    }
    s = map->Set(r.lba, r.count, LayeredSeg(layer, BaseSeg(r.seg)), r.slot);
  });
  if (!s.ok()) map->Reset();
  return s;
}

Result<std::vector<std::string>> ListChildren(store::Store* store, const std::string& parent,
                                              uint64_t snap_id) {
  std::vector<std::string> out;
  auto list = store->List(layout::ChildrenDir(parent));
  if (!list.ok()) {
    if (list.status().IsNotFound()) return out;
    return list.status();
  }
  // Only a clone that is gone (NotFound) or whose meta names another parent
  // is stale. A record or meta that cannot be read may be a live clone's:
  // its parent snapshot must stay, so that is an error, not a skip.
  auto unreadable = [&](const std::string& child, const std::string& what, const Status& s) {
    return Status::Corruption("volume " + parent + ": clone " + child + ": its " + what +
                              " cannot be read (" + s.ToString() +
                              "); it may still need its parent's snapshots: run hbiss fsck " +
                              child);
  };
  for (const auto& o : *list) {
    if (o.is_dir || !Volume::ValidateName(o.name).ok()) continue;
    auto id = ReadChildRecord(store, parent, o.name);
    if (!id.ok() && id.status().IsNotFound()) continue;
    if (!id.ok() && !id.status().IsCorruption()) return id.status();
    if (id.ok() && snap_id != 0 && *id != snap_id) continue;
    // Stale unless the clone exists and still names this parent.
    auto m = ReadMeta(store, o.name);
    if (!m.ok()) {
      if (m.status().IsNotFound()) continue;
      if (m.status().IsCorruption()) return unreadable(o.name, "meta", m.status());
      return m.status().WithContext("volume " + parent + ": clone " + o.name);
    }
    if (m->parents.empty() || m->parents.front().volume != parent) continue;
    // A bad record of a clone that names this parent: which snapshot it
    // uses is not known from the record.
    if (!id.ok()) return unreadable(o.name, "child record in " + parent, id.status());
    if (m->parents.front().snap_id != *id) continue;
    out.push_back(o.name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Status SnapshotHasClones(const std::string& spec, const std::vector<std::string>& children) {
  std::string names;
  for (const std::string& c : children) names += (names.empty() ? "" : ", ") + c;
  return Status::Busy("snapshot " + spec + " has " + std::to_string(children.size()) +
                      (children.size() == 1 ? " clone (" : " clones (") + names +
                      "): flatten or remove them first (hbiss flatten CLONE, hbiss rm CLONE), "
                      "or use --trash (hbiss snap rm --trash " + spec +
                      "): it then waits in the trash and is deleted with its last clone");
}

void DropChildRecord(store::Store* store, const std::string& parent, const std::string& child) {
  Status s = store->Delete(layout::ChildName(parent, child));
  if (!s.ok() && !s.IsNotFound()) {
    spdlog::warn("volume {}: deleting the record of clone {}: {}", parent, child, s.ToString());
  }
}

Status Volume::Clone(store::Store* store, const std::string& spec, const std::string& name) {
  std::string parent, snap;
  HBISS_RETURN_IF_ERROR(ParseSpec(spec, &parent, &snap));
  if (snap.empty()) {
    return Status::InvalidArgument("a clone is made from a snapshot: VOLUME@SNAPSHOT, not " + spec);
  }
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  HBISS_ASSIGN_OR_RETURN(VolumeMeta pm, ReadMeta(store, parent));
  HBISS_RETURN_IF_ERROR(RefuseIfTrashed(store, parent));
  // A trashed snapshot is not listed: it cannot be cloned again.
  HBISS_ASSIGN_OR_RETURN(std::vector<SnapshotInfo> snaps, ListSnapshots(store, parent));
  auto it = std::find_if(snaps.begin(), snaps.end(),
                         [&](const SnapshotInfo& s) { return s.name == snap; });
  if (it == snaps.end()) {
    HBISS_ASSIGN_OR_RETURN(std::vector<SnapshotInfo> all, ListSnapshots(store, parent, true));
    if (std::any_of(all.begin(), all.end(), [&](const SnapshotInfo& s) { return s.name == snap; })) {
      return Status::NotFound("snapshot " + spec +
                              " is in the trash (removed while clones used it) and cannot be "
                              "cloned again (hbiss trash ls shows what keeps it)");
    }
    return Status::NotFound("snapshot " + spec + " does not exist");
  }
  if (pm.parents.size() + 1 > kMaxCloneDepth) {
    return Status::InvalidArgument("clone " + name + " of " + spec + " would be " +
                                   std::to_string(pm.parents.size() + 1) +
                                   " clones deep (at most " + std::to_string(kMaxCloneDepth) +
                                   "): flatten " + parent + " first (hbiss flatten " + parent +
                                   ")");
  }
  HBISS_RETURN_IF_ERROR(CheckNameFree(store, name));
  // The child record first: a clone is never without one (a record without
  // its clone is stale, and ignored).
  const std::string rec = nlohmann::json{{"snap_id", it->id}}.dump() + "\n";
  HBISS_RETURN_IF_ERROR(store->Put(layout::ChildName(parent, name), AsBytes(rec))
                            .WithContext("volume " + parent + ": recording clone " + name));
  CreateOptions co;
  co.size = pm.size;
  co.segment_size = pm.segment_size;
  std::vector<ParentRef> chain{ParentRef{parent, it->id, snap}};
  chain.insert(chain.end(), pm.parents.begin(), pm.parents.end());
  Status cs = CreateVolume(store, name, co, chain);
  if (!cs.ok()) {
    DropChildRecord(store, parent, name);
    return cs;
  }
  // A removal of the snapshot that raced this one: it checked for clones
  // before the record was there. (Trashed meanwhile is fine: the trash
  // keeps it for its clones, this one included.) If that cannot be checked,
  // the clone is not kept either: its parent snapshot may be gone.
  auto again = ListSnapshots(store, parent, /*include_trashed=*/true);
  if (!again.ok() || std::none_of(again->begin(), again->end(),
                                  [&](const SnapshotInfo& s) { return s.id == it->id; })) {
    (void)Remove(store, name);
    DropChildRecord(store, parent, name);
    if (!again.ok()) {
      return again.status().WithContext("clone " + name + " of " + spec +
                                        ": checking that the snapshot is still there (the "
                                        "clone is removed)");
    }
    return Status::NotFound("snapshot " + spec + " was removed while " + name + " was made");
  }
  spdlog::info("volume {}: cloned from {}", name, spec);
  return Status::OK();
}

}  // namespace hbiss::volume
