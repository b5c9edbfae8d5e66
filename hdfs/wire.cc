#include "hdfs/wire.h"

#include <isa-l/crc.h>

#include <fmt/format.h>

#include "util/coding.h"
#include "util/crc32c.h"

namespace hbiss::hdfs::wire {

bool ParseMessage(std::string_view bytes, google::protobuf::MessageLite* msg) {
  return msg->ParsePartialFromArray(bytes.data(), int(bytes.size())) && msg->IsInitialized();
}

void AppendDelimited(const google::protobuf::MessageLite& msg, std::string* out) {
  PutVarint64(out, msg.ByteSizeLong());
  msg.AppendToString(out);
}

Status TakeDelimited(std::string_view* in, std::string_view* body, size_t max_len) {
  std::string_view rest = *in;
  uint64_t len = 0;
  if (!GetVarint64(&rest, &len)) return Status::Corruption("malformed length prefix");
  if (len > max_len) {
    return Status::Corruption(fmt::format("message length {} exceeds limit {}", len, max_len));
  }
  if (len > rest.size()) {
    return Status::Corruption(
        fmt::format("message length {} exceeds the {} bytes available", len, rest.size()));
  }
  *body = rest.substr(0, len);
  rest.remove_prefix(len);
  *in = rest;
  return Status::OK();
}

Status ParseDelimited(std::string_view* in, google::protobuf::MessageLite* msg, size_t max_len) {
  std::string_view body;
  HBISS_RETURN_IF_ERROR(TakeDelimited(in, &body, max_len));
  if (!ParseMessage(body, msg)) {
    return Status::Corruption(fmt::format("malformed {} message", msg->GetTypeName()));
  }
  return Status::OK();
}

std::string ConnectionPreamble() {
  std::string s = "hrpc";
  s.push_back(char(kIpcVersion));
  s.push_back(char(0));  // service class
  s.push_back(char(0));  // auth protocol: NONE (SIMPLE, no SASL)
  return s;
}

std::string EncodeRpcFrame(std::initializer_list<const google::protobuf::MessageLite*> msgs) {
  std::string out(4, '\0');
  for (const auto* m : msgs) AppendDelimited(*m, &out);
  EncodeBE32(reinterpret_cast<uint8_t*>(out.data()), uint32_t(out.size() - 4));
  return out;
}

Status ParseRpcResponse(std::string_view frame, RpcResponse* out) {
  std::string_view in = frame;
  HBISS_RETURN_IF_ERROR(ParseDelimited(&in, &out->header, kMaxRpcFrame));
  out->body = {};
  if (out->header.status() == pb::RpcResponseHeader::SUCCESS) {
    HBISS_RETURN_IF_ERROR(TakeDelimited(&in, &out->body, kMaxRpcFrame));
  }
  return Status::OK();
}

namespace {

std::string_view SimpleName(std::string_view cls) {
  size_t dot = cls.rfind('.');
  return dot == std::string_view::npos ? cls : cls.substr(dot + 1);
}

std::string_view FirstLine(std::string_view msg) {
  size_t nl = msg.find('\n');
  return nl == std::string_view::npos ? msg : msg.substr(0, nl);
}

}  // namespace

Status RemoteExceptionToStatus(std::string_view class_name, std::string_view message) {
  std::string_view simple = SimpleName(class_name);
  std::string text = fmt::format("{}: {}", simple, FirstLine(message));
  if (simple == "FileNotFoundException") return Status::NotFound(text);
  if (simple == "FileAlreadyExistsException") return Status::AlreadyExists(text);
  if (simple == "DSQuotaExceededException" || simple == "NSQuotaExceededException" ||
      simple == "QuotaExceededException") {
    return Status::NoSpace(text);
  }
  if (simple == "AlreadyBeingCreatedException" || simple == "RecoveryInProgressException") {
    return Status::Busy(text, true);
  }
  if (simple == "ParentNotDirectoryException" || simple == "InvalidPathException" ||
      simple == "PathIsNotEmptyDirectoryException" || simple == "HadoopIllegalArgumentException" ||
      simple == "IllegalArgumentException") {
    return Status::InvalidArgument(text);
  }
  static constexpr std::string_view kRetryable[] = {
      "RetriableException",       "StandbyException",          "SafeModeException",
      "NotReplicatedYetException", "ObserverRetryOnActiveException",
      "ServerTooBusyException",   "RetryPolicyFailedException"};
  for (std::string_view r : kRetryable) {
    if (simple == r) return Status::IOError(text, true);
  }
  return Status::IOError(text);
}

std::string EncodeOp(uint8_t op, const google::protobuf::MessageLite& msg) {
  std::string out(3, '\0');
  EncodeBE16(reinterpret_cast<uint8_t*>(out.data()), kDataTransferVersion);
  out[2] = char(op);
  AppendDelimited(msg, &out);
  return out;
}

Status ParsePacketPrefix(const uint8_t prefix[6], PacketPrefix* out) {
  uint32_t payload_len = DecodeBE32(prefix);
  uint16_t header_len = DecodeBE16(prefix + 4);
  if (payload_len < 4) return Status::Corruption(fmt::format("packet length {} < 4", payload_len));
  if (payload_len - 4 > kMaxPacketPayload) {
    return Status::Corruption(fmt::format("packet length {} exceeds limit", payload_len));
  }
  if (header_len == 0 || header_len > kMaxPacketHeader) {
    return Status::Corruption(fmt::format("packet header length {} out of range", header_len));
  }
  out->body_len = payload_len - 4;
  out->header_len = header_len;
  return Status::OK();
}

Status ParsePacket(std::string_view header, std::string_view body, uint32_t bytes_per_checksum,
                   PacketView* out) {
  if (bytes_per_checksum == 0) return Status::Corruption("bytes per checksum is 0");
  if (!ParseMessage(header, &out->header)) {
    return Status::Corruption("malformed packet header");
  }
  int32_t data_len = out->header.data_len();
  if (data_len < 0 || uint32_t(data_len) > body.size()) {
    return Status::Corruption(
        fmt::format("packet data length {} does not fit its {} body bytes", data_len, body.size()));
  }
  uint64_t chunks = (uint64_t(data_len) + bytes_per_checksum - 1) / bytes_per_checksum;
  if (chunks * 4 != body.size() - uint32_t(data_len)) {
    return Status::Corruption(fmt::format("packet has {} checksum bytes for {} data bytes",
                                          body.size() - uint32_t(data_len), data_len));
  }
  if (out->header.offset_in_block() < 0) return Status::Corruption("negative packet offset");
  out->checksums = body.substr(0, chunks * 4);
  out->data = body.substr(chunks * 4);
  return Status::OK();
}

Status VerifyChunks(pb::ChecksumType type, uint32_t bytes_per_checksum,
                    std::string_view checksums, std::string_view data, uint64_t first_offset) {
  if (type != pb::CHECKSUM_CRC32C && type != pb::CHECKSUM_CRC32) {
    return Status::NotSupported("block has no checksums; refusing unverified data");
  }
  if (bytes_per_checksum == 0) return Status::Corruption("bytes per checksum is 0");
  size_t chunks = (data.size() + bytes_per_checksum - 1) / bytes_per_checksum;
  if (checksums.size() != chunks * 4) return Status::Corruption("checksum count mismatch");
  const auto* sums = reinterpret_cast<const uint8_t*>(checksums.data());
  for (size_t i = 0; i < chunks; i++) {
    std::string_view chunk = data.substr(i * bytes_per_checksum, bytes_per_checksum);
    uint32_t crc = type == pb::CHECKSUM_CRC32C
                       ? crc32c::Value(chunk.data(), chunk.size())
                       : crc32_gzip_refl(0, reinterpret_cast<const unsigned char*>(chunk.data()),
                                         chunk.size());
    if (crc != DecodeBE32(sums + 4 * i)) {
      return Status::Corruption(fmt::format("checksum mismatch in chunk at block offset {}",
                                            first_offset + i * bytes_per_checksum));
    }
  }
  return Status::OK();
}

void EncodePacket(int64_t offset_in_block, int64_t seqno, bool last_in_block, bool sync,
                  std::string_view data, uint32_t bytes_per_checksum, std::string* out) {
  pb::PacketHeader h;
  h.set_offset_in_block(offset_in_block);
  h.set_seqno(seqno);
  h.set_last_packet_in_block(last_in_block);
  h.set_data_len(int32_t(data.size()));
  if (sync) h.set_sync_block(true);
  size_t chunks = (data.size() + bytes_per_checksum - 1) / bytes_per_checksum;
  size_t header_len = h.ByteSizeLong();
  size_t start = out->size();
  out->resize(start + 6 + header_len + chunks * 4);
  auto* p = reinterpret_cast<uint8_t*>(out->data() + start);
  EncodeBE32(p, uint32_t(4 + chunks * 4 + data.size()));
  EncodeBE16(p + 4, uint16_t(header_len));
  h.SerializeWithCachedSizesToArray(p + 6);
  uint8_t* sums = p + 6 + header_len;
  for (size_t i = 0; i < chunks; i++) {
    std::string_view chunk = data.substr(i * bytes_per_checksum, bytes_per_checksum);
    EncodeBE32(sums + 4 * i, crc32c::Value(chunk.data(), chunk.size()));
  }
  out->append(data);
}

int AckNodeCount(const pb::PipelineAck& ack) {
  return ack.reply_size() > 0 ? ack.reply_size() : ack.flag_size();
}

pb::DtStatus AckStatus(const pb::PipelineAck& ack, int i) {
  if (i < ack.reply_size()) return ack.reply(i);
  if (i < ack.flag_size()) {
    uint32_t s = ack.flag(i) & 0xF;
    if (pb::DtStatus_IsValid(int(s))) return pb::DtStatus(s);
  }
  return pb::ERROR;
}

}  // namespace hbiss::hdfs::wire
