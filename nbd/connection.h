// One NBD connection: the fixed-newstyle handshake, then the transmission
// phase, over a Transport, against exports from an ExportProvider.
//
// Handshake: NBD_OPT_GO, INFO, EXPORT_NAME, LIST, ABORT, STRUCTURED_REPLY,
// LIST_META_CONTEXT and SET_META_CONTEXT (see "Meta contexts"). Every other
// option gets NBD_REP_ERR_UNSUP and negotiation continues. NBD_INFO_BLOCK_SIZE
// advertises the spec's default constraints (minimum 1, preferred 4096,
// maximum payload 32 MiB), so no client is ever refused for not asking.
//
// Transmission: READ, WRITE (FUA), DISC, FLUSH, TRIM, CACHE, WRITE_ZEROES
// (NO_HOLE, FAST_ZERO) and BLOCK_STATUS. ValidateRequest() checks every
// request before the export sees it; a bad request gets an NBD error and the
// connection stays usable. A broken stream (bad magic, truncated message, an
// impossible length) ends this connection only. Several threads serve one
// connection (leader/follower), so requests run concurrently and replies may
// go out of order; each reply is sent with one writev under the connection's
// write lock. When the OS refuses some of those threads, the connection runs
// with the ones it got (at least Run()'s own). FUA and FLUSH are
// acknowledged only after Export::Flush() returns OK.
//
// Meta contexts: base:allocation, and qemu:dirty-bitmap:NAME for every NAME
// ExportProvider::DirtyBitmaps offers for the export. LIST with no query
// lists them all; LIST also takes the namespace queries "base:" (base:
// allocation), "qemu:" and "qemu:dirty-bitmap:" (every dirty bitmap). SET
// takes whole names only; unknown names and namespaces select nothing (not
// an error). A SET selecting more than kMaxDirtyBitmapContexts dirty bitmaps
// gets NBD_REP_ERR_TOO_BIG (and selects nothing). SET gives base:allocation
// id kBaseAllocationId and the dirty bitmaps kFirstDirtyBitmapId, +1, ... in
// the order of its reply. NBD_OPT_GO (or EXPORT_NAME) on the export the
// contexts were set for builds each selected map (Export::DirtyBitmap) before
// it answers: the map is a point-in-time view as of negotiation, and a map
// that cannot be built fails the GO (NBD_REP_ERR_UNKNOWN, with the reason;
// EXPORT_NAME: the session ends). BLOCK_STATUS then answers one chunk per
// selected context, in id order, in one write; the last carries DONE.
//
// TLS: NBD_OPT_STARTTLS (with ConnectionOptions::tls on or require) gets
// NBD_REP_ACK, then the TLS handshake runs (a failure ends the connection and
// is logged at info with GnuTLS's reason) and negotiation starts over inside
// TLS: options negotiated before it are forgotten. STARTTLS with data, or a
// second time, gets NBD_REP_ERR_INVALID; with TLS off, NBD_REP_ERR_UNSUP.
// With require, every option but STARTTLS and ABORT before TLS gets
// NBD_REP_ERR_TLS_REQD, and EXPORT_NAME ends the connection.
//
// Access: with ConnectionOptions::access, LIST shows only the exports the
// client may see, and a hidden export fails INFO, GO and the meta-context
// options with NBD_REP_ERR_UNKNOWN and the same text as a name that does not
// exist (EXPORT_NAME: the session ends). A read-only rule serves the export
// with NBD_FLAG_READ_ONLY (writes fail with EPERM).
//
// Memory: nothing is allocated from a length a client sent before checking
// it against a fixed bound (option payloads <= kMaxOptionLength, request
// payloads <= kMaxPayload), and at most ConnectionOptions::workers requests
// are held at once. WRITE payloads and READ reply buffers are reserved from
// ConnectionOptions::buffers (server-wide) before they are allocated: a
// reader waits (backpressure) while it is exhausted. A reservation is held at
// most io_timeout waiting on the client (a WRITE payload not fully received
// in time, or a reply the client does not take in time, ends the connection
// and gives the reservation back). A connection keeps at most
// kMaxDirtyBitmapContexts dirty maps, each bounded by the export that built
// it (kMaxDirtyRuns runs: 16 MiB).
//
// Threads: Run()'s thread serves; more workers (up to `workers`) are started
// lazily, only when every thread of the connection is busy with a request,
// and each takes a slot of ConnectionOptions::threads (server-wide) first.
// No slot or a refused thread only means less concurrency.
//
// Limits: the whole handshake must finish within handshake_timeout, and a
// connection in transmission with no request for idle_timeout is closed.
// ConnectionOptions::gate admits a GO/EXPORT_NAME to an export (the
// per-export connection limit); a refused GO gets NBD_REP_ERR_POLICY with the
// reason, a refused EXPORT_NAME ends the session (no error reply exists).
// ConnectionOptions::refuse makes the connection a refusal: every option gets
// NBD_REP_ERR_POLICY with that text (the server-wide connection limit).
//
// Client-visible error text is generic ("no export named 'X'", "export 'X'
// could not be opened; see the server log", "I/O error; see the server
// log"): the detail (store paths, engine messages) goes to the log only.
// Refused options and requests are logged at info level: the first
// kMaxLoggedRefusals per connection, then a count at disconnect.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "nbd/access.h"
#include "nbd/export.h"
#include "nbd/protocol.h"
#include "nbd/tls.h"
#include "nbd/transport.h"
#include "util/mutex.h"
#include "util/status.h"
#include "util/thread_annotations.h"

namespace hbiss::nbd {

inline constexpr uint32_t kMinBlockSize = 1;
inline constexpr uint32_t kPreferredBlockSize = 4096;
inline constexpr uint32_t kMaxPayload = 32u << 20;
// Option payloads above this end the connection (no valid option is close).
inline constexpr uint32_t kMaxOptionLength = 64u << 10;
// A WRITE longer than kMaxPayload but at most this long has its payload read
// and discarded (bounded buffer) and fails with EINVAL; a longer one ends the
// connection, as the spec allows for a denial-of-service length.
inline constexpr uint32_t kMaxDiscardLength = 64u << 20;
// BLOCK_STATUS answers at most this many extents, covering at most this many
// bytes; clients ask again for the rest.
inline constexpr size_t kMaxExtentsPerReply = 1u << 16;
inline constexpr uint64_t kMaxBlockStatusQuery = 1ull << 30;
// The context id this server gives base:allocation.
inline constexpr uint32_t kBaseAllocationId = 1;
// The first dirty-bitmap context's id; the others follow it.
inline constexpr uint32_t kFirstDirtyBitmapId = 2;
// Dirty bitmaps one connection may select (each holds a DirtyMap of up to
// kMaxDirtyRuns runs while it is served).
inline constexpr size_t kMaxDirtyBitmapContexts = 4;
// What one worker thread costs (its stack as far as touched, its allocator
// arena): hbiss serve sizes the server-wide worker cap (ThreadBudget) so
// that the cap's cost comes out of the memory budget (doc/memory.md).
inline constexpr uint64_t kWorkerThreadCharge = 256u << 10;

// Refused options and requests logged one by one per connection; the rest
// are counted and the count logged at disconnect.
inline constexpr uint32_t kMaxLoggedRefusals = 10;

// A server-wide bound on the bytes held in request payloads and reply
// buffers. A request larger than the capacity is granted when nothing else
// is held (one at a time), so any valid request makes progress. Thread-safe.
class BufferBudget {
 public:
  explicit BufferBudget(uint64_t capacity) : capacity_(capacity) {}
  BufferBudget(const BufferBudget&) = delete;
  BufferBudget& operator=(const BufferBudget&) = delete;

  // Takes `bytes`, waiting until `deadline` for them; false if they did not
  // come free in time. Every true must be followed by Release(bytes).
  bool Acquire(uint64_t bytes, Clock::time_point deadline) EXCLUDES(mu_);
  void Release(uint64_t bytes) EXCLUDES(mu_);
  // Waiters see a larger capacity at once; a smaller one holds back new
  // reservations until enough are given back.
  void SetCapacity(uint64_t bytes) EXCLUDES(mu_);
  uint64_t capacity() EXCLUDES(mu_);
  uint64_t used() EXCLUDES(mu_);
  uint64_t peak() EXCLUDES(mu_);

 private:
  Mutex mu_;
  CondVar cv_;
  uint64_t capacity_ GUARDED_BY(mu_);
  uint64_t used_ GUARDED_BY(mu_) = 0;
  uint64_t peak_ GUARDED_BY(mu_) = 0;
};

// A server-wide bound on connection worker threads beyond each connection's
// own. Thread-safe.
class ThreadBudget {
 public:
  explicit ThreadBudget(int limit) : limit_(limit) {}
  ThreadBudget(const ThreadBudget&) = delete;
  ThreadBudget& operator=(const ThreadBudget&) = delete;
  // Takes a slot if one is free; every true must be followed by Release().
  bool TryAcquire() {
    int n = used_.load();
    while (n < limit_.load()) {
      if (used_.compare_exchange_weak(n, n + 1)) return true;
    }
    return false;
  }
  void Release() { used_--; }
  void SetLimit(int limit) { limit_ = limit; }  // slots taken are kept
  int used() const { return used_.load(); }

 private:
  std::atomic<int> limit_;
  std::atomic<int> used_{0};
};

// Admits connections into exports (the server's per-export limit).
// Thread-safe.
class ExportGate {
 public:
  virtual ~ExportGate() = default;
  // Admits one more connection to export `name` (canonical): true, or false
  // with a client-visible reason in *why. Every true is followed by one
  // Leave(name) when that connection ends (or its GO fails).
  virtual bool Enter(const std::string& name, std::string* why) = 0;
  virtual void Leave(const std::string& name) = 0;
};

struct ConnectionOptions {
  bool read_only = false;  // serve every export read-only
  // Threads serving one connection, leader/follower: each reads a request,
  // runs it and replies, so at most this many requests (and payloads of at
  // most kMaxPayload each) are in flight. 1 is sequential and deterministic
  // (unit tests, the fuzz target).
  int workers = 8;
  uint32_t max_options = 256;  // options per handshake before hanging up
  std::string peer = "client";  // for logs
  // TLS (nbd/tls.h): kOn and kRequire need tls_creds. See "TLS" above.
  TlsMode tls = TlsMode::kOff;
  std::shared_ptr<const TlsCredentials> tls_creds;
  // The TLS handshake after STARTTLS must finish within this (0: no limit of
  // its own; a server-wide handshake timeout applies on top).
  int tls_handshake_timeout_ms = 10000;
  // Per-export access (nbd/access.h); null allows everything.
  std::shared_ptr<const AccessPolicy> access;
  ClientInfo client;  // the peer's address; the TLS identity is added after STARTTLS
  // The whole handshake (greeting to GO/EXPORT_NAME) must be done within
  // this; 0: no bound.
  std::chrono::milliseconds handshake_timeout{0};
  // Transmission: a connection that sends no request for this long, with
  // none in flight, is closed; 0: never.
  std::chrono::milliseconds idle_timeout{0};
  // A WRITE's payload must arrive, and a reply be taken by the client,
  // within this (see "Memory" above); 0: no bound.
  std::chrono::milliseconds io_timeout{30000};
  // Server-wide bounds shared by connections (see the file comment); null:
  // none. They must outlive the connection.
  BufferBudget* buffers = nullptr;
  ThreadBudget* threads = nullptr;
  ExportGate* gate = nullptr;
  // Non-empty: refuse the session (see "Limits"); the text is the reason.
  std::string refuse;
};

// What the transmission phase needs to know to validate a request.
struct TransmissionState {
  uint64_t size = 0;
  uint16_t eflags = 0;  // transmission flags sent to the client
  bool structured = false;
  bool base_allocation = false;
  uint32_t dirty_bitmaps = 0;  // qemu:dirty-bitmap contexts negotiated
};

// Checks a request against the negotiated state. Returns 0 when the export
// may execute it, else the NBD error to reply with, and sets *why. Rules, in
// order: unknown command or flag bits, EINVAL; a mutating command on a
// read-only export, EPERM; a flag not valid for the command (NO_HOLE and
// FAST_ZERO only on WRITE_ZEROES, DF only on READ with structured replies,
// REQ_ONE only on BLOCK_STATUS, FUA only if advertised, FAST_ZERO only if
// advertised), EINVAL; FLUSH with nonzero offset or length, EINVAL; a zero
// length, EINVAL; a range past the end, ENOSPC for WRITE and WRITE_ZEROES,
// else EINVAL; READ or WRITE longer than kMaxPayload, EINVAL (EOVERFLOW for a
// READ with structured replies); BLOCK_STATUS without a negotiated meta
// context, EINVAL.
// DISC is not validated (it always ends the connection).
uint32_t ValidateRequest(const Request& r, const TransmissionState& st, std::string* why);

// Maps an engine Status to an NBD error value.
uint32_t NbdErrorFromStatus(const Status& s);

class Connection {
 public:
  Connection(std::unique_ptr<Transport> transport, ExportProvider* provider,
             ConnectionOptions opts);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  // Runs the handshake and the transmission phase until the client
  // disconnects (ABORT, DISC or end of stream: OK), the stream breaks or
  // Shutdown() is called (an error saying why). Waits for every request in
  // flight before returning. Call once, from one thread.
  Status Run();

  // Makes Run() return promptly: blocked reads fail, requests in flight
  // finish, their replies may be lost. Thread-safe.
  void Shutdown();

  // The export chosen by the handshake, "" before that.
  const std::string& export_name() const { return export_name_; }
  // The TLS identity after STARTTLS ("" for none). Reader thread only.
  const std::string& tls_identity() const { return client_.identity; }
  uint64_t requests() const { return requests_.load(); }
  // Options and requests refused so far (each logged or counted).
  uint64_t refusals() const { return refusals_.load(); }
  // Threads that served the transmission phase, Run()'s included (after Run).
  int threads_used() const { return threads_used_.load(); }
  // The export being served, "" before the transmission phase. Unlike
  // export_name(), callable from any thread (status, metrics).
  std::string served_export() EXCLUDES(mu_);

 private:
  struct Work {
    Request req;
    std::unique_ptr<uint8_t[]> payload;  // WRITE data
  };

  Status Handshake(bool* go);
  Status SendOptReply(uint32_t option, uint32_t type, std::string_view data);
  Status SendOptError(uint32_t option, uint32_t type, std::string_view msg);
  Status HandleInfoOrGo(uint32_t option, std::string_view data, bool* go);
  Status HandleMetaContext(uint32_t option, std::string_view data);
  Status HandleExportName(std::string_view data);
  // NBD_OPT_STARTTLS: replies, then runs the TLS handshake.
  Status HandleStartTls(std::string_view data);
  // Describe() filtered by the access policy: a hidden export fails as a
  // missing one; a read-only rule marks the info read-only.
  Result<ExportInfo> DescribeAllowed(const std::string& name);
  // The maps of the dirty bitmaps selected for export `info` (none unless
  // SET_META_CONTEXT selected some for it), built by `exp`, in id order.
  Result<std::vector<std::shared_ptr<const DirtyMap>>> BuildDirtyMaps(const ExportInfo& info,
                                                                      Export* exp);
  Status EnterTransmission(const ExportInfo& info, std::shared_ptr<Export> exp,
                           std::vector<std::shared_ptr<const DirtyMap>> dirty);
  uint16_t TransmissionFlags(const ExportInfo& info) const;

  Status Transmission();
  void ServeLoop();
  // Ends the transmission phase with `why` as Run()'s result (first caller
  // wins) and shuts the transport down.
  void Stop(Status why) EXCLUDES(mu_);
  bool stopping() EXCLUDES(mu_);
  Status DiscardPayload(uint32_t length);
  // Logs a refused option or request at info level (the first
  // kMaxLoggedRefusals; then only counts it).
  void LogRefusal(std::string_view what, std::string_view why);
  // Takes `bytes` of opts_.buffers, waiting while they are exhausted; false
  // once the connection is stopping.
  bool Reserve(uint64_t bytes) EXCLUDES(mu_);
  void Unreserve(uint64_t bytes);
  // Starts one more worker if every thread is busy and the bounds allow.
  void MaybeAddWorker() EXCLUDES(mu_);
  // This thread's request no longer counts as busy (once per request).
  void NotBusy() EXCLUDES(mu_);
  // Runs a validated request and sends its reply; returns the send status.
  Status Execute(Work& w);

  Status SendSimple(uint64_t cookie, uint32_t error, const uint8_t* data, size_t len);
  Status SendError(const Request& r, uint32_t error, std::string_view msg);
  Status SendRead(const Request& r, const uint8_t* data);
  // Answers a validated BLOCK_STATUS: one chunk per negotiated context.
  Status BlockStatus(const Request& r);
  Status SendLocked(const struct iovec* iov, int n) EXCLUDES(write_mu_);

  // transport_ is the socket until STARTTLS, then a TlsTransport over it
  // (replaced by the reader thread during the handshake only); base_ is the
  // socket throughout, for Shutdown() from any thread.
  std::unique_ptr<Transport> transport_;
  Transport* const base_;
  TlsTransport* tls_ = nullptr;  // owned by transport_ once TLS is up
  ExportProvider* provider_;
  const ConnectionOptions opts_;
  ClientInfo client_;  // opts_.client plus the TLS identity

  // Handshake state (reader thread only).
  bool no_zeroes_ = false;
  bool structured_ = false;
  bool meta_base_ = false;                 // base:allocation selected
  std::vector<std::string> meta_bitmaps_;  // dirty bitmaps selected, in id order
  std::string meta_export_;  // canonical name the meta contexts were set for
  std::string export_name_;

  // Transmission state: fixed once transmission starts.
  std::shared_ptr<Export> export_;
  TransmissionState state_;
  // The selected dirty bitmaps' maps; dirty_[i] has id kFirstDirtyBitmapId + i.
  std::vector<std::shared_ptr<const DirtyMap>> dirty_;
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> refusals_{0};
  std::atomic<int> threads_used_{0};
  std::string gated_;  // the export opts_.gate admitted this connection to

  // transport_ has no GUARDED_BY: reads happen under read_mu_, writes under
  // write_mu_, and Shutdown() under neither (see Transport's thread rules).
  Mutex read_mu_ ACQUIRED_BEFORE(mu_);  // one thread reads a request (and payload) at a time
  Mutex write_mu_;                      // serializes replies on the transport

  Mutex mu_;
  bool stopping_ GUARDED_BY(mu_) = false;
  Status result_ GUARDED_BY(mu_);
  std::string served_export_ GUARDED_BY(mu_);
  // Extra transmission threads; Run()'s own thread is one more. Started by
  // any serving thread (MaybeAddWorker), joined by Run()'s thread once
  // stopping_ is set (after which none is started).
  std::vector<std::thread> workers_ GUARDED_BY(mu_);
  int threads_ GUARDED_BY(mu_) = 0;  // serving threads, Run()'s included
  int busy_ GUARDED_BY(mu_) = 0;     // of which running a request
};

}  // namespace hbiss::nbd
