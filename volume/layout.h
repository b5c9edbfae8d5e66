// Where a volume's objects live in its store (doc/volume_meta.md):
//
//   volumes/NAME/meta        the volume's meta (volume_meta.h)
//   volumes/NAME/lock        held by the process that has it open for writing
//   volumes/NAME/seg/<id>    log segments (log_format.h)
//   volumes/NAME/sum/<id>    segment summaries: CRC tables of closed segments
//   volumes/NAME/ckpt/<seq>  checkpoints (checkpoint.h)
//   volumes/NAME/reserve     space held for a full device (space_reserve.h)
//
// <id> and <seq> are 16 lowercase hex digits (Hex16). Pure functions.
#pragma once

#include <cstdint>
#include <string>

#include "volume/log_format.h"

namespace hbiss::volume::layout {

inline std::string VolDir(const std::string& name) { return "volumes/" + name; }
inline std::string MetaName(const std::string& name) { return VolDir(name) + "/meta"; }
inline std::string LockName(const std::string& name) { return VolDir(name) + "/lock"; }
inline std::string ReserveName(const std::string& name) { return VolDir(name) + "/reserve"; }
inline std::string SegDir(const std::string& name) { return VolDir(name) + "/seg"; }
inline std::string SumDir(const std::string& name) { return VolDir(name) + "/sum"; }
inline std::string CkptDir(const std::string& name) { return VolDir(name) + "/ckpt"; }
inline std::string SegName(const std::string& name, uint64_t id) {
  return SegDir(name) + "/" + Hex16(id);
}
inline std::string SumName(const std::string& name, uint64_t id) {
  return SumDir(name) + "/" + Hex16(id);
}
inline std::string CkptName(const std::string& name, uint64_t seq) {
  return CkptDir(name) + "/" + Hex16(seq);
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
