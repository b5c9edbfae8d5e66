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
// Memory: nothing is allocated from a length a client sent before checking
// it against a fixed bound (option payloads <= kMaxOptionLength, request
// payloads <= kMaxPayload), and at most ConnectionOptions::workers requests
// are held at once. A connection keeps at most kMaxDirtyBitmapContexts dirty
// maps, each bounded by the export that built it (kMaxDirtyRuns runs: 16 MiB).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "nbd/export.h"
#include "nbd/protocol.h"
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

struct ConnectionOptions {
  bool read_only = false;  // serve every export read-only
  // Threads serving one connection, leader/follower: each reads a request,
  // runs it and replies, so at most this many requests (and payloads of at
  // most kMaxPayload each) are in flight. 1 is sequential and deterministic
  // (unit tests, the fuzz target).
  int workers = 8;
  uint32_t max_options = 256;  // options per handshake before hanging up
  std::string peer = "client";  // for logs
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
  uint64_t requests() const { return requests_.load(); }
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
  // Runs a validated request and sends its reply; returns the send status.
  Status Execute(Work& w);

  Status SendSimple(uint64_t cookie, uint32_t error, const uint8_t* data, size_t len);
  Status SendError(const Request& r, uint32_t error, std::string_view msg);
  Status SendRead(const Request& r, const uint8_t* data);
  // Answers a validated BLOCK_STATUS: one chunk per negotiated context.
  Status BlockStatus(const Request& r);
  Status SendLocked(const struct iovec* iov, int n) EXCLUDES(write_mu_);

  std::unique_ptr<Transport> transport_;
  ExportProvider* provider_;
  const ConnectionOptions opts_;

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

  // transport_ has no GUARDED_BY: reads happen under read_mu_, writes under
  // write_mu_, and Shutdown() under neither (see Transport's thread rules).
  Mutex read_mu_ ACQUIRED_BEFORE(mu_);  // one thread reads a request (and payload) at a time
  Mutex write_mu_;                      // serializes replies on the transport

  Mutex mu_;
  bool stopping_ GUARDED_BY(mu_) = false;
  Status result_ GUARDED_BY(mu_);
  std::string served_export_ GUARDED_BY(mu_);
  // Extra transmission threads; Run()'s own thread is one more. Started
  // and joined by Run()'s thread only.
  std::vector<std::thread> workers_;
};

}  // namespace hbiss::nbd
