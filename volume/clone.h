// Clones (doc/snapshots.md "Clones"): a volume that starts as a snapshot of
// another and shares every block it has not overwritten with it.
//
// A clone's meta names its parent chain (VolumeMeta::parents, nearest
// first). Its extent map points into its own log and into its parents'
// logs: a map entry's segment id carries the layer in its top 4 bits (0:
// the clone's own segment; L >= 1: segment of parents[L-1]), so one map,
// and one checkpoint format, hold both. Creating a clone writes its meta
// and a child record in the parent (O(1)); until its first checkpoint, its
// map starts from the parent snapshot's map, every entry one layer deeper
// (LoadCloneBase), with its own log replayed on top.
//
// Child records, volumes/PARENT/children/<CHILD> (JSON {"snap_id"}), let
// the parent refuse to remove a snapshot a clone still needs. A record whose
// clone does not exist or no longer names that parent is stale and ignored.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "store/store.h"
#include "util/status.h"
#include "volume/extent_map.h"
#include "volume/volume.h"
#include "volume/volume_meta.h"

namespace hbiss::volume {

inline constexpr uint32_t kLayerShift = 28;
inline constexpr uint32_t kOwnSegMask = (1u << kLayerShift) - 1;
inline uint32_t LayerOf(uint64_t seg) { return uint32_t(seg >> kLayerShift); }
inline uint32_t BaseSeg(uint64_t seg) { return uint32_t(seg) & kOwnSegMask; }
inline uint32_t LayeredSeg(uint32_t layer, uint64_t base) {
  return (layer << kLayerShift) | (uint32_t(base) & kOwnSegMask);
}

// Volume::Create, with a parent chain (a clone's meta, version 3).
Status CreateVolume(store::Store* store, const std::string& name, const CreateOptions& opts,
                    const std::vector<ParentRef>& parents);

// Fills *map (empty) with the map of a clone's first parent snapshot, one
// layer deeper. Corruption when the parent or its snapshot is gone.
Status LoadCloneBase(store::Store* store, const VolumeMeta& meta, ExtentMap* map);

// The clones of snapshot `snap_id` of volume `parent` (child records that
// are not stale), sorted; snap_id 0: of any snapshot. A record is stale only
// when its clone is gone (NotFound) or the clone's meta names another parent
// or snapshot. Corruption (naming the clone, saying to run fsck) when a
// clone's meta, or the record of a clone that names `parent`, cannot be
// parsed; other store errors as they are: the caller must not take the
// snapshot to be free of clones.
Result<std::vector<std::string>> ListChildren(store::Store* store, const std::string& parent,
                                              uint64_t snap_id);

// The refusal of removing snapshot `spec` ("VOL@SNAP") that `children`
// (not empty) use: Busy, naming them and saying what to do.
Status SnapshotHasClones(const std::string& spec, const std::vector<std::string>& children);

// Deletes `child`'s record in `parent` (best effort: a stale record is
// harmless).
void DropChildRecord(store::Store* store, const std::string& parent, const std::string& child);

}  // namespace hbiss::volume
