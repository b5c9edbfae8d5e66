// The NBD server: listens on a TCP address and/or a Unix socket and runs one
// Connection per accepted client on its own thread.
//
// Thread safety: Start() and Stop() are called by one controlling thread;
// port() and connections() may be called from any thread after Start().
//
// Threads: one accept thread, plus one per connection (and the connection's
// own workers, started lazily, at most ServerLimits::max_worker_threads
// server-wide: ConnectionOptions::workers). When the OS refuses a
// connection's thread, that connection is closed (and logged) and the server
// keeps accepting; Start() fails if it cannot start the accept thread.
//
// Limits (ServerLimits; SetLimits changes them at runtime, for new
// connections and admissions; connections already admitted are never
// dropped when a limit is lowered):
//  * max_connections: a client accepted beyond it is refused: it gets the
//    greeting and every option is answered NBD_REP_ERR_POLICY "too many
//    connections" (the spec's error for a request the server's policy
//    refuses: a clear message beats a bare close, which clients report as a
//    protocol error). At most kRefusalSlots such refusals run at once (each
//    bounded by the handshake timeout); beyond that an accepted socket is
//    closed at once.
//  * max_connections_per_export: an NBD_OPT_GO beyond it gets
//    NBD_REP_ERR_POLICY naming the export and the limit (EXPORT_NAME, which
//    has no error reply, is closed). Counted from GO to disconnect.
//  * handshake_timeout, idle_timeout: ConnectionOptions.
// Every refusal is logged at info level with its reason.
// Accepted TCP sockets get TCP_NODELAY and keepalive (ServerOptions::
// keepalive_*), so a peer that vanished is found and its connection closed.
//
// Buffers: every connection's request payloads and reply buffers reserve
// from one BufferBudget of ServerOptions::buffer_bytes (doc/memory.md).
#pragma once

#include <atomic>
#include <cstdint>
#include <chrono>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "nbd/connection.h"
#include "nbd/export.h"
#include "util/mutex.h"
#include "util/status.h"
#include "util/thread_annotations.h"

namespace hbiss::nbd {

// Defaults for a host that runs many VMs, each with a few connections
// (qemu opens one per disk, more with multi-conn): 1024 connections fit the
// usual descriptor limits with room for the volumes' own files, and 16 per
// export is ample for multi-conn while one runaway client cannot take every
// slot. The handshake bound is qemu-nbd's --handshake-limit default.
struct ServerLimits {
  size_t max_connections = 1024;
  size_t max_connections_per_export = 16;
  std::chrono::milliseconds handshake_timeout{10000};  // 0: none
  std::chrono::milliseconds idle_timeout{0};           // 0: none
  // Worker threads beyond each connection's own, server-wide.
  int max_worker_threads = 1024;
};

struct ServerOptions {
  // "HOST:PORT" ("[::1]:PORT" for IPv6); empty to not listen on TCP. Port 0
  // picks a free port (see port()).
  std::string listen = "127.0.0.1:10809";
  std::string socket_path;  // a Unix socket path; empty for none
  // Sockets already bound and listening (TCP or Unix), e.g. passed by systemd
  // socket activation, served besides `listen` and `socket_path` (a caller
  // given such sockets usually clears both). Start() takes ownership: Stop()
  // closes them (a failed Start() too), and never unlinks a Unix socket it
  // did not bind.
  std::vector<int> listen_fds;
  // peer and client are filled in per connection; tls_creds and access are
  // the initial values of SetTlsCredentials and SetAccess.
  ConnectionOptions conn;
  // The Unix socket's mode (e.g. 0660; -1: as the umask gives) and group
  // (-1: the server's). Set on the socket before it gets its name, so it is
  // never reachable with wider permissions.
  int socket_mode = -1;
  long socket_gid = -1;
  ServerLimits limits;
  // Bytes of request payloads and reply buffers held at once, server-wide.
  uint64_t buffer_bytes = 256ull << 20;
  // TCP keepalive on accepted sockets: first probe after idle seconds, then
  // every interval seconds, dropped after count unanswered probes. idle 0:
  // no keepalive.
  int keepalive_idle = 60;
  int keepalive_interval = 10;
  int keepalive_count = 6;
};

// Parses --socket-mode: octal permission bits ("0660", "660"), at most
// 0777. InvalidArgument otherwise.
Result<int> ParseSocketMode(const std::string& s);
// Parses --socket-group: a group name or a numeric gid. NotFound for an
// unknown name.
Result<long> ParseSocketGroup(const std::string& s);

// One open connection, as Server::ConnectionInfos reports it.
struct ConnectionInfo {
  uint64_t id = 0;           // the server's number for it, "#ID" in its log lines
  std::string peer;          // "HOST:PORT" of the client, or "unix"
  std::string export_name;   // "" until the handshake chose an export
  uint64_t requests = 0;     // transmission requests so far
  int64_t since = 0;         // when it was accepted, unix seconds
};

class Server {
 public:
  // `provider` must outlive the Server.
  Server(ExportProvider* provider, ServerOptions opts);
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server();  // calls Stop()

  // Binds the listeners and starts accepting. Fails (nothing left running)
  // if an address cannot be parsed or bound, or no listener (listen,
  // socket_path or listen_fds) is set.
  Status Start();

  // Stops accepting, shuts down every connection, and waits until each has
  // finished its requests in flight and returned. Idempotent.
  void Stop();

  // The bound TCP port (of `listen`, else of the first TCP socket among
  // listen_fds), 0 if not listening on TCP.
  uint16_t port() const { return port_; }
  // Connections currently open (refused ones included, until they end).
  size_t connections() EXCLUDES(mu_);
  // Connections in transmission on export `name`.
  size_t export_connections(const std::string& name) EXCLUDES(mu_);
  // Clients refused by a limit so far (server-wide or per export).
  uint64_t refused() const { return refused_.load(); }

  // Replaces the limits, from any thread (a SIGHUP reload). New
  // connections and new GOs see them; open connections are kept.
  void SetLimits(const ServerLimits& limits) EXCLUDES(mu_);
  ServerLimits limits() EXCLUDES(mu_);
  BufferBudget* buffers() { return &buffers_; }
  ThreadBudget* threads() { return &threads_; }

  // Refusals (over max_connections) handled at once; beyond, closed at once.
  static constexpr size_t kRefusalSlots = 16;

  // Replace the TLS credentials or the access policy (a SIGHUP reload).
  // Connections accepted afterwards use the new ones; open connections keep
  // what they started with. Any thread, any time. A null policy allows
  // everything; null credentials make STARTTLS fail with NBD_REP_ERR_POLICY
  // (the TLS mode itself is fixed at construction).
  void SetTlsCredentials(std::shared_ptr<const TlsCredentials> creds) EXCLUDES(mu_);
  void SetAccess(std::shared_ptr<const AccessPolicy> policy) EXCLUDES(mu_);

  // The connections currently open, in the order they were accepted.
  std::vector<ConnectionInfo> ConnectionInfos() EXCLUDES(mu_);
  // Connections accepted since Start(), and of those, closed at once
  // (refused() counts the clients refused by a limit). For metrics; any thread.
  uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }

 private:
  struct Conn {
    std::shared_ptr<Connection> conn;  // guarded by the Server's mu_ once running
    std::thread thread;
    std::atomic<bool> done{false};
    uint64_t id = 0;
    std::string peer;   // the client's address, without "#ID"
    int64_t since = 0;  // unix seconds
    bool refusal = false;  // over max_connections: refused in the handshake
  };

  // The per-export limit, for Connection.
  class Gate : public ExportGate {
   public:
    explicit Gate(Server* s) : s_(s) {}
    bool Enter(const std::string& name, std::string* why) override;
    void Leave(const std::string& name) override;

   private:
    Server* s_;
  };

  Status ListenTcp();
  Status ListenUnix();
  void AdoptListenFds();
  void AcceptLoop();
  void StartConnection(int fd, std::string peer, ClientInfo client) EXCLUDES(mu_);
  void Reap(bool all) EXCLUDES(mu_);

  ExportProvider* provider_;
  const ServerOptions opts_;
  std::vector<int> listen_fds_;
  int wake_[2] = {-1, -1};
  uint16_t port_ = 0;
  bool unix_bound_ = false;
  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  bool started_ = false;
  std::atomic<uint64_t> accepted_{0};

  Mutex mu_;
  std::list<std::unique_ptr<Conn>> conns_ GUARDED_BY(mu_);
  uint64_t next_id_ GUARDED_BY(mu_) = 0;
  std::shared_ptr<const TlsCredentials> tls_creds_ GUARDED_BY(mu_);
  std::shared_ptr<const AccessPolicy> access_ GUARDED_BY(mu_);
  ServerLimits limits_ GUARDED_BY(mu_);
  size_t serving_ GUARDED_BY(mu_) = 0;   // conns_ not done and not refusals
  size_t refusing_ GUARDED_BY(mu_) = 0;  // conns_ not done and refusals
  std::map<std::string, size_t> per_export_ GUARDED_BY(mu_);
  std::atomic<uint64_t> refused_{0};
  BufferBudget buffers_;
  ThreadBudget threads_;
  Gate gate_{this};
};

}  // namespace hbiss::nbd
