// The NBD server: listens on a TCP address and/or a Unix socket and runs one
// Connection per accepted client on its own thread.
//
// Thread safety: Start() and Stop() are called by one controlling thread;
// port() and connections() may be called from any thread after Start().
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "nbd/connection.h"
#include "nbd/export.h"
#include "util/status.h"

namespace hbiss::nbd {

struct ServerOptions {
  // "HOST:PORT" ("[::1]:PORT" for IPv6); empty to not listen on TCP. Port 0
  // picks a free port (see port()).
  std::string listen = "127.0.0.1:10809";
  std::string socket_path;  // a Unix socket path; empty for none
  ConnectionOptions conn;   // peer is filled in per connection
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
  size_t connections();

 private:
  struct Conn {
    std::shared_ptr<Connection> conn;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  Status ListenTcp();
  Status ListenUnix();
  void AcceptLoop();
  void StartConnection(int fd, std::string peer);
  void Reap(bool all);

  ExportProvider* provider_;
  const ServerOptions opts_;
  std::vector<int> listen_fds_;
  int wake_[2] = {-1, -1};
  uint16_t port_ = 0;
  bool unix_bound_ = false;
  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  bool started_ = false;

  std::mutex mu_;
  std::list<std::unique_ptr<Conn>> conns_;  // GUARDED_BY(mu_)
  uint64_t next_id_ = 0;                    // GUARDED_BY(mu_)
};

}  // namespace hbiss::nbd
