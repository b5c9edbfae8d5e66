// The flattens an hbiss server runs for `hbiss flatten` (FLATTEN and
// FLATTEN_STATUS peer requests, doc/snapshots.md "Served volumes").
//
// A flatten of a big clone takes minutes, longer than a peer request may:
// Start runs it in a thread of its own and returns at once with its job;
// the command then polls Get. At most one flatten per volume runs at a
// time: a Start while one runs returns that one (the asker attaches to it).
// A finished job's outcome is kept for kKeepFinished (and until the next
// Start of that volume), so that a command that polls late still learns it.
// Nothing cancels a job: a command that goes away leaves it running; a
// RELEASE or Close of the volume stops it (SharedVolume::Flatten).
//
// Threads: every method is safe to call from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "cluster/peer.pb.h"
#include "util/mutex.h"
#include "util/status.h"
#include "util/thread_annotations.h"
#include "volume/volume.h"

namespace hbiss::cluster {

class FlattenJobs {
 public:
  static constexpr std::chrono::minutes kKeepFinished{10};

  FlattenJobs();
  // Waits for the jobs' threads. The volumes they flatten must be closing or
  // closed (a Close stops their flatten), or this waits for them to finish.
  ~FlattenJobs();
  FlattenJobs(const FlattenJobs&) = delete;
  FlattenJobs& operator=(const FlattenJobs&) = delete;

  // Starts flattening `v`, volume `name`, in the background, unless a
  // flatten of `name` runs already: then returns that job. `release` is
  // called exactly once when this no longer uses `v`: at the job's end, in
  // its thread, or before Start returns if it started nothing. `v` must stay
  // usable until then. Returns the job (RUNNING), or IOError if its thread
  // cannot start.
  Result<pb::FlattenJob> Start(const std::string& name, volume::Volume* v,
                               std::function<void()> release) EXCLUDES(mu_);

  // Job `job` of volume `name` as it is now; state UNKNOWN when there is no
  // such job (never started here, or forgotten).
  pb::FlattenJob Get(const std::string& name, uint64_t job) EXCLUDES(mu_);

 private:
  struct Job {
    pb::FlattenJob state;
    std::chrono::steady_clock::time_point finished;  // when state is no longer RUNNING
    std::thread thread;
  };

  // The job's thread: runs the flatten and records how it went.
  void Run(const std::string& name, uint64_t id, volume::Volume* v) EXCLUDES(mu_);
  // Removes finished jobs kept long enough; returns their threads, to be
  // joined without mu_ held.
  std::vector<std::thread> PruneLocked() REQUIRES(mu_);

  Mutex mu_;
  std::map<std::string, Job> jobs_ GUARDED_BY(mu_);
  uint64_t next_id_ GUARDED_BY(mu_);
};

}  // namespace hbiss::cluster
