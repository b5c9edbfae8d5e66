#include "cluster/peer_wire.h"

#include <gtest/gtest.h>

#include <random>

namespace hbiss::cluster {
namespace {

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::span<const uint8_t, kFrameHeaderSize> Header(const std::string& frame) {
  return std::span<const uint8_t, kFrameHeaderSize>(
      reinterpret_cast<const uint8_t*>(frame.data()), kFrameHeaderSize);
}

pb::Request Release() {
  pb::Request r;
  r.set_type(pb::Request::RELEASE);
  r.set_id(7);
  r.set_volume("vm1");
  r.set_epoch(3);
  r.set_from_server("host-b");
  return r;
}

TEST(PeerWireTest, RequestRoundTrips) {
  auto frame = EncodeFrame(Release());
  ASSERT_TRUE(frame.ok()) << frame.status().ToString();
  EXPECT_EQ(frame->substr(0, 4), "HBPW");
  auto n = DecodeFrameHeader(Header(*frame));
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(*n + kFrameHeaderSize, frame->size());
  pb::Request got;
  ASSERT_TRUE(ParseRequest(Bytes(*frame).subspan(kFrameHeaderSize), &got).ok());
  EXPECT_EQ(got.type(), pb::Request::RELEASE);
  EXPECT_EQ(got.id(), 7u);
  EXPECT_EQ(got.volume(), "vm1");
  EXPECT_EQ(got.epoch(), 3u);
  EXPECT_EQ(got.from_server(), "host-b");
}

TEST(PeerWireTest, ReplyRoundTrips) {
  pb::Reply r;
  r.set_id(9);
  r.set_code(pb::Reply::OK);
  r.set_current_epoch(4);
  r.mutable_log_end()->set_segment(12);
  r.mutable_log_end()->set_offset(4096 * 33);
  r.set_last_seq(1234);
  auto frame = EncodeFrame(r);
  ASSERT_TRUE(frame.ok());
  pb::Reply got;
  ASSERT_TRUE(ParseReply(Bytes(*frame).subspan(kFrameHeaderSize), &got).ok());
  EXPECT_EQ(got.id(), 9u);
  EXPECT_EQ(got.code(), pb::Reply::OK);
  EXPECT_EQ(got.log_end().segment(), 12u);
  EXPECT_EQ(got.log_end().offset(), 4096u * 33);
  EXPECT_EQ(got.last_seq(), 1234u);
}

TEST(PeerWireTest, AFlattenJobRoundTrips) {
  pb::Reply r;
  r.set_id(10);
  r.set_code(pb::Reply::OK);
  pb::FlattenJob* j = r.mutable_flatten();
  j->set_job(0xfedcba9876543210ull);
  j->set_state(pb::FlattenJob::FAILED);
  j->set_done_bytes(3 << 20);
  j->set_total_bytes(8 << 20);
  j->set_status_code(uint32_t(Status::Code::kAborted));
  j->set_message("stopped");
  auto frame = EncodeFrame(r);
  ASSERT_TRUE(frame.ok());
  pb::Reply got;
  ASSERT_TRUE(ParseReply(Bytes(*frame).subspan(kFrameHeaderSize), &got).ok());
  ASSERT_TRUE(got.has_flatten());
  EXPECT_EQ(got.flatten().job(), 0xfedcba9876543210ull);
  EXPECT_EQ(got.flatten().state(), pb::FlattenJob::FAILED);
  EXPECT_EQ(got.flatten().done_bytes(), 3u << 20);
  EXPECT_EQ(got.flatten().total_bytes(), 8u << 20);
  EXPECT_EQ(Status::Code(got.flatten().status_code()), Status::Code::kAborted);
  EXPECT_EQ(got.flatten().message(), "stopped");
}

TEST(PeerWireTest, BadHeadersAreCorruption) {
  std::string frame = EncodeFrame(Release()).value();
  std::string bad = frame;
  bad[0] = 'X';
  EXPECT_TRUE(DecodeFrameHeader(Header(bad)).status().IsCorruption());
  for (uint32_t len : {0u, kMaxPayload + 1, 0xffffffffu}) {
    bad = frame;
    bad[4] = char(len >> 24);
    bad[5] = char(len >> 16);
    bad[6] = char(len >> 8);
    bad[7] = char(len);
    EXPECT_TRUE(DecodeFrameHeader(Header(bad)).status().IsCorruption()) << len;
  }
}

TEST(PeerWireTest, RequestsBreakingTheRulesAreRefused) {
  pb::Request r = Release();
  r.clear_volume();
  std::string p = r.SerializeAsString();
  pb::Request got;
  EXPECT_TRUE(ParseRequest(Bytes(p), &got).IsInvalidArgument());
  r = Release();
  r.set_volume(std::string(kMaxNameBytes + 1, 'v'));
  p = r.SerializeAsString();
  EXPECT_TRUE(ParseRequest(Bytes(p), &got).IsInvalidArgument());
  r = Release();
  r.clear_epoch();
  p = r.SerializeAsString();
  EXPECT_TRUE(ParseRequest(Bytes(p), &got).IsInvalidArgument());
  r = Release();
  r.clear_id();
  p = r.SerializeAsString();
  EXPECT_TRUE(ParseRequest(Bytes(p), &got).IsInvalidArgument());
  // Snapshot requests name a volume and a snapshot; a rename, the new name.
  for (auto type : {pb::Request::SNAP_CREATE, pb::Request::SNAP_REMOVE,
                    pb::Request::SNAP_RENAME, pb::Request::SNAP_ROLLBACK}) {
    pb::Request snap;
    snap.set_type(type);
    snap.set_id(3);
    snap.set_volume("vm");
    snap.set_snap("s1");
    snap.set_new_name("s2");
    EXPECT_TRUE(ParseRequest(Bytes(snap.SerializeAsString()), &got).ok()) << type;
    EXPECT_EQ(got.snap(), "s1");
    pb::Request bad = snap;
    bad.clear_snap();
    EXPECT_TRUE(ParseRequest(Bytes(bad.SerializeAsString()), &got).IsInvalidArgument()) << type;
    bad = snap;
    bad.clear_volume();
    EXPECT_TRUE(ParseRequest(Bytes(bad.SerializeAsString()), &got).IsInvalidArgument()) << type;
    bad = snap;
    bad.clear_new_name();
    EXPECT_EQ(ParseRequest(Bytes(bad.SerializeAsString()), &got).ok(),
              type != pb::Request::SNAP_RENAME) << type;
  }
  // FLATTEN names a volume; FLATTEN_STATUS a volume and a job.
  for (auto type : {pb::Request::FLATTEN, pb::Request::FLATTEN_STATUS}) {
    pb::Request fl;
    fl.set_type(type);
    fl.set_id(4);
    fl.set_volume("vm");
    fl.set_job(77);
    EXPECT_TRUE(ParseRequest(Bytes(fl.SerializeAsString()), &got).ok()) << type;
    EXPECT_EQ(got.job(), 77u);
    pb::Request bad = fl;
    bad.clear_volume();
    EXPECT_TRUE(ParseRequest(Bytes(bad.SerializeAsString()), &got).IsInvalidArgument()) << type;
    bad = fl;
    bad.clear_job();
    EXPECT_EQ(ParseRequest(Bytes(bad.SerializeAsString()), &got).ok(),
              type == pb::Request::FLATTEN) << type;
  }
  // A PING needs no volume.
  r.Clear();
  r.set_type(pb::Request::PING);
  r.set_id(1);
  p = r.SerializeAsString();
  EXPECT_TRUE(ParseRequest(Bytes(p), &got).ok());
  // An unknown type (a newer peer) is refused, not guessed at: field 1 = 99.
  const std::string unknown = std::string("\x08\x63\x10\x01", 4);
  EXPECT_TRUE(ParseRequest(Bytes(unknown), &got).IsInvalidArgument());
  // Bytes that are no protobuf at all.
  const std::string junk = "\xff\xff\xff\xff\xff";
  EXPECT_TRUE(ParseRequest(Bytes(junk), &got).IsCorruption());
  pb::Reply rep;
  EXPECT_TRUE(ParseReply(Bytes(junk), &rep).IsCorruption());
}

// Random bytes never crash the parsers and, when they parse, satisfy the
// rules the parser promises.
TEST(PeerWireTest, RandomPayloadsAreHandled) {
  std::mt19937_64 rng(5);
  pb::Request req;
  pb::Reply rep;
  for (int i = 0; i < 20000; i++) {
    std::string p(rng() % 64, '\0');
    for (char& c : p) c = char(rng());
    if (ParseRequest(Bytes(p), &req).ok()) {
      EXPECT_TRUE(req.has_id());
      if (req.type() != pb::Request::PING) {
        EXPECT_FALSE(req.volume().empty());
      }
    }
    if (ParseReply(Bytes(p), &rep).ok()) {
      EXPECT_TRUE(rep.has_id());
    }
  }
}

TEST(PeerWireTest, OversizedMessagesAreNotEncoded) {
  pb::Reply r;
  r.set_id(1);
  r.set_code(pb::Reply::FAILED);
  r.set_message(std::string(kMaxPayload, 'x'));
  EXPECT_TRUE(EncodeFrame(r).status().IsInvalidArgument());
}

}  // namespace
}  // namespace hbiss::cluster
