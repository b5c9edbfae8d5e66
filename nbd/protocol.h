// Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md)
// and pure encode/decode helpers for its fixed-size messages. Every integer on
// the wire is big-endian. Nothing here does I/O, allocates from a length a
// peer sent, or keeps state, so it can be unit-tested and fuzzed directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace hbiss::nbd {

// --- Handshake -------------------------------------------------------------
inline constexpr uint64_t kNbdMagic = 0x4e42444d41474943ull;     // "NBDMAGIC"
inline constexpr uint64_t kIHaveOpt = 0x49484156454f5054ull;     // "IHAVEOPT"
inline constexpr uint64_t kOptReplyMagic = 0x0003e889045565a9ull;

// Handshake flags (server, 16 bits) and client flags (32 bits).
inline constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
inline constexpr uint16_t kFlagNoZeroes = 1 << 1;
inline constexpr uint32_t kClientFlagFixedNewstyle = 1 << 0;
inline constexpr uint32_t kClientFlagNoZeroes = 1 << 1;

// Options.
inline constexpr uint32_t kOptExportName = 1;
inline constexpr uint32_t kOptAbort = 2;
inline constexpr uint32_t kOptList = 3;
inline constexpr uint32_t kOptStartTls = 5;
inline constexpr uint32_t kOptInfo = 6;
inline constexpr uint32_t kOptGo = 7;
inline constexpr uint32_t kOptStructuredReply = 8;
inline constexpr uint32_t kOptListMetaContext = 9;
inline constexpr uint32_t kOptSetMetaContext = 10;

// Option reply types.
inline constexpr uint32_t kRepAck = 1;
inline constexpr uint32_t kRepServer = 2;
inline constexpr uint32_t kRepInfo = 3;
inline constexpr uint32_t kRepMetaContext = 4;
inline constexpr uint32_t kRepErrUnsup = 0x80000001u;
inline constexpr uint32_t kRepErrPolicy = 0x80000002u;
inline constexpr uint32_t kRepErrInvalid = 0x80000003u;
inline constexpr uint32_t kRepErrPlatform = 0x80000004u;
inline constexpr uint32_t kRepErrTlsReqd = 0x80000005u;
inline constexpr uint32_t kRepErrUnknown = 0x80000006u;
inline constexpr uint32_t kRepErrShutdown = 0x80000007u;
inline constexpr uint32_t kRepErrBlockSizeReqd = 0x80000008u;
inline constexpr uint32_t kRepErrTooBig = 0x80000009u;

// NBD_INFO_* types carried in NBD_REP_INFO.
inline constexpr uint16_t kInfoExport = 0;
inline constexpr uint16_t kInfoName = 1;
inline constexpr uint16_t kInfoDescription = 2;
inline constexpr uint16_t kInfoBlockSize = 3;

// Transmission flags (16 bits).
inline constexpr uint16_t kFlagHasFlags = 1 << 0;
inline constexpr uint16_t kFlagReadOnly = 1 << 1;
inline constexpr uint16_t kFlagSendFlush = 1 << 2;
inline constexpr uint16_t kFlagSendFua = 1 << 3;
inline constexpr uint16_t kFlagRotational = 1 << 4;
inline constexpr uint16_t kFlagSendTrim = 1 << 5;
inline constexpr uint16_t kFlagSendWriteZeroes = 1 << 6;
inline constexpr uint16_t kFlagSendDf = 1 << 7;
inline constexpr uint16_t kFlagCanMultiConn = 1 << 8;
inline constexpr uint16_t kFlagSendCache = 1 << 10;
inline constexpr uint16_t kFlagSendFastZero = 1 << 11;

// --- Transmission ----------------------------------------------------------
inline constexpr uint32_t kRequestMagic = 0x25609513u;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698u;
inline constexpr uint32_t kStructuredReplyMagic = 0x668e33efu;

// Commands.
inline constexpr uint16_t kCmdRead = 0;
inline constexpr uint16_t kCmdWrite = 1;
inline constexpr uint16_t kCmdDisc = 2;
inline constexpr uint16_t kCmdFlush = 3;
inline constexpr uint16_t kCmdTrim = 4;
inline constexpr uint16_t kCmdCache = 5;
inline constexpr uint16_t kCmdWriteZeroes = 6;
inline constexpr uint16_t kCmdBlockStatus = 7;

// Command flags.
inline constexpr uint16_t kCmdFlagFua = 1 << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1 << 1;
inline constexpr uint16_t kCmdFlagDf = 1 << 2;
inline constexpr uint16_t kCmdFlagReqOne = 1 << 3;
inline constexpr uint16_t kCmdFlagFastZero = 1 << 4;

// Structured reply flags and chunk types.
inline constexpr uint16_t kReplyFlagDone = 1 << 0;
inline constexpr uint16_t kReplyTypeNone = 0;
inline constexpr uint16_t kReplyTypeOffsetData = 1;
inline constexpr uint16_t kReplyTypeOffsetHole = 2;
inline constexpr uint16_t kReplyTypeBlockStatus = 5;
inline constexpr uint16_t kReplyTypeError = (1 << 15) + 1;
inline constexpr uint16_t kReplyTypeErrorOffset = (1 << 15) + 2;

// base:allocation status flags.
inline constexpr uint32_t kStateHole = 1 << 0;
inline constexpr uint32_t kStateZero = 1 << 1;
// qemu:dirty-bitmap:NAME status flag (QEMU docs/interop/nbd.rst).
inline constexpr uint32_t kStateDirty = 1 << 0;

// Error values (the spec's fixed set).
inline constexpr uint32_t kEPerm = 1;
inline constexpr uint32_t kEIo = 5;
inline constexpr uint32_t kENoMem = 12;
inline constexpr uint32_t kEInval = 22;
inline constexpr uint32_t kENoSpc = 28;
inline constexpr uint32_t kEOverflow = 75;
inline constexpr uint32_t kENotSup = 95;
inline constexpr uint32_t kEShutdown = 108;

inline constexpr std::string_view kBaseAllocation = "base:allocation";
// QEMU's namespace, and the prefix of its dirty-bitmap contexts
// (qemu:dirty-bitmap:NAME).
inline constexpr std::string_view kQemuNamespace = "qemu:";
inline constexpr std::string_view kDirtyBitmapPrefix = "qemu:dirty-bitmap:";

// Sizes of the fixed parts of messages.
inline constexpr size_t kOptionHeaderSize = 16;      // magic, option, length
inline constexpr size_t kOptionReplyHeaderSize = 20; // magic, option, type, length
inline constexpr size_t kRequestSize = 28;
inline constexpr size_t kSimpleReplySize = 16;
inline constexpr size_t kStructuredReplyHeaderSize = 20;
// The spec's upper bound on any string (export names, queries, messages).
inline constexpr size_t kMaxStringSize = 4096;

// --- Parsed messages -------------------------------------------------------

struct OptionHeader {
  uint64_t magic = 0;
  uint32_t option = 0;
  uint32_t length = 0;
};
// Decodes kOptionHeaderSize bytes at p. Does not check the magic.
OptionHeader DecodeOptionHeader(const uint8_t* p);

struct Request {
  uint32_t magic = 0;
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;  // the spec's "handle"; echoed back verbatim
  uint64_t offset = 0;
  uint32_t length = 0;
};
// Decodes kRequestSize bytes at p. Does not check the magic.
Request DecodeRequest(const uint8_t* p);
void EncodeRequest(const Request& r, uint8_t* p);

// NBD_OPT_INFO / NBD_OPT_GO payload.
struct InfoRequest {
  std::string name;
  std::vector<uint16_t> infos;
};
// Parses an INFO/GO payload. Returns false when it is malformed: shorter than
// 6 bytes, a name length that overruns the payload, a name longer than
// kMaxStringSize or containing NUL, or a total length that is not exactly
// 4 + name + 2 + 2 * count.
bool ParseInfoRequest(std::string_view data, InfoRequest* out);

// NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT payload.
struct MetaContextRequest {
  std::string export_name;
  std::vector<std::string> queries;
};
// Parses a meta-context payload. Returns false when a length field overruns
// the payload, bytes are left over, a string exceeds kMaxStringSize, or the
// query count claims more queries than the payload can hold. The number of
// queries kept is bounded by the payload size (each needs 4 bytes), never by
// the count the peer sent.
bool ParseMetaContextRequest(std::string_view data, MetaContextRequest* out);

// Human-readable names, for logs ("NBD_CMD_READ", "NBD_OPT_GO", ...).
const char* CommandName(uint16_t type);
const char* OptionName(uint32_t option);

}  // namespace hbiss::nbd
