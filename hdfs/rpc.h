// A Hadoop IPC client for one server address and one protocol (ClientProtocol to the NameNode,
// ClientDatanodeProtocol to a DataNode), SIMPLE authentication only.
//
// Calls are pipelined: many threads may call at once over one TCP connection, and responses
// are matched to calls by callId by a reader thread. When the connection drops, the next call
// reconnects. A call that failed because the connection dropped, or because the server
// answered with a retryable exception (SafeModeException, RetriableException, ...), is sent
// again with the same callId and an incremented retryCount -- which is how Hadoop's retry
// cache recognizes a retried non-idempotent call -- until RpcOptions::retry_deadline_ms.
//
// Thread safety: every public method may be called from any thread.
#pragma once

#include <google/protobuf/message_lite.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "util/socket.h"
#include "util/mutex.h"
#include "util/status.h"
#include "util/thread_annotations.h"

namespace hbiss::hdfs {

struct RpcOptions {
  std::string user;      // effective user sent in the connection context
  std::string protocol;  // e.g. "org.apache.hadoop.hdfs.protocol.ClientProtocol"
  int connect_timeout_ms = 5000;
  int call_timeout_ms = 60000;     // one attempt of one call
  int retry_deadline_ms = 120000;  // all attempts of one call together
  bool retry = true;               // false: one attempt only
};

class RpcClient {
 public:
  RpcClient(std::string host, uint16_t port, RpcOptions options);
  RpcClient(const RpcClient&) = delete;
  RpcClient& operator=(const RpcClient&) = delete;
  // Closes the connection; calls still in flight fail with Aborted.
  ~RpcClient();

  // Calls `method` with `request` and parses the reply into *response. A server-side
  // exception becomes the Status from wire::RemoteExceptionToStatus; a malformed reply is
  // Corruption (and closes the connection).
  Status Call(const std::string& method, const google::protobuf::MessageLite& request,
              google::protobuf::MessageLite* response);

  // Drops the current connection (for tests and for callers that know it is stale).
  void Disconnect();

  std::string Address() const;
  // Number of TCP connections opened so far.
  uint64_t connects() const { return connects_.load(); }

 private:
  // Guarded by its Connection's mu (not expressible as GUARDED_BY here).
  struct PendingCall {
    bool done = false;
    Status status;
    std::string body;  // serialized response message
  };
  struct Connection {
    std::unique_ptr<Socket> sock;  // set before the reader starts; then only read
    Mutex write_mu;                // serializes requests on sock
    std::thread reader;            // set and joined under the RpcClient's mu_
    Mutex mu;
    CondVar cv;  // signalled when a pending call completes or dead is set
    std::map<int32_t, std::shared_ptr<PendingCall>> pending GUARDED_BY(mu);
    bool dead GUARDED_BY(mu) = false;
    Status dead_status GUARDED_BY(mu);
  };

  Result<std::shared_ptr<Connection>> GetConnection() EXCLUDES(mu_);
  Status OneAttempt(int32_t call_id, int retry_count, const std::string& method,
                    const std::string& request_bytes, std::string* response_bytes);
  static void ReaderLoop(std::shared_ptr<Connection> conn);
  static void KillConnection(Connection* conn, const Status& why) EXCLUDES(conn->mu);

  const std::string host_;
  const uint16_t port_;
  const RpcOptions options_;
  std::string client_id_;  // 16 random bytes
  std::atomic<int32_t> next_call_id_{0};
  std::atomic<uint64_t> connects_{0};

  Mutex mu_;  // taken before any Connection::mu
  std::shared_ptr<Connection> conn_ GUARDED_BY(mu_);
  // Dead connections whose reader to join.
  std::vector<std::shared_ptr<Connection>> old_ GUARDED_BY(mu_);
  bool closed_ GUARDED_BY(mu_) = false;
};

// 16 random bytes (a UUID-sized client id).
std::string RandomClientId();

}  // namespace hbiss::hdfs
