#include "util/socket.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace hbiss {

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

// "host:port" ("[v6]:port") of a socket address.
std::string AddressOf(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
    return fmt::format("[{}]:{}", buf, ntohs(a->sin6_port));
  }
  auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
  ::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
  return fmt::format("{}:{}", buf, ntohs(a->sin_port));
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

Status SplitHostPort(const std::string& s, std::string* host, uint16_t* port) {
  auto bad = [&] { return Status::InvalidArgument("bad address '" + s + "': want HOST:PORT"); };
  size_t colon;
  if (!s.empty() && s[0] == '[') {
    const size_t close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':') return bad();
    *host = s.substr(1, close - 1);
    colon = close + 1;
  } else {
    colon = s.rfind(':');
    if (colon == std::string::npos || colon == 0) return bad();
    *host = s.substr(0, colon);
    if (host->find(':') != std::string::npos) return bad();
  }
  const std::string p = s.substr(colon + 1);
  if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(p) > 65535) {
    return bad();
  }
  *port = uint16_t(std::stoul(p));
  return Status::OK();
}

Result<std::unique_ptr<TcpListener>> TcpListener::Listen(const std::string& host_port) {
  std::string host;
  uint16_t port = 0;
  HBISS_RETURN_IF_ERROR(SplitHostPort(host_port, &host, &port));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port_str = std::to_string(port);
  int gai = ::getaddrinfo(host.c_str(), port_str.c_str(), &hints, &res);
  if (gai != 0) {
    return Status::InvalidArgument(fmt::format("listen address '{}': {}", host_port,
                                               gai_strerror(gai)));
  }
  Status last = Status::InvalidArgument("no address for '" + host_port + "'");
  int fd = -1;
  for (addrinfo* ai = res; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last = Status::FromErrno("socket", errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, 64) != 0) {
      last = Status::FromErrno("bind/listen " + host_port, errno);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(res);
  if (fd < 0) return last;
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  auto l = std::unique_ptr<TcpListener>(new TcpListener(fd, AddressOf(ss)));
  if (::pipe2(l->wake_, O_CLOEXEC | O_NONBLOCK) != 0) return Status::FromErrno("pipe", errno);
  return l;
}

TcpListener::~TcpListener() {
  ::close(fd_);
  if (wake_[0] >= 0) ::close(wake_[0]);
  if (wake_[1] >= 0) ::close(wake_[1]);
}

void TcpListener::Shutdown() {
  const char c = 1;
  (void)!::write(wake_[1], &c, 1);
}

Result<std::unique_ptr<Socket>> TcpListener::Accept(int io_timeout_ms) {
  for (;;) {
    pollfd p[2] = {{fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    int n = ::poll(p, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("poll " + address_, errno);
    }
    if (p[1].revents != 0) return Status::Aborted("listener " + address_ + " is shut down");
    if (p[0].revents == 0) continue;
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    int fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue;
      return Status::FromErrno("accept " + address_, errno);
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto sock = std::unique_ptr<Socket>(new Socket(fd, AddressOf(ss)));
    sock->SetIoTimeout(io_timeout_ms);
    return sock;
  }
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

}  // namespace hbiss
