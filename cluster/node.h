// One hbiss server's part in sharing volumes with other servers
// (doc/ownership.md). A Node is the server's identity (its server id and
// the peer address other servers reach it at), its peer endpoint, and the
// registry of the volumes it has open, each a SharedVolume:
//
//  * Open(name) opens a volume for this server's clients. It is a reader
//    until one of them writes; then it acquires write ownership, asking
//    the current owner to release (RELEASE), or waiting for a dead owner's
//    lock to expire (automatic takeover), and serves the write.
//  * A non-owner serves reads coherently: before a read it asks the owner
//    to make every acknowledged write visible (SYNC), then catches up on the
//    log.
//  * Handle() answers other servers: RELEASE (give up ownership of a volume
//    at an epoch), SYNC, PING, and the snapshot requests of `hbiss snap`
//    (SNAP_CREATE, SNAP_REMOVE, SNAP_RENAME, SNAP_ROLLBACK), done through
//    the served SharedVolume, which takes ownership first; and `hbiss
//    flatten`'s FLATTEN (started in the background, cluster/flatten_jobs.h)
//    and FLATTEN_STATUS.
//
// Threads: every method is safe to call from any thread. The peer server's
// threads call Handle; the NBD server's threads call the volumes.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cluster/flatten_jobs.h"
#include "cluster/peer.h"
#include "store/store.h"
#include "util/mutex.h"
#include "util/status.h"
#include "util/thread_annotations.h"
#include "volume/volume.h"

namespace hbiss::cluster {

class SharedVolume;

struct NodeOptions {
  // This server's id: unique among the servers sharing the store (default:
  // the host name). Names the server in owner records and `hbiss status`.
  std::string server_id;
  // Where the peer endpoint listens (host:port; port 0 picks one). Empty:
  // no endpoint; other servers can then only take this server's volumes
  // over once its lock expires or is broken.
  std::string peer_listen = "127.0.0.1:0";
  // The address other servers are told to use; empty: the bound address
  // (with the host name in place of a wildcard host).
  std::string peer_advertise;
  // How long a call to another server may take before it counts as not
  // answering.
  int peer_timeout_ms = 5000;
  // How long a write may wait for ownership before it fails (IOError). It
  // covers an automatic takeover, which waits for the old owner's HDFS
  // lease to expire (the NameNode's soft limit, 60 s).
  int acquire_timeout_ms = 180000;
  // Passed to every Volume::Open (owner and read_only are set by the node).
  volume::OpenOptions open;
};

// The JSON text of an owner record and of an open record (doc/ownership.md).
struct ServerRecord {
  std::string server;
  std::string peer;
  int64_t since = 0;  // unix seconds
  int64_t pid = 0;
};
std::string EncodeServerRecord(const ServerRecord& r);
// InvalidArgument if it is not such a record.
Result<ServerRecord> DecodeServerRecord(const std::string& text);

class Node : public PeerHandler {
 public:
  static Result<std::unique_ptr<Node>> Start(store::Store* store, NodeOptions opts);
  // Stops the peer endpoint and waits for flatten jobs; volumes must be
  // closed first.
  ~Node() override;

  // Opens volume `name` for this server. One SharedVolume per name and Node
  // is the caller's business (nbd::VolumeProvider keeps one per export).
  Result<std::unique_ptr<volume::Volume>> Open(const std::string& name);

  const std::string& server_id() const { return opts_.server_id; }
  // The address written in owner records ("" without an endpoint).
  const std::string& peer_address() const { return peer_address_; }
  const NodeOptions& options() const { return opts_; }
  store::Store* store() const { return store_; }

  pb::Reply Handle(const pb::Request& req) override EXCLUDES(mu_);

  // Names of the volumes this node owns now (PING's answer).
  std::vector<std::string> Owned() EXCLUDES(mu_);

  // A volume this node has open, as OpenVolumes reports it.
  struct OpenVolume {
    std::string name;
    bool owner = false;  // this node owns it (or is taking ownership)
    volume::VolumeInfo info;
  };
  // Every volume this node has open now, by name, with its Info(). A volume
  // being closed meanwhile is either reported or not, never touched after
  // its Close began. Any thread; takes each volume's Info lock briefly.
  std::vector<OpenVolume> OpenVolumes() EXCLUDES(mu_);

  // Answers STATUS requests (`hbiss status` without a volume) with the JSON
  // text `reporter` returns; without one they get FAILED. Set it once,
  // before other servers or clients may ask; it is called from peer
  // connection threads, concurrently, and must outlive the Node's endpoint
  // (setting nullptr waits for the calls in progress: do that before
  // destroying what it uses).
  void SetStatusReporter(std::function<std::string()> reporter) EXCLUDES(mu_);

 private:
  friend class SharedVolume;
  Node(store::Store* store, NodeOptions opts) : store_(store), opts_(std::move(opts)) {}
  void Register(const std::string& name, SharedVolume* v) EXCLUDES(mu_);
  void Unregister(const std::string& name, SharedVolume* v) EXCLUDES(mu_);
  // Ends one use of `v` that Handle (or Owned) counted in Entry::busy.
  void Unbusy(const std::string& name, SharedVolume* v) EXCLUDES(mu_);
  pb::Reply HandleFlatten(const pb::Request& req, SharedVolume* v) EXCLUDES(mu_);
  ServerRecord Record() const;

  store::Store* const store_;
  const NodeOptions opts_;
  std::string peer_address_;
  int64_t started_ = 0;
  std::unique_ptr<PeerServer> peer_;
  std::unique_ptr<FlattenJobs> flattens_;
  struct Entry {
    SharedVolume* v = nullptr;
    int busy = 0;  // peer requests using v now; Unregister waits for 0
  };
  Mutex mu_;
  CondVar cv_;
  std::map<std::string, Entry> volumes_ GUARDED_BY(mu_);
  std::shared_ptr<const std::function<std::string()>> status_reporter_ GUARDED_BY(mu_);
  int status_calls_ GUARDED_BY(mu_) = 0;  // reporter calls in progress
};

// The state of a volume as the store records it and its servers answer
// (`hbiss status`).
struct VolumeStatus {
  struct Server {
    ServerRecord record;
    bool answers = false;    // its peer endpoint answered a PING
    bool owns = false;       // it said it owns the volume
  };
  std::string volume;
  uint64_t epoch = 0;
  bool has_owner = false;
  Server owner;              // when has_owner
  std::vector<Server> open;  // servers with the volume open
};
Result<VolumeStatus> GetVolumeStatus(store::Store* store, const std::string& name,
                                     int timeout_ms);
std::string VolumeStatusJson(const VolumeStatus& s);

// `hbiss lock break`: unless `force`, refuses (Busy) while the recorded
// owner answers its peer address and says it owns the volume; then
// Volume::BreakLock.
Status BreakVolumeLock(store::Store* store, const std::string& name, bool force,
                       int timeout_ms);

// A snapshot operation on a volume (`hbiss snap create|rm|rename|rollback`,
// and the trash's purge).
// kPurgeTrash deletes the trashed snapshots no clone uses any more
// (Volume::PurgeTrash); it is sent as SNAP_REMOVE with purge_trash.
struct SnapshotOp {
  enum Kind { kCreate, kRemove, kRename, kRollback, kPurgeTrash };
  Kind kind = kCreate;
  std::string volume;
  std::string snap;      // the snapshot it acts on (kCreate: the new one; kPurgeTrash: none)
  std::string new_name;  // kRename
  bool trash = false;    // kRemove: Volume::TrashSnapshot (rbd clone v2) instead of refusing
};
struct SnapshotOpResult {
  volume::SnapshotInfo created;  // kCreate: the snapshot made
  bool trashed = false;          // kRemove with trash: it went to the trash
  uint64_t purged = 0;           // kPurgeTrash: trashed snapshots deleted
  // The server that did it (its id), or empty when nobody owned the volume
  // and RunSnapshotOp opened it itself.
  std::string server;
};

// Does `op` atomically with respect to the servers that serve the volume
// (doc/snapshots.md "Served volumes"). When the owner record names a
// server, this process must not open the volume (it would wait for the lock,
// or take the volume from a live owner): it asks that server (SNAP_* peer
// requests), which does it as the owner; Busy, naming the server and
// `hbiss lock break`, if it does not answer a PING within `timeout_ms`.
// When nobody owns the volume, it opens it writable, does it and closes it
// (retrying, up to a few times, when a server takes it meanwhile). The
// request to a server may take up to `op_timeout_ms` (it may have to acquire
// ownership first). The engine's errors come back with their code:
// NotFound (no such volume or snapshot), AlreadyExists, InvalidArgument.
Result<SnapshotOpResult> RunSnapshotOp(store::Store* store, const SnapshotOp& op,
                                       int timeout_ms, int op_timeout_ms);

struct FlattenResult {
  uint64_t copied_blocks = 0;  // blocks copied from the clone's parents
  // The server that did it (its id), or empty when nobody served the
  // volume and RunFlatten opened it itself.
  std::string server;
};

// `hbiss flatten VOL` (doc/snapshots.md "Served volumes"): copies into
// clone `volume` what it still shares with its parents, with the servers
// that serve it going on serving it. Who does it: the owner the owner
// record names (Busy, as for RunSnapshotOp, if it does not answer a PING
// within `timeout_ms`); when nobody owns the volume, a server that has it
// open and answers (it becomes the owner); when nobody serves it, this
// process, opening it writable. A server does it in the background
// (FLATTEN); this polls it every 200 ms (FLATTEN_STATUS), each call within
// `timeout_ms`. `progress(done, total)`, in bytes of what the volume shared
// when the flatten began, is called in the caller's thread. Errors: the
// flatten's (NotFound for no such volume), or IOError saying the server
// closed the volume, took too long to answer, or forgot the job; a flatten
// is idempotent, so running it again is always safe. The caller going away
// (Ctrl-C) does not stop a server's flatten.
Result<FlattenResult> RunFlatten(store::Store* store, const std::string& volume,
                                 int timeout_ms,
                                 const std::function<void(uint64_t, uint64_t)>& progress);

}  // namespace hbiss::cluster
