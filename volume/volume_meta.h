// A volume's meta object (volumes/NAME/meta, doc/volume_meta.md): its id,
// size and segment size, as JSON. Written once by Volume::Create.
//
// Encode/Decode are pure; ReadMeta and ListIds read the store. All are
// thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "store/store.h"
#include "util/status.h"

namespace hbiss::volume {

// Version 2: the log is in epoch directories (doc/volume_meta.md); a
// version-1 volume's log is directly in volumes/NAME until its first
// writable open moves it (epoch.h).
inline constexpr uint32_t kMetaVersion = 2;
// Version 3: a clone (doc/snapshots.md "Clones"): the meta names its parent
// chain. Older builds refuse it rather than show a clone without its base.
inline constexpr uint32_t kCloneMetaVersion = 3;
// Clones of clones, down to this many parents (the layers of clone.h).
inline constexpr size_t kMaxCloneDepth = 15;

// A clone's parent: snapshot `snap_id` (named `snap` when the clone was made)
// of volume `volume`.
struct ParentRef {
  std::string volume;
  uint64_t snap_id = 0;
  std::string snap;
  bool operator==(const ParentRef&) const = default;
};

struct VolumeMeta {
  uint64_t id = 0;  // random, never 0
  uint64_t size = 0;
  uint64_t segment_size = 0;
  int64_t created = 0;  // seconds since the epoch
  uint32_t version = kMetaVersion;  // as read; EncodeMeta writes it
  // A clone's chain of parents, nearest first: map entries of layer L
  // (clone.h) live in parents[L-1]'s log. Empty for a volume of its own.
  std::vector<ParentRef> parents;
};

std::string EncodeMeta(const VolumeMeta& m);
// Corruption for anything malformed or out of range; NotSupported for a newer
// version. `name` is for messages.
Result<VolumeMeta> DecodeMeta(const std::string& text, const std::string& name);
// NotFound("volume NAME does not exist") when there is no meta.
Result<VolumeMeta> ReadMeta(store::Store* store, const std::string& name);

// The (id, size) of the objects under `dir` whose names are 16 hex digits,
// sorted by id. A missing directory is empty.
Result<std::vector<std::pair<uint64_t, uint64_t>>> ListIds(store::Store* store,
                                                         const std::string& dir);

}  // namespace hbiss::volume
