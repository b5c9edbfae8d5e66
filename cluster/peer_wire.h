// The frame around the peer messages of cluster/peer.proto (doc/ownership.md):
//
//   offset size  field
//   0      4     magic "HBPW" (0x48 0x42 0x50 0x57)
//   4      4     payload length N, big-endian, 1 .. kMaxPayload
//   8      N     a serialized pb::Request (client to server) or pb::Reply
//
// One request and its reply at a time per connection; a reply carries the
// request's id. Pure functions, thread-compatible.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "cluster/peer.pb.h"
#include "util/status.h"

namespace hbiss::cluster {

inline constexpr uint8_t kPeerMagic[4] = {'H', 'B', 'P', 'W'};
inline constexpr size_t kFrameHeaderSize = 8;
inline constexpr uint32_t kMaxPayload = 64 << 10;
// Longest volume or server name a peer accepts (volume names are at most
// 128 bytes, doc/volume_meta.md).
inline constexpr size_t kMaxNameBytes = 255;

// The header and payload of one frame holding `m`. InvalidArgument if m
// serializes to more than kMaxPayload bytes.
Result<std::string> EncodeFrame(const google::protobuf::MessageLite& m);

// The payload length announced by a frame header. Corruption for a wrong
// magic, or a length of 0 or more than kMaxPayload.
Result<uint32_t> DecodeFrameHeader(std::span<const uint8_t, kFrameHeaderSize> header);

// Parses and checks a request payload: a known type, an id, and a volume
// name (1..kMaxNameBytes) for RELEASE and SYNC. Corruption for bytes that do
// not parse, InvalidArgument for a message that breaks those rules.
Status ParseRequest(std::span<const uint8_t> payload, pb::Request* out);

// Parses and checks a reply payload: an id and a known code. Corruption or
// InvalidArgument as for ParseRequest.
Status ParseReply(std::span<const uint8_t> payload, pb::Reply* out);

}  // namespace hbiss::cluster
