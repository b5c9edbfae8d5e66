// Checkpoints of a volume's extent map; doc/checkpoint_format.md is the
// specification. A checkpoint says: "replaying the log from `position`
// (whose first batch has seq `next_seq`) on top of this map gives the
// volume". It is stored whole with Store::Put under volumes/NAME/epoch/<E>/ckpt/<seq>.
//
// Pure encoding/decoding, no I/O; thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"
#include "volume/extent_map.h"
#include "volume/log_format.h"

namespace hbiss::volume {

inline constexpr char kCheckpointMagic[8] = {'H', 'B', 'S', 'S', 'C', 'K', 'P', '1'};
inline constexpr uint32_t kCheckpointVersion = 1;
inline constexpr size_t kCheckpointFixedBytes = 80;

struct CheckpointInfo {
  uint32_t version = kCheckpointVersion;
  uint64_t volume_id = 0;
  uint64_t seq = 0;             // checkpoint number, increasing
  LogPosition position;         // where roll-forward starts
  uint64_t next_seq = 0;        // seq of the batch at `position`
  uint64_t volume_size = 0;     // bytes
  std::vector<uint64_t> segment_ids;  // segments of the log up to `position`, increasing
  uint64_t run_count = 0;       // filled by Decode (and Encode's return)
};

// Encodes a checkpoint of `map`. info.run_count is ignored. `map` may be an
// ExtentMap::Snapshot() encoded on another thread, without the live map's
// lock, while the live map changes: the output is the snapshot's mapping.
std::string EncodeCheckpoint(const CheckpointInfo& info, const ExtentMap& map);

// Parses and fully validates a checkpoint: length, magic, CRC, version, and
// every run (in order, non-overlapping, inside the volume, slot range).
// On success fills *info and, if map != nullptr, maps the runs into *map
// (which must be empty and have volume_size / kSlotSize blocks).
// Corruption on any failure (the map may then hold some runs: Reset it);
// NotSupported for a newer version; IOError("out of memory") if the map
// cannot grow (the map may then hold some runs: Reset it).
Status DecodeCheckpoint(std::string_view data, CheckpointInfo* info, ExtentMap* map);

}  // namespace hbiss::volume
