#include "cluster/shared_volume.h"

#include <unistd.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "volume/layout.h"
#include "volume/volume_meta.h"

namespace hbiss::cluster {

namespace {

using Clock = std::chrono::steady_clock;

std::span<const uint8_t> AsBytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

int64_t MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

}  // namespace

Result<std::unique_ptr<SharedVolume>> SharedVolume::Open(Node* node, const std::string& name) {
  volume::OpenOptions ro = node->options().open;
  ro.read_only = true;
  ro.owner.clear();
  HBISS_ASSIGN_OR_RETURN(auto v, volume::Volume::Open(node->store(), name, ro));
  std::unique_ptr<SharedVolume> sv(new SharedVolume(node, name));
  sv->size_ = v->size();
  {
    WriterMutexLock l(&sv->mu_);
    sv->v_ = std::move(v);
  }
  if (auto meta = volume::ReadMeta(node->store(), name); meta.ok()) {
    MutexLock l(&sv->sync_mu_);
    sv->opened_id_ = meta->id;
  }
  // Who has the volume open, for `hbiss status`; a hint only.
  Status ps = node->store()->Put(volume::layout::OpenName(name, node->server_id()),
                                 AsBytes(EncodeServerRecord(node->Record())));
  if (!ps.ok()) spdlog::warn("volume {}: recording this server's open: {}", name, ps.ToString());
  node->Register(name, sv.get());
  return sv;
}

SharedVolume::~SharedVolume() { (void)Close(); }

bool SharedVolume::owner() const { return owner_flag_.load(); }

void SharedVolume::PassGate() { MutexLock g(&gate_); }

SharedVolume::Stats SharedVolume::stats() const {
  MutexLock l(&stats_mu_);
  return stats_;
}

Status SharedVolume::OpenReaderLocked() {
  volume::OpenOptions ro = node_->options().open;
  ro.read_only = true;
  ro.owner.clear();
  auto v = volume::Volume::Open(node_->store(), name_, ro);
  if (!v.ok()) {
    return v.status().WithContext("volume " + name_ + ": reopening it to read");
  }
  v_ = std::move(*v);
  owner_ = false;
  owner_flag_ = false;
  auto meta = volume::ReadMeta(node_->store(), name_);
  if (meta.ok()) {
    MutexLock l(&sync_mu_);
    if (opened_id_ == 0) opened_id_ = meta->id;
  }
  return Status::OK();
}

Status SharedVolume::AcquireLocked() {
  const NodeOptions& o = node_->options();
  volume::OpenOptions rw = o.open;
  rw.read_only = false;
  rw.owner = EncodeServerRecord(node_->Record());
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::milliseconds(o.acquire_timeout_ms);
  Clock::time_point last_ask{};
  bool warned = false;
  std::string holder = "another server";
  // Just released to another server: let it take the volume and serve its
  // write first (it asked because a client of it writes), or the two would
  // trade the volume back and forth with the asker mostly losing.
  if (released_epoch_ != 0) {
    const auto until = released_at_ + std::chrono::milliseconds(kYieldAfterReleaseMs);
    while (Clock::now() < until) {
      auto rec = volume::Volume::Owner(node_->store(), name_);
      if (!rec.ok() || rec->epoch > released_epoch_) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    released_epoch_ = 0;
  }
  for (int attempt = 0;; attempt++) {
    // Opening: once its TryLock succeeded it holds the lock, before its owner
    // record exists. PING says "owns" meanwhile, so a lock break spares it.
    // (Between attempts, waiting for a dead owner, it holds nothing to spare.)
    acquiring_ = true;
    auto opened = volume::Volume::Open(node_->store(), name_, rw);
    acquiring_ = false;
    if (opened.ok()) {
      // The reader goes after the writer is open: its follower is no longer needed.
      if (v_) (void)v_->Close();
      v_ = std::move(*opened);
      owner_ = true;
      owner_flag_ = true;
      {
        MutexLock l(&stats_mu_);
        stats_.acquired++;
      }
      spdlog::info("volume {}: this server ({}) owns it now, epoch {} ({} ms{})", name_,
                   node_->server_id(), v_->epoch(), MsSince(start),
                   warned ? ", after a takeover" : "");
      return Status::OK();
    }
    if (!opened.status().IsBusy()) {
      return opened.status().WithContext("volume " + name_ + ": becoming its writer");
    }
    // Someone holds the lock: ask the owner its record names to release.
    bool released = false;
    auto rec = volume::Volume::Owner(node_->store(), name_);
    if (rec.ok() && !rec->owner.empty()) {
      auto sr = DecodeServerRecord(rec->owner);
      if (sr.ok()) {
        holder = "server " + sr->server + " (peer " + (sr->peer.empty() ? "none" : sr->peer) + ")";
      }
      if (sr.ok() && sr->server != node_->server_id() && !sr->peer.empty() &&
          (attempt == 0 || Clock::now() - last_ask > std::chrono::seconds(1))) {
        last_ask = Clock::now();
        auto reply = PeerCall(sr->peer, PeerRequest(pb::Request::RELEASE, rec->epoch, attempt),
                              o.peer_timeout_ms);
        if (reply.ok() && reply->code() == pb::Reply::OK) {
          released = true;
          last_ask = Clock::time_point{};  // if another server got it first, ask that one at once
        } else if (!reply.ok() && !warned) {
          warned = true;
          spdlog::warn("volume {}: its owner, {}, does not answer ({}); waiting until its lock "
                       "expires (automatic takeover) or is broken (hbiss lock break)",
                       name_, holder, reply.status().ToString());
        } else if (reply.ok() && reply->code() == pb::Reply::FAILED && !warned) {
          warned = true;
          spdlog::warn("volume {}: {} could not release it: {}", name_, holder,
                       reply->message());
        }
      }
    }
    if (Clock::now() >= deadline) {
      return Status::IOError("volume " + name_ + ": could not become its writer within " +
                             std::to_string(o.acquire_timeout_ms) + " ms: " + holder +
                             " holds it and did not release it");
    }
    // Right after a release the lock is free: try again at once, then back off.
    std::this_thread::sleep_for(std::chrono::milliseconds(released ? 0 : attempt < 10 ? 50 : 500));
  }
}

pb::Request SharedVolume::PeerRequest(pb::Request::Type type, uint64_t epoch,
                                      int attempt) const {
  pb::Request req;
  req.set_type(type);
  req.set_id(uint64_t(attempt) + 1);
  req.set_volume(name_);
  req.set_epoch(epoch);
  req.set_from_server(node_->server_id());
  return req;
}

template <typename Op>
Status SharedVolume::AsOwner(Op op) {
  {
    PassGate();
    ReaderMutexLock l(&mu_);
    if (closed_) return Status::Aborted("volume " + name_ + " is closed");
    if (!lost_.ok()) return lost_;
    if (owner_) return op(v_.get());
  }
  MutexLock g(&gate_);
  WriterMutexLock l(&mu_);
  if (closed_) return Status::Aborted("volume " + name_ + " is closed");
  if (!lost_.ok()) return lost_;
  if (!owner_) HBISS_RETURN_IF_ERROR(AcquireLocked());
  // Still holding mu_: no RELEASE can take ownership before this op is served.
  return op(v_.get());
}

Status SharedVolume::DoSync() {
  {
    MutexLock l(&stats_mu_);
    stats_.syncs++;
  }
  const auto wait_deadline =
      Clock::now() + std::chrono::milliseconds(node_->options().acquire_timeout_ms);
  bool warned = false;
  for (int attempt = 0;; attempt++) {
    auto rec = volume::Volume::Owner(node_->store(), name_);
    if (!rec.ok()) return rec.status().WithContext("volume " + name_ + ": finding its owner");
    auto sr = rec->owner.empty() ? Result<ServerRecord>(Status::NotFound("no owner"))
                                 : DecodeServerRecord(rec->owner);
    // An owner found gone (no answer, lock free) is not asked again for a
    // while: a dead host would otherwise cost every read the peer timeout.
    bool gone = false;
    bool answered = false;  // the owner flushed (OK) or had released (NOT_OWNER)
    if (sr.ok()) {
      MutexLock l(&sync_mu_);
      gone = sr->peer == silent_peer_ && rec->epoch == silent_epoch_ &&
             Clock::now() < silent_until_;
    }
    if (sr.ok() && sr->server != node_->server_id() && !gone) {
      const std::string who = "its owner, server " + sr->server + " (" +
                              (sr->peer.empty() ? "no peer endpoint" : sr->peer) + ")";
      Result<pb::Reply> reply = Status::IOError("it cannot be asked");
      if (!sr->peer.empty()) {
        reply = PeerCall(sr->peer, PeerRequest(pb::Request::SYNC, rec->epoch, attempt),
                         node_->options().peer_timeout_ms);
      }
      if (reply.ok() && reply->code() == pb::Reply::NOT_OWNER && reply->current_epoch() != 0 &&
          reply->current_epoch() != rec->epoch && attempt < 5) {
        continue;  // it owns a newer epoch than the record read: read it again
      }
      // OK: it flushed. NOT_OWNER of any epoch: it released, and a release is durable.
      answered = reply.ok() &&
                 (reply->code() == pb::Reply::OK || reply->code() == pb::Reply::NOT_OWNER);
      if (!answered) {
        const std::string why = reply.ok() ? reply->message() : reply.status().ToString();
        // Silent. While it holds the lock it may be alive (partitioned, stopped,
        // busy) with acknowledged writes the log lacks: wait. Once the lock is
        // free (it died and its lease expired, or a lock break), the log is all
        // there is, and reads are served from it.
        auto locked = volume::Volume::Locked(node_->store(), name_);
        if (!locked.ok() || *locked) {
          if (Clock::now() >= wait_deadline) {
            return Status::IOError("volume " + name_ + ": " + who + " did not sync (" + why +
                                   ") and still holds the volume's lock");
          }
          if (!warned) {
            warned = true;
            spdlog::warn("volume {}: {} did not sync ({}) and holds the lock; reads wait "
                         "until it answers or its lock is free", name_, who, why);
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(500));
          continue;
        }
        spdlog::warn("volume {}: {} is gone (no answer: {}; its lock is free): reads are "
                     "served from the log", name_, who, why);
        MutexLock l(&sync_mu_);
        silent_peer_ = sr->peer;
        silent_epoch_ = rec->epoch;
        silent_until_ = Clock::now() + std::chrono::seconds(2);
      }
    }
    // No owner answered (none, or gone with its lock free). When the epoch
    // is the one a replay already read with the lock free, that epoch's log
    // was final then (every writer takes the lock and starts a new epoch
    // before it appends), so the replay, which lists and stats the log, is
    // skipped (doc/ownership.md, "Coherent reads on a reader"). Without this
    // a read-only client of an unowned volume paid a replay per read round
    // (10k random reads/s at QD32 on a local store instead of 60k+).
    // Epochs restart at 1 in a volume deleted and created again under the
    // same name: the volume's id (random, in its meta) is part of the key.
    bool lock_free = false;
    uint64_t id = 0;
    if (!answered) {
      auto meta = volume::ReadMeta(node_->store(), name_);
      if (meta.ok()) id = meta->id;
      {
        MutexLock l(&sync_mu_);
        // Removed (and maybe created again) while this server had it open:
        // its map is the old volume's; serving it would be stale.
        if ((meta.ok() && opened_id_ != 0 && meta->id != opened_id_) ||
            (!meta.ok() && meta.status().IsNotFound())) {
          return Status::NotFound("volume " + name_ +
                                  " was removed while this server had it open");
        }
        if (id != 0 && idle_epoch_ != 0 && idle_epoch_ == rec->epoch && idle_id_ == id) {
          return Status::OK();
        }
      }
      // Checked before the replay: a writer that takes the lock after this
      // starts a newer epoch, which the next round sees.
      auto locked = volume::Volume::Locked(node_->store(), name_);
      lock_free = id != 0 && locked.ok() && !*locked;
    }
    // Catch up on the log; a failed replay is tried again before a read fails.
    Status s;
    for (int i = 0; i < 3; i++) {
      {
        ReaderMutexLock l(&mu_);
        if (owner_ || !v_) return Status::OK();
        s = v_->Refresh();
      }
      {
        MutexLock l(&stats_mu_);
        stats_.replays++;
      }
      if (s.ok()) {
        MutexLock l(&sync_mu_);
        idle_epoch_ = lock_free ? rec->epoch : 0;
        idle_id_ = lock_free ? id : 0;
        return s;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return s.WithContext("volume " + name_ + ": catching up on the log before a read");
  }
}

Status SharedVolume::SyncForRead() {
  MutexLock l(&sync_mu_);
  // A round already out began before this read: it needs the next one.
  const uint64_t need = sync_done_ + (sync_running_ ? 2 : 1);
  Status result;
  while (sync_done_ < need) {
    if (!sync_running_) {
      sync_running_ = true;
      l.Unlock();
      Status s = DoSync();
      l.Lock();
      sync_running_ = false;
      sync_done_++;
      sync_cv_.SignalAll();
      if (!s.ok()) result = s;
    } else {
      sync_cv_.Wait(&sync_mu_);
    }
  }
  return result;
}

template <typename R, typename Op>
R SharedVolume::AsReader(Op op) {
  {
    PassGate();
    ReaderMutexLock l(&mu_);
    if (closed_) return Status::Aborted("volume " + name_ + " is closed");
    if (owner_) return op(v_.get());
  }
  // A reader that could not catch up must not serve what may be stale.
  HBISS_RETURN_IF_ERROR(SyncForRead());
  {
    PassGate();
    ReaderMutexLock l(&mu_);
    if (closed_) return Status::Aborted("volume " + name_ + " is closed");
    if (v_) return op(v_.get());
  }
  // No inner volume: reopening it read-only after a release failed.
  MutexLock g(&gate_);
  WriterMutexLock l(&mu_);
  if (closed_) return Status::Aborted("volume " + name_ + " is closed");
  if (!v_) HBISS_RETURN_IF_ERROR(OpenReaderLocked());
  return op(v_.get());
}

Status SharedVolume::Read(uint64_t offset, std::span<uint8_t> out) {
  return AsReader<Status>([&](volume::Volume* v) { return v->Read(offset, out); });
}

Result<std::vector<volume::Extent>> SharedVolume::BlockStatus(uint64_t offset, uint64_t length) {
  return AsReader<Result<std::vector<volume::Extent>>>(
      [&](volume::Volume* v) { return v->BlockStatus(offset, length); });
}

Status SharedVolume::Write(uint64_t offset, std::span<const uint8_t> data) {
  return AsOwner([&](volume::Volume* v) { return v->Write(offset, data); });
}

Status SharedVolume::Trim(uint64_t offset, uint64_t length) {
  return AsOwner([&](volume::Volume* v) { return v->Trim(offset, length); });
}

Status SharedVolume::WriteZeroes(uint64_t offset, uint64_t length) {
  return AsOwner([&](volume::Volume* v) { return v->WriteZeroes(offset, length); });
}

Result<volume::SnapshotInfo> SharedVolume::CreateSnapshot(const std::string& snap) {
  volume::SnapshotInfo info;
  HBISS_RETURN_IF_ERROR(AsOwner([&](volume::Volume* v) -> Status {
    HBISS_ASSIGN_OR_RETURN(info, v->CreateSnapshot(snap));
    return Status::OK();
  }));
  return info;
}

Status SharedVolume::RemoveSnapshot(const std::string& snap) {
  return AsOwner([&](volume::Volume* v) { return v->RemoveSnapshot(snap); });
}

Result<bool> SharedVolume::TrashSnapshot(const std::string& snap) {
  bool trashed = false;
  HBISS_RETURN_IF_ERROR(AsOwner([&](volume::Volume* v) -> Status {
    HBISS_ASSIGN_OR_RETURN(trashed, v->TrashSnapshot(snap));
    return Status::OK();
  }));
  return trashed;
}

Result<uint64_t> SharedVolume::PurgeTrash() {
  uint64_t purged = 0;
  HBISS_RETURN_IF_ERROR(AsOwner([&](volume::Volume* v) -> Status {
    HBISS_ASSIGN_OR_RETURN(purged, v->PurgeTrash());
    return Status::OK();
  }));
  return purged;
}

Status SharedVolume::RenameSnapshot(const std::string& from, const std::string& to) {
  return AsOwner([&](volume::Volume* v) { return v->RenameSnapshot(from, to); });
}

Result<uint64_t> SharedVolume::Flatten(const std::function<bool(uint64_t, uint64_t)>& progress) {
  // Becoming the owner needs mu_ exclusively; the copying only shared (as
  // a write would), so that I/O goes on and a role change can stop it.
  HBISS_RETURN_IF_ERROR(AsOwner([](volume::Volume*) { return Status::OK(); }));
  PassGate();
  ReaderMutexLock l(&mu_);
  if (closed_) return Status::Aborted("volume " + name_ + " is closed");
  if (!lost_.ok()) return lost_;
  if (!owner_) {
    return Status::Aborted("volume " + name_ + ": another server took it before the flatten "
                           "began");
  }
  bool yielded = false;
  auto r = v_->Flatten([&](uint64_t done, uint64_t total) {
    if (role_changes_waiting_.load() > 0) {
      yielded = true;
      return false;
    }
    return !progress || progress(done, total);
  });
  if (!r.ok() && yielded) {
    return Status::Aborted("volume " + name_ + ": the flatten stopped mid-way because this "
                           "server gave the volume up (another server's client wrote to it, "
                           "or it was closed); what it copied stays: run it again to finish "
                           "(" + r.status().message() + ")");
  }
  return r;
}

Status SharedVolume::Rollback(const std::string& snap) {
  return AsOwner([&](volume::Volume* v) { return v->Rollback(snap); });
}

Status SharedVolume::Flush() {
  // A reader has nothing of its own to flush: every write it acknowledged
  // was acknowledged as the owner, and a release made those durable.
  {
    PassGate();
    ReaderMutexLock l(&mu_);
    if (closed_) return Status::Aborted("volume " + name_ + " is closed");
    if (!lost_.ok()) return lost_;
    if (owner_) return v_->Flush();
    return Status::OK();
  }
}

Status SharedVolume::Refresh() {
  {
    PassGate();
    ReaderMutexLock l(&mu_);
    if (owner_) return Status::OK();
  }
  return SyncForRead();
}

volume::VolumeInfo SharedVolume::Info() const {
  ReaderMutexLock l(&mu_);
  if (v_) return v_->Info();
  volume::VolumeInfo i;
  i.name = name_;
  i.size = size_;
  return i;
}

Result<volume::CleanStats> SharedVolume::Clean(double threshold) {
  volume::CleanStats out;
  Status s = AsOwner([&](volume::Volume* v) {
    auto r = v->Clean(threshold);
    if (!r.ok()) return r.status();
    out = *r;
    return Status::OK();
  });
  if (!s.ok()) return s;
  return out;
}

uint64_t SharedVolume::epoch() const {
  ReaderMutexLock l(&mu_);
  return v_ ? v_->epoch() : 0;
}

Status SharedVolume::Owned() const {
  ReaderMutexLock l(&mu_);
  if (!owner_ || !v_) return Status::OK();
  return v_->Owned();
}

Status SharedVolume::Close() {
  // A flatten in progress (it holds a peer request's use of this volume)
  // stops at once instead of finishing first.
  role_changes_waiting_++;
  node_->Unregister(name_, this);  // no peer request reaches it from here on
  Status s;
  {
    MutexLock g(&gate_);
    WriterMutexLock l(&mu_);
    role_changes_waiting_--;
    if (closed_) return Status::OK();
    closed_ = true;
    if (v_) s = v_->Close();
    v_.reset();
    owner_ = false;
    owner_flag_ = false;
  }
  Status d = node_->store()->Delete(volume::layout::OpenName(name_, node_->server_id()));
  if (!d.ok() && !d.IsNotFound()) {
    spdlog::warn("volume {}: removing this server's open record: {}", name_, d.ToString());
  }
  return s;
}

pb::Reply SharedVolume::HandleRelease(const pb::Request& req) {
  pb::Reply reply;
  const auto start = Clock::now();
  // A flatten in progress stops (within a piece) rather than keep this
  // server's I/O and the asker waiting for minutes. (A stale request, for
  // an epoch this server no longer holds, stops it too: rare, and a
  // flatten run again goes on from where it stopped.)
  role_changes_waiting_++;
  MutexLock g(&gate_);
  WriterMutexLock l(&mu_);  // waits for this server's I/O in flight
  role_changes_waiting_--;
  const uint64_t epoch = v_ ? v_->epoch() : 0;
  reply.set_current_epoch(epoch);
  if (closed_ || !owner_ || (req.epoch() != 0 && req.epoch() != epoch)) {
    reply.set_code(pb::Reply::NOT_OWNER);
    return reply;
  }
  // Close makes every acknowledged write durable, writes a checkpoint,
  // deletes the owner record and drops the lock.
  Status s = v_->Close();
  v_.reset();
  owner_ = false;
  owner_flag_ = false;
  {
    MutexLock sl(&stats_mu_);
    stats_.released++;
  }
  if (!s.ok()) {
    spdlog::error("volume {}: releasing it to {}: {}", name_, req.from_server(), s.ToString());
    lost_ = Status::IOError("volume " + name_ + ": writes acknowledged before ownership moved to " +
                            req.from_server() + " may not be durable: " + s.ToString());
    reply.set_code(pb::Reply::FAILED);
    reply.set_message(s.ToString());
  } else {
    reply.set_code(pb::Reply::OK);
    released_epoch_ = epoch;
    released_at_ = Clock::now();
    spdlog::info("volume {}: released epoch {} to server {} ({} ms)", name_, epoch,
                 req.from_server(), MsSince(start));
  }
  // Becomes a reader; if that fails, the next read tries again.
  Status r = OpenReaderLocked();
  if (!r.ok()) spdlog::warn("{}", r.ToString());
  return reply;
}

pb::Reply SharedVolume::HandleSync(const pb::Request& req) {
  pb::Reply reply;
  ReaderMutexLock l(&mu_);
  const uint64_t epoch = v_ ? v_->epoch() : 0;
  reply.set_current_epoch(epoch);
  if (closed_ || !owner_ || (req.epoch() != 0 && req.epoch() != epoch)) {
    reply.set_code(pb::Reply::NOT_OWNER);
    return reply;
  }
  Status s = v_->Flush();
  if (!s.ok()) {
    reply.set_code(pb::Reply::FAILED);
    reply.set_message(s.ToString());
  } else {
    reply.set_code(pb::Reply::OK);
  }
  return reply;
}

}  // namespace hbiss::cluster
