// The NBD server: listens on a TCP address and/or a Unix socket and runs one
// Connection per accepted client on its own thread.
//
// Thread safety: Start() and Stop() are called by one controlling thread;
// port() and connections() may be called from any thread after Start().
//
// Threads: one accept thread, plus one per connection (and the connection's
// own workers, see ConnectionOptions::workers). When the OS refuses a
// connection's thread, that connection is closed (and logged) and the server
// keeps accepting; Start() fails if it cannot start the accept thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
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

struct ServerOptions {
  // "HOST:PORT" ("[::1]:PORT" for IPv6); empty to not listen on TCP. Port 0
  // picks a free port (see port()).
  std::string listen = "127.0.0.1:10809";
  std::string socket_path;  // a Unix socket path; empty for none
  ConnectionOptions conn;   // peer is filled in per connection
};

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
  // if an address cannot be parsed or bound, or neither listener is set.
  Status Start();

  // Stops accepting, shuts down every connection, and waits until each has
  // finished its requests in flight and returned. Idempotent.
  void Stop();

  // The bound TCP port, 0 if not listening on TCP.
  uint16_t port() const { return port_; }
  // Connections currently open.
  size_t connections() EXCLUDES(mu_);
  // The connections currently open, in the order they were accepted.
  std::vector<ConnectionInfo> ConnectionInfos() EXCLUDES(mu_);
  // Connections accepted since Start(), and of those, closed at once
  // (refused) rather than served. For metrics; any thread.
  uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  struct Conn {
    std::shared_ptr<Connection> conn;  // guarded by the Server's mu_ once running
    std::thread thread;
    std::atomic<bool> done{false};
    uint64_t id = 0;
    std::string peer;   // the client's address, without "#ID"
    int64_t since = 0;  // unix seconds
  };

  Status ListenTcp();
  Status ListenUnix();
  void AcceptLoop();
  void StartConnection(int fd, std::string peer) EXCLUDES(mu_);
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
  std::atomic<uint64_t> refused_{0};

  Mutex mu_;
  std::list<std::unique_ptr<Conn>> conns_ GUARDED_BY(mu_);
  uint64_t next_id_ GUARDED_BY(mu_) = 0;
};

}  // namespace hbiss::nbd
