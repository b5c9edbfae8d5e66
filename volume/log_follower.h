// LogFollower: keeps an extent map in step with a log that another process
// (the volume's owner, doc/ownership.md) is still writing. A server that has
// a volume open without owning it reads through such a map.
//
// Load() is recovery without the writer's part: the newest checkpoint, then
// the chain of segments after it, replayed to the end of what is visible
// (doc/log_format.md, "Recovery"). CatchUp() then replays only what the log
// gained since: more batches of the segment where the last call stopped
// (the owner's open segment grows), then the segments that follow it. An
// operation split over several batches takes effect once its last entry is
// replayed, in this call or a later one, never in part.
//
// The log may stop continuing from where this follower stopped: a new
// owner's recovery cuts an unproven tail off the chain (its first segment
// names an earlier end), or the cleaner deleted segments this follower had
// not reached. CatchUp then loads again from the newest checkpoint (counted
// in reloads()). What it never does is leave the map reflecting a log that
// is not the volume's: every change it applies comes from a batch that
// passed the checks of recovery (volume id, segment, seq, CRCs).
//
// It only reads the store: never a lease recovery, never a write.
// Thread-compatible: the caller serialises calls, and owns *map (it may read
// the map between calls, not during one).
#pragma once

#include <cstdint>
#include <string>

#include "store/store.h"
#include "util/status.h"
#include "volume/extent_map.h"
#include "volume/layout.h"
#include "volume/log_format.h"
#include "volume/log_reader.h"
#include "volume/volume_meta.h"

namespace hbiss::volume {

class LogFollower {
 public:
  // Follows the log in directory `dir` of `store` into *map (of meta.size /
  // kBlockSize blocks). store and map must outlive the follower.
  LogFollower(store::Store* store, layout::LogDir dir, VolumeMeta meta, ExtentMap* map);
  LogFollower(const LogFollower&) = delete;
  LogFollower& operator=(const LogFollower&) = delete;

  // Resets *map, then loads the newest checkpoint and replays the log to its
  // visible end. Corruption when the log is damaged before its end;
  // NotFound or IOError from the store (the map is then empty, and a later
  // call may try again).
  Status Load();

  // Replays what was appended since the last Load or CatchUp (Load first if
  // there was none, or if the log no longer continues from there). Errors as
  // for Load; after one the next call loads again.
  Status CatchUp();

  // The log moved to `dir` (a new epoch, doc/ownership.md; segment ids carry
  // over): later calls read there. The map and end() stay as they are; the
  // next CatchUp goes on from end() in the new directory (or loads again if
  // the log does not continue from there).
  void SetDir(layout::LogDir dir) { dir_ = std::move(dir); }
  const layout::LogDir& dir() const { return dir_; }

  // Where the replayed log ends, and the seq of the batch that follows.
  LogPosition end() const { return end_; }
  uint64_t next_seq() const { return seq_; }
  // Whether an operation is still incomplete at end().
  bool op_pending() const { return replay_ != nullptr && replay_->has_pending(); }
  // Loads done, the first included.
  uint64_t loads() const { return loads_; }
  // The checkpoint the last Load started from (0: none).
  uint64_t checkpoint_seq() const { return ckpt_seq_; }

 private:
  // Replays segment `id` from byte `from`; `limit` as for
  // LogReplayer::ReplaySegment. NotFound when the segment is gone.
  Status Replay(uint64_t id, uint64_t from, const uint64_t* limit);
  // The part of CatchUp after the first Load. *diverged: the log does not
  // continue from end_ (load again).
  Status Advance(bool* diverged);

  store::Store* const store_;
  layout::LogDir dir_;
  const std::string name_;  // the volume's, for messages
  const VolumeMeta meta_;
  ExtentMap* const map_;
  std::unique_ptr<LogReplayer> replay_;  // null until loaded
  LogPosition end_;
  uint64_t seq_ = 1;
  uint64_t loads_ = 0;
  uint64_t ckpt_seq_ = 0;
};

}  // namespace hbiss::volume
