// Hadoop wire codecs: IPC framing and DataTransferProtocol packets, as pure functions over
// bytes. Nothing here does I/O, so every parser is unit-tested with malformed input and fuzzed
// (hdfs/wire_fuzz.cc). Every parser bounds what it accepts and reports malformed input as
// Corruption; none allocates more than the bytes it was given.
//
// IPC (hadoop-common RpcHeader.proto, ProtobufRpcEngine2.proto):
//   connection preamble  "hrpc" | version 9 | service class 0 | auth protocol 0 (SIMPLE)
//   every later message  u32 BE length | varint-delimited protobuf messages...
//   call                 RpcRequestHeader | RequestHeader | request
//   response             RpcResponseHeader | response (only when status is SUCCESS)
// DataTransferProtocol (datatransfer.proto):
//   op                   u16 BE version 28 | op byte | varint-delimited Op*Proto
//   packet               u32 BE payload length (itself + checksums + data) | u16 BE header
//                        length | PacketHeader | one checksum (u32 BE) per chunk | data
#pragma once

#include <google/protobuf/message_lite.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "hdfs/proto/hadoop_wire.pb.h"
#include "util/status.h"

namespace hbiss::hdfs::wire {

// Limits on what a server may make us read or allocate.
inline constexpr uint32_t kMaxRpcFrame = 128u << 20;      // one IPC response
inline constexpr uint32_t kMaxPacketPayload = 16u << 20;  // checksums + data of one packet
inline constexpr uint16_t kMaxPacketHeader = 4096;
inline constexpr size_t kMaxDelimited = 1u << 20;  // a DataTransfer reply or ack message

inline constexpr uint16_t kDataTransferVersion = 28;
inline constexpr uint8_t kOpWriteBlock = 80;
inline constexpr uint8_t kOpReadBlock = 81;
inline constexpr uint8_t kOpTransferBlock = 86;
inline constexpr int32_t kConnectionContextCallId = -3;
inline constexpr uint8_t kIpcVersion = 9;

// Parses bytes into *msg and checks that every required field is present, without the
// error log protobuf writes for a message missing required fields. False when malformed.
bool ParseMessage(std::string_view bytes, google::protobuf::MessageLite* msg);

// Appends the varint length of msg's encoding, then the encoding.
void AppendDelimited(const google::protobuf::MessageLite& msg, std::string* out);

// Splits a varint-length-prefixed field off the front of *in into *body and advances *in.
// Corruption when the varint is malformed, the length exceeds max_len or the bytes are short.
Status TakeDelimited(std::string_view* in, std::string_view* body, size_t max_len);

// TakeDelimited, then parses the body into *msg (required fields must be present).
Status ParseDelimited(std::string_view* in, google::protobuf::MessageLite* msg,
                      size_t max_len = kMaxRpcFrame);

// The 7-byte IPC connection preamble.
std::string ConnectionPreamble();

// A framed IPC message: u32 BE total length, then each message varint-delimited.
std::string EncodeRpcFrame(std::initializer_list<const google::protobuf::MessageLite*> msgs);

// A parsed IPC response frame (the bytes after the u32 length). `body` points into the frame
// passed to ParseRpcResponse and holds the delimited response message's bytes (empty for
// ERROR and FATAL).
struct RpcResponse {
  pb::RpcResponseHeader header;
  std::string_view body;
};
Status ParseRpcResponse(std::string_view frame, RpcResponse* out);

// Maps a Java exception class and message from a server to a Status. The message reads
// "<SimpleClassName>: <first line of message>". FileNotFoundException -> NotFound,
// FileAlreadyExistsException -> AlreadyExists, quota errors -> NoSpace,
// AlreadyBeingCreatedException / RecoveryInProgressException -> Busy; transient server states
// (RetriableException, StandbyException, SafeModeException, NotReplicatedYetException,
// ...) -> retryable IOError; anything else -> IOError.
Status RemoteExceptionToStatus(std::string_view class_name, std::string_view message);

// A DataTransferProtocol op request.
std::string EncodeOp(uint8_t op, const google::protobuf::MessageLite& msg);

// The 6 fixed bytes in front of every packet.
struct PacketPrefix {
  uint32_t body_len;    // checksums + data (payload length minus its own 4 bytes)
  uint16_t header_len;  // PacketHeader bytes
};
Status ParsePacketPrefix(const uint8_t prefix[6], PacketPrefix* out);

// A parsed packet; checksums and data point into the buffers given to ParsePacket.
struct PacketView {
  pb::PacketHeader header;
  std::string_view checksums;  // 4 bytes per chunk
  std::string_view data;
};

// Parses the header and splits body (checksums + data) given the chunk size of the stream.
// Corruption when dataLen is negative, exceeds the body, or the checksum bytes do not match
// the chunk count; bytes_per_checksum must be > 0.
Status ParsePacket(std::string_view header, std::string_view body, uint32_t bytes_per_checksum,
                   PacketView* out);

// Verifies one checksum per bytes_per_checksum chunk of data. Corruption naming the chunk's
// offset (first_offset + chunk index * bytes_per_checksum) on a mismatch. CHECKSUM_NULL
// streams are rejected as NotSupported: hbiss never returns unverified data.
Status VerifyChunks(pb::ChecksumType type, uint32_t bytes_per_checksum,
                    std::string_view checksums, std::string_view data, uint64_t first_offset);

// Appends a whole write packet with CRC32C chunk checksums of data.
void EncodePacket(int64_t offset_in_block, int64_t seqno, bool last_in_block, bool sync,
                  std::string_view data, uint32_t bytes_per_checksum, std::string* out);

// The status a DataNode reported for node i of a PipelineAck (reply[i], or the low 4 bits
// of flag[i] when only flags are present). ERROR when neither holds index i.
pb::DtStatus AckStatus(const pb::PipelineAck& ack, int i);
int AckNodeCount(const pb::PipelineAck& ack);

}  // namespace hbiss::hdfs::wire
