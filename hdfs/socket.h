// A blocking TCP connection with timeouts, used by the NameNode IPC client and the
// DataTransferProtocol streams. Every read and write either completes fully or fails with an
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

namespace hbiss::hdfs {

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
  Socket(int fd, std::string peer) : fd_(fd), peer_(std::move(peer)) {}
  int fd_;
  std::string peer_;
};

}  // namespace hbiss::hdfs
