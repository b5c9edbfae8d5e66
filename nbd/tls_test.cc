// STARTTLS and access control in the handshake: a scripted client speaks raw
// NBD over a socketpair to a Connection, and after STARTTLS runs a real
// GnuTLS client session (PSK) over the same socket.
#include <gnutls/gnutls.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "nbd/access.h"
#include "nbd/connection.h"
#include "nbd/memory_export.h"
#include "nbd/test_util.h"
#include "nbd/tls.h"
#include "util/coding.h"

namespace hbiss::nbd {
namespace {

using namespace ::hbiss::nbd::testing;  // NOLINT: test helpers

const std::string kAliceKey = "0123456789abcdef0123456789abcdef";  // raw, 32 bytes

std::string Option(uint32_t opt, const std::string& data = "") {
  return Be64(kIHaveOpt) + Be32(opt) + Be32(uint32_t(data.size())) + data;
}
std::string InfoData(const std::string& name) {
  return Be32(uint32_t(name.size())) + name + Be16(0);
}
std::string Hex(const std::string& raw) {
  static const char* d = "0123456789abcdef";
  std::string h;
  for (unsigned char c : raw) {
    h.push_back(d[c >> 4]);
    h.push_back(d[c & 15]);
  }
  return h;
}

std::shared_ptr<const TlsCredentials> PskCreds() {
  auto keys = TlsCredentials::ParsePskFile("# test\nalice:" + Hex(kAliceKey) + "\nbob:" +
                                           Hex(std::string(16, 'b')) + "\n");
  EXPECT_TRUE(keys.ok());
  auto c = TlsCredentials::FromMemory("", "", "", false, *keys);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return *c;
}

struct OptReply {
  uint32_t option = 0, type = 0;
  std::string data;
  bool ok = false;  // a whole reply arrived
};

class TlsHarness {
 public:
  explicit TlsHarness(ConnectionOptions opts) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fd_ = sv[0];
    provider_.Add(std::make_shared<MemoryExport>("vm", 1 << 20));
    provider_.Add(std::make_shared<MemoryExport>("db", 1 << 16));
    provider_.Add(std::make_shared<MemoryExport>("secret", 1 << 16));
    opts.workers = 1;
    conn_ = std::make_unique<Connection>(std::make_unique<FdTransport>(sv[1]), &provider_, opts);
    thread_ = std::thread([this] { result_ = conn_->Run(); });
  }
  ~TlsHarness() {
    if (session_ != nullptr) gnutls_deinit(session_);
    if (psk_ != nullptr) gnutls_psk_free_client_credentials(psk_);
    ::shutdown(fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
  }
  Status Join() {
    thread_.join();
    return result_;
  }
  Connection* conn() { return conn_.get(); }

  void Send(const std::string& s) {
    if (session_ != nullptr) {
      ASSERT_EQ(gnutls_record_send(session_, s.data(), s.size()), ssize_t(s.size()));
    } else {
      ASSERT_EQ(::write(fd_, s.data(), s.size()), ssize_t(s.size()));
    }
  }
  std::string Recv(size_t n) {
    std::string s(n, '\0');
    size_t got = 0;
    while (got < n) {
      ssize_t r = session_ != nullptr ? gnutls_record_recv(session_, s.data() + got, n - got)
                                      : ::read(fd_, s.data() + got, n - got);
      if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) continue;
      if (r <= 0) break;
      got += size_t(r);
    }
    s.resize(got);
    return s;
  }
  bool AtEof() { return Recv(1).empty(); }

  void Hello() {
    std::string h = Recv(18);
    ASSERT_EQ(h.size(), 18u);
    EXPECT_EQ(Get64(h, 8), kIHaveOpt);
    Send(Be32(kClientFlagFixedNewstyle | kClientFlagNoZeroes));
  }
  OptReply ReadOpt() {
    OptReply r;
    std::string h = Recv(20);
    if (h.size() != 20) return r;
    EXPECT_EQ(Get64(h, 0), kOptReplyMagic);
    r.option = Get32(h, 8);
    r.type = Get32(h, 12);
    r.data = Recv(Get32(h, 16));
    r.ok = true;
    return r;
  }
  OptReply Ask(uint32_t opt, const std::string& data = "") {
    Send(Option(opt, data));
    return ReadOpt();
  }
  // Export names LIST answers, or "ERR" on an error reply.
  std::vector<std::string> List() {
    Send(Option(kOptList));
    std::vector<std::string> names;
    while (true) {
      OptReply r = ReadOpt();
      if (!r.ok || r.type == kRepAck) return names;
      if (r.type != kRepServer) return {"ERR"};
      names.push_back(r.data.substr(4, Get32(r.data, 0)));
    }
  }
  // STARTTLS then a PSK client handshake; returns GnuTLS's result.
  int StartTls(const std::string& user, const std::string& key) {
    OptReply r = Ask(kOptStartTls);
    EXPECT_EQ(r.type, kRepAck);
    EXPECT_EQ(gnutls_psk_allocate_client_credentials(&psk_), 0);
    gnutls_datum_t k = {reinterpret_cast<unsigned char*>(const_cast<char*>(key.data())),
                        unsigned(key.size())};
    EXPECT_EQ(gnutls_psk_set_client_credentials(psk_, user.c_str(), &k, GNUTLS_PSK_KEY_RAW), 0);
    EXPECT_EQ(gnutls_init(&session_, GNUTLS_CLIENT), 0);
    EXPECT_EQ(gnutls_priority_set_direct(session_, "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK", nullptr),
              0);
    gnutls_credentials_set(session_, GNUTLS_CRD_PSK, psk_);
    gnutls_transport_set_int(session_, fd_);
    int rc;
    do {
      rc = gnutls_handshake(session_);
    } while (rc < 0 && gnutls_error_is_fatal(rc) == 0);
    if (rc < 0) {
      gnutls_deinit(session_);
      session_ = nullptr;
    }
    return rc;
  }

 private:
  int fd_ = -1;
  MemoryProvider provider_;
  std::unique_ptr<Connection> conn_;
  std::thread thread_;
  Status result_;
  gnutls_session_t session_ = nullptr;
  gnutls_psk_client_credentials_t psk_ = nullptr;
};

ConnectionOptions Opts(TlsMode mode, std::vector<std::string> rules = {}) {
  ConnectionOptions o;
  o.tls = mode;
  o.tls_creds = PskCreds();
  auto p = AccessPolicy::Parse(rules);
  EXPECT_TRUE(p.ok());
  o.access = *p;
  o.client.kind = ClientInfo::Kind::kUnix;
  return o;
}

TEST(StartTlsTest, OffAnswersUnsupported) {
  TlsHarness h(Opts(TlsMode::kOff));
  h.Hello();
  EXPECT_EQ(h.Ask(kOptStartTls).type, kRepErrUnsup);
  EXPECT_EQ(h.List(), (std::vector<std::string>{"db", "secret", "vm"}));
  EXPECT_EQ(h.Ask(kOptAbort).type, kRepAck);
  EXPECT_TRUE(h.Join().ok());
}

TEST(StartTlsTest, WithoutCredentialsAnswersPolicy) {
  ConnectionOptions o = Opts(TlsMode::kOn);
  o.tls_creds = nullptr;
  TlsHarness h(o);
  h.Hello();
  EXPECT_EQ(h.Ask(kOptStartTls).type, kRepErrPolicy);
  EXPECT_EQ(h.Ask(kOptInfo, InfoData("vm")).type, kRepInfo);
}

TEST(StartTlsTest, RequireRefusesEveryOptionButStartTlsAndAbort) {
  TlsHarness h(Opts(TlsMode::kRequire));
  h.Hello();
  EXPECT_EQ(h.List(), std::vector<std::string>{"ERR"});
  for (uint32_t opt : {kOptInfo, kOptGo}) {
    OptReply r = h.Ask(opt, InfoData("vm"));
    EXPECT_EQ(r.type, kRepErrTlsReqd);
    EXPECT_NE(r.data.find("TLS is required"), std::string::npos);
  }
  EXPECT_EQ(h.Ask(kOptStructuredReply).type, kRepErrTlsReqd);
  EXPECT_EQ(h.Ask(kOptListMetaContext, "").type, kRepErrTlsReqd);
  EXPECT_EQ(h.Ask(kOptAbort).type, kRepAck);
  EXPECT_TRUE(h.Join().ok());
}

TEST(StartTlsTest, RequireEndsTheSessionOnExportName) {
  TlsHarness h(Opts(TlsMode::kRequire));
  h.Hello();
  h.Send(Option(kOptExportName, "vm"));
  EXPECT_TRUE(h.AtEof());
  EXPECT_FALSE(h.Join().ok());
}

TEST(StartTlsTest, StartTlsWithDataIsInvalid) {
  TlsHarness h(Opts(TlsMode::kRequire));
  h.Hello();
  EXPECT_EQ(h.Ask(kOptStartTls, "x").type, kRepErrInvalid);
  EXPECT_EQ(h.Ask(kOptAbort).type, kRepAck);
}

TEST(StartTlsTest, PskSessionServesAndRefusesASecondStartTls) {
  TlsHarness h(Opts(TlsMode::kRequire));
  h.Hello();
  ASSERT_EQ(h.StartTls("alice", kAliceKey), 0);
  EXPECT_EQ(h.Ask(kOptStartTls).type, kRepErrInvalid);  // inside TLS
  EXPECT_EQ(h.List(), (std::vector<std::string>{"db", "secret", "vm"}));
  OptReply r = h.Ask(kOptGo, InfoData("vm"));
  ASSERT_EQ(r.type, kRepInfo);
  EXPECT_EQ(Get64(r.data, 2), 1u << 20);
  ASSERT_EQ(h.ReadOpt().type, kRepAck);
  EXPECT_EQ(h.conn()->tls_identity(), "alice");
  // A write and a read back through the TLS record layer.
  uint8_t req[kRequestSize];
  EncodeRequest(Request{kRequestMagic, 0, kCmdWrite, 1, 4096, 5}, req);
  h.Send(std::string(reinterpret_cast<char*>(req), sizeof(req)) + "hello");
  std::string rep = h.Recv(16);
  ASSERT_EQ(rep.size(), 16u);
  EXPECT_EQ(Get32(rep, 4), 0u);
  EncodeRequest(Request{kRequestMagic, 0, kCmdRead, 2, 4096, 5}, req);
  h.Send(std::string(reinterpret_cast<char*>(req), sizeof(req)));
  rep = h.Recv(16 + 5);
  ASSERT_EQ(rep.size(), 21u);
  EXPECT_EQ(rep.substr(16), "hello");
  EncodeRequest(Request{kRequestMagic, 0, kCmdDisc, 3, 0, 0}, req);
  h.Send(std::string(reinterpret_cast<char*>(req), sizeof(req)));
  EXPECT_TRUE(h.Join().ok());
}

TEST(StartTlsTest, NegotiationStartsOverAfterTls) {
  TlsHarness h(Opts(TlsMode::kOn));
  h.Hello();
  EXPECT_EQ(h.Ask(kOptStructuredReply).type, kRepAck);  // plain text, then forgotten
  ASSERT_EQ(h.StartTls("alice", kAliceKey), 0);
  OptReply r = h.Ask(kOptGo, InfoData("vm"));
  ASSERT_EQ(r.type, kRepInfo);
  EXPECT_EQ(Get16(r.data, 10) & kFlagSendDf, 0);  // DF only with structured replies
}

TEST(StartTlsTest, OnServesPlainClientsToo) {
  TlsHarness h(Opts(TlsMode::kOn));
  h.Hello();
  OptReply r = h.Ask(kOptGo, InfoData("vm"));
  EXPECT_EQ(r.type, kRepInfo);
  EXPECT_EQ(h.conn()->tls_identity(), "");
}

TEST(StartTlsTest, WrongPskKeyIsRefused) {
  TlsHarness h(Opts(TlsMode::kRequire));
  h.Hello();
  EXPECT_LT(h.StartTls("alice", std::string(32, 'x')), 0);
  Status s = h.Join();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.ToString().find("TLS handshake failed"), std::string::npos) << s.ToString();
}

TEST(StartTlsTest, UnknownPskUserIsRefused) {
  TlsHarness h(Opts(TlsMode::kRequire));
  h.Hello();
  EXPECT_LT(h.StartTls("mallory", kAliceKey), 0);
  EXPECT_FALSE(h.Join().ok());
}

TEST(StartTlsTest, StalledTlsHandshakeTimesOut) {
  ConnectionOptions o = Opts(TlsMode::kRequire);
  o.tls_handshake_timeout_ms = 300;
  TlsHarness h(o);
  h.Hello();
  EXPECT_EQ(h.Ask(kOptStartTls).type, kRepAck);
  const auto start = std::chrono::steady_clock::now();
  Status s = h.Join();  // the client never sends a ClientHello
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.ToString().find("within 300 ms"), std::string::npos) << s.ToString();
  EXPECT_LT(waited, std::chrono::seconds(5));
}

TEST(StartTlsTest, ShutdownEndsAStalledTlsHandshake) {
  ConnectionOptions o = Opts(TlsMode::kRequire);
  o.tls_handshake_timeout_ms = 0;  // only Shutdown can end it
  TlsHarness h(o);
  h.Hello();
  EXPECT_EQ(h.Ask(kOptStartTls).type, kRepAck);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  h.conn()->Shutdown();  // what a server-wide handshake timeout does
  EXPECT_FALSE(h.Join().ok());
}

// The limits hold over TLS as without it: the records are read and written
// through the socket's deadlines (a review found every one of them lost once
// STARTTLS replaced the transport).
TEST(TlsLimitsTest, TheHandshakeTimeoutHoldsAfterStartTls) {
  ConnectionOptions o = Opts(TlsMode::kRequire);
  o.handshake_timeout = std::chrono::milliseconds(600);
  TlsHarness h(o);
  h.Hello();
  ASSERT_EQ(h.StartTls("alice", kAliceKey), 0);
  ::usleep(900 * 1000);  // past the deadline, inside TLS, before any GO
  Status s = h.Join();
  EXPECT_NE(s.ToString().find("handshake timeout"), std::string::npos) << s.ToString();
  EXPECT_TRUE(h.AtEof());
}

TEST(TlsLimitsTest, TheIdleTimeoutClosesAQuietTlsConnection) {
  ConnectionOptions o = Opts(TlsMode::kRequire);
  o.idle_timeout = std::chrono::milliseconds(300);
  o.handshake_timeout = std::chrono::milliseconds(5000);
  TlsHarness h(o);
  h.Hello();
  ASSERT_EQ(h.StartTls("alice", kAliceKey), 0);
  ASSERT_EQ(h.Ask(kOptGo, InfoData("vm")).type, kRepInfo);
  ASSERT_EQ(h.ReadOpt().type, kRepAck);
  const auto start = std::chrono::steady_clock::now();
  Status s = h.Join();  // no request: closed by the idle timeout
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(4)) << s.ToString();
}

TEST(TlsLimitsTest, AStalledWritePayloadOverTlsIsDroppedAndItsBufferReleased) {
  BufferBudget budget(64u << 20);
  ConnectionOptions o = Opts(TlsMode::kRequire);
  o.io_timeout = std::chrono::milliseconds(400);
  o.buffers = &budget;
  TlsHarness h(o);
  h.Hello();
  ASSERT_EQ(h.StartTls("alice", kAliceKey), 0);
  ASSERT_EQ(h.Ask(kOptGo, InfoData("vm")).type, kRepInfo);
  ASSERT_EQ(h.ReadOpt().type, kRepAck);
  // Older than a handshake deadline would be: replies must still go out.
  ::usleep(200 * 1000);
  uint8_t req[kRequestSize];
  EncodeRequest(Request{kRequestMagic, 0, kCmdWrite, 1, 0, 512u << 10}, req);
  h.Send(std::string(reinterpret_cast<char*>(req), sizeof(req)) + "only a few bytes");
  Status s = h.Join();
  EXPECT_NE(s.ToString().find("timed out"), std::string::npos) << s.ToString();
  EXPECT_EQ(budget.used(), 0u) << "the stalled payload's reservation was kept";
}

TEST(TlsAccessTest, ListShowsOnlyAllowedExportsAndHiddenOnesLookMissing) {
  TlsHarness h(Opts(TlsMode::kRequire, {"vm alice@*", "db *@* ro", "secret bob@*"}));
  h.Hello();
  ASSERT_EQ(h.StartTls("alice", kAliceKey), 0);
  EXPECT_EQ(h.List(), (std::vector<std::string>{"db", "vm"}));
  OptReply hidden = h.Ask(kOptInfo, InfoData("secret"));
  OptReply missing = h.Ask(kOptInfo, InfoData("nosuch"));
  EXPECT_EQ(hidden.type, kRepErrUnknown);
  EXPECT_EQ(missing.type, kRepErrUnknown);
  // The same text but for the name: nothing tells them apart.
  EXPECT_EQ(hidden.data.substr(0, hidden.data.find('\'')),
            missing.data.substr(0, missing.data.find('\'')));
  EXPECT_EQ(h.Ask(kOptStructuredReply).type, kRepAck);
  EXPECT_EQ(h.Ask(kOptSetMetaContext, Be32(6) + "secret" + Be32(0)).type, kRepErrUnknown);
  EXPECT_EQ(h.Ask(kOptSetMetaContext, Be32(2) + "vm" + Be32(0)).type, kRepAck);
  // db is read-only for alice: the flag is set and a write gets EPERM.
  OptReply r = h.Ask(kOptGo, InfoData("db"));
  ASSERT_EQ(r.type, kRepInfo);
  EXPECT_NE(Get16(r.data, 10) & kFlagReadOnly, 0);
  ASSERT_EQ(h.ReadOpt().type, kRepAck);
  uint8_t req[kRequestSize];
  EncodeRequest(Request{kRequestMagic, 0, kCmdWrite, 9, 0, 3}, req);
  h.Send(std::string(reinterpret_cast<char*>(req), sizeof(req)) + "abc");
  std::string rep = h.Recv(kStructuredReplyHeaderSize + 6);  // an error chunk
  ASSERT_EQ(rep.size(), kStructuredReplyHeaderSize + 6);
  EXPECT_EQ(Get16(rep, 6), kReplyTypeError);
  EXPECT_EQ(Get32(rep, kStructuredReplyHeaderSize), kEPerm);
}

TEST(TlsAccessTest, PlainClientWithoutIdentitySeesOnlyAddressRules) {
  TlsHarness h(Opts(TlsMode::kOn, {"vm alice@*", "db unix"}));
  h.Hello();
  EXPECT_EQ(h.List(), std::vector<std::string>{"db"});
  EXPECT_EQ(h.Ask(kOptGo, InfoData("vm")).type, kRepErrUnknown);
  h.Send(Option(kOptExportName, "secret"));  // hidden: the session ends
  EXPECT_TRUE(h.AtEof());
}

TEST(TlsCredentialsTest, PskFileParsing) {
  auto k = TlsCredentials::ParsePskFile("a:00ff\r\n\n# c\nb:A0\n");
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->at("a"), std::string("\0\xff", 2));
  EXPECT_EQ(k->at("b"), "\xa0");
  for (const char* bad : {"", "a", ":00", "a:0", "a:zz", "a:00\na:11"}) {
    EXPECT_FALSE(TlsCredentials::ParsePskFile(bad).ok()) << bad;
  }
  EXPECT_FALSE(TlsCredentials::FromMemory("", "", "", false, {}).ok());
  EXPECT_FALSE(TlsCredentials::FromMemory("", "", "", true, {{"a", "k"}}).ok());
  EXPECT_FALSE(TlsCredentials::FromMemory("not pem", "not pem", "", false, {}).ok());
}

TEST(TlsCredentialsTest, ModeParsing) {
  EXPECT_EQ(*ParseTlsMode("off"), TlsMode::kOff);
  EXPECT_EQ(*ParseTlsMode("on"), TlsMode::kOn);
  EXPECT_EQ(*ParseTlsMode("require"), TlsMode::kRequire);
  EXPECT_FALSE(ParseTlsMode("maybe").ok());
}

}  // namespace
}  // namespace hbiss::nbd
