// libFuzzer target over every parser that sees bytes from a server: IPC response frames,
// DataTransfer packet prefixes, packets and checksums, delimited replies and acks.
// Build with -DHBISS_FUZZ=ON under clang; run e.g. `hdfs_wire_fuzz -max_total_time=60`.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "hdfs/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hbiss::hdfs;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  if (in.empty()) return 0;
  uint8_t selector = data[0];
  in.remove_prefix(1);
  switch (selector % 4) {
    case 0: {
      wire::RpcResponse r;
      if (wire::ParseRpcResponse(in, &r).ok()) {
        (void)wire::RemoteExceptionToStatus(r.header.exception_class_name(),
                                            r.header.error_msg());
        pb::GetBlockLocationsResponse b;
        (void)b.ParseFromArray(r.body.data(), int(r.body.size()));
      }
      break;
    }
    case 1: {
      if (in.size() < 6) break;
      wire::PacketPrefix pp;
      if (!wire::ParsePacketPrefix(reinterpret_cast<const uint8_t*>(in.data()), &pp).ok()) break;
      in.remove_prefix(6);
      std::string_view header = in.substr(0, pp.header_len);
      std::string_view body = in.substr(header.size());
      if (body.size() > pp.body_len) body = body.substr(0, pp.body_len);
      wire::PacketView v;
      uint32_t bpc = 1 + (selector >> 2) * 17;
      if (wire::ParsePacket(header, body, bpc, &v).ok()) {
        (void)wire::VerifyChunks(pb::CHECKSUM_CRC32C, bpc, v.checksums, v.data, 0);
        (void)wire::VerifyChunks(pb::CHECKSUM_CRC32, bpc, v.checksums, v.data, 0);
      }
      break;
    }
    case 2: {
      pb::PipelineAck ack;
      if (wire::ParseDelimited(&in, &ack, wire::kMaxDelimited).ok()) {
        for (int i = 0; i < wire::AckNodeCount(ack) + 1; i++) (void)wire::AckStatus(ack, i);
      }
      break;
    }
    default: {
      pb::BlockOpResponse r;
      (void)wire::ParseDelimited(&in, &r, wire::kMaxDelimited);
      break;
    }
  }
  return 0;
}
