#include "cluster/peer_wire.h"

#include <cstring>

#include "util/coding.h"

namespace hbiss::cluster {

Result<std::string> EncodeFrame(const google::protobuf::MessageLite& m) {
  const size_t n = m.ByteSizeLong();
  if (n == 0 || n > kMaxPayload) {
    return Status::InvalidArgument("peer message of " + std::to_string(n) +
                                   " bytes: must be 1 to " + std::to_string(kMaxPayload));
  }
  std::string out(kFrameHeaderSize + n, '\0');
  auto* p = reinterpret_cast<uint8_t*>(out.data());
  std::memcpy(p, kPeerMagic, 4);
  EncodeBE32(p + 4, uint32_t(n));
  if (!m.SerializeToArray(p + kFrameHeaderSize, int(n))) {
    return Status::InvalidArgument("peer message does not serialize (a required field unset?)");
  }
  return out;
}

Result<uint32_t> DecodeFrameHeader(std::span<const uint8_t, kFrameHeaderSize> header) {
  if (std::memcmp(header.data(), kPeerMagic, 4) != 0) {
    return Status::Corruption("not an hbiss peer frame (bad magic)");
  }
  const uint32_t n = DecodeBE32(header.data() + 4);
  if (n == 0 || n > kMaxPayload) {
    return Status::Corruption("peer frame of " + std::to_string(n) + " bytes: must be 1 to " +
                              std::to_string(kMaxPayload));
  }
  return n;
}

namespace {

Status CheckName(const std::string& s, const char* what) {
  if (s.empty() || s.size() > kMaxNameBytes) {
    return Status::InvalidArgument(std::string("peer request: ") + what + " must be 1 to " +
                                   std::to_string(kMaxNameBytes) + " bytes");
  }
  return Status::OK();
}

}  // namespace

Status ParseRequest(std::span<const uint8_t> payload, pb::Request* out) {
  out->Clear();
  if (!out->ParseFromArray(payload.data(), int(payload.size()))) {
    return Status::Corruption("peer request does not parse");
  }
  if (!out->has_type() || !pb::Request::Type_IsValid(out->type())) {
    return Status::InvalidArgument("peer request of unknown type");
  }
  if (!out->has_id()) return Status::InvalidArgument("peer request without an id");
  if (out->has_from_server() && out->from_server().size() > kMaxNameBytes) {
    return Status::InvalidArgument("peer request: from_server longer than " +
                                   std::to_string(kMaxNameBytes) + " bytes");
  }
  if (out->type() == pb::Request::RELEASE || out->type() == pb::Request::SYNC) {
    HBISS_RETURN_IF_ERROR(CheckName(out->volume(), "volume"));
    if (!out->has_epoch()) return Status::InvalidArgument("peer request without an epoch");
  }
  if (out->type() >= pb::Request::SNAP_CREATE && out->type() <= pb::Request::SNAP_ROLLBACK) {
    HBISS_RETURN_IF_ERROR(CheckName(out->volume(), "volume"));
    // A trash purge names no snapshot (it deletes whatever no clone uses).
    const bool purge = out->type() == pb::Request::SNAP_REMOVE && out->purge_trash();
    if (!purge || !out->snap().empty()) HBISS_RETURN_IF_ERROR(CheckName(out->snap(), "snap"));
    if (out->type() == pb::Request::SNAP_RENAME) {
      HBISS_RETURN_IF_ERROR(CheckName(out->new_name(), "new_name"));
    }
  }
  if (out->type() == pb::Request::FLATTEN || out->type() == pb::Request::FLATTEN_STATUS) {
    HBISS_RETURN_IF_ERROR(CheckName(out->volume(), "volume"));
  }
  if (out->type() == pb::Request::FLATTEN_STATUS && !out->has_job()) {
    return Status::InvalidArgument("FLATTEN_STATUS without a job");
  }
  return Status::OK();
}

Status ParseReply(std::span<const uint8_t> payload, pb::Reply* out) {
  out->Clear();
  if (!out->ParseFromArray(payload.data(), int(payload.size()))) {
    return Status::Corruption("peer reply does not parse");
  }
  if (!out->has_id()) return Status::InvalidArgument("peer reply without an id");
  if (!out->has_code() || !pb::Reply::Code_IsValid(out->code())) {
    return Status::InvalidArgument("peer reply with an unknown code");
  }
  return Status::OK();
}

}  // namespace hbiss::cluster
