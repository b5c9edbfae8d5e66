// A blocking TCP connection with timeouts, used by the NameNode IPC client, the
// DataTransferProtocol streams and the peer protocol between hbiss servers (cluster/), and
// a listener for the latter. Every read and write either completes fully or fails with an
// IOError naming the peer; a timeout is a retryable IOError.
//
// Thread safety: one thread may read while another writes; two concurrent readers (or two
// concurrent writers) must synchronize themselves. Shutdown() may be called from any thread
// and makes pending and later reads and writes fail promptly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "util/status.h"

namespace hbiss {

class Socket {
 public:
  // Connects to host:port (a numeric address or a name resolved with getaddrinfo) within
  // timeout_ms. Sets TCP_NODELAY and applies io_timeout_ms to every later read and write.
  static Result<std::unique_ptr<Socket>> Connect(const std::string& host, uint16_t port,
                                                 int connect_timeout_ms, int io_timeout_ms);

  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket();

  // Writes all n bytes.
  Status WriteAll(const void* data, size_t n);
  // Reads exactly n bytes. An orderly close by the peer before n bytes is an IOError.
  Status ReadFull(void* data, size_t n);
  // Reads between 1 and max bytes (what is available, waiting for at least one).
  Result<size_t> ReadSome(void* data, size_t max);
  // Waits up to timeout_ms for bytes (or EOF/error) to be readable; false on timeout.
  bool WaitReadable(int timeout_ms);
  // Changes the per-operation timeout (0 means none).
  void SetIoTimeout(int io_timeout_ms);
  // Shuts down both directions; the descriptor stays open until destruction.
  void Shutdown();

  const std::string& peer() const { return peer_; }

 private:
  friend class TcpListener;
  Socket(int fd, std::string peer) : fd_(fd), peer_(std::move(peer)) {}
  int fd_;
  std::string peer_;
};

// A listening TCP socket. Thread safety: Accept from one thread at a time; Shutdown from any
// thread makes a pending and every later Accept fail promptly.
class TcpListener {
 public:
  // Binds host:port ("127.0.0.1:0" picks a free port; "[::1]:7000" for IPv6) and listens.
  // InvalidArgument for an address that does not parse or resolve, IOError when it cannot
  // be bound.
  static Result<std::unique_ptr<TcpListener>> Listen(const std::string& host_port);

  TcpListener(const TcpListener&) = delete;
  TcpListener& operator=(const TcpListener&) = delete;
  ~TcpListener();

  // Waits for the next connection and returns it with TCP_NODELAY and io_timeout_ms (0:
  // none) on its reads and writes. Aborted after Shutdown.
  Result<std::unique_ptr<Socket>> Accept(int io_timeout_ms);
  void Shutdown();
  // The address actually bound, as host:port (the kernel's port when 0 was asked for).
  const std::string& address() const { return address_; }

 private:
  TcpListener(int fd, std::string address) : fd_(fd), address_(std::move(address)) {}
  int fd_;
  int wake_[2] = {-1, -1};  // a pipe: Shutdown writes to it to end a pending Accept
  std::string address_;
};

// Splits "host:port" or "[v6]:port". InvalidArgument when it does not parse.
Status SplitHostPort(const std::string& s, std::string* host, uint16_t* port);

}  // namespace hbiss
