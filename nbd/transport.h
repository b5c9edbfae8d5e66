// The byte stream under one NBD connection. FdTransport wraps a connected
// socket; BufferTransport replays fixed input and captures output, for unit
// tests and the fuzz target.
//
// Thread safety: ReadFull is called by one thread at a time (the connection's
// reader); WriteV by one thread at a time (callers serialize replies);
// Shutdown, SetReadDeadline and SetWriteDeadline may be called from any
// thread at any time.
//
// Deadlines bound how long a peer may keep a read or a write waiting: a
// ReadFull that has not received every byte by the read deadline fails with
// IOError "timed out ..." (even if the peer is still trickling bytes); a
// WriteV fails the same way when the peer has not taken the bytes by the write
// deadline (bytes it can take at once are always written, so work that took
// long on our side is never blamed on the peer). kNoDeadline is none.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "util/mutex.h"
#include "util/status.h"
#include "util/thread_annotations.h"

namespace hbiss::nbd {

using Clock = std::chrono::steady_clock;
inline constexpr Clock::time_point kNoDeadline = Clock::time_point::max();

// True when `s` is a transport's deadline failure.
bool IsTimeout(const Status& s);

class Transport {
 public:
  Transport() = default;
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;
  virtual ~Transport() = default;

  // Reads exactly n bytes. Aborted at a clean end of stream before the first
  // byte, IOError on a short read, an error, or after Shutdown.
  virtual Status ReadFull(void* buf, size_t n) = 0;
  // Reads at least one and at most n bytes (n > 0): what is there, without
  // waiting for more. 0 at a clean end of stream; an error after Shutdown.
  // For a layer that frames its own records (TlsTransport).
  virtual Result<size_t> ReadSome(void* buf, size_t n) = 0;
  // Waits up to timeout_ms (-1: forever) until ReadSome would not block.
  // True when readable (or at end of stream), false on timeout.
  virtual Result<bool> WaitReadable(int timeout_ms) { return true; }
  // Writes every byte of the iovecs, in one writev where the kernel allows.
  virtual Status WriteV(const struct iovec* iov, int iovcnt) = 0;
  // Makes blocked and later reads and writes fail promptly.
  virtual void Shutdown() = 0;
  // See the file comment; a transport without a clock (BufferTransport)
  // ignores them.
  virtual void SetReadDeadline(Clock::time_point) {}
  virtual void SetWriteDeadline(Clock::time_point) {}
  // Waits until a read would not block (data, end of stream, an error or
  // Shutdown), consuming nothing: OK, or IOError "timed out" at `deadline`
  // (kNoDeadline: waits as long as it takes). The default returns OK.
  virtual Status WaitReadable(Clock::time_point deadline) { return Status::OK(); }
};

// Owns a connected socket (closed in the destructor).
class FdTransport : public Transport {
 public:
  explicit FdTransport(int fd) : fd_(fd) {}
  ~FdTransport() override;
  Status ReadFull(void* buf, size_t n) override;
  Result<size_t> ReadSome(void* buf, size_t n) override;
  Result<bool> WaitReadable(int timeout_ms) override;
  Status WriteV(const struct iovec* iov, int iovcnt) override;
  void Shutdown() override;
  void SetReadDeadline(Clock::time_point d) override {
    read_deadline_ = d.time_since_epoch().count();
  }
  void SetWriteDeadline(Clock::time_point d) override {
    write_deadline_ = d.time_since_epoch().count();
  }
  Status WaitReadable(Clock::time_point deadline) override;
  int fd() const { return fd_; }

 private:
  // Waits until fd_ is ready for `events` or the deadline (ticks of Clock)
  // passes: OK, or IOError "timed out".
  Status Wait(short events, int64_t deadline, const char* what);

  const int fd_;
  std::atomic<bool> shut_{false};
  std::atomic<int64_t> read_deadline_{kNoDeadline.time_since_epoch().count()};
  std::atomic<int64_t> write_deadline_{kNoDeadline.time_since_epoch().count()};
};

// Reads from a fixed byte string; appends writes to an output string (or
// discards them when capture is false).
class BufferTransport : public Transport {
 public:
  explicit BufferTransport(std::string input, bool capture = true)
      : input_(std::move(input)), capture_(capture) {}
  Status ReadFull(void* buf, size_t n) override;
  Result<size_t> ReadSome(void* buf, size_t n) override;
  Status WriteV(const struct iovec* iov, int iovcnt) override;
  void Shutdown() override { shut_ = true; }
  std::string output() {
    MutexLock l(&mu_);
    return output_;
  }
  size_t bytes_written() const { return written_; }

 private:
  const std::string input_;
  size_t pos_ = 0;
  const bool capture_;
  std::atomic<bool> shut_{false};
  Mutex mu_;
  std::string output_ GUARDED_BY(mu_);
  std::atomic<size_t> written_{0};
};

}  // namespace hbiss::nbd
