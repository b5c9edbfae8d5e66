// Where a volume's objects live in its store (doc/volume_meta.md):
//
//   volumes/NAME/meta        the volume's meta (volume_meta.h)
//   volumes/NAME/lock        held by the process that has it open for writing
//   volumes/NAME/reserve     space held for a full device (space_reserve.h)
//   volumes/NAME/trash       present while the volume is in the trash (trash.h)
//   volumes/NAME/epoch/<E>/  the log of epoch E (doc/ownership.md), a LogDir:
//     seg/<id>               log segments (log_format.h)
//     sum/<id>               segment summaries: CRC tables of closed segments
//     ckpt/<seq>             checkpoints (checkpoint.h)
//     owner                  who owns epoch E (OpenOptions::owner)
//     snaps                  the snapshot registry (snapshot_registry.h)
//     snap/<id>              a snapshot's map, in checkpoint format
//
// A version-1 volume (not yet opened for writing since meta version 2) has
// its log directly in volumes/NAME (V1LogDir); epoch.h moves it.
// <E>, <id> and <seq> are 16 lowercase hex digits (Hex16). Pure functions.
#pragma once

#include <cstdint>
#include <string>

#include "volume/log_format.h"

namespace hbiss::volume::layout {

inline std::string VolDir(const std::string& name) { return "volumes/" + name; }
inline std::string MetaName(const std::string& name) { return VolDir(name) + "/meta"; }
inline std::string LockName(const std::string& name) { return VolDir(name) + "/lock"; }
inline std::string ReserveName(const std::string& name) { return VolDir(name) + "/reserve"; }
inline std::string EpochsDir(const std::string& name) { return VolDir(name) + "/epoch"; }
// The volume is in the trash (trash.h) while this object exists.
inline std::string TrashName(const std::string& name) { return VolDir(name) + "/trash"; }

// The directory a volume's log lives in: segments, summaries, checkpoints
// (and, in an epoch directory, the owner object).
struct LogDir {
  std::string path;  // e.g. "volumes/NAME/epoch/0000000000000002"

  // The volume's name (the component after "volumes/"), for messages.
  std::string volume() const {
    const size_t start = path.find('/') + 1;
    const size_t end = path.find('/', start);
    return path.substr(start, end == std::string::npos ? std::string::npos : end - start);
  }
  bool operator==(const LogDir&) const = default;
};

inline LogDir EpochDir(const std::string& name, uint64_t epoch) {
  return LogDir{EpochsDir(name) + "/" + Hex16(epoch)};
}
// Where a version-1 volume keeps its log.
inline LogDir V1LogDir(const std::string& name) { return LogDir{VolDir(name)}; }

inline std::string SegDir(const LogDir& d) { return d.path + "/seg"; }
inline std::string SumDir(const LogDir& d) { return d.path + "/sum"; }
inline std::string CkptDir(const LogDir& d) { return d.path + "/ckpt"; }
inline std::string OwnerName(const LogDir& d) { return d.path + "/owner"; }
inline std::string SegName(const LogDir& d, uint64_t id) { return SegDir(d) + "/" + Hex16(id); }
inline std::string SumName(const LogDir& d, uint64_t id) { return SumDir(d) + "/" + Hex16(id); }
inline std::string CkptName(const LogDir& d, uint64_t seq) {
  return CkptDir(d) + "/" + Hex16(seq);
}
// Snapshots (snapshot_registry.h, doc/snapshots.md): the registry, and one
// map object (checkpoint format) per snapshot id.
inline std::string SnapsName(const LogDir& d) { return d.path + "/snaps"; }
inline std::string SnapDir(const LogDir& d) { return d.path + "/snap"; }
inline std::string SnapName(const LogDir& d, uint64_t id) { return SnapDir(d) + "/" + Hex16(id); }

// Clones of the volume's snapshots (clone.h): one record per clone.
inline std::string ChildrenDir(const std::string& name) { return VolDir(name) + "/children"; }
inline std::string ChildName(const std::string& name, const std::string& child) {
  return ChildrenDir(name) + "/" + child;
}

// Servers that have the volume open (cluster/node.h): one object each,
// named after the server id, holding its JSON record. Hints for `hbiss
// status`, never needed for correctness.
inline std::string OpenDir(const std::string& name) { return VolDir(name) + "/open"; }
inline std::string OpenName(const std::string& name, const std::string& server) {
  return OpenDir(name) + "/" + server;
}

// Largest meta and segment summary objects read (a summary of a 256 MiB
// segment is about 290 KiB).
inline constexpr uint64_t kMaxMetaBytes = 1 << 20;
inline constexpr uint64_t kMaxSummaryBytes = 1 << 20;
inline constexpr uint64_t kMaxCheckpointBytes = 1ull << 34;

}  // namespace hbiss::volume::layout
