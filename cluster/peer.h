// The peer endpoint of an hbiss server (doc/ownership.md): a small
// request/reply service other servers reach to ask for a volume's release or
// a sync, and the client side that asks.
//
// PeerServer accepts connections on a TCP address and answers each framed
// pb::Request (peer_wire.h) with the pb::Reply its PeerHandler returns, one
// request at a time per connection. A malformed frame or request gets a
// BAD_REQUEST reply (when a reply can still be framed) and the connection is
// closed; it never reaches the handler. Bounded: at most
// Options::max_connections connections are served at once (a thread each);
// one more is closed at once. Stopping (the destructor) closes the listener
// and every connection and waits for the handler calls in progress.
//
// PeerCall connects, sends one request and waits for its reply, all within
// one timeout. Errors are IOError, retryable for connection failures and
// timeouts (the peer may be down), or Corruption for a reply that does not
// parse or answers another request.
//
// Threads: PeerHandler::Handle is called from the server's connection
// threads, concurrently. PeerCall is thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "cluster/peer.pb.h"
#include "util/status.h"

namespace hbiss::cluster {

class PeerHandler {
 public:
  virtual ~PeerHandler() = default;
  // The reply to a request that parsed and passed ParseRequest; the server
  // sets its id.
  virtual pb::Reply Handle(const pb::Request& req) = 0;
};

class PeerServer {
 public:
  struct Options {
    std::string listen = "127.0.0.1:0";  // host:port
    int max_connections = 32;
    int io_timeout_ms = 30000;  // an idle or stalled connection is closed after this
  };

  // Starts serving. handler must outlive the server. InvalidArgument or
  // IOError when the address cannot be bound; a thread that cannot start is
  // an IOError too.
  static Result<std::unique_ptr<PeerServer>> Start(const Options& opts, PeerHandler* handler);
  virtual ~PeerServer() = default;
  // The address bound (host:port), for other servers to reach.
  virtual const std::string& address() const = 0;
  // Connections refused because max_connections were being served.
  virtual uint64_t refused() const = 0;
};

// Sends `req` to the server at `address` (host:port) and returns its reply.
Result<pb::Reply> PeerCall(const std::string& address, const pb::Request& req, int timeout_ms);

}  // namespace hbiss::cluster
