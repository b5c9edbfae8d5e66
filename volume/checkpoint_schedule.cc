#include "volume/checkpoint_schedule.h"

namespace hbiss::volume {

bool CheckpointSchedule::TryBegin(bool stopping, bool op_in_progress, bool batch_open) {
  if (!Due(stopping) || op_in_progress || batch_open) return false;
  since_last_ = 0;
  requested_ = false;
  begun_++;
  return true;
}

void CheckpointSchedule::Finished(const Status& s, Clock::duration encode_time,
                                  Clock::duration write_time, uint64_t bytes) {
  cost_ = encode_time + write_time;
  if (s.ok()) {
    encode_time_ = encode_time;
    write_time_ = write_time;
    bytes_ = bytes;
    written_++;
  }
  status_ = s;
  finished_++;
}

void CheckpointSchedule::Abandoned(const Status& s) {
  status_ = s;
  finished_++;
}

uint64_t CheckpointSchedule::Request() {
  requested_ = true;
  // Checkpoints are begun and finished in order: the first begun after
  // this request is the one to wait for.
  return begun_ + 1;
}

bool CheckpointSchedule::MayForce(Clock::time_point now) const {
  return !requested_ && now - last_forced_ >= kForceEvery &&
         now - last_forced_ >= kForceCostFactor * cost_;
}

void CheckpointSchedule::Force(Clock::time_point now) {
  requested_ = true;
  last_forced_ = now;
}

}  // namespace hbiss::volume
