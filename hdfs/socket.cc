#include "hdfs/socket.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace hbiss::hdfs {

namespace {

Status ConnectOne(const addrinfo* ai, int timeout_ms, int* out_fd) {
  int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    ai->ai_protocol);
  if (fd < 0) return Status::FromErrno("socket", errno);
  int rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
  if (rc != 0 && errno != EINPROGRESS) {
    int err = errno;
    ::close(fd);
    return Status::IOError(fmt::format("connect: {}", std::strerror(err)), true);
  }
  if (rc != 0) {
    pollfd p{fd, POLLOUT, 0};
    int n;
    do {
      n = ::poll(&p, 1, timeout_ms);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
      ::close(fd);
      return Status::IOError("connect: timed out", true);
    }
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
    if (soerr != 0) {
      ::close(fd);
      return Status::IOError(fmt::format("connect: {}", std::strerror(soerr)), true);
    }
  }
  int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  *out_fd = fd;
  return Status::OK();
}

}  // namespace

Result<std::unique_ptr<Socket>> Socket::Connect(const std::string& host, uint16_t port,
                                                int connect_timeout_ms, int io_timeout_ms) {
  std::string peer = fmt::format("{}:{}", host, port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::string port_str = std::to_string(port);
  int gai = ::getaddrinfo(host.c_str(), port_str.c_str(), &hints, &res);
  if (gai != 0) {
    return Status::IOError(fmt::format("resolve {}: {}", peer, gai_strerror(gai)), true);
  }
  Status last = Status::IOError("no address");
  int fd = -1;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    last = ConnectOne(ai, connect_timeout_ms, &fd);
    if (last.ok()) break;
  }
  ::freeaddrinfo(res);
  if (!last.ok()) return last.WithContext(peer);
  auto sock = std::unique_ptr<Socket>(new Socket(fd, peer));
  sock->SetIoTimeout(io_timeout_ms);
  return sock;
}

Socket::~Socket() { ::close(fd_); }

void Socket::SetIoTimeout(int io_timeout_ms) {
  timeval tv{};
  tv.tv_sec = io_timeout_ms / 1000;
  tv.tv_usec = (io_timeout_ms % 1000) * 1000;
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

bool Socket::WaitReadable(int timeout_ms) {
  pollfd p{fd_, POLLIN, 0};
  int n;
  do {
    n = ::poll(&p, 1, timeout_ms);
  } while (n < 0 && errno == EINTR);
  return n != 0;
}

void Socket::Shutdown() { ::shutdown(fd_, SHUT_RDWR); }

Status Socket::WriteAll(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::send(fd_, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return Status::IOError(fmt::format("write to {}: timed out", peer_), true);
      }
      return Status::IOError(fmt::format("write to {}: {}", peer_, std::strerror(errno)), true);
    }
    p += w;
    n -= size_t(w);
  }
  return Status::OK();
}

Result<size_t> Socket::ReadSome(void* data, size_t max) {
  for (;;) {
    ssize_t r = ::recv(fd_, data, max, 0);
    if (r > 0) return size_t(r);
    if (r == 0) {
      return Status::IOError(fmt::format("read from {}: connection closed by peer", peer_), true);
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return Status::IOError(fmt::format("read from {}: timed out", peer_), true);
    }
    return Status::IOError(fmt::format("read from {}: {}", peer_, std::strerror(errno)), true);
  }
}

Status Socket::ReadFull(void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t r = ::recv(fd_, p, n, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return Status::IOError(fmt::format("read from {}: timed out", peer_), true);
      }
      return Status::IOError(fmt::format("read from {}: {}", peer_, std::strerror(errno)), true);
    }
    if (r == 0) {
      return Status::IOError(fmt::format("read from {}: connection closed by peer", peer_), true);
    }
    p += r;
    n -= size_t(r);
  }
  return Status::OK();
}

}  // namespace hbiss::hdfs
