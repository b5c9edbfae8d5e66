#include "cluster/node.h"

#include <unistd.h>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <thread>

#include "cluster/shared_volume.h"
#include "util/socket.h"
#include "volume/clone.h"
#include "volume/layout.h"

namespace hbiss::cluster {

std::string EncodeServerRecord(const ServerRecord& r) {
  nlohmann::ordered_json j;
  j["server"] = r.server;
  j["peer"] = r.peer;
  j["since"] = r.since;
  j["pid"] = r.pid;
  return j.dump();
}

Result<ServerRecord> DecodeServerRecord(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("server") || !j["server"].is_string()) {
    return Status::InvalidArgument("not a server record: " + text.substr(0, 100));
  }
  ServerRecord r;
  r.server = j["server"].get<std::string>();
  if (j.contains("peer") && j["peer"].is_string()) r.peer = j["peer"].get<std::string>();
  if (j.contains("since") && j["since"].is_number_integer()) r.since = j["since"].get<int64_t>();
  if (j.contains("pid") && j["pid"].is_number_integer()) r.pid = j["pid"].get<int64_t>();
  return r;
}

namespace {

std::string HostName() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == 0) return "localhost";
  return buf;
}

}  // namespace

namespace {

// A SNAP_* request on the served volume `v`, done as the owner (the
// SharedVolume's snapshot methods acquire ownership first).
pb::Reply HandleSnapshot(volume::Volume* v, const pb::Request& req) {
  pb::Reply reply;
  Status s;
  switch (req.type()) {
    case pb::Request::SNAP_CREATE: {
      auto info = v->CreateSnapshot(req.snap());
      s = info.status();
      if (info.ok()) {
        pb::Snapshot* out = reply.mutable_snapshot();
        out->set_id(info->id);
        out->set_name(info->name);
        out->set_created(info->created);
        out->set_size(info->size);
      }
      break;
    }
    case pb::Request::SNAP_REMOVE:
      if (req.purge_trash()) {
        auto purged = v->PurgeTrash();
        s = purged.status();
        if (purged.ok()) reply.set_purged(*purged);
      } else if (req.trash()) {
        auto trashed = v->TrashSnapshot(req.snap());
        s = trashed.status();
        if (trashed.ok()) reply.set_trashed(*trashed);
      } else {
        s = v->RemoveSnapshot(req.snap());
      }
      break;
    case pb::Request::SNAP_RENAME:
      s = v->RenameSnapshot(req.snap(), req.new_name());
      break;
    default:
      s = v->Rollback(req.snap());
      break;
  }
  if (s.ok()) {
    reply.set_code(pb::Reply::OK);
    reply.set_current_epoch(v->epoch());
    spdlog::info("volume {}: {} {} done for {}", req.volume(), pb::Request::Type_Name(req.type()),
                 req.snap(), req.from_server().empty() ? "a peer" : req.from_server());
  } else {
    reply.set_code(pb::Reply::FAILED);
    reply.set_status_code(uint32_t(s.code()));
    reply.set_message(s.message());
  }
  return reply;
}

}  // namespace

Result<std::unique_ptr<Node>> Node::Start(store::Store* store, NodeOptions opts) {
  if (opts.server_id.empty()) opts.server_id = HostName();
  // It names an object (volumes/NAME/open/<server id>): a volume name's rules.
  if (!volume::Volume::ValidateName(opts.server_id).ok()) {
    return Status::InvalidArgument("server id '" + opts.server_id +
                                   "' may only contain letters, digits, '.', '_' and '-'");
  }
  std::unique_ptr<Node> n(new Node(store, std::move(opts)));
  n->started_ = int64_t(std::time(nullptr));
  n->flattens_ = std::make_unique<FlattenJobs>();
  if (!n->opts_.peer_listen.empty()) {
    PeerServer::Options po;
    po.listen = n->opts_.peer_listen;
    HBISS_ASSIGN_OR_RETURN(n->peer_, PeerServer::Start(po, n.get()));
    n->peer_address_ = n->opts_.peer_advertise;
    if (n->peer_address_.empty()) {
      std::string host;
      uint16_t port = 0;
      HBISS_RETURN_IF_ERROR(SplitHostPort(n->peer_->address(), &host, &port));
      if (host == "0.0.0.0" || host == "::" || host.empty()) host = HostName();
      n->peer_address_ = host + ":" + std::to_string(port);
    }
    // Only a shared store has other hosts to warn about.
    const bool shared_store = store->Uri().rfind("hdfs://", 0) == 0;
    if (shared_store && (n->peer_address_.rfind("127.", 0) == 0 ||
                         n->peer_address_.rfind("localhost:", 0) == 0 ||
                         n->peer_address_.rfind("[::1]", 0) == 0)) {
      spdlog::warn("server {}: peer endpoint {} is on loopback: only servers on this host can "
                   "ask it to release a volume (on several hosts, give --peer-listen an "
                   "address they reach)", n->opts_.server_id, n->peer_address_);
    }
  }
  return n;
}

Node::~Node() {
  peer_.reset();
  flattens_.reset();
}

ServerRecord Node::Record() const {
  ServerRecord r;
  r.server = opts_.server_id;
  r.peer = peer_address_;
  r.since = int64_t(std::time(nullptr));
  r.pid = int64_t(getpid());
  return r;
}

Result<std::unique_ptr<volume::Volume>> Node::Open(const std::string& name) {
  HBISS_ASSIGN_OR_RETURN(auto v, SharedVolume::Open(this, name));
  return std::unique_ptr<volume::Volume>(std::move(v));
}

void Node::Register(const std::string& name, SharedVolume* v) {
  MutexLock l(&mu_);
  volumes_[name] = Entry{v, 0};
}

void Node::Unregister(const std::string& name, SharedVolume* v) {
  MutexLock l(&mu_);
  auto it = volumes_.find(name);
  if (it == volumes_.end() || it->second.v != v) return;
  // A peer request being handled holds the pointer: wait for it.
  while (it->second.busy > 0) {
    cv_.Wait(&mu_);
    it = volumes_.find(name);
    if (it == volumes_.end() || it->second.v != v) return;
  }
  volumes_.erase(it);
}

std::vector<std::string> Node::Owned() {
  std::vector<std::pair<std::string, SharedVolume*>> vols;
  {
    MutexLock l(&mu_);
    for (auto& [name, e] : volumes_) {
      e.busy++;
      vols.emplace_back(name, e.v);
    }
  }
  std::vector<std::string> out;
  for (auto& [name, v] : vols) {
    if (v->owner_or_acquiring()) out.push_back(name);
  }
  for (auto& [name, v] : vols) Unbusy(name, v);
  return out;
}

std::vector<Node::OpenVolume> Node::OpenVolumes() {
  std::vector<std::pair<std::string, SharedVolume*>> vols;
  {
    MutexLock l(&mu_);
    for (auto& [name, e] : volumes_) {
      e.busy++;  // Unregister (the start of Close) waits for it
      vols.emplace_back(name, e.v);
    }
  }
  std::vector<OpenVolume> out;
  for (auto& [name, v] : vols) {
    OpenVolume o;
    o.name = name;
    o.owner = v->owner_or_acquiring();
    o.info = v->Info();
    out.push_back(std::move(o));
  }
  for (auto& [name, v] : vols) Unbusy(name, v);
  return out;
}

void Node::SetStatusReporter(std::function<std::string()> reporter) {
  MutexLock l(&mu_);
  status_reporter_ =
      reporter ? std::make_shared<const std::function<std::string()>>(std::move(reporter))
               : nullptr;
  while (status_calls_ > 0) cv_.Wait(&mu_);
}

void Node::Unbusy(const std::string& name, SharedVolume* v) {
  MutexLock l(&mu_);
  auto it = volumes_.find(name);
  if (it != volumes_.end() && it->second.v == v) it->second.busy--;
  cv_.SignalAll();
}

pb::Reply Node::HandleFlatten(const pb::Request& req, SharedVolume* v) {
  pb::Reply reply;
  // The job holds v (busy) until it ends; a Close of v stops it first.
  {
    MutexLock l(&mu_);
    auto it = volumes_.find(req.volume());
    if (it != volumes_.end() && it->second.v == v) it->second.busy++;
  }
  const std::string name = req.volume();
  auto job = flattens_->Start(name, v, [this, name, v] { Unbusy(name, v); });
  if (!job.ok()) {
    reply.set_code(pb::Reply::FAILED);
    reply.set_status_code(uint32_t(job.status().code()));
    reply.set_message(job.status().message());
    return reply;
  }
  reply.set_code(pb::Reply::OK);
  *reply.mutable_flatten() = *job;
  spdlog::info("volume {}: FLATTEN for {}: job {}", name,
               req.from_server().empty() ? "a peer" : req.from_server(), job->job());
  return reply;
}

pb::Reply Node::Handle(const pb::Request& req) {
  pb::Reply reply;
  if (req.type() == pb::Request::PING) {
    reply.set_code(pb::Reply::OK);
    reply.set_server(opts_.server_id);
    for (auto& n : Owned()) reply.add_owned(n);
    return reply;
  }
  if (req.type() == pb::Request::STATUS) {
    std::shared_ptr<const std::function<std::string()>> reporter;
    {
      MutexLock l(&mu_);
      reporter = status_reporter_;
      if (reporter) status_calls_++;
    }
    if (!reporter) {
      reply.set_code(pb::Reply::FAILED);
      reply.set_status_code(uint32_t(Status::Code::kNotSupported));
      reply.set_message("server " + opts_.server_id + " does not report its status");
      return reply;
    }
    reply.set_code(pb::Reply::OK);
    reply.set_server(opts_.server_id);
    reply.set_status_json((*reporter)());
    MutexLock l(&mu_);
    status_calls_--;
    cv_.SignalAll();
    return reply;
  }
  if (req.type() == pb::Request::FLATTEN_STATUS) {
    // Answered after the volume is closed too: how its last flatten ended.
    reply.set_code(pb::Reply::OK);
    *reply.mutable_flatten() = flattens_->Get(req.volume(), req.job());
    return reply;
  }
  SharedVolume* v = nullptr;
  {
    MutexLock l(&mu_);
    auto it = volumes_.find(req.volume());
    if (it != volumes_.end()) {
      it->second.busy++;
      v = it->second.v;
    }
  }
  if (v == nullptr) {
    reply.set_code(pb::Reply::NO_VOLUME);
    reply.set_message("server " + opts_.server_id + " does not have volume " + req.volume() +
                      " open");
    return reply;
  }
  if (req.type() == pb::Request::RELEASE) {
    reply = v->HandleRelease(req);
  } else if (req.type() == pb::Request::SYNC) {
    reply = v->HandleSync(req);
  } else if (req.type() >= pb::Request::SNAP_CREATE && req.type() <= pb::Request::SNAP_ROLLBACK) {
    reply = HandleSnapshot(v, req);
  } else if (req.type() == pb::Request::FLATTEN) {
    reply = HandleFlatten(req, v);
  } else {
    reply.set_code(pb::Reply::BAD_REQUEST);
  }
  Unbusy(req.volume(), v);
  return reply;
}

// ---- status and lock break -------------------------------------------------------

namespace {

void Ping(VolumeStatus::Server* s, const std::string& volume, int timeout_ms) {
  if (s->record.peer.empty()) return;
  pb::Request req;
  req.set_type(pb::Request::PING);
  req.set_id(1);
  auto r = PeerCall(s->record.peer, req, timeout_ms);
  if (!r.ok() || r->code() != pb::Reply::OK) return;
  // Another process may have reused the address: only its own id counts.
  if (r->server() != s->record.server) return;
  s->answers = true;
  for (const auto& o : r->owned()) {
    if (o == volume) s->owns = true;
  }
}

}  // namespace

Result<VolumeStatus> GetVolumeStatus(store::Store* store, const std::string& name,
                                     int timeout_ms) {
  HBISS_ASSIGN_OR_RETURN(volume::OwnerRecord rec, volume::Volume::Owner(store, name));
  VolumeStatus st;
  st.volume = name;
  st.epoch = rec.epoch;
  if (!rec.owner.empty()) {
    auto sr = DecodeServerRecord(rec.owner);
    if (sr.ok()) {
      st.has_owner = true;
      st.owner.record = *sr;
      Ping(&st.owner, name, timeout_ms);
    }
  }
  auto list = store->List(volume::layout::OpenDir(name));
  if (list.ok()) {
    for (const auto& o : *list) {
      if (o.is_dir) continue;
      auto text = store->Get(volume::layout::OpenName(name, o.name), 4096);
      if (!text.ok()) continue;
      auto sr = DecodeServerRecord(*text);
      if (!sr.ok()) continue;
      VolumeStatus::Server s;
      s.record = *sr;
      Ping(&s, name, timeout_ms);
      st.open.push_back(std::move(s));
    }
  } else if (!list.status().IsNotFound()) {
    return list.status();
  }
  return st;
}

std::string VolumeStatusJson(const VolumeStatus& s) {
  auto server = [](const VolumeStatus::Server& v) {
    nlohmann::ordered_json j;
    j["server"] = v.record.server;
    j["peer"] = v.record.peer;
    j["since"] = v.record.since;
    j["pid"] = v.record.pid;
    j["answers"] = v.answers;
    j["owns"] = v.owns;
    return j;
  };
  nlohmann::ordered_json j;
  j["volume"] = s.volume;
  j["epoch"] = s.epoch;
  j["owner"] = s.has_owner ? server(s.owner) : nlohmann::ordered_json(nullptr);
  j["open"] = nlohmann::ordered_json::array();
  for (const auto& o : s.open) j["open"].push_back(server(o));
  return j.dump();
}

Status BreakVolumeLock(store::Store* store, const std::string& name, bool force,
                       int timeout_ms) {
  HBISS_ASSIGN_OR_RETURN(volume::OwnerRecord rec, volume::Volume::Owner(store, name));
  if (!force) {
    // Every server that may hold the lock: the recorded owner, and every
    // server with the volume open (one in the middle of an acquire holds the
    // lock before its record is written). Any of them that answers and says
    // it owns the volume, or is acquiring it, is alive: nothing to break (a
    // live owner is asked to release by the next writer).
    HBISS_ASSIGN_OR_RETURN(VolumeStatus st, GetVolumeStatus(store, name, timeout_ms));
    std::vector<const VolumeStatus::Server*> servers;
    if (st.has_owner) servers.push_back(&st.owner);
    for (const auto& o : st.open) servers.push_back(&o);
    for (const VolumeStatus::Server* s : servers) {
      if (s->answers && s->owns) {
        return Status::Busy("volume " + name + ": server " + s->record.server + " at " +
                            s->record.peer + " answers and owns it (or is becoming its "
                            "owner): there is nothing to break (--force breaks it anyway)");
      }
    }
    // The volume must not have changed hands while the servers were asked.
    HBISS_ASSIGN_OR_RETURN(volume::OwnerRecord again, volume::Volume::Owner(store, name));
    if (again.epoch != rec.epoch || again.owner != rec.owner) {
      return Status::Busy("volume " + name + " changed owner (epoch " +
                          std::to_string(rec.epoch) + " -> " + std::to_string(again.epoch) +
                          ") while its servers were asked: a live server took it; try again");
    }
  }
  HBISS_RETURN_IF_ERROR(volume::Volume::BreakLock(store, name));
  spdlog::info("volume {}: lock broken at epoch {}", name, rec.epoch);
  return Status::OK();
}

// ---- snapshot operations ---------------------------------------------------------

namespace {

// A Status of code `code` (a Status::Code number from a peer) and `message`.
Status CodedStatus(uint32_t code, const std::string& message, const std::string& server) {
  const std::string msg = message.empty() ? "server " + server + " failed" : message;
  using Code = Status::Code;
  switch (Code(code)) {
    case Code::kNotFound: return Status::NotFound(msg);
    case Code::kAlreadyExists: return Status::AlreadyExists(msg);
    case Code::kInvalidArgument: return Status::InvalidArgument(msg);
    case Code::kNotSupported: return Status::NotSupported(msg);
    case Code::kNoSpace: return Status::NoSpace(msg);
    case Code::kBusy: return Status::Busy(msg);
    case Code::kCorruption: return Status::Corruption(msg);
    case Code::kAborted: return Status::Aborted(msg);
    default: return Status::IOError(msg);
  }
}

// The Status a FAILED reply carries (its code and message).
Status ReplyStatus(const pb::Reply& r, const std::string& server) {
  return CodedStatus(r.status_code(), r.message(), server);
}

// Busy, naming `hbiss lock break`, when the volume's recorded owner does
// not answer: nothing may be done to the volume without it.
Status OwnerMustAnswer(const VolumeStatus& st) {
  if (!st.has_owner || st.owner.answers) return Status::OK();
  const ServerRecord& o = st.owner.record;
  return Status::Busy(
      "volume " + st.volume + " is owned by server " + o.server + " at " +
          (o.peer.empty() ? std::string("no peer address") : o.peer) +
          ", which does not answer; if its host is gone, `hbiss lock break " + st.volume +
          "` takes the volume from it, then try again",
      /*retryable=*/false);
}

pb::Request::Type RequestType(SnapshotOp::Kind k) {
  switch (k) {
    case SnapshotOp::kCreate: return pb::Request::SNAP_CREATE;
    case SnapshotOp::kRemove:
    case SnapshotOp::kPurgeTrash: return pb::Request::SNAP_REMOVE;
    case SnapshotOp::kRename: return pb::Request::SNAP_RENAME;
    case SnapshotOp::kRollback: break;
  }
  return pb::Request::SNAP_ROLLBACK;
}

Result<SnapshotOpResult> ApplyLocally(volume::Volume* v, const SnapshotOp& op) {
  SnapshotOpResult out;
  switch (op.kind) {
    case SnapshotOp::kCreate: {
      HBISS_ASSIGN_OR_RETURN(out.created, v->CreateSnapshot(op.snap));
      break;
    }
    case SnapshotOp::kRemove:
      if (op.trash) {
        HBISS_ASSIGN_OR_RETURN(out.trashed, v->TrashSnapshot(op.snap));
      } else {
        HBISS_RETURN_IF_ERROR(v->RemoveSnapshot(op.snap));
      }
      break;
    case SnapshotOp::kPurgeTrash: {
      HBISS_ASSIGN_OR_RETURN(out.purged, v->PurgeTrash());
      break;
    }
    case SnapshotOp::kRename:
      HBISS_RETURN_IF_ERROR(v->RenameSnapshot(op.snap, op.new_name));
      break;
    case SnapshotOp::kRollback:
      HBISS_RETURN_IF_ERROR(v->Rollback(op.snap));
      break;
  }
  return out;
}

// Opens volume `name` writable, as command `who` (nobody owns it). Busy,
// with *lock_busy set, if someone holds its lock (retry).
Result<std::unique_ptr<volume::Volume>> OpenHere(store::Store* store, const std::string& name,
                                                 const std::string& who, bool* lock_busy) {
  *lock_busy = false;
  // A short-lived owner without a peer endpoint: a server that wants the
  // volume meanwhile waits for the lock, as for any other writer.
  ServerRecord me;
  me.server = who;
  me.since = int64_t(std::time(nullptr));
  me.pid = int64_t(getpid());
  volume::OpenOptions oo;
  oo.owner = EncodeServerRecord(me);
  oo.clean_threshold = 0;
  auto opened = volume::Volume::Open(store, name, oo);
  if (!opened.ok()) *lock_busy = opened.status().IsBusy();
  return opened;
}

// Opens the volume writable (nobody owns it), applies `op` and closes it.
// *lock_busy: the volume could not be opened because a writer has it (retry);
// an error of the operation itself (a snapshot with clones is Busy too) is
// final.
Result<SnapshotOpResult> RunHere(store::Store* store, const SnapshotOp& op, bool* lock_busy) {
  HBISS_ASSIGN_OR_RETURN(auto v, OpenHere(store, op.volume, "hbiss-snap", lock_busy));
  auto r = ApplyLocally(v.get(), op);
  Status cs = v->Close();
  if (!r.ok()) return r.status();
  HBISS_RETURN_IF_ERROR(cs);
  return r;
}

// The errors the engine would give, found by reading only: a refused
// command neither starts an epoch nor bothers a server. The engine checks
// again (a racing command may change the list meanwhile).
Status CheckSnapshotNames(store::Store* store, const SnapshotOp& op) {
  HBISS_ASSIGN_OR_RETURN(auto snaps, volume::Volume::ListSnapshots(store, op.volume));
  if (op.kind == SnapshotOp::kPurgeTrash) return Status::OK();
  auto has = [&](const std::string& n) {
    return std::any_of(snaps.begin(), snaps.end(),
                       [&](const volume::SnapshotInfo& s) { return s.name == n; });
  };
  const std::string pre = "volume " + op.volume;
  if (op.kind == SnapshotOp::kCreate) {
    if (has(op.snap)) {
      return Status::AlreadyExists(pre + " already has a snapshot named '" + op.snap + "'");
    }
    return Status::OK();
  }
  if (!has(op.snap)) return Status::NotFound(pre + " has no snapshot named '" + op.snap + "'");
  if (op.kind == SnapshotOp::kRemove && !op.trash) {
    auto it = std::find_if(snaps.begin(), snaps.end(),
                           [&](const volume::SnapshotInfo& s) { return s.name == op.snap; });
    HBISS_ASSIGN_OR_RETURN(auto children, volume::ListChildren(store, op.volume, it->id));
    if (!children.empty()) return volume::SnapshotHasClones(op.volume + "@" + op.snap, children);
  }
  // Renaming a snapshot to its own name is the engine's no-op, not a clash.
  if (op.kind == SnapshotOp::kRename && op.new_name != op.snap && has(op.new_name)) {
    return Status::AlreadyExists(pre + " already has a snapshot named '" + op.new_name + "'");
  }
  return Status::OK();
}

}  // namespace

Result<SnapshotOpResult> RunSnapshotOp(store::Store* store, const SnapshotOp& op,
                                       int timeout_ms, int op_timeout_ms) {
  HBISS_RETURN_IF_ERROR(CheckSnapshotNames(store, op));
  // A rename to the same name changes nothing (as in the engine): no open,
  // no epoch, no server asked.
  if (op.kind == SnapshotOp::kRename && op.new_name == op.snap) return SnapshotOpResult{};
  constexpr int kAttempts = 5;
  Status last;
  for (int attempt = 0; attempt < kAttempts; attempt++) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(200 * attempt));
    HBISS_ASSIGN_OR_RETURN(VolumeStatus st, GetVolumeStatus(store, op.volume, timeout_ms));
    HBISS_RETURN_IF_ERROR(OwnerMustAnswer(st));
    const VolumeStatus::Server* doer = st.has_owner ? &st.owner : nullptr;
    if (op.kind == SnapshotOp::kRollback) {
      // A server reading the volume would go on serving what it held before
      // the rollback (a reader's Refresh follows the log, and a rollback is
      // written as checkpoints). A lone reader with nobody owning the volume
      // is asked to do it: it becomes the owner, and there is no other view.
      std::vector<const VolumeStatus::Server*> readers;
      for (const auto& s : st.open) {
        if (s.answers && (doer == nullptr || s.record.server != doer->record.server)) {
          readers.push_back(&s);
        }
      }
      if (doer == nullptr && readers.size() == 1) {
        doer = readers[0];
        readers.clear();
      }
      if (!readers.empty()) {
        std::string names;
        for (const auto* r : readers) names += (names.empty() ? "" : ", ") + r->record.server;
        return Status::Busy("volume " + op.volume + " is also open on server(s) " + names +
                                ", which would go on serving its data from before the "
                                "rollback: disconnect their clients first",
                            /*retryable=*/false);
      }
    }
    if (doer == nullptr) {
      bool busy = false;
      auto r = RunHere(store, op, &busy);
      // Busy: a server took the lock between the owner record and the open.
      if (r.ok() || !busy) return r;
      last = r.status();
      continue;
    }
    const ServerRecord& sr = doer->record;
    pb::Request req;
    req.set_type(RequestType(op.kind));
    req.set_id(uint64_t(attempt) + 1);
    req.set_volume(op.volume);
    req.set_snap(op.snap);
    if (op.kind == SnapshotOp::kRename) req.set_new_name(op.new_name);
    if (op.kind == SnapshotOp::kRemove && op.trash) req.set_trash(true);
    if (op.kind == SnapshotOp::kPurgeTrash) req.set_purge_trash(true);
    req.set_from_server("hbiss-snap");
    auto reply = PeerCall(sr.peer, req, op_timeout_ms);
    if (!reply.ok()) {
      return reply.status().WithContext("volume " + op.volume + ": asking server " + sr.server +
                                        " at " + sr.peer);
    }
    if (reply->code() == pb::Reply::OK) {
      SnapshotOpResult out;
      out.server = sr.server;
      out.trashed = reply->trashed();
      out.purged = reply->purged();
      if (reply->has_snapshot()) {
        out.created.id = reply->snapshot().id();
        out.created.name = reply->snapshot().name();
        out.created.created = reply->snapshot().created();
        out.created.size = reply->snapshot().size();
      }
      return out;
    }
    if (reply->code() == pb::Reply::NO_VOLUME) {
      // It closed the volume after its record was read, or the record is
      // from an earlier run of that server: the lock is free, unless
      // someone took the volume meanwhile.
      bool busy = false;
      auto r = RunHere(store, op, &busy);
      if (r.ok() || !busy) return r;
      last = r.status();
      continue;
    }
    if (reply->code() == pb::Reply::FAILED) return ReplyStatus(*reply, sr.server);
    return Status::IOError("volume " + op.volume + ": server " + sr.server + " answered " +
                           pb::Reply::Code_Name(reply->code()) + ": " + reply->message());
  }
  return Status::Busy("volume " + op.volume + " kept changing owner (" + last.message() +
                      "); try again");
}

// ---- flatten ---------------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kFlattenPollMs = 200;
// How long a server doing a flatten may go without answering FLATTEN_STATUS
// before the command stops waiting for it.
constexpr int kFlattenSilentMs = 15000;

std::string AgainIsSafe(const std::string& name) {
  return "; a flatten is idempotent: `hbiss flatten " + name + "` again is safe";
}

// Flattens `name` in this process (nobody serves it); *lock_busy as OpenHere.
Result<FlattenResult> FlattenHere(store::Store* store, const std::string& name,
                                  const std::function<void(uint64_t, uint64_t)>& progress,
                                  bool* lock_busy) {
  HBISS_ASSIGN_OR_RETURN(auto v, OpenHere(store, name, "hbiss-flatten", lock_busy));
  auto copied = v->Flatten([&](uint64_t done, uint64_t total) {
    if (progress) progress(done * volume::kBlockSize, total * volume::kBlockSize);
    return true;
  });
  Status cs = v->Close();
  if (!copied.ok()) return copied.status();
  HBISS_RETURN_IF_ERROR(cs);
  FlattenResult out;
  out.copied_blocks = *copied;
  return out;
}

// Polls job `job` of server `sr` until it ends.
Result<FlattenResult> FollowFlatten(const std::string& name, const ServerRecord& sr,
                                    pb::FlattenJob job, int timeout_ms,
                                    const std::function<void(uint64_t, uint64_t)>& progress) {
  const std::string who = "server " + sr.server + " at " + sr.peer;
  auto last_answer = Clock::now();
  for (uint64_t n = 1;; n++) {
    if (progress && job.total_bytes() > 0) progress(job.done_bytes(), job.total_bytes());
    switch (job.state()) {
      case pb::FlattenJob::DONE: {
        FlattenResult out;
        out.copied_blocks = job.copied_blocks();
        out.server = sr.server;
        return out;
      }
      case pb::FlattenJob::FAILED:
        return CodedStatus(job.status_code(), job.message(), sr.server)
            .WithContext("volume " + name + ": flatten by " + who);
      case pb::FlattenJob::UNKNOWN:
        return Status::IOError("volume " + name + ": " + who + " no longer knows its flatten " +
                               "(it restarted, or forgot it): whether it finished is unknown" +
                               AgainIsSafe(name));
      default:
        break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kFlattenPollMs));
    pb::Request req;
    req.set_type(pb::Request::FLATTEN_STATUS);
    req.set_id(n);
    req.set_volume(name);
    req.set_job(job.job());
    req.set_from_server("hbiss-flatten");
    auto reply = PeerCall(sr.peer, req, timeout_ms);
    if (reply.ok() && reply->code() == pb::Reply::OK && reply->has_flatten()) {
      job = reply->flatten();
      last_answer = Clock::now();
      continue;
    }
    if (reply.ok()) {
      return Status::IOError("volume " + name + ": " + who + " answered " +
                             pb::Reply::Code_Name(reply->code()) + " about its flatten: " +
                             reply->message());
    }
    if (Clock::now() - last_answer > std::chrono::milliseconds(kFlattenSilentMs)) {
      return Status::IOError("volume " + name + ": " + who + " stopped answering during its " +
                             "flatten (" + reply.status().ToString() + "); it may have died" +
                             AgainIsSafe(name));
    }
  }
}

}  // namespace

Result<FlattenResult> RunFlatten(store::Store* store, const std::string& volume,
                                 int timeout_ms,
                                 const std::function<void(uint64_t, uint64_t)>& progress) {
  constexpr int kAttempts = 5;
  Status last;
  for (int attempt = 0; attempt < kAttempts; attempt++) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(200 * attempt));
    HBISS_ASSIGN_OR_RETURN(VolumeStatus st, GetVolumeStatus(store, volume, timeout_ms));
    HBISS_RETURN_IF_ERROR(OwnerMustAnswer(st));
    // The owner; else a server reading the volume (it becomes the owner, so
    // that its clients' writes do not wait for this command to finish).
    const VolumeStatus::Server* doer = st.has_owner ? &st.owner : nullptr;
    for (const auto& s : st.open) {
      if (doer == nullptr && s.answers) doer = &s;
    }
    if (doer == nullptr) {
      bool busy = false;
      auto r = FlattenHere(store, volume, progress, &busy);
      // Busy: a server took the lock between the owner record and the open.
      if (r.ok() || !busy) return r;
      last = r.status();
      continue;
    }
    const ServerRecord& sr = doer->record;
    pb::Request req;
    req.set_type(pb::Request::FLATTEN);
    req.set_id(uint64_t(attempt) + 1);
    req.set_volume(volume);
    req.set_from_server("hbiss-flatten");
    auto reply = PeerCall(sr.peer, req, timeout_ms);
    if (!reply.ok()) {
      return reply.status().WithContext("volume " + volume + ": asking server " + sr.server +
                                        " at " + sr.peer);
    }
    if (reply->code() == pb::Reply::OK && reply->has_flatten()) {
      return FollowFlatten(volume, sr, reply->flatten(), timeout_ms, progress);
    }
    if (reply->code() == pb::Reply::NO_VOLUME) {
      last = Status::Busy(reply->message());  // it closed the volume: look again
      continue;
    }
    if (reply->code() == pb::Reply::FAILED) return ReplyStatus(*reply, sr.server);
    return Status::IOError("volume " + volume + ": server " + sr.server + " answered " +
                           pb::Reply::Code_Name(reply->code()) + ": " + reply->message());
  }
  return Status::Busy("volume " + volume + " kept changing servers (" + last.message() +
                      "); try again");
}

}  // namespace hbiss::cluster
