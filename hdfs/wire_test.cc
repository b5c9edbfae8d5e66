// Unit tests of the wire codecs, without a cluster: round trips, and malformed input that
// must be rejected (never crash, never over-allocate).
#include "hdfs/wire.h"

#include <gtest/gtest.h>

#include <isa-l/crc.h>

#include <string>

#include "hdfs/client.h"
#include "util/coding.h"
#include "util/crc32c.h"

namespace hbiss::hdfs {
namespace {

TEST(WireTest, DelimitedRoundTrip) {
  pb::RpcRequestHeader h;
  h.set_rpc_kind(pb::RPC_PROTOCOL_BUFFER);
  h.set_call_id(-3);
  h.set_client_id(std::string(16, 'x'));
  std::string buf;
  wire::AppendDelimited(h, &buf);
  wire::AppendDelimited(h, &buf);
  std::string_view in = buf;
  pb::RpcRequestHeader a, b;
  ASSERT_TRUE(wire::ParseDelimited(&in, &a).ok());
  ASSERT_TRUE(wire::ParseDelimited(&in, &b).ok());
  EXPECT_TRUE(in.empty());
  EXPECT_EQ(a.call_id(), -3);
  EXPECT_EQ(b.client_id(), std::string(16, 'x'));
}

TEST(WireTest, CallIdIsZigZagEncoded) {
  // sint32 callId -3 must encode as zigzag 5 (field 3, varint): bytes 0x18 0x05.
  pb::RpcRequestHeader h;
  h.set_call_id(-3);
  h.set_client_id("");
  std::string s = h.SerializeAsString();
  EXPECT_NE(s.find(std::string("\x18\x05", 2)), std::string::npos);
}

TEST(WireTest, DelimitedRejectsTruncatedAndOversized) {
  pb::RpcRequestHeader h;
  h.set_call_id(7);
  h.set_client_id("abc");
  std::string buf;
  wire::AppendDelimited(h, &buf);
  for (size_t cut = 0; cut < buf.size(); cut++) {
    std::string_view in(buf.data(), cut);
    pb::RpcRequestHeader out;
    EXPECT_TRUE(wire::ParseDelimited(&in, &out).IsCorruption()) << cut;
  }
  // A length prefix claiming 2^40 bytes.
  std::string huge;
  PutVarint64(&huge, 1ull << 40);
  std::string_view in = huge;
  std::string_view body;
  EXPECT_TRUE(wire::TakeDelimited(&in, &body, wire::kMaxRpcFrame).IsCorruption());
  // An 11-byte varint.
  std::string bad(11, '\xff');
  in = bad;
  EXPECT_TRUE(wire::TakeDelimited(&in, &body, wire::kMaxRpcFrame).IsCorruption());
}

TEST(WireTest, MissingRequiredFieldIsCorruption) {
  pb::RpcResponseHeader h;  // call_id and status are required
  h.set_call_id(1);
  std::string buf;
  PutVarint64(&buf, h.ByteSizeLong());
  h.AppendPartialToString(&buf);
  wire::RpcResponse r;
  EXPECT_TRUE(wire::ParseRpcResponse(buf, &r).IsCorruption());
}

TEST(WireTest, PreambleAndFrame) {
  EXPECT_EQ(wire::ConnectionPreamble(), std::string("hrpc\x09\x00\x00", 7));
  pb::GetFileInfoRequest req;
  req.set_src("/a");
  std::string f = wire::EncodeRpcFrame({&req, &req});
  ASSERT_GE(f.size(), 4u);
  EXPECT_EQ(DecodeBE32(reinterpret_cast<const uint8_t*>(f.data())), f.size() - 4);
}

TEST(WireTest, ResponseRoundTripAndErrors) {
  pb::RpcResponseHeader h;
  h.set_call_id(42);
  h.set_status(pb::RpcResponseHeader::SUCCESS);
  pb::MkdirsResponse m;
  m.set_result(true);
  std::string frame;
  wire::AppendDelimited(h, &frame);
  wire::AppendDelimited(m, &frame);
  wire::RpcResponse r;
  ASSERT_TRUE(wire::ParseRpcResponse(frame, &r).ok());
  EXPECT_EQ(r.header.call_id(), 42u);
  pb::MkdirsResponse m2;
  ASSERT_TRUE(m2.ParseFromArray(r.body.data(), int(r.body.size())));
  EXPECT_TRUE(m2.result());
  // SUCCESS without a body is malformed.
  std::string no_body;
  wire::AppendDelimited(h, &no_body);
  EXPECT_TRUE(wire::ParseRpcResponse(no_body, &r).IsCorruption());
  // ERROR carries no body.
  h.set_status(pb::RpcResponseHeader::ERROR);
  h.set_exception_class_name("org.apache.hadoop.hdfs.server.namenode.SafeModeException");
  h.set_error_msg("Cannot create file /x. Name node is in safe mode.\nmore");
  std::string err;
  wire::AppendDelimited(h, &err);
  ASSERT_TRUE(wire::ParseRpcResponse(err, &r).ok());
  Status st = wire::RemoteExceptionToStatus(r.header.exception_class_name(), r.header.error_msg());
  EXPECT_TRUE(st.IsIOError());
  EXPECT_TRUE(st.retryable());
  EXPECT_EQ(st.message(), "SafeModeException: Cannot create file /x. Name node is in safe mode.");
}

TEST(WireTest, ExceptionMapping) {
  EXPECT_TRUE(wire::RemoteExceptionToStatus("java.io.FileNotFoundException", "x").IsNotFound());
  EXPECT_TRUE(wire::RemoteExceptionToStatus(
                  "org.apache.hadoop.fs.FileAlreadyExistsException", "x").IsAlreadyExists());
  EXPECT_TRUE(wire::RemoteExceptionToStatus(
                  "org.apache.hadoop.hdfs.protocol.AlreadyBeingCreatedException", "x").IsBusy());
  Status s = wire::RemoteExceptionToStatus("org.apache.hadoop.ipc.StandbyException", "x");
  EXPECT_TRUE(s.IsIOError() && s.retryable());
  s = wire::RemoteExceptionToStatus("java.io.IOException", "boom");
  EXPECT_TRUE(s.IsIOError() && !s.retryable());
  EXPECT_EQ(s.message(), "IOException: boom");
}

TEST(WireTest, PacketRoundTripAllSizes) {
  for (size_t size : {0, 1, 511, 512, 513, 1024, 64512}) {
    std::string data(size, '\0');
    for (size_t i = 0; i < size; i++) data[i] = char(i * 7 + 3);
    std::string pkt;
    wire::EncodePacket(1024, 5, false, true, data, 512, &pkt);
    ASSERT_GE(pkt.size(), 6u);
    wire::PacketPrefix pp;
    ASSERT_TRUE(wire::ParsePacketPrefix(reinterpret_cast<const uint8_t*>(pkt.data()), &pp).ok());
    ASSERT_EQ(6u + pp.header_len + pp.body_len, pkt.size());
    std::string_view header(pkt.data() + 6, pp.header_len);
    std::string_view body(pkt.data() + 6 + pp.header_len, pp.body_len);
    wire::PacketView v;
    ASSERT_TRUE(wire::ParsePacket(header, body, 512, &v).ok()) << size;
    EXPECT_EQ(v.header.offset_in_block(), 1024);
    EXPECT_EQ(v.header.seqno(), 5);
    EXPECT_TRUE(v.header.sync_block());
    EXPECT_EQ(v.data, data);
    EXPECT_TRUE(wire::VerifyChunks(pb::CHECKSUM_CRC32C, 512, v.checksums, v.data, 1024).ok());
  }
}

// The empty packet that ends a block. With syncBlock (CreateOptions::sync_block) the
// DataNode fsyncs the replica before it finalizes it; PacketHeaderProto field 5, a bool.
TEST(WireTest, EndOfBlockPacketCarriesSyncBlock) {
  for (bool sync : {false, true}) {
    std::string pkt;
    wire::EncodePacket(1 << 20, 300, /*last_in_block=*/true, sync, {}, 512, &pkt);
    // u32 payload length 4 (no checksums, no data), u16 header length, then the header:
    // 0x09 sfixed64 offset, 0x11 sfixed64 seqno, 0x18 bool last, 0x25 sfixed32 dataLen,
    // and 0x28 0x01 when syncing (absent otherwise, as Java sends it).
    std::string header = std::string("\x09\x00\x00\x10\x00\x00\x00\x00\x00", 9) +
                         std::string("\x11\x2c\x01\x00\x00\x00\x00\x00\x00", 9) +
                         std::string("\x18\x01", 2) + std::string("\x25\x00\x00\x00\x00", 5);
    if (sync) header += std::string("\x28\x01", 2);
    std::string want = std::string("\x00\x00\x00\x04", 4);
    want += char(header.size() >> 8);
    want += char(header.size() & 0xff);
    want += header;
    EXPECT_EQ(pkt, want) << "sync " << sync;
    wire::PacketPrefix pp;
    ASSERT_TRUE(wire::ParsePacketPrefix(reinterpret_cast<const uint8_t*>(pkt.data()), &pp).ok());
    wire::PacketView v;
    ASSERT_TRUE(wire::ParsePacket(std::string_view(pkt).substr(6, pp.header_len),
                                  std::string_view(pkt).substr(6 + pp.header_len), 512, &v)
                    .ok());
    EXPECT_TRUE(v.header.last_packet_in_block());
    EXPECT_EQ(v.header.sync_block(), sync);
    EXPECT_EQ(v.header.has_sync_block(), sync);
    EXPECT_EQ(v.header.offset_in_block(), 1 << 20);
    EXPECT_TRUE(v.data.empty());
  }
}

TEST(WireTest, PacketChecksumCatchesEveryFlippedByte) {
  std::string data(1500, 'a');
  std::string pkt;
  wire::EncodePacket(0, 0, false, false, data, 512, &pkt);
  wire::PacketPrefix pp;
  ASSERT_TRUE(wire::ParsePacketPrefix(reinterpret_cast<const uint8_t*>(pkt.data()), &pp).ok());
  size_t body_start = 6 + pp.header_len;
  for (size_t i = body_start; i < pkt.size(); i += 37) {
    std::string bad = pkt;
    bad[i] ^= 0x10;
    wire::PacketView v;
    ASSERT_TRUE(wire::ParsePacket(std::string_view(bad).substr(6, pp.header_len),
                                  std::string_view(bad).substr(body_start), 512, &v)
                    .ok());
    Status st = wire::VerifyChunks(pb::CHECKSUM_CRC32C, 512, v.checksums, v.data, 0);
    EXPECT_TRUE(st.IsCorruption()) << i;
  }
}

TEST(WireTest, PacketRejectsMalformed) {
  uint8_t prefix[6];
  wire::PacketPrefix pp;
  EncodeBE32(prefix, 3);  // shorter than its own length field
  EncodeBE16(prefix + 4, 20);
  EXPECT_TRUE(wire::ParsePacketPrefix(prefix, &pp).IsCorruption());
  EncodeBE32(prefix, 0xfffffff0u);  // 4 GiB claim
  EXPECT_TRUE(wire::ParsePacketPrefix(prefix, &pp).IsCorruption());
  EncodeBE32(prefix, 100);
  EncodeBE16(prefix + 4, 0xffff);
  EXPECT_TRUE(wire::ParsePacketPrefix(prefix, &pp).IsCorruption());

  pb::PacketHeader h;
  h.set_offset_in_block(0);
  h.set_seqno(1);
  h.set_last_packet_in_block(false);
  h.set_data_len(600);  // needs 2 checksums = 8 bytes
  std::string header = h.SerializeAsString();
  wire::PacketView v;
  EXPECT_TRUE(wire::ParsePacket(header, std::string(604, 'x'), 512, &v).IsCorruption());
  EXPECT_TRUE(wire::ParsePacket(header, std::string(500, 'x'), 512, &v).IsCorruption());
  EXPECT_TRUE(wire::ParsePacket(header, std::string(608, 'x'), 512, &v).ok());
  EXPECT_TRUE(wire::ParsePacket(header, std::string(608, 'x'), 0, &v).IsCorruption());
  h.set_data_len(-1);
  EXPECT_TRUE(wire::ParsePacket(h.SerializeAsString(), "", 512, &v).IsCorruption());
  EXPECT_TRUE(wire::ParsePacket("\xff\xff", "", 512, &v).IsCorruption());
}

TEST(WireTest, Crc32IeeeMatchesJavaUtilZip) {
  // Blocks written with dfs.checksum.type=CRC32 use java.util.zip.CRC32.
  const char* s = "123456789";
  EXPECT_EQ(crc32_gzip_refl(0, reinterpret_cast<const unsigned char*>(s), 9), 0xCBF43926u);
  EXPECT_EQ(crc32c::Value(s, 9), 0xE3069283u);
  std::string sums(4, '\0');
  EncodeBE32(reinterpret_cast<uint8_t*>(sums.data()), 0xCBF43926u);
  EXPECT_TRUE(wire::VerifyChunks(pb::CHECKSUM_CRC32, 512, sums, s, 0).ok());
  EXPECT_TRUE(wire::VerifyChunks(pb::CHECKSUM_CRC32C, 512, sums, s, 0).IsCorruption());
  EXPECT_TRUE(wire::VerifyChunks(pb::CHECKSUM_NULL, 512, "", s, 0).IsNotSupported());
}

TEST(WireTest, AckStatusFromRepliesOrFlags) {
  pb::PipelineAck a;
  a.set_seqno(3);
  a.add_reply(pb::SUCCESS);
  a.add_reply(pb::ERROR);
  EXPECT_EQ(wire::AckNodeCount(a), 2);
  EXPECT_EQ(wire::AckStatus(a, 0), pb::SUCCESS);
  EXPECT_EQ(wire::AckStatus(a, 1), pb::ERROR);
  EXPECT_EQ(wire::AckStatus(a, 2), pb::ERROR);
  pb::PipelineAck f;
  f.set_seqno(3);
  f.add_flag(0x30 | pb::ERROR_CHECKSUM);  // ECN bits above the status
  EXPECT_EQ(wire::AckStatus(f, 0), pb::ERROR_CHECKSUM);
}

TEST(WireTest, OpEncoding) {
  pb::ClientReadStatus s;
  s.set_status(pb::CHECKSUM_OK);
  std::string op = wire::EncodeOp(wire::kOpReadBlock, s);
  ASSERT_GE(op.size(), 3u);
  EXPECT_EQ(DecodeBE16(reinterpret_cast<const uint8_t*>(op.data())), 28);
  EXPECT_EQ(uint8_t(op[2]), 81);
}

TEST(HdfsUriTest, Parse) {
  auto u = ParseHdfsUri("hdfs://127.0.0.1:19100/a//b/");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 19100);
  EXPECT_EQ(u->path, "/a/b");
  u = ParseHdfsUri("hdfs://nn");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->port, 8020);
  EXPECT_EQ(u->path, "/");
  EXPECT_FALSE(ParseHdfsUri("file:///x").ok());
  EXPECT_FALSE(ParseHdfsUri("hdfs://:80/x").ok());
  EXPECT_FALSE(ParseHdfsUri("hdfs://h:99999/x").ok());
  EXPECT_FALSE(ParseHdfsUri("hdfs://h:12ab/x").ok());
}

}  // namespace
}  // namespace hbiss::hdfs
