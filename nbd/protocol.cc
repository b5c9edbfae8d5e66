#include "nbd/protocol.h"

#include "util/coding.h"

namespace hbiss::nbd {

OptionHeader DecodeOptionHeader(const uint8_t* p) {
  OptionHeader h;
  h.magic = DecodeBE64(p);
  h.option = DecodeBE32(p + 8);
  h.length = DecodeBE32(p + 12);
  return h;
}

Request DecodeRequest(const uint8_t* p) {
  Request r;
  r.magic = DecodeBE32(p);
  r.flags = DecodeBE16(p + 4);
  r.type = DecodeBE16(p + 6);
  r.cookie = DecodeBE64(p + 8);
  r.offset = DecodeBE64(p + 16);
  r.length = DecodeBE32(p + 24);
  return r;
}

void EncodeRequest(const Request& r, uint8_t* p) {
  EncodeBE32(p, r.magic);
  EncodeBE16(p + 4, r.flags);
  EncodeBE16(p + 6, r.type);
  EncodeBE64(p + 8, r.cookie);
  EncodeBE64(p + 16, r.offset);
  EncodeBE32(p + 24, r.length);
}

namespace {

// Reads a 32-bit length and that many bytes of string from the front of *in.
bool TakeString(std::string_view* in, std::string* out) {
  if (in->size() < 4) return false;
  uint32_t len = DecodeBE32(reinterpret_cast<const uint8_t*>(in->data()));
  in->remove_prefix(4);
  if (len > in->size() || len > kMaxStringSize) return false;
  out->assign(in->data(), len);
  in->remove_prefix(len);
  return true;
}

}  // namespace

bool ParseInfoRequest(std::string_view data, InfoRequest* out) {
  if (data.size() < 6) return false;
  std::string_view in = data;
  if (!TakeString(&in, &out->name)) return false;
  if (out->name.find('\0') != std::string::npos) return false;
  if (in.size() < 2) return false;
  uint16_t count = DecodeBE16(reinterpret_cast<const uint8_t*>(in.data()));
  in.remove_prefix(2);
  if (in.size() != size_t{count} * 2) return false;
  out->infos.clear();
  for (uint16_t i = 0; i < count; i++) {
    out->infos.push_back(DecodeBE16(reinterpret_cast<const uint8_t*>(in.data()) + 2 * i));
  }
  return true;
}

bool ParseMetaContextRequest(std::string_view data, MetaContextRequest* out) {
  std::string_view in = data;
  if (!TakeString(&in, &out->export_name)) return false;
  if (in.size() < 4) return false;
  uint32_t count = DecodeBE32(reinterpret_cast<const uint8_t*>(in.data()));
  in.remove_prefix(4);
  // Each query needs at least its 4-byte length: a count the payload cannot
  // hold is malformed, and checking it first bounds the loop by the payload.
  if (count > in.size() / 4) return false;
  out->queries.clear();
  for (uint32_t i = 0; i < count; i++) {
    std::string q;
    if (!TakeString(&in, &q)) return false;
    out->queries.push_back(std::move(q));
  }
  return in.empty();
}

const char* CommandName(uint16_t type) {
  switch (type) {
    case kCmdRead: return "NBD_CMD_READ";
    case kCmdWrite: return "NBD_CMD_WRITE";
    case kCmdDisc: return "NBD_CMD_DISC";
    case kCmdFlush: return "NBD_CMD_FLUSH";
    case kCmdTrim: return "NBD_CMD_TRIM";
    case kCmdCache: return "NBD_CMD_CACHE";
    case kCmdWriteZeroes: return "NBD_CMD_WRITE_ZEROES";
    case kCmdBlockStatus: return "NBD_CMD_BLOCK_STATUS";
    default: return "NBD_CMD_(unknown)";
  }
}

const char* OptionName(uint32_t option) {
  switch (option) {
    case kOptExportName: return "NBD_OPT_EXPORT_NAME";
    case kOptAbort: return "NBD_OPT_ABORT";
    case kOptList: return "NBD_OPT_LIST";
    case kOptStartTls: return "NBD_OPT_STARTTLS";
    case kOptInfo: return "NBD_OPT_INFO";
    case kOptGo: return "NBD_OPT_GO";
    case kOptStructuredReply: return "NBD_OPT_STRUCTURED_REPLY";
    case kOptListMetaContext: return "NBD_OPT_LIST_META_CONTEXT";
    case kOptSetMetaContext: return "NBD_OPT_SET_META_CONTEXT";
    default: return "NBD_OPT_(unknown)";
  }
}

}  // namespace hbiss::nbd
