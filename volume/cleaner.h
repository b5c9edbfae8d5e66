// Cleaner: reclaims a volume's log space (doc/checkpoint_format.md,
// "Deleting segments"). A pass deletes the segments nothing needs any more,
// then picks a victim, a closed segment whose live fraction is below the
// threshold (SegmentSet::PickVictim, by OpenOptions::clean_policy:
// cost-benefit or greedy), and copies its live blocks to the head of the
// log, so that the whole segment becomes garbage that a later checkpoint
// frees. It reads up to kCopyBlocks of a victim's live blocks, then has them
// copied in one go, into segments that hold cleaner copies of one
// generation only (never a client write, nor copies of copies with first
// copies: cold data is not mixed with hot again).
//
// Rules it keeps, whatever the volume does meanwhile:
//  * a block is copied only from data that passed its CRC, and only if the
//    map still points where it was read (a write since wins): a corrupt block
//    is never given a fresh CRC, it stays with its segment;
//  * a segment whose copy met corruption, or whose batch headers do not show
//    all its live blocks, is never picked again (no busy loop on it);
//  * it stops between pieces of kPieceBlocks when the volume closes.
//
// The volume gives it what it needs through Host. Threads: one background
// thread (Start/Stop) and Clean callers; one pass runs at a time. Lock
// order: a pass holds the cleaner's pass lock, then the Host takes the
// volume's locks.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "util/mutex.h"
#include "util/status.h"
#include "volume/extent_map.h"
#include "volume/volume.h"

namespace hbiss::volume {

class Cleaner {
 public:
  // Blocks read and copied at a time.
  static constexpr uint64_t kPieceBlocks = 256;
  // Blocks read before they are copied in one CopyStillLive (32 MiB: the
  // cleaner's buffer, outside the write budget, is at most this).
  static constexpr uint64_t kCopyBlocks = 8192;
  // The background pass treats thresholds above this as this, so that it
  // never rewrites the segments it has just written (about 99% live).
  static constexpr double kMaxBackgroundThreshold = 0.9;

  // What a volume provides. Every method may be called from the cleaner's
  // thread or a Clean caller, with no volume lock held.
  class Host {
   public:
    virtual ~Host() = default;
    // The closed segment below `below` (0: below the open one), among those
    // whose live fraction is under `threshold` and that are not unclean,
    // that the volume's clean policy puts first; 0 if none.
    virtual uint64_t PickVictim(double threshold, uint64_t below) = 0;
    // The runs of closed segment `seg` the map still points to;
    // *complete is false when its batch headers hide some of its live
    // blocks (a damaged header).
    virtual Result<std::vector<MapRun>> LiveRuns(uint64_t seg, bool* complete) = 0;
    // Reads run `r` (CRC-checked) into out (r.count blocks), holding off
    // segment deletes meanwhile.
    virtual Status ReadRun(const MapRun& r, std::span<uint8_t> out) = 0;
    // Appends to the log head the blocks of each of `pieces` (runs of one
    // segment, each as one operation; their data back to back in buf) that
    // the map still has where the piece says; returns how many. No client
    // write comes between them, and they go to segments that hold cleaner
    // copies of their generation only (doc/checkpoint_format.md). Aborted
    // when the volume is closing.
    virtual Result<uint64_t> CopyStillLive(std::span<const MapRun> pieces,
                                           const uint8_t* buf) = 0;
    // Segment `seg` was cleaned (`moved` blocks), or with `bad`, is never to
    // be picked again.
    virtual void SegmentDone(uint64_t seg, uint64_t moved, bool bad, CleanStats* stats) = 0;
    // Deletes every segment that no checkpoint, no in-memory state and no
    // read in progress needs.
    virtual Status DeleteDeadSegments(CleanStats* stats) = 0;
    // Makes the copies durable, and writes a checkpoint now.
    virtual Status MakeDurable() = 0;
    virtual Status CheckpointNow() = 0;
    // Asks for a checkpoint when dead segments wait for one (paced by the
    // volume).
    virtual void RequestCheckpointIfGarbageWaits() = 0;
    // Whether the background pass should copy now (the log is above the
    // volume's space target, or it has none).
    virtual bool NeedsSpace() = 0;
    // The volume can no longer write: the background pass idles.
    virtual bool Failed() = 0;

    // A full store (volume_impl.h). Stalled: the log waits for space; the
    // background pass then runs CleanWhileStalled instead (delete what
    // needs no space, give up the reserve when cleaning could free some).
    virtual bool Stalled() = 0;
    virtual void CleanWhileStalled(double threshold) = 0;
    // When `s` is NoSpace and the volume had a reserve, gives it up and
    // returns true: the step may be tried again.
    virtual bool ReleaseReserve(const Status& s) = 0;
    // The reserve's size (0: none): a pass where space can run out makes its
    // copies durable and deletes what they emptied every half of it.
    virtual uint64_t ReserveBytes() = 0;
    // Writes the reserve again if it was given up and space is back.
    virtual void RestoreReserve() = 0;
  };

  // `background_threshold` > 0 gives Start a thread; `name` is for logs.
  Cleaner(Host* host, std::string name, double background_threshold);
  ~Cleaner();
  Cleaner(const Cleaner&) = delete;
  Cleaner& operator=(const Cleaner&) = delete;

  // Starts the background thread (when the threshold is above 0). A thread
  // the system refuses is logged: the volume works without it.
  void Start() EXCLUDES(mu_);
  // Stops the background thread and waits for passes in progress (Host
  // calls then fail with Aborted: the volume is closing). Idempotent.
  void Stop() EXCLUDES(mu_, pass_mu_);
  // Wakes the background thread (segments may have become deletable).
  void Wake();

  // A pass now, in the caller's thread: cleans every segment below `below`
  // whose live fraction is under `threshold`, makes that durable, writes
  // two checkpoints and deletes what no checkpoint needs any more.
  // Corruption after finishing the rest if some data failed its CRC.
  Result<CleanStats> Clean(double threshold, uint64_t below) EXCLUDES(pass_mu_);

 private:
  void Loop() EXCLUDES(mu_);
  Status CleanSegment(uint64_t seg, CleanStats* stats) REQUIRES(pass_mu_);
  bool stopping() EXCLUDES(mu_);

  Host* const host_;
  const std::string name_;
  const double threshold_;
  Mutex pass_mu_;  // one pass at a time
  Mutex mu_;
  CondVar cv_;
  bool stop_ GUARDED_BY(mu_) = false;
  bool wake_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace hbiss::volume
