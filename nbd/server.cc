#include "nbd/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <grp.h>

#include <cstring>
#include <ctime>

#include "util/thread.h"

namespace hbiss::nbd {

// Connections the kernel completes before the accept loop takes them: a burst
// of clients (hundreds of VMs starting) must not have SYNs dropped and
// retried a second later. The kernel caps it at net.core.somaxconn.
constexpr int kListenBacklog = 4096;

Result<int> ParseSocketMode(const std::string& s) {
  if (s.empty() || s.size() > 4 || s.find_first_not_of("01234567") != std::string::npos) {
    return Status::InvalidArgument("socket mode '" + s + "': want octal bits such as 0660");
  }
  return int(std::stoul(s, nullptr, 8));
}

Result<long> ParseSocketGroup(const std::string& s) {
  if (s.empty()) return Status::InvalidArgument("empty socket group");
  if (s.find_first_not_of("0123456789") == std::string::npos && s.size() <= 9) {
    return long(std::stoul(s));
  }
  struct group g;
  struct group* found = nullptr;
  std::vector<char> buf(16384);
  int rc = ::getgrnam_r(s.c_str(), &g, buf.data(), buf.size(), &found);
  if (rc != 0) return Status::FromErrno("looking up group " + s, rc);
  if (found == nullptr) return Status::NotFound("no group named '" + s + "'");
  return long(found->gr_gid);
}

Server::Server(ExportProvider* provider, ServerOptions opts)
    : provider_(provider),
      opts_(std::move(opts)),
      limits_(opts_.limits),
      buffers_(opts_.buffer_bytes),
      threads_(opts_.limits.max_worker_threads) {
  MutexLock l(&mu_);
  tls_creds_ = opts_.conn.tls_creds;
  access_ = opts_.conn.access;
}

void Server::SetLimits(const ServerLimits& limits) {
  {
    MutexLock l(&mu_);
    limits_ = limits;
  }
  threads_.SetLimit(limits.max_worker_threads);
  spdlog::info("nbd: limits: {} connections, {} per export, handshake {} ms, idle {} ms, {} "
               "worker threads",
               limits.max_connections, limits.max_connections_per_export,
               limits.handshake_timeout.count(), limits.idle_timeout.count(),
               limits.max_worker_threads);
}

ServerLimits Server::limits() {
  MutexLock l(&mu_);
  return limits_;
}

bool Server::Gate::Enter(const std::string& name, std::string* why) {
  MutexLock l(&s_->mu_);
  size_t& n = s_->per_export_[name];
  if (n >= s_->limits_.max_connections_per_export) {
    *why = fmt::format("export '{}' already has {} connections, the most this server allows; "
                       "try again later",
                       name, n);
    if (n == 0) s_->per_export_.erase(name);
    s_->refused_++;
    return false;
  }
  n++;
  return true;
}

void Server::Gate::Leave(const std::string& name) {
  MutexLock l(&s_->mu_);
  auto it = s_->per_export_.find(name);
  if (it == s_->per_export_.end()) return;
  if (--it->second == 0) s_->per_export_.erase(it);
}

size_t Server::export_connections(const std::string& name) {
  MutexLock l(&mu_);
  auto it = per_export_.find(name);
  return it == per_export_.end() ? 0 : it->second;
}

void Server::SetTlsCredentials(std::shared_ptr<const TlsCredentials> creds) {
  MutexLock l(&mu_);
  tls_creds_ = std::move(creds);
}

void Server::SetAccess(std::shared_ptr<const AccessPolicy> policy) {
  MutexLock l(&mu_);
  access_ = std::move(policy);
}

Server::~Server() { Stop(); }

static Status SplitHostPort(const std::string& s, std::string* host, std::string* port) {
  size_t colon;
  if (!s.empty() && s[0] == '[') {
    size_t close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      return Status::InvalidArgument("bad listen address '" + s + "': want [HOST]:PORT");
    }
    *host = s.substr(1, close - 1);
    colon = close + 1;
  } else {
    colon = s.rfind(':');
    if (colon == std::string::npos) {
      return Status::InvalidArgument("bad listen address '" + s + "': want HOST:PORT");
    }
    *host = s.substr(0, colon);
  }
  *port = s.substr(colon + 1);
  if (port->empty() || port->find_first_not_of("0123456789") != std::string::npos ||
      port->size() > 5 || std::stoul(*port) > 65535) {
    return Status::InvalidArgument("bad port in listen address '" + s + "'");
  }
  return Status::OK();
}

Status Server::ListenTcp() {
  std::string host, port;
  HBISS_RETURN_IF_ERROR(SplitHostPort(opts_.listen, &host, &port));
  struct addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  struct addrinfo* res = nullptr;
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) {
    return Status::InvalidArgument("listen address '" + opts_.listen + "': " + gai_strerror(rc));
  }
  Status last = Status::InvalidArgument("no address for '" + opts_.listen + "'");
  for (struct addrinfo* a = res; a != nullptr; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last = Status::FromErrno("socket", errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, kListenBacklog) != 0) {
      last = Status::FromErrno("bind/listen " + opts_.listen, errno);
      ::close(fd);
      continue;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    ::getsockname(fd, reinterpret_cast<struct sockaddr*>(&ss), &len);
    port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    listen_fds_.push_back(fd);
    freeaddrinfo(res);
    return Status::OK();
  }
  freeaddrinfo(res);
  return last;
}

Status Server::ListenUnix() {
  struct sockaddr_un sa = {};
  sa.sun_family = AF_UNIX;
  if (opts_.socket_path.size() >= sizeof(sa.sun_path)) {
    return Status::InvalidArgument("socket path too long: " + opts_.socket_path);
  }
  std::memcpy(sa.sun_path, opts_.socket_path.c_str(), opts_.socket_path.size() + 1);
  // Replace a stale socket left by a killed server, but never another file.
  struct stat st;
  if (::lstat(opts_.socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status::AlreadyExists(opts_.socket_path + " exists and is not a socket");
    }
    ::unlink(opts_.socket_path.c_str());
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno("socket", errno);
  const bool perms = opts_.socket_mode >= 0 || opts_.socket_gid >= 0;
  if (!perms) {
    if (::bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof(sa)) != 0 ||
        ::listen(fd, kListenBacklog) != 0) {
      Status s = Status::FromErrno("bind/listen " + opts_.socket_path, errno);
      ::close(fd);
      return s;
    }
  } else {
    // Bind inside a fresh 0700 directory beside the target (nobody else can
    // reach the socket there), set its mode and group, then rename it into
    // place: no moment where the name exists with wider permissions, and no
    // process-wide umask change.
    const size_t slash = opts_.socket_path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : opts_.socket_path.substr(0, slash);
    std::string tmpl = (slash == std::string::npos ? std::string() : dir + "/") + ".hbiss-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      Status s = Status::FromErrno("mkdtemp in " + dir, errno);
      ::close(fd);
      return s;
    }
    const std::string tmp = tmpl + "/s";
    struct sockaddr_un ta = {};
    ta.sun_family = AF_UNIX;
    Status s;
    if (tmp.size() >= sizeof(ta.sun_path)) {
      s = Status::InvalidArgument("socket path too long: " + tmp);
    } else {
      std::memcpy(ta.sun_path, tmp.c_str(), tmp.size() + 1);
      if (::bind(fd, reinterpret_cast<struct sockaddr*>(&ta), sizeof(ta)) != 0) {
        s = Status::FromErrno("bind " + tmp, errno);
      } else if (opts_.socket_gid >= 0 &&
                 ::chown(tmp.c_str(), uid_t(-1), gid_t(opts_.socket_gid)) != 0) {
        s = Status::FromErrno(
            "chown " + tmp + " to group " + std::to_string(opts_.socket_gid), errno);
      } else if (opts_.socket_mode >= 0 && ::chmod(tmp.c_str(), mode_t(opts_.socket_mode)) != 0) {
        s = Status::FromErrno("chmod " + tmp, errno);
      } else if (::listen(fd, kListenBacklog) != 0) {
        s = Status::FromErrno("listen " + tmp, errno);
      } else if (::rename(tmp.c_str(), opts_.socket_path.c_str()) != 0) {
        s = Status::FromErrno("rename " + tmp + " to " + opts_.socket_path, errno);
      }
    }
    ::unlink(tmp.c_str());  // gone already after the rename
    ::rmdir(tmpl.c_str());
    if (!s.ok()) {
      ::close(fd);
      return s;
    }
  }
  unix_bound_ = true;
  listen_fds_.push_back(fd);
  return Status::OK();
}

void Server::AdoptListenFds() {
  for (int fd : opts_.listen_fds) {
    listen_fds_.push_back(fd);
    if (port_ != 0) continue;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (::getsockname(fd, reinterpret_cast<struct sockaddr*>(&ss), &len) != 0) continue;
    if (ss.ss_family == AF_INET) port_ = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    if (ss.ss_family == AF_INET6) port_ = ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  }
}

Status Server::Start() {
  if (opts_.listen.empty() && opts_.socket_path.empty() && opts_.listen_fds.empty()) {
    return Status::InvalidArgument("nothing to listen on");
  }
  // The inherited sockets are ours from here on, whatever happens.
  AdoptListenFds();
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    Status s = Status::FromErrno("pipe", errno);
    for (int fd : listen_fds_) ::close(fd);
    listen_fds_.clear();
    return s;
  }
  // A start that fails half-way leaves nothing behind.
  auto undo = [this](Status why) {
    for (int fd : listen_fds_) ::close(fd);
    listen_fds_.clear();
    if (unix_bound_) ::unlink(opts_.socket_path.c_str());
    ::close(wake_[0]);
    ::close(wake_[1]);
    wake_[0] = wake_[1] = -1;
    return why;
  };
  Status s;
  if (!opts_.listen.empty()) s = ListenTcp();
  if (s.ok() && !opts_.socket_path.empty()) s = ListenUnix();
  if (!s.ok()) return undo(s);
  auto t = StartThread("nbd accept", [this] { AcceptLoop(); });
  if (!t.ok()) return undo(t.status());
  accept_thread_ = std::move(*t);
  started_ = true;
  return Status::OK();
}

void Server::AcceptLoop() {
  std::vector<struct pollfd> pfds;
  for (int fd : listen_fds_) pfds.push_back({fd, POLLIN, 0});
  pfds.push_back({wake_[0], POLLIN, 0});
  while (!stopping_) {
    int rc = ::poll(pfds.data(), pfds.size(), 1000);
    Reap(false);
    if (rc < 0) {
      if (errno == EINTR) continue;
      spdlog::error("nbd: poll: {}", std::strerror(errno));
      return;
    }
    if (stopping_) return;
    for (size_t i = 0; i + 1 < pfds.size(); i++) {
      if (!(pfds[i].revents & POLLIN)) continue;
      struct sockaddr_storage ss;
      socklen_t len = sizeof(ss);
      int fd = ::accept4(pfds[i].fd, reinterpret_cast<struct sockaddr*>(&ss), &len,
                         SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
          spdlog::warn("nbd: accept: {}", std::strerror(errno));
          ::usleep(10000);  // e.g. EMFILE: do not spin
        }
        continue;
      }
      std::string peer = "unix";
      if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (opts_.keepalive_idle > 0) {
          // A peer that vanished (host down, cable pulled) is found and its
          // connection, with what it holds, closed.
          ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
          ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &opts_.keepalive_idle, sizeof(int));
          ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &opts_.keepalive_interval, sizeof(int));
          ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &opts_.keepalive_count, sizeof(int));
        }
        char host[INET6_ADDRSTRLEN] = "?";
        uint16_t port = 0;
        if (ss.ss_family == AF_INET) {
          auto* a = reinterpret_cast<sockaddr_in*>(&ss);
          inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
          port = ntohs(a->sin_port);
        } else {
          auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
          inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
          port = ntohs(a->sin6_port);
        }
        peer = std::string(host) + ":" + std::to_string(port);
      }
      StartConnection(fd, peer,
                      ClientInfo::FromSockaddr(reinterpret_cast<struct sockaddr*>(&ss), len));
    }
  }
}

void Server::StartConnection(int fd, std::string peer, ClientInfo client) {
  MutexLock l(&mu_);
  uint64_t id = ++next_id_;
  ConnectionOptions co = opts_.conn;
  co.client = std::move(client);
  co.tls_creds = tls_creds_;
  co.access = access_;
  // fmt, not "#" + std::string: GCC 12 -O3 reports a false -Wrestrict for
  // `literal + std::string&&` (GCC PR 105651).
  co.peer = fmt::format("#{} {}", id, peer);
  co.handshake_timeout = limits_.handshake_timeout;
  co.idle_timeout = limits_.idle_timeout;
  co.buffers = &buffers_;
  co.threads = &threads_;
  co.gate = &gate_;
  const bool refusal = serving_ >= limits_.max_connections;
  if (refusal) {
    refused_++;
    if (refusing_ >= kRefusalSlots) {
      const size_t max = limits_.max_connections;
      l.Unlock();
      spdlog::info("nbd {}: refused: the server has {} connections, the most it allows, and is "
                   "already refusing {}; closing at once",
                   co.peer, max, kRefusalSlots);
      ::close(fd);
      return;
    }
    co.refuse = fmt::format("the server has {} connections, the most it allows; try again later",
                            limits_.max_connections);
    // A refusal needs no time beyond what answering a few options takes.
    if (co.handshake_timeout.count() == 0 || co.handshake_timeout > std::chrono::seconds(2)) {
      co.handshake_timeout = std::chrono::seconds(2);
    }
  }
  auto c = std::make_unique<Conn>();
  c->refusal = refusal;
  c->conn = std::make_shared<Connection>(std::make_unique<FdTransport>(fd), provider_, co);
  c->id = id;
  c->peer = peer;
  c->since = int64_t(std::time(nullptr));
  accepted_.fetch_add(1, std::memory_order_relaxed);
  Conn* raw = c.get();
  // The thread runs after this returns: it takes mu_ before touching conns_'s
  // entry, and Reap joins it only once it set done.
  auto t = StartThread("nbd connection " + co.peer, [this, raw, peer = co.peer] {
    Server* server = this;
    Status s = raw->conn->Run();
    if (s.ok() || s.code() == Status::Code::kAborted) {
      spdlog::info("nbd {}: disconnected after {} requests", peer, raw->conn->requests());
    } else if (server->stopping_) {
      spdlog::info("nbd {}: closed by shutdown after {} requests", peer, raw->conn->requests());
    } else {
      spdlog::warn("nbd {}: closed after {} requests: {}", peer, raw->conn->requests(),
                   s.ToString());
    }
    std::shared_ptr<Connection> drop;
    {
      MutexLock l(&server->mu_);
      drop = std::move(raw->conn);
      raw->done = true;
      if (raw->refusal) {
        server->refusing_--;
      } else {
        server->serving_--;
      }
    }
    drop.reset();  // drops the export (the last one closes the volume)
  });
  if (!t.ok()) {
    // Only this client loses: it is disconnected before the handshake, and the
    // server goes on accepting (the next connection may get its thread).
    l.Unlock();
    refused_.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("nbd {}: closing the connection: {}", co.peer, t.status().ToString());
    c.reset();  // closes the socket
    return;
  }
  if (refusal) {
    spdlog::info("nbd {}: refused: the server has {} connections, the most it allows", co.peer,
                 limits_.max_connections);
    refusing_++;
  } else {
    spdlog::info("nbd {}: connected", co.peer);
    serving_++;
  }
  raw->thread = std::move(*t);
  conns_.push_back(std::move(c));
}

void Server::Reap(bool all) {
  std::list<std::unique_ptr<Conn>> finished;
  {
    MutexLock l(&mu_);
    for (auto it = conns_.begin(); it != conns_.end();) {
      if (all || (*it)->done) {
        finished.push_back(std::move(*it));
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& c : finished) c->thread.join();
}

size_t Server::connections() {
  MutexLock l(&mu_);
  size_t n = 0;
  for (auto& c : conns_) n += c->done ? 0 : 1;
  return n;
}

std::vector<ConnectionInfo> Server::ConnectionInfos() {
  std::vector<ConnectionInfo> out;
  MutexLock l(&mu_);
  for (auto& c : conns_) {
    if (c->done || !c->conn) continue;
    ConnectionInfo i;
    i.id = c->id;
    i.peer = c->peer;
    i.export_name = c->conn->served_export();
    i.requests = c->conn->requests();
    i.since = c->since;
    out.push_back(std::move(i));
  }
  return out;
}

void Server::Stop() {
  if (!started_ || stopping_.exchange(true)) return;
  char b = 1;
  (void)!::write(wake_[1], &b, 1);
  accept_thread_.join();
  for (int fd : listen_fds_) ::close(fd);
  listen_fds_.clear();
  if (unix_bound_) ::unlink(opts_.socket_path.c_str());
  {
    MutexLock l(&mu_);
    for (auto& c : conns_) {
      if (c->conn && !c->done) c->conn->Shutdown();
    }
  }
  Reap(true);
  ::close(wake_[0]);
  ::close(wake_[1]);
}

}  // namespace hbiss::nbd
