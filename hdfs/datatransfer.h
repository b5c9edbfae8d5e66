// DataTransferProtocol streams to DataNodes: reading a byte range of one block replica with
// every chunk's checksum verified, and the write pipeline for one block.
//
// Thread safety: ReadBlock is a free function safe to call from many threads. A Pipeline is
// driven by one writer thread; its own responder thread reads acks.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "hdfs/proto/hadoop_wire.pb.h"
#include "util/socket.h"
#include "util/mutex.h"
#include "util/status.h"
#include "util/thread_annotations.h"

namespace hbiss::hdfs {

// Reads one varint-delimited message of at most max_len bytes from sock.
Status ReadDelimited(Socket* sock, google::protobuf::MessageLite* msg, size_t max_len);

// "ip:xferPort" of a DataNode.
std::string DatanodeName(const pb::DatanodeInfo& dn);

// A READ_BLOCK stream over block bytes [offset, offset + len) of one replica, read front to
// back in pieces of any size. Every chunk is verified before any of its bytes is returned.
// Used by one thread at a time.
class BlockReader {
 public:
  static Result<std::unique_ptr<BlockReader>> Open(const std::string& client_name,
                                                   const pb::LocatedBlock& lb,
                                                   const pb::DatanodeInfo& dn, uint64_t offset,
                                                   uint64_t len, int timeout_ms);
  BlockReader(const BlockReader&) = delete;
  BlockReader& operator=(const BlockReader&) = delete;

  // Reads the next n bytes. REQUIRES: position() + n <= end(). After an error the reader is
  // unusable.
  Status Read(uint8_t* out, size_t n);
  // After the whole range was read: consumes the end of the stream and sends CHECKSUM_OK.
  Status Finish();

  uint64_t block_id() const { return block_id_; }
  uint64_t position() const { return pos_; }  // block offset of the next byte Read returns
  uint64_t end() const { return end_; }

 private:
  BlockReader() = default;
  Status Start(const std::string& client_name, const pb::LocatedBlock& lb, uint64_t offset,
               uint64_t len);
  Status NextPacket();
  Status ReadImpl(uint8_t* out, size_t n);
  // Makes at least n unread bytes available in buf_[rpos_, wpos_), reading as much as the
  // socket has (few large reads instead of one per packet field).
  Status Need(size_t n);

  std::unique_ptr<Socket> sock_;
  std::string context_;
  uint64_t block_id_ = 0;
  pb::ChecksumType type_ = pb::CHECKSUM_CRC32C;
  uint32_t bpc_ = 512;
  uint64_t pos_ = 0;         // next byte to return
  uint64_t end_ = 0;         // end of the requested range
  uint64_t stream_pos_ = 0;  // block offset of the next byte the DataNode sends
  bool at_end_ = false;      // the last (empty) packet arrived
  std::string buf_;        // received bytes; [rpos_, wpos_) not yet parsed
  size_t rpos_ = 0, wpos_ = 0;
  std::string_view data_;  // verified data of the current packet, into buf_
  uint64_t data_pos_ = 0;  // block offset of data_[0]
};

// Reads block bytes [offset, offset + len) of lb's block from DataNode dn into out[0, len).
// Every chunk is verified against the checksums the DataNode stores; a mismatch is
// Corruption and no byte of a bad chunk is returned as good (out may hold partial data on
// error). Sends CHECKSUM_OK to the DataNode after a complete read. Errors name the DataNode.
// REQUIRES: offset + len <= the replica's length.
Status ReadBlock(const std::string& client_name, const pb::LocatedBlock& lb,
                 const pb::DatanodeInfo& dn, uint64_t offset, uint64_t len, uint8_t* out,
                 int timeout_ms);

// One packet of a block write, kept until every DataNode acknowledged it.
struct PipelinePacket {
  int64_t seqno = 0;
  bool last_in_block = false;
  uint64_t data_end = 0;  // offset in block just past this packet's data
  // The encoded packet (wire::EncodePacket). Shared so that the sender can keep writing it
  // while the responder drops an acknowledged packet from the queue.
  std::shared_ptr<const std::string> wire;
};

struct PipelineSetup {
  std::string client_name;
  pb::ExtendedBlock block;  // with the generation stamp the DataNodes currently hold
  pb::Token token;
  std::vector<pb::DatanodeInfo> targets;
  std::vector<std::string> storage_ids;  // per target, may be empty
  pb::OpWriteBlock::Stage stage = pb::OpWriteBlock::PIPELINE_SETUP_CREATE;
  uint64_t latest_gs = 0;
  uint64_t min_bytes = 0;  // bytes acknowledged so far (recovery)
  uint64_t max_bytes = 0;  // bytes sent so far (recovery)
  uint32_t bytes_per_checksum = 512;
  int timeout_ms = 60000;
  int max_in_flight = 80;
};

// The write pipeline of one block: client -> targets[0] -> targets[1] -> ...
class Pipeline {
 public:
  // Connects to targets[0], sends WRITE_BLOCK and waits for the pipeline to be set up. On
  // failure *bad_node is the index of the target to blame (from firstBadLink, else 0).
  // Then starts the pipeline's responder thread; if the OS refuses it, fails with a retryable
  // IOError, closes the connection and sets *bad_node to -1: no DataNode is to blame.
  static Result<std::unique_ptr<Pipeline>> Open(const PipelineSetup& setup, int* bad_node);

  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;
  // Stops the responder and closes the connection; unacked packets are dropped.
  ~Pipeline();

  // Queues the packet for acknowledgement and sends it; blocks while max_in_flight packets
  // are unacknowledged. After any failure of the pipeline every call fails; the packet is
  // still queued, so TakeUnacked() returns it for resending.
  Status Send(PipelinePacket packet) EXCLUDES(mu_, write_mu_);

  // Waits until every packet sent so far has been acknowledged by every DataNode.
  Status WaitAllAcked() EXCLUDES(mu_);

  // The failure of the pipeline, OK while healthy.
  Status status() const EXCLUDES(mu_);
  // After a failure: the index of the DataNode to blame (0 when the first one is unreachable
  // or unknown).
  int bad_node() const EXCLUDES(mu_);
  // Offset in block up to which every DataNode acknowledged.
  uint64_t acked_bytes() const EXCLUDES(mu_);
  // Stops the pipeline and returns the packets not yet acknowledged, oldest first.
  std::deque<PipelinePacket> TakeUnacked() EXCLUDES(mu_);

 private:
  explicit Pipeline(const PipelineSetup& setup, std::unique_ptr<Socket> sock);
  // Starts ResponderLoop on its own thread. Called once, by Open().
  Status StartResponder();
  void ResponderLoop() EXCLUDES(mu_, write_mu_);
  void Fail(const Status& st, int bad_node) REQUIRES(mu_);
  void Stop() EXCLUDES(mu_);

  const PipelineSetup setup_;
  std::unique_ptr<Socket> sock_;
  // Serializes writes to sock_ (writer thread and heartbeats).
  Mutex write_mu_ ACQUIRED_BEFORE(mu_);

  mutable Mutex mu_;
  CondVar cv_;  // signalled when unacked_ shrinks or status_ fails
  std::deque<PipelinePacket> unacked_ GUARDED_BY(mu_);
  Status status_ GUARDED_BY(mu_);
  int bad_node_ GUARDED_BY(mu_) = -1;
  uint64_t acked_bytes_ GUARDED_BY(mu_) = 0;
  bool stop_ GUARDED_BY(mu_) = false;
  int64_t last_send_ms_ GUARDED_BY(mu_) = 0;
  std::thread responder_;  // started by Open(), joined by Stop()
};

}  // namespace hbiss::hdfs
