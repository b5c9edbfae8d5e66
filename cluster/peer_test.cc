#include "cluster/peer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "cluster/peer_wire.h"
#include "util/socket.h"

namespace hbiss::cluster {
namespace {

using Clock = std::chrono::steady_clock;

class Handler : public PeerHandler {
 public:
  pb::Reply Handle(const pb::Request& req) override {
    calls++;
    if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    pb::Reply r;
    if (req.type() == pb::Request::PING) {
      r.set_code(pb::Reply::OK);
      r.set_server("host-a");
      r.add_owned("vm1");
    } else if (req.volume() != "vm1") {
      r.set_code(pb::Reply::NO_VOLUME);
    } else if (req.epoch() != 7) {
      r.set_code(pb::Reply::NOT_OWNER);
      r.set_current_epoch(7);
    } else {
      r.set_code(pb::Reply::OK);
      r.set_current_epoch(7);
      r.mutable_log_end()->set_segment(3);
      r.mutable_log_end()->set_offset(8192);
    }
    return r;
  }
  std::atomic<int> calls{0};
  int delay_ms = 0;
};

std::unique_ptr<PeerServer> StartServer(Handler* h, int max_conns = 4) {
  PeerServer::Options o;
  o.max_connections = max_conns;
  auto s = PeerServer::Start(o, h);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(*s) : nullptr;
}

pb::Request Req(pb::Request::Type type, uint64_t id, const std::string& vol = "",
                uint64_t epoch = 0) {
  pb::Request r;
  r.set_type(type);
  r.set_id(id);
  if (!vol.empty()) {
    r.set_volume(vol);
    r.set_epoch(epoch);
  }
  return r;
}

std::unique_ptr<Socket> Connect(const std::string& address) {
  std::string host;
  uint16_t port = 0;
  EXPECT_TRUE(SplitHostPort(address, &host, &port).ok());
  auto s = Socket::Connect(host, port, 2000, 2000);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(*s) : nullptr;
}

TEST(PeerTest, RequestsGetTheHandlersReplies) {
  Handler h;
  auto server = StartServer(&h);
  ASSERT_NE(server, nullptr);
  auto pong = PeerCall(server->address(), Req(pb::Request::PING, 1), 2000);
  ASSERT_TRUE(pong.ok()) << pong.status().ToString();
  EXPECT_EQ(pong->id(), 1u);
  EXPECT_EQ(pong->server(), "host-a");
  ASSERT_EQ(pong->owned_size(), 1);
  auto rel = PeerCall(server->address(), Req(pb::Request::RELEASE, 2, "vm1", 7), 2000);
  ASSERT_TRUE(rel.ok());
  EXPECT_EQ(rel->code(), pb::Reply::OK);
  EXPECT_EQ(rel->log_end().offset(), 8192u);
  auto stale = PeerCall(server->address(), Req(pb::Request::SYNC, 3, "vm1", 6), 2000);
  ASSERT_TRUE(stale.ok());
  EXPECT_EQ(stale->code(), pb::Reply::NOT_OWNER);
  EXPECT_EQ(stale->current_epoch(), 7u);
  EXPECT_EQ(h.calls.load(), 3);
}

// A well-framed request that breaks the rules gets BAD_REQUEST and never
// reaches the handler; bytes that are no frame just close the connection;
// either way the server goes on serving others.
TEST(PeerTest, MalformedInputNeverReachesTheHandler) {
  Handler h;
  auto server = StartServer(&h);
  ASSERT_NE(server, nullptr);
  {
    auto s = Connect(server->address());
    pb::Request bad = Req(pb::Request::RELEASE, 9);  // no volume
    std::string frame = EncodeFrame(bad).value();
    ASSERT_TRUE(s->WriteAll(frame.data(), frame.size()).ok());
    uint8_t hdr[kFrameHeaderSize];
    ASSERT_TRUE(s->ReadFull(hdr, sizeof(hdr)).ok());
    auto n = DecodeFrameHeader(std::span<const uint8_t, kFrameHeaderSize>(hdr));
    ASSERT_TRUE(n.ok());
    std::string payload(*n, '\0');
    ASSERT_TRUE(s->ReadFull(payload.data(), payload.size()).ok());
    pb::Reply r;
    ASSERT_TRUE(ParseReply({reinterpret_cast<const uint8_t*>(payload.data()), payload.size()}, &r)
                    .ok());
    EXPECT_EQ(r.code(), pb::Reply::BAD_REQUEST);
    EXPECT_EQ(r.id(), 9u);
    char c;
    EXPECT_FALSE(s->ReadFull(&c, 1).ok()) << "the connection must be closed";
  }
  for (const std::string& junk : {std::string("GET / HTTP/1.1\r\n\r\n"),
                                 std::string("HBPW\xff\xff\xff\xff", 8),
                                 std::string("HBPW\0\0\0\0", 8)}) {
    auto s = Connect(server->address());
    ASSERT_TRUE(s->WriteAll(junk.data(), junk.size()).ok());
    char c;
    const auto t0 = Clock::now();
    EXPECT_FALSE(s->ReadFull(&c, 1).ok()) << "closed without a reply";
    EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(1500)) << "closed at once, not timed out";
  }
  EXPECT_EQ(h.calls.load(), 0);
  EXPECT_TRUE(PeerCall(server->address(), Req(pb::Request::PING, 1), 2000).ok());
}

TEST(PeerTest, ConnectionsBeyondTheLimitAreRefused) {
  Handler h;
  auto server = StartServer(&h, 2);
  ASSERT_NE(server, nullptr);
  auto a = Connect(server->address());
  auto b = Connect(server->address());
  // The server takes both (the order of accepts is the kernel's), then
  // refuses the next: keep connecting until one is closed on us.
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (server->refused() == 0 && Clock::now() < deadline) {
    auto c = Connect(server->address());
    char ch;
    if (!c->ReadFull(&ch, 1).ok()) break;  // closed by the server: refused
  }
  EXPECT_GE(server->refused(), 1u);
  a.reset();
  b.reset();
  // Once the two are gone, calls are served again.
  deadline = Clock::now() + std::chrono::seconds(5);
  Result<pb::Reply> r = Status::IOError("not tried");
  while (Clock::now() < deadline) {
    r = PeerCall(server->address(), Req(pb::Request::PING, 2), 1000);
    if (r.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(r.ok()) << r.status().ToString();
}

TEST(PeerTest, SlowOrAbsentPeersAreRetryableErrors) {
  Handler h;
  h.delay_ms = 600;
  auto server = StartServer(&h);
  ASSERT_NE(server, nullptr);
  auto t0 = Clock::now();
  auto r = PeerCall(server->address(), Req(pb::Request::PING, 1), 150);
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsIOError() && r.status().retryable()) << r.status().ToString();
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(550));
  const std::string gone = server->address();
  server.reset();  // waits for the slow call in progress
  r = PeerCall(gone, Req(pb::Request::PING, 2), 500);
  EXPECT_TRUE(r.status().IsIOError() && r.status().retryable()) << r.status().ToString();
  EXPECT_FALSE(PeerCall("no-port", Req(pb::Request::PING, 3), 500).ok());
}

// Stopping does not wait for idle clients to go away.
TEST(PeerTest, StopClosesIdleConnectionsPromptly) {
  Handler h;
  auto server = StartServer(&h);
  ASSERT_NE(server, nullptr);
  auto idle = Connect(server->address());
  ASSERT_TRUE(PeerCall(server->address(), Req(pb::Request::PING, 1), 2000).ok());
  auto t0 = Clock::now();
  server.reset();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(2));
  char c;
  EXPECT_FALSE(idle->ReadFull(&c, 1).ok());
}

}  // namespace
}  // namespace hbiss::cluster
