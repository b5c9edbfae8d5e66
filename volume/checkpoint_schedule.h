// CheckpointSchedule: when a volume's flusher writes a periodic checkpoint,
// and the bookkeeping that CheckpointNow callers and Info read.
//
// Rules:
//  * A checkpoint is due when one was requested (Request: CheckpointNow;
//    Force: the cleaner, to free garbage that waits for one), or when
//    `interval` bytes of log were appended since the last one began; never
//    while the volume is stopping (Close writes its own).
//  * A due checkpoint is begun only at a batch boundary outside an
//    operation: the map must match the log position the checkpoint names.
//    Beginning one clears the request and restarts the interval.
//  * Checkpoints are numbered as they begin; a Request waits for the first
//    one begun after it (its ticket) to finish: written (Finished, with its
//    status) or given up because the store is full (Abandoned).
//  * Forced requests: at most one per kForceEvery, and at most about
//    1/kForceCostFactor of the time (a big map takes long to encode; the
//    cost is the last checkpoint's encode + write time).
//
// Pure logic: no clock (callers pass the time), no I/O, no lock.
// Thread-compatible: the volume keeps it under its mutex.
#pragma once

#include <chrono>
#include <cstdint>

#include "util/status.h"

namespace hbiss::volume {

class CheckpointSchedule {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr auto kForceEvery = std::chrono::seconds(5);
  static constexpr int kForceCostFactor = 50;

  // A checkpoint is due every `interval` bytes of log.
  explicit CheckpointSchedule(uint64_t interval) : interval_(interval) {}
  CheckpointSchedule(const CheckpointSchedule&) = delete;
  CheckpointSchedule& operator=(const CheckpointSchedule&) = delete;

  // `bytes` more of log were appended.
  void AddLog(uint64_t bytes) { since_last_ += bytes; }
  uint64_t log_since_last() const { return since_last_; }

  // Whether a checkpoint is due (see the top).
  bool Due(bool stopping) const { return (requested_ || since_last_ >= interval_) && !stopping; }

  // Begins a due checkpoint if it can be taken now (no operation in
  // progress, no open batch): returns true, clears the request, restarts
  // the interval and numbers it. The caller then writes it and calls
  // Finished or Abandoned. False (nothing changes) otherwise.
  bool TryBegin(bool stopping, bool op_in_progress, bool batch_open);

  // The checkpoint begun last was written (s OK: `bytes` long) or failed
  // with s; encode and write took that long.
  void Finished(const Status& s, Clock::duration encode_time, Clock::duration write_time,
                uint64_t bytes);
  // The checkpoint begun last was given up (the store is full): its waiters
  // get s.
  void Abandoned(const Status& s);

  // Asks for a checkpoint soon; returns the ticket to wait for (Done).
  uint64_t Request();
  // Whether the checkpoint of `ticket` has finished. last_status() is the
  // status of the last one finished: the ticket's, unless a later one
  // finished too before the caller looked.
  bool Done(uint64_t ticket) const { return finished_ >= ticket; }
  const Status& last_status() const { return status_; }
  bool requested() const { return requested_; }

  // Whether a forced request is allowed at `now` (none pending, and the
  // rate rules at the top hold); Force makes it.
  bool MayForce(Clock::time_point now) const;
  void Force(Clock::time_point now);

  // Of the checkpoints written: how many, and the newest one's size and
  // times.
  uint64_t written() const { return written_; }
  uint64_t bytes() const { return bytes_; }
  Clock::duration encode_time() const { return encode_time_; }
  Clock::duration write_time() const { return write_time_; }

 private:
  const uint64_t interval_;
  uint64_t since_last_ = 0;  // log appended since the last checkpoint began
  bool requested_ = false;
  uint64_t begun_ = 0;     // checkpoints begun (numbered 1, 2, ...)
  uint64_t finished_ = 0;  // ... and then finished
  Status status_;          // ... and how the last one went
  Clock::duration cost_{};  // encode + write of the last one finished
  Clock::time_point last_forced_{};
  uint64_t written_ = 0;
  uint64_t bytes_ = 0;
  Clock::duration encode_time_{};
  Clock::duration write_time_{};
};

}  // namespace hbiss::volume
