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
  // Sockets already bound and listening (TCP or Unix), e.g. passed by systemd
  // socket activation, served besides `listen` and `socket_path` (a caller
  // given such sockets usually clears both). Start() takes ownership: Stop()
  // closes them (a failed Start() too), and never unlinks a Unix socket it
  // did not bind.
  std::vector<int> listen_fds;
  // peer and client are filled in per connection; tls_creds and access are
  // the initial values of SetTlsCredentials and SetAccess.
  ConnectionOptions conn;
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
  // Connections currently open.
  size_t connections() EXCLUDES(mu_);

  // Replace the TLS credentials or the access policy (a SIGHUP reload).
  // Connections accepted afterwards use the new ones; open connections keep
  // what they started with. Any thread, any time. A null policy allows
  // everything; null credentials make STARTTLS fail with NBD_REP_ERR_POLICY
  // (the TLS mode itself is fixed at construction).
  void SetTlsCredentials(std::shared_ptr<const TlsCredentials> creds) EXCLUDES(mu_);
  void SetAccess(std::shared_ptr<const AccessPolicy> policy) EXCLUDES(mu_);

 private:
  struct Conn {
    std::shared_ptr<Connection> conn;  // guarded by the Server's mu_ once running
    std::thread thread;
    std::atomic<bool> done{false};
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

  Mutex mu_;
  std::list<std::unique_ptr<Conn>> conns_ GUARDED_BY(mu_);
  uint64_t next_id_ GUARDED_BY(mu_) = 0;
  std::shared_ptr<const TlsCredentials> tls_creds_ GUARDED_BY(mu_);
  std::shared_ptr<const AccessPolicy> access_ GUARDED_BY(mu_);
};

}  // namespace hbiss::nbd
