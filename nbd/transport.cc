#include "nbd/transport.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace hbiss::nbd {

namespace {
constexpr std::string_view kTimedOut = "timed out";
}  // namespace

bool IsTimeout(const Status& s) {
  return s.code() == Status::Code::kIOError && s.message().starts_with(kTimedOut);
}

FdTransport::~FdTransport() { ::close(fd_); }

Status FdTransport::Wait(short events, int64_t deadline, const char* what) {
  if (deadline == kNoDeadline.time_since_epoch().count()) return Status::OK();
  while (true) {
    const int64_t now = Clock::now().time_since_epoch().count();
    const int64_t left_ms =
        deadline <= now ? 0
                        : std::chrono::duration_cast<std::chrono::milliseconds>(
                              Clock::duration(deadline - now))
                                  .count() +
                              1;
    struct pollfd p = {fd_, events, 0};
    int rc = ::poll(&p, 1, int(std::min<int64_t>(left_ms, 1 << 30)));
    if (rc > 0) return Status::OK();  // ready, or an error the next call reports
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return Status::FromErrno("poll", errno);
    if (left_ms == 0) return Status::IOError(std::string(kTimedOut) + " " + what);
  }
}


Status FdTransport::WaitReadable(Clock::time_point deadline) {
  if (deadline != kNoDeadline) {
    return Wait(POLLIN, deadline.time_since_epoch().count(), "waiting for a request");
  }
  while (!shut_) {
    struct pollfd p = {fd_, POLLIN, 0};
    int rc = ::poll(&p, 1, -1);
    if (rc > 0) return Status::OK();
    if (rc < 0 && errno != EINTR) return Status::FromErrno("poll", errno);
  }
  return Status::OK();  // the read that follows reports the shutdown
}

Status FdTransport::ReadFull(void* buf, size_t n) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t got = 0;
  const int64_t deadline = read_deadline_;
  while (got < n) {
    if (shut_) return Status::IOError("connection shut down");
    if (deadline != kNoDeadline.time_since_epoch().count() &&
        Clock::now().time_since_epoch().count() >= deadline) {
      return Status::IOError(std::string(kTimedOut) + " waiting for the client to send");
    }
    HBISS_RETURN_IF_ERROR(Wait(POLLIN, deadline, "waiting for the client to send"));
    ssize_t r = ::recv(fd_, p + got, n - got, 0);
    if (r > 0) {
      got += size_t(r);
    } else if (shut_) {
      return Status::IOError("connection shut down");  // by us, not the peer
    } else if (r == 0) {
      if (got == 0) return Status::Aborted("end of stream");
      return Status::IOError("truncated message: end of stream");
    } else if (errno != EINTR) {
      return Status::FromErrno("recv", errno);
    }
  }
  return Status::OK();
}

Result<size_t> FdTransport::ReadSome(void* buf, size_t n) {
  while (true) {
    if (shut_) return Status::IOError("connection shut down");
    // The read deadline holds here too: TLS reads its records through this.
    HBISS_RETURN_IF_ERROR(Wait(POLLIN, read_deadline_, "waiting for the client to send"));
    ssize_t r = ::recv(fd_, buf, n, 0);
    if (r >= 0) {
      if (shut_) return Status::IOError("connection shut down");
      return size_t(r);
    }
    if (errno != EINTR) return Status::FromErrno("recv", errno);
  }
}

Result<bool> FdTransport::WaitReadable(int timeout_ms) {
  struct pollfd p = {fd_, POLLIN, 0};
  while (true) {
    if (shut_) return Status::IOError("connection shut down");
    int rc = ::poll(&p, 1, timeout_ms);
    if (rc >= 0) return rc > 0;
    if (errno != EINTR) return Status::FromErrno("poll", errno);
  }
}

Status FdTransport::WriteV(const struct iovec* iov, int iovcnt) {
  // Copy so partial writes can advance the vector.
  struct iovec local[8];
  std::vector<struct iovec> heap;
  struct iovec* v = local;
  if (iovcnt > 8) {
    heap.assign(iov, iov + iovcnt);
    v = heap.data();
  } else {
    std::copy(iov, iov + iovcnt, local);
  }
  int cnt = iovcnt;
  while (cnt > 0) {
    if (v->iov_len == 0) {
      v++;
      cnt--;
      continue;
    }
    if (shut_) return Status::IOError("connection shut down");
    HBISS_RETURN_IF_ERROR(
        Wait(POLLOUT, write_deadline_, "waiting for the client to read our replies"));
    struct msghdr msg = {};
    msg.msg_iov = v;
    msg.msg_iovlen = size_t(std::min(cnt, IOV_MAX));
    ssize_t w = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("sendmsg", errno);
    }
    size_t left = size_t(w);
    while (cnt > 0 && left >= v->iov_len) {
      left -= v->iov_len;
      v++;
      cnt--;
    }
    if (cnt > 0 && left > 0) {
      v->iov_base = static_cast<uint8_t*>(v->iov_base) + left;
      v->iov_len -= left;
    }
  }
  return Status::OK();
}

void FdTransport::Shutdown() {
  shut_ = true;
  ::shutdown(fd_, SHUT_RDWR);
}

Status BufferTransport::ReadFull(void* buf, size_t n) {
  if (shut_) return Status::IOError("connection shut down");
  if (pos_ == input_.size() && n > 0) return Status::Aborted("end of stream");
  if (input_.size() - pos_ < n) {
    pos_ = input_.size();
    return Status::IOError("truncated message: end of stream");
  }
  std::memcpy(buf, input_.data() + pos_, n);
  pos_ += n;
  return Status::OK();
}

Result<size_t> BufferTransport::ReadSome(void* buf, size_t n) {
  if (shut_) return Status::IOError("connection shut down");
  n = std::min(n, input_.size() - pos_);
  std::memcpy(buf, input_.data() + pos_, n);
  pos_ += n;
  return n;
}

Status BufferTransport::WriteV(const struct iovec* iov, int iovcnt) {
  if (shut_) return Status::IOError("connection shut down");
  MutexLock l(&mu_);
  for (int i = 0; i < iovcnt; i++) {
    written_ += iov[i].iov_len;
    if (capture_) output_.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
  }
  return Status::OK();
}

}  // namespace hbiss::nbd
