#include "hdfs/rpc.h"

#include <chrono>
#include <random>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "hdfs/counters.h"
#include "hdfs/proto/hadoop_wire.pb.h"
#include "hdfs/wire.h"
#include "util/coding.h"
#include "util/thread.h"

namespace hbiss::hdfs {

using Clock = std::chrono::steady_clock;

std::string RandomClientId() {
  std::random_device rd;
  std::string id(16, '\0');
  for (auto& c : id) c = char(rd());
  return id;
}

RpcClient::RpcClient(std::string host, uint16_t port, RpcOptions options)
    : host_(std::move(host)), port_(port), options_(std::move(options)),
      client_id_(RandomClientId()) {}

RpcClient::~RpcClient() {
  std::shared_ptr<Connection> conn;
  std::vector<std::shared_ptr<Connection>> old;
  {
    MutexLock l(&mu_);
    closed_ = true;
    conn = std::move(conn_);
    old = std::move(old_);
  }
  if (conn) old.push_back(conn);
  for (auto& c : old) {
    KillConnection(c.get(), Status::Aborted("RPC client closed"));
    if (c->reader.joinable()) c->reader.join();
  }
}

std::string RpcClient::Address() const { return fmt::format("{}:{}", host_, port_); }

void RpcClient::Disconnect() {
  MutexLock l(&mu_);
  if (conn_) {
    KillConnection(conn_.get(), Status::IOError("disconnected by the client", true));
    old_.push_back(std::move(conn_));
  }
}

void RpcClient::KillConnection(Connection* conn, const Status& why) {
  MutexLock l(&conn->mu);
  if (!conn->dead) {
    conn->dead = true;
    conn->dead_status = why;
    conn->sock->Shutdown();
  }
  for (auto& [id, call] : conn->pending) {
    if (!call->done) {
      call->done = true;
      call->status = why;
    }
  }
  conn->pending.clear();
  conn->cv.SignalAll();
}

Result<std::shared_ptr<RpcClient::Connection>> RpcClient::GetConnection() {
  MutexLock l(&mu_);
  if (closed_) return Status::Aborted("RPC client closed");
  if (conn_) {
    MutexLock cl(&conn_->mu);
    if (!conn_->dead) return conn_;
  }
  if (conn_) old_.push_back(std::move(conn_));
  // Readers of dead connections have been shut down and exit promptly.
  for (auto& c : old_) {
    if (c->reader.joinable()) c->reader.join();
  }
  old_.clear();

  HBISS_ASSIGN_OR_RETURN(
      auto sock, Socket::Connect(host_, port_, options_.connect_timeout_ms, 0 /* no timeout */));
  pb::RpcRequestHeader rh;
  rh.set_rpc_kind(pb::RPC_PROTOCOL_BUFFER);
  rh.set_rpc_op(pb::RpcRequestHeader::RPC_FINAL_PACKET);
  rh.set_call_id(wire::kConnectionContextCallId);
  rh.set_client_id(client_id_);
  rh.set_retry_count(-1);
  pb::IpcConnectionContext ctx;
  ctx.mutable_user_info()->set_effective_user(options_.user);
  ctx.set_protocol(options_.protocol);
  std::string hello = wire::ConnectionPreamble() + wire::EncodeRpcFrame({&rh, &ctx});
  HBISS_RETURN_IF_ERROR(sock->WriteAll(hello.data(), hello.size()));

  auto conn = std::make_shared<Connection>();
  conn->sock = std::move(sock);
  HBISS_ASSIGN_OR_RETURN(conn->reader,
                         StartThread("hdfs rpc reader " + Address(),
                                     [conn] { ReaderLoop(conn); }));  // else conn closes sock
  conn_ = conn;
  connects_++;
  return conn;
}

void RpcClient::ReaderLoop(std::shared_ptr<Connection> conn) {
  std::string frame;
  for (;;) {
    uint8_t len_buf[4];
    Status st = conn->sock->ReadFull(len_buf, 4);
    if (!st.ok()) {
      KillConnection(conn.get(), st.WithContext("NameNode connection lost"));
      return;
    }
    uint32_t len = DecodeBE32(len_buf);
    if (len > wire::kMaxRpcFrame) {
      KillConnection(conn.get(),
                     Status::Corruption(fmt::format("RPC response of {} bytes exceeds limit", len)));
      return;
    }
    // Grow the buffer only as bytes actually arrive, never to a size the server merely claims.
    frame.clear();
    while (frame.size() < len) {
      size_t step = std::min<size_t>(len - frame.size(), 1u << 20);
      size_t old = frame.size();
      frame.resize(old + step);
      st = conn->sock->ReadFull(frame.data() + old, step);
      if (!st.ok()) {
        KillConnection(conn.get(), st.WithContext("NameNode connection lost"));
        return;
      }
    }
    wire::RpcResponse resp;
    st = wire::ParseRpcResponse(frame, &resp);
    if (!st.ok()) {
      KillConnection(conn.get(), st.WithContext("malformed RPC response"));
      return;
    }
    const auto& h = resp.header;
    if (h.status() == pb::RpcResponseHeader::FATAL) {
      Status why = wire::RemoteExceptionToStatus(h.exception_class_name(), h.error_msg());
      KillConnection(conn.get(), why.WithContext("fatal RPC error"));
      return;
    }
    MutexLock l(&conn->mu);
    auto it = conn->pending.find(int32_t(h.call_id()));
    if (it == conn->pending.end()) continue;  // a call that already timed out
    auto call = it->second;
    conn->pending.erase(it);
    call->done = true;
    if (h.status() == pb::RpcResponseHeader::SUCCESS) {
      call->status = Status::OK();
      call->body.assign(resp.body);
    } else {
      call->status = wire::RemoteExceptionToStatus(h.exception_class_name(), h.error_msg());
    }
    conn->cv.SignalAll();
  }
}

Status RpcClient::OneAttempt(int32_t call_id, int retry_count, const std::string& method,
                             const std::string& request_bytes, std::string* response_bytes) {
  HBISS_ASSIGN_OR_RETURN(auto conn, GetConnection());
  pb::RpcRequestHeader rh;
  rh.set_rpc_kind(pb::RPC_PROTOCOL_BUFFER);
  rh.set_rpc_op(pb::RpcRequestHeader::RPC_FINAL_PACKET);
  rh.set_call_id(call_id);
  rh.set_client_id(client_id_);
  rh.set_retry_count(retry_count);
  pb::RequestHeader qh;
  qh.set_method_name(method);
  qh.set_declaring_class_protocol_name(options_.protocol);
  qh.set_client_protocol_version(1);
  // The request is already serialized; frame it by hand.
  std::string frame(4, '\0');
  wire::AppendDelimited(rh, &frame);
  wire::AppendDelimited(qh, &frame);
  PutVarint64(&frame, request_bytes.size());
  frame += request_bytes;
  EncodeBE32(reinterpret_cast<uint8_t*>(frame.data()), uint32_t(frame.size() - 4));

  auto call = std::make_shared<PendingCall>();
  {
    MutexLock l(&conn->mu);
    if (conn->dead) return conn->dead_status;
    conn->pending[call_id] = call;
  }
  {
    MutexLock wl(&conn->write_mu);
    Status st = conn->sock->WriteAll(frame.data(), frame.size());
    if (!st.ok()) {
      KillConnection(conn.get(), st.WithContext("NameNode connection lost"));
    }
  }
  MutexLock l(&conn->mu);
  auto deadline = Clock::now() + std::chrono::milliseconds(options_.call_timeout_ms);
  while (!call->done) {
    if (!conn->cv.WaitUntil(&conn->mu, deadline) && !call->done) {
      l.Unlock();
      KillConnection(conn.get(), Status::IOError(
          fmt::format("RPC {} to {} timed out after {} ms", method, Address(),
                      options_.call_timeout_ms), true));
      l.Lock();
    }
  }
  if (call->status.ok()) *response_bytes = std::move(call->body);
  return call->status;
}

Status RpcClient::Call(const std::string& method, const google::protobuf::MessageLite& request,
                       google::protobuf::MessageLite* response) {
  int32_t call_id = next_call_id_.fetch_add(1) & 0x7fffffff;
  std::string request_bytes = request.SerializeAsString();
  auto deadline = Clock::now() + std::chrono::milliseconds(options_.retry_deadline_ms);
  int backoff_ms = 100;
  for (int attempt = 0;; attempt++) {
    std::string body;
    Status st = OneAttempt(call_id, attempt, method, request_bytes, &body);
    if (st.ok()) {
      if (!wire::ParseMessage(body, response)) {
        return Status::Corruption(fmt::format("malformed {} response from {}", method, Address()));
      }
      return Status::OK();
    }
    bool retry = options_.retry && st.IsIOError() && st.retryable();
    if (!retry || Clock::now() + std::chrono::milliseconds(backoff_ms) > deadline) {
      return st.WithContext(fmt::format("{} ({})", method, Address()));
    }
    GlobalClientCounters().rpc_retries.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("hdfs rpc: {} attempt {} failed: {}; retrying", method, attempt,
                  st.ToString());
    std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
    backoff_ms = std::min(backoff_ms * 2, 2000);
  }
}

}  // namespace hbiss::hdfs
