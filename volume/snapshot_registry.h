// The snapshots of a volume, as its current epoch records them
// (doc/snapshots.md): the registry object epoch/<E>/snaps (JSON) and one map
// object per snapshot, epoch/<E>/snap/<16 hex id>, in checkpoint format
// (doc/checkpoint_format.md) with seq = the snapshot's id.
//
// A snapshot is the log up to a batch boundary: every batch with a seq below
// `stop_seq`. Its record is written (the snapshot exists) once that part of
// the log is durable; its map object is written afterwards (O(1) creation:
// doc/snapshots.md "Creating"). Until the map object exists the snapshot is
// *pending*, and its map is rebuilt from the log (ReplayLogTo) by whoever
// needs it; the owner writes no checkpoint while a snapshot is pending, so
// the log it needs stays.
//
// Encode/Decode are pure; Read/Write use the store. Thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "store/store.h"
#include "util/status.h"
#include "volume/extent_map.h"
#include "volume/layout.h"
#include "volume/volume_meta.h"

namespace hbiss::volume {

// The newest registry version this build reads. A registry is written as
// version 1 while none of its snapshots is trashed, so that builds from
// before the trash read it as before; with a trashed snapshot it is version
// 2, which those builds refuse (NotSupported) instead of taking the trashed
// snapshot for a live one (doc/snapshots.md "Objects").
inline constexpr uint32_t kSnapRegistryVersion = 2;

// The most snapshots a volume may have (rbd's krbd allows 510): creating one
// more is refused. It keeps the registry, which is read whole and at most
// layout::kMaxMetaBytes, far below that: a record with a 128-byte name and
// the largest numbers is under 300 bytes of compact JSON, so 512 of them
// take under 160 KiB (snapshot_registry_test.cc checks it).
inline constexpr size_t kMaxSnapshots = 512;

struct SnapshotRecord {
  uint64_t id = 0;        // never reused within a volume; names the map object
  std::string name;
  int64_t created = 0;    // seconds since the epoch
  uint64_t stop_seq = 0;  // the snapshot is every batch with seq < stop_seq
  uint64_t mapped_blocks = 0;  // blocks mapped in the snapshot
  // Removed by the user while clones still used it (doc/snapshots.md
  // "Trash"): kept, with its segments pinned, for those clones only, until
  // the last one is gone. Its name is free: Find never returns it, and a
  // live snapshot may have the same name.
  bool trashed = false;
};

struct SnapRegistry {
  uint64_t next_id = 1;
  std::vector<SnapshotRecord> snaps;  // in creation order, trashed ones too

  // The live (not trashed) snapshot named `name`, or null.
  const SnapshotRecord* Find(const std::string& name) const;
  SnapshotRecord* Find(const std::string& name);
};

// Compact JSON (no indentation), one trailing newline.
std::string EncodeSnapRegistry(const SnapRegistry& r);
// Corruption for anything malformed; NotSupported for a newer version.
// `where` is for messages.
Result<SnapRegistry> DecodeSnapRegistry(const std::string& text, const std::string& where);

// The registry of log directory `dir`; an empty one when it has none.
Result<SnapRegistry> ReadSnapRegistry(store::Store* store, const layout::LogDir& dir);
// Replaces it (Store::Put: atomic and durable).
Status WriteSnapRegistry(store::Store* store, const layout::LogDir& dir, const SnapRegistry& r);

// Loads the map of snapshot `rec` of the volume whose current log directory
// is `dir` into *map (emptied first): its map object, validated (Corruption
// if it belongs to something else), or, while it has none, rebuilt from the
// log (ReplayLogTo). *materialized says which.
Status LoadSnapshotMap(store::Store* store, const layout::LogDir& dir, const VolumeMeta& meta,
                       const SnapshotRecord& rec, ExtentMap* map, bool* materialized);

}  // namespace hbiss::volume
