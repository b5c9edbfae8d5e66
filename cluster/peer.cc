#include "cluster/peer.h"

#include <atomic>
#include <chrono>
#include <list>
#include <thread>

#include <spdlog/spdlog.h>

#include "cluster/peer_wire.h"
#include "util/mutex.h"
#include "util/socket.h"
#include "util/thread.h"

namespace hbiss::cluster {

namespace {

// Reads one frame's payload. `what` names the peer for errors.
Status ReadFrame(Socket* s, std::string* payload) {
  uint8_t header[kFrameHeaderSize];
  HBISS_RETURN_IF_ERROR(s->ReadFull(header, sizeof(header)));
  HBISS_ASSIGN_OR_RETURN(uint32_t n,
                         DecodeFrameHeader(std::span<const uint8_t, kFrameHeaderSize>(header)));
  payload->resize(n);
  return s->ReadFull(payload->data(), n);
}

Status WriteMessage(Socket* s, const google::protobuf::MessageLite& m) {
  HBISS_ASSIGN_OR_RETURN(std::string frame, EncodeFrame(m));
  return s->WriteAll(frame.data(), frame.size());
}

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

class PeerServerImpl final : public PeerServer {
 public:
  PeerServerImpl(Options opts, PeerHandler* handler, std::unique_ptr<TcpListener> listener)
      : opts_(std::move(opts)), handler_(handler), listener_(std::move(listener)) {}

  ~PeerServerImpl() override {
    listener_->Shutdown();
    if (accept_thread_.joinable()) accept_thread_.join();
    std::list<Conn> done;
    {
      MutexLock l(&mu_);
      stopping_ = true;
      for (Conn& c : conns_) c.sock->Shutdown();
      while (!conns_.empty()) cv_.Wait(&mu_);
      done.splice(done.end(), finished_);
    }
    for (Conn& c : done) c.thread.join();
  }

  const std::string& address() const override { return listener_->address(); }
  uint64_t refused() const override { return refused_.load(); }

  Status StartAccepting() {
    HBISS_ASSIGN_OR_RETURN(accept_thread_, StartThread("hbiss-peer-accept", [this] { AcceptLoop(); }));
    return Status::OK();
  }

 private:
  struct Conn {
    std::unique_ptr<Socket> sock;
    std::thread thread;
  };

  void AcceptLoop() {
    for (;;) {
      auto s = listener_->Accept(opts_.io_timeout_ms);
      if (!s.ok()) {
        if (s.status().code() != Status::Code::kAborted) spdlog::warn("peer: accept: {}", s.status().ToString());
        return;
      }
      std::list<Conn> done;  // connections that ended: joined outside the lock
      {
        MutexLock l(&mu_);
        done.splice(done.end(), finished_);
      }
      for (Conn& c : done) c.thread.join();
      MutexLock l(&mu_);
      if (stopping_) return;
      if (int(conns_.size()) >= opts_.max_connections) {
        refused_++;
        continue;  // the socket closes here
      }
      conns_.push_back(Conn{std::move(*s), {}});
      auto it = std::prev(conns_.end());
      // Serve takes mu_ before it touches `it`, so the thread is stored first.
      auto t = StartThread("hbiss-peer", [this, it] { Serve(it); });
      if (!t.ok()) {
        spdlog::warn("peer: cannot serve {}: {}", it->sock->peer(), t.status().ToString());
        conns_.erase(it);
        continue;
      }
      it->thread = std::move(*t);
    }
  }

  void Serve(std::list<Conn>::iterator it) {
    Socket* s = it->sock.get();
    std::string payload;
    pb::Request req;
    for (;;) {
      Status st = ReadFrame(s, &payload);
      if (!st.ok()) break;  // closed, timed out, or not a frame
      pb::Reply reply;
      st = ParseRequest(Bytes(payload), &req);
      if (!st.ok()) {
        reply.set_id(req.has_id() ? req.id() : 0);
        reply.set_code(pb::Reply::BAD_REQUEST);
        reply.set_message(st.ToString());
        (void)WriteMessage(s, reply);
        break;
      }
      reply = handler_->Handle(req);
      reply.set_id(req.id());
      if (!reply.has_code()) reply.set_code(pb::Reply::FAILED);
      if (!WriteMessage(s, reply).ok()) break;
    }
    s->Shutdown();  // the peer sees the end now; the descriptor goes when joined
    MutexLock l(&mu_);
    finished_.splice(finished_.end(), conns_, it);
    cv_.SignalAll();
  }

  const Options opts_;
  PeerHandler* const handler_;
  std::unique_ptr<TcpListener> listener_;
  std::thread accept_thread_;
  std::atomic<uint64_t> refused_{0};
  Mutex mu_;
  CondVar cv_;
  bool stopping_ GUARDED_BY(mu_) = false;
  std::list<Conn> conns_ GUARDED_BY(mu_);     // being served
  std::list<Conn> finished_ GUARDED_BY(mu_);  // ended, to join
};

}  // namespace

Result<std::unique_ptr<PeerServer>> PeerServer::Start(const Options& opts, PeerHandler* handler) {
  if (opts.max_connections < 1) return Status::InvalidArgument("peer: max_connections < 1");
  HBISS_ASSIGN_OR_RETURN(auto listener, TcpListener::Listen(opts.listen));
  auto server = std::make_unique<PeerServerImpl>(opts, handler, std::move(listener));
  HBISS_RETURN_IF_ERROR(server->StartAccepting());
  return std::unique_ptr<PeerServer>(std::move(server));
}

Result<pb::Reply> PeerCall(const std::string& address, const pb::Request& req, int timeout_ms) {
  std::string host;
  uint16_t port = 0;
  HBISS_RETURN_IF_ERROR(SplitHostPort(address, &host, &port));
  HBISS_ASSIGN_OR_RETURN(auto s, Socket::Connect(host, port, timeout_ms, timeout_ms));
  HBISS_RETURN_IF_ERROR(WriteMessage(s.get(), req).WithContext("peer " + address));
  std::string payload;
  HBISS_RETURN_IF_ERROR(ReadFrame(s.get(), &payload).WithContext("peer " + address));
  pb::Reply reply;
  Status st = ParseReply(Bytes(payload), &reply);
  if (!st.ok()) return Status::Corruption("peer " + address + ": " + st.ToString());
  if (reply.id() != req.id()) {
    return Status::Corruption("peer " + address + ": reply to request " +
                              std::to_string(reply.id()) + ", expected " +
                              std::to_string(req.id()));
  }
  return reply;
}

}  // namespace hbiss::cluster
