// RpcClient against a scripted in-process server (no Hadoop): the connection preamble and
// context, pipelined calls answered out of order, remote errors, a dropped connection retried
// with the same callId, and malformed or oversized replies.
#include "hdfs/rpc.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "hdfs/wire.h"
#include "util/coding.h"

namespace hbiss::hdfs {
namespace {

struct Request {
  pb::RpcRequestHeader rh;
  pb::RequestHeader qh;
  pb::GetFileInfoRequest req;
};

bool ReadN(int fd, void* p, size_t n) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    ssize_t r = ::recv(fd, c, n, 0);
    if (r <= 0) return false;
    c += r;
    n -= size_t(r);
  }
  return true;
}

bool ReadFrame(int fd, std::string* frame) {
  uint8_t len[4];
  if (!ReadN(fd, len, 4)) return false;
  frame->resize(DecodeBE32(len));
  return ReadN(fd, frame->data(), frame->size());
}

void WriteAllFd(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t w = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (w <= 0) return;
    off += size_t(w);
  }
}

std::string Success(uint32_t call_id, const std::string& path) {
  pb::RpcResponseHeader h;
  h.set_call_id(call_id);
  h.set_status(pb::RpcResponseHeader::SUCCESS);
  pb::GetFileInfoResponse r;
  auto* fs = r.mutable_fs();
  fs->set_file_type(pb::HdfsFileStatus::IS_FILE);
  fs->set_path(path);
  fs->set_length(path.size());
  fs->mutable_permission()->set_perm(0644);
  fs->set_owner("o");
  fs->set_group("g");
  fs->set_modification_time(0);
  fs->set_access_time(0);
  return wire::EncodeRpcFrame({&h, &r});
}

// Serves connections one after another; `handle` gets each connection's requests.
class FakeServer {
 public:
  using Handler = std::function<void(int fd, int conn_no, std::vector<Request>* pending)>;
  explicit FakeServer(Handler h) : handle_(std::move(h)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ::listen(listen_fd_, 8);
    socklen_t len = sizeof(a);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Loop(); });
  }
  ~FakeServer() {
    stop_ = true;
    ::shutdown(listen_fd_, SHUT_RDWR);
    ::close(listen_fd_);
    thread_.join();
  }
  uint16_t port() const { return port_; }
  std::atomic<int> bad_preamble{0};
  std::atomic<int> connections{0};

 private:
  void Loop() {
    while (!stop_) {
      int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;
      int conn_no = connections++;
      char pre[7];
      std::string ctx;
      if (!ReadN(fd, pre, 7) || std::memcmp(pre, "hrpc\x09\x00\x00", 7) != 0 ||
          !ReadFrame(fd, &ctx)) {
        bad_preamble++;
        ::close(fd);
        continue;
      }
      std::string_view in = ctx;
      pb::RpcRequestHeader rh;
      pb::IpcConnectionContext cc;
      if (!wire::ParseDelimited(&in, &rh).ok() || rh.call_id() != -3 ||
          !wire::ParseDelimited(&in, &cc).ok() || cc.protocol() != "test.Protocol" ||
          cc.user_info().effective_user() != "tester") {
        bad_preamble++;
      }
      std::vector<Request> pending;
      std::string frame;
      while (ReadFrame(fd, &frame)) {
        Request r;
        std::string_view f = frame;
        if (!wire::ParseDelimited(&f, &r.rh).ok() || !wire::ParseDelimited(&f, &r.qh).ok() ||
            !wire::ParseDelimited(&f, &r.req).ok()) {
          break;
        }
        pending.push_back(r);
        handle_(fd, conn_no, &pending);
        if (pending.size() == 1 && pending[0].req.src() == "/close") break;
      }
      ::close(fd);
    }
  }

  Handler handle_;
  int listen_fd_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

RpcOptions TestOptions() {
  RpcOptions o;
  o.user = "tester";
  o.protocol = "test.Protocol";
  o.call_timeout_ms = 5000;
  o.retry_deadline_ms = 5000;
  return o;
}

Status CallPath(RpcClient& c, const std::string& path, std::string* got) {
  pb::GetFileInfoRequest req;
  req.set_src(path);
  pb::GetFileInfoResponse resp;
  HBISS_RETURN_IF_ERROR(c.Call("getFileInfo", req, &resp));
  *got = resp.fs().path();
  return Status::OK();
}

TEST(RpcClientTest, PipelinedCallsAnsweredOutOfOrder) {
  // Answers only once two calls are waiting, newest first.
  FakeServer server([](int fd, int, std::vector<Request>* pending) {
    if (pending->size() < 2) return;
    for (auto it = pending->rbegin(); it != pending->rend(); ++it) {
      EXPECT_EQ(it->qh.method_name(), "getFileInfo");
      EXPECT_EQ(it->qh.declaring_class_protocol_name(), "test.Protocol");
      EXPECT_EQ(it->rh.client_id().size(), 16u);
      WriteAllFd(fd, Success(uint32_t(it->rh.call_id()), it->req.src()));
    }
    pending->clear();
  });
  RpcClient c("127.0.0.1", server.port(), TestOptions());
  std::string a, b;
  Status sa, sb;
  std::thread t1([&] { sa = CallPath(c, "/a", &a); });
  std::thread t2([&] { sb = CallPath(c, "/b", &b); });
  t1.join();
  t2.join();
  ASSERT_TRUE(sa.ok()) << sa.ToString();
  ASSERT_TRUE(sb.ok()) << sb.ToString();
  EXPECT_EQ(a, "/a");
  EXPECT_EQ(b, "/b");
  EXPECT_EQ(c.connects(), 1u) << "both calls on one connection";
  EXPECT_EQ(server.bad_preamble.load(), 0);
}

TEST(RpcClientTest, RemoteExceptionBecomesReadableStatus) {
  FakeServer server([](int fd, int, std::vector<Request>* pending) {
    pb::RpcResponseHeader h;
    h.set_call_id(uint32_t(pending->back().rh.call_id()));
    h.set_status(pb::RpcResponseHeader::ERROR);
    h.set_exception_class_name("java.io.FileNotFoundException");
    h.set_error_msg("File does not exist: /x\n\tat org.apache...");
    WriteAllFd(fd, wire::EncodeRpcFrame({&h}));
    pending->clear();
  });
  RpcClient c("127.0.0.1", server.port(), TestOptions());
  std::string got;
  Status st = CallPath(c, "/x", &got);
  EXPECT_TRUE(st.IsNotFound()) << st.ToString();
  EXPECT_NE(st.message().find("FileNotFoundException: File does not exist: /x"),
            std::string::npos) << st.message();
  EXPECT_EQ(st.message().find("org.apache"), std::string::npos) << "stack trace dropped";
  // The connection stays usable after an ERROR.
  EXPECT_TRUE(CallPath(c, "/y", &got).IsNotFound());
  EXPECT_EQ(c.connects(), 1u);
}

TEST(RpcClientTest, DroppedConnectionIsRetriedWithTheSameCallId) {
  std::atomic<int> first_call_id{-1};
  std::atomic<int> retry_call_id{-1};
  std::atomic<int> retry_count{-99};
  FakeServer server([&](int fd, int conn_no, std::vector<Request>* pending) {
    const Request& r = pending->back();
    if (conn_no == 0) {
      first_call_id = r.rh.call_id();
      ::shutdown(fd, SHUT_RDWR);  // drop it without an answer
    } else {
      retry_call_id = r.rh.call_id();
      retry_count = r.rh.retry_count();
      WriteAllFd(fd, Success(uint32_t(r.rh.call_id()), r.req.src()));
    }
    pending->clear();
  });
  RpcClient c("127.0.0.1", server.port(), TestOptions());
  std::string got;
  Status st = CallPath(c, "/again", &got);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(got, "/again");
  EXPECT_EQ(c.connects(), 2u);
  EXPECT_EQ(first_call_id.load(), retry_call_id.load());
  EXPECT_EQ(retry_count.load(), 1);
}

TEST(RpcClientTest, OversizedFrameIsRejectedWithoutAllocating) {
  FakeServer server([](int fd, int, std::vector<Request>* pending) {
    WriteAllFd(fd, std::string("\xff\xff\xff\xf0", 4));  // claims ~4 GiB
    pending->clear();
  });
  RpcOptions o = TestOptions();
  o.retry = false;
  RpcClient c("127.0.0.1", server.port(), o);
  std::string got;
  Status st = CallPath(c, "/huge", &got);
  EXPECT_TRUE(st.IsCorruption()) << st.ToString();
}

TEST(RpcClientTest, MalformedResponsesAreErrors) {
  std::atomic<int> n{0};
  FakeServer server([&](int fd, int, std::vector<Request>* pending) {
    uint32_t id = uint32_t(pending->back().rh.call_id());
    pending->clear();
    switch (n++) {
      case 0: {  // a header missing its required status
        pb::RpcResponseHeader h;
        h.set_call_id(id);
        std::string body;
        PutVarint64(&body, h.ByteSizeLong());
        h.AppendPartialToString(&body);
        std::string f(4, '\0');
        EncodeBE32(reinterpret_cast<uint8_t*>(f.data()), uint32_t(body.size()));
        WriteAllFd(fd, f + body);
        break;
      }
      default: {  // a SUCCESS whose body is not the response message
        pb::RpcResponseHeader h;
        h.set_call_id(id);
        h.set_status(pb::RpcResponseHeader::SUCCESS);
        std::string f(4, '\0');
        wire::AppendDelimited(h, &f);
        std::string junk = "\x0a\x05\xff\xff";  // truncated length-delimited field
        PutVarint64(&f, junk.size());
        f += junk;
        EncodeBE32(reinterpret_cast<uint8_t*>(f.data()), uint32_t(f.size() - 4));
        WriteAllFd(fd, f);
      }
    }
  });
  RpcOptions o = TestOptions();
  o.retry = false;
  RpcClient c("127.0.0.1", server.port(), o);
  std::string got;
  EXPECT_TRUE(CallPath(c, "/1", &got).IsCorruption());
  EXPECT_TRUE(CallPath(c, "/2", &got).IsCorruption());
}

TEST(RpcClientTest, UnreachableServerFailsWithinTheDeadline) {
  RpcOptions o = TestOptions();
  o.retry_deadline_ms = 800;
  RpcClient c("127.0.0.1", 1, o);
  std::string got;
  auto t0 = std::chrono::steady_clock::now();
  Status st = CallPath(c, "/x", &got);
  EXPECT_TRUE(st.IsIOError() && st.retryable()) << st.ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

}  // namespace
}  // namespace hbiss::hdfs
