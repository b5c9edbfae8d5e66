// libFuzzer target over the NBD handshake and request parser: the input is
// the byte stream a client sends. The first byte picks a mode: even replays
// the rest as-is (handshake first); odd prepends a valid handshake (fixed
// newstyle, structured replies, base:allocation, GO) so the rest lands in the
// transmission phase. Requests run inline (no worker threads) against a
// 1 MiB MemoryExport. Also feeds the raw bytes to the option parsers.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "nbd/connection.h"
#include "nbd/memory_export.h"
#include "nbd/protocol.h"
#include "nbd/transport.h"
#include "util/coding.h"

namespace {

using namespace hbiss::nbd;  // NOLINT

std::string Be32(uint32_t v) {
  std::string s(4, '\0');
  hbiss::EncodeBE32(reinterpret_cast<uint8_t*>(s.data()), v);
  return s;
}
std::string Option(uint32_t opt, const std::string& data) {
  std::string s(8, '\0');
  hbiss::EncodeBE64(reinterpret_cast<uint8_t*>(s.data()), kIHaveOpt);
  return s + Be32(opt) + Be32(uint32_t(data.size())) + data;
}

const std::string& Prefix() {
  static const std::string p =
      Be32(kClientFlagFixedNewstyle | kClientFlagNoZeroes) + Option(kOptStructuredReply, "") +
      Option(kOptSetMetaContext, Be32(2) + "vm" + Be32(1) + Be32(15) + "base:allocation") +
      Option(kOptGo, Be32(2) + "vm" + std::string("\0\1\0\3", 4));
  return p;
}

MemoryProvider* Provider() {
  static MemoryProvider* p = [] {
    auto* mp = new MemoryProvider;
    mp->Add(std::make_shared<MemoryExport>("vm", 1 << 20));
    mp->Add(std::make_shared<MemoryExport>("ro", 1 << 16, true));
    return mp;
  }();
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  InfoRequest ir;
  (void)ParseInfoRequest(rest, &ir);
  MetaContextRequest mr;
  (void)ParseMetaContextRequest(rest, &mr);

  std::string input = (data[0] & 1) ? Prefix() + std::string(rest) : std::string(rest);
  ConnectionOptions o;
  o.workers = 1;
  o.peer = "fuzz";
  Connection c(std::make_unique<BufferTransport>(std::move(input), false), Provider(), o);
  (void)c.Run();
  return 0;
}
