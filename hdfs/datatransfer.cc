#include "hdfs/datatransfer.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "hdfs/wire.h"
#include "util/coding.h"
#include "util/thread.h"

namespace hbiss::hdfs {

namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

constexpr int kHeartbeatMs = 15000;

}  // namespace

std::string DatanodeName(const pb::DatanodeInfo& dn) {
  return fmt::format("{}:{}", dn.id().ip_addr(), dn.id().xfer_port());
}

Status ReadDelimited(Socket* sock, google::protobuf::MessageLite* msg, size_t max_len) {
  uint64_t len = 0;
  for (int i = 0;; i++) {
    if (i == 5) return Status::Corruption("malformed length prefix");
    uint8_t b;
    HBISS_RETURN_IF_ERROR(sock->ReadFull(&b, 1));
    len |= uint64_t(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) break;
  }
  if (len > max_len) {
    return Status::Corruption(fmt::format("{} of {} bytes exceeds limit {}", msg->GetTypeName(),
                                          len, max_len));
  }
  std::string body(len, '\0');
  HBISS_RETURN_IF_ERROR(sock->ReadFull(body.data(), len));
  if (!wire::ParseMessage(body, msg)) {
    return Status::Corruption(fmt::format("malformed {}", msg->GetTypeName()));
  }
  return Status::OK();
}

namespace {

Status CheckOpResponse(const pb::BlockOpResponse& r, const std::string& what) {
  if (r.status() == pb::SUCCESS) return Status::OK();
  std::string msg = fmt::format("{}: DataNode replied {}{}{}", what, pb::DtStatus_Name(r.status()),
                                r.has_message() ? ": " : "", r.message());
  if (r.status() == pb::ERROR_CHECKSUM) return Status::Corruption(msg);
  return Status::IOError(msg, true);
}

}  // namespace

Result<std::unique_ptr<BlockReader>> BlockReader::Open(const std::string& client_name,
                                                       const pb::LocatedBlock& lb,
                                                       const pb::DatanodeInfo& dn, uint64_t offset,
                                                       uint64_t len, int timeout_ms) {
  std::string name = DatanodeName(dn);
  auto sock = Socket::Connect(dn.id().ip_addr(), uint16_t(dn.id().xfer_port()),
                              std::min(timeout_ms, 10000), timeout_ms);
  if (!sock.ok()) return sock.status().WithContext(fmt::format("DataNode {}", name));
  auto r = std::unique_ptr<BlockReader>(new BlockReader());
  r->sock_ = std::move(sock).value();
  r->context_ = fmt::format("read of block {} from DataNode {}", lb.b().block_id(), name);
  r->block_id_ = lb.b().block_id();
  r->end_ = offset + len;
  Status st = r->Start(client_name, lb, offset, len);
  if (!st.ok()) return st.WithContext(r->context_);
  return r;
}

Status BlockReader::Start(const std::string& client_name, const pb::LocatedBlock& lb,
                          uint64_t offset, uint64_t len) {
  pb::OpReadBlock op;
  auto* base = op.mutable_header()->mutable_base_header();
  *base->mutable_block() = lb.b();
  *base->mutable_token() = lb.block_token();
  op.mutable_header()->set_client_name(client_name);
  op.set_offset(offset);
  op.set_len(len);
  op.set_send_checksums(true);
  std::string req = wire::EncodeOp(wire::kOpReadBlock, op);
  HBISS_RETURN_IF_ERROR(sock_->WriteAll(req.data(), req.size()));

  pb::BlockOpResponse resp;
  HBISS_RETURN_IF_ERROR(ReadDelimited(sock_.get(), &resp, wire::kMaxDelimited));
  HBISS_RETURN_IF_ERROR(CheckOpResponse(resp, "READ_BLOCK"));
  if (!resp.has_read_op_checksum_info()) {
    return Status::Corruption("READ_BLOCK reply has no checksum info");
  }
  const auto& ci = resp.read_op_checksum_info();
  bpc_ = ci.checksum().bytes_per_checksum();
  type_ = ci.checksum().type();
  if (bpc_ == 0 || bpc_ > wire::kMaxPacketPayload) {
    return Status::Corruption(fmt::format("bytes per checksum {} out of range", bpc_));
  }
  // The stream starts at the chunk boundary at or before `offset`.
  stream_pos_ = ci.chunk_offset();
  if (stream_pos_ > offset || offset - stream_pos_ >= bpc_) {
    return Status::Corruption(
        fmt::format("READ_BLOCK starts at {} for a read at {}", stream_pos_, offset));
  }
  pos_ = offset;
  return Status::OK();
}

Status BlockReader::Need(size_t n) {
  if (wpos_ - rpos_ >= n) return Status::OK();
  if (rpos_ > 0) {  // compact: keep only the unread bytes
    std::memmove(buf_.data(), buf_.data() + rpos_, wpos_ - rpos_);
    wpos_ -= rpos_;
    rpos_ = 0;
  }
  // n is bounded by the packet limits checked before calling.
  if (buf_.size() < std::max<size_t>(n, 256 * 1024)) buf_.resize(std::max<size_t>(n, 256 * 1024));
  while (wpos_ < n) {
    HBISS_ASSIGN_OR_RETURN(size_t got, sock_->ReadSome(buf_.data() + wpos_, buf_.size() - wpos_));
    wpos_ += got;
  }
  return Status::OK();
}

Status BlockReader::NextPacket() {
  data_ = {};
  HBISS_RETURN_IF_ERROR(Need(6));
  wire::PacketPrefix pp;
  HBISS_RETURN_IF_ERROR(
      wire::ParsePacketPrefix(reinterpret_cast<const uint8_t*>(buf_.data() + rpos_), &pp));
  const size_t total = 6 + size_t(pp.header_len) + pp.body_len;
  HBISS_RETURN_IF_ERROR(Need(total));
  std::string_view header(buf_.data() + rpos_ + 6, pp.header_len);
  std::string_view body(buf_.data() + rpos_ + 6 + pp.header_len, pp.body_len);
  rpos_ += total;  // the views stay valid until the next Need()
  wire::PacketView pkt;
  HBISS_RETURN_IF_ERROR(wire::ParsePacket(header, body, bpc_, &pkt));
  if (pkt.header.last_packet_in_block() || pkt.data.empty()) {
    if (!pkt.data.empty()) return Status::Corruption("last packet carries data");
    at_end_ = true;
    return Status::OK();
  }
  if (uint64_t(pkt.header.offset_in_block()) != stream_pos_) {
    return Status::Corruption(fmt::format("packet at block offset {}, expected {}",
                                          pkt.header.offset_in_block(), stream_pos_));
  }
  HBISS_RETURN_IF_ERROR(wire::VerifyChunks(type_, bpc_, pkt.checksums, pkt.data, stream_pos_));
  data_ = pkt.data;
  data_pos_ = stream_pos_;
  stream_pos_ += pkt.data.size();
  return Status::OK();
}

Status BlockReader::ReadImpl(uint8_t* out, size_t n) {
  if (pos_ + n > end_) return Status::InvalidArgument("read past the requested range");
  while (n > 0) {
    if (pos_ >= data_pos_ + data_.size()) {
      if (at_end_) {
        return Status::IOError(fmt::format("replica ended at block offset {} before {}",
                                           stream_pos_, end_), true);
      }
      HBISS_RETURN_IF_ERROR(NextPacket());
      continue;
    }
    // pos_ >= data_pos_ always: the stream starts at or before it and is contiguous.
    size_t from = size_t(pos_ - data_pos_);
    size_t take = std::min(n, data_.size() - from);
    std::memcpy(out, data_.data() + from, take);
    out += take;
    n -= take;
    pos_ += take;
  }
  return Status::OK();
}

Status BlockReader::Read(uint8_t* out, size_t n) {
  Status st = ReadImpl(out, n);
  return st.ok() ? st : st.WithContext(context_);
}

Status BlockReader::Finish() {
  if (pos_ != end_) return Status::InvalidArgument("Finish before the end of the range");
  // The DataNode ends the range with an empty last packet.
  while (!at_end_) {
    Status st = NextPacket();
    if (!st.ok()) return st.WithContext(context_);
    if (!at_end_ && !data_.empty() && data_pos_ >= end_) {
      return Status::Corruption("DataNode sent more than was asked").WithContext(context_);
    }
  }
  pb::ClientReadStatus ok;
  ok.set_status(pb::CHECKSUM_OK);
  std::string msg;
  wire::AppendDelimited(ok, &msg);
  // The DataNode only logs a missing status; a failure here does not affect the data.
  (void)sock_->WriteAll(msg.data(), msg.size());
  return Status::OK();
}

Status ReadBlock(const std::string& client_name, const pb::LocatedBlock& lb,
                 const pb::DatanodeInfo& dn, uint64_t offset, uint64_t len, uint8_t* out,
                 int timeout_ms) {
  HBISS_ASSIGN_OR_RETURN(auto r, BlockReader::Open(client_name, lb, dn, offset, len, timeout_ms));
  HBISS_RETURN_IF_ERROR(r->Read(out, len));
  return r->Finish();
}

// ------------------------------------------------------------------------------- Pipeline

Result<std::unique_ptr<Pipeline>> Pipeline::Open(const PipelineSetup& s, int* bad_node) {
  *bad_node = 0;
  if (s.targets.empty()) return Status::InvalidArgument("write pipeline without targets");
  const auto& first = s.targets[0];
  std::string name = DatanodeName(first);
  auto sock_or = Socket::Connect(first.id().ip_addr(), uint16_t(first.id().xfer_port()),
                                 std::min(s.timeout_ms, 10000), s.timeout_ms);
  if (!sock_or.ok()) return sock_or.status().WithContext(fmt::format("DataNode {}", name));
  auto sock = std::move(sock_or).value();

  pb::OpWriteBlock op;
  auto* base = op.mutable_header()->mutable_base_header();
  *base->mutable_block() = s.block;
  *base->mutable_token() = s.token;
  op.mutable_header()->set_client_name(s.client_name);
  // The first target is the one we talk to; the rest are the downstream nodes it forwards to.
  for (size_t i = 1; i < s.targets.size(); i++) {
    *op.add_targets() = s.targets[i];
    op.add_target_storage_types(pb::DISK);
    if (i < s.storage_ids.size()) op.add_target_storage_ids(s.storage_ids[i]);
  }
  if (!s.storage_ids.empty()) op.set_storage_id(s.storage_ids[0]);
  op.set_stage(s.stage);
  op.set_pipeline_size(uint32_t(s.targets.size()));
  op.set_min_bytes_rcvd(s.min_bytes);
  op.set_max_bytes_rcvd(s.max_bytes);
  op.set_latest_generation_stamp(s.latest_gs);
  op.mutable_requested_checksum()->set_type(pb::CHECKSUM_CRC32C);
  op.mutable_requested_checksum()->set_bytes_per_checksum(s.bytes_per_checksum);
  op.set_storage_type(pb::DISK);
  std::string req = wire::EncodeOp(wire::kOpWriteBlock, op);
  Status st = sock->WriteAll(req.data(), req.size());
  pb::BlockOpResponse resp;
  if (st.ok()) st = ReadDelimited(sock.get(), &resp, wire::kMaxDelimited);
  if (st.ok() && resp.status() != pb::SUCCESS) {
    // firstBadLink names the downstream node that could not be reached.
    if (!resp.first_bad_link().empty()) {
      for (size_t i = 0; i < s.targets.size(); i++) {
        if (DatanodeName(s.targets[i]) == resp.first_bad_link()) *bad_node = int(i);
      }
    }
    st = CheckOpResponse(resp, "WRITE_BLOCK");
  }
  if (!st.ok()) {
    return st.WithContext(fmt::format("setting up the write pipeline of block {} at {}",
                                      s.block.block_id(), name));
  }
  std::unique_ptr<Pipeline> p(new Pipeline(s, std::move(sock)));
  Status started = p->StartResponder();
  if (!started.ok()) {
    *bad_node = -1;  // a local failure: every DataNode is fine
    return started;  // ~Pipeline closes the socket
  }
  return p;
}

Pipeline::Pipeline(const PipelineSetup& setup, std::unique_ptr<Socket> sock)
    : setup_(setup), sock_(std::move(sock)) {
  acked_bytes_ = setup.min_bytes;
  last_send_ms_ = NowMs();
}

Status Pipeline::StartResponder() {
  HBISS_ASSIGN_OR_RETURN(
      responder_, StartThread(fmt::format("hdfs pipeline responder (block {})",
                                          setup_.block.block_id()),
                              [this] { ResponderLoop(); }));
  return Status::OK();
}

Pipeline::~Pipeline() { Stop(); }

void Pipeline::Stop() {
  {
    MutexLock l(&mu_);
    stop_ = true;
    if (status_.ok()) status_ = Status::Aborted("pipeline closed");
    cv_.SignalAll();
  }
  sock_->Shutdown();
  if (responder_.joinable()) responder_.join();
}

void Pipeline::Fail(const Status& st, int bad_node) {
  if (status_.ok()) {
    status_ = st;
    bad_node_ = bad_node;
    spdlog::warn("hdfs: write pipeline of block {} failed (node {}): {}", setup_.block.block_id(),
                 bad_node, st.ToString());
  }
  cv_.SignalAll();
}

Status Pipeline::Send(PipelinePacket packet) {
  std::shared_ptr<const std::string> wire_bytes;
  {
    MutexLock l(&mu_);
    while (status_.ok() && int(unacked_.size()) >= setup_.max_in_flight) cv_.Wait(&mu_);
    unacked_.push_back(std::move(packet));
    if (!status_.ok()) return status_;
    wire_bytes = unacked_.back().wire;
    last_send_ms_ = NowMs();
  }
  // The packet cannot be popped before it is written: its ack cannot arrive earlier.
  MutexLock wl(&write_mu_);
  Status st = sock_->WriteAll(wire_bytes->data(), wire_bytes->size());
  if (!st.ok()) {
    MutexLock l(&mu_);
    Fail(st, 0);
    return status_;
  }
  return Status::OK();
}

Status Pipeline::WaitAllAcked() {
  MutexLock l(&mu_);
  while (status_.ok() && !unacked_.empty()) cv_.Wait(&mu_);
  // A DataNode closes the stream after acknowledging the last packet of a block; that
  // close is not a failure once everything is acknowledged.
  return unacked_.empty() ? Status::OK() : status_;
}

Status Pipeline::status() const {
  MutexLock l(&mu_);
  return status_;
}

int Pipeline::bad_node() const {
  MutexLock l(&mu_);
  return bad_node_ < 0 ? 0 : bad_node_;
}

uint64_t Pipeline::acked_bytes() const {
  MutexLock l(&mu_);
  return acked_bytes_;
}

std::deque<PipelinePacket> Pipeline::TakeUnacked() {
  Stop();
  MutexLock l(&mu_);
  return std::move(unacked_);
}

void Pipeline::ResponderLoop() {
  const int n = int(setup_.targets.size());
  int64_t last_ack_ms = NowMs();
  for (;;) {
    {
      MutexLock l(&mu_);
      if (stop_ || !status_.ok()) return;
    }
    if (!sock_->WaitReadable(1000)) {
      int64_t now = NowMs();
      bool send_heartbeat = false;
      {
        MutexLock l(&mu_);
        if (unacked_.empty()) {
          last_ack_ms = now;
          send_heartbeat = now - last_send_ms_ >= kHeartbeatMs;
        } else if (now - last_ack_ms > setup_.timeout_ms) {
          Fail(Status::IOError(fmt::format("no ack from the pipeline within {} ms",
                                           setup_.timeout_ms), true), 0);
          return;
        }
      }
      if (send_heartbeat) {
        std::string hb;
        wire::EncodePacket(0, -1, false, false, {}, setup_.bytes_per_checksum, &hb);
        MutexLock wl(&write_mu_);
        Status st = sock_->WriteAll(hb.data(), hb.size());
        MutexLock l(&mu_);
        if (!st.ok()) {
          Fail(st, 0);
          return;
        }
        last_send_ms_ = NowMs();
      }
      continue;
    }
    pb::PipelineAck ack;
    Status st = ReadDelimited(sock_.get(), &ack, wire::kMaxDelimited);
    MutexLock l(&mu_);
    if (stop_) return;
    if (!st.ok()) {
      Fail(st.WithContext("reading pipeline ack"), 0);
      return;
    }
    last_ack_ms = NowMs();
    int replies = wire::AckNodeCount(ack);
    for (int i = 0; i < n; i++) {
      pb::DtStatus s = i < replies ? wire::AckStatus(ack, i) : pb::SUCCESS;
      if (s != pb::SUCCESS) {
        Fail(Status::IOError(fmt::format("DataNode {} ({}) acked {} with {}", i,
                                         DatanodeName(setup_.targets[i]), ack.seqno(),
                                         pb::DtStatus_Name(s)), true), i);
        return;
      }
    }
    if (ack.seqno() == -1) continue;  // heartbeat
    if (unacked_.empty() || unacked_.front().seqno != ack.seqno()) {
      Fail(Status::Corruption(fmt::format("unexpected ack for seqno {}", ack.seqno())), 0);
      return;
    }
    acked_bytes_ = std::max(acked_bytes_, unacked_.front().data_end);
    bool last = unacked_.front().last_in_block;
    unacked_.pop_front();
    cv_.SignalAll();
    if (last) return;  // the block is finalized; the DataNode closes the stream
  }
}

}  // namespace hbiss::hdfs
