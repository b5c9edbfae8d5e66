// What the NBD libFuzzer targets (nbd_fuzz.cc, nbd_volume_fuzz.cc) share: the
// input is the byte stream a client sends, run through one Connection over a
// BufferTransport. Inputs of the two targets have the same layout, so a
// corpus of one is a corpus of the other: the first byte picks a mode, and
// the rest is the stream. Mode bit 0 clear replays the stream as-is
// (handshake first); set prepends HandshakePrefix(), so the stream lands in
// the transmission phase. The other bits of the mode byte are the target's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "nbd/connection.h"
#include "nbd/export.h"
#include "nbd/protocol.h"
#include "nbd/test_util.h"
#include "nbd/transport.h"

namespace hbiss::nbd::fuzz {

// The export every handshake prefix asks for.
inline constexpr char kExportName[] = "vm";

// One newstyle option as a client sends it.
inline std::string Option(uint32_t opt, const std::string& data) {
  return testing::Be64(kIHaveOpt) + testing::Be32(opt) + testing::Be32(uint32_t(data.size())) +
         data;
}

// A valid client handshake: fixed newstyle without zeroes, structured
// replies, base:allocation, then GO to kExportName asking for the block size.
inline const std::string& HandshakePrefix() {
  using testing::Be32;
  static const std::string p =
      Be32(kClientFlagFixedNewstyle | kClientFlagNoZeroes) + Option(kOptStructuredReply, "") +
      Option(kOptSetMetaContext, Be32(2) + kExportName + Be32(1) + Be32(15) + "base:allocation") +
      Option(kOptGo, Be32(2) + kExportName + std::string("\0\1\0\3", 4));
  return p;
}

// Runs one connection over the input (mode byte, then the stream) against
// `provider`, sequentially (one worker), and drops the replies. Returns the
// stream after the mode byte. REQUIRES: size > 0.
inline std::string_view RunInput(const uint8_t* data, size_t size, ExportProvider* provider) {
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string input = (data[0] & 1) ? HandshakePrefix() + std::string(rest) : std::string(rest);
  ConnectionOptions o;
  o.workers = 1;
  o.peer = "fuzz";
  Connection c(std::make_unique<BufferTransport>(std::move(input), false), provider, o);
  (void)c.Run();
  return rest;
}

}  // namespace hbiss::nbd::fuzz
