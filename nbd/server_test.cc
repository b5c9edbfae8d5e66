// Server: listeners, many concurrent clients, and Stop() with
// clients still connected.
#include "nbd/server.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "nbd/memory_export.h"
#include "util/coding.h"
#include "util/thread.h"

namespace hbiss::nbd {
namespace {

int ConnectTcp(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  return fd;
}

bool ReadN(int fd, void* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, static_cast<char*>(buf) + got, n - got);
    if (r <= 0) return false;
    got += size_t(r);
  }
  return true;
}

// Handshake with EXPORT_NAME "vm", then one FLUSH; returns the socket.
int Attach(uint16_t port) {
  int fd = ConnectTcp(port);
  uint8_t hello[18];
  EXPECT_TRUE(ReadN(fd, hello, 18));
  EXPECT_EQ(DecodeBE64(hello), kNbdMagic);
  uint8_t out[4 + 16 + 2];
  EncodeBE32(out, kClientFlagFixedNewstyle | kClientFlagNoZeroes);
  EncodeBE64(out + 4, kIHaveOpt);
  EncodeBE32(out + 12, kOptExportName);
  EncodeBE32(out + 16, 2);
  std::memcpy(out + 20, "vm", 2);
  EXPECT_EQ(::write(fd, out, sizeof(out)), ssize_t(sizeof(out)));
  uint8_t info[10];
  EXPECT_TRUE(ReadN(fd, info, 10));
  EXPECT_EQ(DecodeBE64(info), 1u << 20);
  uint8_t req[kRequestSize];
  EncodeRequest(Request{kRequestMagic, 0, kCmdFlush, 7, 0, 0}, req);
  EXPECT_EQ(::write(fd, req, sizeof(req)), ssize_t(sizeof(req)));
  uint8_t rep[kSimpleReplySize];
  EXPECT_TRUE(ReadN(fd, rep, sizeof(rep)));
  EXPECT_EQ(DecodeBE32(rep), kSimpleReplyMagic);
  EXPECT_EQ(DecodeBE32(rep + 4), 0u);
  EXPECT_EQ(DecodeBE64(rep + 8), 7u);
  return fd;
}

TEST(Server, ManyClientsThenStopWithClientsConnected) {
  MemoryProvider p;
  auto vm = std::make_shared<MemoryExport>("vm", 1 << 20);
  p.Add(vm);
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  Server s(&p, o);
  ASSERT_TRUE(s.Start().ok());
  ASSERT_NE(s.port(), 0);
  std::vector<int> fds(8);
  std::vector<std::thread> ts;
  for (auto& fd : fds) ts.emplace_back([&fd, &s] { fd = Attach(s.port()); });
  for (auto& t : ts) t.join();
  EXPECT_EQ(vm->flushes, 8u);
  for (int i = 0; i < 100 && s.connections() < 8; i++) ::usleep(10000);
  EXPECT_EQ(s.connections(), 8u);
  s.Stop();  // must not wait for the clients to leave
  EXPECT_EQ(s.connections(), 0u);
  for (int fd : fds) {
    char c;
    EXPECT_EQ(::read(fd, &c, 1), 0);  // the server hung up
    ::close(fd);
  }
}

// Socket activation: the server serves a socket bound and listening before
// it starts (as systemd passes one), reports its port, and closes it on Stop.
TEST(Server, ServesAnInheritedListeningSocket) {
  MemoryProvider p;
  p.Add(std::make_shared<MemoryExport>("vm", 1 << 20));
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(lfd, 0);
  struct sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(lfd, 16), 0);
  socklen_t len = sizeof(a);
  ASSERT_EQ(::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  ServerOptions o;
  o.listen.clear();
  o.listen_fds = {lfd};
  Server s(&p, o);
  ASSERT_TRUE(s.Start().ok());
  EXPECT_EQ(s.port(), ntohs(a.sin_port));
  int fd = Attach(s.port());
  ::close(fd);
  s.Stop();
  // Closed by Stop(): the descriptor is no longer open.
  EXPECT_EQ(::fcntl(lfd, F_GETFD), -1);
}

TEST(Server, UnixSocketAndBadAddresses) {
  MemoryProvider p;
  p.Add(std::make_shared<MemoryExport>("vm", 1 << 20));
  std::string path = ::testing::TempDir() + "/hbiss-nbd-server-test.sock";
  {
    ServerOptions o;
    o.listen = "";
    o.socket_path = path;
    Server s(&p, o);
    ASSERT_TRUE(s.Start().ok());
    struct stat st;
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    s.Stop();
    EXPECT_NE(::stat(path.c_str(), &st), 0);  // removed at Stop
  }
  for (const char* bad : {"nocolon", "127.0.0.1:", "127.0.0.1:99999", "[::1", "1.2.3.4:x"}) {
    ServerOptions o;
    o.listen = bad;
    Server s(&p, o);
    EXPECT_TRUE(s.Start().IsInvalidArgument()) << bad;
  }
  ServerOptions none;
  none.listen = "";
  Server s(&p, none);
  EXPECT_FALSE(s.Start().ok());
}

// A failed thread start used to throw std::system_error out of the accept
// loop and std::terminate the process (every volume it served went down).
TEST(Server, ConnectionThatCannotGetAThreadIsClosedAndOthersAreServed) {
  MemoryProvider p;
  p.Add(std::make_shared<MemoryExport>("vm", 1 << 20));
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.conn.workers = 1;
  Server s(&p, o);
  ASSERT_TRUE(s.Start().ok());
  int before = Attach(s.port());  // a client connected before the failure keeps working

  FailThreadStartsForTest(2, "nbd connection");
  for (int i = 0; i < 2; i++) {
    int refused = ConnectTcp(s.port());
    char b;
    EXPECT_EQ(::read(refused, &b, 1), 0) << "closed before the greeting";
    ::close(refused);
  }
  int after = Attach(s.port());  // the server still accepts and serves
  EXPECT_EQ(s.connections(), 2u);

  // The first client still gets replies.
  uint8_t req[kRequestSize];
  EncodeRequest(Request{kRequestMagic, 0, kCmdFlush, 9, 0, 0}, req);
  ASSERT_EQ(::write(before, req, sizeof(req)), ssize_t(sizeof(req)));
  uint8_t rep[kSimpleReplySize];
  ASSERT_TRUE(ReadN(before, rep, sizeof(rep)));
  EXPECT_EQ(DecodeBE32(rep + 4), 0u);
  EXPECT_EQ(DecodeBE64(rep + 8), 9u);
  ::close(before);
  ::close(after);
  s.Stop();
  FailThreadStartsForTest(0);
}

TEST(Server, ConnectionServesWithFewerWorkersWhenThreadsAreRefused) {
  MemoryProvider p;
  p.Add(std::make_shared<MemoryExport>("vm", 1 << 20));
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.conn.workers = 4;
  Server s(&p, o);
  ASSERT_TRUE(s.Start().ok());
  FailThreadStartsForTest(1, "nbd worker");  // the first extra worker fails, so no extra one
  int fd = Attach(s.port());
  EXPECT_EQ(s.connections(), 1u);
  ::close(fd);
  s.Stop();
  FailThreadStartsForTest(0);
}

TEST(Server, StartFailsCleanlyWithoutAnAcceptThread) {
  MemoryProvider p;
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  {
    Server s(&p, o);
    FailThreadStartsForTest(1, "nbd accept");
    Status st = s.Start();
    EXPECT_TRUE(st.IsIOError()) << st.ToString();
    EXPECT_TRUE(st.retryable());
  }  // ~Server after a failed Start
  Server s(&p, o);
  EXPECT_TRUE(s.Start().ok());
  s.Stop();
}

// Connects, sends the client flags and returns the socket.
int Hello(uint16_t port) {
  int fd = ConnectTcp(port);
  uint8_t hello[18];
  EXPECT_TRUE(ReadN(fd, hello, 18));
  uint8_t cf[4];
  EncodeBE32(cf, kClientFlagFixedNewstyle | kClientFlagNoZeroes);
  EXPECT_EQ(::write(fd, cf, 4), 4);
  return fd;
}

// Sends option `opt` (no data) and returns the reply types and payloads up
// to the first non-SERVER reply.
std::vector<std::string> Ask(int fd, uint32_t opt, uint32_t* last_type) {
  uint8_t o[16];
  EncodeBE64(o, kIHaveOpt);
  EncodeBE32(o + 8, opt);
  EncodeBE32(o + 12, 0);
  EXPECT_EQ(::write(fd, o, 16), 16);
  std::vector<std::string> names;
  while (true) {
    uint8_t h[kOptionReplyHeaderSize];
    if (!ReadN(fd, h, sizeof(h))) return names;
    std::string data(DecodeBE32(h + 16), '\0');
    EXPECT_TRUE(ReadN(fd, data.data(), data.size()));
    *last_type = DecodeBE32(h + 12);
    if (*last_type != kRepServer) return names;
    names.push_back(data.substr(4));
  }
}

TEST(Server, AccessAndCredentialsReloadForNewConnectionsOnly) {
  MemoryProvider p;
  p.Add(std::make_shared<MemoryExport>("vm", 1 << 20));
  p.Add(std::make_shared<MemoryExport>("db", 1 << 20));
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.conn.tls = TlsMode::kOn;
  auto rules = AccessPolicy::Parse({"vm 127.0.0.0/8", "db ::1"});
  ASSERT_TRUE(rules.ok());
  o.conn.access = *rules;
  auto creds = TlsCredentials::FromMemory("", "", "", false, {{"u", "key"}});
  ASSERT_TRUE(creds.ok());
  o.conn.tls_creds = *creds;
  Server s(&p, o);
  ASSERT_TRUE(s.Start().ok());
  uint32_t type = 0;
  int before = Hello(s.port());
  EXPECT_EQ(Ask(before, kOptList, &type), std::vector<std::string>{"vm"});  // by address
  EXPECT_EQ(type, kRepAck);

  auto reloaded = AccessPolicy::Parse({"db tcp"});
  ASSERT_TRUE(reloaded.ok());
  s.SetAccess(*reloaded);
  s.SetTlsCredentials(nullptr);
  EXPECT_EQ(Ask(before, kOptList, &type), std::vector<std::string>{"vm"});  // kept its rules
  int after = Hello(s.port());
  EXPECT_EQ(Ask(after, kOptList, &type), std::vector<std::string>{"db"});
  EXPECT_TRUE(Ask(after, kOptStartTls, &type).empty());
  EXPECT_EQ(type, kRepErrPolicy);  // no credentials any more
  s.SetAccess(nullptr);
  int open = Hello(s.port());
  EXPECT_EQ(Ask(open, kOptList, &type), (std::vector<std::string>{"db", "vm"}));
  for (int fd : {before, after, open}) ::close(fd);
  s.Stop();
}

// --- Limits (issue 11) --------------------------------------------------------

std::string OptionBytes(uint32_t opt, const std::string& data) {
  std::string o(16, '\0');
  EncodeBE64(reinterpret_cast<uint8_t*>(o.data()), kIHaveOpt);
  EncodeBE32(reinterpret_cast<uint8_t*>(o.data()) + 8, opt);
  EncodeBE32(reinterpret_cast<uint8_t*>(o.data()) + 12, uint32_t(data.size()));
  return o + data;
}

// Connects, sends NBD_OPT_GO for `name`; returns the reply type of the GO's
// first reply and its data in *msg (the socket in *fd, left open).
uint32_t TryGo(uint16_t port, const std::string& name, std::string* msg, int* fd) {
  *fd = ConnectTcp(port);
  uint8_t hello[18];
  if (!ReadN(*fd, hello, 18)) return 0;
  std::string d(4, '\0');
  EncodeBE32(reinterpret_cast<uint8_t*>(d.data()), uint32_t(name.size()));
  d += name + std::string(2, '\0');
  std::string out(4, '\0');
  EncodeBE32(reinterpret_cast<uint8_t*>(out.data()),
             kClientFlagFixedNewstyle | kClientFlagNoZeroes);
  out += OptionBytes(kOptGo, d);
  if (::send(*fd, out.data(), out.size(), MSG_NOSIGNAL) != ssize_t(out.size())) return 0;
  uint8_t h[20];
  if (!ReadN(*fd, h, 20)) return 0;
  std::string data(DecodeBE32(h + 16), '\0');
  if (!ReadN(*fd, data.data(), data.size())) return 0;
  *msg = data;
  uint32_t type = DecodeBE32(h + 12);
  if (type == kRepInfo) {  // then ACK: in transmission
    if (!ReadN(*fd, h, 20)) return 0;
  }
  return type;
}

bool WaitFor(const std::function<bool()>& pred) {
  for (int i = 0; i < 500; i++) {
    if (pred()) return true;
    ::usleep(10000);
  }
  return pred();
}

TEST(ServerLimitsTest, OverTheServerWideLimitEveryOptionGetsPolicy) {
  MemoryProvider p;
  p.Add(std::make_shared<MemoryExport>("vm", 1 << 20));
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.limits.max_connections = 2;
  Server s(&p, o);
  ASSERT_TRUE(s.Start().ok());
  int a = Attach(s.port()), b = Attach(s.port());
  std::string msg;
  int c;
  EXPECT_EQ(TryGo(s.port(), "vm", &msg, &c), kRepErrPolicy);
  EXPECT_NE(msg.find("the most it allows"), std::string::npos) << msg;
  ::close(c);
  EXPECT_EQ(s.refused(), 1u);

  // Raised at runtime: the next client gets in.
  ServerLimits l = s.limits();
  l.max_connections = 3;
  s.SetLimits(l);
  EXPECT_EQ(TryGo(s.port(), "vm", &msg, &c), kRepInfo);
  // Lowered: nobody is dropped, and newcomers are refused.
  l.max_connections = 1;
  s.SetLimits(l);
  int d;
  EXPECT_EQ(TryGo(s.port(), "vm", &msg, &d), kRepErrPolicy);
  ::close(d);
  ASSERT_TRUE(WaitFor([&] { return s.connections() == 3; }));
  uint8_t req[kRequestSize];
  EncodeRequest(Request{kRequestMagic, 0, kCmdFlush, 5, 0, 0}, req);
  for (int fd : {a, b, c}) {
    ASSERT_EQ(::write(fd, req, sizeof(req)), ssize_t(sizeof(req)));
    uint8_t rep[kSimpleReplySize];
    ASSERT_TRUE(ReadN(fd, rep, sizeof(rep)));
    EXPECT_EQ(DecodeBE32(rep + 4), 0u);
    ::close(fd);
  }
  s.Stop();
}

TEST(ServerLimitsTest, BeyondTheRefusalSlotsASocketIsClosedAtOnce) {
  MemoryProvider p;
  p.Add(std::make_shared<MemoryExport>("vm", 1 << 20));
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.limits.max_connections = 1;
  o.limits.handshake_timeout = std::chrono::seconds(5);
  Server s(&p, o);
  ASSERT_TRUE(s.Start().ok());
  int a = Attach(s.port());
  // Silent refused clients each hold a refusal slot (at most 2 s).
  std::vector<int> silent;
  for (size_t i = 0; i < Server::kRefusalSlots; i++) {
    silent.push_back(ConnectTcp(s.port()));
    uint8_t hello[18];
    EXPECT_TRUE(ReadN(silent.back(), hello, 18));
  }
  int extra = ConnectTcp(s.port());
  char ch;
  EXPECT_EQ(::read(extra, &ch, 1), 0) << "closed without a greeting";
  ::close(extra);
  EXPECT_EQ(s.refused(), Server::kRefusalSlots + 1);
  // The refusals end within their 2 s bound even though the clients stay.
  ASSERT_TRUE(WaitFor([&] { return s.connections() == 1; }));
  for (int fd : silent) ::close(fd);
  ::close(a);
  s.Stop();
}

TEST(ServerLimitsTest, PerExportLimitRefusesGoWithPolicyAndFreesOnDisconnect) {
  MemoryProvider p;
  p.Add(std::make_shared<MemoryExport>("vm", 1 << 20));
  p.Add(std::make_shared<MemoryExport>("other", 1 << 20));
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.limits.max_connections_per_export = 2;
  Server s(&p, o);
  ASSERT_TRUE(s.Start().ok());
  int a = Attach(s.port()), b = Attach(s.port());  // EXPORT_NAME counts too
  EXPECT_EQ(s.export_connections("vm"), 2u);
  std::string msg;
  int c;
  EXPECT_EQ(TryGo(s.port(), "vm", &msg, &c), kRepErrPolicy);
  EXPECT_NE(msg.find("export 'vm' already has 2 connections"), std::string::npos) << msg;
  ::close(c);
  int d;
  EXPECT_EQ(TryGo(s.port(), "other", &msg, &d), kRepInfo);  // other exports unaffected
  ::close(d);
  ::close(a);
  ASSERT_TRUE(WaitFor([&] { return s.export_connections("vm") == 1; }));
  EXPECT_EQ(TryGo(s.port(), "vm", &msg, &c), kRepInfo);
  ::close(c);
  ::close(b);
  s.Stop();
}

TEST(ServerLimitsTest, HalfOpenClientsAreDroppedAfterTheHandshakeTimeout) {
  MemoryProvider p;
  p.Add(std::make_shared<MemoryExport>("vm", 1 << 20));
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.limits.handshake_timeout = std::chrono::milliseconds(300);
  Server s(&p, o);
  ASSERT_TRUE(s.Start().ok());
  std::vector<int> fds;
  for (int i = 0; i < 20; i++) fds.push_back(ConnectTcp(s.port()));
  ASSERT_TRUE(WaitFor([&] { return s.connections() == 20; }));
  ASSERT_TRUE(WaitFor([&] { return s.connections() == 0; }));
  for (int fd : fds) ::close(fd);
  s.Stop();
}

TEST(ServerLimitsTest, UnixSocketModeAndGroupAreSetBeforeItIsReachable) {
  MemoryProvider p;
  p.Add(std::make_shared<MemoryExport>("vm", 1 << 20));
  std::string path = ::testing::TempDir() + "/hbiss-nbd-mode-test.sock";
  ServerOptions o;
  o.listen = "";
  o.socket_path = path;
  o.socket_mode = 0600;
  o.socket_gid = long(::getgid());
  Server s(&p, o);
  ASSERT_TRUE(s.Start().ok());
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_gid, ::getgid());
  s.Stop();
  auto m = ParseSocketMode("0660");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(*m, 0660);
  EXPECT_FALSE(ParseSocketMode("0999").ok());
  EXPECT_FALSE(ParseSocketMode("rw").ok());
  auto g = ParseSocketGroup("0");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(*g, 0);
  EXPECT_TRUE(ParseSocketGroup("no-such-group-hbiss").status().IsNotFound());
}

}  // namespace
}  // namespace hbiss::nbd
