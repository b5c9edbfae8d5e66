#include "volume/cleaner.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "util/thread.h"
#include "volume/log_format.h"

namespace hbiss::volume {

namespace {
// The background pass looks for work at least this often.
constexpr auto kIdle = std::chrono::seconds(1);
}  // namespace

Cleaner::Cleaner(Host* host, std::string name, double background_threshold)
    : host_(host),
      name_(std::move(name)),
      threshold_(std::min(background_threshold, kMaxBackgroundThreshold)) {}

Cleaner::~Cleaner() { Stop(); }

void Cleaner::Start() {
  if (threshold_ <= 0) return;
  auto t = StartThread("volume cleaner", [this] { Loop(); });
  if (!t.ok()) {
    // The volume works without its cleaner (Clean still does); say so.
    spdlog::warn("volume {}: running without a background cleaner: {}", name_,
                 t.status().ToString());
    return;
  }
  thread_ = std::move(*t);
}

void Cleaner::Stop() {
  {
    MutexLock l(&mu_);
    stop_ = true;
  }
  cv_.SignalAll();
  if (thread_.joinable()) thread_.join();
  MutexLock p(&pass_mu_);  // a Clean caller's pass ends (its copies see Aborted)
}

void Cleaner::Wake() {
  {
    MutexLock l(&mu_);
    wake_ = true;
  }
  cv_.Signal();
}

bool Cleaner::stopping() {
  MutexLock l(&mu_);
  return stop_;
}

Status Cleaner::CleanSegment(uint64_t seg, CleanStats* stats) {
  bool complete = false;
  HBISS_ASSIGN_OR_RETURN(std::vector<MapRun> live, host_->LiveRuns(seg, &complete));
  uint64_t total = 0;
  for (const MapRun& run : live) total += run.count;
  std::vector<uint8_t> buf(std::min(total, kCopyBlocks) * kBlockSize);
  Status bad;
  if (!complete) {
    bad = Status::Corruption("volume " + name_ + " segment " + Hex16(seg) +
                             ": its batch headers do not show all of its live blocks; "
                             "the segment is kept and not cleaned again");
    spdlog::error("{}", bad.message());
  }
  uint64_t moved = 0;
  std::vector<MapRun> pieces;  // read into buf, back to back, not yet copied
  uint64_t buffered = 0;
  auto copy = [&]() -> Status {
    if (pieces.empty()) return Status::OK();
    HBISS_ASSIGN_OR_RETURN(uint64_t n, host_->CopyStillLive(pieces, buf.data()));
    moved += n;
    pieces.clear();
    buffered = 0;
    return Status::OK();
  };
  for (const MapRun& run : live) {
    for (uint64_t done = 0; done < run.count;) {
      MapRun p = run;
      p.lba += done;
      p.slot += uint32_t(done);
      p.count = std::min(kPieceBlocks, run.count - done);
      done += p.count;
      if (buffered + p.count > kCopyBlocks) HBISS_RETURN_IF_ERROR(copy());
      Status rs = host_->ReadRun(
          p, std::span<uint8_t>(buf.data() + buffered * kBlockSize, p.count * kBlockSize));
      if (!rs.ok()) {
        if (!rs.IsCorruption()) return rs;
        // Never copied: a fresh CRC would make bad data look good. The
        // blocks stay where they are, and so does the segment.
        spdlog::error("volume {}: cleaner left blocks [{}, +{}) in segment {}: {}", name_, p.lba,
                      p.count, Hex16(seg), rs.ToString());
        bad = rs;
        continue;
      }
      pieces.push_back(p);
      buffered += p.count;
    }
  }
  HBISS_RETURN_IF_ERROR(copy());
  host_->SegmentDone(seg, moved, !bad.ok(), stats);
  return bad;
}

Result<CleanStats> Cleaner::Clean(double threshold, uint64_t below) {
  MutexLock p(&pass_mu_);
  CleanStats st;
  Status bad;
  // A step that a full store stopped is tried once more in the reserve's
  // space.
  auto with_reserve = [&](auto step) -> Status {
    Status s = step();
    if (host_->ReleaseReserve(s)) {
      s = host_->MakeDurable();
      if (s.ok()) s = step();
    }
    return s;
  };
  auto durable = [&] { return host_->MakeDurable(); };
  auto checkpoint = [&] { return host_->CheckpointNow(); };
  // Two checkpoints after the copies are durable: then neither kept one
  // needs the cleaned segments, and DeleteDeadSegments frees them.
  auto free_cleaned = [&]() -> Status {
    HBISS_RETURN_IF_ERROR(with_reserve(durable));
    HBISS_RETURN_IF_ERROR(with_reserve(checkpoint));
    HBISS_RETURN_IF_ERROR(with_reserve(checkpoint));
    return host_->DeleteDeadSegments(&st);
  };
  // Where space can run out, that happens every half reserve of copies, so
  // a pass needs no more free space than that.
  uint64_t moved_mark = 0;
  for (;;) {
    const uint64_t victim = host_->PickVictim(threshold, below);
    if (victim == 0) break;
    Status s = CleanSegment(victim, &st);
    if (s.IsCorruption()) {
      bad = s;  // that segment is never picked again
      continue;
    }
    if (host_->ReleaseReserve(s)) {
      HBISS_RETURN_IF_ERROR(host_->MakeDurable());  // the log goes on in the reserve's space
      continue;
    }
    HBISS_RETURN_IF_ERROR(s);
    const uint64_t reserve = host_->ReserveBytes();
    if (reserve > 0 && (st.blocks_moved - moved_mark) * kBlockSize >= reserve / 2) {
      moved_mark = st.blocks_moved;
      HBISS_RETURN_IF_ERROR(free_cleaned());
    }
  }
  HBISS_RETURN_IF_ERROR(free_cleaned());
  if (!bad.ok()) return bad;
  return st;
}

void Cleaner::Loop() {
  MutexLock l(&mu_);
  bool busy = false;
  while (!stop_) {
    if (!busy && !wake_) cv_.WaitFor(&mu_, kIdle);
    busy = false;
    wake_ = false;
    if (stop_) break;
    l.Unlock();
    if (!host_->Failed() && host_->Stalled()) {
      MutexLock p(&pass_mu_);
      host_->CleanWhileStalled(threshold_);
    } else if (!host_->Failed()) {
      host_->RestoreReserve();
      MutexLock p(&pass_mu_);
      CleanStats st;
      Status s = host_->DeleteDeadSegments(&st);
      if (!s.ok()) spdlog::warn("volume {}: cleaner: {}", name_, s.ToString());
      const uint64_t victim =
          stopping() || !host_->NeedsSpace() ? 0 : host_->PickVictim(threshold_, 0);
      if (victim != 0) {
        s = CleanSegment(victim, &st);
        if (s.ok()) {
          busy = true;
        } else if (s.code() != Status::Code::kAborted) {
          spdlog::warn("volume {}: cleaner: segment {}: {}", name_, Hex16(victim), s.ToString());
        }
      }
      host_->RequestCheckpointIfGarbageWaits();
    }
    l.Lock();
  }
}

}  // namespace hbiss::volume
